//! Node objects and their heartbeats.
//!
//! The node lifecycle controller marks a node NotReady (then taints it and evicts its pods) when neither
//! its Lease in `kube-node-lease` nor its `Ready` condition's `lastHeartbeatTime` moved for 40 s
//! (`--node-monitor-grace-period`). The agent renews the Lease every 10 s, as the kubelet does, and
//! rewrites the node status every 30 s, which also brings a node back to Ready after the agent was down.
//! A Node deleted by hand is registered again at the next status heartbeat.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// How often the Lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease's duration (the kubelet's default).
const LEASE_DURATION_SECONDS: i32 = 40;
/// Every how many Lease renewals the node status is written.
const STATUS_EVERY: u32 = 3;
/// Where node Leases live.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The kubelet version the nodes report (the control plane's).
const KUBELET_VERSION: &str = "v1.20.2";

/// A lab node's name: `lab-node-<index>` (index from 1).
pub fn node_name(index: u8) -> String {
    format!("lab-node-{index}")
}

/// A lab node's address (its InternalIP): `10.244.<index>.1`; its pods get `10.244.<index>.2..254`.
pub fn node_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, index, 1)
}

/// Who a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeIdentity {
    /// 1-based.
    pub index: u8,
    pub name: String,
    pub internal_ip: Ipv4Addr,
}

impl NodeIdentity {
    pub(crate) fn new(index: u8) -> Self {
        NodeIdentity { index, name: node_name(index), internal_ip: node_ip(index) }
    }
}

/// The node's labels: hostname, OS and architecture (with the beta.* forms: Istio 1.9 charts' node
/// affinity still uses `beta.kubernetes.io/arch`).
pub(crate) fn node_labels(id: &NodeIdentity) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", id.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", "meshshift-lab"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Generous resources: the lab's pods are cheap emulations, scheduling should never fail for lack of room.
fn resources() -> BTreeMap<String, Quantity> {
    [("cpu", "64"), ("memory", "256Gi"), ("pods", "250"), ("ephemeral-storage", "1Ti"), ("hugepages-2Mi", "0")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
        .collect()
}

fn condition(
    kind: &str,
    ok_is_true: bool,
    reason: &str,
    message: &str,
    heartbeat: Timestamp,
    since: Timestamp,
) -> NodeCondition {
    NodeCondition {
        type_: kind.to_owned(),
        status: if ok_is_true { "True" } else { "False" }.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(Time(heartbeat)),
        last_transition_time: Some(Time(since)),
    }
}

/// The node's status at `now`; `since` is when it became Ready (its registration).
pub(crate) fn node_status(id: &NodeIdentity, now: Timestamp, since: Timestamp) -> NodeStatus {
    let uuid = format!("meshshift-lab-{}", id.name);
    NodeStatus {
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: id.internal_ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: id.name.clone() },
        ]),
        capacity: Some(resources()),
        allocatable: Some(resources()),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                now,
                since,
            ),
            condition("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure", now, since),
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                now,
                since,
            ),
            condition("Ready", true, "KubeletReady", "meshshift lab node agent is posting ready status", now, since),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }) }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            os_image: "meshshift lab".into(),
            kernel_version: "lab".into(),
            container_runtime_version: format!("meshshift-lab://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: KUBELET_VERSION.into(),
            machine_id: uuid.clone(),
            system_uuid: uuid.clone(),
            boot_id: uuid,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Node object to create.
pub(crate) fn node_object(id: &NodeIdentity, now: Timestamp) -> Node {
    let cidr = format!("10.244.{}.0/24", id.index);
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(node_labels(id)),
            annotations: Some(BTreeMap::from([("node.alpha.kubernetes.io/ttl".to_owned(), "0".to_owned())])),
            ..Default::default()
        },
        spec: Some(NodeSpec { pod_cidr: Some(cidr.clone()), pod_cidrs: Some(vec![cidr]), ..Default::default() }),
        status: Some(node_status(id, now, now)),
    }
}

/// The node's Lease, owned by the Node (so it goes away with it).
pub(crate) fn lease_object(id: &NodeIdentity, node_uid: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: id.name.clone(),
                uid: node_uid.to_owned(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(id.name.clone()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// Creates the Node (or, if it exists from an earlier run, refreshes its labels and status) and its
/// Lease. Returns the Node's UID.
pub(crate) async fn register(client: &Client, id: &NodeIdentity) -> Result<String, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now();
    let node = match nodes.create(&PostParams::default(), &node_object(id, now)).await {
        Ok(node) => node,
        Err(err) if is_status(&err, 409) => {
            let labels = serde_json::json!({ "metadata": { "labels": node_labels(id) } });
            nodes.patch(&id.name, &PatchParams::default(), &Patch::Merge(&labels)).await?;
            write_status(&nodes, id, now).await?
        }
        Err(err) => return Err(err),
    };
    let uid = node.metadata.uid.unwrap_or_default();
    renew_lease(client, id, &uid).await?;
    tracing::info!(node = id.name, ip = %id.internal_ip, "node registered");
    Ok(uid)
}

async fn write_status(nodes: &Api<Node>, id: &NodeIdentity, since: Timestamp) -> Result<Node, kube::Error> {
    let status = serde_json::json!({ "status": node_status(id, Timestamp::now(), since) });
    nodes.patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&status)).await
}

/// Renews the Lease, creating it if it is missing.
async fn renew_lease(client: &Client, id: &NodeIdentity, node_uid: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = Timestamp::now();
    let renew = serde_json::json!({ "spec": { "renewTime": MicroTime(now), "holderIdentity": id.name } });
    match leases.patch(&id.name, &PatchParams::default(), &Patch::Merge(&renew)).await {
        Ok(_) => Ok(()),
        Err(err) if is_status(&err, 404) => {
            match leases.create(&PostParams::default(), &lease_object(id, node_uid, now)).await {
                Ok(_) => Ok(()),
                Err(err) if is_status(&err, 409) => Ok(()), // created meanwhile
                Err(err) => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

/// Keeps the node alive until `shutdown`: Lease every 10 s, status every 30 s, re-registration if the
/// Node was deleted. Errors are logged and retried at the next tick.
pub(crate) async fn keep_alive(client: Client, id: NodeIdentity, mut uid: String, mut shutdown: watch::Receiver<bool>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let since = Timestamp::now();
    let mut ticks = tokio::time::interval(LEASE_RENEW);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate: registration just renewed everything
    let mut n: u32 = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        n = n.wrapping_add(1);
        if n.is_multiple_of(STATUS_EVERY) {
            match write_status(&nodes, &id, since).await {
                Ok(_) => {}
                Err(err) if is_status(&err, 404) => {
                    tracing::warn!(node = id.name, "the Node was deleted: registering it again");
                    match register(&client, &id).await {
                        Ok(new_uid) => uid = new_uid,
                        Err(err) => tracing::warn!(node = id.name, %err, "registering the node again failed"),
                    }
                    continue;
                }
                Err(err) => tracing::warn!(node = id.name, %err, "node status heartbeat failed"),
            }
        }
        if let Err(err) = renew_lease(&client, &id, &uid).await {
            tracing::warn!(node = id.name, %err, "renewing the node lease failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_objects_carry_what_schedulers_and_charts_look_for() {
        let id = NodeIdentity::new(2);
        let now = Timestamp::from_second(1_700_000_000).expect("ts");
        let node = node_object(&id, now);
        assert_eq!(node.metadata.name.as_deref(), Some("lab-node-2"));
        let labels = node.metadata.labels.expect("labels");
        for (k, v) in [
            ("kubernetes.io/hostname", "lab-node-2"),
            ("kubernetes.io/arch", "amd64"),
            ("beta.kubernetes.io/arch", "amd64"),
            ("kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/os", "linux"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(node.spec.and_then(|s| s.pod_cidr).as_deref(), Some("10.244.2.0/24"));
        let status = node.status.expect("status");
        let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.last_heartbeat_time.clone()), ("True", Some(Time(now))));
        let addresses = status.addresses.expect("addresses");
        assert_eq!(addresses[0].address, "10.244.2.1");
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(status.allocatable.expect("allocatable")["pods"].0, "250");
        assert_eq!(status.node_info.expect("info").kubelet_version, "v1.20.2");
    }

    #[test]
    fn heartbeats_keep_the_transition_time() {
        let id = NodeIdentity::new(1);
        let (since, now) = (Timestamp::from_second(100).expect("ts"), Timestamp::from_second(200).expect("ts"));
        let status = node_status(&id, now, since);
        let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!(ready.last_transition_time, Some(Time(since)));
        assert_eq!(ready.last_heartbeat_time, Some(Time(now)));
    }

    #[test]
    fn leases_are_owned_by_their_node() {
        let id = NodeIdentity::new(1);
        let lease = lease_object(&id, "uid-1", Timestamp::from_second(100).expect("ts"));
        assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
        let owner = &lease.metadata.owner_references.expect("owners")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "uid-1"));
        let spec = lease.spec.expect("spec");
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_duration_seconds), (Some("lab-node-1"), Some(40)));
    }
}
