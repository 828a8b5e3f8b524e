//! Pin a LoadBalancer whose selector has no colour key to blue, before any green exists.
//!
//! Why: a gateway chart's own LoadBalancer selects `app`/`istio` labels only, which green shares; without
//! a pin it would send users to green as soon as green's pods are Ready, before the deploy-gateway gates
//! prove green serves. Adding blue's colour changes no Endpoint (only blue exists) and turns the later
//! switch into a real blue -> green move. Written like the switch: only `spec.selector`, in one write
//! guarded by its prior value, journaled first; undo removes the key again.

use meshshift_core::fields::ObjectRef;
use meshshift_core::plan::Change;

use super::switch::{Selector, current, encode, namespace, selector_of, set};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::endpoints::wait_only;

/// The selector now, and with `key=value`; refused when someone set `key` to another value since the plan.
pub async fn prior(ctx: &Ctx, service: &str, key: &str, value: &str) -> Result<Vec<Change>, EngineError> {
    let r: ObjectRef = service.parse()?;
    let now = current(ctx, &r).await?;
    if let Some(found) = now.get(key).filter(|v| v.as_str() != value) {
        return Err(EngineError::ConcurrentEdit {
            object: r.to_string(),
            field: format!("spec.selector.{key}"),
            expected: None,
            found: Some(found.clone()),
        });
    }
    let mut pinned = now.clone();
    pinned.insert(key.to_owned(), value.to_owned());
    Ok(vec![Change {
        object: r.to_string(),
        field: "spec.selector".into(),
        before: encode(&now),
        after: encode(&pinned),
    }])
}

fn selectors(prior: &[Change]) -> Result<(ObjectRef, Selector, Selector), EngineError> {
    let c = prior.first().ok_or_else(|| EngineError::Invalid("pin step without a journaled selector".into()))?;
    Ok((c.object.parse()?, selector_of(c.before.as_ref())?, selector_of(c.after.as_ref())?))
}

pub async fn apply(ctx: &Ctx, prior: &[Change]) -> Result<(), EngineError> {
    let (r, before, pinned) = selectors(prior)?;
    if current(ctx, &r).await? != pinned {
        ctx.detail(format!("pinning {r} to blue"));
        set(ctx, &r, &before, &pinned).await?;
    }
    verify(ctx, prior).await
}

/// The Endpoints list only the pinned (blue) pods.
pub async fn verify(ctx: &Ctx, prior: &[Change]) -> Result<(), EngineError> {
    let (r, _, pinned) = selectors(prior)?;
    wait_only(ctx, namespace(&r), &r.name, &pinned, super::switch::ENDPOINTS_TIMEOUT).await
}

pub async fn undo(ctx: &Ctx, prior: &[Change]) -> Result<(), EngineError> {
    let (r, before, pinned) = selectors(prior)?;
    if current(ctx, &r).await? != before {
        ctx.detail(format!("unpinning {r}"));
        set(ctx, &r, &pinned, &before).await?;
    }
    Ok(())
}
