//! Conversions from Kubernetes API objects to the core's model. Pure functions, tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1 as adm;
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meshshift_core::model::{self, Container, PodTemplate, Workload, WorkloadKind};
use meshshift_core::selector::{LabelSelector, Labels, Operator, Requirement};

fn labels(meta: &ObjectMeta) -> Labels {
    meta.labels.clone().unwrap_or_default()
}

fn annotations(meta: &ObjectMeta) -> Labels {
    meta.annotations.clone().unwrap_or_default()
}

fn name(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn namespace(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

/// A label selector; unknown operators become `In` with no values, which matches nothing (the safe side).
pub fn selector(s: Option<&K8sSelector>) -> LabelSelector {
    let Some(s) = s else { return LabelSelector::default() };
    LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(|e| {
                let (operator, values) = match e.operator.as_str() {
                    "In" => (Operator::In, e.values.clone().unwrap_or_default()),
                    "NotIn" => (Operator::NotIn, e.values.clone().unwrap_or_default()),
                    "Exists" => (Operator::Exists, Vec::new()),
                    "DoesNotExist" => (Operator::DoesNotExist, Vec::new()),
                    _ => (Operator::In, Vec::new()),
                };
                Requirement { key: e.key.clone(), operator, values }
            })
            .collect(),
    }
}

fn container(c: &core::Container) -> Container {
    Container {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        env: c.env.iter().flatten().filter_map(|e| e.value.as_ref().map(|v| (e.name.clone(), v.clone()))).collect(),
        restart_policy: c.restart_policy.clone(),
    }
}

fn pod_spec(meta: Option<&ObjectMeta>, spec: Option<&core::PodSpec>) -> PodTemplate {
    PodTemplate {
        labels: meta.map(labels).unwrap_or_default(),
        annotations: meta.map(annotations).unwrap_or_default(),
        containers: spec.map(|s| s.containers.iter().map(container).collect()).unwrap_or_default(),
        init_containers: spec
            .and_then(|s| s.init_containers.as_ref())
            .map(|cs| cs.iter().map(container).collect())
            .unwrap_or_default(),
    }
}

fn template(t: &core::PodTemplateSpec) -> PodTemplate {
    pod_spec(t.metadata.as_ref(), t.spec.as_ref())
}

/// A Namespace.
pub fn namespace_of(ns: &core::Namespace) -> model::Namespace {
    model::Namespace { name: name(&ns.metadata), labels: labels(&ns.metadata) }
}

/// A workload from the parts every controller kind shares.
fn workload(
    kind: WorkloadKind,
    meta: &ObjectMeta,
    pod: Option<&core::PodTemplateSpec>,
    replicas: i32,
    ready: i32,
) -> Workload {
    Workload {
        kind,
        namespace: namespace(meta),
        name: name(meta),
        labels: labels(meta),
        template: pod.map(template).unwrap_or_default(),
        replicas,
        ready_replicas: ready,
    }
}

/// A Deployment.
pub fn deployment(d: &apps::Deployment) -> Workload {
    let spec = d.spec.as_ref();
    let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    workload(
        WorkloadKind::Deployment,
        &d.metadata,
        spec.map(|s| &s.template),
        spec.and_then(|s| s.replicas).unwrap_or(1),
        ready,
    )
}

/// A StatefulSet.
pub fn stateful_set(s: &apps::StatefulSet) -> Workload {
    let spec = s.spec.as_ref();
    let ready = s.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    workload(
        WorkloadKind::StatefulSet,
        &s.metadata,
        spec.map(|s| &s.template),
        spec.and_then(|s| s.replicas).unwrap_or(1),
        ready,
    )
}

/// A DaemonSet: its "replicas" are the nodes it should run on.
pub fn daemon_set(d: &apps::DaemonSet) -> Workload {
    let status = d.status.as_ref();
    workload(
        WorkloadKind::DaemonSet,
        &d.metadata,
        d.spec.as_ref().map(|s| &s.template),
        status.map(|s| s.desired_number_scheduled).unwrap_or(0),
        status.map(|s| s.number_ready).unwrap_or(0),
    )
}

/// The Deployment owning a ReplicaSet, if a Deployment owns it.
pub fn replica_set(rs: &apps::ReplicaSet) -> Option<model::ReplicaSetLink> {
    let owner =
        rs.metadata.owner_references.iter().flatten().find(|o| o.kind == "Deployment" && o.controller == Some(true))?;
    Some(model::ReplicaSetLink {
        namespace: namespace(&rs.metadata),
        name: name(&rs.metadata),
        deployment: owner.name.clone(),
    })
}

/// A Pod.
pub fn pod(p: &core::Pod) -> model::Pod {
    let status = p.status.as_ref();
    model::Pod {
        namespace: namespace(&p.metadata),
        name: name(&p.metadata),
        owner: p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| model::Owner { kind: o.kind.clone(), name: o.name.clone() }),
        spec: pod_spec(Some(&p.metadata), p.spec.as_ref()),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".to_owned()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        host_network: p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
    }
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// A Service.
pub fn service(s: &core::Service) -> model::Service {
    let spec = s.spec.as_ref();
    model::Service {
        namespace: namespace(&s.metadata),
        name: name(&s.metadata),
        service_type: spec.and_then(|s| s.type_.clone()).unwrap_or_else(|| "ClusterIP".to_owned()),
        selector: spec.and_then(|s| s.selector.clone()).unwrap_or_default(),
        ports: spec
            .and_then(|s| s.ports.as_ref())
            .map(|ps| {
                ps.iter()
                    .map(|p| model::ServicePort {
                        name: p.name.clone(),
                        port: p.port,
                        target_port: p.target_port.as_ref().map(int_or_string),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        external_traffic_policy: spec.and_then(|s| s.external_traffic_policy.clone()),
        load_balancer_ingress: s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|is| is.iter().filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone())).collect())
            .unwrap_or_default(),
    }
}

fn webhook_service(c: &adm::WebhookClientConfig) -> Option<model::WebhookService> {
    c.service.as_ref().map(|s| model::WebhookService {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        path: s.path.clone(),
    })
}

/// One webhook's injection-relevant fields; the mutating and validating types share them but not a type.
fn webhook(
    name: &str,
    namespace_selector: Option<&K8sSelector>,
    object_selector: Option<&K8sSelector>,
    client_config: &adm::WebhookClientConfig,
    failure_policy: Option<&String>,
) -> model::Webhook {
    model::Webhook {
        name: name.to_owned(),
        namespace_selector: selector(namespace_selector),
        object_selector: selector(object_selector),
        service: webhook_service(client_config),
        has_ca_bundle: client_config.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty()),
        failure_policy: failure_policy.cloned().unwrap_or_else(|| "Fail".to_owned()),
    }
}

/// A MutatingWebhookConfiguration.
pub fn mutating(m: &adm::MutatingWebhookConfiguration) -> model::WebhookConfiguration {
    model::WebhookConfiguration {
        name: name(&m.metadata),
        labels: labels(&m.metadata),
        webhooks: m
            .webhooks
            .iter()
            .flatten()
            .map(|w| {
                webhook(
                    &w.name,
                    w.namespace_selector.as_ref(),
                    w.object_selector.as_ref(),
                    &w.client_config,
                    w.failure_policy.as_ref(),
                )
            })
            .collect(),
    }
}

/// A ValidatingWebhookConfiguration.
pub fn validating(v: &adm::ValidatingWebhookConfiguration) -> model::WebhookConfiguration {
    model::WebhookConfiguration {
        name: name(&v.metadata),
        labels: labels(&v.metadata),
        webhooks: v
            .webhooks
            .iter()
            .flatten()
            .map(|w| {
                webhook(
                    &w.name,
                    w.namespace_selector.as_ref(),
                    w.object_selector.as_ref(),
                    &w.client_config,
                    w.failure_policy.as_ref(),
                )
            })
            .collect(),
    }
}

/// Whether a ConfigMap is one of Istio's (mesh config `istio[-rev]`, injector `istio-sidecar-injector[-rev]`).
pub fn is_istio_config_map(name: &str) -> bool {
    name == "istio" || name.starts_with("istio-")
}

/// An Istio ConfigMap; data is kept only for the injector's, whose `values` tells the version.
pub fn config_map(c: &core::ConfigMap) -> model::ConfigMap {
    let n = name(&c.metadata);
    let data: BTreeMap<String, String> = if n.starts_with("istio-sidecar-injector") {
        c.data.clone().unwrap_or_default().into_iter().filter(|(k, _)| k == "values").collect()
    } else {
        BTreeMap::new()
    };
    model::ConfigMap { namespace: namespace(&c.metadata), name: n, labels: labels(&c.metadata), data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selector_keeps_every_operator() {
        let s = K8sSelector {
            match_labels: Some([("a".to_owned(), "b".to_owned())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "istio-injection".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "istio.io/rev".into(),
                    operator: "In".into(),
                    values: Some(vec!["1-9-7".into()]),
                },
                LabelSelectorRequirement { key: "x".into(), operator: "Bogus".into(), values: Some(vec!["y".into()]) },
            ]),
        };
        let m = selector(Some(&s));
        assert_eq!(m.match_labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(m.match_expressions[0].operator, Operator::DoesNotExist);
        assert_eq!(m.match_expressions[1].values, vec!["1-9-7".to_owned()]);
        assert!(m.match_expressions[2].values.is_empty(), "an unknown operator must match nothing");
        assert_eq!(selector(None), LabelSelector::default());
    }

    #[test]
    fn pod_reads_owner_readiness_and_native_sidecar() {
        let p: core::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "app:1"}],
                "initContainers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28.0", "restartPolicy": "Always",
                    "env": [{"name": "PROXY_CONFIG", "value": "{}"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("pod json");
        let m = pod(&p);
        assert_eq!(m.owner, Some(model::Owner { kind: "ReplicaSet".into(), name: "rs".into() }));
        assert!(m.ready);
        assert_eq!(m.spec.init_containers[0].restart_policy.as_deref(), Some("Always"));
        assert_eq!(m.spec.init_containers[0].env.len(), 1, "env from fields is not a literal value");
    }

    #[test]
    fn only_injector_config_maps_keep_data() {
        let cm = |n: &str| core::ConfigMap {
            metadata: ObjectMeta {
                name: Some(n.into()),
                namespace: Some("istio-system".into()),
                ..ObjectMeta::default()
            },
            data: Some([("values".to_owned(), "{}".to_owned()), ("config".to_owned(), "x".to_owned())].into()),
            ..core::ConfigMap::default()
        };
        assert_eq!(config_map(&cm("istio-sidecar-injector-1-9-7")).data.len(), 1);
        assert!(config_map(&cm("istio-1-9-7")).data.is_empty());
        assert!(is_istio_config_map("istio") && is_istio_config_map("istio-1-9-7") && !is_istio_config_map("istiod"));
    }
}
