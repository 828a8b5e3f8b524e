//! Istio's bookinfo sample: four services, six Deployments, and the Gateway/VirtualService that expose it.

use serde_json::{Value, json};

use super::meta;

/// How to install bookinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookinfoSpec {
    /// Namespace.
    pub namespace: String,
    /// Replicas of every Deployment.
    pub replicas: u32,
    /// Image tag of the sample images.
    pub tag: String,
}

impl BookinfoSpec {
    /// Bookinfo in `namespace` with `replicas` replicas of the 1.16.2 images (Istio 1.9's sample).
    pub fn new(namespace: &str, replicas: u32) -> Self {
        Self { namespace: namespace.to_owned(), replicas, tag: "1.16.2".to_owned() }
    }
}

const WORKLOADS: [(&str, &str); 6] = [
    ("details", "v1"),
    ("ratings", "v1"),
    ("reviews", "v1"),
    ("reviews", "v2"),
    ("reviews", "v3"),
    ("productpage", "v1"),
];

/// Services, ServiceAccounts and Deployments of bookinfo.
pub fn bookinfo(spec: &BookinfoSpec) -> Vec<Value> {
    let ns = Some(spec.namespace.as_str());
    let mut out = Vec::new();
    for app in ["details", "ratings", "reviews", "productpage"] {
        out.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(app, ns, json!({"app": app, "service": app})),
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 9080}]},
        }));
        out.push(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": meta(&format!("bookinfo-{app}"), ns, json!({"account": app})),
        }));
    }
    for (app, version) in WORKLOADS {
        let name = format!("{app}-{version}");
        out.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(&name, ns, json!({"app": app, "version": version})),
            "spec": {
                "replicas": spec.replicas,
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "selector": {"matchLabels": {"app": app, "version": version}},
                "template": {
                    "metadata": {"labels": {"app": app, "version": version}},
                    "spec": {
                        "serviceAccountName": format!("bookinfo-{app}"),
                        "containers": [{
                            "name": app,
                            "image": format!("docker.io/istio/examples-bookinfo-{app}-{version}:{}", spec.tag),
                            "ports": [{"containerPort": 9080}],
                        }],
                    },
                },
            },
        }));
    }
    out
}

/// `bookinfo-gateway.yaml`: a Gateway on port 80 for gateways labelled `istio: ingressgateway`, and the
/// VirtualService routing bookinfo's paths to productpage.
pub fn bookinfo_gateway(namespace: &str) -> Vec<Value> {
    let ns = Some(namespace);
    vec![
        json!({
            "apiVersion": "networking.istio.io/v1alpha3", "kind": "Gateway",
            "metadata": meta("bookinfo-gateway", ns, json!({})),
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
        }),
        json!({
            "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
            "metadata": meta("bookinfo", ns, json!({})),
            "spec": {
                "hosts": ["*"],
                "gateways": ["bookinfo-gateway"],
                "http": [{
                    "match": [
                        {"uri": {"exact": "/productpage"}},
                        {"uri": {"prefix": "/static"}},
                        {"uri": {"exact": "/login"}},
                        {"uri": {"exact": "/logout"}},
                        {"uri": {"prefix": "/api/v1/products"}},
                    ],
                    "route": [{"destination": {"host": "productpage", "port": {"number": 9080}}}],
                }],
            },
        }),
    ]
}
