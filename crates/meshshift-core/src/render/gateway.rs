//! Ingress gateways in the seed's blue/green layout: one Deployment and one ClusterIP Service per
//! revision, labelled `istio: ingressgateway, version: <revision>`, and one user-owned LoadBalancer Service
//! whose selector picks the live colour.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{DEFAULT_HUB, discovery_address, meta, rev_label};
use crate::version::{IstioVersion, Revision};

/// One gateway revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// Deployment and ClusterIP Service name (e.g. `istio-ingressgateway-1-10-6`).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The control-plane revision it belongs to.
    pub revision: Revision,
    /// Proxy version (legacy gateways name the image; injected ones get it from the injector).
    pub version: IstioVersion,
    /// The control plane's namespace (for the discovery address).
    pub control_plane_namespace: String,
    /// Deployed by injection (`inject.istio.io/templates: gateway`, image `auto`), as Istio recommends.
    pub injected: bool,
    /// Replicas.
    pub replicas: u32,
    /// Image registry.
    pub hub: String,
}

impl GatewaySpec {
    /// The seed's per-revision gateway in `namespace`, named `istio-ingressgateway-<revision>`.
    pub fn new(namespace: &str, revision: Revision, version: IstioVersion) -> Self {
        Self {
            name: format!("istio-ingressgateway-{revision}"),
            namespace: namespace.to_owned(),
            revision,
            version,
            control_plane_namespace: "istio-system".to_owned(),
            injected: true,
            replicas: 2,
            hub: DEFAULT_HUB.to_owned(),
        }
    }

    /// The pod labels that make this gateway a colour: what the user's LoadBalancer selects.
    pub fn selector(&self) -> BTreeMap<String, String> {
        [("istio".to_owned(), "ingressgateway".to_owned()), ("version".to_owned(), rev_label(&self.revision))].into()
    }
}

fn ports() -> Value {
    json!([
        {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
        {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
    ])
}

/// The gateway's Deployment and its own ClusterIP Service.
pub fn gateway(spec: &GatewaySpec) -> Vec<Value> {
    let rev = rev_label(&spec.revision);
    let mut pod_labels =
        json!({"app": "istio-ingressgateway", "istio": "ingressgateway", "version": rev, "istio.io/rev": rev});
    let mut annotations = json!({"proxy.istio.io/config": "terminationDrainDuration: 5s"});
    let container = if spec.injected {
        pod_labels["sidecar.istio.io/inject"] = json!("true");
        annotations["inject.istio.io/templates"] = json!("gateway");
        json!({"name": "istio-proxy", "image": "auto", "ports": [
            {"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 8443, "protocol": "TCP"},
            {"containerPort": 15021, "protocol": "TCP"}, {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}]})
    } else {
        pod_labels["sidecar.istio.io/inject"] = json!("false");
        json!({
            "name": "istio-proxy",
            "image": format!("{}/proxyv2:{}", spec.hub, spec.version),
            "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local", "--serviceCluster", spec.name],
            "ports": [
                {"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 8443, "protocol": "TCP"},
                {"containerPort": 15021, "protocol": "TCP"}, {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "initialDelaySeconds": 1, "periodSeconds": 2, "failureThreshold": 30},
            "env": [
                {"name": "PROXY_CONFIG", "value": json!({"discoveryAddress": discovery_address(&spec.revision, &spec.control_plane_namespace)}).to_string()},
                {"name": "CA_ADDR", "value": discovery_address(&spec.revision, &spec.control_plane_namespace)},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
            ],
        })
    };
    vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(&spec.name, Some(&spec.namespace), json!({"app": "istio-ingressgateway", "istio": "ingressgateway", "version": rev, "istio.io/rev": rev})),
            "spec": {
                "replicas": spec.replicas,
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "selector": {"matchLabels": {"istio": "ingressgateway", "version": rev}},
                "template": {
                    "metadata": {"labels": pod_labels, "annotations": annotations},
                    "spec": {"terminationGracePeriodSeconds": 30, "containers": [container]},
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(&spec.name, Some(&spec.namespace), json!({"app": "istio-ingressgateway", "istio": "ingressgateway", "version": rev})),
            "spec": {"type": "ClusterIP", "selector": spec.selector(), "ports": ports()},
        }),
    ]
}

/// The user-owned LoadBalancer Service in front of the gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerSpec {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The selector (the live colour).
    pub selector: BTreeMap<String, String>,
    /// `externalTrafficPolicy`.
    pub external_traffic_policy: String,
}

/// The user-owned LoadBalancer Service.
pub fn load_balancer(spec: &LoadBalancerSpec) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(&spec.name, Some(&spec.namespace), json!({"app": "istio-ingressgateway", "istio": "ingressgateway"})),
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": spec.external_traffic_policy, "selector": spec.selector, "ports": ports()},
    })
}
