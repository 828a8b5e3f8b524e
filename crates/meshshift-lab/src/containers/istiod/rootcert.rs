//! Publishes the root certificate as ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in every
//! namespace, as istiod's namespace controller does: injected proxies mount it (volume `istiod-ca-cert`)
//! to trust istiod, and tools compare it across revisions. Recreated when deleted, rewritten when changed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use super::error::IstiodError;
use super::identity::Istiod;
use super::index::Index;

/// The ConfigMap's name.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// The key holding the PEM.
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// How often failed writes are retried.
const RETRY: Duration = Duration::from_secs(2);

/// The ConfigMap for `namespace`.
pub fn desired(namespace: &str, root_pem: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ROOT_CERT_CONFIGMAP, "namespace": namespace, "labels": {"istio.io/config": "true"}},
        "data": {ROOT_CERT_KEY: root_pem}
    }))
    .unwrap_or_default()
}

/// Whether `existing` must be rewritten to hold `root_pem`.
pub fn outdated(existing: &ConfigMap, root_pem: &str) -> bool {
    existing.data.as_ref().and_then(|d| d.get(ROOT_CERT_KEY)).map(String::as_str) != Some(root_pem)
}

fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

enum Change {
    Namespace(Result<Event<Namespace>, watcher::Error>),
    ConfigMap(Result<Event<ConfigMap>, watcher::Error>),
}

/// Keeps `istio-ca-root-cert` current in every active namespace. Runs until dropped.
pub async fn run(client: kube::Client, istiod: Arc<Istiod>, root_pem: String) -> Result<(), IstiodError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    let ns_events = watcher::watcher(namespaces, watcher::Config::default()).default_backoff().map(Change::Namespace);
    let cm_config = watcher::Config::default().fields(&format!("metadata.name={ROOT_CERT_CONFIGMAP}"));
    let cm_events = watcher::watcher(config_maps, cm_config).default_backoff().map(Change::ConfigMap);
    let mut events = futures::stream::select(ns_events.boxed(), cm_events.boxed());
    let mut ns_index: Index<Namespace> = Index::default();
    let mut cm_index: Index<ConfigMap> = Index::default();
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Namespaces whose ConfigMap create failed with 409: wait for the watch to show it.
    let mut racing = BTreeSet::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Change::Namespace(Ok(e))) => { ns_index.apply(e); }
                Some(Change::ConfigMap(Ok(e))) => {
                    if let Event::Apply(cm) | Event::InitApply(cm) = &e {
                        racing.remove(&cm.namespace().unwrap_or_default());
                    }
                    cm_index.apply(e);
                }
                Some(Change::Namespace(Err(err)) | Change::ConfigMap(Err(err))) => {
                    tracing::warn!(%err, "watching namespaces for istio-ca-root-cert");
                    continue;
                }
                None => return Err(IstiodError::Stopped("the namespace watch")),
            },
            _ = retry.tick() => { racing.clear(); }
        }
        if !ns_index.synced() || !cm_index.synced() {
            continue;
        }
        let todo: Vec<(String, Option<ConfigMap>)> = ns_index
            .items()
            .filter(|ns| active(ns))
            .map(|ns| ns.name_any())
            .filter(|ns| !racing.contains(ns))
            .filter_map(|ns| match cm_index.get(&ns, ROOT_CERT_CONFIGMAP) {
                None => Some((ns, None)),
                Some(cm) if outdated(cm, &root_pem) => Some((ns, Some(cm.clone()))),
                Some(_) => None,
            })
            .collect();
        for (ns, existing) in todo {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let result = match existing {
                None => api.create(&PostParams::default(), &desired(&ns, &root_pem)).await,
                Some(_) => {
                    let patch = Patch::Merge(json!({"data": {ROOT_CERT_KEY: root_pem}}));
                    api.patch(ROOT_CERT_CONFIGMAP, &PatchParams::default(), &patch).await
                }
            };
            match result {
                Ok(cm) => {
                    tracing::debug!(namespace = %ns, revision = %istiod.revision, "published istio-ca-root-cert");
                    cm_index.apply(Event::Apply(cm));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    racing.insert(ns);
                }
                Err(err) => tracing::debug!(namespace = %ns, %err, "could not publish istio-ca-root-cert; will retry"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_map_holds_the_root_and_is_rewritten_when_different() {
        let cm = desired("apps", "PEM\n");
        assert_eq!(cm.metadata.name.as_deref(), Some("istio-ca-root-cert"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("apps"));
        assert!(!outdated(&cm, "PEM\n"));
        assert!(outdated(&cm, "OTHER\n"));
        assert!(outdated(&ConfigMap::default(), "PEM\n"));
    }

    #[test]
    fn terminating_namespaces_are_skipped() {
        let live: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "a"}, "status": {"phase": "Active"}})).expect("ns");
        let dying: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "b"}, "status": {"phase": "Terminating"}})).expect("ns");
        assert!(active(&live));
        assert!(!active(&dying));
    }
}
