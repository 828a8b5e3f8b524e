//! Building the steps of a plan from its subject.

use crate::green::mesh_config_name;
use crate::model::{ClusterSnapshot, WorkloadKind};
use crate::render::{ControlPlaneSpec, control_plane, istiod_name, operator};
use crate::selector::Labels;
use crate::status::gateways::GatewayStatus;
use crate::status::workloads::pod_workload;
use crate::version::Revision;

use super::subject::Subject;
use super::{Action, Assumption, Change, Installer, PlanRequest, Step, SwitchStrategy};

/// The label that tells gateway colours apart in the seed's layout; `istio.io/rev` otherwise.
const COLOUR_LABEL: &str = "version";

fn object_of(doc: &serde_json::Value) -> String {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

fn created(object: String) -> Change {
    Change { object, field: "object".into(), before: None, after: Some("created".into()) }
}

/// An existing object overwritten whole (a green gateway that was already deployed).
fn replaced(object: String) -> Change {
    Change { object, field: "object".into(), before: Some("exists".into()), after: Some("replaced".into()) }
}

fn deleted(object: String) -> Change {
    Change { object, field: "object".into(), before: Some("exists".into()), after: None }
}

fn set(object: &str, field: &str, before: Option<&String>, after: Option<&str>) -> Change {
    Change {
        object: object.to_owned(),
        field: field.to_owned(),
        before: before.cloned(),
        after: after.map(str::to_owned),
    }
}

/// The green gateway's name: blue's with the revision replaced, else blue's plus the target revision.
pub(super) fn green_name(blue: &str, from: &str, to: &str) -> String {
    if blue.contains(from) && from != "default" { blue.replace(from, to) } else { format!("{blue}-{to}") }
}

/// The LoadBalancer selector key the switch moves from the source revision to the target.
pub(super) fn colour_key(selector: &Labels) -> &'static str {
    if selector.contains_key(COLOUR_LABEL) { COLOUR_LABEL } else { "istio.io/rev" }
}

/// The value of `key` on every blue gateway's pods, when they all carry the same one.
fn blue_colour(blues: &[GatewayStatus], key: &str) -> Option<String> {
    let first = blues.first()?.pod_labels.get(key)?;
    blues.iter().all(|b| b.pod_labels.get(key) == Some(first)).then(|| first.clone())
}

/// `-<rev>`, or nothing for the default revision (Istio's object-name convention).
fn suffix(revision: &str) -> String {
    if revision == "default" { String::new() } else { format!("-{revision}") }
}

/// Builds the steps (numbered in order) and the assumptions they rest on.
pub fn build(snapshot: &ClusterSnapshot, s: &Subject, request: &PlanRequest) -> (Vec<Step>, Vec<Assumption>) {
    let mut steps: Vec<(String, Step)> = Vec::new();
    let mut assumptions = Vec::new();
    let from = s.from_revision.as_str();
    let to = s.to_revision.as_str();
    let mut push =
        |slug: String, action: Action, changes: Vec<Change>, pre: Vec<String>, gates: Vec<String>, undo: String| {
            steps.push((slug, Step { id: String::new(), action, changes, preconditions: pre, gates, undo }));
        };

    // 1. The target control plane beside the source.
    if !s.report.revisions.iter().any(|r| r.revision == to) {
        let spec = ControlPlaneSpec {
            version: request.to.clone(),
            revision: s.to_revision.clone(),
            namespace: s.control_plane_namespace.clone(),
            hub: crate::render::DEFAULT_HUB.to_owned(),
        };
        let ns = &s.control_plane_namespace;
        let changes = match request.installer {
            Installer::Manifests => control_plane(&spec).iter().map(|d| created(object_of(d))).collect(),
            Installer::Operator => {
                operator(&request.to, &s.to_revision, ns).iter().map(|d| created(object_of(d))).collect()
            }
            Installer::Helm => vec![created(format!("HelmRelease/{ns}/{}", istiod_name(&s.to_revision)))],
            Installer::Istioctl => vec![created(format!("IstioctlInstall/{ns}/{}", istiod_name(&s.to_revision)))],
        };
        push(
            "install-control-plane".into(),
            Action::InstallControlPlane {
                revision: to.to_owned(),
                version: request.to.to_string(),
                installer: request.installer,
                chart: request.helm_chart.clone().filter(|_| request.installer == Installer::Helm),
            },
            changes,
            vec![format!("revision {to} is not installed")],
            vec![
                format!("istiod {} is ready", istiod_name(&s.to_revision)),
                format!(
                    "its injector webhook has a caBundle and a server-side dry-run pod in a namespace labelled istio.io/rev={to} comes back injected by {to}"
                ),
                format!("revisions {from} and {to} share the root CA"),
            ],
            "delete the created objects".into(),
        );
    }

    // 2-4. Green gateways, the switch, blue's retirement.
    if let Some(lb) = &s.load_balancer {
        let lb_object = format!("Service/{}/{}", lb.namespace, lb.name);
        let key = colour_key(&lb.selector);
        let field = format!("spec.selector.{key}");
        let original = lb.selector.get(key);
        assumptions.push(Assumption { object: lb_object.clone(), field: field.clone(), value: original.cloned() });
        // A selector without the colour key (a gateway chart's own LoadBalancer) would select green's pods
        // as soon as they are Ready, before green's gates prove it serves: pin it to blue first. Without a
        // colour all blue gateways share, it cannot be pinned and green joins on readiness.
        let pin = if original.is_none() { blue_colour(&s.blue_gateways, key) } else { None };
        if let Some(value) = &pin {
            push(
                "pin-load-balancer".into(),
                Action::PinLoadBalancer { service: lb_object.clone(), key: key.to_owned(), value: value.clone() },
                vec![set(&lb_object, &field, None, Some(value))],
                vec![
                    format!("{lb_object} still has no {field} (guarded by resourceVersion)"),
                    format!("every blue gateway's pods carry {key}={value}"),
                ],
                vec![format!("the Endpoints of {lb_object} list only blue pods")],
                format!("remove {field}"),
            );
        }
        let before = original.or(pin.as_ref());
        for blue in &s.blue_gateways {
            let green = green_name(&blue.name, from, to);
            let ns = blue.namespace.as_str();
            // A green that exists already (pre-staged, or left by an earlier run) is not created: the step
            // replaces it with blue re-targeted (the executor journals the live object first, and undo puts it
            // back rather than deleting it). The step is kept, not skipped, for its gates: green must be
            // proven to serve what blue serves before the switch, whoever deployed it.
            let deployment_exists = snapshot
                .workloads
                .iter()
                .any(|w| w.kind == WorkloadKind::Deployment && w.namespace == ns && w.name == green);
            let service_exists = snapshot.services.iter().any(|svc| svc.namespace == ns && svc.name == green);
            let green_object = |kind: &str, exists: bool| {
                let object = format!("{kind}/{ns}/{green}");
                if exists { replaced(object) } else { created(object) }
            };
            let undo = match (deployment_exists, service_exists) {
                (false, false) => "delete the green Deployment and Service".to_owned(),
                (true, true) => "restore the green Deployment and Service as they were before the step".to_owned(),
                (true, false) => {
                    "delete the green Service; restore the green Deployment as it was before the step".to_owned()
                }
                (false, true) => {
                    "delete the green Deployment; restore the green Service as it was before the step".to_owned()
                }
            };
            push(
                format!("deploy-gateway-{green}"),
                Action::DeployGateway { namespace: ns.to_owned(), name: green.clone(), blue: blue.name.clone() },
                vec![green_object("Deployment", deployment_exists), green_object("Service", service_exists)],
                vec![format!("revision {to} is ready")],
                vec![
                    format!("{green} is ready"),
                    format!(
                        "real requests through Service {}/{green} succeed for every host and port {} serves",
                        blue.namespace, lb_object
                    ),
                ],
                undo,
            );
        }
        let changes = match request.strategy {
            SwitchStrategy::Switch => vec![set(&lb_object, &field, before, Some(to))],
            SwitchStrategy::WidenNarrow => {
                vec![set(&lb_object, &field, before, None), set(&lb_object, &field, None, Some(to))]
            }
        };
        push(
            "switch-load-balancer".into(),
            Action::SwitchLoadBalancer { service: lb_object.clone(), strategy: request.strategy },
            changes,
            vec![
                format!(
                    "{lb_object} still has {field}={} (guarded by resourceVersion)",
                    before.map(String::as_str).unwrap_or("<absent>")
                ),
                "every green gateway serves".into(),
            ],
            vec![format!("the Endpoints of {lb_object} list only green pods"), "the traffic gates hold".into()],
            format!("restore {field}={}", before.map(String::as_str).unwrap_or("<absent>")),
        );
        for blue in &s.blue_gateways {
            let object = format!("Deployment/{}/{}", blue.namespace, blue.name);
            let replicas = blue.replicas.to_string();
            push(
                format!("retire-blue-{}", blue.name),
                Action::RetireBlueGateway { deployment: object.clone(), soak_seconds: request.soak_seconds },
                vec![set(&object, "spec.replicas", Some(&replicas), Some("0"))],
                vec![format!("{} s passed since the switch with the traffic gates holding", request.soak_seconds)],
                vec!["blue's pods drained (no active connections) and are gone".into()],
                format!("scale {object} back to {replicas}"),
            );
        }
    }

    // 5. Tags move (instead of relabelling their namespaces).
    for tag in &s.tags {
        let object = format!("MutatingWebhookConfiguration/istio-revision-tag-{tag}");
        let from_service = istiod_name(&Revision::parse(from).unwrap_or_else(|_| Revision::default_revision()));
        let from_label = from.to_owned();
        assumptions.push(Assumption {
            object: object.clone(),
            field: "metadata.labels.istio.io/rev".into(),
            value: Some(from_label.clone()),
        });
        push(
            format!("move-tag-{tag}"),
            Action::MoveTag { tag: tag.clone() },
            vec![
                set(&object, "metadata.labels.istio.io/rev", Some(&from_label), Some(to)),
                set(
                    &object,
                    "webhooks[*].clientConfig.service.name",
                    Some(&from_service),
                    Some(&istiod_name(&s.to_revision)),
                ),
            ],
            vec![format!("revision {to} is ready")],
            vec![format!("a dry-run pod in a namespace labelled istio.io/rev={tag} is injected by {to}")],
            format!("point tag {tag} back at {from}"),
        );
    }

    // 6. Namespaces in waves: relabel, then restart their workloads. Tag namespaces only restart.
    let restart = |ns: &str| -> Vec<Change> {
        let mut names: Vec<(String, String)> = snapshot
            .pods
            .iter()
            .filter(|p| p.namespace == ns && crate::proxy::detect_proxy(&p.spec).is_some())
            .map(|p| pod_workload(snapshot, p))
            .filter(|(kind, _)| matches!(kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet"))
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|(kind, name)| Change {
                object: format!("{kind}/{ns}/{name}"),
                field: "spec.template.metadata.annotations.kubectl.kubernetes.io/restartedAt".into(),
                before: None,
                after: Some("<time of the restart>".into()),
            })
            .collect()
    };
    let restart_step = |ns: &str| {
        (
            format!("restart-workloads-{ns}"),
            Action::RestartWorkloads { namespace: ns.to_owned() },
            restart(ns),
            vec!["PodDisruptionBudgets allow the restart".to_owned()],
            vec![
                format!("every restarted workload in {ns} completes its rollout (kubectl rollout-status rule)"),
                format!("every pod in {ns} runs proxy {} from revision {to}", request.to),
            ],
        )
    };
    for ns in &s.namespaces {
        let object = format!("Namespace/{ns}");
        let labels = snapshot.namespaces.iter().find(|n| &n.name == ns).map(|n| n.labels.clone()).unwrap_or_default();
        let injection = labels.get("istio-injection");
        let rev = labels.get("istio.io/rev");
        assumptions.push(Assumption {
            object: object.clone(),
            field: "metadata.labels.istio-injection".into(),
            value: injection.cloned(),
        });
        assumptions.push(Assumption {
            object: object.clone(),
            field: "metadata.labels.istio.io/rev".into(),
            value: rev.cloned(),
        });
        let mut changes = Vec::new();
        if injection.is_some() {
            changes.push(set(&object, "metadata.labels.istio-injection", injection, None));
        }
        changes.push(set(&object, "metadata.labels.istio.io/rev", rev, Some(to)));
        push(
            format!("migrate-namespace-{ns}"),
            Action::MigrateNamespace { namespace: ns.clone() },
            changes,
            vec![
                format!("revision {to} is ready"),
                format!("a dry-run pod in {ns} would be injected by {to} after the change"),
            ],
            vec![format!("new pods in {ns} are injected by {to}")],
            "restore the namespace's labels".into(),
        );
        let (slug, action, changes, pre, gates) = restart_step(ns);
        push(slug, action, changes, pre, gates, "relabel back, then restart again".into());
    }
    for ns in &s.tag_namespaces {
        let (slug, action, changes, pre, gates) = restart_step(ns);
        push(slug, action, changes, pre, gates, "move the tag back, then restart again".into());
    }

    // 7. Retire the source revision, once this plan moves every namespace it injects and every tag pointing
    // at it (a partial wave, or `--tag` naming some tags, leaves it serving the rest).
    let moves_all = s.tags_left.is_empty()
        && s.report
            .namespaces
            .iter()
            .filter(|n| n.injected_by.as_deref() == Some(from))
            .all(|n| s.namespaces.contains(&n.name) || s.tag_namespaces.contains(&n.name));
    if moves_all {
        let from_rev = Revision::parse(from).unwrap_or_else(|_| Revision::default_revision());
        let mut retire: Vec<Change> = s
            .report
            .revisions
            .iter()
            .filter(|r| r.revision == from)
            .flat_map(|r| {
                let mut v = vec![
                    deleted(format!("Deployment/{}/{}", r.namespace, r.deployment)),
                    deleted(format!("Service/{}/{}", r.namespace, istiod_name(&from_rev))),
                ];
                for cm in [mesh_config_name(from), format!("{}-sidecar-injector{}", "istio", suffix(from))] {
                    if snapshot.config_maps.iter().any(|c| c.namespace == r.namespace && c.name == cm) {
                        v.push(deleted(format!("ConfigMap/{}/{cm}", r.namespace)));
                    }
                }
                v.extend(r.injector_webhooks.iter().map(|w| deleted(format!("MutatingWebhookConfiguration/{w}"))));
                v
            })
            .collect();
        let lb_name = s.load_balancer.as_ref().map(|lb| (lb.namespace.as_str(), lb.name.as_str()));
        for blue in &s.blue_gateways {
            retire.push(deleted(format!("Deployment/{}/{}", blue.namespace, blue.name)));
            let own_service =
                snapshot.services.iter().any(|svc| svc.namespace == blue.namespace && svc.name == blue.name);
            if own_service && lb_name != Some((blue.namespace.as_str(), blue.name.as_str())) {
                retire.push(deleted(format!("Service/{}/{}", blue.namespace, blue.name)));
            }
            let copy = mesh_config_name(from);
            if blue.namespace != s.control_plane_namespace
                && snapshot.config_maps.iter().any(|c| c.namespace == blue.namespace && c.name == copy)
            {
                retire.push(deleted(format!("ConfigMap/{}/{copy}", blue.namespace)));
            }
        }
        // Gateways of the source already scaled to zero and behind no LoadBalancer of this plan: a blue an
        // earlier run retired (`--tag` upgrades take several runs) or one parked by hand. They cannot serve
        // once the source's istiod is gone. Their own ClusterIP Service goes with them; a LoadBalancer is
        // the user's and is never deleted.
        let parked = s.report.gateways.iter().filter(|g| {
            g.revision == from
                && g.replicas == 0
                && !s.blue_gateways.iter().any(|b| b.namespace == g.namespace && b.name == g.name)
        });
        for g in parked {
            retire.push(deleted(format!("Deployment/{}/{}", g.namespace, g.name)));
            if snapshot
                .services
                .iter()
                .any(|svc| svc.namespace == g.namespace && svc.name == g.name && svc.service_type != "LoadBalancer")
            {
                retire.push(deleted(format!("Service/{}/{}", g.namespace, g.name)));
            }
        }
        push(
            format!("retire-revision-{from}"),
            Action::RetireRevision { revision: from.to_owned() },
            retire,
            vec![
                "the soak window after the last restart passed".into(),
                format!("no namespace label, tag, injector selector, default validator or proxy references {from}"),
            ],
            vec![format!("status shows no finding about {from}")],
            "recreate the deleted objects from the journal's snapshots".into(),
        );
    }

    let steps = steps
        .into_iter()
        .enumerate()
        .map(|(i, (slug, mut step))| {
            step.id = format!("{:02}-{slug}", i + 1);
            step
        })
        .collect();
    (steps, assumptions)
}
