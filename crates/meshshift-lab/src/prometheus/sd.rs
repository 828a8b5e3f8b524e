//! Pod discovery for the lab's Prometheus: Prometheus' Kubernetes service discovery (role `pod`), served
//! as HTTP service discovery.
//!
//! Why: Debian's `prometheus` package is built without Kubernetes service discovery (its NEWS: "Kubernetes
//! support has been completely removed, due to the insane amount of dependencies in their client
//! library"); it has `http_sd_configs`. So the supervisor watches the pods through the lab's apiserver
//! (inside the namespace, with the lab's CA and admin client certificate) and serves, on [`SD_ADDR`]
//! [`SD_PATH`], exactly the targets and `__meta_kubernetes_*` labels that `kubernetes_sd_configs` with
//! `role: pod` would give (Prometheus 2.42's `discovery/kubernetes/pod.go`): one target per container
//! port (`<pod IP>:<port>`), one per container without ports (`<pod IP>`), none for a pod without an IP.
//! The relabelling of the scrape job is the one a Kubernetes-SD Prometheus would use, unchanged.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::net::SocketAddrV4;
use std::path::PathBuf;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::watch;

use crate::LabError;

/// Where the discovery endpoint listens inside the namespace.
pub const SD_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9091);
/// Its path.
pub const SD_PATH: &str = "/pods";

/// One HTTP SD target group: `{"targets": [...], "labels": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    /// `host[:port]` addresses.
    pub targets: Vec<String>,
    /// Labels of every target of the group (here: the pod's and the container port's).
    pub labels: BTreeMap<String, String>,
}

const META: &str = "__meta_kubernetes_";

/// The targets Prometheus' Kubernetes SD (role `pod`) makes of `pod`, one group per target (HTTP SD has
/// no per-target labels).
pub fn pod_targets(pod: &Pod) -> Vec<TargetGroup> {
    let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).filter(|ip| !ip.is_empty()) else {
        return Vec::new(); // starting or evicted: Prometheus makes an empty group
    };
    let pod_labels = pod_labels(pod);
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.iter().map(|c| (c, false))).into_iter().flatten();
    let init = spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten().map(|c| (c, true));
    let mut groups = Vec::new();
    for (container, is_init) in containers.chain(init) {
        let mut base = pod_labels.clone();
        base.insert(format!("{META}pod_container_name"), container.name.clone());
        base.insert(format!("{META}pod_container_image"), container.image.clone().unwrap_or_default());
        base.insert(format!("{META}pod_container_init"), is_init.to_string());
        let ports = container.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            groups.push(TargetGroup { targets: vec![ip.to_owned()], labels: base });
            continue;
        }
        for port in ports {
            let mut labels = base.clone();
            let number = port.container_port.to_string();
            labels.insert(format!("{META}pod_container_port_number"), number.clone());
            labels.insert(format!("{META}pod_container_port_name"), port.name.clone().unwrap_or_default());
            labels.insert(format!("{META}pod_container_port_protocol"), port.protocol.clone().unwrap_or_default());
            groups.push(TargetGroup { targets: vec![join_host_port(ip, &number)], labels });
        }
    }
    groups
}

/// The pod-level labels (`podLabels` and `addObjectMetaLabels` in Prometheus).
fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let mut labels = BTreeMap::new();
    let mut put = |name: &str, value: Option<&str>| {
        labels.insert(format!("{META}{name}"), value.unwrap_or_default().to_owned());
    };
    put("namespace", meta.namespace.as_deref());
    put("pod_name", meta.name.as_deref());
    put("pod_ip", status.and_then(|s| s.pod_ip.as_deref()));
    put("pod_ready", Some(&ready(pod)));
    put("pod_phase", status.and_then(|s| s.phase.as_deref()));
    put("pod_node_name", spec.and_then(|s| s.node_name.as_deref()));
    put("pod_host_ip", status.and_then(|s| s.host_ip.as_deref()));
    put("pod_uid", meta.uid.as_deref());
    if let Some(owner) = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
        if !owner.kind.is_empty() {
            put("pod_controller_kind", Some(&owner.kind));
        }
        if !owner.name.is_empty() {
            put("pod_controller_name", Some(&owner.name));
        }
    }
    for (key, value) in meta.labels.iter().flatten() {
        let name = sanitize(key);
        labels.insert(format!("{META}pod_label_{name}"), value.clone());
        labels.insert(format!("{META}pod_labelpresent_{name}"), "true".to_owned());
    }
    for (key, value) in meta.annotations.iter().flatten() {
        let name = sanitize(key);
        labels.insert(format!("{META}pod_annotation_{name}"), value.clone());
        labels.insert(format!("{META}pod_annotationpresent_{name}"), "true".to_owned());
    }
    labels
}

/// `true`, `false` or `unknown`: the Ready condition's status, lower-cased.
fn ready(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or_else(|| "unknown".to_owned(), |c| c.status.to_ascii_lowercase())
}

/// A label name from a Kubernetes key: every character outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Every pod's targets, pods in namespace/name order.
pub fn target_groups<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<TargetGroup> {
    let mut pods: Vec<&Pod> = pods.into_iter().collect();
    pods.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
    pods.into_iter().flat_map(pod_targets).collect()
}

/// Serves the discovery endpoint on `listener` from a watch of every pod, until `shutdown`. Before the
/// first list completes it answers an empty list (Prometheus asks again every second).
pub(crate) async fn serve(
    kubeconfig: PathBuf,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LabError> {
    let client = crate::kubeconfig::client_from_file(&kubeconfig).await?;
    let (store, writer) = reflector::store();
    let pods: kube::Api<Pod> = kube::Api::all(client);
    let reflect = reflector::reflector(writer, watcher(pods, watcher::Config::default()).default_backoff());
    let reflect = async move {
        let mut stream = std::pin::pin!(reflect);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(%err, "watching pods for Prometheus discovery failed; retrying");
            }
        }
    };
    let app = axum::Router::new().route(SD_PATH, get(answer)).with_state(store);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    });
    tokio::select! {
        result = server => result.map_err(|e| LabError::io("serve Prometheus discovery on", SD_ADDR.to_string(), e)),
        () = reflect => Ok(()),
    }
}

async fn answer(State(store): State<Store<Pod>>) -> Json<Vec<TargetGroup>> {
    let pods = store.state();
    Json(target_groups(pods.iter().map(|p| p.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("pod")
    }

    fn injected() -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "productpage-v1-7f9d-abcde", "namespace": "bookinfo", "uid": "u-1",
                "labels": {"app": "productpage", "istio.io/rev": "1-10-6", "security.istio.io/tlsMode": "istio"},
                "annotations": {"prometheus.io/port": "15020", "prometheus.io/scrape": "true"},
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "productpage-v1-7f9d", "uid": "r", "controller": true}
                ],
            },
            "spec": {
                "nodeName": "lab-node-1",
                "initContainers": [{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.10.6"}],
                "containers": [
                    {"name": "productpage", "image": "docker.io/istio/examples-bookinfo-productpage-v1:1.16.2",
                     "ports": [{"containerPort": 9080, "protocol": "TCP"}]},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.10.6",
                     "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}]},
                ],
            },
            "status": {
                "phase": "Running", "podIP": "10.244.1.7", "hostIP": "10.244.255.1",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
    }

    #[test]
    fn one_target_per_container_port_with_kubernetes_sd_labels() {
        let groups = pod_targets(&injected());
        let targets: Vec<&str> = groups.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(targets, ["10.244.1.7:9080", "10.244.1.7:15090", "10.244.1.7"]);
        let proxy = &groups[1].labels;
        let get = |name: &str| proxy.get(&format!("__meta_kubernetes_{name}")).map(String::as_str);
        assert_eq!(get("namespace"), Some("bookinfo"));
        assert_eq!(get("pod_name"), Some("productpage-v1-7f9d-abcde"));
        assert_eq!(get("pod_ip"), Some("10.244.1.7"));
        assert_eq!(get("pod_ready"), Some("true"));
        assert_eq!(get("pod_phase"), Some("Running"));
        assert_eq!(get("pod_node_name"), Some("lab-node-1"));
        assert_eq!(get("pod_host_ip"), Some("10.244.255.1"));
        assert_eq!(get("pod_uid"), Some("u-1"));
        assert_eq!(get("pod_controller_kind"), Some("ReplicaSet"));
        assert_eq!(get("pod_controller_name"), Some("productpage-v1-7f9d"));
        assert_eq!(get("pod_label_istio_io_rev"), Some("1-10-6"));
        assert_eq!(get("pod_labelpresent_security_istio_io_tlsMode"), Some("true"));
        assert_eq!(get("pod_annotation_prometheus_io_port"), Some("15020"));
        assert_eq!(get("pod_annotationpresent_prometheus_io_scrape"), Some("true"));
        assert_eq!(get("pod_container_name"), Some("istio-proxy"));
        assert_eq!(get("pod_container_image"), Some("docker.io/istio/proxyv2:1.10.6"));
        assert_eq!(get("pod_container_port_number"), Some("15090"));
        assert_eq!(get("pod_container_port_name"), Some("http-envoy-prom"));
        assert_eq!(get("pod_container_port_protocol"), Some("TCP"));
        assert_eq!(get("pod_container_init"), Some("false"));
        // The init container has no ports: one target at the pod IP.
        let init = &groups[2].labels;
        assert_eq!(init.get("__meta_kubernetes_pod_container_init").map(String::as_str), Some("true"));
        assert!(!init.contains_key("__meta_kubernetes_pod_container_port_number"));
    }

    #[test]
    fn pods_without_an_ip_have_no_targets_and_readiness_defaults_to_unknown() {
        let mut pending = injected();
        pending.status = None;
        assert!(pod_targets(&pending).is_empty());
        let mut unready = injected();
        if let Some(status) = unready.status.as_mut() {
            status.conditions = None;
        }
        assert_eq!(
            pod_targets(&unready)[0].labels.get("__meta_kubernetes_pod_ready").map(String::as_str),
            Some("unknown")
        );
    }

    #[test]
    fn the_answer_is_http_sd_json_in_pod_order() {
        let mut other = injected();
        other.metadata.namespace = Some("alpha".into());
        let pods = [injected(), other];
        let groups = target_groups(pods.iter());
        assert_eq!(groups[0].labels["__meta_kubernetes_namespace"], "alpha");
        let json = serde_json::to_value(&groups[..1]).expect("json");
        assert_eq!(json[0]["targets"], serde_json::json!(["10.244.1.7:9080"]));
        assert!(json[0]["labels"].is_object());
        assert_eq!(sanitize("prometheus.io/scrape"), "prometheus_io_scrape");
        assert_eq!(join_host_port("fd00::1", "80"), "[fd00::1]:80");
    }
}
