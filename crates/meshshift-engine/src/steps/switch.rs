//! Switch the user-owned LoadBalancer from blue to green: only `spec.selector` changes, in one write
//! guarded by resourceVersion; then wait until its Endpoints list only green. `widen-narrow` first selects
//! both colours (drop the colour key), waits for the load balancer's health checks, then narrows to green.

use std::collections::BTreeMap;
use std::time::Duration;

use meshshift_core::fields::{Field, ObjectRef};
use meshshift_core::plan::{Change, Step, SwitchStrategy};

use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::endpoints::wait_only;
use crate::objects::FieldChange;

/// How long Endpoints may take to follow a selector change.
pub(super) const ENDPOINTS_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) type Selector = BTreeMap<String, String>;

pub(super) fn selector_of(json: Option<&String>) -> Result<Selector, EngineError> {
    match json {
        Some(s) => serde_json::from_str(s).map_err(|e| EngineError::Invalid(format!("journaled selector: {e}"))),
        None => Ok(Selector::new()),
    }
}

pub(super) fn encode(s: &Selector) -> Option<String> {
    serde_json::to_string(s).ok()
}

/// The selector's prior value, green's, and both colours' (the colour key dropped).
struct Selectors {
    service: ObjectRef,
    blue: Selector,
    green: Selector,
    both: Selector,
}

fn selectors(prior: &[Change]) -> Result<Selectors, EngineError> {
    let c = prior.first().ok_or_else(|| EngineError::Invalid("switch step without a journaled selector".into()))?;
    let service: ObjectRef = c.object.parse()?;
    let blue = selector_of(c.before.as_ref())?;
    let green = selector_of(c.after.as_ref())?;
    let both = blue.iter().filter(|(k, v)| green.get(*k) == Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(Selectors { service, blue, green, both })
}

pub async fn prior(
    ctx: &Ctx,
    step: &Step,
    service: &str,
    _strategy: SwitchStrategy,
) -> Result<Vec<Change>, EngineError> {
    let r: ObjectRef = service.parse()?;
    let svc = ctx.objects.get(&r).await?.ok_or_else(|| EngineError::Missing(r.to_string()))?;
    let current: Selector = serde_json::from_value(svc["spec"]["selector"].clone()).unwrap_or_default();
    // The plan names the colour key and its planned values: `spec.selector.<key>`.
    let planned = step
        .changes
        .iter()
        .find(|c| c.field.starts_with("spec.selector.") && c.after.is_some())
        .ok_or_else(|| EngineError::Invalid(format!("step {} names no selector key", step.id)))?;
    let key = planned.field.trim_start_matches("spec.selector.").to_owned();
    let before_key = step.changes.first().and_then(|c| c.before.clone());
    if current.get(&key) != before_key.as_ref() {
        return Err(EngineError::ConcurrentEdit {
            object: r.to_string(),
            field: planned.field.clone(),
            expected: before_key,
            found: current.get(&key).cloned(),
        });
    }
    let mut green = current.clone();
    green.insert(key, ctx.plan.to_revision.clone());
    Ok(vec![Change {
        object: r.to_string(),
        field: "spec.selector".into(),
        before: encode(&current),
        after: encode(&green),
    }])
}

pub(super) async fn set(ctx: &Ctx, r: &ObjectRef, from: &Selector, to: &Selector) -> Result<(), EngineError> {
    ctx.objects
        .set_fields(r, &[FieldChange { field: Field::Selector, expected: encode(from), target: encode(to) }])
        .await
}

pub(super) async fn current(ctx: &Ctx, r: &ObjectRef) -> Result<Selector, EngineError> {
    let svc = ctx.objects.get(r).await?.ok_or_else(|| EngineError::Missing(r.to_string()))?;
    Ok(serde_json::from_value(svc["spec"]["selector"].clone()).unwrap_or_default())
}

pub(super) fn namespace(r: &ObjectRef) -> &str {
    r.namespace.as_deref().unwrap_or_default()
}

pub async fn apply(ctx: &Ctx, strategy: SwitchStrategy, prior: &[Change]) -> Result<(), EngineError> {
    let s = selectors(prior)?;
    let now = current(ctx, &s.service).await?;
    if strategy == SwitchStrategy::WidenNarrow && now != s.green {
        if now != s.both {
            ctx.detail(format!("widening {} to both colours", s.service));
            set(ctx, &s.service, &s.blue, &s.both).await?;
        }
        wait_only(ctx, namespace(&s.service), &s.service.name, &s.both, ENDPOINTS_TIMEOUT).await?;
        ctx.detail(format!(
            "waiting {} s for the load balancer's health checks",
            ctx.options.health_check_wait.as_secs()
        ));
        tokio::time::sleep(ctx.options.health_check_wait).await;
        ctx.detail(format!("narrowing {} to green", s.service));
        set(ctx, &s.service, &s.both, &s.green).await?;
    } else {
        ctx.detail(format!("switching {} to green", s.service));
        set(ctx, &s.service, &s.blue, &s.green).await?;
    }
    wait_only(ctx, namespace(&s.service), &s.service.name, &s.green, ENDPOINTS_TIMEOUT).await
}

pub async fn verify(ctx: &Ctx, prior: &[Change]) -> Result<(), EngineError> {
    let s = selectors(prior)?;
    wait_only(ctx, namespace(&s.service), &s.service.name, &s.green, ENDPOINTS_TIMEOUT).await
}

/// How long green keeps serving after a switch back: the soak window blue got after the switch
/// (`--soak-seconds` of the plan's retire-blue step(s), or the run's override).
fn hold(ctx: &Ctx) -> Duration {
    ctx.options.soak.unwrap_or_else(|| {
        let planned = ctx.plan.steps.iter().filter_map(|st| match &st.action {
            meshshift_core::plan::Action::RetireBlueGateway { soak_seconds, .. } => Some(*soak_seconds),
            _ => None,
        });
        Duration::from_secs(planned.max().unwrap_or(0))
    })
}

pub async fn undo(ctx: &Ctx, prior: &[Change]) -> Result<(), EngineError> {
    let s = selectors(prior)?;
    let now = current(ctx, &s.service).await?;
    let from = if now == s.both { &s.both } else { &s.green };
    ctx.detail(format!("switching {} back to blue", s.service));
    set(ctx, &s.service, from, &s.blue).await?;
    wait_only(ctx, namespace(&s.service), &s.service.name, &s.blue, ENDPOINTS_TIMEOUT).await?;
    // The mirror of blue's soak (retire_blue.rs): the Endpoints list only blue now, but kube-proxy and
    // cloud load balancers still send new connections to green for a while, and the next undo deletes
    // green. Without this hold, a lag longer than green's drain (terminationDrainDuration, 5 s by
    // default) reset requests during every rollback (tests/chaos_e2e.rs, 8 s propagation: 138 of 1880
    // requests). A plain wait: a rollback is not stopped by the traffic gates.
    let hold = hold(ctx);
    if !hold.is_zero() {
        ctx.detail(format!("keeping green serving {} s while load balancers follow the switch back", hold.as_secs()));
        tokio::time::sleep(hold).await;
    }
    Ok(())
}
