//! Does a new pod get the right proxy? A server-side dry-run pod create goes through the real admission
//! chain (the injector webhooks are `sideEffects: None`, so they run on dry runs) and comes back as it
//! would be stored, without being stored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use meshshift_core::proxy::detect_proxy;
use serde_json::json;

use crate::context::Ctx;
use crate::error::EngineError;

/// meshshift's own namespace for injection probes: labelled with the revision or tag under test.
pub const GATE_NAMESPACE: &str = "meshshift-gate";

/// The proxy a pod created now in `namespace` (with `labels`) would get: `(revision, version)`, or
/// `None` when it would not be injected.
pub async fn dry_run(
    ctx: &Ctx,
    namespace: &str,
    labels: BTreeMap<String, String>,
) -> Result<Option<(Option<String>, Option<String>)>, EngineError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "meshshift-injection-probe-", "labels": labels},
        "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.9"}]},
    }))
    .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let params = PostParams { dry_run: true, ..PostParams::default() };
    let created = api
        .create(&params, &pod)
        .await
        .map_err(|e| EngineError::api_about(format!("dry-run pod in {namespace}"), e))?;
    let model = meshshift_kube::convert::pod(&created);
    Ok(detect_proxy(&model.spec).map(|p| (p.revision, p.version.map(|v| v.to_string()))))
}

/// Labels [`GATE_NAMESPACE`] with `istio.io/rev=<value>` (creating it when absent) and returns its name.
async fn gate_namespace(ctx: &Ctx, value: &str) -> Result<&'static str, EngineError> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": GATE_NAMESPACE, "labels": {
        "istio.io/rev": value, "app.kubernetes.io/managed-by": "meshshift"}}}))
    .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let err = |e| EngineError::api_about(format!("Namespace/{GATE_NAMESPACE}"), e);
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": {"istio.io/rev": value}}});
            api.patch(GATE_NAMESPACE, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
                .await
                .map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    Ok(GATE_NAMESPACE)
}

/// Waits (up to 60 s: the injector may still be getting its caBundle) until a dry-run pod in `namespace`
/// is injected by `revision` with proxy `version`.
pub async fn expect_injected(
    ctx: &Ctx,
    namespace: &str,
    labels: BTreeMap<String, String>,
    revision: &str,
    version: &str,
) -> Result<(), EngineError> {
    let outcome = super::until(std::time::Duration::from_secs(60), std::time::Duration::from_millis(500), || {
        let labels = labels.clone();
        async move {
            Ok::<_, EngineError>(match dry_run(ctx, namespace, labels).await {
                Ok(Some((Some(r), Some(v)))) if r == revision && v == version => Ok(()),
                Ok(Some((r, v))) => Err(format!(
                    "a new pod in {namespace} gets proxy {} from revision {}, not {version} from {revision}",
                    v.unwrap_or_else(|| "?".into()),
                    r.unwrap_or_else(|| "?".into())
                )),
                Ok(None) => Err(format!("a new pod in {namespace} is not injected at all")),
                // The webhook failing closed (no caBundle yet, istiod not serving) refuses the pod.
                Err(e) => Err(e.to_string()),
            })
        }
    })
    .await?;
    outcome.map_err(|detail| EngineError::Precondition { step: String::new(), detail })
}

/// Checks that a pod in a namespace labelled `istio.io/rev=<label>` (a revision or a tag) is injected by
/// `revision` with `version`, using [`GATE_NAMESPACE`]; the label is removed again afterwards so the
/// namespace never keeps a revision in use.
pub async fn probe_label(ctx: &Ctx, label: &str, revision: &str, version: &str) -> Result<(), EngineError> {
    let ns = gate_namespace(ctx, label).await?;
    let outcome = expect_injected(ctx, ns, BTreeMap::new(), revision, version).await;
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let patch = json!({"metadata": {"labels": {"istio.io/rev": null}}});
    api.patch(GATE_NAMESPACE, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .map_err(|e| EngineError::api_about(format!("Namespace/{GATE_NAMESPACE}"), e))?;
    outcome
}
