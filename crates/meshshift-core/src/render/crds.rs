//! The Istio CRDs the lab and the engine need, with permissive schemas.
//!
//! Real Istio CRDs are large generated schemas; meshshift only needs the kinds to exist and to store
//! objects exactly as written, so each CRD serves every API version Istio has used for it with one
//! `x-kubernetes-preserve-unknown-fields` schema (no conversion is needed when the schemas are equal).

use serde_json::{Value, json};

fn crd(group: &str, kind: &str, plural: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v, "served": true, "storage": i == 0,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            })
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"), "labels": {"app": "istio-pilot", "chart": "istio"}},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List"), "categories": ["istio-io"]},
            "scope": "Namespaced",
            "versions": versions,
        },
    })
}

/// Istio's networking, security and install CRDs.
pub fn crds() -> Vec<Value> {
    let net = ["v1alpha3", "v1beta1", "v1"];
    vec![
        crd("networking.istio.io", "Gateway", "gateways", &net),
        crd("networking.istio.io", "VirtualService", "virtualservices", &net),
        crd("networking.istio.io", "DestinationRule", "destinationrules", &net),
        crd("networking.istio.io", "ServiceEntry", "serviceentries", &net),
        crd("networking.istio.io", "Sidecar", "sidecars", &net),
        crd("networking.istio.io", "EnvoyFilter", "envoyfilters", &["v1alpha3"]),
        crd("security.istio.io", "PeerAuthentication", "peerauthentications", &["v1beta1", "v1"]),
        crd("security.istio.io", "AuthorizationPolicy", "authorizationpolicies", &["v1beta1", "v1"]),
        crd("install.istio.io", "IstioOperator", "istiooperators", &["v1alpha1"]),
    ]
}
