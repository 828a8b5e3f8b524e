//! Plain, comparable views of the parts of Services and Endpoints that service networking uses.
//!
//! Why: the rest of the module compares "what the data plane should look like" before and after every
//! watch event (an unchanged view must not restart the propagation delay), which is cheap and exact on
//! these small structs and noisy on whole Kubernetes objects (resourceVersion, managedFields, status).
//! Anything the lab cannot serve (UDP ports, IPv6, headless Services) is dropped here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Annotation (read, never written) overriding the load balancer's health-check interval, in milliseconds.
pub const ANNOTATION_INTERVAL: &str = "lab.meshshift.io/health-check-interval-ms";
/// Annotation (read, never written): consecutive successful checks before a node receives traffic.
pub const ANNOTATION_HEALTHY: &str = "lab.meshshift.io/healthy-threshold";
/// Annotation (read, never written): consecutive failed checks before a node stops receiving traffic.
pub const ANNOTATION_UNHEALTHY: &str = "lab.meshshift.io/unhealthy-threshold";

/// The shortest health-check interval accepted from an annotation (a lower value would busy-loop the agent).
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// A Service (and its Endpoints, which share its name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ServiceKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey { namespace: namespace.into(), name: name.into() }
    }

    /// The key of an object; `None` for an object without a name (never seen from a watch).
    pub fn of(meta: &ObjectMeta) -> Option<Self> {
        Some(ServiceKey::new(meta.namespace.clone().unwrap_or_else(|| "default".into()), meta.name.clone()?))
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficPolicy {
    /// Any node accepts and kube-proxy forwards cluster-wide (the default).
    Cluster,
    /// A node only serves its own endpoints; the load balancer health-checks nodes to find them.
    Local,
}

/// How the load balancer health-checks nodes (used with [`TrafficPolicy::Local`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between two checks of every node.
    pub interval: Duration,
    /// Consecutive successes before an unhealthy node receives traffic again.
    pub healthy_threshold: u32,
    /// Consecutive failures before a healthy node stops receiving traffic.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    /// 2 s, 2 successes, 2 failures: the order of magnitude of cloud load balancers, small enough for tests.
    fn default() -> Self {
        HealthConfig { interval: Duration::from_secs(2), healthy_threshold: 2, unhealthy_threshold: 2 }
    }
}

impl HealthConfig {
    /// The defaults overridden by the `lab.meshshift.io/*` annotations; invalid values are logged and ignored.
    pub fn from_annotations(annotations: &BTreeMap<String, String>, service: &ServiceKey) -> Self {
        let mut config = HealthConfig::default();
        let number = |key: &str, min: u64| -> Option<u64> {
            let raw = annotations.get(key)?;
            match raw.trim().parse::<u64>() {
                Ok(n) if n >= min => Some(n),
                _ => {
                    tracing::warn!(%service, annotation = key, value = %raw, min, "ignoring an invalid annotation");
                    None
                }
            }
        };
        if let Some(ms) = number(ANNOTATION_INTERVAL, MIN_INTERVAL.as_millis() as u64) {
            config.interval = Duration::from_millis(ms);
        }
        let threshold = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        if let Some(n) = number(ANNOTATION_HEALTHY, 1) {
            config.healthy_threshold = threshold(n);
        }
        if let Some(n) = number(ANNOTATION_UNHEALTHY, 1) {
            config.unhealthy_threshold = threshold(n);
        }
        config
    }
}

/// A TCP port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortSpec {
    /// The port's name (`None` when unnamed, which Kubernetes allows only for single-port Services).
    pub name: Option<String>,
    /// The port the Service listens on.
    pub port: u16,
}

/// What makes a Service a load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerSpec {
    /// `spec.externalTrafficPolicy`.
    pub policy: TrafficPolicy,
    /// Health checking of nodes (from annotations).
    pub health: HealthConfig,
    /// `spec.loadBalancerIP`, if it is a valid IPv4 address.
    pub requested_ip: Option<Ipv4Addr>,
}

/// The parts of a Service that shape the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `spec.clusterIP`, if it is an IPv4 address (not `None`/headless, not missing).
    pub cluster_ip: Option<Ipv4Addr>,
    /// The TCP ports.
    pub ports: Vec<ServicePortSpec>,
    /// Set for `type: LoadBalancer`.
    pub load_balancer: Option<LoadBalancerSpec>,
}

impl ServiceSpec {
    /// The data-plane view of `svc`.
    pub fn from_service(svc: &Service) -> Self {
        let Some(spec) = svc.spec.as_ref() else {
            return ServiceSpec { cluster_ip: None, ports: Vec::new(), load_balancer: None };
        };
        let key = ServiceKey::of(&svc.metadata).unwrap_or_else(|| ServiceKey::new("", ""));
        let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| is_tcp(p.protocol.as_deref()))
            .filter_map(|p| Some(ServicePortSpec { name: non_empty(&p.name), port: u16::try_from(p.port).ok()? }))
            .collect();
        let load_balancer = (spec.type_.as_deref() == Some("LoadBalancer")).then(|| LoadBalancerSpec {
            policy: match spec.external_traffic_policy.as_deref() {
                Some("Local") => TrafficPolicy::Local,
                _ => TrafficPolicy::Cluster,
            },
            health: svc
                .metadata
                .annotations
                .as_ref()
                .map(|a| HealthConfig::from_annotations(a, &key))
                .unwrap_or_default(),
            requested_ip: spec.load_balancer_ip.as_deref().and_then(|ip| ip.parse().ok()),
        });
        ServiceSpec { cluster_ip, ports, load_balancer }
    }
}

/// The first ingress IP in a Service's `status.loadBalancer`, as last written (by us or anyone).
pub fn status_ingress_ip(svc: &Service) -> Option<Ipv4Addr> {
    svc.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.first()?.ip.as_deref()?.parse().ok()
}

/// A ready endpoint address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddr {
    /// The pod IP.
    pub ip: Ipv4Addr,
    /// The node the pod runs on (`nodeName`), which `externalTrafficPolicy: Local` needs.
    pub node: Option<String>,
}

/// A TCP port of an Endpoints subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPortSpec {
    /// The name (equal to the Service port's name).
    pub name: Option<String>,
    /// The pod's port.
    pub port: u16,
}

/// One Endpoints subset: every ready address serves every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    /// `addresses` (ready); `notReadyAddresses` never receive traffic, so they are not kept.
    pub ready: Vec<EndpointAddr>,
    /// The TCP ports.
    pub ports: Vec<EndpointPortSpec>,
}

/// The data-plane view of an Endpoints object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointsSpec {
    /// The subsets.
    pub subsets: Vec<Subset>,
}

impl EndpointsSpec {
    /// The view of `eps`.
    pub fn from_endpoints(eps: &Endpoints) -> Self {
        let subsets = eps
            .subsets
            .iter()
            .flatten()
            .map(|s| Subset {
                ready: s
                    .addresses
                    .iter()
                    .flatten()
                    .filter_map(|a| Some(EndpointAddr { ip: a.ip.parse().ok()?, node: non_empty(&a.node_name) }))
                    .collect(),
                ports: s
                    .ports
                    .iter()
                    .flatten()
                    .filter(|p| is_tcp(p.protocol.as_deref()))
                    .filter_map(|p| {
                        Some(EndpointPortSpec { name: non_empty(&p.name), port: u16::try_from(p.port).ok()? })
                    })
                    .collect(),
            })
            .collect();
        EndpointsSpec { subsets }
    }
}

fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).expect("service")
    }

    #[test]
    fn service_view_keeps_tcp_ports_and_ipv4_cluster_ip() {
        let svc = service(json!({
            "metadata": { "name": "web", "namespace": "shop" },
            "spec": { "clusterIP": "10.96.0.10", "ports": [
                { "name": "http", "port": 80 },
                { "name": "dns", "port": 53, "protocol": "UDP" },
                { "name": "", "port": 8080, "protocol": "TCP" },
            ]}
        }));
        let spec = ServiceSpec::from_service(&svc);
        assert_eq!(spec.cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(
            spec.ports,
            vec![ServicePortSpec { name: Some("http".into()), port: 80 }, ServicePortSpec { name: None, port: 8080 }]
        );
        assert_eq!(spec.load_balancer, None);

        let headless = service(json!({ "metadata": { "name": "h" }, "spec": { "clusterIP": "None" } }));
        assert_eq!(ServiceSpec::from_service(&headless).cluster_ip, None);
    }

    #[test]
    fn load_balancer_policy_and_health_annotations() {
        let svc = service(json!({
            "metadata": { "name": "gw", "namespace": "istio-system", "annotations": {
                ANNOTATION_INTERVAL: "300", ANNOTATION_HEALTHY: "3", ANNOTATION_UNHEALTHY: "zero"
            }},
            "spec": { "type": "LoadBalancer", "externalTrafficPolicy": "Local", "loadBalancerIP": "10.250.0.7",
                      "clusterIP": "10.96.1.1", "ports": [{ "port": 80 }] }
        }));
        let lb = ServiceSpec::from_service(&svc).load_balancer.expect("a load balancer");
        assert_eq!(lb.policy, TrafficPolicy::Local);
        assert_eq!(lb.requested_ip, Some(Ipv4Addr::new(10, 250, 0, 7)));
        assert_eq!(
            lb.health,
            HealthConfig { interval: Duration::from_millis(300), healthy_threshold: 3, unhealthy_threshold: 2 }
        );

        let cluster = service(json!({ "metadata": { "name": "gw" }, "spec": { "type": "LoadBalancer" } }));
        let lb = ServiceSpec::from_service(&cluster).load_balancer.expect("a load balancer");
        assert_eq!(lb.policy, TrafficPolicy::Cluster);
        assert_eq!(lb.health, HealthConfig::default());
    }

    #[test]
    fn too_small_interval_is_ignored() {
        let annotations = BTreeMap::from([(ANNOTATION_INTERVAL.to_owned(), "1".to_owned())]);
        let config = HealthConfig::from_annotations(&annotations, &ServiceKey::new("a", "b"));
        assert_eq!(config.interval, HealthConfig::default().interval);
    }

    #[test]
    fn endpoints_view_keeps_ready_addresses_only() {
        let eps: Endpoints = serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "shop" },
            "subsets": [{
                "addresses": [{ "ip": "10.244.1.1", "nodeName": "n1" }, { "ip": "10.244.1.2" }],
                "notReadyAddresses": [{ "ip": "10.244.1.3" }],
                "ports": [{ "name": "http", "port": 8080 }, { "name": "dns", "port": 53, "protocol": "UDP" }]
            }]
        }))
        .expect("endpoints");
        let view = EndpointsSpec::from_endpoints(&eps);
        assert_eq!(
            view.subsets,
            vec![Subset {
                ready: vec![
                    EndpointAddr { ip: Ipv4Addr::new(10, 244, 1, 1), node: Some("n1".into()) },
                    EndpointAddr { ip: Ipv4Addr::new(10, 244, 1, 2), node: None },
                ],
                ports: vec![EndpointPortSpec { name: Some("http".into()), port: 8080 }],
            }]
        );
    }

    #[test]
    fn status_ip_is_read() {
        let svc = service(json!({
            "metadata": { "name": "gw" },
            "status": { "loadBalancer": { "ingress": [{ "ip": "10.250.0.3" }] } }
        }));
        assert_eq!(status_ingress_ip(&svc), Some(Ipv4Addr::new(10, 250, 0, 3)));
        assert_eq!(status_ingress_ip(&service(json!({ "metadata": { "name": "gw" } }))), None);
    }
}
