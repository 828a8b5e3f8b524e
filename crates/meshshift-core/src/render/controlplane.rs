//! The control plane of one revision (istiod, its Service, ConfigMaps, injector) and the shared base
//! (CRDs, the default validating webhook).

use serde_json::{Value, json};

use super::webhooks::injector_webhook;
use super::{DEFAULT_HUB, discovery_address, istiod_name, meta, rev_label};
use crate::version::{IstioVersion, Revision};

/// What to install for one control-plane revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneSpec {
    /// Istio version.
    pub version: IstioVersion,
    /// Revision (`default` for a non-revisioned install).
    pub revision: Revision,
    /// istiod's namespace.
    pub namespace: String,
    /// Image registry.
    pub hub: String,
}

impl ControlPlaneSpec {
    /// A revision of `version` in istio-system from Istio's registry.
    pub fn new(version: IstioVersion, revision: Revision) -> Self {
        Self { version, revision, namespace: "istio-system".to_owned(), hub: DEFAULT_HUB.to_owned() }
    }
}

/// The shared, cluster-wide part of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSpec {
    /// Istio version (chooses the validator's name).
    pub version: IstioVersion,
    /// istiod's namespace.
    pub namespace: String,
    /// The revision the default validator calls.
    pub default_revision: Revision,
}

/// CRDs, the control-plane namespace and the default validating webhook.
pub fn base(spec: &BaseSpec) -> Vec<Value> {
    let mut out = super::crds();
    out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace}}));
    let name = if spec.version.minor_line() >= (1, 10) {
        "istiod-default-validator".to_owned()
    } else {
        format!("istiod-{}", spec.namespace)
    };
    out.push(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": meta(&name, None, json!({"app": "istiod", "istio": "istiod", "istio.io/rev": rev_label(&spec.default_revision)})),
        "webhooks": [{
            "name": "validation.istio.io",
            "clientConfig": {"service": {"name": istiod_name(&spec.default_revision), "namespace": spec.namespace, "path": "/validate", "port": 443}},
            "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["networking.istio.io", "security.istio.io"], "apiVersions": ["*"], "resources": ["*"]}],
            // Istio's base chart starts with Ignore; istiod switches it to Fail once it serves.
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1beta1", "v1"],
        }],
    }));
    out
}

fn suffixed(name: &str, revision: &Revision) -> String {
    if revision.is_default() { name.to_owned() } else { format!("{name}-{revision}") }
}

/// istiod and everything it needs for one revision.
pub fn control_plane(spec: &ControlPlaneSpec) -> Vec<Value> {
    let ns = spec.namespace.as_str();
    let rev = rev_label(&spec.revision);
    let name = istiod_name(&spec.revision);
    let version = spec.version.to_string();
    // A default install's Service selects `app: istiod, istio: pilot`; a revision's selects app + revision
    // (Deployment selectors are immutable, which is why a default istiod can never become a revisioned
    // one in place).
    let (selector, pod_istio_label) = if spec.revision.is_default() {
        (json!({"app": "istiod", "istio": "pilot"}), "pilot")
    } else {
        (json!({"app": "istiod", "istio.io/rev": rev}), "istiod")
    };
    let mesh = format!(
        "defaultConfig:\n  discoveryAddress: {}\n  terminationDrainDuration: 5s\nrootNamespace: {ns}\ntrustDomain: cluster.local\n",
        discovery_address(&spec.revision, ns)
    );
    let values = json!({"global": {"hub": spec.hub, "tag": version, "istioNamespace": ns}, "revision": if spec.revision.is_default() { "" } else { rev.as_str() }});
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": meta(&name, Some(ns), json!({"app": "istiod", "istio.io/rev": rev})),
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(&suffixed("istio", &spec.revision), Some(ns), json!({"istio.io/rev": rev})),
            "data": {"mesh": mesh, "meshNetworks": "networks: {}"},
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(&suffixed("istio-sidecar-injector", &spec.revision), Some(ns), json!({"istio.io/rev": rev})),
            "data": {"values": values.to_string(), "config": "policy: enabled\ntemplates: {}\n"},
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(&name, Some(ns), json!({"app": "istiod", "istio": "pilot", "istio.io/rev": rev})),
            "spec": {
                "replicas": 1,
                "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
                "selector": {"matchLabels": if spec.revision.is_default() { json!({"istio": "pilot"}) } else { json!({"app": "istiod", "istio.io/rev": rev}) }},
                "template": {
                    "metadata": {
                        "labels": {"app": "istiod", "istio.io/rev": rev, "istio": pod_istio_label, "sidecar.istio.io/inject": "false"},
                        "annotations": {"sidecar.istio.io/inject": "false", "prometheus.io/port": "15014", "prometheus.io/scrape": "true"},
                    },
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [{
                            "name": "discovery",
                            "image": format!("{}/pilot:{version}", spec.hub),
                            "args": ["discovery", "--monitoringAddr=:15014", "--domain", "cluster.local"],
                            "ports": [
                                {"containerPort": 8080, "protocol": "TCP"},
                                {"containerPort": 15010, "protocol": "TCP"},
                                {"containerPort": 15012, "protocol": "TCP"},
                                {"containerPort": 15014, "protocol": "TCP"},
                                {"containerPort": 15017, "protocol": "TCP"},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 1, "periodSeconds": 3, "timeoutSeconds": 5},
                            "env": [
                                {"name": "REVISION", "value": rev},
                                {"name": "ISTIOD_ADDR", "value": discovery_address(&spec.revision, ns)},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
                            ],
                            "resources": {"requests": {"cpu": "500m", "memory": "2048Mi"}},
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(&name, Some(ns), json!({"app": "istiod", "istio": "pilot", "istio.io/rev": rev})),
            "spec": {
                "selector": selector,
                "ports": [
                    {"name": "grpc-xds", "port": 15010, "protocol": "TCP"},
                    {"name": "https-dns", "port": 15012, "protocol": "TCP"},
                    {"name": "https-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP"},
                    {"name": "http-monitoring", "port": 15014, "protocol": "TCP"},
                ],
            },
        }),
        injector_webhook(&spec.version, &spec.revision, ns),
    ]
}
