//! Deploy the green gateway beside blue: blue's Deployment and Service re-targeted at the new revision
//! (`meshshift_core::green`), then prove green serves what blue serves.

use std::time::Duration;

use meshshift_core::fields::ObjectRef;
use meshshift_core::green::{Recolour, mesh_config_name};
use meshshift_core::plan::{Action, Change};
use serde_json::{Value, json};

use super::{object_change, write};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::rollout::wait_workload;
use crate::gates::serves::same_as_blue;

/// How long green may take to serve every route after it is Ready.
const SERVE_TIMEOUT: Duration = Duration::from_secs(60);

fn recolour(ctx: &Ctx, green: &str) -> Recolour {
    Recolour {
        from_revision: ctx.plan.from_revision.clone(),
        to_revision: ctx.plan.to_revision.clone(),
        from_version: ctx.plan.from_version.clone(),
        to_version: ctx.plan.to_version.clone(),
        green_name: green.to_owned(),
    }
}

/// The user's LoadBalancer Service, from the plan's switch step.
pub fn load_balancer(ctx: &Ctx) -> Option<ObjectRef> {
    ctx.plan.steps.iter().find_map(|s| match &s.action {
        Action::SwitchLoadBalancer { service, .. } => service.parse().ok(),
        _ => None,
    })
}

/// Blue's own Service: the one named like blue's Deployment, else the LoadBalancer (a gateway that owns
/// its LoadBalancer Service, as non-revisioned installs do).
async fn blue_service(ctx: &Ctx, namespace: &str, blue: &str) -> Result<Value, EngineError> {
    if let Some(s) = ctx.objects.get(&ObjectRef::namespaced("Service", namespace, blue)).await? {
        return Ok(s);
    }
    let lb = load_balancer(ctx).ok_or_else(|| EngineError::Missing(format!("Service/{namespace}/{blue}")))?;
    ctx.objects.get(&lb).await?.ok_or_else(|| EngineError::Missing(lb.to_string()))
}

pub async fn prior(ctx: &Ctx, namespace: &str, green: &str, blue: &str) -> Result<Vec<Change>, EngineError> {
    let blue_ref = ObjectRef::namespaced("Deployment", namespace, blue);
    let blue_dep = ctx.objects.get(&blue_ref).await?.ok_or_else(|| EngineError::Precondition {
        step: String::new(),
        detail: format!("blue gateway {blue_ref} does not exist"),
    })?;
    let rc = recolour(ctx, green);
    let green_dep = rc.deployment(&blue_dep);
    let mut green_svc = rc.service(&blue_service(ctx, namespace, blue).await?);
    // Green's Service selects exactly green's pods, whatever blue's Service selected.
    green_svc["spec"]["selector"] = green_dep["spec"]["selector"]["matchLabels"].clone();
    let mut changes = Vec::new();
    // Non-injected gateways mount their revision's mesh ConfigMap from their own namespace.
    let cp = &ctx.plan.control_plane_namespace;
    let (from_cm, to_cm) = (mesh_config_name(&ctx.plan.from_revision), mesh_config_name(&ctx.plan.to_revision));
    if namespace != cp && ctx.objects.get(&ObjectRef::namespaced("ConfigMap", namespace, &from_cm)).await?.is_some() {
        let source = ObjectRef::namespaced("ConfigMap", cp, &to_cm);
        let mut copy = ctx.objects.get(&source).await?.ok_or_else(|| EngineError::Missing(source.to_string()))?;
        copy = meshshift_core::fields::recreatable(&copy);
        copy["metadata"]["namespace"] = json!(namespace);
        if let Some(m) = copy["metadata"].as_object_mut() {
            m.remove("ownerReferences");
        }
        let r = ObjectRef::namespaced("ConfigMap", namespace, &to_cm);
        changes.push(object_change(ctx, &r, Some(&copy)).await?);
    }
    for obj in [green_dep, green_svc] {
        let r = ObjectRef::of(&obj).ok_or_else(|| EngineError::Invalid("green object without a name".into()))?;
        changes.push(object_change(ctx, &r, Some(&obj)).await?);
    }
    Ok(changes)
}

pub async fn apply(ctx: &Ctx, namespace: &str, green: &str, prior: &[Change]) -> Result<(), EngineError> {
    write(ctx, prior).await?;
    ctx.detail(format!("waiting for green gateway {namespace}/{green}"));
    wait_workload(ctx, &ObjectRef::namespaced("Deployment", namespace, green)).await
}

pub async fn verify(ctx: &Ctx, namespace: &str, green: &str, blue: &str) -> Result<(), EngineError> {
    wait_workload(ctx, &ObjectRef::namespaced("Deployment", namespace, green)).await?;
    let green_svc = ctx
        .objects
        .get(&ObjectRef::namespaced("Service", namespace, green))
        .await?
        .ok_or_else(|| EngineError::Missing(format!("Service/{namespace}/{green}")))?;
    let blue_svc = blue_service(ctx, namespace, blue).await?;
    let lb = match load_balancer(ctx) {
        Some(r) => ctx.objects.get(&r).await?.ok_or_else(|| EngineError::Missing(r.to_string()))?,
        None => blue_svc.clone(),
    };
    same_as_blue(ctx, namespace, &green_svc, &blue_svc, &lb, SERVE_TIMEOUT).await
}
