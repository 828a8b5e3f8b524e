//! Retire the source revision once nothing uses it: no namespace label, tag, injector selector, default
//! validator or proxy may still reference it (istio-upgrades.md, item 8). Every object is snapshotted into
//! the journal before it is deleted, so rollback recreates it as it was.

use meshshift_core::fields::ObjectRef;
use meshshift_core::plan::{Change, Step};
use meshshift_core::render::istiod_name;
use meshshift_core::status::analyze;
use meshshift_core::version::Revision;
use serde_json::json;

use super::{object_change, object_of, restore, write};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::rollout::wait_workload;

/// What still uses `revision`, in words: configuration (namespaces, tags) and proxies, apart because
/// proxies of pods still terminating after the restarts go away by themselves.
async fn users(ctx: &Ctx, revision: &str) -> Result<(Vec<String>, Option<String>), EngineError> {
    let snapshot = meshshift_kube::read_snapshot(&ctx.client)
        .await
        .map_err(|e| EngineError::Invalid(format!("reading the cluster: {e}")))?;
    let report = analyze(&snapshot);
    let mut found = Vec::new();
    for n in report.namespaces.iter().filter(|n| n.injected_by.as_deref() == Some(revision)) {
        found.push(format!("namespace {} is injected by it", n.name));
    }
    for t in report.tags.iter().filter(|t| t.revision == revision) {
        found.push(format!("tag {} points at it", t.tag));
    }
    let proxies = report
        .revisions
        .iter()
        .find(|r| r.revision == revision && r.proxies > 0)
        .map(|r| format!("{} proxies still use it", r.proxies));
    Ok((found, proxies))
}

/// Waits until nothing uses `revision`: configuration that references it fails at once (a person must
/// move it), proxies are waited for (old pods drain and terminate after the restarts).
async fn wait_unused(ctx: &Ctx, step: &Step, revision: &str) -> Result<(), EngineError> {
    let refuse = |what: Vec<String>| EngineError::Precondition {
        step: step.id.clone(),
        detail: format!("revision {revision} is still in use: {}", what.join("; ")),
    };
    let outcome = crate::gates::until(ctx.options.rollout_timeout, std::time::Duration::from_secs(1), || async {
        let (config, proxies) = users(ctx, revision).await?;
        if !config.is_empty() {
            return Err(refuse(config));
        }
        Ok(match proxies {
            Some(p) => {
                ctx.detail(format!("waiting: {p}"));
                Err(p)
            }
            None => Ok(()),
        })
    })
    .await?;
    outcome.map_err(|p| refuse(vec![p]))
}

pub async fn prior(ctx: &Ctx, step: &Step, revision: &str) -> Result<Vec<Change>, EngineError> {
    wait_unused(ctx, step, revision).await?;
    let mut changes = Vec::new();
    // Validators pointing at the source's istiod are re-pointed first: deleting the Service they call
    // would block every Istio config write (istio#35590, #37512).
    let rev = Revision::parse(revision).unwrap_or_else(|_| Revision::default_revision());
    let to = Revision::parse(&ctx.plan.to_revision).unwrap_or_else(|_| Revision::default_revision());
    let (from_svc, to_svc) = (istiod_name(&rev), istiod_name(&to));
    for v in ctx.objects.list("ValidatingWebhookConfiguration", None, "").await? {
        let mut changed = meshshift_core::fields::recreatable(&v);
        let mut hit = false;
        for w in changed["webhooks"].as_array_mut().into_iter().flatten() {
            if w["clientConfig"]["service"]["name"] == json!(from_svc) {
                w["clientConfig"]["service"]["name"] = json!(to_svc);
                hit = true;
            }
        }
        if hit && let Some(r) = ObjectRef::of(&v) {
            changes.push(object_change(ctx, &r, Some(&changed)).await?);
        }
    }
    // Webhooks first (no new pod is sent to a dying istiod), then istiod, its config, the blue gateways.
    let mut deletions: Vec<ObjectRef> = step
        .changes
        .iter()
        .filter(|c| c.field == "object" && c.after.is_none())
        .map(object_of)
        .collect::<Result<_, _>>()?;
    deletions.sort_by_key(|r| match r.kind.as_str() {
        "MutatingWebhookConfiguration" => 0,
        "Deployment" => 1,
        _ => 2,
    });
    for r in deletions {
        if ctx.objects.get(&r).await?.is_some() {
            changes.push(object_change(ctx, &r, None).await?);
        }
    }
    Ok(changes)
}

pub async fn apply(ctx: &Ctx, prior: &[Change]) -> Result<(), EngineError> {
    if let Some(soak) = ctx.options.soak {
        ctx.detail(format!("soaking {} s before removing the old revision", soak.as_secs()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        ctx.soak(soak, now).await?;
    }
    write(ctx, prior).await
}

pub async fn verify(ctx: &Ctx, revision: &str) -> Result<(), EngineError> {
    let istiod = ObjectRef::namespaced(
        "Deployment",
        &ctx.plan.control_plane_namespace,
        &istiod_name(&Revision::parse(revision).unwrap_or_else(|_| Revision::default_revision())),
    );
    match ctx.objects.get(&istiod).await? {
        None => Ok(()),
        Some(_) => Err(EngineError::Precondition { step: String::new(), detail: format!("{istiod} still exists") }),
    }
}

pub async fn undo(ctx: &Ctx, prior: &[Change]) -> Result<(), EngineError> {
    restore(ctx, prior).await?;
    for c in prior.iter().filter(|c| c.after.is_none()) {
        let r = object_of(c)?;
        if r.kind == "Deployment" {
            ctx.detail(format!("waiting for {r}"));
            wait_workload(ctx, &r).await?;
        }
    }
    Ok(())
}
