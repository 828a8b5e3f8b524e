//! Move a revision tag to the target revision: its injector webhook (label `istio.io/rev`, the istiod
//! Service it calls, the caBundle that Service presents) and, for the `default` tag, the default
//! validator. When the source revision's own injector also serves `istio-injection=enabled` (a revision
//! installed as the default), it is neutralised (`istio.io/deactivated: never-match` selectors, as
//! `istioctl tag set default` does) rather than deleted, so rollback can bring it back unchanged.

use meshshift_core::fields::ObjectRef;
use meshshift_core::plan::{Change, Step};
use meshshift_core::render::istiod_name;
use meshshift_core::version::Revision;
use serde_json::{Value, json};

use super::object_change;
use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::inject::probe_label;

fn istiod(revision: &str) -> String {
    Revision::parse(revision).map(|r| istiod_name(&r)).unwrap_or_else(|_| format!("istiod-{revision}"))
}

/// The webhooks re-pointed from the source's istiod to the target's.
fn repoint(ctx: &Ctx, obj: &Value, ca_bundle: Option<&str>) -> Value {
    let mut o = meshshift_core::fields::recreatable(obj);
    let (from, to) = (istiod(&ctx.plan.from_revision), istiod(&ctx.plan.to_revision));
    if o["metadata"]["labels"]["istio.io/rev"] == json!(ctx.plan.from_revision) {
        o["metadata"]["labels"]["istio.io/rev"] = json!(ctx.plan.to_revision);
    }
    for w in o["webhooks"].as_array_mut().into_iter().flatten() {
        if w["clientConfig"]["service"]["name"] == json!(from) {
            w["clientConfig"]["service"]["name"] = json!(to);
            if let Some(ca) = ca_bundle {
                w["clientConfig"]["caBundle"] = json!(ca);
            }
        }
    }
    o
}

fn serves_default_injection(hook: &Value) -> bool {
    hook["webhooks"].as_array().into_iter().flatten().any(|w| {
        w["namespaceSelector"].to_string().contains("istio-injection")
            && w["objectSelector"]["matchLabels"]["istio.io/deactivated"].is_null()
    })
}

fn neutralised(hook: &Value) -> Value {
    let mut o = meshshift_core::fields::recreatable(hook);
    for w in o["webhooks"].as_array_mut().into_iter().flatten() {
        w["namespaceSelector"] = json!({"matchLabels": {"istio.io/deactivated": "never-match"}});
        w["objectSelector"] = json!({"matchLabels": {"istio.io/deactivated": "never-match"}});
    }
    o
}

pub async fn prior(ctx: &Ctx, step: &Step, tag: &str) -> Result<Vec<Change>, EngineError> {
    let name = format!("istio-revision-tag-{tag}");
    let r = ObjectRef::cluster("MutatingWebhookConfiguration", &name);
    let hook = ctx.objects.get(&r).await?.ok_or_else(|| EngineError::Precondition {
        step: step.id.clone(),
        detail: format!("tag webhook {name} does not exist"),
    })?;
    // The caBundle the target's istiod serves with: copied so the tag never points at a Service with a
    // CA the apiserver does not trust (with failurePolicy Fail that would reject every pod).
    let target_hooks = ctx
        .objects
        .list("MutatingWebhookConfiguration", None, &format!("istio.io/rev={},!istio.io/tag", ctx.plan.to_revision))
        .await?;
    let ca = target_hooks
        .iter()
        .flat_map(|h| h["webhooks"].as_array().cloned().unwrap_or_default())
        .find_map(|w| w["clientConfig"]["caBundle"].as_str().filter(|s| !s.is_empty()).map(str::to_owned));
    let mut changes = vec![object_change(ctx, &r, Some(&repoint(ctx, &hook, ca.as_deref()))).await?];
    if tag == "default" {
        for v in ctx.objects.list("ValidatingWebhookConfiguration", None, "").await? {
            let points_at_source = v["webhooks"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|w| w["clientConfig"]["service"]["name"] == json!(istiod(&ctx.plan.from_revision)));
            // A revision's own validator (`istio-validator-<rev>-<ns>`) stays with its revision, as
            // `istioctl tag set default` leaves it; only the default validator follows the tag.
            let per_revision = v["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("istio-validator-"));
            if points_at_source
                && !per_revision
                && let Some(vr) = ObjectRef::of(&v)
            {
                changes.push(object_change(ctx, &vr, Some(&repoint(ctx, &v, ca.as_deref()))).await?);
            }
        }
        let source_hooks = ctx
            .objects
            .list(
                "MutatingWebhookConfiguration",
                None,
                &format!("istio.io/rev={},!istio.io/tag", ctx.plan.from_revision),
            )
            .await?;
        for h in source_hooks.iter().filter(|h| serves_default_injection(h)) {
            if let Some(hr) = ObjectRef::of(h) {
                changes.push(object_change(ctx, &hr, Some(&neutralised(h))).await?);
            }
        }
    }
    Ok(changes)
}

pub async fn verify(ctx: &Ctx, tag: &str) -> Result<(), EngineError> {
    probe_label(ctx, tag, &ctx.plan.to_revision, &ctx.plan.to_version).await
}
