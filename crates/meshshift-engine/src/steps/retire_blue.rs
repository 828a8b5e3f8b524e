//! Retire blue after the switch: keep it running, not draining, for the soak window (kube-proxy and
//! cloud load balancers still route by the old endpoints for a while), then scale it to zero; its pods
//! drain (preStop, terminationDrainDuration) as they terminate.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use meshshift_core::fields::{Field, ObjectRef};
use meshshift_core::plan::Change;

use super::{restore, write};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::rollout::wait_workload;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub async fn prior(ctx: &Ctx, deployment_ref: &str) -> Result<Vec<Change>, EngineError> {
    let r: ObjectRef = deployment_ref.parse()?;
    let d = ctx.objects.get(&r).await?.ok_or_else(|| EngineError::Missing(r.to_string()))?;
    Ok(vec![Change {
        object: r.to_string(),
        field: "spec.replicas".into(),
        before: Field::Replicas.read(&d),
        after: Some("0".into()),
    }])
}

pub async fn apply(ctx: &Ctx, soak_seconds: u64, prior: &[Change]) -> Result<(), EngineError> {
    let c = prior.first().ok_or_else(|| EngineError::Invalid("retire step without journaled replicas".into()))?;
    let r: ObjectRef = c.object.parse()?;
    let d = ctx.objects.get(&r).await?.ok_or_else(|| EngineError::Missing(r.to_string()))?;
    // A resumed run whose scale-down already happened does not soak again.
    if Field::Replicas.read(&d).as_deref() != Some("0") {
        let soak = ctx.options.soak.unwrap_or(Duration::from_secs(soak_seconds));
        ctx.detail(format!("soaking {} s with blue still serving", soak.as_secs()));
        ctx.soak(soak, now_ms()).await?;
    }
    write(ctx, prior).await?;
    ctx.detail(format!("waiting for {r}'s pods to drain"));
    wait_workload(ctx, &r).await
}

pub async fn verify(ctx: &Ctx, deployment_ref: &str) -> Result<(), EngineError> {
    let r: ObjectRef = deployment_ref.parse()?;
    let d = ctx.objects.get(&r).await?.ok_or_else(|| EngineError::Missing(r.to_string()))?;
    let labels: Vec<String> = d["spec"]["selector"]["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let ns = r.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = d["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let (r, labels, uid) = (&r, &labels, &uid);
    // Blue's pods by ownership, not by label: a selector without a colour label (a chart's gateway) also
    // matches green's pods.
    let outcome = crate::gates::until(ctx.options.rollout_timeout, Duration::from_millis(200), || {
        let (pods, sets, lp) = (pods.clone(), sets.clone(), ListParams::default().labels(&labels.join(",")));
        async move {
            let owned: Vec<String> = sets
                .list(&lp)
                .await
                .map_err(|e| EngineError::api(r, e))?
                .items
                .into_iter()
                .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|o| &o.uid == uid))
                .filter_map(|rs| rs.metadata.name)
                .collect();
            let left = pods
                .list(&lp)
                .await
                .map_err(|e| EngineError::api(r, e))?
                .items
                .iter()
                .filter(|p| p.metadata.owner_references.iter().flatten().any(|o| owned.contains(&o.name)))
                .count();
            Ok::<_, EngineError>(if left == 0 { Ok(()) } else { Err(format!("{left} blue pod(s) still terminating")) })
        }
    })
    .await?;
    outcome.map_err(|detail| EngineError::Precondition { step: String::new(), detail })
}

pub async fn undo(ctx: &Ctx, prior: &[Change]) -> Result<(), EngineError> {
    restore(ctx, prior).await?;
    let c = prior.first().ok_or_else(|| EngineError::Invalid("retire step without journaled replicas".into()))?;
    let r: ObjectRef = c.object.parse()?;
    ctx.detail(format!("waiting for {r} to be ready again"));
    wait_workload(ctx, &r).await
}
