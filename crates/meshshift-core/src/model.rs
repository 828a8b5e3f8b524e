//! The cluster model: the part of a cluster's state that decides an Istio upgrade, as plain data.
//!
//! The Kubernetes adapter fills a [`ClusterSnapshot`] from one paginated list per kind; everything that
//! interprets it (which revision injects where, which proxy belongs to which control plane, what is wrong)
//! lives in pure code over this model. Values are kept as the cluster wrote them (labels as strings, not yet
//! parsed revisions) so that malformed input can be reported instead of being lost in translation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::selector::{LabelSelector, Labels};

/// Everything meshshift reads from a cluster, at one point in time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// All namespaces with their labels.
    pub namespaces: Vec<Namespace>,
    /// Deployments, StatefulSets and DaemonSets.
    pub workloads: Vec<Workload>,
    /// ReplicaSet -> owning Deployment links, so pods can be attributed to their Deployment.
    pub replica_sets: Vec<ReplicaSetLink>,
    /// All pods.
    pub pods: Vec<Pod>,
    /// All Services.
    pub services: Vec<Service>,
    /// MutatingWebhookConfigurations (injectors, revision tags).
    pub mutating_webhooks: Vec<WebhookConfiguration>,
    /// ValidatingWebhookConfigurations (istiod validators).
    pub validating_webhooks: Vec<WebhookConfiguration>,
    /// Istio's ConfigMaps (`istio`, `istio-*`), with data only for the injector's.
    pub config_maps: Vec<ConfigMap>,
    /// Kinds the reader was not allowed to list: the report is partial for them.
    pub unreadable: Vec<Unreadable>,
}

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Namespace name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
}

/// The kinds of workload meshshift restarts and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// A pod no controller owns.
    Pod,
}

impl WorkloadKind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Pod => "Pod",
        }
    }
}

/// A container as far as Istio cares: its image, arguments and literal environment values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Container name (`istio-proxy`, `discovery`, ...).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Arguments (`proxy router` marks a legacy gateway).
    pub args: Vec<String>,
    /// Literal `env` values (values from secrets or fields are omitted).
    pub env: BTreeMap<String, String>,
    /// `restartPolicy` of an init container (`Always` makes it a native sidecar).
    pub restart_policy: Option<String>,
}

/// A pod template: what a workload's next pods will look like.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodTemplate {
    /// Pod labels.
    pub labels: Labels,
    /// Pod annotations.
    pub annotations: Labels,
    /// Containers.
    pub containers: Vec<Container>,
    /// Init containers.
    pub init_containers: Vec<Container>,
}

/// A Deployment, StatefulSet or DaemonSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The workload object's own labels.
    pub labels: Labels,
    /// Its pod template.
    pub template: PodTemplate,
    /// Desired replicas (scheduled pods for a DaemonSet).
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
}

/// A ReplicaSet owned by a Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSetLink {
    /// Namespace.
    pub namespace: String,
    /// ReplicaSet name.
    pub name: String,
    /// Owning Deployment's name.
    pub deployment: String,
}

/// The controller that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Owner kind (`ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, ...).
    pub kind: String,
    /// Owner name.
    pub name: String,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Controller owner, if any.
    pub owner: Option<Owner>,
    /// Labels, annotations and containers as the pod runs them.
    pub spec: PodTemplate,
    /// `status.phase`.
    pub phase: String,
    /// Condition `Ready` is True.
    pub ready: bool,
    /// `spec.hostNetwork`: such pods are never injected.
    pub host_network: bool,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name.
    pub name: Option<String>,
    /// Service port.
    pub port: i32,
    /// Target port (number or name) as written.
    pub target_port: Option<String>,
    /// Protocol (TCP by default).
    pub protocol: String,
}

/// A Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.type` (ClusterIP, LoadBalancer, NodePort, ExternalName).
    pub service_type: String,
    /// `spec.selector`.
    pub selector: Labels,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// `spec.externalTrafficPolicy` when set.
    pub external_traffic_policy: Option<String>,
    /// Load-balancer ingress addresses (IP or hostname).
    pub load_balancer_ingress: Vec<String>,
}

/// Where an admission webhook sends its requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookService {
    /// Service namespace.
    pub namespace: String,
    /// Service name (`istiod`, `istiod-<rev>`, `istiod-revision-tag-<tag>`).
    pub name: String,
    /// Request path (`/inject`, `/validate`).
    pub path: Option<String>,
}

/// One webhook of a webhook configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Webhook name (`rev.namespace.sidecar-injector.istio.io`, ...).
    pub name: String,
    /// Which namespaces it applies to.
    pub namespace_selector: LabelSelector,
    /// Which objects it applies to.
    pub object_selector: LabelSelector,
    /// The in-cluster service it calls, if it calls one (rather than a URL).
    pub service: Option<WebhookService>,
    /// `caBundle` is non-empty (istiod patches it in at start-up).
    pub has_ca_bundle: bool,
    /// `failurePolicy` (`Fail` or `Ignore`).
    pub failure_policy: String,
}

/// A Mutating- or ValidatingWebhookConfiguration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfiguration {
    /// Name.
    pub name: String,
    /// Labels (`istio.io/rev`, `istio.io/tag`, `app`).
    pub labels: Labels,
    /// Its webhooks.
    pub webhooks: Vec<Webhook>,
}

/// One of Istio's ConfigMaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMap {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Data, kept only for injector ConfigMaps (`istio-sidecar-injector[-rev]`), whose `values` key
    /// tells the version when an istiod image has no usable tag.
    pub data: BTreeMap<String, String>,
}

/// A kind the reader could not list, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The resource (`pods`, `mutatingwebhookconfigurations`, ...).
    pub resource: String,
    /// The API's reason (e.g. `forbidden: User "x" cannot list ...`).
    pub reason: String,
}
