//! Install the target control-plane revision beside the source (manifests installer: meshshift's
//! rendered manifests, created or replaced object by object, each journaled).

use meshshift_core::fields::ObjectRef;
use meshshift_core::plan::Change;
use meshshift_core::render::{ControlPlaneSpec, control_plane, istiod_name};
use meshshift_core::version::{IstioVersion, Revision};

use super::{object_change, write};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::inject::probe_label;
use crate::gates::rollout::wait_workload;

fn parse(revision: &str, version: &str) -> Result<(Revision, IstioVersion), EngineError> {
    let r = Revision::parse(revision).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let v = version.parse().map_err(|e: meshshift_core::version::VersionError| EngineError::Invalid(e.to_string()))?;
    Ok((r, v))
}

pub async fn prior(ctx: &Ctx, revision: &str, version: &str) -> Result<Vec<Change>, EngineError> {
    let (r, v) = parse(revision, version)?;
    let spec = ControlPlaneSpec {
        version: v,
        revision: r,
        namespace: ctx.plan.control_plane_namespace.clone(),
        hub: meshshift_core::render::DEFAULT_HUB.to_owned(),
    };
    let mut changes = Vec::new();
    for doc in control_plane(&spec) {
        let r = ObjectRef::of(&doc).ok_or_else(|| EngineError::Invalid("rendered object without a name".into()))?;
        changes.push(object_change(ctx, &r, Some(&doc)).await?);
    }
    Ok(changes)
}

pub async fn apply(ctx: &Ctx, revision: &str, prior: &[Change]) -> Result<(), EngineError> {
    write(ctx, prior).await?;
    let r = Revision::parse(revision).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let istiod = ObjectRef::namespaced("Deployment", &ctx.plan.control_plane_namespace, &istiod_name(&r));
    ctx.detail(format!("waiting for {istiod}"));
    wait_workload(ctx, &istiod).await
}

/// The first caBundle of the injector webhooks of `revision` (not its tags).
async fn ca_bundle(ctx: &Ctx, revision: &str) -> Result<Option<String>, EngineError> {
    let hooks = ctx
        .objects
        .list("MutatingWebhookConfiguration", None, &format!("istio.io/rev={revision},!istio.io/tag"))
        .await?;
    Ok(hooks
        .iter()
        .flat_map(|h| h["webhooks"].as_array().cloned().unwrap_or_default())
        .find_map(|w| w["clientConfig"]["caBundle"].as_str().filter(|s| !s.is_empty()).map(str::to_owned)))
}

pub async fn verify(ctx: &Ctx, revision: &str, version: &str) -> Result<(), EngineError> {
    let (r, _) = parse(revision, version)?;
    let istiod = ObjectRef::namespaced("Deployment", &ctx.plan.control_plane_namespace, &istiod_name(&r));
    wait_workload(ctx, &istiod).await?;
    ctx.detail(format!("dry-run pod in a namespace labelled istio.io/rev={revision}"));
    probe_label(ctx, revision, revision, version).await?;
    let (new, old) = (ca_bundle(ctx, revision).await?, ca_bundle(ctx, &ctx.plan.from_revision).await?);
    match (new, old) {
        (Some(a), Some(b)) if a == b => Ok(()),
        (None, _) => Err(EngineError::Precondition {
            step: String::new(),
            detail: format!("the injector webhook of {revision} has no caBundle"),
        }),
        (Some(_), None) => Ok(()),
        (Some(_), Some(_)) => Err(EngineError::Precondition {
            step: String::new(),
            detail: format!(
                "revisions {} and {revision} have different root CAs: their workloads would not trust each other; plug in a shared CA (Secret cacerts)",
                ctx.plan.from_revision
            ),
        }),
    }
}
