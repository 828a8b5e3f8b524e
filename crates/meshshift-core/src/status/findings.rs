//! The findings of `meshshift status`: every rule that turns the analysed state into a problem report.

use std::collections::BTreeMap;

use super::controlplane::{Istiod, TagStatus, default_validator};
use super::gateways::{GatewayServiceStatus, GatewayStatus};
use super::namespaces::{InjectionMode, NamespaceStatus};
use super::workloads::pod_workload;
use crate::finding::{Finding, FindingCode as Code, Severity};
use crate::model::ClusterSnapshot;
use crate::path::{Skew, proxy_supported};
use crate::proxy::{INJECT_LABEL, detect_proxy};

/// What the rules look at.
pub(super) struct Inputs<'a> {
    pub snapshot: &'a ClusterSnapshot,
    pub istiods: &'a [Istiod],
    pub tags: &'a [TagStatus],
    pub namespaces: &'a [NamespaceStatus],
    pub gateways: &'a [GatewayStatus],
    pub gateway_services: &'a [GatewayServiceStatus],
}

/// All findings, worst first, then by code and subject; ties (same code and subject, e.g. one resource
/// unreadable for two reasons) are broken on the rest of the finding, so the order never depends on the
/// order of the input lists and `dedup` removes every duplicate.
pub(super) fn findings(i: &Inputs<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    read_gaps(i, &mut out);
    control_plane(i, &mut out);
    tags_and_defaults(i, &mut out);
    namespaces(i, &mut out);
    pods(i, &mut out);
    gateways(i, &mut out);
    gateway_services(i, &mut out);
    out.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| (a.code, &a.subject).cmp(&(b.code, &b.subject))).then_with(|| a.cmp(b))
    });
    out.dedup();
    out
}

fn read_gaps(i: &Inputs<'_>, out: &mut Vec<Finding>) {
    for u in &i.snapshot.unreadable {
        out.push(Finding::new(
            Code::ReadForbidden,
            Severity::Warning,
            format!("resource/{}", u.resource),
            format!("could not list {}: {}; the report leaves them out", u.resource, u.reason),
            format!("grant list on {} (see `meshshift rbac`) or accept a partial report", u.resource),
        ));
    }
}

fn control_plane(i: &Inputs<'_>, out: &mut Vec<Finding>) {
    for d in i.istiods {
        let subject = format!("Deployment/{}/{}", d.namespace, d.deployment);
        if d.ready_replicas == 0 {
            out.push(Finding::new(
                Code::ControlPlaneNotReady,
                Severity::Error,
                &subject,
                format!("istiod of revision {} has no ready replica: its proxies get no config and its webhook rejects pods", d.revision),
                format!("kubectl -n {} describe deployment {}", d.namespace, d.deployment),
            ));
        }
        if d.version.is_none() {
            out.push(Finding::new(
                Code::ControlPlaneVersionUnknown,
                Severity::Warning,
                &subject,
                format!(
                    "the version of revision {} is neither in the discovery image tag nor in its injector ConfigMap",
                    d.revision
                ),
                "use a versioned pilot image tag (not latest or a digest)",
            ));
        }
    }
}

fn revision_exists(i: &Inputs<'_>, rev: &str) -> bool {
    i.istiods.iter().any(|d| d.revision == rev)
}

fn tags_and_defaults(i: &Inputs<'_>, out: &mut Vec<Finding>) {
    for t in i.tags.iter().filter(|t| !t.revision_exists) {
        let (code, what) = if t.tag == "default" {
            (Code::DefaultTagRevisionMissing, "the default tag".to_owned())
        } else {
            (Code::TagRevisionMissing, format!("tag {}", t.tag))
        };
        out.push(Finding::new(
            code,
            Severity::Error,
            format!("MutatingWebhookConfiguration/{}", t.webhook),
            format!("{what} points at revision {}, which has no istiod: pods in its namespaces are rejected or start without a sidecar", t.revision),
            format!("istioctl tag set {} --revision <an installed revision> --overwrite", t.tag),
        ));
    }
    if let Some((cfg, rev)) = default_validator(i.snapshot).filter(|(_, rev)| !revision_exists(i, rev)) {
        let fails = cfg.webhooks.iter().any(|w| w.failure_policy == "Fail");
        out.push(Finding::new(
            Code::DefaultValidatorRevisionMissing,
            if fails { Severity::Error } else { Severity::Warning },
            format!("ValidatingWebhookConfiguration/{}", cfg.name),
            if fails {
                format!("the default validator calls revision {rev}, which has no istiod: every Istio config write is rejected")
            } else {
                format!("the default validator calls revision {rev}, which has no istiod: Istio config is not validated")
            },
            "point the default validator at an installed revision (istioctl tag set default --revision <rev>)",
        ));
    }
}

fn namespaces(i: &Inputs<'_>, out: &mut Vec<Finding>) {
    for ns in i.namespaces {
        let subject = format!("Namespace/{}", ns.name);
        if let (InjectionMode::Revision(_), Some(rev)) = (&ns.mode, &ns.unknown_revision) {
            out.push(Finding::new(
                Code::NamespaceRevisionMissing,
                Severity::Error,
                &subject,
                format!("labelled istio.io/rev={rev}, which is neither an installed revision nor a tag"),
                format!("kubectl label namespace {} istio.io/rev=<an installed revision> --overwrite", ns.name),
            ));
        }
        if ns.conflicting_labels {
            out.push(Finding::new(
                Code::NamespaceConflictingLabels,
                Severity::Warning,
                &subject,
                "has both istio-injection and istio.io/rev; istio-injection takes precedence",
                format!("kubectl label namespace {} istio-injection-", ns.name),
            ));
        }
        if ns.webhooks.len() > 1 {
            out.push(Finding::new(
                Code::NamespaceMultipleInjectors,
                Severity::Error,
                &subject,
                format!("{} injector webhooks select new pods here ({}): pods may be injected twice or by the wrong revision", ns.webhooks.len(), ns.webhooks.join(", ")),
                "deactivate all but one (istioctl tag set default moves the default; remove the old default webhook)",
            ));
        }
        let wants_injection = match &ns.mode {
            InjectionMode::IstioInjection(v) => v == "enabled",
            InjectionMode::Revision(_) => ns.unknown_revision.is_none(),
            InjectionMode::None => false,
        };
        if wants_injection && ns.webhooks.is_empty() {
            out.push(Finding::new(
                Code::NamespaceNoInjector,
                Severity::Error,
                &subject,
                "labelled for injection but no injector webhook selects it: new pods start without a sidecar",
                "install the revision it names or relabel it for an installed revision",
            ));
        }
    }
}

/// Per-workload tallies of the pod rules, so one Deployment of 50 pods is one finding, not 50.
#[derive(Default)]
struct PodTally {
    total: usize,
    wrong_revision: BTreeMap<String, usize>,
    missing_revision: BTreeMap<String, usize>,
    skew: BTreeMap<String, usize>,
    version_mismatch: BTreeMap<String, usize>,
    no_sidecar: usize,
    expected: Option<String>,
}

fn pods(i: &Inputs<'_>, out: &mut Vec<Finding>) {
    let mut tallies: BTreeMap<(String, String, String), PodTally> = BTreeMap::new();
    for pod in &i.snapshot.pods {
        let (kind, name) = pod_workload(i.snapshot, pod);
        let t = tallies.entry((kind, pod.namespace.clone(), name)).or_default();
        t.total += 1;
        let expected = i.namespaces.iter().find(|n| n.name == pod.namespace).and_then(|n| n.injected_by.clone());
        let opted_out =
            [&pod.spec.labels, &pod.spec.annotations].iter().any(|m| m.get(INJECT_LABEL).is_some_and(|v| v == "false"));
        match detect_proxy(&pod.spec) {
            Some(proxy) => {
                if let Some(rev) = &proxy.revision {
                    match i.istiods.iter().find(|d| &d.revision == rev) {
                        None => *t.missing_revision.entry(rev.clone()).or_default() += 1,
                        Some(d) => {
                            if let (Some(cp), Some(pv)) = (&d.version, &proxy.version) {
                                match proxy_supported(cp, pv) {
                                    Skew::Supported if cp != pv => {
                                        *t.version_mismatch.entry(format!("{pv} (control plane {cp})")).or_default() +=
                                            1;
                                    }
                                    Skew::Supported => {}
                                    _ => *t.skew.entry(format!("{pv} with control plane {cp}")).or_default() += 1,
                                }
                            }
                        }
                    }
                    if let Some(exp) = expected.as_ref().filter(|e| *e != rev && !opted_out) {
                        *t.wrong_revision.entry(rev.clone()).or_default() += 1;
                        t.expected = Some(exp.clone());
                    }
                }
            }
            None => {
                let active = pod.phase == "Running" || pod.phase == "Pending";
                if expected.is_some() && !opted_out && !pod.host_network && active {
                    t.no_sidecar += 1;
                }
            }
        }
    }
    for ((kind, namespace, name), t) in tallies {
        let subject = format!("{kind}/{namespace}/{name}");
        let restart = restart_command(&kind, &namespace, &name);
        for (rev, n) in &t.missing_revision {
            out.push(Finding::new(
                Code::ProxyRevisionMissing,
                Severity::Error,
                &subject,
                format!("{n} of {} pods run proxies of revision {rev}, which has no istiod: they keep stale config and their certificates stop rotating", t.total),
                restart.clone(),
            ));
        }
        for (what, n) in &t.skew {
            out.push(Finding::new(
                Code::ProxySkewUnsupported,
                Severity::Error,
                &subject,
                format!("{n} of {} pods run proxy {what}: outside Istio's supported skew (control plane at most one minor ahead)", t.total),
                restart.clone(),
            ));
        }
        for (what, n) in &t.version_mismatch {
            out.push(Finding::new(
                Code::PodVersionMismatch,
                Severity::Warning,
                &subject,
                format!("{n} of {} pods run proxy {what}: restart to pick up the control plane's version", t.total),
                restart.clone(),
            ));
        }
        for (rev, n) in &t.wrong_revision {
            out.push(Finding::new(
                Code::PodRevisionMismatch,
                Severity::Warning,
                &subject,
                format!(
                    "{n} of {} pods run proxies of revision {rev} but namespace {namespace} now selects {}: restart needed",
                    t.total,
                    t.expected.as_deref().unwrap_or("another revision")
                ),
                restart.clone(),
            ));
        }
        if t.no_sidecar > 0 {
            out.push(Finding::new(
                Code::PodWithoutSidecar,
                Severity::Warning,
                &subject,
                format!(
                    "{} of {} pods have no sidecar although namespace {namespace} is injected",
                    t.no_sidecar, t.total
                ),
                restart.clone(),
            ));
        }
    }
}

fn restart_command(kind: &str, namespace: &str, name: &str) -> String {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" => {
            format!("kubectl -n {namespace} rollout restart {}/{name}", kind.to_lowercase())
        }
        _ => format!("kubectl -n {namespace} delete pod {name} (recreate it through its controller)"),
    }
}

fn gateways(i: &Inputs<'_>, out: &mut Vec<Finding>) {
    for g in i.gateways.iter().filter(|g| !g.injected) {
        let cp_namespace =
            i.istiods.iter().find(|d| d.revision == g.revision).map(|d| d.namespace.as_str()).unwrap_or("istio-system");
        if g.namespace == cp_namespace {
            continue;
        }
        let cm = if g.revision == "default" { "istio".to_owned() } else { format!("istio-{}", g.revision) };
        let present = i.snapshot.config_maps.iter().any(|c| c.namespace == g.namespace && c.name == cm);
        out.push(Finding::new(
            Code::GatewayLocalMeshConfig,
            if present { Severity::Warning } else { Severity::Error },
            format!("Deployment/{}/{}", g.namespace, g.name),
            if present {
                format!("gateway is not deployed by injection and reads mesh ConfigMap {}/{cm}, a copy that every upgrade must keep in sync", g.namespace)
            } else {
                format!("gateway is not deployed by injection and reads mesh ConfigMap {}/{cm}, which does not exist: its pods cannot start", g.namespace)
            },
            "deploy gateways by injection (pod annotation inject.istio.io/templates: gateway) so they take config from istiod",
        ));
    }
}

fn gateway_services(i: &Inputs<'_>, out: &mut Vec<Finding>) {
    for s in i.gateway_services {
        let revisions: std::collections::BTreeSet<&str> = s.selects.iter().map(|g| g.revision.as_str()).collect();
        if revisions.len() < 2 {
            continue;
        }
        let revisions: Vec<&str> = revisions.into_iter().collect();
        out.push(Finding::new(
            Code::ServiceSelectsMultipleRevisions,
            if s.service_type == "LoadBalancer" { Severity::Warning } else { Severity::Info },
            format!("Service/{}/{}", s.namespace, s.name),
            format!(
                "selects gateways of revisions {}: traffic is split between them (intended only while widening during a switch)",
                revisions.join(" and ")
            ),
            "add a label that tells the revisions apart (e.g. version=<revision>) to each gateway and to the selector",
        ));
    }
}
