//! The in-cluster Istio operator (`*/operator:<version>`), as the seed installs it: one operator per
//! version, one `IstioOperator` per istiod and per gateway.
//!
//! - Version: the image tag. Revision: env `REVISION` of the container, else the pod label
//!   `istio.io/rev`, else derived from the version ([`IstioVersion::revision`]).
//! - Watches `IstioOperator` objects (`install.istio.io/v1alpha1`) in every namespace and reconciles
//!   those whose `spec.revision` is its revision (no `spec.revision` means the `default` revision):
//!   - `spec.components.pilot.enabled` not `false`: the control plane of [`render::control_plane`] in the
//!     IstioOperator's namespace, images from `spec.hub` (else [`DEFAULT_HUB`]);
//!   - each `spec.components.ingressGateways[]` with `enabled: true`: a legacy (non-injected)
//!     [`render::gateway`] named by the entry's `name`, in its `namespace` (else the IstioOperator's),
//!     `k8s.replicaCount` replicas (default 1), plus a copy of the mesh ConfigMap when the gateway's
//!     namespace is not the control plane's.
//!
//!   Every object is server-side applied (field manager [`FIELD_MANAGER`], forced) with the labels
//!   [`OWNER_LABEL`] / [`OWNER_NAMESPACE_LABEL`]; the IstioOperator's `status.status` becomes `HEALTHY`,
//!   or `ERROR` with `status.message` (failed ones are retried every [`RETRY`]). An IstioOperator is
//!   reconciled again only when its `metadata.generation` changes.
//! - Deleting an IstioOperator deletes the objects labelled as owned by it (of the kinds its spec renders).
//! - Readiness: HTTP `/ready` on [`READY_PORT`] of the pod IP answers 200 once the first list of
//!   IstioOperators completed, 503 before. Serves until the pod's grace period ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use meshshift_core::render::{self, ControlPlaneSpec, DEFAULT_HUB, GatewaySpec};
use meshshift_core::version::{IstioVersion, Revision, version_from_image};
use serde_json::{Value, json};

use super::{ContainerContext, ContainerError, ContainerFuture, ContainerImage, image_name};

/// The image component this emulation runs.
pub const IMAGE_NAME: &str = "operator";
/// The readiness port (`/ready`).
pub const READY_PORT: u16 = 8383;
/// The server-side apply field manager.
pub const FIELD_MANAGER: &str = "meshshift-lab-operator";
/// Label on every applied object: the owning IstioOperator's name.
pub const OWNER_LABEL: &str = "install.operator.istio.io/owning-resource";
/// Label on every applied object: the owning IstioOperator's namespace.
pub const OWNER_NAMESPACE_LABEL: &str = "install.operator.istio.io/owning-resource-namespace";
/// IstioOperator API group, version and kind.
pub const IOP_GROUP: &str = "install.istio.io";
/// See [`IOP_GROUP`].
pub const IOP_VERSION: &str = "v1alpha1";
/// See [`IOP_GROUP`].
pub const IOP_KIND: &str = "IstioOperator";
/// How often failed IstioOperators are reconciled again (and discovery retried while the CRD is missing).
pub const RETRY: Duration = Duration::from_secs(3);

/// Why the operator (or one reconciliation) failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The container's image or env is unusable.
    #[error("bad operator configuration: {0}")]
    Config(String),
    /// An IstioOperator's spec is unusable.
    #[error("invalid IstioOperator {0}")]
    Spec(String),
    /// A rendered object lacks apiVersion, kind or name.
    #[error("rendered object is malformed: {0}")]
    Render(String),
    /// An apiserver call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

impl From<OperatorError> for ContainerError {
    fn from(err: OperatorError) -> Self {
        match err {
            OperatorError::Config(m) => ContainerError::Config(m),
            other => ContainerError::Other(other.to_string()),
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> OperatorError {
    let what = what.into();
    move |source| OperatorError::Kube { what, source }
}

/// The operator emulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct OperatorImage;

impl ContainerImage for OperatorImage {
    fn name(&self) -> &'static str {
        IMAGE_NAME
    }

    fn matches(&self, _pod: &Pod, container: &Container) -> bool {
        image_name(container) == IMAGE_NAME
    }

    fn start(&self, ctx: ContainerContext) -> ContainerFuture {
        Box::pin(async move { run(ctx).await.map_err(Into::into) })
    }
}

/// Who this operator is.
#[derive(Debug, Clone)]
struct Identity {
    version: IstioVersion,
    revision: Revision,
}

fn identity(ctx: &ContainerContext) -> Result<Identity, OperatorError> {
    let image = ctx.container.image.clone().unwrap_or_default();
    let version = version_from_image(&image)
        .ok_or_else(|| OperatorError::Config(format!("image {image:?} has no Istio version tag")))?;
    let label = ctx.pod.metadata.labels.as_ref().and_then(|l| l.get("istio.io/rev")).cloned();
    let revision = match ctx.env("REVISION").filter(|r| !r.is_empty()).or(label) {
        Some(r) => Revision::parse(&r).map_err(|e| OperatorError::Config(format!("revision {r:?}: {e}")))?,
        None => version.revision(),
    };
    Ok(Identity { version, revision })
}

async fn run(ctx: ContainerContext) -> Result<(), OperatorError> {
    let me = identity(&ctx)?;
    tracing::info!(pod = ctx.pod_name(), version = %me.version, revision = %me.revision, "operator starting");
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    let app = Router::new().route(
        "/ready",
        get(move || {
            let ok = flag.load(Ordering::Relaxed);
            async move { if ok { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "syncing\n") } }
        }),
    );
    let app = super::generic::with_pod_header(app, &ctx);
    let reconciler = Reconciler { client: ctx.client.clone(), me, kinds: HashMap::new() };
    tokio::select! {
        served = super::generic::serve(&ctx, &[READY_PORT], app) => {
            served.map_err(|e| OperatorError::Config(e.to_string()))
        }
        () = reconciler.run(ready) => Ok(()),
    }
}

/// `namespace/name` of an object.
type Key = (String, String);

struct Reconciler {
    client: kube::Client,
    me: Identity,
    /// Discovered kinds: `apiVersion/kind` -> resource and scope.
    kinds: HashMap<String, (ApiResource, Scope)>,
}

impl Reconciler {
    /// Watches IstioOperators forever; sets `ready` after the first complete list.
    async fn run(mut self, ready: Arc<AtomicBool>) {
        let resource = loop {
            let gvk = GroupVersionKind::gvk(IOP_GROUP, IOP_VERSION, IOP_KIND);
            match kube::discovery::pinned_kind(&self.client, &gvk).await {
                Ok((resource, _)) => break resource,
                Err(err) => tracing::debug!(%err, "IstioOperator not served yet"),
            }
            tokio::time::sleep(RETRY).await;
        };
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        // Generation last reconciled successfully, per IstioOperator.
        let mut done: HashMap<Key, Option<i64>> = HashMap::new();
        // IstioOperators whose last reconciliation failed (retried on a timer).
        let mut failed: BTreeMap<Key, DynamicObject> = BTreeMap::new();
        let mut listed: Vec<DynamicObject> = Vec::new();
        let mut retry = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    None => return,
                    Some(Err(err)) => tracing::warn!(%err, "watching IstioOperators failed"),
                    Some(Ok(Event::Init)) => listed.clear(),
                    Some(Ok(Event::InitApply(iop))) => listed.push(iop),
                    Some(Ok(Event::InitDone)) => {
                        for iop in std::mem::take(&mut listed) {
                            self.handle(&resource, iop, &mut done, &mut failed).await;
                        }
                        ready.store(true, Ordering::Relaxed);
                    }
                    Some(Ok(Event::Apply(iop))) => self.handle(&resource, iop, &mut done, &mut failed).await,
                    Some(Ok(Event::Delete(iop))) => {
                        let key = key_of(&iop);
                        failed.remove(&key);
                        let ours = done.remove(&key).is_some() || self.owns(&iop);
                        if let Err(err) = if ours { self.delete_owned(&iop).await } else { Ok(()) } {
                            tracing::warn!(iop = ?key, %err, "deleting the IstioOperator's objects failed");
                        }
                    }
                },
                _ = retry.tick(), if !failed.is_empty() => {
                    for (_, iop) in std::mem::take(&mut failed) {
                        self.handle(&resource, iop, &mut done, &mut failed).await;
                    }
                }
            }
        }
    }

    /// Whether `iop` is this operator's revision.
    fn owns(&self, iop: &DynamicObject) -> bool {
        let revision = iop.data.pointer("/spec/revision").and_then(Value::as_str).filter(|r| !r.is_empty());
        revision.unwrap_or("default") == self.me.revision.as_str()
    }

    /// Reconciles `iop` if it is ours and its generation changed, and records the outcome in its status.
    async fn handle(
        &mut self,
        resource: &ApiResource,
        iop: DynamicObject,
        done: &mut HashMap<Key, Option<i64>>,
        failed: &mut BTreeMap<Key, DynamicObject>,
    ) {
        if !self.owns(&iop) {
            return;
        }
        let key = key_of(&iop);
        if done.get(&key).is_some_and(|g| *g == iop.metadata.generation) {
            return;
        }
        let outcome = self.reconcile(&iop).await;
        let status = match &outcome {
            Ok(()) => json!({"status": {"status": "HEALTHY", "message": null}}),
            Err(err) => json!({"status": {"status": "ERROR", "message": err.to_string()}}),
        };
        match &outcome {
            Ok(()) => {
                tracing::info!(iop = ?key, revision = %self.me.revision, "IstioOperator reconciled");
                done.insert(key.clone(), iop.metadata.generation);
            }
            Err(err) => {
                tracing::warn!(iop = ?key, %err, "IstioOperator reconciliation failed");
                done.remove(&key);
                failed.insert(key.clone(), iop.clone());
            }
        }
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &key.0, resource);
        if let Err(err) = api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&status)).await {
            tracing::warn!(iop = ?key, %err, "writing the IstioOperator status failed");
        }
    }

    /// Applies everything `iop` asks for.
    async fn reconcile(&mut self, iop: &DynamicObject) -> Result<(), OperatorError> {
        let (namespace, name) = key_of(iop);
        for mut object in self.render(iop)? {
            let labels = &mut object["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels[OWNER_LABEL] = json!(name);
            labels[OWNER_NAMESPACE_LABEL] = json!(namespace);
            self.apply(object).await?;
        }
        Ok(())
    }

    /// The objects `iop` stands for.
    fn render(&self, iop: &DynamicObject) -> Result<Vec<Value>, OperatorError> {
        let (namespace, name) = key_of(iop);
        let spec = iop.data.get("spec").cloned().unwrap_or_else(|| json!({}));
        let hub = spec.get("hub").and_then(Value::as_str).filter(|h| !h.is_empty()).unwrap_or(DEFAULT_HUB);
        let control_plane = render::control_plane(&ControlPlaneSpec {
            version: self.me.version.clone(),
            revision: self.me.revision.clone(),
            namespace: namespace.clone(),
            hub: hub.to_owned(),
        });
        let mesh_name =
            if self.me.revision.is_default() { "istio".to_owned() } else { format!("istio-{}", self.me.revision) };
        let mesh = control_plane
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == mesh_name.as_str())
            .cloned()
            .ok_or_else(|| OperatorError::Render(format!("no mesh ConfigMap {mesh_name}")))?;
        let components = spec.get("components").cloned().unwrap_or_else(|| json!({}));
        let mut out = Vec::new();
        if components.pointer("/pilot/enabled").and_then(Value::as_bool) != Some(false) {
            out.extend(control_plane);
        }
        let gateways = components.get("ingressGateways").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, entry) in gateways.iter().enumerate() {
            if entry.get("enabled").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let gateway_name =
                entry.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
                    OperatorError::Spec(format!("{namespace}/{name}: ingressGateways[{i}] has no name"))
                })?;
            let gateway_namespace =
                entry.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or(&namespace);
            let replicas = match entry.pointer("/k8s/replicaCount") {
                None | Some(Value::Null) => 1,
                Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                    OperatorError::Spec(format!("{namespace}/{name}: ingressGateways[{i}].k8s.replicaCount is {v}"))
                })?,
            };
            out.extend(render::gateway(&GatewaySpec {
                name: gateway_name.to_owned(),
                namespace: gateway_namespace.to_owned(),
                revision: self.me.revision.clone(),
                version: self.me.version.clone(),
                control_plane_namespace: namespace.clone(),
                injected: false,
                replicas,
                hub: hub.to_owned(),
            }));
            if gateway_namespace != namespace {
                let mut copy = mesh.clone();
                copy["metadata"]["namespace"] = json!(gateway_namespace);
                if !out.contains(&copy) {
                    out.push(copy);
                }
            }
        }
        Ok(out)
    }

    /// The resource and scope of `api_version`/`kind`, discovered once.
    async fn kind(&mut self, api_version: &str, kind: &str) -> Result<(ApiResource, Scope), OperatorError> {
        let cache_key = format!("{api_version}/{kind}");
        if let Some(found) = self.kinds.get(&cache_key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(kube_err(format!("discovering {cache_key}")))?;
        let found = (resource, caps.scope);
        self.kinds.insert(cache_key, found.clone());
        Ok(found)
    }

    /// The Api for an object of `kind` in `namespace`.
    async fn api_for(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, OperatorError> {
        let (resource, scope) = self.kind(api_version, kind).await?;
        Ok(match (scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// Server-side applies one rendered object.
    async fn apply(&mut self, object: Value) -> Result<(), OperatorError> {
        let text = |field: &str| object.pointer(field).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind), Some(name)) = (text("/apiVersion"), text("/kind"), text("/metadata/name"))
        else {
            return Err(OperatorError::Render(object.to_string()));
        };
        let namespace = text("/metadata/namespace");
        let api = self.api_for(&api_version, &kind, namespace.as_deref()).await?;
        let what = format!("applying {kind} {}{name}", namespace.map(|n| format!("{n}/")).unwrap_or_default());
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&object))
            .await
            .map_err(kube_err(what))?;
        Ok(())
    }

    /// Deletes the objects labelled as owned by `iop`, of every kind its spec renders.
    async fn delete_owned(&mut self, iop: &DynamicObject) -> Result<(), OperatorError> {
        let (namespace, name) = key_of(iop);
        let selector = format!("{OWNER_LABEL}={name},{OWNER_NAMESPACE_LABEL}={namespace}");
        let mut kinds: Vec<(String, String)> = Vec::new();
        for object in self.render(iop)? {
            let pair = (
                object["apiVersion"].as_str().unwrap_or_default().to_owned(),
                object["kind"].as_str().unwrap_or_default().to_owned(),
            );
            if !kinds.contains(&pair) {
                kinds.push(pair);
            }
        }
        for (api_version, kind) in kinds {
            let (resource, _) = self.kind(&api_version, &kind).await?;
            let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
            let owned = all
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(kube_err(format!("listing {kind} owned by {namespace}/{name}")))?;
            for object in owned {
                let object_name = object.metadata.name.clone().unwrap_or_default();
                let api = self.api_for(&api_version, &kind, object.metadata.namespace.as_deref()).await?;
                match api.delete(&object_name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(err) => return Err(kube_err(format!("deleting {kind} {object_name}"))(err)),
                }
            }
        }
        tracing::info!(iop = %format!("{namespace}/{name}"), "IstioOperator deleted: its objects are gone");
        Ok(())
    }
}

fn key_of(object: &DynamicObject) -> Key {
    (object.metadata.namespace.clone().unwrap_or_default(), object.metadata.name.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::sync::watch;

    use super::*;
    use crate::containers::Lifecycle;

    fn reconciler(revision: &str) -> Reconciler {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        let client = kube::Client::try_from(config).expect("client");
        let version = IstioVersion::parse("1.9.7").expect("version");
        Reconciler {
            client,
            me: Identity { version, revision: Revision::parse(revision).expect("rev") },
            kinds: HashMap::new(),
        }
    }

    fn iop(spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
            "metadata": {"name": "cp", "namespace": "istio-system", "generation": 1},
            "spec": spec,
        }))
        .expect("iop")
    }

    #[tokio::test]
    async fn owns_its_revision_only() {
        let r = reconciler("1-9-7");
        assert!(r.owns(&iop(json!({"revision": "1-9-7"}))));
        assert!(!r.owns(&iop(json!({"revision": "1-10-6"}))));
        assert!(!r.owns(&iop(json!({}))));
        assert!(reconciler("default").owns(&iop(json!({}))));
    }

    #[tokio::test]
    async fn renders_control_plane_and_legacy_gateways() {
        let r = reconciler("1-9-7");
        let objects = r
            .render(&iop(json!({"revision": "1-9-7", "hub": "example.io/istio", "components": {
            "pilot": {"enabled": true},
            "ingressGateways": [
                {"name": "gw-a", "namespace": "istio-ingress", "enabled": true, "k8s": {"replicaCount": 3}},
                {"name": "gw-off", "enabled": false},
            ]}})))
            .expect("render");
        let find = |kind: &str, name: &str| {
            objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).cloned()
        };
        let istiod = find("Deployment", "istiod-1-9-7").expect("istiod");
        assert_eq!(istiod["metadata"]["namespace"], "istio-system");
        let gw = find("Deployment", "gw-a").expect("gateway");
        assert_eq!(gw["metadata"]["namespace"], "istio-ingress");
        assert_eq!(gw["spec"]["replicas"], 3);
        assert_eq!(gw["spec"]["template"]["spec"]["containers"][0]["image"], "example.io/istio/proxyv2:1.9.7");
        assert!(find("Deployment", "gw-off").is_none());
        let meshes: Vec<_> =
            objects.iter().filter(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "istio-1-9-7").collect();
        assert_eq!(meshes.len(), 2, "the mesh ConfigMap is copied into the gateway namespace");
        // Pilot disabled: gateways only.
        let objects = r
            .render(&iop(json!({"revision": "1-9-7", "components": {"pilot": {"enabled": false},
                "ingressGateways": [{"name": "gw", "enabled": true}]}})))
            .expect("render");
        assert!(objects.iter().all(|o| o["metadata"]["name"] != "istiod-1-9-7"));
        assert!(objects.iter().any(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "gw"));
        assert!(r.render(&iop(json!({"components": {"ingressGateways": [{"enabled": true}]}}))).is_err());
    }

    #[tokio::test]
    async fn identity_from_env_label_or_version() {
        let make = |env: Value, labels: Value| {
            let container: Container = serde_json::from_value(
                json!({"name": "istio-operator", "image": "docker.io/istio/operator:1.9.7", "env": env}),
            )
            .expect("container");
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "op", "labels": labels}})).expect("pod");
            let (_tx, rx) = watch::channel(Lifecycle::Running);
            let r = reconciler("default");
            ContainerContext {
                pod: Arc::new(pod),
                container,
                pod_ip: Ipv4Addr::LOCALHOST,
                pod_loopback: Ipv4Addr::LOCALHOST,
                client: r.client,
                resolve: Arc::new(|_: &str, _: &str, _: u16| None),
                lifecycle: rx,
            }
        };
        let id =
            identity(&make(json!([{"name": "REVISION", "value": "blue"}]), json!({"istio.io/rev": "x"}))).expect("id");
        assert_eq!(id.revision.as_str(), "blue");
        assert_eq!(id.version.to_string(), "1.9.7");
        assert_eq!(
            identity(&make(json!([]), json!({"istio.io/rev": "green"}))).expect("id").revision.as_str(),
            "green"
        );
        assert_eq!(identity(&make(json!([]), json!({}))).expect("id").revision.as_str(), "1-9-7");
    }
}
