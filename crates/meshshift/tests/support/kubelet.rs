//! A stand-in for the kubelet, enough for `status` tests: registers a Node and writes pod status
//! (Running, Ready, a pod IP) so controllers publish ready replicas. The lab's node agent does this for
//! real, with processes behind the pods; here only the API state matters.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Registers a Ready node named `name`.
pub async fn register_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux"}},
        "status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test kubelet"}]
        }
    }))
    .expect("node json");
    nodes.create(&PostParams::default(), &node).await.expect("create node");
}

/// Marks every scheduled pod Running and Ready until every Deployment reports all replicas ready.
pub async fn make_all_ready(client: &Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::all(client.clone());
    let mut next_ip = 10u32;
    let mut last = Vec::new();
    for _ in 0..120 {
        for pod in pods.list(&ListParams::default()).await.expect("list pods").items {
            let scheduled = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if !scheduled || running {
                continue;
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let containers: Vec<_> = pod
                .spec
                .as_ref()
                .map(|s| s.containers.iter().map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0, "started": true, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})).collect())
                .unwrap_or_default();
            let ip = format!("10.244.1.{}", next_ip % 250 + 2);
            next_ip += 1;
            let now = "2026-01-01T00:00:00Z";
            let conditions: Vec<_> = ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
                .iter()
                .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": now}))
                .collect();
            let status = json!({"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.244.0.1", "startTime": now,
                "conditions": conditions,
                "containerStatuses": containers,
            }});
            Api::<Pod>::namespaced(client.clone(), &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("patch pod status");
        }
        let not_ready: Vec<String> = deployments
            .list(&ListParams::default())
            .await
            .expect("list deployments")
            .items
            .iter()
            .filter(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.as_ref();
                st.and_then(|s| s.ready_replicas).unwrap_or(0) != want
                    || st.and_then(|s| s.replicas).unwrap_or(0) != want
            })
            .map(|d| {
                format!(
                    "{}/{}: {:?}",
                    d.metadata.namespace.as_deref().unwrap_or(""),
                    d.metadata.name.as_deref().unwrap_or(""),
                    d.status
                )
            })
            .collect();
        if not_ready.is_empty() {
            return;
        }
        last = not_ready;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("deployments did not become ready within 30 s: {last:#?}");
}
