//! `meshshift plan`: read the cluster, plan (pure), print. Changes nothing.

use meshshift_core::plan::{Installer, Plan, PlanRequest, SwitchStrategy, plan};
use meshshift_core::version::{IstioVersion, Revision};

use crate::cli::{InstallerArg, PlanArgs, PlanOptions, Strategy};
use crate::exit::Code;
use crate::output;

/// The planner's request from the command line.
pub fn request(to: &str, args: &PlanOptions) -> Result<PlanRequest, String> {
    let to: IstioVersion = to.parse().map_err(|e| format!("--to: {e}"))?;
    let mut req = PlanRequest::new(to);
    req.revision = args.revision.as_deref().map(Revision::parse).transpose().map_err(|e| format!("--revision: {e}"))?;
    req.from.clone_from(&args.from);
    if let Some(svc) = &args.gateway_service {
        match svc.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {}
            _ => return Err(format!("--gateway-service {svc:?}: expected NAMESPACE/NAME, e.g. istio-ingress/ingress")),
        }
    }
    req.gateway_service.clone_from(&args.gateway_service);
    if let Some(list) = &args.namespaces {
        let mut seen = std::collections::BTreeSet::new();
        for ns in list {
            if ns.is_empty() {
                return Err("--namespaces: an empty name; give namespaces separated by commas, e.g. a,b".into());
            }
            if !seen.insert(ns) {
                return Err(format!("--namespaces: {ns} is listed twice; name each namespace once"));
            }
        }
    }
    req.namespaces.clone_from(&args.namespaces);
    if let Some(sel) = &args.namespace_selector {
        meshshift_core::selector::parse_selector(sel).map_err(|e| format!("--namespace-selector: {e}"))?;
    }
    req.namespace_selector.clone_from(&args.namespace_selector);
    if let Some(tags) = &args.tags {
        let mut seen = std::collections::BTreeSet::new();
        for t in tags {
            // Tags follow revision naming (istioctl validates both as DNS labels).
            if let Err(e) = meshshift_core::version::Revision::parse(t) {
                return Err(format!("--tag {t:?}: {e}"));
            }
            if !seen.insert(t) {
                return Err(format!("--tag: {t} is given twice; name each tag once"));
            }
        }
    }
    req.tags.clone_from(&args.tags);
    req.strategy = match args.strategy {
        Strategy::Switch => SwitchStrategy::Switch,
        Strategy::WidenNarrow => SwitchStrategy::WidenNarrow,
    };
    req.allow_skip = args.allow_skip;
    req.soak_seconds = args.soak_seconds;
    req.installer = match args.installer {
        InstallerArg::Manifests => Installer::Manifests,
        InstallerArg::Helm => Installer::Helm,
        InstallerArg::Istioctl => Installer::Istioctl,
        InstallerArg::Operator => Installer::Operator,
    };
    req.helm_chart = Some(args.helm_chart.clone());
    Ok(req)
}

/// A plan is only as complete as what was read: refuses (exit 4) when a kind could not be listed, since
/// a plan made without it could miss pods to restart or webhooks that inject.
pub fn refuse_partial(snapshot: &meshshift_core::model::ClusterSnapshot) -> Result<(), Code> {
    if snapshot.unreadable.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = snapshot.unreadable.iter().map(|u| u.resource.as_str()).collect();
    eprintln!(
        "error: cannot plan: these credentials may not list {}; a plan made without them could miss what they hold: grant them (see `meshshift rbac`) or use another --context",
        kinds.join(", ")
    );
    Err(Code::Cluster)
}

/// Runs the command.
pub async fn run(args: PlanArgs) -> Code {
    // Bad input is refused before anything talks to the cluster.
    let req = match request(&args.to, &args.options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Code::Usage;
        }
    };
    let snapshot = match super::read_cluster(&args.cluster).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(code) = refuse_partial(&snapshot) {
        return code;
    }
    let plan = match plan(&snapshot, &req) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot plan: {e}");
            return Code::PlanRefused;
        }
    };
    match output::structured(args.output, &plan) {
        Ok(Some(text)) => print!("{text}"),
        Ok(None) => print!("{}", render_table(&plan)),
        Err(e) => {
            eprintln!("error: cannot render the plan: {e}");
            return Code::Failure;
        }
    }
    Code::Ok
}

fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("<absent>")
}

/// The human-readable plan.
pub fn render_table(p: &Plan) -> String {
    let mut out = format!("PLAN {} ({}) -> {} ({})\n\n", p.from_revision, p.from_version, p.to_revision, p.to_version);
    for s in &p.steps {
        out += &format!("{}\n", s.id);
        for c in &s.changes {
            out += &format!("  change  {} {}: {} -> {}\n", c.object, c.field, value(&c.before), value(&c.after));
        }
        for pre in &s.preconditions {
            out += &format!("  before  {pre}\n");
        }
        for g in &s.gates {
            out += &format!("  gate    {g}\n");
        }
        out += &format!("  undo    {}\n\n", s.undo);
    }
    out
}
