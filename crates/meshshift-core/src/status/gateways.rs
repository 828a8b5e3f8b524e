//! Gateways (legacy and injected) and the Services that select them, the user-owned LoadBalancer above
//! all: it is the one object whose selector decides which gateway revision serves users.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::workloads::pod_workload;
use crate::model::{ClusterSnapshot, Workload};
use crate::proxy::{PROXY_CONTAINER, REV_LABEL, detect_proxy};
use crate::selector::{Labels, service_selects};
use crate::version::version_from_image;

/// Pod annotation that selects the injector's gateway template.
pub const GATEWAY_TEMPLATE_ANNOTATION: &str = "inject.istio.io/templates";

/// A gateway Deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Namespace.
    pub namespace: String,
    /// Deployment name.
    pub name: String,
    /// Deployed by injection (`inject.istio.io/templates: gateway`) rather than with an explicit proxy image.
    pub injected: bool,
    /// Its control-plane revision.
    pub revision: String,
    /// Proxy version: the explicit image's tag (legacy) or what its pods run (injected).
    pub version: Option<String>,
    /// Pod template labels (what Services select on).
    pub pod_labels: Labels,
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
}

/// A gateway a Service selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedGateway {
    /// Gateway Deployment name.
    pub gateway: String,
    /// Its revision.
    pub revision: String,
}

/// A Service that selects gateway pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayServiceStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.type`.
    pub service_type: String,
    /// `spec.selector`.
    pub selector: Labels,
    /// `spec.externalTrafficPolicy`, when set.
    pub external_traffic_policy: Option<String>,
    /// Load-balancer ingress addresses.
    pub ingress: Vec<String>,
    /// The gateways it selects now.
    pub selects: Vec<SelectedGateway>,
}

/// Whether a workload is a gateway: an injected gateway template, or an explicit `istio-proxy`
/// container started as `proxy router`.
pub fn is_gateway(w: &Workload) -> bool {
    is_injected_gateway(w)
        || w.template.containers.iter().any(|c| c.name == PROXY_CONTAINER && c.args.iter().any(|a| a == "router"))
}

/// Whether a workload's proxy comes from the injector's `gateway` template.
pub fn is_injected_gateway(w: &Workload) -> bool {
    w.template.annotations.get(GATEWAY_TEMPLATE_ANNOTATION).is_some_and(|t| t.split(',').any(|t| t.trim() == "gateway"))
}

/// Every gateway Deployment.
pub fn gateways(snapshot: &ClusterSnapshot) -> Vec<GatewayStatus> {
    let mut out: Vec<GatewayStatus> = snapshot
        .workloads
        .iter()
        .filter(|w| is_gateway(w))
        .map(|w| {
            let injected = is_injected_gateway(w);
            let pods: Vec<_> = snapshot
                .pods
                .iter()
                // Names are unique per kind only: a StatefulSet may share the gateway Deployment's name.
                .filter(|p| {
                    p.namespace == w.namespace && {
                        let (kind, name) = pod_workload(snapshot, p);
                        kind == w.kind.as_str() && name == w.name
                    }
                })
                .filter_map(|p| detect_proxy(&p.spec))
                .collect();
            let image_version = w
                .template
                .containers
                .iter()
                .find(|c| c.name == PROXY_CONTAINER)
                .and_then(|c| version_from_image(&c.image));
            let version = image_version.or_else(|| most_common(pods.iter().filter_map(|p| p.version.clone())));
            let revision = w
                .template
                .labels
                .get(REV_LABEL)
                .or_else(|| w.labels.get(REV_LABEL))
                .cloned()
                .or_else(|| most_common(pods.iter().filter_map(|p| p.revision.clone())))
                .unwrap_or_else(|| "default".to_owned());
            GatewayStatus {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                injected,
                revision,
                version: version.map(|v| v.to_string()),
                pod_labels: w.template.labels.clone(),
                replicas: w.replicas,
                ready_replicas: w.ready_replicas,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn most_common<T: Ord + Clone>(items: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for i in items {
        *counts.entry(i).or_default() += 1;
    }
    counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0))).map(|(t, _)| t)
}

/// Services that select at least one gateway's pods.
pub fn gateway_services(snapshot: &ClusterSnapshot, gateways: &[GatewayStatus]) -> Vec<GatewayServiceStatus> {
    let mut out: Vec<GatewayServiceStatus> = snapshot
        .services
        .iter()
        .filter_map(|s| {
            let selects: Vec<SelectedGateway> = gateways
                .iter()
                .filter(|g| g.namespace == s.namespace && service_selects(&s.selector, &g.pod_labels))
                .map(|g| SelectedGateway { gateway: g.name.clone(), revision: g.revision.clone() })
                .collect();
            (!selects.is_empty()).then(|| GatewayServiceStatus {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                service_type: s.service_type.clone(),
                selector: s.selector.clone(),
                external_traffic_policy: s.external_traffic_policy.clone(),
                ingress: s.load_balancer_ingress.clone(),
                selects,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}
