//! The in-cluster Istio operator, one per revision, and the `IstioOperator` resource it reconciles into
//! that revision's control plane: the seed's installer (`istioctl operator init --revision R`, then an
//! IstioOperator with `spec.revision: R`).

use serde_json::{Value, json};

use super::{DEFAULT_HUB, meta, rev_label};
use crate::version::{IstioVersion, Revision};

/// The operator Deployment's name for a revision.
pub fn operator_name(revision: &Revision) -> String {
    if revision.is_default() { "istio-operator".to_owned() } else { format!("istio-operator-{revision}") }
}

/// The IstioOperator resource's name for a revision.
pub fn istio_operator_name(revision: &Revision) -> String {
    if revision.is_default() { "istio-control-plane".to_owned() } else { format!("istio-control-plane-{revision}") }
}

/// The operator of `revision` (its ServiceAccount and Deployment, in `namespace`) and the IstioOperator
/// that asks it for the control plane only: gateways are the upgrade engine's (blue/green), not the
/// operator's.
pub fn operator(version: &IstioVersion, revision: &Revision, namespace: &str) -> Vec<Value> {
    let rev = rev_label(revision);
    let name = operator_name(revision);
    let labels = json!({"name": "istio-operator", "istio.io/rev": rev});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(&name, Some(namespace), labels.clone())}),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(&name, Some(namespace), labels.clone()),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"serviceAccountName": name, "containers": [{
                        "name": "istio-operator",
                        "image": format!("{DEFAULT_HUB}/operator:{version}"),
                        "ports": [{"containerPort": 8383, "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8383}, "periodSeconds": 1},
                        "env": [{"name": "REVISION", "value": rev}, {"name": "WATCH_NAMESPACE", "value": namespace}],
                    }]},
                },
            },
        }),
        json!({
            "apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
            "metadata": meta(&istio_operator_name(revision), Some(namespace), json!({"istio.io/rev": rev})),
            "spec": {"revision": rev, "tag": version.to_string(), "hub": DEFAULT_HUB, "components": {
                "pilot": {"enabled": true}, "ingressGateways": [],
            }},
        }),
    ]
}
