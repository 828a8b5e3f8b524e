//! Injector webhook configurations, per minor: 1.9 has one webhook per configuration; 1.10+ has
//! `rev.namespace.` and `rev.object.` (plus `namespace.` and `object.` for the default revision); revision
//! tags add `istio.io/tag` and match `istio.io/rev In [tag]`.

use serde_json::{Value, json};

use super::{has_split_injector, istiod_name, meta, rev_label};
use crate::version::{IstioVersion, Revision};

fn hook(name: &str, service: &str, namespace: &str, ns_selector: Value, obj_selector: Value) -> Value {
    json!({
        "name": name,
        "clientConfig": {"service": {"name": service, "namespace": namespace, "path": "/inject", "port": 443}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "admissionReviewVersions": ["v1beta1", "v1"],
        "namespaceSelector": ns_selector,
        "objectSelector": obj_selector,
    })
}

fn expr(key: &str, operator: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": operator})
    } else {
        json!({"key": key, "operator": operator, "values": values})
    }
}

fn not_opted_out() -> Value {
    json!({"matchExpressions": [expr("sidecar.istio.io/inject", "NotIn", &["false"])]})
}

/// The webhooks that inject for namespace label `istio.io/rev=<matches>` (a revision or a tag).
fn revision_hooks(version: &IstioVersion, matches: &str, service: &str, namespace: &str) -> Vec<Value> {
    if has_split_injector(version) {
        vec![
            hook(
                "rev.namespace.sidecar-injector.istio.io",
                service,
                namespace,
                json!({"matchExpressions": [expr("istio.io/rev", "In", &[matches]), expr("istio-injection", "DoesNotExist", &[])]}),
                not_opted_out(),
            ),
            hook(
                "rev.object.sidecar-injector.istio.io",
                service,
                namespace,
                json!({"matchExpressions": [expr("istio.io/rev", "DoesNotExist", &[]), expr("istio-injection", "DoesNotExist", &[])]}),
                json!({"matchExpressions": [expr("sidecar.istio.io/inject", "NotIn", &["false"]), expr("istio.io/rev", "In", &[matches])]}),
            ),
        ]
    } else {
        vec![hook(
            "sidecar-injector.istio.io",
            service,
            namespace,
            json!({"matchExpressions": [expr("istio-injection", "DoesNotExist", &[]), expr("istio.io/rev", "In", &[matches])]}),
            not_opted_out(),
        )]
    }
}

/// The webhooks that make a revision (or the `default` tag) the default: `istio-injection=enabled`
/// namespaces, and (1.10+) pods labelled `sidecar.istio.io/inject=true` in unlabelled namespaces.
fn default_hooks(version: &IstioVersion, service: &str, namespace: &str) -> Vec<Value> {
    if has_split_injector(version) {
        vec![
            hook(
                "namespace.sidecar-injector.istio.io",
                service,
                namespace,
                json!({"matchExpressions": [expr("istio-injection", "In", &["enabled"])]}),
                not_opted_out(),
            ),
            hook(
                "object.sidecar-injector.istio.io",
                service,
                namespace,
                json!({"matchExpressions": [expr("istio-injection", "DoesNotExist", &[]), expr("istio.io/rev", "DoesNotExist", &[])]}),
                json!({"matchExpressions": [expr("sidecar.istio.io/inject", "In", &["true"]), expr("istio.io/rev", "DoesNotExist", &[])]}),
            ),
        ]
    } else {
        vec![hook(
            "sidecar-injector.istio.io",
            service,
            namespace,
            json!({"matchLabels": {"istio-injection": "enabled"}}),
            not_opted_out(),
        )]
    }
}

/// The name of a revision's injector configuration (`-<namespace>` is appended outside istio-system).
pub fn injector_name(revision: &Revision, namespace: &str) -> String {
    let base = if revision.is_default() {
        "istio-sidecar-injector".to_owned()
    } else {
        format!("istio-sidecar-injector-{revision}")
    };
    if namespace == "istio-system" { base } else { format!("{base}-{namespace}") }
}

/// A revision's own injector MutatingWebhookConfiguration.
pub fn injector_webhook(version: &IstioVersion, revision: &Revision, namespace: &str) -> Value {
    let service = istiod_name(revision);
    let webhooks = if revision.is_default() {
        let mut hooks = if has_split_injector(version) {
            revision_hooks(version, "default", &service, namespace)
        } else {
            Vec::new()
        };
        hooks.extend(default_hooks(version, &service, namespace));
        hooks
    } else {
        revision_hooks(version, revision.as_str(), &service, namespace)
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": meta(&injector_name(revision, namespace), None, json!({"app": "sidecar-injector", "istio.io/rev": rev_label(revision)})),
        "webhooks": webhooks,
    })
}

/// A revision tag's MutatingWebhookConfiguration (`istioctl tag set <tag> --revision <revision>`). The
/// `default` tag also takes over `istio-injection=enabled`.
pub fn tag_webhook(version: &IstioVersion, tag: &str, revision: &Revision, namespace: &str) -> Value {
    let service = istiod_name(revision);
    let mut webhooks = revision_hooks(version, tag, &service, namespace);
    if tag == "default" {
        webhooks.extend(default_hooks(version, &service, namespace));
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": meta(
            &format!("istio-revision-tag-{tag}"),
            None,
            json!({"app": "sidecar-injector", "istio.io/rev": rev_label(revision), "istio.io/tag": tag}),
        ),
        "webhooks": webhooks,
    })
}
