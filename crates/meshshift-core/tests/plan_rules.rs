//! The planner over hand-built snapshots: step order, exact changes, assumptions, and every refusal.

use meshshift_core::model::*;
use meshshift_core::plan::{Action, MissedGreen, PlanError, PlanRequest, SwitchStrategy, plan};
use meshshift_core::selector::{LabelSelector, Labels, Operator, Requirement};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn istiod(revision: &str, version: &str) -> Workload {
    let name = if revision == "default" { "istiod".to_owned() } else { format!("istiod-{revision}") };
    Workload {
        kind: WorkloadKind::Deployment,
        namespace: "istio-system".into(),
        name,
        labels: labels(&[("app", "istiod"), ("istio.io/rev", revision)]),
        template: PodTemplate {
            containers: vec![Container {
                name: "discovery".into(),
                image: format!("docker.io/istio/pilot:{version}"),
                ..Container::default()
            }],
            ..PodTemplate::default()
        },
        replicas: 1,
        ready_replicas: 1,
    }
}

fn injector(revision: &str) -> WebhookConfiguration {
    let service = if revision == "default" { "istiod".to_owned() } else { format!("istiod-{revision}") };
    let ns_selector = if revision == "default" {
        LabelSelector::from_labels([("istio-injection", "enabled")])
    } else {
        LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![
                Requirement { key: "istio-injection".into(), operator: Operator::DoesNotExist, values: vec![] },
                Requirement { key: "istio.io/rev".into(), operator: Operator::In, values: vec![revision.into()] },
            ],
        }
    };
    WebhookConfiguration {
        name: if revision == "default" {
            "istio-sidecar-injector".into()
        } else {
            format!("istio-sidecar-injector-{revision}")
        },
        labels: labels(&[("istio.io/rev", revision)]),
        webhooks: vec![Webhook {
            name: "sidecar-injector.istio.io".into(),
            namespace_selector: ns_selector,
            object_selector: LabelSelector::default(),
            service: Some(WebhookService {
                namespace: "istio-system".into(),
                name: service,
                path: Some("/inject".into()),
            }),
            has_ca_bundle: true,
            failure_policy: "Fail".into(),
        }],
    }
}

fn tag(tag: &str, revision: &str) -> WebhookConfiguration {
    let mut w = injector(revision);
    w.name = format!("istio-revision-tag-{tag}");
    w.labels.insert("istio.io/tag".into(), tag.into());
    w.webhooks[0].namespace_selector.match_expressions[1].values = vec![tag.into()];
    w
}

fn gateway(name: &str, revision: &str, version: &str) -> Workload {
    Workload {
        kind: WorkloadKind::Deployment,
        namespace: "istio-ingress".into(),
        name: name.into(),
        labels: labels(&[("istio.io/rev", revision)]),
        template: PodTemplate {
            labels: labels(&[("istio", "ingressgateway"), ("version", revision), ("istio.io/rev", revision)]),
            containers: vec![Container {
                name: "istio-proxy".into(),
                image: format!("docker.io/istio/proxyv2:{version}"),
                args: vec!["proxy".into(), "router".into()],
                ..Container::default()
            }],
            ..PodTemplate::default()
        },
        replicas: 2,
        ready_replicas: 2,
    }
}

fn lb(selector: &[(&str, &str)]) -> Service {
    Service {
        namespace: "istio-ingress".into(),
        name: "ingress".into(),
        service_type: "LoadBalancer".into(),
        selector: labels(selector),
        ports: vec![],
        external_traffic_policy: Some("Cluster".into()),
        load_balancer_ingress: vec![],
    }
}

fn app(ns: &str, name: &str, revision: &str, version: &str) -> (Workload, ReplicaSetLink, Pod) {
    let template = PodTemplate {
        labels: labels(&[("app", name), ("istio.io/rev", revision)]),
        containers: vec![
            Container { name: name.into(), image: "example/app:1".into(), ..Container::default() },
            Container {
                name: "istio-proxy".into(),
                image: format!("docker.io/istio/proxyv2:{version}"),
                ..Container::default()
            },
        ],
        ..PodTemplate::default()
    };
    let w = Workload {
        kind: WorkloadKind::Deployment,
        namespace: ns.into(),
        name: name.into(),
        labels: Labels::new(),
        template: template.clone(),
        replicas: 1,
        ready_replicas: 1,
    };
    let rs = ReplicaSetLink { namespace: ns.into(), name: format!("{name}-abc"), deployment: name.into() };
    let pod = Pod {
        namespace: ns.into(),
        name: format!("{name}-abc-x"),
        owner: Some(Owner { kind: "ReplicaSet".into(), name: format!("{name}-abc") }),
        spec: template,
        phase: "Running".into(),
        ready: true,
        host_network: false,
    };
    (w, rs, pod)
}

/// The seed's mesh: revision 1-9-7, gateway `istio-ingressgateway-1-9-7` behind LB `ingress`
/// (`version: 1-9-7`), bookinfo's productpage in namespace `bookinfo` labelled for 1-9-7.
fn seed() -> ClusterSnapshot {
    let (w, rs, pod) = app("bookinfo", "productpage", "1-9-7", "1.9.7");
    let gw = gateway("istio-ingressgateway-1-9-7", "1-9-7", "1.9.7");
    ClusterSnapshot {
        namespaces: vec![
            Namespace { name: "bookinfo".into(), labels: labels(&[("istio.io/rev", "1-9-7")]) },
            Namespace { name: "istio-ingress".into(), labels: Labels::new() },
            Namespace { name: "istio-system".into(), labels: Labels::new() },
        ],
        workloads: vec![istiod("1-9-7", "1.9.7"), gw, w],
        replica_sets: vec![rs],
        pods: vec![pod],
        services: vec![lb(&[("istio", "ingressgateway"), ("version", "1-9-7")])],
        mutating_webhooks: vec![injector("1-9-7")],
        ..ClusterSnapshot::default()
    }
}

/// The seed with the target revision 1-10-6 installed beside it, green gateway included (pre-staged, or
/// left by an earlier run).
fn seed_with_target() -> ClusterSnapshot {
    let mut s = seed();
    s.workloads.push(istiod("1-10-6", "1.10.6"));
    s.mutating_webhooks.push(injector("1-10-6"));
    s.workloads.push(gateway("istio-ingressgateway-1-10-6", "1-10-6", "1.10.6"));
    s
}

fn to(v: &str) -> PlanRequest {
    PlanRequest::new(v.parse().expect("version"))
}

fn ids(p: &meshshift_core::plan::Plan) -> Vec<&str> {
    p.steps.iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn seed_mesh_plans_the_blue_green_sequence() {
    let p = plan(&seed(), &to("1.10.6")).expect("plan");
    assert_eq!(
        (p.from_revision.as_str(), p.from_version.as_str(), p.to_revision.as_str()),
        ("1-9-7", "1.9.7", "1-10-6")
    );
    assert_eq!(
        ids(&p),
        [
            "01-install-control-plane",
            "02-deploy-gateway-istio-ingressgateway-1-10-6",
            "03-switch-load-balancer",
            "04-retire-blue-istio-ingressgateway-1-9-7",
            "05-migrate-namespace-bookinfo",
            "06-restart-workloads-bookinfo",
            "07-retire-revision-1-9-7",
        ]
    );
    let switch = &p.steps[2];
    assert_eq!(
        switch.action,
        Action::SwitchLoadBalancer {
            service: "Service/istio-ingress/ingress".into(),
            strategy: SwitchStrategy::Switch
        }
    );
    assert_eq!(switch.changes.len(), 1, "only the selector changes");
    assert_eq!(switch.changes[0].field, "spec.selector.version");
    assert_eq!(
        (switch.changes[0].before.as_deref(), switch.changes[0].after.as_deref()),
        (Some("1-9-7"), Some("1-10-6"))
    );
    let ns = &p.steps[4];
    assert_eq!(ns.changes.len(), 1);
    assert_eq!(
        (ns.changes[0].field.as_str(), ns.changes[0].before.as_deref(), ns.changes[0].after.as_deref()),
        ("metadata.labels.istio.io/rev", Some("1-9-7"), Some("1-10-6"))
    );
    assert_eq!(
        p.steps[5].changes.iter().map(|c| c.object.as_str()).collect::<Vec<_>>(),
        ["Deployment/bookinfo/productpage"]
    );
    assert!(p.steps[0].changes.iter().any(|c| c.object == "Deployment/istio-system/istiod-1-10-6"));
    assert!(
        p.steps[0].changes.iter().any(|c| c.object == "MutatingWebhookConfiguration/istio-sidecar-injector-1-10-6")
    );
    let retire: Vec<&str> = p.steps[6].changes.iter().map(|c| c.object.as_str()).collect();
    assert!(
        retire.contains(&"Deployment/istio-system/istiod-1-9-7")
            && retire.contains(&"MutatingWebhookConfiguration/istio-sidecar-injector-1-9-7")
    );
    assert!(retire.contains(&"Deployment/istio-ingress/istio-ingressgateway-1-9-7"));
    assert_eq!(p.assumptions.len(), 3, "LB selector and the namespace's two injection labels: {:?}", p.assumptions);
    assert!(p.steps.iter().all(|s| !s.gates.is_empty() && !s.undo.is_empty()), "every step has gates and an undo");
}

#[test]
fn plans_are_deterministic_and_serialise() {
    let a = plan(&seed(), &to("1.10.6")).expect("plan");
    let b = plan(&seed(), &to("1.10.6")).expect("plan");
    assert_eq!(a, b);
    let json = serde_json::to_string(&a).expect("json");
    let back: meshshift_core::plan::Plan = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, a);
}

#[test]
fn widen_narrow_selects_both_colours_first() {
    let mut req = to("1.10.6");
    req.strategy = SwitchStrategy::WidenNarrow;
    let p = plan(&seed(), &req).expect("plan");
    let changes = &p.steps[2].changes;
    assert_eq!(changes.len(), 2);
    assert_eq!(
        (changes[0].before.as_deref(), changes[0].after.as_deref()),
        (Some("1-9-7"), None),
        "widen: drop the colour key"
    );
    assert_eq!((changes[1].before.as_deref(), changes[1].after.as_deref()), (None, Some("1-10-6")), "narrow to green");
}

#[test]
fn non_revisioned_install_migrates_to_revisions() {
    let mut s = seed();
    s.workloads[0] = istiod("default", "1.9.7");
    s.mutating_webhooks = vec![injector("default")];
    s.namespaces[0].labels = labels(&[("istio-injection", "enabled")]);
    s.workloads[2].template.labels.insert("istio.io/rev".into(), "default".into());
    s.pods[0].spec.labels.insert("istio.io/rev".into(), "default".into());
    s.workloads[1] = gateway("istio-ingressgateway", "default", "1.9.7");
    s.services = vec![lb(&[("istio", "ingressgateway")])];
    let p = plan(&s, &to("1.10.6")).expect("plan");
    assert_eq!(p.from_revision, "default");
    let ns = p.steps.iter().find(|s| s.id.ends_with("migrate-namespace-bookinfo")).expect("migrate");
    assert_eq!(ns.changes[0].field, "metadata.labels.istio-injection");
    assert_eq!(
        (ns.changes[0].before.as_deref(), ns.changes[0].after.as_deref()),
        (Some("enabled"), None),
        "istio-injection removed"
    );
    assert_eq!((ns.changes[1].before.as_deref(), ns.changes[1].after.as_deref()), (None, Some("1-10-6")));
    let switch = p.steps.iter().find(|s| s.id.ends_with("switch-load-balancer")).expect("switch");
    assert_eq!(
        switch.changes[0].field, "spec.selector.istio.io/rev",
        "no colour label: the revision label tells gateways apart"
    );
    assert!(p.steps.iter().any(|s| s.id.ends_with("deploy-gateway-istio-ingressgateway-1-10-6")));
}

#[test]
fn tags_move_instead_of_relabelling() {
    let mut s = seed();
    s.mutating_webhooks.push(tag("prod", "1-9-7"));
    s.namespaces[0].labels = labels(&[("istio.io/rev", "prod")]);
    let p = plan(&s, &to("1.10.6")).expect("plan");
    let ids = ids(&p);
    assert!(ids.iter().any(|i| i.ends_with("move-tag-prod")), "{ids:?}");
    assert!(!ids.iter().any(|i| i.contains("migrate-namespace")), "a tagged namespace keeps its label: {ids:?}");
    assert!(ids.iter().any(|i| i.ends_with("restart-workloads-bookinfo")), "{ids:?}");
    let mv = p.steps.iter().find(|s| s.id.ends_with("move-tag-prod")).expect("move");
    assert_eq!((mv.changes[0].before.as_deref(), mv.changes[0].after.as_deref()), (Some("1-9-7"), Some("1-10-6")));
    assert_eq!(
        (mv.changes[1].before.as_deref(), mv.changes[1].after.as_deref()),
        (Some("istiod-1-9-7"), Some("istiod-1-10-6"))
    );
}

#[test]
fn explicit_namespace_order_is_kept_and_checked() {
    let mut s = seed();
    s.namespaces.push(Namespace { name: "canary".into(), labels: labels(&[("istio.io/rev", "1-9-7")]) });
    let mut req = to("1.10.6");
    req.namespaces = Some(vec!["canary".into(), "bookinfo".into()]);
    let p = plan(&s, &req).expect("plan");
    let migrations: Vec<&str> =
        p.steps.iter().filter(|s| s.id.contains("migrate-namespace")).map(|s| s.id.as_str()).collect();
    assert_eq!(migrations, ["05-migrate-namespace-canary", "07-migrate-namespace-bookinfo"]);
    req.namespaces = Some(vec!["nope".into()]);
    assert_eq!(plan(&s, &req), Err(PlanError::UnknownNamespace("nope".into())));
}

#[test]
fn istio_injection_enabled_moves_with_the_default_tag() {
    let mut s = seed();
    let mut default_tag = tag("default", "1-9-7");
    let mut enabled = injector("default").webhooks[0].clone();
    enabled.service.as_mut().expect("service").name = "istiod-1-9-7".into();
    default_tag.webhooks.push(enabled);
    s.mutating_webhooks.push(default_tag);
    s.namespaces[0].labels = labels(&[("istio-injection", "enabled")]);
    let p = plan(&s, &to("1.10.6")).expect("plan");
    let ids = ids(&p);
    assert!(ids.iter().any(|i| i.ends_with("move-tag-default")), "{ids:?}");
    assert!(!ids.iter().any(|i| i.contains("migrate-namespace")), "{ids:?}");
    assert!(ids.iter().any(|i| i.ends_with("restart-workloads-bookinfo")), "{ids:?}");
}

#[test]
fn a_namespace_selector_picks_the_wave() {
    let mut s = seed();
    s.namespaces.push(Namespace {
        name: "payments".into(),
        labels: labels(&[("istio.io/rev", "1-9-7"), ("team", "payments")]),
    });
    let mut req = to("1.10.6");
    req.namespace_selector = Some("team=payments".into());
    let p = plan(&s, &req).expect("plan");
    let migrations: Vec<&str> =
        p.steps.iter().filter(|s| s.id.contains("migrate-namespace")).map(|s| s.id.as_str()).collect();
    assert_eq!(migrations, ["05-migrate-namespace-payments"], "bookinfo has no team label");
    assert!(!p.steps.iter().any(|s| s.id.contains("retire-revision")), "1-9-7 still serves bookinfo after this wave");
    req.namespace_selector = Some("team!=payments".into());
    let p = plan(&s, &req).expect("plan");
    assert!(p.steps.iter().any(|s| s.id == "05-migrate-namespace-bookinfo"));
    assert!(!p.steps.iter().any(|s| s.id.ends_with("migrate-namespace-payments")));
    req.namespace_selector = Some("=oops".into());
    assert!(matches!(plan(&s, &req), Err(PlanError::NamespaceSelector(_))));
}

#[test]
fn refusals_name_the_problem() {
    assert_eq!(plan(&ClusterSnapshot::default(), &to("1.10.6")), Err(PlanError::NoControlPlane));
    assert!(matches!(plan(&seed(), &to("1.9.7")), Err(PlanError::AlreadyThere(r, v)) if r == "1-9-7" && v == "1.9.7"));
    assert!(matches!(plan(&seed(), &to("1.8.0")), Err(PlanError::Path(_))), "downgrades are refused");
    match plan(&seed(), &to("1.13.0")) {
        Err(e @ PlanError::NeedsHops { .. }) => assert!(e.to_string().contains("--allow-skip"), "{e}"),
        other => panic!("expected NeedsHops, got {other:?}"),
    }
    let mut skip = to("1.13.0");
    skip.allow_skip = true;
    assert_eq!(plan(&seed(), &skip).expect("skip allowed").hops.len(), 1);

    let mut s = seed();
    s.workloads.push(istiod("1-10-6", "1.10.5"));
    assert!(matches!(plan(&s, &to("1.10.6")), Err(PlanError::RevisionTaken { revision, .. }) if revision == "1-10-6"));

    let mut s = seed();
    s.mutating_webhooks.push(tag("1-10-6", "1-9-7"));
    assert!(matches!(plan(&s, &to("1.10.6")), Err(PlanError::RevisionIsTag(_))));

    let mut req = to("1.10.6");
    req.gateway_service = Some("istio-ingress/missing".into());
    assert!(matches!(plan(&seed(), &req), Err(PlanError::GatewayService(m)) if m.contains("does not exist")));
    req.gateway_service = Some("no-slash".into());
    assert!(matches!(plan(&seed(), &req), Err(PlanError::GatewayService(m)) if m.contains("NAMESPACE/NAME")));
    let mut s = seed();
    s.services.push(Service { name: "other".into(), selector: labels(&[("app", "nothing")]), ..lb(&[]) });
    req.gateway_service = Some("istio-ingress/other".into());
    assert!(matches!(plan(&s, &req), Err(PlanError::GatewayService(m)) if m.contains("selects no gateway")));

    let mut s = seed();
    s.workloads.push(istiod("canary", "1.9.7"));
    s.namespaces.push(Namespace { name: "c".into(), labels: labels(&[("istio.io/rev", "canary")]) });
    s.mutating_webhooks.push(injector("canary"));
    assert!(matches!(plan(&s, &to("1.10.6")), Err(PlanError::AmbiguousSource(_))));
    let mut req = to("1.10.6");
    req.from = Some("canary".into());
    assert_eq!(plan(&s, &req).expect("with --from").from_revision, "canary");
    req.from = Some("nope".into());
    assert_eq!(plan(&s, &req), Err(PlanError::UnknownSource("nope".into())));
}

#[test]
fn no_load_balancer_means_no_gateway_steps() {
    let mut s = seed();
    s.services.clear();
    let p = plan(&s, &to("1.10.6")).expect("plan");
    assert!(
        p.steps.iter().all(|s| !matches!(s.action, Action::DeployGateway { .. } | Action::SwitchLoadBalancer { .. }))
    );
}

/// The seed plus an installed `canary` revision (same version) with its own gateway beside blue's.
fn seed_with_canary_gateway() -> ClusterSnapshot {
    let mut s = seed();
    s.workloads.push(istiod("canary", "1.9.7"));
    s.workloads.push(gateway("istio-ingressgateway-canary", "canary", "1.9.7"));
    s.mutating_webhooks.push(injector("canary"));
    s
}

fn via(service: &str, version: &str) -> PlanRequest {
    let mut req = to(version);
    req.gateway_service = Some(service.into());
    req
}

/// `--gateway-service` names a LoadBalancer in front of another revision's gateways: the blue gateways are
/// the ones it selects, and they are not the source's, so there is no green to switch to. Refused, naming
/// the LoadBalancer, the revision it serves and `--from`; never planned as a switch to a colour no gateway
/// has.
#[test]
fn a_load_balancer_in_front_of_another_revision_is_refused() {
    let mut s = seed_with_canary_gateway();
    s.services = vec![lb(&[("istio", "ingressgateway"), ("version", "canary")])];
    let err = plan(&s, &via("istio-ingress/ingress", "1.10.6")).expect_err("refused");
    assert_eq!(
        err,
        PlanError::LoadBalancerNotOnSource {
            service: "istio-ingress/ingress".into(),
            from: "1-9-7".into(),
            to: "1-10-6".into(),
            serves: vec!["canary".into()],
        }
    );
    let message = err.to_string();
    for part in ["Service istio-ingress/ingress", "revision canary", "not of 1-9-7", "--from canary"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    // Without --gateway-service no LoadBalancer is in front of 1-9-7's gateways: no gateway steps at all.
    let p = plan(&s, &to("1.10.6")).expect("plan");
    assert!(
        !p.steps.iter().any(|s| matches!(s.action, Action::DeployGateway { .. } | Action::SwitchLoadBalancer { .. }))
    );
    // Upgrading the revision it does serve plans the switch, with a green cloned from canary's gateway.
    let mut req = via("istio-ingress/ingress", "1.10.6");
    req.from = Some("canary".into());
    req.revision = Some(meshshift_core::version::Revision::parse("canary-next").expect("revision"));
    let p = plan(&s, &req).expect("plan from canary");
    assert_eq!(
        &ids(&p)[..3],
        ["01-install-control-plane", "02-deploy-gateway-istio-ingressgateway-canary-next", "03-switch-load-balancer"]
    );
}

/// A LoadBalancer selecting the source's gateways and another revision's: switching it would quietly take
/// the other revision's gateways out of service. Refused, with or without --gateway-service. Selecting the
/// source's and the target's (a green deployed and widened to by hand) is planned: the selector is pinned
/// to blue while green is re-deployed and proven, then switched to green.
#[test]
fn a_load_balancer_selecting_several_revisions_is_refused_unless_the_other_is_the_target() {
    let mut s = seed_with_canary_gateway();
    s.services = vec![lb(&[("istio", "ingressgateway")])];
    for req in [to("1.10.6"), via("istio-ingress/ingress", "1.10.6")] {
        let err = plan(&s, &req).expect_err("refused");
        assert!(
            matches!(&err, PlanError::LoadBalancerNotOnSource { serves, .. } if serves == &["1-9-7", "canary"]),
            "{err:?}"
        );
        assert!(err.to_string().contains("besides those of 1-9-7"), "{err}");
    }

    let mut s = seed_with_target();
    s.services = vec![lb(&[("istio", "ingressgateway")])];
    let p = plan(&s, &to("1.10.6")).expect("widened by hand: plan the narrowing");
    let pin = p.steps.iter().find(|s| s.id.ends_with("pin-load-balancer")).expect("pin");
    assert_eq!(pin.changes[0].field, "spec.selector.istio.io/rev");
    assert_eq!((pin.changes[0].before.as_deref(), pin.changes[0].after.as_deref()), (None, Some("1-9-7")));
    let switch = p.steps.iter().find(|s| s.id.ends_with("switch-load-balancer")).expect("switch");
    assert_eq!(switch.changes[0].field, "spec.selector.istio.io/rev");
    assert_eq!(
        (switch.changes[0].before.as_deref(), switch.changes[0].after.as_deref()),
        (Some("1-9-7"), Some("1-10-6"))
    );
    assert_eq!(p.assumptions.iter().find(|a| a.field == "spec.selector.istio.io/rev").map(|a| &a.value), Some(&None));

    // Already switched by hand: the LoadBalancer selects only the target's gateway.
    s.services = vec![lb(&[("istio", "ingressgateway"), ("version", "1-10-6")])];
    let err = plan(&s, &via("istio-ingress/ingress", "1.10.6")).expect_err("refused");
    assert!(err.to_string().contains("already selects gateways of 1-10-6"), "{err}");
}

/// Blue is selected by a colour label that does not name its revision (`version: v1`): green (blue with its
/// revision labels moved) keeps `version: v1`, so switching the selector to `version: 1-10-6` would select
/// no gateway. Refused, naming the selector entry green would not match.
#[test]
fn a_switch_that_would_select_no_green_is_refused() {
    let mut s = seed();
    s.workloads[1].template.labels.insert("version".into(), "v1".into());
    s.services = vec![lb(&[("istio", "ingressgateway"), ("version", "v1")])];
    let err = plan(&s, &to("1.10.6")).expect_err("refused");
    assert_eq!(
        err,
        PlanError::SwitchMissesGreen(Box::new(MissedGreen {
            service: "istio-ingress/ingress".into(),
            field: "spec.selector.version".into(),
            from: "1-9-7".into(),
            to: "1-10-6".into(),
            blue: "istio-ingressgateway-1-9-7".into(),
            green: "istio-ingressgateway-1-10-6".into(),
            mismatched: vec!["version=1-10-6 but green has version=v1".into()],
        }))
    );
    assert_eq!(
        err.to_string(),
        "switching Service istio-ingress/ingress to version=1-10-6 would select no green gateway: green \
         istio-ingressgateway-1-10-6 (a copy of istio-ingressgateway-1-9-7 with its revision labels moved from 1-9-7 \
         to 1-10-6) would not match it: version=1-10-6 but green has version=v1. Have the LoadBalancer select \
         istio-ingressgateway-1-9-7 by version=1-9-7 and labels green keeps, or switch it by hand"
    );

    // A selector pinned to another revision label of blue's (here the canonical revision) is caught too.
    let mut s = seed();
    s.workloads[1].template.labels.insert("service.istio.io/canonical-revision".into(), "1-9-7".into());
    s.services = vec![lb(&[
        ("istio", "ingressgateway"),
        ("version", "1-9-7"),
        ("service.istio.io/canonical-revision", "1-9-7"),
    ])];
    let err = plan(&s, &to("1.10.6")).expect_err("refused");
    assert!(
        matches!(&err, PlanError::SwitchMissesGreen(m)
            if m.mismatched == ["service.istio.io/canonical-revision=1-9-7 but green has service.istio.io/canonical-revision=1-10-6"]),
        "{err:?}"
    );
}

/// The target revision and its green gateway Deployment exist already (pre-staged): deploy-gateway is kept
/// (its gates prove green serves before the switch) but records the Deployment as existing and replaced,
/// not created, and its undo restores it instead of deleting it. The missing green Service is created.
#[test]
fn an_existing_green_gateway_is_replaced_not_created() {
    let s = seed_with_target();
    let p = plan(&s, &to("1.10.6")).expect("plan");
    assert_eq!(ids(&p)[..2], ["01-deploy-gateway-istio-ingressgateway-1-10-6", "02-switch-load-balancer"]);
    let deploy = &p.steps[0];
    let changes: Vec<(&str, Option<&str>, Option<&str>)> =
        deploy.changes.iter().map(|c| (c.object.as_str(), c.before.as_deref(), c.after.as_deref())).collect();
    assert_eq!(
        changes,
        [
            ("Deployment/istio-ingress/istio-ingressgateway-1-10-6", Some("exists"), Some("replaced")),
            ("Service/istio-ingress/istio-ingressgateway-1-10-6", None, Some("created")),
        ]
    );
    assert_eq!(deploy.undo, "delete the green Service; restore the green Deployment as it was before the step");
    assert!(deploy.gates.iter().any(|g| g.contains("real requests")), "green still proves it serves");
    assert_eq!(p.assumptions.len(), 3, "no assumption about green: {:?}", p.assumptions);

    // Without green, the step creates both and undo deletes both, as before.
    let p = plan(&seed(), &to("1.10.6")).expect("plan");
    let deploy = p.steps.iter().find(|s| s.id.ends_with("deploy-gateway-istio-ingressgateway-1-10-6")).expect("deploy");
    assert!(deploy.changes.iter().all(|c| c.before.is_none() && c.after.as_deref() == Some("created")));
    assert_eq!(deploy.undo, "delete the green Deployment and Service");
}

/// `--namespaces bookinfo,bookinfo` is refused (a repeat would be relabelled and restarted twice, the second
/// time from stale before-values); an unknown namespace in the same list is reported first.
#[test]
fn repeated_namespaces_are_refused() {
    let mut req = to("1.10.6");
    req.namespaces = Some(vec!["bookinfo".into(), "istio-system".into(), "bookinfo".into()]);
    let err = plan(&seed(), &req).expect_err("refused");
    assert_eq!(err, PlanError::DuplicateNamespace("bookinfo".into()));
    assert_eq!(err.to_string(), "--namespaces lists bookinfo more than once; list each namespace once");
    req.namespaces = Some(vec!["bookinfo".into(), "bookinfo".into(), "nope".into()]);
    assert_eq!(plan(&seed(), &req), Err(PlanError::UnknownNamespace("nope".into())));
}

/// A namespace injected through a tag of the source and listed in --namespaces is relabelled and restarted
/// once, not restarted again as a tag namespace.
#[test]
fn a_listed_tag_namespace_restarts_once() {
    let mut s = seed();
    s.mutating_webhooks.push(tag("prod", "1-9-7"));
    s.namespaces[0].labels = labels(&[("istio.io/rev", "prod")]);
    let mut req = to("1.10.6");
    req.namespaces = Some(vec!["bookinfo".into()]);
    let p = plan(&s, &req).expect("plan");
    assert_eq!(
        ids(&p)[4..],
        [
            "05-move-tag-prod",
            "06-migrate-namespace-bookinfo",
            "07-restart-workloads-bookinfo",
            "08-retire-revision-1-9-7"
        ]
    );
}

/// An absurd target is refused before any hop is listed, with or without --allow-skip; a long but plausible
/// one lists its first hops and the count, not every hop.
#[test]
fn absurd_targets_are_refused_and_hop_lists_stay_short() {
    use meshshift_core::path::PathError;
    for skip in [false, true] {
        let mut req = to("1.4294967295.0");
        req.allow_skip = skip;
        let err = plan(&seed(), &req).expect_err("refused");
        assert!(matches!(err, PlanError::Path(PathError::TooFar { minors: 4_294_967_286, .. })), "{err:?}");
        assert!(err.to_string().contains("check the target version"), "{err}");
    }
    let err = plan(&seed(), &to("1.30.0")).expect_err("needs hops");
    assert!(matches!(&err, PlanError::NeedsHops { hops, .. } if hops.len() == 11), "{err:?}");
    assert_eq!(
        err.to_string(),
        "1.9.7 -> 1.30.0 needs 11 hops (1.9.7 -> 1.11, 1.11 -> 1.13, 1.13 -> 1.15, ... 11 in all); upgrade hop by hop or pass --allow-skip"
    );
    assert_eq!(
        plan(&seed(), &to("1.13.0")).expect_err("needs hops").to_string(),
        "1.9.7 -> 1.13.0 needs 2 hops (1.9.7 -> 1.11, 1.11 -> 1.13.0); upgrade hop by hop or pass --allow-skip"
    );
}

/// `--tag canary` moves that tag alone, in a canary order (one tag per run): its namespaces restart, the
/// `prod` tag and its namespace stay on the source, no namespace pinned to the source is relabelled, and
/// the source is not retired while a tag still points at it. A tag the source does not have is refused,
/// naming the ones it has.
#[test]
fn tag_moves_only_the_named_tags() {
    let mut s = seed();
    s.mutating_webhooks.push(tag("prod", "1-9-7"));
    s.mutating_webhooks.push(tag("canary", "1-9-7"));
    s.namespaces[0].labels = labels(&[("istio.io/rev", "prod")]);
    s.namespaces.push(Namespace { name: "ratings".into(), labels: labels(&[("istio.io/rev", "canary")]) });
    s.namespaces.push(Namespace { name: "pinned".into(), labels: labels(&[("istio.io/rev", "1-9-7")]) });
    for (ns, name) in [("ratings", "ratings"), ("pinned", "legacy")] {
        let (w, rs, pod) = app(ns, name, "1-9-7", "1.9.7");
        s.workloads.push(w);
        s.replica_sets.push(rs);
        s.pods.push(pod);
    }
    let mut req = to("1.10.6");
    req.tags = Some(vec!["canary".into()]);
    let p = plan(&s, &req).expect("plan");
    let ids = ids(&p);
    assert!(ids.iter().any(|i| i.ends_with("move-tag-canary")), "{ids:?}");
    assert!(ids.iter().any(|i| i.ends_with("restart-workloads-ratings")), "{ids:?}");
    for absent in ["move-tag-prod", "restart-workloads-bookinfo", "migrate-namespace", "restart-workloads-pinned"] {
        assert!(!ids.iter().any(|i| i.contains(absent)), "{absent} planned: {ids:?}");
    }
    assert!(!ids.iter().any(|i| i.contains("retire-revision")), "prod still points at 1-9-7: {ids:?}");

    // With every tag named and the pinned namespace listed, the source is retired.
    req.tags = Some(vec!["prod".into(), "canary".into()]);
    req.namespaces = Some(vec!["pinned".into()]);
    let ids_all: Vec<String> = plan(&s, &req).expect("plan").steps.iter().map(|s| s.id.clone()).collect();
    assert!(ids_all.iter().any(|i| i.ends_with("retire-revision-1-9-7")), "{ids_all:?}");

    req.tags = Some(vec!["nope".into()]);
    let err = plan(&s, &req).expect_err("unknown tag");
    assert!(matches!(&err, PlanError::UnknownTag { tag, .. } if tag == "nope"), "{err:?}");
    assert_eq!(err.to_string(), "--tag nope: 1-9-7 has no such revision tag (its tags: canary, prod)");
}

/// The second run of a `--tag` upgrade: the LoadBalancer was switched to green and blue scaled to zero by
/// the first. No gateway steps are planned (the LoadBalancer serves the target already), and retiring the
/// source deletes the parked blue gateway with it (it cannot serve without the source's istiod), but
/// never the user's LoadBalancer.
#[test]
fn retiring_the_source_deletes_its_parked_gateways() {
    let mut s = seed_with_target();
    let blue = s.workloads.iter_mut().find(|w| w.name == "istio-ingressgateway-1-9-7").expect("blue");
    blue.replicas = 0;
    blue.ready_replicas = 0;
    s.services = vec![lb(&[("istio", "ingressgateway"), ("version", "1-10-6")])];
    let mut req = to("1.10.6");
    req.from = Some("1-9-7".into());
    let p = plan(&s, &req).expect("plan");
    let ids = ids(&p);
    assert!(!ids.iter().any(|i| i.contains("gateway") || i.contains("load-balancer")), "{ids:?}");
    let retire = p.steps.last().expect("steps");
    assert_eq!(retire.id, format!("{:02}-retire-revision-1-9-7", p.steps.len()));
    let deleted: Vec<&str> = retire.changes.iter().filter(|c| c.after.is_none()).map(|c| c.object.as_str()).collect();
    assert!(deleted.contains(&"Deployment/istio-ingress/istio-ingressgateway-1-9-7"), "{deleted:?}");
    assert!(!deleted.iter().any(|o| o.starts_with("Service/istio-ingress/")), "{deleted:?}");
    assert!(!deleted.contains(&"Deployment/istio-ingress/istio-ingressgateway-1-10-6"), "{deleted:?}");
}
