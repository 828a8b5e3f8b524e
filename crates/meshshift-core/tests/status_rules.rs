//! Exhaustive rules of `meshshift status` (`meshshift_core::status::analyze`), through the public API only.
//!
//! Snapshots are built with small helpers that copy the real objects Istio installs: webhook selectors are
//! those of the Helm-rendered 1.9.7 / 1.10.6 / 1.24.6 charts and istioctl's captured webhooks in
//! /work/shared/fixtures (helm-rendered/*/istiod-*.yaml, revision-tag-*.yaml, istio-tree/1.24.6/webhooks/),
//! and pods carry the sidecar markers each Istio version writes (istio-tree/*/injection/hello.yaml.injected).

use std::collections::BTreeMap;

use meshshift_core::finding::{Finding, FindingCode as C, Severity};
use meshshift_core::model::{
    ClusterSnapshot, ConfigMap, Container, Namespace, Owner, Pod, PodTemplate, ReplicaSetLink, Service, ServicePort,
    Unreadable, Webhook, WebhookConfiguration, WebhookService, Workload, WorkloadKind,
};
use meshshift_core::proxy::RevisionSource;
use meshshift_core::selector::{LabelSelector, Labels, Operator, Requirement};
use meshshift_core::status::{
    DefaultRevision, GatewayServiceStatus, GatewayStatus, InjectionMode, NamespaceStatus, PodStatus, ProxyCount,
    ProxyStatus, RevisionStatus, SelectedGateway, StatusReport, TagStatus, VersionSource, WorkloadStatus, analyze,
};
use proptest::prelude::*;

const CP: &str = "istio-system";

// ---------------------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------------------

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
    Requirement { key: key.into(), operator, values: values.iter().map(|v| (*v).to_owned()).collect() }
}

fn exprs(reqs: Vec<Requirement>) -> LabelSelector {
    LabelSelector { match_labels: Labels::new(), match_expressions: reqs }
}

/// `sidecar.istio.io/inject NotIn [false]`: the object selector of every injecting webhook.
fn not_opted_out() -> Requirement {
    req("sidecar.istio.io/inject", Operator::NotIn, &["false"])
}

/// `istiod` for the default revision, `istiod-R` otherwise (Deployment and Service share the name).
fn istiod_name(rev: &str) -> String {
    if rev == "default" { "istiod".to_owned() } else { format!("istiod-{rev}") }
}

fn webhook(name: &str, service: &str, path: &str, ns_sel: LabelSelector, obj_sel: LabelSelector) -> Webhook {
    Webhook {
        name: name.into(),
        namespace_selector: ns_sel,
        object_selector: obj_sel,
        service: Some(WebhookService { namespace: CP.into(), name: service.into(), path: Some(path.into()) }),
        has_ca_bundle: true,
        failure_policy: "Fail".into(),
    }
}

fn injector_name(rev: &str) -> String {
    if rev == "default" { "istio-sidecar-injector".to_owned() } else { format!("istio-sidecar-injector-{rev}") }
}

/// The 1.9 injector MWC: one webhook. Default: namespace `istio-injection=enabled`; revision R:
/// `istio-injection DoesNotExist` AND `istio.io/rev In [R]` (helm-rendered/1.9.7/istiod-*.yaml).
fn injector_1_9(rev: &str) -> WebhookConfiguration {
    let ns_sel = if rev == "default" {
        LabelSelector::from_labels([("istio-injection", "enabled")])
    } else {
        exprs(vec![req("istio-injection", Operator::DoesNotExist, &[]), req("istio.io/rev", Operator::In, &[rev])])
    };
    WebhookConfiguration {
        name: injector_name(rev),
        labels: l(&[("app", "sidecar-injector"), ("istio.io/rev", rev), ("release", "istiod")]),
        webhooks: vec![webhook(
            "sidecar-injector.istio.io",
            &istiod_name(rev),
            "/inject",
            ns_sel,
            exprs(vec![not_opted_out()]),
        )],
    }
}

/// The 1.10+ webhooks: `rev.namespace.` and `rev.object.` matching `selector_rev` (a revision or a tag);
/// the default revision (and the `default` tag) adds `namespace.` and `object.`
/// (helm-rendered/1.10.6/istiod-*.yaml, revision-tag-*.yaml).
fn hooks_1_10(selector_rev: &str, service: &str, with_default: bool) -> Vec<Webhook> {
    let mut hooks = vec![
        webhook(
            "rev.namespace.sidecar-injector.istio.io",
            service,
            "/inject",
            exprs(vec![
                req("istio.io/rev", Operator::In, &[selector_rev]),
                req("istio-injection", Operator::DoesNotExist, &[]),
            ]),
            exprs(vec![not_opted_out()]),
        ),
        webhook(
            "rev.object.sidecar-injector.istio.io",
            service,
            "/inject",
            exprs(vec![
                req("istio.io/rev", Operator::DoesNotExist, &[]),
                req("istio-injection", Operator::DoesNotExist, &[]),
            ]),
            exprs(vec![not_opted_out(), req("istio.io/rev", Operator::In, &[selector_rev])]),
        ),
    ];
    if with_default {
        hooks.push(webhook(
            "namespace.sidecar-injector.istio.io",
            service,
            "/inject",
            exprs(vec![req("istio-injection", Operator::In, &["enabled"])]),
            exprs(vec![not_opted_out()]),
        ));
        hooks.push(webhook(
            "object.sidecar-injector.istio.io",
            service,
            "/inject",
            exprs(vec![
                req("istio-injection", Operator::DoesNotExist, &[]),
                req("istio.io/rev", Operator::DoesNotExist, &[]),
            ]),
            exprs(vec![
                req("sidecar.istio.io/inject", Operator::In, &["true"]),
                req("istio.io/rev", Operator::DoesNotExist, &[]),
            ]),
        ));
    }
    hooks
}

fn injector_1_10(rev: &str) -> WebhookConfiguration {
    WebhookConfiguration {
        name: injector_name(rev),
        labels: l(&[("app", "sidecar-injector"), ("istio.io/rev", rev), ("release", "istiod")]),
        webhooks: hooks_1_10(rev, &istiod_name(rev), rev == "default"),
    }
}

/// `istioctl tag set T --revision R`: MWC `istio-revision-tag-T`, labels `istio.io/tag=T`, `istio.io/rev=R`.
fn tag_webhook(tag: &str, rev: &str) -> WebhookConfiguration {
    WebhookConfiguration {
        name: format!("istio-revision-tag-{tag}"),
        labels: l(&[("app", "sidecar-injector"), ("istio.io/rev", rev), ("istio.io/tag", tag)]),
        webhooks: hooks_1_10(tag, &istiod_name(rev), tag == "default"),
    }
}

/// istioctl's neutralised injector: every selector replaced by `istio.io/deactivated: never-match`
/// (istio-tree/1.24.6/webhooks/check-inject/never-match-injector.yaml).
fn deactivated(mut cfg: WebhookConfiguration) -> WebhookConfiguration {
    for w in &mut cfg.webhooks {
        w.namespace_selector = LabelSelector::from_labels([("istio.io/deactivated", "never-match")]);
        w.object_selector = LabelSelector::from_labels([("istio.io/deactivated", "never-match")]);
    }
    cfg
}

fn with_failure_policy(mut cfg: WebhookConfiguration, policy: &str) -> WebhookConfiguration {
    for w in &mut cfg.webhooks {
        w.failure_policy = policy.into();
    }
    cfg
}

/// A validating webhook configuration calling `istiod[-rev]` on `/validate`.
fn validator(name: &str, rev: &str, failure_policy: &str) -> WebhookConfiguration {
    let mut hook = webhook(
        "validation.istio.io",
        &istiod_name(rev),
        "/validate",
        LabelSelector::default(),
        LabelSelector::default(),
    );
    hook.failure_policy = failure_policy.into();
    WebhookConfiguration {
        name: name.into(),
        labels: l(&[("app", "istiod"), ("istio", "istiod")]),
        webhooks: vec![hook],
    }
}

fn container(name: &str, image: &str) -> Container {
    Container { name: name.into(), image: image.into(), ..Container::default() }
}

/// An istiod Deployment as the chart renders it (helm-rendered/1.9.7/istiod-rev-1-9-7.yaml).
fn istiod(rev: &str, image: &str) -> Workload {
    let pod_istio_label = if rev == "default" { "pilot" } else { "istiod" };
    Workload {
        kind: WorkloadKind::Deployment,
        namespace: CP.into(),
        name: istiod_name(rev),
        labels: l(&[("app", "istiod"), ("istio", "pilot"), ("istio.io/rev", rev)]),
        template: PodTemplate {
            labels: l(&[
                ("app", "istiod"),
                ("istio", pod_istio_label),
                ("istio.io/rev", rev),
                ("sidecar.istio.io/inject", "false"),
            ]),
            annotations: l(&[("sidecar.istio.io/inject", "false")]),
            containers: vec![container("discovery", image)],
            init_containers: vec![],
        },
        replicas: 1,
        ready_replicas: 1,
    }
}

fn ready(mut w: Workload, replicas: i32, ready: i32) -> Workload {
    w.replicas = replicas;
    w.ready_replicas = ready;
    w
}

/// `istio-sidecar-injector[-rev]` with a `values` JSON whose `global.tag` is `tag`.
fn injector_cm(namespace: &str, rev: &str, tag: serde_json::Value) -> ConfigMap {
    let values =
        serde_json::json!({"global": {"hub": "docker.io/istio", "tag": tag, "istioNamespace": "istio-system"}});
    ConfigMap {
        namespace: namespace.into(),
        name: injector_name(rev),
        labels: l(&[("istio.io/rev", rev)]),
        data: [("values".to_owned(), values.to_string()), ("config".to_owned(), "policy: enabled".to_owned())].into(),
    }
}

/// Mesh config ConfigMap `istio` / `istio-R` in `namespace`.
fn mesh_cm(namespace: &str, rev: &str) -> ConfigMap {
    let name = if rev == "default" { "istio".to_owned() } else { format!("istio-{rev}") };
    ConfigMap { namespace: namespace.into(), name, labels: l(&[("istio.io/rev", rev)]), data: BTreeMap::new() }
}

fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace { name: name.into(), labels: l(labels) }
}

/// Where a pod's sidecar writes its revision, by Istio version.
#[derive(Clone, Copy)]
enum Rev<'a> {
    /// 1.6-1.10: pod label `istio.io/rev`.
    Label(&'a str),
    /// 1.11-1.17: `revision` in `sidecar.istio.io/status`.
    Status(&'a str),
    /// 1.18+: pod annotation `istio.io/rev` (plus the status field).
    Annotation(&'a str),
    /// Only `PROXY_CONFIG`'s discoveryAddress.
    Discovery(&'a str),
}

fn proxy_container(image: &str) -> Container {
    Container {
        name: "istio-proxy".into(),
        image: image.into(),
        args: vec!["proxy".into(), "sidecar".into(), "--domain".into(), "$(POD_NAMESPACE).svc.cluster.local".into()],
        env: BTreeMap::new(),
        restart_policy: None,
    }
}

fn rs_owner(name: &str) -> Option<Owner> {
    Some(Owner { kind: "ReplicaSet".into(), name: name.into() })
}

fn owner(kind: &str, name: &str) -> Option<Owner> {
    Some(Owner { kind: kind.into(), name: name.into() })
}

/// A running, ready pod with one application container and no sidecar.
fn pod(namespace: &str, name: &str, owner: Option<Owner>) -> Pod {
    Pod {
        namespace: namespace.into(),
        name: name.into(),
        owner,
        spec: PodTemplate {
            labels: l(&[("app", "app")]),
            annotations: Labels::new(),
            containers: vec![container("app", "docker.io/istio/examples-bookinfo-reviews-v1:1.16.2")],
            init_containers: vec![],
        },
        phase: "Running".into(),
        ready: true,
        host_network: false,
    }
}

/// A running pod with an injected `istio-proxy` of `image`, telling its revision the way `rev` says.
fn pod_with_proxy(namespace: &str, name: &str, owner: Option<Owner>, image: &str, rev: Rev<'_>) -> Pod {
    let mut p = pod(namespace, name, owner);
    let mut proxy = proxy_container(image);
    match rev {
        Rev::Label(r) => {
            p.spec.labels.insert("istio.io/rev".into(), r.into());
            p.spec.annotations.insert(
                "sidecar.istio.io/status".into(),
                r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null}"#.into(),
            );
        }
        Rev::Status(r) => {
            p.spec.annotations.insert(
                "sidecar.istio.io/status".into(),
                format!(r#"{{"initContainers":["istio-init"],"containers":["istio-proxy"],"imagePullSecrets":null,"revision":"{r}"}}"#),
            );
        }
        Rev::Annotation(r) => {
            p.spec.annotations.insert("istio.io/rev".into(), r.into());
            p.spec.annotations.insert(
                "sidecar.istio.io/status".into(),
                format!(r#"{{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":"{r}"}}"#),
            );
        }
        Rev::Discovery(r) => {
            proxy.env.insert(
                "PROXY_CONFIG".into(),
                format!(r#"{{"discoveryAddress":"{}.istio-system.svc:15012"}}"#, istiod_name(r)),
            );
        }
    }
    p.spec.labels.insert("security.istio.io/tlsMode".into(), "istio".into());
    p.spec.containers.push(proxy);
    p
}

fn proxyv2(version: &str) -> String {
    format!("docker.io/istio/proxyv2:{version}")
}

fn app_workload(kind: WorkloadKind, namespace: &str, name: &str, replicas: i32) -> Workload {
    Workload {
        kind,
        namespace: namespace.into(),
        name: name.into(),
        labels: l(&[("app", name)]),
        template: PodTemplate { labels: l(&[("app", name)]), ..PodTemplate::default() },
        replicas,
        ready_replicas: replicas,
    }
}

fn rs(namespace: &str, name: &str, deployment: &str) -> ReplicaSetLink {
    ReplicaSetLink { namespace: namespace.into(), name: name.into(), deployment: deployment.into() }
}

/// A legacy-chart gateway (helm-rendered/1.9.7/ingressgateway-rev-1-9-7.yaml): explicit `proxyv2` image,
/// `proxy router`, pod label `sidecar.istio.io/inject=false`, plus the seed's `version: R` label.
fn legacy_gateway(namespace: &str, name: &str, rev: &str, version: &str) -> Workload {
    let mut proxy = proxy_container(&proxyv2(version));
    proxy.args = vec!["proxy".into(), "router".into(), "--domain".into(), "$(POD_NAMESPACE).svc.cluster.local".into()];
    Workload {
        kind: WorkloadKind::Deployment,
        namespace: namespace.into(),
        name: name.into(),
        labels: l(&[("app", "istio-ingressgateway"), ("istio", "ingressgateway"), ("istio.io/rev", rev)]),
        template: PodTemplate {
            labels: l(&[
                ("app", "istio-ingressgateway"),
                ("istio", "ingressgateway"),
                ("istio.io/rev", rev),
                ("version", rev),
                ("service.istio.io/canonical-revision", rev),
                ("sidecar.istio.io/inject", "false"),
            ]),
            annotations: l(&[("sidecar.istio.io/inject", "false"), ("prometheus.io/port", "15020")]),
            containers: vec![proxy],
            init_containers: vec![],
        },
        replicas: 2,
        ready_replicas: 2,
    }
}

/// A Helm `gateway` chart gateway (helm-rendered/1.24.6/gateway-chart-rev-1-24-6.yaml): `image: auto`,
/// `inject.istio.io/templates: gateway`, pod label `istio.io/rev: R` (plus `version: R`).
fn injected_gateway(namespace: &str, name: &str, rev: Option<&str>) -> Workload {
    let mut pod_labels =
        l(&[("app", "istio-ingressgateway"), ("istio", "ingressgateway"), ("sidecar.istio.io/inject", "true")]);
    if let Some(r) = rev {
        pod_labels.insert("istio.io/rev".into(), r.into());
        pod_labels.insert("version".into(), r.into());
    }
    Workload {
        kind: WorkloadKind::Deployment,
        namespace: namespace.into(),
        name: name.into(),
        labels: l(&[("app", "istio-ingressgateway"), ("istio", "ingressgateway"), ("helm.sh/chart", "gateway-1.24.6")]),
        template: PodTemplate {
            labels: pod_labels,
            annotations: l(&[("inject.istio.io/templates", "gateway"), ("sidecar.istio.io/inject", "true")]),
            containers: vec![container("istio-proxy", "auto")],
            init_containers: vec![],
        },
        replicas: 1,
        ready_replicas: 1,
    }
}

/// A pod of a gateway Deployment, as the gateway (or its injector) runs it.
fn gateway_pod(gw: &Workload, rs_name: &str, name: &str, image: &str, rev: &str) -> Pod {
    let mut spec = gw.template.clone();
    spec.containers = vec![Container { image: image.into(), ..gw.template.containers[0].clone() }];
    spec.annotations.insert("istio.io/rev".into(), rev.into());
    Pod {
        namespace: gw.namespace.clone(),
        name: name.into(),
        owner: rs_owner(rs_name),
        spec,
        phase: "Running".into(),
        ready: true,
        host_network: false,
    }
}

fn service(namespace: &str, name: &str, service_type: &str, selector: &[(&str, &str)]) -> Service {
    Service {
        namespace: namespace.into(),
        name: name.into(),
        service_type: service_type.into(),
        selector: l(selector),
        ports: vec![
            ServicePort {
                name: Some("status-port".into()),
                port: 15021,
                target_port: Some("15021".into()),
                protocol: "TCP".into(),
            },
            ServicePort {
                name: Some("http2".into()),
                port: 80,
                target_port: Some("8080".into()),
                protocol: "TCP".into(),
            },
            ServicePort {
                name: Some("https".into()),
                port: 443,
                target_port: Some("8443".into()),
                protocol: "TCP".into(),
            },
        ],
        external_traffic_policy: None,
        load_balancer_ingress: vec![],
    }
}

/// The seed's user-owned LoadBalancer.
fn lb_service(namespace: &str, name: &str, selector: &[(&str, &str)]) -> Service {
    let mut s = service(namespace, name, "LoadBalancer", selector);
    s.external_traffic_policy = Some("Cluster".into());
    s.load_balancer_ingress = vec!["203.0.113.10".into()];
    s
}

fn snapshot() -> ClusterSnapshot {
    ClusterSnapshot::default()
}

// ---------------------------------------------------------------------------------------------------------
// Report accessors
// ---------------------------------------------------------------------------------------------------------

/// `(code, severity, subject)` of every finding, in report order.
fn summary(r: &StatusReport) -> Vec<(C, Severity, String)> {
    r.findings.iter().map(|f| (f.code, f.severity, f.subject.clone())).collect()
}

fn with_code(r: &StatusReport, code: C) -> Vec<&Finding> {
    r.findings.iter().filter(|f| f.code == code).collect()
}

fn only(r: &StatusReport, code: C) -> &Finding {
    let found = with_code(r, code);
    assert_eq!(found.len(), 1, "expected exactly one {code:?}, got {:#?}", r.findings);
    found[0]
}

fn namespace<'a>(r: &'a StatusReport, name: &str) -> &'a NamespaceStatus {
    r.namespaces.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("namespace {name} not in report"))
}

fn revision<'a>(r: &'a StatusReport, rev: &str) -> &'a RevisionStatus {
    r.revisions.iter().find(|x| x.revision == rev).unwrap_or_else(|| panic!("revision {rev} not in report"))
}

fn workload<'a>(r: &'a StatusReport, kind: &str, namespace: &str, name: &str) -> &'a WorkloadStatus {
    r.workloads
        .iter()
        .find(|w| w.kind == kind && w.namespace == namespace && w.name == name)
        .unwrap_or_else(|| panic!("workload {kind}/{namespace}/{name} not in report: {:#?}", r.workloads))
}

fn proxy_of<'a>(r: &'a StatusReport, namespace: &str, pod: &str) -> Option<&'a ProxyStatus> {
    r.workloads
        .iter()
        .filter(|w| w.namespace == namespace)
        .flat_map(|w| &w.pods)
        .find(|p| p.name == pod)
        .unwrap_or_else(|| panic!("pod {namespace}/{pod} not in report"))
        .proxy
        .as_ref()
}

fn gateway<'a>(r: &'a StatusReport, name: &str) -> &'a GatewayStatus {
    r.gateways.iter().find(|g| g.name == name).unwrap_or_else(|| panic!("gateway {name} not in report"))
}

fn gateway_service<'a>(r: &'a StatusReport, name: &str) -> Option<&'a GatewayServiceStatus> {
    r.gateway_services.iter().find(|s| s.name == name)
}

fn selected(s: &GatewayServiceStatus) -> Vec<(&str, &str)> {
    s.selects.iter().map(|g| (g.gateway.as_str(), g.revision.as_str())).collect()
}

fn codes(r: &StatusReport) -> Vec<C> {
    r.findings.iter().map(|f| f.code).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Control plane: revisions, versions, readiness
// ---------------------------------------------------------------------------------------------------------

#[test]
fn default_istiod_is_revision_default_with_version_from_image() {
    let s = ClusterSnapshot {
        workloads: vec![istiod("default", "docker.io/istio/pilot:1.9.7")],
        mutating_webhooks: vec![injector_1_9("default")],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(
        r.revisions,
        vec![RevisionStatus {
            revision: "default".into(),
            namespace: "istio-system".into(),
            deployment: "istiod".into(),
            version: Some("1.9.7".into()),
            version_source: Some(VersionSource::Image),
            replicas: 1,
            ready_replicas: 1,
            injector_webhooks: vec!["istio-sidecar-injector".into()],
            tags: vec![],
            proxies: 0,
        }]
    );
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn revisioned_istiods_are_named_by_their_rev_label_and_sorted() {
    let s = ClusterSnapshot {
        workloads: vec![
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
            istiod("default", "docker.io/istio/pilot:1.9.7"),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    let got: Vec<(&str, &str, Option<&str>)> =
        r.revisions.iter().map(|x| (x.revision.as_str(), x.deployment.as_str(), x.version.as_deref())).collect();
    assert_eq!(
        got,
        vec![
            ("1-10-6", "istiod-1-10-6", Some("1.10.6")),
            ("1-9-7", "istiod-1-9-7", Some("1.9.7")),
            ("default", "istiod", Some("1.9.7")),
        ]
    );
}

#[test]
fn revision_falls_back_to_the_pod_template_label_and_then_to_default() {
    let mut only_template = istiod("1-24-6", "docker.io/istio/pilot:1.24.6");
    only_template.labels.remove("istio.io/rev");
    let mut unlabelled = istiod("default", "docker.io/istio/pilot:1.24.6");
    unlabelled.namespace = "istio-other".into();
    unlabelled.labels.remove("istio.io/rev");
    unlabelled.template.labels.remove("istio.io/rev");
    let r = analyze(&ClusterSnapshot { workloads: vec![only_template, unlabelled], ..snapshot() });
    let got: Vec<(&str, &str)> = r.revisions.iter().map(|x| (x.revision.as_str(), x.namespace.as_str())).collect();
    assert_eq!(got, vec![("1-24-6", "istio-system"), ("default", "istio-other")]);
}

#[test]
fn istiod_is_recognised_by_pilot_discovery_container_or_app_label_only() {
    // A pilot image in a `discovery` container, without app=istiod (e.g. an old operator install).
    let mut by_image = istiod("1-9-7", "docker.io/istio/pilot:1.9.7");
    by_image.labels.remove("app");
    // app=istiod with a private image name.
    let mut by_label = istiod("1-10-6", "registry.example.com/mesh/control-plane:1.10.6");
    by_label.template.containers[0].name = "istiod".into();
    // Neither: a container named discovery running something else, and a StatefulSet pilot.
    let mut other = istiod("1-11-0", "docker.io/library/nginx:1.25.3");
    other.labels.remove("app");
    other.name = "discovery-proxy".into();
    let mut sts = istiod("1-12-0", "docker.io/istio/pilot:1.12.0");
    sts.kind = WorkloadKind::StatefulSet;
    let r = analyze(&ClusterSnapshot { workloads: vec![by_image, by_label, other, sts], ..snapshot() });
    let got: Vec<(&str, Option<&str>)> =
        r.revisions.iter().map(|x| (x.revision.as_str(), x.version.as_deref())).collect();
    // By label, the version comes from no `discovery` container: unknown.
    assert_eq!(got, vec![("1-10-6", None), ("1-9-7", Some("1.9.7"))]);
    assert_eq!(
        summary(&r),
        vec![(C::ControlPlaneVersionUnknown, Severity::Warning, "Deployment/istio-system/istiod-1-10-6".into())]
    );
}

#[test]
fn version_from_image_strips_registry_and_flavour() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("1-24-6", "localhost:5000/istio/pilot:1.24.6-distroless"),
            istiod("1-25-5", "gcr.io/istio-release/pilot:1.25.5"),
        ],
        ..snapshot()
    });
    assert_eq!(revision(&r, "1-24-6").version.as_deref(), Some("1.24.6"));
    assert_eq!(revision(&r, "1-25-5").version.as_deref(), Some("1.25.5"));
    assert_eq!(revision(&r, "1-24-6").version_source, Some(VersionSource::Image));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn latest_image_takes_the_version_from_the_injector_configmap_values() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:latest"),
            istiod("1-10-6", "docker.io/istio/pilot:latest"),
        ],
        config_maps: vec![
            injector_cm(CP, "default", serde_json::json!("1.9.7")),
            injector_cm(CP, "1-10-6", serde_json::json!("1.10.6")),
            mesh_cm(CP, "1-10-6"),
        ],
        ..snapshot()
    });
    let d = revision(&r, "default");
    assert_eq!((d.version.as_deref(), d.version_source), (Some("1.9.7"), Some(VersionSource::InjectorConfigMap)));
    let g = revision(&r, "1-10-6");
    assert_eq!((g.version.as_deref(), g.version_source), (Some("1.10.6"), Some(VersionSource::InjectorConfigMap)));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn image_version_wins_over_the_configmap() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("1-10-6", "docker.io/istio/pilot:1.10.6")],
        config_maps: vec![injector_cm(CP, "1-10-6", serde_json::json!("1.10.5"))],
        ..snapshot()
    });
    let g = revision(&r, "1-10-6");
    assert_eq!((g.version.as_deref(), g.version_source), (Some("1.10.6"), Some(VersionSource::Image)));
}

#[test]
fn configmap_of_another_revision_or_namespace_does_not_give_the_version() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("1-10-6", "docker.io/istio/pilot:latest"),
            istiod("1-9-7", "docker.io/istio/pilot:latest"),
        ],
        config_maps: vec![
            // the default revision's ConfigMap, not 1-10-6's
            injector_cm(CP, "default", serde_json::json!("1.10.6")),
            // the right name, the wrong namespace
            injector_cm("istio-gateways", "1-9-7", serde_json::json!("1.9.7")),
        ],
        ..snapshot()
    });
    assert_eq!(revision(&r, "1-10-6").version, None);
    assert_eq!(revision(&r, "1-9-7").version, None);
    assert_eq!(revision(&r, "1-9-7").version_source, None);
    assert_eq!(
        summary(&r),
        vec![
            (C::ControlPlaneVersionUnknown, Severity::Warning, "Deployment/istio-system/istiod-1-10-6".into()),
            (C::ControlPlaneVersionUnknown, Severity::Warning, "Deployment/istio-system/istiod-1-9-7".into()),
        ]
    );
}

#[test]
fn unknown_version_is_reported_for_latest_digest_and_unversioned_configmap() {
    let mut digest = istiod(
        "1-11-0",
        "docker.io/istio/pilot@sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    );
    digest.namespace = "istio-b".into();
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("1-9-7", "docker.io/istio/pilot:latest"),
            istiod("1-10-6", "docker.io/istio/pilot:latest"),
            digest,
        ],
        config_maps: vec![
            injector_cm(CP, "1-9-7", serde_json::json!("latest")),
            // a ConfigMap whose `values` is not JSON
            ConfigMap {
                namespace: CP.into(),
                name: "istio-sidecar-injector-1-10-6".into(),
                labels: Labels::new(),
                data: [("values".to_owned(), "global: {tag: 1.10.6}".to_owned())].into(),
            },
        ],
        ..snapshot()
    });
    assert!(r.revisions.iter().all(|x| x.version.is_none() && x.version_source.is_none()), "{:#?}", r.revisions);
    assert_eq!(
        summary(&r),
        vec![
            (C::ControlPlaneVersionUnknown, Severity::Warning, "Deployment/istio-b/istiod-1-11-0".into()),
            (C::ControlPlaneVersionUnknown, Severity::Warning, "Deployment/istio-system/istiod-1-10-6".into()),
            (C::ControlPlaneVersionUnknown, Severity::Warning, "Deployment/istio-system/istiod-1-9-7".into()),
        ]
    );
    let f = &r.findings[2];
    assert!(f.message.contains("revision 1-9-7"), "{}", f.message);
}

#[test]
fn istiod_without_ready_replica_is_an_error() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            ready(istiod("1-9-7", "docker.io/istio/pilot:1.9.7"), 2, 1),
            ready(istiod("1-10-6", "docker.io/istio/pilot:1.10.6"), 1, 0),
            ready(istiod("1-11-0", "docker.io/istio/pilot:1.11.0"), 0, 0),
        ],
        ..snapshot()
    });
    assert_eq!(
        summary(&r),
        vec![
            (C::ControlPlaneNotReady, Severity::Error, "Deployment/istio-system/istiod-1-10-6".into()),
            (C::ControlPlaneNotReady, Severity::Error, "Deployment/istio-system/istiod-1-11-0".into()),
        ]
    );
    assert_eq!((revision(&r, "1-9-7").replicas, revision(&r, "1-9-7").ready_replicas), (2, 1));
    assert_eq!(r.findings[0].fix, "kubectl -n istio-system describe deployment istiod-1-10-6");
}

// ---------------------------------------------------------------------------------------------------------
// Namespaces: every label combination
// ---------------------------------------------------------------------------------------------------------

/// Default 1.9.7 install plus revisions 1-9-7 (1.9 webhooks) and 1-10-6 (1.10 webhooks), tag prod -> 1-10-6.
fn mixed_control_planes() -> ClusterSnapshot {
    ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:1.9.7"),
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        mutating_webhooks: vec![
            injector_1_9("default"),
            injector_1_9("1-9-7"),
            injector_1_10("1-10-6"),
            tag_webhook("prod", "1-10-6"),
        ],
        ..snapshot()
    }
}

fn analyze_namespaces(base: ClusterSnapshot, namespaces: Vec<Namespace>) -> StatusReport {
    analyze(&ClusterSnapshot { namespaces, ..base })
}

#[test]
fn istio_injection_enabled_is_injected_by_the_default_revision() {
    for base in [
        mixed_control_planes(),
        ClusterSnapshot {
            workloads: vec![istiod("default", "docker.io/istio/pilot:1.10.6")],
            mutating_webhooks: vec![injector_1_10("default")],
            ..snapshot()
        },
    ] {
        let r = analyze_namespaces(base, vec![ns("bookinfo", &[("istio-injection", "enabled")])]);
        assert_eq!(
            namespace(&r, "bookinfo"),
            &NamespaceStatus {
                name: "bookinfo".into(),
                mode: InjectionMode::IstioInjection("enabled".into()),
                injected_by: Some("default".into()),
                webhooks: vec!["istio-sidecar-injector".into()],
                conflicting_labels: false,
                unknown_revision: None,
            }
        );
        assert!(r.findings.is_empty(), "{:#?}", r.findings);
        assert_eq!(r.default_revision.injection.as_deref(), Some("default"));
    }
}

#[test]
fn rev_label_selects_that_revision_under_1_9_and_1_10_webhooks() {
    let r = analyze_namespaces(
        mixed_control_planes(),
        vec![ns("blue", &[("istio.io/rev", "1-9-7")]), ns("green", &[("istio.io/rev", "1-10-6")])],
    );
    let blue = namespace(&r, "blue");
    assert_eq!(blue.mode, InjectionMode::Revision("1-9-7".into()));
    assert_eq!(blue.injected_by.as_deref(), Some("1-9-7"));
    assert_eq!(blue.webhooks, vec!["istio-sidecar-injector-1-9-7".to_owned()]);
    let green = namespace(&r, "green");
    assert_eq!(green.injected_by.as_deref(), Some("1-10-6"));
    assert_eq!(green.webhooks, vec!["istio-sidecar-injector-1-10-6".to_owned()]);
    assert_eq!((green.conflicting_labels, green.unknown_revision.as_deref()), (false, None));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn rev_label_naming_a_tag_is_injected_by_the_tags_revision() {
    let r = analyze_namespaces(mixed_control_planes(), vec![ns("bookinfo", &[("istio.io/rev", "prod")])]);
    assert_eq!(
        namespace(&r, "bookinfo"),
        &NamespaceStatus {
            name: "bookinfo".into(),
            mode: InjectionMode::Revision("prod".into()),
            injected_by: Some("1-10-6".into()),
            webhooks: vec!["istio-revision-tag-prod".into()],
            conflicting_labels: false,
            unknown_revision: None,
        }
    );
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn both_labels_istio_injection_wins_and_is_reported() {
    let r = analyze_namespaces(
        mixed_control_planes(),
        vec![ns("bookinfo", &[("istio-injection", "enabled"), ("istio.io/rev", "1-10-6")])],
    );
    let b = namespace(&r, "bookinfo");
    assert_eq!(b.mode, InjectionMode::IstioInjection("enabled".into()));
    assert_eq!(b.injected_by.as_deref(), Some("default"));
    assert_eq!(b.webhooks, vec!["istio-sidecar-injector".to_owned()]);
    assert!(b.conflicting_labels);
    let f = only(&r, C::NamespaceConflictingLabels);
    assert_eq!((f.severity, f.subject.as_str()), (Severity::Warning, "Namespace/bookinfo"));
    assert_eq!(f.fix, "kubectl label namespace bookinfo istio-injection-");
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
}

#[test]
fn both_labels_with_injection_disabled_inject_nothing() {
    let r = analyze_namespaces(
        mixed_control_planes(),
        vec![ns("bookinfo", &[("istio-injection", "disabled"), ("istio.io/rev", "1-9-7")])],
    );
    let b = namespace(&r, "bookinfo");
    assert_eq!(b.mode, InjectionMode::IstioInjection("disabled".into()));
    assert_eq!((b.injected_by.as_deref(), b.webhooks.len()), (None, 0));
    assert_eq!(summary(&r), vec![(C::NamespaceConflictingLabels, Severity::Warning, "Namespace/bookinfo".into())]);
}

#[test]
fn both_labels_without_a_default_injector_leave_the_namespace_without_injection() {
    // Only revisioned control planes: istio-injection=enabled shadows the rev label, and nothing matches it.
    let s = ClusterSnapshot {
        workloads: vec![istiod("1-9-7", "docker.io/istio/pilot:1.9.7")],
        mutating_webhooks: vec![injector_1_9("1-9-7")],
        namespaces: vec![ns("bookinfo", &[("istio-injection", "enabled"), ("istio.io/rev", "1-9-7")])],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(namespace(&r, "bookinfo").injected_by, None);
    assert_eq!(
        summary(&r),
        vec![
            (C::NamespaceNoInjector, Severity::Error, "Namespace/bookinfo".into()),
            (C::NamespaceConflictingLabels, Severity::Warning, "Namespace/bookinfo".into()),
        ]
    );
}

#[test]
fn disabled_and_unlabelled_namespaces_are_not_injected_and_not_reported() {
    let r = analyze_namespaces(
        mixed_control_planes(),
        vec![
            ns("kube-system", &[]),
            ns("legacy", &[("istio-injection", "disabled")]),
            ns("odd", &[("istio-injection", "yes")]),
        ],
    );
    assert_eq!(namespace(&r, "kube-system").mode, InjectionMode::None);
    assert_eq!(namespace(&r, "legacy").mode, InjectionMode::IstioInjection("disabled".into()));
    for n in ["kube-system", "legacy", "odd"] {
        assert_eq!(namespace(&r, n).injected_by, None, "{n}");
        assert!(namespace(&r, n).webhooks.is_empty(), "{n}");
    }
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    let names: Vec<&str> = r.namespaces.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["kube-system", "legacy", "odd"]);
}

#[test]
fn rev_label_naming_no_revision_or_tag_is_missing() {
    let r = analyze_namespaces(mixed_control_planes(), vec![ns("bookinfo", &[("istio.io/rev", "1-8-6")])]);
    let b = namespace(&r, "bookinfo");
    assert_eq!(b.unknown_revision.as_deref(), Some("1-8-6"));
    assert_eq!(b.injected_by, None);
    // Missing revision, not "no injector": one finding that names the label.
    assert_eq!(summary(&r), vec![(C::NamespaceRevisionMissing, Severity::Error, "Namespace/bookinfo".into())]);
    assert!(r.findings[0].message.contains("istio.io/rev=1-8-6"), "{}", r.findings[0].message);
}

#[test]
fn rev_label_of_a_removed_istiod_is_missing_even_if_its_webhook_was_left_behind() {
    let s = ClusterSnapshot {
        workloads: vec![istiod("1-10-6", "docker.io/istio/pilot:1.10.6")],
        mutating_webhooks: vec![injector_1_9("1-9-7"), injector_1_10("1-10-6")],
        namespaces: vec![ns("bookinfo", &[("istio.io/rev", "1-9-7")])],
        ..snapshot()
    };
    let r = analyze(&s);
    let b = namespace(&r, "bookinfo");
    assert_eq!(b.webhooks, vec!["istio-sidecar-injector-1-9-7".to_owned()]);
    assert_eq!(b.injected_by.as_deref(), Some("1-9-7"));
    assert_eq!(b.unknown_revision.as_deref(), Some("1-9-7"));
    assert_eq!(summary(&r), vec![(C::NamespaceRevisionMissing, Severity::Error, "Namespace/bookinfo".into())]);
}

#[test]
fn rev_label_shadowed_by_istio_injection_is_not_a_missing_revision() {
    let r = analyze_namespaces(
        mixed_control_planes(),
        vec![ns("bookinfo", &[("istio-injection", "enabled"), ("istio.io/rev", "1-8-6")])],
    );
    assert_eq!(namespace(&r, "bookinfo").unknown_revision.as_deref(), Some("1-8-6"));
    assert_eq!(summary(&r), vec![(C::NamespaceConflictingLabels, Severity::Warning, "Namespace/bookinfo".into())]);
}

#[test]
fn injection_enabled_without_a_default_injector_has_no_injector() {
    let s = ClusterSnapshot {
        workloads: vec![
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        mutating_webhooks: vec![injector_1_9("1-9-7"), injector_1_10("1-10-6")],
        namespaces: vec![ns("bookinfo", &[("istio-injection", "enabled")])],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(namespace(&r, "bookinfo").injected_by, None);
    assert_eq!(summary(&r), vec![(C::NamespaceNoInjector, Severity::Error, "Namespace/bookinfo".into())]);
    assert_eq!(r.default_revision.injection, None);
}

#[test]
fn installed_revision_without_its_webhook_has_no_injector() {
    let s = ClusterSnapshot {
        workloads: vec![istiod("1-10-6", "docker.io/istio/pilot:1.10.6")],
        namespaces: vec![ns("bookinfo", &[("istio.io/rev", "1-10-6")])],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(namespace(&r, "bookinfo").unknown_revision, None);
    assert_eq!(summary(&r), vec![(C::NamespaceNoInjector, Severity::Error, "Namespace/bookinfo".into())]);
}

#[test]
fn rev_default_is_matched_by_1_10_default_webhook_but_not_by_1_9() {
    // 1.10+: the default install's rev.namespace webhook matches istio.io/rev=default.
    let r10 = analyze(&ClusterSnapshot {
        workloads: vec![istiod("default", "docker.io/istio/pilot:1.10.6")],
        mutating_webhooks: vec![injector_1_10("default")],
        namespaces: vec![ns("bookinfo", &[("istio.io/rev", "default")])],
        ..snapshot()
    });
    assert_eq!(namespace(&r10, "bookinfo").injected_by.as_deref(), Some("default"));
    assert!(r10.findings.is_empty(), "{:#?}", r10.findings);
    // 1.9: the default webhook only matches istio-injection=enabled.
    let r9 = analyze(&ClusterSnapshot {
        workloads: vec![istiod("default", "docker.io/istio/pilot:1.9.7")],
        mutating_webhooks: vec![injector_1_9("default")],
        namespaces: vec![ns("bookinfo", &[("istio.io/rev", "default")])],
        ..snapshot()
    });
    assert_eq!(namespace(&r9, "bookinfo").injected_by, None);
    assert_eq!(summary(&r9), vec![(C::NamespaceNoInjector, Severity::Error, "Namespace/bookinfo".into())]);
}

#[test]
fn object_level_webhooks_do_not_select_a_whole_namespace() {
    // rev.object. and object. need pod labels: an unlabelled namespace is injected by nobody.
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("default", "docker.io/istio/pilot:1.10.6")],
        mutating_webhooks: vec![injector_1_10("default"), tag_webhook("prod", "default")],
        namespaces: vec![ns("plain", &[])],
        ..snapshot()
    });
    assert_eq!(namespace(&r, "plain").webhooks, Vec::<String>::new());
    assert_eq!(namespace(&r, "plain").injected_by, None);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn old_default_webhook_and_default_tag_both_matching_is_multiple_injectors() {
    let s = ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        mutating_webhooks: vec![injector_1_9("default"), injector_1_10("1-10-6"), tag_webhook("default", "1-10-6")],
        namespaces: vec![ns("bookinfo", &[("istio-injection", "enabled")])],
        ..snapshot()
    };
    let r = analyze(&s);
    let b = namespace(&r, "bookinfo");
    assert_eq!(b.webhooks, vec!["istio-revision-tag-default".to_owned(), "istio-sidecar-injector".to_owned()]);
    assert_eq!(b.injected_by, None);
    let f = only(&r, C::NamespaceMultipleInjectors);
    assert_eq!((f.severity, f.subject.as_str()), (Severity::Error, "Namespace/bookinfo"));
    assert!(f.message.contains("istio-revision-tag-default, istio-sidecar-injector"), "{}", f.message);
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    // Two revisions answer istio-injection=enabled: the default for injection is ambiguous.
    assert_eq!(r.default_revision.injection, None);
    assert_eq!(r.default_revision.tag.as_deref(), Some("1-10-6"));
}

#[test]
fn default_1_10_install_and_default_tag_both_match_rev_default_too() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:1.10.6"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        mutating_webhooks: vec![injector_1_10("default"), injector_1_10("1-10-6"), tag_webhook("default", "1-10-6")],
        namespaces: vec![ns("a", &[("istio.io/rev", "default")]), ns("b", &[("istio-injection", "enabled")])],
        ..snapshot()
    });
    assert_eq!(
        summary(&r),
        vec![
            (C::NamespaceMultipleInjectors, Severity::Error, "Namespace/a".into()),
            (C::NamespaceMultipleInjectors, Severity::Error, "Namespace/b".into()),
        ]
    );
}

#[test]
fn deactivated_webhook_never_matches() {
    // Only the namespaceSelector neutralised: still never-match, even for a namespace carrying the label.
    let mut half_deactivated = injector_1_9("default");
    half_deactivated.name = "istio-sidecar-injector-half".into();
    half_deactivated.webhooks[0].namespace_selector =
        LabelSelector::from_labels([("istio.io/deactivated", "never-match")]);
    let s = ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        mutating_webhooks: vec![
            deactivated(injector_1_9("default")),
            injector_1_10("1-10-6"),
            tag_webhook("default", "1-10-6"),
            half_deactivated,
        ],
        namespaces: vec![
            ns("bookinfo", &[("istio-injection", "enabled")]),
            // even a namespace carrying the never-match label itself: the webhook stays neutralised
            ns("weird", &[("istio.io/deactivated", "never-match")]),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    let b = namespace(&r, "bookinfo");
    assert_eq!(b.webhooks, vec!["istio-revision-tag-default".to_owned()]);
    assert_eq!(b.injected_by.as_deref(), Some("1-10-6"));
    assert!(namespace(&r, "weird").webhooks.is_empty());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(
        r.default_revision,
        DefaultRevision { tag: Some("1-10-6".into()), injection: Some("1-10-6".into()), validator: None }
    );
    // The neutralised configuration still belongs to the default revision (it can be switched back).
    assert_eq!(
        revision(&r, "default").injector_webhooks,
        vec!["istio-sidecar-injector".to_owned(), "istio-sidecar-injector-half".to_owned()]
    );
}

#[test]
fn only_deactivated_injector_leaves_enabled_namespaces_without_injector() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("default", "docker.io/istio/pilot:1.10.6")],
        mutating_webhooks: vec![deactivated(injector_1_10("default"))],
        namespaces: vec![ns("bookinfo", &[("istio-injection", "enabled")])],
        ..snapshot()
    });
    assert_eq!(summary(&r), vec![(C::NamespaceNoInjector, Severity::Error, "Namespace/bookinfo".into())]);
    assert_eq!(r.default_revision.injection, None);
}

#[test]
fn webhooks_that_do_not_inject_are_ignored() {
    // A foreign mutating webhook selecting everything, and one calling a URL rather than istiod.
    let foreign = WebhookConfiguration {
        name: "cert-manager-webhook".into(),
        labels: l(&[("app", "cert-manager")]),
        webhooks: vec![Webhook {
            service: Some(WebhookService {
                namespace: "cert-manager".into(),
                name: "cert-manager-webhook".into(),
                path: Some("/mutate".into()),
            }),
            ..webhook("webhook.cert-manager.io", "x", "/mutate", LabelSelector::default(), LabelSelector::default())
        }],
    };
    let mut url = injector_1_9("default");
    url.name = "url-injector".into();
    url.webhooks[0].service = None;
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("default", "docker.io/istio/pilot:1.9.7")],
        mutating_webhooks: vec![foreign, url, injector_1_9("default")],
        namespaces: vec![ns("bookinfo", &[("istio-injection", "enabled")])],
        ..snapshot()
    });
    assert_eq!(namespace(&r, "bookinfo").webhooks, vec!["istio-sidecar-injector".to_owned()]);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn webhook_revision_comes_from_its_service_when_unlabelled() {
    let mut cfg = injector_1_9("1-9-7");
    cfg.labels.remove("istio.io/rev");
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("1-9-7", "docker.io/istio/pilot:1.9.7")],
        mutating_webhooks: vec![cfg],
        namespaces: vec![ns("bookinfo", &[("istio.io/rev", "1-9-7")])],
        ..snapshot()
    });
    assert_eq!(namespace(&r, "bookinfo").injected_by.as_deref(), Some("1-9-7"));
    assert_eq!(revision(&r, "1-9-7").injector_webhooks, vec!["istio-sidecar-injector-1-9-7".to_owned()]);
}

// ---------------------------------------------------------------------------------------------------------
// Tags, default revision, validators
// ---------------------------------------------------------------------------------------------------------

#[test]
fn tags_are_listed_and_attached_to_their_revision() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        mutating_webhooks: vec![
            injector_1_10("1-10-6"),
            tag_webhook("prod", "1-10-6"),
            tag_webhook("default", "1-10-6"),
            tag_webhook("stable", "1-9-7"),
            injector_1_9("1-9-7"),
        ],
        ..snapshot()
    });
    assert_eq!(
        r.tags,
        vec![
            TagStatus {
                tag: "default".into(),
                revision: "1-10-6".into(),
                webhook: "istio-revision-tag-default".into(),
                revision_exists: true
            },
            TagStatus {
                tag: "prod".into(),
                revision: "1-10-6".into(),
                webhook: "istio-revision-tag-prod".into(),
                revision_exists: true
            },
            TagStatus {
                tag: "stable".into(),
                revision: "1-9-7".into(),
                webhook: "istio-revision-tag-stable".into(),
                revision_exists: true
            },
        ]
    );
    let green = revision(&r, "1-10-6");
    assert_eq!(green.tags, vec!["default".to_owned(), "prod".to_owned()]);
    assert_eq!(
        green.injector_webhooks,
        vec!["istio-sidecar-injector-1-10-6".to_owned()],
        "tags are not the revision's own"
    );
    assert_eq!(revision(&r, "1-9-7").tags, vec!["stable".to_owned()]);
    assert_eq!(r.default_revision.tag.as_deref(), Some("1-10-6"));
    assert_eq!(r.default_revision.injection.as_deref(), Some("1-10-6"));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn a_tag_is_recognised_by_its_label_or_by_its_name() {
    let mut by_name = tag_webhook("prod", "1-10-6");
    by_name.labels.remove("istio.io/tag");
    let mut by_label = tag_webhook("canary", "1-10-6");
    by_label.name = "custom-canary-injector".into();
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("1-10-6", "docker.io/istio/pilot:1.10.6")],
        mutating_webhooks: vec![by_name, by_label],
        namespaces: vec![ns("a", &[("istio.io/rev", "prod")]), ns("b", &[("istio.io/rev", "canary")])],
        ..snapshot()
    });
    let tags: Vec<(&str, &str)> = r.tags.iter().map(|t| (t.tag.as_str(), t.webhook.as_str())).collect();
    assert_eq!(tags, vec![("canary", "custom-canary-injector"), ("prod", "istio-revision-tag-prod")]);
    assert_eq!(namespace(&r, "a").injected_by.as_deref(), Some("1-10-6"));
    assert_eq!(namespace(&r, "b").injected_by.as_deref(), Some("1-10-6"));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn tag_pointing_at_a_missing_revision_is_an_error() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("1-10-6", "docker.io/istio/pilot:1.10.6")],
        mutating_webhooks: vec![injector_1_10("1-10-6"), tag_webhook("prod", "1-9-7")],
        namespaces: vec![ns("bookinfo", &[("istio.io/rev", "prod")])],
        ..snapshot()
    });
    assert!(!r.tags[0].revision_exists);
    // The namespace names an existing tag: the tag finding covers it, not NAMESPACE_REVISION_MISSING.
    assert_eq!(namespace(&r, "bookinfo").unknown_revision, None);
    assert_eq!(namespace(&r, "bookinfo").injected_by.as_deref(), Some("1-9-7"));
    assert_eq!(
        summary(&r),
        vec![(C::TagRevisionMissing, Severity::Error, "MutatingWebhookConfiguration/istio-revision-tag-prod".into())]
    );
    let f = &r.findings[0];
    assert!(f.message.contains("tag prod points at revision 1-9-7"), "{}", f.message);
    assert_eq!(f.fix, "istioctl tag set prod --revision <an installed revision> --overwrite");
}

#[test]
fn default_tag_pointing_at_a_missing_revision_has_its_own_code() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("1-10-6", "docker.io/istio/pilot:1.10.6")],
        mutating_webhooks: vec![injector_1_10("1-10-6"), tag_webhook("default", "1-9-7")],
        ..snapshot()
    });
    assert_eq!(r.default_revision.tag.as_deref(), Some("1-9-7"));
    assert_eq!(
        summary(&r),
        vec![(
            C::DefaultTagRevisionMissing,
            Severity::Error,
            "MutatingWebhookConfiguration/istio-revision-tag-default".into()
        )]
    );
}

#[test]
fn missing_tag_revision_stays_an_error_with_failure_policy_ignore() {
    // With Ignore, pods of the tag's namespaces start without a sidecar: still broken.
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("1-10-6", "docker.io/istio/pilot:1.10.6")],
        mutating_webhooks: vec![
            with_failure_policy(tag_webhook("prod", "1-9-7"), "Ignore"),
            with_failure_policy(tag_webhook("default", "1-9-7"), "Ignore"),
        ],
        ..snapshot()
    });
    assert_eq!(
        summary(&r),
        vec![
            (C::TagRevisionMissing, Severity::Error, "MutatingWebhookConfiguration/istio-revision-tag-prod".into()),
            (
                C::DefaultTagRevisionMissing,
                Severity::Error,
                "MutatingWebhookConfiguration/istio-revision-tag-default".into()
            ),
        ]
    );
}

#[test]
fn default_validator_1_10_plus_names_the_default_revision() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("1-10-6", "docker.io/istio/pilot:1.10.6")],
        validating_webhooks: vec![
            // the base chart's validator is superseded by istiod-default-validator
            validator("istiod-istio-system", "default", "Ignore"),
            validator("istiod-default-validator", "1-10-6", "Fail"),
        ],
        ..snapshot()
    });
    assert_eq!(r.default_revision.validator.as_deref(), Some("1-10-6"));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn base_chart_1_9_validator_calls_istiod_the_default_revision() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("default", "docker.io/istio/pilot:1.9.7")],
        validating_webhooks: vec![validator("istiod-istio-system", "default", "Ignore")],
        ..snapshot()
    });
    assert_eq!(r.default_revision.validator.as_deref(), Some("default"));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn per_revision_validators_are_not_the_default_validator() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![istiod("1-24-6", "docker.io/istio/pilot:1.24.6")],
        validating_webhooks: vec![
            validator("istio-validator-1-24-6-istio-system", "1-24-6", "Fail"),
            validator("istio-validator-istio-system", "default", "Fail"),
        ],
        ..snapshot()
    });
    assert_eq!(r.default_revision.validator, None);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn default_validator_calling_a_missing_revision_error_with_fail_warning_with_ignore() {
    let blue_green =
        || vec![istiod("1-9-7", "docker.io/istio/pilot:1.9.7"), istiod("1-10-6", "docker.io/istio/pilot:1.10.6")];
    for (cfg, severity) in [
        (validator("istiod-istio-system", "default", "Ignore"), Severity::Warning),
        (validator("istiod-istio-system", "default", "Fail"), Severity::Error),
        (validator("istiod-default-validator", "1-8-6", "Fail"), Severity::Error),
        (validator("istiod-default-validator", "1-8-6", "Ignore"), Severity::Warning),
    ] {
        let name = cfg.name.clone();
        let r = analyze(&ClusterSnapshot { workloads: blue_green(), validating_webhooks: vec![cfg], ..snapshot() });
        assert_eq!(
            summary(&r),
            vec![(C::DefaultValidatorRevisionMissing, severity, format!("ValidatingWebhookConfiguration/{name}"))],
            "{name}"
        );
        let msg = &r.findings[0].message;
        let expected =
            if severity == Severity::Error { "every Istio config write is rejected" } else { "not validated" };
        assert!(msg.contains(expected), "{msg}");
    }
}

#[test]
fn default_revision_views_disagree_during_a_migration() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        mutating_webhooks: vec![injector_1_9("default"), injector_1_10("1-10-6"), tag_webhook("prod", "1-10-6")],
        validating_webhooks: vec![validator("istiod-default-validator", "1-10-6", "Fail")],
        ..snapshot()
    });
    assert_eq!(
        r.default_revision,
        DefaultRevision { tag: None, injection: Some("default".into()), validator: Some("1-10-6".into()) }
    );
}

// ---------------------------------------------------------------------------------------------------------
// Proxies: the three revision conventions, native sidecars, totals
// ---------------------------------------------------------------------------------------------------------

#[test]
fn proxy_revision_and_version_under_every_istio_convention() {
    let mut native = pod("apps", "native", None);
    let mut sidecar = proxy_container(&proxyv2("1.28.0"));
    sidecar.restart_policy = Some("Always".into());
    native.spec.init_containers = vec![container("istio-validation", &proxyv2("1.28.0")), sidecar];
    native.spec.annotations.insert("istio.io/rev".into(), "1-28-0".into());
    let mut plain_init = pod("apps", "plain-init", None);
    plain_init.spec.init_containers = vec![proxy_container(&proxyv2("1.28.0"))];
    let r = analyze(&ClusterSnapshot {
        pods: vec![
            pod_with_proxy("apps", "v1-9", None, &proxyv2("1.9.7"), Rev::Label("1-9-7")),
            pod_with_proxy("apps", "v1-12", None, &proxyv2("1.12.9"), Rev::Status("1-12-9")),
            pod_with_proxy("apps", "v1-24", None, &proxyv2("1.24.6"), Rev::Annotation("1-24-6")),
            pod_with_proxy("apps", "discovery", None, &proxyv2("1.10.6"), Rev::Discovery("1-10-6")),
            pod_with_proxy(
                "apps",
                "discovery-default",
                None,
                "docker.io/istio/proxyv2:1.10.6-distroless",
                Rev::Discovery("default"),
            ),
            native,
            plain_init,
        ],
        ..snapshot()
    });
    let expect = |version: &str, revision: &str, source: RevisionSource, native_sidecar: bool| ProxyStatus {
        version: Some(version.into()),
        revision: Some(revision.into()),
        revision_source: Some(source),
        native_sidecar,
    };
    assert_eq!(proxy_of(&r, "apps", "v1-9"), Some(&expect("1.9.7", "1-9-7", RevisionSource::Label, false)));
    assert_eq!(
        proxy_of(&r, "apps", "v1-12"),
        Some(&expect("1.12.9", "1-12-9", RevisionSource::StatusAnnotation, false))
    );
    assert_eq!(proxy_of(&r, "apps", "v1-24"), Some(&expect("1.24.6", "1-24-6", RevisionSource::Annotation, false)));
    assert_eq!(
        proxy_of(&r, "apps", "discovery"),
        Some(&expect("1.10.6", "1-10-6", RevisionSource::DiscoveryAddress, false))
    );
    assert_eq!(
        proxy_of(&r, "apps", "discovery-default"),
        Some(&expect("1.10.6", "default", RevisionSource::DiscoveryAddress, false))
    );
    assert_eq!(proxy_of(&r, "apps", "native"), Some(&expect("1.28.0", "1-28-0", RevisionSource::Annotation, true)));
    assert_eq!(
        proxy_of(&r, "apps", "plain-init"),
        None,
        "an init container without restartPolicy Always is not a sidecar"
    );
}

#[test]
fn annotation_beats_status_beats_label() {
    let mut p = pod_with_proxy("apps", "p", None, &proxyv2("1.24.6"), Rev::Label("stale-label"));
    p.spec.annotations.insert("sidecar.istio.io/status".into(), r#"{"revision":"from-status"}"#.into());
    let mut q = p.clone();
    q.name = "q".into();
    q.spec.annotations.insert("istio.io/rev".into(), "from-annotation".into());
    // An empty revision in the status annotation falls through to the label.
    let mut e = p.clone();
    e.name = "e".into();
    e.spec.annotations.insert("sidecar.istio.io/status".into(), r#"{"revision":""}"#.into());
    let r = analyze(&ClusterSnapshot { pods: vec![p, q, e], ..snapshot() });
    let rev = |name: &str| {
        let p = proxy_of(&r, "apps", name).expect("proxy");
        (p.revision.clone().unwrap(), p.revision_source.unwrap())
    };
    assert_eq!(rev("p"), ("from-status".to_owned(), RevisionSource::StatusAnnotation));
    assert_eq!(rev("q"), ("from-annotation".to_owned(), RevisionSource::Annotation));
    assert_eq!(rev("e"), ("stale-label".to_owned(), RevisionSource::Label));
}

#[test]
fn proxy_without_any_revision_marker_or_version_is_counted_as_unknown() {
    let mut p = pod("apps", "bare", None);
    p.spec.containers.push(proxy_container("docker.io/istio/proxyv2:latest"));
    let r = analyze(&ClusterSnapshot { pods: vec![p], ..snapshot() });
    assert_eq!(
        proxy_of(&r, "apps", "bare"),
        Some(&ProxyStatus { version: None, revision: None, revision_source: None, native_sidecar: false })
    );
    assert_eq!(r.proxies, vec![ProxyCount { revision: "unknown".into(), version: "unknown".into(), pods: 1 }]);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn proxy_totals_per_revision_and_version() {
    let s = ClusterSnapshot {
        workloads: vec![
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        pods: vec![
            pod_with_proxy("a", "a1", None, &proxyv2("1.9.7"), Rev::Label("1-9-7")),
            pod_with_proxy("a", "a2", None, &proxyv2("1.9.7"), Rev::Label("1-9-7")),
            pod_with_proxy("a", "a3", None, &proxyv2("1.9.6"), Rev::Label("1-9-7")),
            pod_with_proxy("b", "b1", None, &proxyv2("1.10.6"), Rev::Label("1-10-6")),
            pod_with_proxy("b", "b2", None, &proxyv2("1.10.6"), Rev::Discovery("1-10-6")),
            pod("b", "no-sidecar", None),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(
        r.proxies,
        vec![
            ProxyCount { revision: "1-10-6".into(), version: "1.10.6".into(), pods: 2 },
            ProxyCount { revision: "1-9-7".into(), version: "1.9.6".into(), pods: 1 },
            ProxyCount { revision: "1-9-7".into(), version: "1.9.7".into(), pods: 2 },
        ]
    );
    assert_eq!(revision(&r, "1-9-7").proxies, 3);
    assert_eq!(revision(&r, "1-10-6").proxies, 2);
}

// ---------------------------------------------------------------------------------------------------------
// Pod rules
// ---------------------------------------------------------------------------------------------------------

/// Blue 1-9-7 and green 1-10-6, namespace `bookinfo` labelled for `ns_rev`.
fn blue_green(ns_rev: &str) -> ClusterSnapshot {
    ClusterSnapshot {
        namespaces: vec![ns("bookinfo", &[("istio.io/rev", ns_rev)])],
        workloads: vec![
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
            app_workload(WorkloadKind::Deployment, "bookinfo", "reviews-v1", 3),
        ],
        replica_sets: vec![
            rs("bookinfo", "reviews-v1-6f8c9b7d4", "reviews-v1"),
            rs("bookinfo", "reviews-v1-7d9f8c6b5", "reviews-v1"),
        ],
        mutating_webhooks: vec![injector_1_9("1-9-7"), injector_1_10("1-10-6"), tag_webhook("prod", "1-10-6")],
        ..snapshot()
    }
}

#[test]
fn pods_of_the_old_revision_after_relabelling_are_a_revision_mismatch() {
    let mut s = blue_green("1-10-6");
    s.pods = vec![
        pod_with_proxy(
            "bookinfo",
            "reviews-v1-6f8c9b7d4-aaaaa",
            rs_owner("reviews-v1-6f8c9b7d4"),
            &proxyv2("1.9.7"),
            Rev::Label("1-9-7"),
        ),
        pod_with_proxy(
            "bookinfo",
            "reviews-v1-6f8c9b7d4-bbbbb",
            rs_owner("reviews-v1-6f8c9b7d4"),
            &proxyv2("1.9.7"),
            Rev::Label("1-9-7"),
        ),
        pod_with_proxy(
            "bookinfo",
            "reviews-v1-7d9f8c6b5-ccccc",
            rs_owner("reviews-v1-7d9f8c6b5"),
            &proxyv2("1.10.6"),
            Rev::Label("1-10-6"),
        ),
    ];
    let r = analyze(&s);
    let f = only(&r, C::PodRevisionMismatch);
    assert_eq!((f.severity, f.subject.as_str()), (Severity::Warning, "Deployment/bookinfo/reviews-v1"));
    assert_eq!(
        f.message,
        "2 of 3 pods run proxies of revision 1-9-7 but namespace bookinfo now selects 1-10-6: restart needed"
    );
    assert_eq!(f.fix, "kubectl -n bookinfo rollout restart deployment/reviews-v1");
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
}

#[test]
fn revision_mismatch_against_a_tag_uses_the_tags_revision() {
    let mut s = blue_green("prod");
    s.pods = vec![
        pod_with_proxy("bookinfo", "a", None, &proxyv2("1.9.7"), Rev::Label("1-9-7")),
        pod_with_proxy("bookinfo", "b", None, &proxyv2("1.10.6"), Rev::Label("1-10-6")),
    ];
    let r = analyze(&s);
    assert_eq!(summary(&r), vec![(C::PodRevisionMismatch, Severity::Warning, "Pod/bookinfo/a".into())]);
    assert!(r.findings[0].message.contains("now selects 1-10-6"), "{}", r.findings[0].message);
    assert_eq!(r.findings[0].fix, "kubectl -n bookinfo delete pod a (recreate it through its controller)");
}

#[test]
fn revision_mismatch_after_the_default_tag_moves() {
    let s = ClusterSnapshot {
        namespaces: vec![ns("bookinfo", &[("istio-injection", "enabled")])],
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:1.10.6"),
            istiod("1-11-8", "docker.io/istio/pilot:1.11.8"),
        ],
        mutating_webhooks: vec![
            deactivated(injector_1_10("default")),
            injector_1_10("1-11-8"),
            tag_webhook("default", "1-11-8"),
        ],
        pods: vec![pod_with_proxy(
            "bookinfo",
            "p",
            owner("StatefulSet", "ratings"),
            &proxyv2("1.10.6"),
            Rev::Label("default"),
        )],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(summary(&r), vec![(C::PodRevisionMismatch, Severity::Warning, "StatefulSet/bookinfo/ratings".into())]);
    assert_eq!(r.findings[0].fix, "kubectl -n bookinfo rollout restart statefulset/ratings");
}

#[test]
fn no_revision_mismatch_when_the_namespace_has_no_single_injector_or_pod_opted_out() {
    let mut s = blue_green("1-10-6");
    s.namespaces.push(ns("plain", &[]));
    let mut opted_out = pod_with_proxy("bookinfo", "gw", None, &proxyv2("1.9.7"), Rev::Label("1-9-7"));
    opted_out.spec.labels.insert("sidecar.istio.io/inject".into(), "false".into());
    s.pods = vec![opted_out, pod_with_proxy("plain", "p", None, &proxyv2("1.9.7"), Rev::Label("1-9-7"))];
    let r = analyze(&s);
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn patch_behind_or_one_minor_behind_is_a_version_mismatch() {
    let s = ClusterSnapshot {
        workloads: vec![istiod("default", "docker.io/istio/pilot:1.10.6")],
        pods: vec![
            pod_with_proxy(
                "apps",
                "patch-behind",
                owner("DaemonSet", "node-agent"),
                &proxyv2("1.10.5"),
                Rev::Label("default"),
            ),
            pod_with_proxy("apps", "minor-behind", None, &proxyv2("1.9.7"), Rev::Label("default")),
            pod_with_proxy("apps", "same", None, &proxyv2("1.10.6"), Rev::Label("default")),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(
        summary(&r),
        vec![
            (C::PodVersionMismatch, Severity::Warning, "DaemonSet/apps/node-agent".into()),
            (C::PodVersionMismatch, Severity::Warning, "Pod/apps/minor-behind".into()),
        ]
    );
    assert_eq!(
        r.findings[0].message,
        "1 of 1 pods run proxy 1.10.5 (control plane 1.10.6): restart to pick up the control plane's version"
    );
    assert_eq!(r.findings[0].fix, "kubectl -n apps rollout restart daemonset/node-agent");
}

#[test]
fn proxy_two_minors_behind_or_newer_than_the_control_plane_is_unsupported() {
    let s = ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:1.11.0"),
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
        ],
        pods: vec![
            pod_with_proxy("apps", "too-old", None, &proxyv2("1.9.7"), Rev::Label("default")),
            pod_with_proxy("apps", "too-new", None, &proxyv2("1.10.6"), Rev::Label("1-9-7")),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(
        summary(&r),
        vec![
            (C::ProxySkewUnsupported, Severity::Error, "Pod/apps/too-new".into()),
            (C::ProxySkewUnsupported, Severity::Error, "Pod/apps/too-old".into()),
        ]
    );
    assert!(r.findings[0].message.contains("1.10.6 with control plane 1.9.7"), "{}", r.findings[0].message);
    assert!(r.findings[1].message.contains("1.9.7 with control plane 1.11.0"), "{}", r.findings[1].message);
}

#[test]
fn unknown_versions_skip_the_skew_rules() {
    let s = ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:latest"),
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
        ],
        pods: vec![
            pod_with_proxy("apps", "cp-unknown", None, &proxyv2("1.5.0"), Rev::Label("default")),
            pod_with_proxy("apps", "proxy-unknown", None, "docker.io/istio/proxyv2@sha256:abc", Rev::Label("1-9-7")),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(codes(&r), vec![C::ControlPlaneVersionUnknown]);
}

#[test]
fn proxies_of_a_revision_without_istiod_are_reported() {
    let s = ClusterSnapshot {
        workloads: vec![
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
            app_workload(WorkloadKind::Deployment, "apps", "web", 2),
        ],
        replica_sets: vec![rs("apps", "web-5d4c", "web")],
        pods: vec![
            pod_with_proxy("apps", "web-5d4c-1", rs_owner("web-5d4c"), &proxyv2("1.8.6"), Rev::Label("1-8-6")),
            pod_with_proxy("apps", "web-5d4c-2", rs_owner("web-5d4c"), &proxyv2("1.10.6"), Rev::Annotation("1-10-6")),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    assert_eq!(summary(&r), vec![(C::ProxyRevisionMissing, Severity::Error, "Deployment/apps/web".into())]);
    assert!(
        r.findings[0].message.starts_with("1 of 2 pods run proxies of revision 1-8-6, which has no istiod"),
        "{}",
        r.findings[0].message
    );
}

#[test]
fn pod_without_sidecar_in_an_injected_namespace() {
    let mut s = blue_green("1-10-6");
    let mut pending = pod("bookinfo", "pending", None);
    pending.phase = "Pending".into();
    pending.ready = false;
    s.pods = vec![
        pod("bookinfo", "reviews-v1-6f8c9b7d4-aaaaa", rs_owner("reviews-v1-6f8c9b7d4")),
        pod_with_proxy(
            "bookinfo",
            "reviews-v1-6f8c9b7d4-bbbbb",
            rs_owner("reviews-v1-6f8c9b7d4"),
            &proxyv2("1.10.6"),
            Rev::Label("1-10-6"),
        ),
        pending,
    ];
    let r = analyze(&s);
    assert_eq!(
        summary(&r),
        vec![
            (C::PodWithoutSidecar, Severity::Warning, "Deployment/bookinfo/reviews-v1".into()),
            (C::PodWithoutSidecar, Severity::Warning, "Pod/bookinfo/pending".into()),
        ]
    );
    assert_eq!(r.findings[0].message, "1 of 2 pods have no sidecar although namespace bookinfo is injected");
}

#[test]
fn pods_that_are_never_injected_are_not_missing_a_sidecar() {
    let mut s = blue_green("1-10-6");
    s.namespaces.push(ns("plain", &[]));
    s.namespaces.push(ns("multi", &[("istio-injection", "enabled")]));
    let mut host = pod("bookinfo", "host-network", None);
    host.host_network = true;
    let mut label_off = pod("bookinfo", "label-off", None);
    label_off.spec.labels.insert("sidecar.istio.io/inject".into(), "false".into());
    let mut annotation_off = pod("bookinfo", "annotation-off", None);
    annotation_off.spec.annotations.insert("sidecar.istio.io/inject".into(), "false".into());
    let mut succeeded = pod("bookinfo", "job-1", owner("Job", "migrate"));
    succeeded.phase = "Succeeded".into();
    succeeded.ready = false;
    let mut failed = pod("bookinfo", "job-2", owner("Job", "migrate"));
    failed.phase = "Failed".into();
    s.pods =
        vec![host, label_off, annotation_off, succeeded, failed, pod("plain", "p", None), pod("unlisted", "u", None)];
    let r = analyze(&s);
    // `multi` (istio-injection=enabled without a default injector) has its own finding, no pod finding.
    assert_eq!(summary(&r), vec![(C::NamespaceNoInjector, Severity::Error, "Namespace/multi".into())]);
}

#[test]
fn inject_true_does_not_count_as_opted_out() {
    let mut s = blue_green("1-10-6");
    let mut p = pod("bookinfo", "p", None);
    p.spec.labels.insert("sidecar.istio.io/inject".into(), "true".into());
    s.pods = vec![p];
    let r = analyze(&s);
    assert_eq!(summary(&r), vec![(C::PodWithoutSidecar, Severity::Warning, "Pod/bookinfo/p".into())]);
}

#[test]
fn one_workload_with_several_problems_gets_one_finding_per_rule() {
    let s = ClusterSnapshot {
        namespaces: vec![ns("apps", &[("istio.io/rev", "1-10-6")])],
        workloads: vec![
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
        ],
        mutating_webhooks: vec![injector_1_10("1-10-6")],
        replica_sets: vec![rs("apps", "web-1", "web")],
        pods: vec![
            pod_with_proxy("apps", "web-1-a", rs_owner("web-1"), &proxyv2("1.8.6"), Rev::Label("1-8-6")),
            pod_with_proxy("apps", "web-1-b", rs_owner("web-1"), &proxyv2("1.8.6"), Rev::Label("1-8-6")),
            pod_with_proxy("apps", "web-1-c", rs_owner("web-1"), &proxyv2("1.9.7"), Rev::Label("1-9-7")),
            pod_with_proxy("apps", "web-1-d", rs_owner("web-1"), &proxyv2("1.10.5"), Rev::Label("1-10-6")),
            pod_with_proxy("apps", "web-1-e", rs_owner("web-1"), &proxyv2("1.8.6"), Rev::Label("1-10-6")),
            pod("apps", "web-1-f", rs_owner("web-1")),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    let got: Vec<(C, Severity, &str, &str)> =
        r.findings.iter().map(|f| (f.code, f.severity, f.subject.as_str(), f.message.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (
                C::ProxySkewUnsupported,
                Severity::Error,
                "Deployment/apps/web",
                "1 of 6 pods run proxy 1.8.6 with control plane 1.10.6: outside Istio's supported skew (control plane at most one minor ahead)"
            ),
            (
                C::ProxyRevisionMissing,
                Severity::Error,
                "Deployment/apps/web",
                "2 of 6 pods run proxies of revision 1-8-6, which has no istiod: they keep stale config and their certificates stop rotating"
            ),
            // Same code and subject: ordered by the rest of the finding (its message).
            (
                C::PodRevisionMismatch,
                Severity::Warning,
                "Deployment/apps/web",
                "1 of 6 pods run proxies of revision 1-9-7 but namespace apps now selects 1-10-6: restart needed"
            ),
            (
                C::PodRevisionMismatch,
                Severity::Warning,
                "Deployment/apps/web",
                "2 of 6 pods run proxies of revision 1-8-6 but namespace apps now selects 1-10-6: restart needed"
            ),
            (
                C::PodVersionMismatch,
                Severity::Warning,
                "Deployment/apps/web",
                "1 of 6 pods run proxy 1.10.5 (control plane 1.10.6): restart to pick up the control plane's version"
            ),
            (
                C::PodWithoutSidecar,
                Severity::Warning,
                "Deployment/apps/web",
                "1 of 6 pods have no sidecar although namespace apps is injected"
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------------------
// Workload aggregation
// ---------------------------------------------------------------------------------------------------------

#[test]
fn pods_are_grouped_by_workload() {
    let s = ClusterSnapshot {
        workloads: vec![
            app_workload(WorkloadKind::Deployment, "bookinfo", "reviews-v1", 2),
            app_workload(WorkloadKind::StatefulSet, "bookinfo", "ratings", 1),
            app_workload(WorkloadKind::DaemonSet, "bookinfo", "agent", 0),
            app_workload(WorkloadKind::Deployment, "bookinfo", "idle", 0),
        ],
        replica_sets: vec![
            rs("bookinfo", "reviews-v1-aaa", "reviews-v1"),
            rs("bookinfo", "reviews-v1-bbb", "reviews-v1"),
            // Same ReplicaSet name in another namespace: it must not capture bookinfo's pods.
            rs("other", "orphan-rs", "elsewhere"),
        ],
        pods: vec![
            pod_with_proxy(
                "bookinfo",
                "reviews-v1-bbb-2",
                rs_owner("reviews-v1-bbb"),
                &proxyv2("1.10.6"),
                Rev::Label("1-10-6"),
            ),
            pod("bookinfo", "reviews-v1-aaa-1", rs_owner("reviews-v1-aaa")),
            pod("bookinfo", "ratings-0", owner("StatefulSet", "ratings")),
            pod("bookinfo", "orphan-rs-x", rs_owner("orphan-rs")),
            pod("bookinfo", "debug", None),
        ],
        ..snapshot()
    };
    let r = analyze(&s);
    let keys: Vec<(&str, &str, &str, Vec<&str>)> = r
        .workloads
        .iter()
        .map(|w| {
            (w.namespace.as_str(), w.kind.as_str(), w.name.as_str(), w.pods.iter().map(|p| p.name.as_str()).collect())
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("bookinfo", "DaemonSet", "agent", vec![]),
            ("bookinfo", "Deployment", "idle", vec![]),
            ("bookinfo", "Deployment", "reviews-v1", vec!["reviews-v1-aaa-1", "reviews-v1-bbb-2"]),
            ("bookinfo", "Pod", "debug", vec!["debug"]),
            ("bookinfo", "ReplicaSet", "orphan-rs", vec!["orphan-rs-x"]),
            ("bookinfo", "StatefulSet", "ratings", vec!["ratings-0"]),
        ]
    );
    let reviews = workload(&r, "Deployment", "bookinfo", "reviews-v1");
    assert_eq!(
        reviews.pods[1],
        PodStatus {
            name: "reviews-v1-bbb-2".into(),
            ready: true,
            proxy: Some(ProxyStatus {
                version: Some("1.10.6".into()),
                revision: Some("1-10-6".into()),
                revision_source: Some(RevisionSource::Label),
                native_sidecar: false,
            }),
        }
    );
    assert_eq!(reviews.pods[0].proxy, None);
}

// ---------------------------------------------------------------------------------------------------------
// Gateways
// ---------------------------------------------------------------------------------------------------------

/// The seed's pattern: blue and green legacy gateways in istio-system, each with its ClusterIP Service,
/// and one user-owned LoadBalancer selecting `{istio: ingressgateway, version: <lb_rev>}`.
fn gateways_snapshot(lb_selector: &[(&str, &str)]) -> ClusterSnapshot {
    let blue = legacy_gateway(CP, "istio-ingressgateway-1-9-7", "1-9-7", "1.9.7");
    let green = legacy_gateway(CP, "istio-ingressgateway-1-10-6", "1-10-6", "1.10.6");
    let blue_pod = gateway_pod(
        &blue,
        "istio-ingressgateway-1-9-7-55d9",
        "istio-ingressgateway-1-9-7-55d9-x",
        &proxyv2("1.9.7"),
        "1-9-7",
    );
    let green_pod = gateway_pod(
        &green,
        "istio-ingressgateway-1-10-6-66e1",
        "istio-ingressgateway-1-10-6-66e1-y",
        &proxyv2("1.10.6"),
        "1-10-6",
    );
    ClusterSnapshot {
        namespaces: vec![ns(CP, &[]), ns("bookinfo", &[("istio.io/rev", "1-10-6")])],
        workloads: vec![
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
            blue,
            green,
        ],
        replica_sets: vec![
            rs(CP, "istio-ingressgateway-1-9-7-55d9", "istio-ingressgateway-1-9-7"),
            rs(CP, "istio-ingressgateway-1-10-6-66e1", "istio-ingressgateway-1-10-6"),
        ],
        pods: vec![blue_pod, green_pod],
        services: vec![
            lb_service(CP, "istio-ingressgateway", lb_selector),
            service(
                CP,
                "istio-ingressgateway-1-9-7",
                "ClusterIP",
                &[("istio", "ingressgateway"), ("version", "1-9-7")],
            ),
            service(
                CP,
                "istio-ingressgateway-1-10-6",
                "ClusterIP",
                &[("istio", "ingressgateway"), ("version", "1-10-6")],
            ),
            service(CP, "istiod-1-9-7", "ClusterIP", &[("app", "istiod"), ("istio.io/rev", "1-9-7")]),
            service("bookinfo", "productpage", "ClusterIP", &[("app", "productpage")]),
            // Same selector, other namespace: Services only select pods of their own namespace.
            service("bookinfo", "fake-gateway", "ClusterIP", &[("istio", "ingressgateway")]),
            // An empty selector selects nothing (Endpoints are user-managed).
            service(CP, "manual-endpoints", "ClusterIP", &[]),
        ],
        mutating_webhooks: vec![injector_1_9("1-9-7"), injector_1_10("1-10-6")],
        config_maps: vec![mesh_cm(CP, "1-9-7"), mesh_cm(CP, "1-10-6")],
        ..snapshot()
    }
}

#[test]
fn legacy_gateways_have_explicit_image_version_and_revision() {
    let r = analyze(&gateways_snapshot(&[("istio", "ingressgateway"), ("version", "1-9-7")]));
    assert_eq!(r.gateways.len(), 2, "{:#?}", r.gateways);
    let blue = gateway(&r, "istio-ingressgateway-1-9-7");
    assert_eq!(
        (
            blue.namespace.as_str(),
            blue.injected,
            blue.revision.as_str(),
            blue.version.as_deref(),
            blue.replicas,
            blue.ready_replicas
        ),
        ("istio-system", false, "1-9-7", Some("1.9.7"), 2, 2)
    );
    assert_eq!(blue.pod_labels.get("version").map(String::as_str), Some("1-9-7"));
    let green = gateway(&r, "istio-ingressgateway-1-10-6");
    assert_eq!((green.injected, green.revision.as_str(), green.version.as_deref()), (false, "1-10-6", Some("1.10.6")));
    // Sorted by namespace then name.
    let names: Vec<&str> = r.gateways.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["istio-ingressgateway-1-10-6", "istio-ingressgateway-1-9-7"]);
    // Gateway proxies count as proxies of their revision; opted-out gateway pods are no revision mismatch.
    assert_eq!((revision(&r, "1-9-7").proxies, revision(&r, "1-10-6").proxies), (1, 1));
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn versioned_lb_selector_selects_only_blue() {
    let r = analyze(&gateways_snapshot(&[("istio", "ingressgateway"), ("version", "1-9-7")]));
    let lb = gateway_service(&r, "istio-ingressgateway").expect("lb listed");
    assert_eq!(
        lb,
        &GatewayServiceStatus {
            namespace: "istio-system".into(),
            name: "istio-ingressgateway".into(),
            service_type: "LoadBalancer".into(),
            selector: l(&[("istio", "ingressgateway"), ("version", "1-9-7")]),
            external_traffic_policy: Some("Cluster".into()),
            ingress: vec!["203.0.113.10".into()],
            selects: vec![SelectedGateway { gateway: "istio-ingressgateway-1-9-7".into(), revision: "1-9-7".into() }],
        }
    );
    let names: Vec<&str> = r.gateway_services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["istio-ingressgateway", "istio-ingressgateway-1-10-6", "istio-ingressgateway-1-9-7"]);
    assert_eq!(
        selected(gateway_service(&r, "istio-ingressgateway-1-10-6").unwrap()),
        vec![("istio-ingressgateway-1-10-6", "1-10-6")]
    );
}

#[test]
fn widened_lb_selector_selects_both_colours() {
    let r = analyze(&gateways_snapshot(&[("istio", "ingressgateway")]));
    let lb = gateway_service(&r, "istio-ingressgateway").expect("lb listed");
    assert_eq!(selected(lb), vec![("istio-ingressgateway-1-10-6", "1-10-6"), ("istio-ingressgateway-1-9-7", "1-9-7")]);
}

#[test]
fn lb_switched_to_green_selects_only_green() {
    let r = analyze(&gateways_snapshot(&[("istio", "ingressgateway"), ("version", "1-10-6")]));
    assert_eq!(
        selected(gateway_service(&r, "istio-ingressgateway").unwrap()),
        vec![("istio-ingressgateway-1-10-6", "1-10-6")]
    );
}

#[test]
fn lb_selecting_no_gateway_is_not_listed() {
    let r = analyze(&gateways_snapshot(&[("istio", "ingressgateway"), ("version", "1-11-0")]));
    assert_eq!(gateway_service(&r, "istio-ingressgateway"), None);
    assert_eq!(gateway_service(&r, "fake-gateway"), None);
    assert_eq!(gateway_service(&r, "manual-endpoints"), None);
    assert_eq!(gateway_service(&r, "istiod-1-9-7"), None);
    assert_eq!(r.gateway_services.len(), 2);
}

#[test]
fn injected_gateway_takes_version_and_revision_from_its_pods() {
    let gw = injected_gateway("istio-ingress", "istio-ingressgateway-1-24-6", Some("1-24-6"));
    let unlabelled = injected_gateway("istio-ingress", "istio-ingressgateway-default", None);
    let idle = injected_gateway("istio-ingress", "istio-ingressgateway-1-25-5", Some("1-25-5"));
    let pods = vec![
        gateway_pod(&gw, "gw-1", "gw-1-a", &proxyv2("1.24.6"), "1-24-6"),
        gateway_pod(&gw, "gw-1", "gw-1-b", &proxyv2("1.24.6"), "1-24-6"),
        gateway_pod(&gw, "gw-1", "gw-1-c", &proxyv2("1.24.5"), "1-24-6"),
        gateway_pod(&unlabelled, "gw-2", "gw-2-a", &proxyv2("1.24.6"), "1-24-6"),
    ];
    let r = analyze(&ClusterSnapshot {
        namespaces: vec![ns("istio-ingress", &[])],
        workloads: vec![istiod("1-24-6", "docker.io/istio/pilot:1.24.6"), gw, unlabelled, idle],
        replica_sets: vec![
            rs("istio-ingress", "gw-1", "istio-ingressgateway-1-24-6"),
            rs("istio-ingress", "gw-2", "istio-ingressgateway-default"),
        ],
        pods,
        services: vec![lb_service(
            "istio-ingress",
            "istio-ingressgateway",
            &[("istio", "ingressgateway"), ("version", "1-24-6")],
        )],
        ..snapshot()
    });
    let g = gateway(&r, "istio-ingressgateway-1-24-6");
    assert_eq!((g.injected, g.revision.as_str(), g.version.as_deref()), (true, "1-24-6", Some("1.24.6")));
    let u = gateway(&r, "istio-ingressgateway-default");
    assert_eq!((u.injected, u.revision.as_str(), u.version.as_deref()), (true, "1-24-6", Some("1.24.6")));
    let i = gateway(&r, "istio-ingressgateway-1-25-5");
    assert_eq!((i.injected, i.revision.as_str(), i.version.as_deref()), (true, "1-25-5", None));
    assert_eq!(
        selected(gateway_service(&r, "istio-ingressgateway").unwrap()),
        vec![("istio-ingressgateway-1-24-6", "1-24-6")]
    );
    // Injected gateways read mesh config from istiod: no GATEWAY_LOCAL_MESH_CONFIG.
    assert!(with_code(&r, C::GatewayLocalMeshConfig).is_empty(), "{:#?}", r.findings);
}

#[test]
fn gateway_template_annotation_may_list_several_templates() {
    let mut gw = injected_gateway("istio-ingress", "gw", Some("1-24-6"));
    gw.template.annotations.insert("inject.istio.io/templates".into(), "sidecar, gateway".into());
    let mut not_gw = injected_gateway("istio-ingress", "not-gw", Some("1-24-6"));
    not_gw.template.annotations.insert("inject.istio.io/templates".into(), "sidecar,gateway-custom".into());
    let r = analyze(&ClusterSnapshot { workloads: vec![gw, not_gw], ..snapshot() });
    let names: Vec<(&str, bool)> = r.gateways.iter().map(|g| (g.name.as_str(), g.injected)).collect();
    assert_eq!(names, vec![("gw", true)]);
}

#[test]
fn sidecar_proxies_are_not_gateways() {
    let mut app = app_workload(WorkloadKind::Deployment, "bookinfo", "productpage-v1", 1);
    app.template.containers = vec![
        container("productpage", "docker.io/istio/examples-bookinfo-productpage-v1:1.16.2"),
        proxy_container(&proxyv2("1.9.7")),
    ];
    let r = analyze(&ClusterSnapshot { workloads: vec![app], ..snapshot() });
    assert!(r.gateways.is_empty(), "{:#?}", r.gateways);
}

#[test]
fn gateway_pods_are_matched_by_workload_kind_and_name() {
    // A StatefulSet with the gateway Deployment's name, in the same namespace, is another workload:
    // its pods must not decide the gateway's version or revision.
    let gw = injected_gateway("istio-ingress", "ingress", Some("1-24-6"));
    let mut sts_pod = pod_with_proxy(
        "istio-ingress",
        "ingress-0",
        owner("StatefulSet", "ingress"),
        &proxyv2("1.22.0"),
        Rev::Annotation("1-22-0"),
    );
    sts_pod.spec.labels.insert("app".into(), "other".into());
    let mut sts_pod2 = sts_pod.clone();
    sts_pod2.name = "ingress-1".into();
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("1-24-6", "docker.io/istio/pilot:1.24.6"),
            gw.clone(),
            app_workload(WorkloadKind::StatefulSet, "istio-ingress", "ingress", 2),
        ],
        replica_sets: vec![rs("istio-ingress", "ingress-7c9", "ingress")],
        pods: vec![gateway_pod(&gw, "ingress-7c9", "ingress-7c9-a", &proxyv2("1.24.6"), "1-24-6"), sts_pod, sts_pod2],
        ..snapshot()
    });
    let g = gateway(&r, "ingress");
    assert_eq!((g.revision.as_str(), g.version.as_deref()), ("1-24-6", Some("1.24.6")));
}

#[test]
fn legacy_gateway_outside_the_control_plane_namespace_reads_a_local_mesh_config() {
    let blue = legacy_gateway("istio-gateways", "istio-ingressgateway-1-9-7", "1-9-7", "1.9.7");
    let green = legacy_gateway("istio-gateways", "istio-ingressgateway-1-10-6", "1-10-6", "1.10.6");
    let default_gw = legacy_gateway("edge", "istio-ingressgateway", "default", "1.10.6");
    let in_cp = legacy_gateway(CP, "istio-eastwestgateway", "1-10-6", "1.10.6");
    let injected = injected_gateway("istio-ingress", "istio-ingressgateway-1-24-6", Some("1-10-6"));
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("1-9-7", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
            istiod("default", "docker.io/istio/pilot:1.10.6"),
            blue,
            green,
            default_gw,
            in_cp,
            injected,
        ],
        config_maps: vec![
            mesh_cm(CP, "1-9-7"),
            mesh_cm(CP, "1-10-6"),
            mesh_cm(CP, "default"),
            // Solo's demo: a copy of istio-1-9-7 in the gateways' namespace, none for green.
            mesh_cm("istio-gateways", "1-9-7"),
            // The default revision's mesh config is `istio`.
            mesh_cm("edge", "default"),
        ],
        ..snapshot()
    });
    assert_eq!(
        summary(&r),
        vec![
            (
                C::GatewayLocalMeshConfig,
                Severity::Error,
                "Deployment/istio-gateways/istio-ingressgateway-1-10-6".into()
            ),
            (C::GatewayLocalMeshConfig, Severity::Warning, "Deployment/edge/istio-ingressgateway".into()),
            (
                C::GatewayLocalMeshConfig,
                Severity::Warning,
                "Deployment/istio-gateways/istio-ingressgateway-1-9-7".into()
            ),
        ]
    );
    assert!(
        r.findings[0].message.contains("istio-gateways/istio-1-10-6, which does not exist"),
        "{}",
        r.findings[0].message
    );
    assert!(r.findings[1].message.contains("edge/istio,"), "{}", r.findings[1].message);
}

#[test]
fn gateway_lives_with_its_own_control_plane_namespace() {
    // istiod of revision 1-10-6 runs in istio-green; a legacy gateway there reads its own ConfigMap.
    let mut cp = istiod("1-10-6", "docker.io/istio/pilot:1.10.6");
    cp.namespace = "istio-green".into();
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            cp,
            legacy_gateway("istio-green", "gw", "1-10-6", "1.10.6"),
            legacy_gateway(CP, "gw", "1-10-6", "1.10.6"),
        ],
        ..snapshot()
    });
    // The one in istio-system is now outside its control plane's namespace, and has no ConfigMap.
    assert_eq!(summary(&r), vec![(C::GatewayLocalMeshConfig, Severity::Error, "Deployment/istio-system/gw".into())]);
}

// ---------------------------------------------------------------------------------------------------------
// Read gaps, sorting, determinism
// ---------------------------------------------------------------------------------------------------------

#[test]
fn findings_serialise_with_stable_code_and_severity_spellings() {
    let r = analyze(&ClusterSnapshot {
        workloads: vec![
            istiod("default", "docker.io/istio/pilot:1.9.7"),
            istiod("1-10-6", "docker.io/istio/pilot:1.10.6"),
        ],
        mutating_webhooks: vec![injector_1_9("default"), tag_webhook("default", "1-10-6")],
        namespaces: vec![ns("bookinfo", &[("istio-injection", "enabled")])],
        ..snapshot()
    });
    let json = serde_json::to_value(&r.findings).unwrap();
    assert_eq!(json[0]["code"], "NAMESPACE_MULTIPLE_INJECTORS");
    assert_eq!(json[0]["severity"], "error");
    assert_eq!(json[0]["subject"], "Namespace/bookinfo");
    assert_eq!(json.as_array().map(Vec::len), Some(1));
}

#[test]
fn unreadable_kinds_are_reported() {
    let r = analyze(&ClusterSnapshot {
        unreadable: vec![
            Unreadable {
                resource: "pods".into(),
                reason: "forbidden: User \"ci\" cannot list resource \"pods\"".into(),
            },
            Unreadable { resource: "mutatingwebhookconfigurations".into(), reason: "forbidden".into() },
        ],
        ..snapshot()
    });
    assert_eq!(
        summary(&r),
        vec![
            (C::ReadForbidden, Severity::Warning, "resource/mutatingwebhookconfigurations".into()),
            (C::ReadForbidden, Severity::Warning, "resource/pods".into()),
        ]
    );
    assert!(r.findings[1].message.contains("could not list pods: forbidden: User \"ci\""), "{}", r.findings[1].message);
}

/// A mesh mid-migration with something of everything.
fn migration_snapshot() -> ClusterSnapshot {
    let mut s = gateways_snapshot(&[("istio", "ingressgateway"), ("version", "1-9-7")]);
    s.workloads[1] = ready(istiod("1-10-6", "docker.io/istio/pilot:1.10.6"), 1, 0);
    s.workloads.push(istiod("1-11-0", "docker.io/istio/pilot:latest"));
    s.workloads.push(legacy_gateway("istio-gateways", "istio-ingressgateway-1-9-7", "1-9-7", "1.9.7"));
    s.workloads.push(legacy_gateway("istio-gateways", "istio-ingressgateway-1-10-6", "1-10-6", "1.10.6"));
    s.workloads.push(app_workload(WorkloadKind::Deployment, "bookinfo", "reviews-v1", 2));
    s.config_maps.push(mesh_cm("istio-gateways", "1-9-7"));
    s.namespaces.extend([
        ns("legacy", &[("istio-injection", "enabled")]),
        ns("ghost", &[("istio.io/rev", "1-8-6")]),
        ns("both", &[("istio-injection", "disabled"), ("istio.io/rev", "1-9-7")]),
        ns("tagged", &[("istio.io/rev", "canary")]),
    ]);
    s.mutating_webhooks.push(tag_webhook("canary", "1-12-0"));
    s.mutating_webhooks.push(tag_webhook("default", "1-8-6"));
    s.validating_webhooks.push(validator("istiod-istio-system", "default", "Ignore"));
    s.replica_sets.push(rs("bookinfo", "reviews-v1-abc", "reviews-v1"));
    s.pods.extend([
        pod_with_proxy(
            "bookinfo",
            "reviews-v1-abc-1",
            rs_owner("reviews-v1-abc"),
            &proxyv2("1.9.7"),
            Rev::Label("1-9-7"),
        ),
        pod("bookinfo", "reviews-v1-abc-2", rs_owner("reviews-v1-abc")),
        pod_with_proxy("bookinfo", "old", None, &proxyv2("1.8.6"), Rev::Label("1-8-6")),
        pod_with_proxy("tagged", "t", None, &proxyv2("1.9.7"), Rev::Status("1-9-7")),
    ]);
    s.unreadable = vec![
        Unreadable { resource: "pods".into(), reason: "forbidden in namespace kube-system".into() },
        Unreadable { resource: "pods".into(), reason: "forbidden in namespace default".into() },
        Unreadable { resource: "configmaps".into(), reason: "forbidden".into() },
    ];
    s
}

#[test]
fn findings_are_sorted_worst_first_then_code_then_subject() {
    let r = analyze(&migration_snapshot());
    assert_eq!(
        summary(&r),
        vec![
            (C::ProxyRevisionMissing, Severity::Error, "Pod/bookinfo/old".into()),
            (C::NamespaceRevisionMissing, Severity::Error, "Namespace/ghost".into()),
            (C::TagRevisionMissing, Severity::Error, "MutatingWebhookConfiguration/istio-revision-tag-canary".into()),
            (
                C::DefaultTagRevisionMissing,
                Severity::Error,
                "MutatingWebhookConfiguration/istio-revision-tag-default".into()
            ),
            (
                C::GatewayLocalMeshConfig,
                Severity::Error,
                "Deployment/istio-gateways/istio-ingressgateway-1-10-6".into()
            ),
            (C::ControlPlaneNotReady, Severity::Error, "Deployment/istio-system/istiod-1-10-6".into()),
            (C::NamespaceConflictingLabels, Severity::Warning, "Namespace/both".into()),
            (C::PodRevisionMismatch, Severity::Warning, "Deployment/bookinfo/reviews-v1".into()),
            (C::PodRevisionMismatch, Severity::Warning, "Pod/bookinfo/old".into()),
            (C::PodRevisionMismatch, Severity::Warning, "Pod/tagged/t".into()),
            (C::PodWithoutSidecar, Severity::Warning, "Deployment/bookinfo/reviews-v1".into()),
            (
                C::DefaultValidatorRevisionMissing,
                Severity::Warning,
                "ValidatingWebhookConfiguration/istiod-istio-system".into()
            ),
            (
                C::GatewayLocalMeshConfig,
                Severity::Warning,
                "Deployment/istio-gateways/istio-ingressgateway-1-9-7".into()
            ),
            (C::ControlPlaneVersionUnknown, Severity::Warning, "Deployment/istio-system/istiod-1-11-0".into()),
            (C::ReadForbidden, Severity::Warning, "resource/configmaps".into()),
            (C::ReadForbidden, Severity::Warning, "resource/pods".into()),
            (C::ReadForbidden, Severity::Warning, "resource/pods".into()),
        ]
    );
    // The order is the documented one: severity descending, then code, then subject.
    for w in r.findings.windows(2) {
        let key = |f: &Finding| (std::cmp::Reverse(f.severity), f.code, f.subject.clone());
        assert!(key(&w[0]) <= key(&w[1]), "{:?} before {:?}", w[0], w[1]);
    }
}

#[test]
fn analyze_is_deterministic() {
    let s = migration_snapshot();
    let a = analyze(&s);
    let b = analyze(&s);
    assert_eq!(a, b);
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
}

fn reorder<T: Clone>(v: &mut [T], k: usize) {
    v.reverse();
    if !v.is_empty() {
        let n = k % v.len();
        v.rotate_left(n);
    }
}

#[test]
fn input_order_does_not_change_the_report() {
    let base = migration_snapshot();
    let expected = analyze(&base);
    for k in 0..7 {
        let mut s = base.clone();
        reorder(&mut s.namespaces, k);
        reorder(&mut s.workloads, k + 1);
        reorder(&mut s.replica_sets, k + 2);
        reorder(&mut s.pods, k + 3);
        reorder(&mut s.services, k);
        reorder(&mut s.mutating_webhooks, k + 1);
        reorder(&mut s.validating_webhooks, k);
        reorder(&mut s.config_maps, k + 2);
        reorder(&mut s.unreadable, k + 1);
        let got = analyze(&s);
        assert_eq!(got, expected, "permutation {k}");
        assert_eq!(serde_json::to_string(&got).unwrap(), serde_json::to_string(&expected).unwrap());
    }
}

#[test]
fn identical_findings_are_reported_once() {
    let twice = Unreadable { resource: "pods".into(), reason: "forbidden".into() };
    let r = analyze(&ClusterSnapshot {
        unreadable: vec![twice.clone(), Unreadable { resource: "pods".into(), reason: "timeout".into() }, twice],
        ..snapshot()
    });
    let reasons: Vec<&str> = r.findings.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "could not list pods: forbidden; the report leaves them out",
            "could not list pods: timeout; the report leaves them out",
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_permutation_of_the_input_gives_the_same_report(
        namespaces in Just(migration_snapshot().namespaces).prop_shuffle(),
        workloads in Just(migration_snapshot().workloads).prop_shuffle(),
        replica_sets in Just(migration_snapshot().replica_sets).prop_shuffle(),
        pods in Just(migration_snapshot().pods).prop_shuffle(),
        services in Just(migration_snapshot().services).prop_shuffle(),
        mutating_webhooks in Just(migration_snapshot().mutating_webhooks).prop_shuffle(),
        config_maps in Just(migration_snapshot().config_maps).prop_shuffle(),
        unreadable in Just(migration_snapshot().unreadable).prop_shuffle(),
    ) {
        let base = migration_snapshot();
        let shuffled = ClusterSnapshot {
            namespaces, workloads, replica_sets, pods, services, mutating_webhooks, config_maps, unreadable,
            ..base.clone()
        };
        prop_assert_eq!(analyze(&shuffled), analyze(&base));
    }
}
