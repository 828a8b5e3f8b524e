//! `meshshift status`: read the cluster, analyse it (pure), print the report.

use meshshift_core::finding::Severity;
use meshshift_core::status::{InjectionMode, StatusReport, analyze};
use meshshift_kube::{ConnectError, ConnectOptions, connect};

use crate::cli::{ClusterArgs, FailOn, StatusArgs};
use crate::exit::Code;
use crate::output;

/// Connects like kubectl, mapping each failure to its exit code and a message on stderr.
pub async fn client(args: &ClusterArgs) -> Result<kube::Client, Code> {
    let opts = ConnectOptions { kubeconfig: args.kubeconfig.clone(), context: args.context.clone() };
    connect(&opts).await.map_err(|e| {
        eprintln!("error: {e}");
        match e {
            ConnectError::Kubeconfig { .. } | ConnectError::UnknownContext { .. } | ConnectError::InvalidContext(_) => {
                Code::Kubeconfig
            }
            ConnectError::Unreachable { .. } | ConnectError::Unauthorized { .. } => Code::Cluster,
        }
    })
}

/// Runs the command.
pub async fn run(args: StatusArgs) -> Code {
    let snapshot = match super::read_cluster(&args.cluster).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let report = analyze(&snapshot);
    let text = match output::structured(args.output, &report) {
        Ok(Some(text)) => text,
        Ok(None) => render_table(&report),
        Err(e) => {
            eprintln!("error: cannot render the report: {e}");
            return Code::Failure;
        }
    };
    print!("{text}");
    if report.revisions.is_empty() && snapshot.unreadable.iter().any(|u| u.resource == "deployments") {
        eprintln!(
            "error: these credentials may not list Deployments, so no istiod can be seen; grant it (see `meshshift rbac`) or use another --context"
        );
        return Code::Cluster;
    }
    if report.revisions.is_empty() {
        eprintln!(
            "error: no Istio control plane (istiod Deployment) found in this cluster; install Istio or check --context"
        );
        return Code::NoIstio;
    }
    let threshold = args.fail_on.map(|f| match f {
        FailOn::Info => Severity::Info,
        FailOn::Warning => Severity::Warning,
        FailOn::Error => Severity::Error,
    });
    match threshold {
        Some(t) if report.findings.iter().any(|f| f.severity >= t) => {
            let codes: std::collections::BTreeSet<String> = report
                .findings
                .iter()
                .filter(|f| f.severity >= t)
                .filter_map(|f| serde_json::to_value(f.code).ok()?.as_str().map(str::to_owned))
                .collect();
            eprintln!(
                "error: findings at or above --fail-on {}: {}; fix them (see FINDINGS) or raise --fail-on",
                format!("{t:?}").to_lowercase(),
                codes.into_iter().collect::<Vec<_>>().join(", ")
            );
            Code::Findings
        }
        _ => Code::Ok,
    }
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".to_owned())
}

/// The human-readable report.
pub fn render_table(r: &StatusReport) -> String {
    let mut out = String::new();

    let mut t = output::table(&[
        "REVISION",
        "NAMESPACE",
        "DEPLOYMENT",
        "VERSION",
        "READY",
        "TAGS",
        "PROXIES",
        "INJECTOR WEBHOOKS",
    ]);
    for rev in &r.revisions {
        t.add_row(vec![
            rev.revision.clone(),
            rev.namespace.clone(),
            rev.deployment.clone(),
            opt(&rev.version),
            format!("{}/{}", rev.ready_replicas, rev.replicas),
            rev.tags.join(","),
            rev.proxies.to_string(),
            rev.injector_webhooks.join(","),
        ]);
    }
    out += &output::section("CONTROL PLANE REVISIONS", t, r.revisions.len());

    let mut t = output::table(&["TAG", "REVISION", "WEBHOOK", "REVISION EXISTS"]);
    for tag in &r.tags {
        t.add_row(vec![tag.tag.clone(), tag.revision.clone(), tag.webhook.clone(), tag.revision_exists.to_string()]);
    }
    out += &output::section("REVISION TAGS", t, r.tags.len());

    let d = &r.default_revision;
    out += &format!(
        "DEFAULT REVISION\n  default tag: {}\n  istio-injection=enabled: {}\n  default validator: {}\n\n",
        opt(&d.tag),
        opt(&d.injection),
        opt(&d.validator)
    );

    let mut t = output::table(&["NAMESPACE", "LABEL", "INJECTED BY", "WEBHOOKS"]);
    let labelled: Vec<_> =
        r.namespaces.iter().filter(|n| n.mode != InjectionMode::None || n.injected_by.is_some()).collect();
    for ns in &labelled {
        let label = match &ns.mode {
            InjectionMode::IstioInjection(v) => format!("istio-injection={v}"),
            InjectionMode::Revision(v) => format!("istio.io/rev={v}"),
            InjectionMode::None => "-".to_owned(),
        };
        t.add_row(vec![ns.name.clone(), label, opt(&ns.injected_by), ns.webhooks.join(",")]);
    }
    out += &output::section("INJECTION", t, labelled.len());

    let mut t = output::table(&["REVISION", "VERSION", "PROXIES"]);
    for p in &r.proxies {
        t.add_row(vec![p.revision.clone(), p.version.clone(), p.pods.to_string()]);
    }
    out += &output::section("DATA PLANE", t, r.proxies.len());

    let mut t = output::table(&["NAMESPACE", "GATEWAY", "REVISION", "VERSION", "READY", "INJECTED"]);
    for g in &r.gateways {
        t.add_row(vec![
            g.namespace.clone(),
            g.name.clone(),
            g.revision.clone(),
            opt(&g.version),
            format!("{}/{}", g.ready_replicas, g.replicas),
            g.injected.to_string(),
        ]);
    }
    out += &output::section("GATEWAYS", t, r.gateways.len());

    let mut t = output::table(&["NAMESPACE", "SERVICE", "TYPE", "SELECTOR", "SELECTS"]);
    for s in &r.gateway_services {
        let selector: Vec<String> = s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let selects: Vec<String> = s.selects.iter().map(|g| format!("{} ({})", g.gateway, g.revision)).collect();
        t.add_row(vec![
            s.namespace.clone(),
            s.name.clone(),
            s.service_type.clone(),
            selector.join(","),
            selects.join(", "),
        ]);
    }
    out += &output::section("GATEWAY SERVICES", t, r.gateway_services.len());

    let mut t = output::table(&["SEVERITY", "CODE", "SUBJECT", "MESSAGE", "FIX"]);
    for f in &r.findings {
        let code = serde_json::to_value(f.code).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let severity =
            serde_json::to_value(f.severity).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        t.add_row(vec![severity, code, f.subject.clone(), f.message.clone(), f.fix.clone()]);
    }
    out += &output::section("FINDINGS", t, r.findings.len());
    out
}
