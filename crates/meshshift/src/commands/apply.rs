//! `meshshift apply`, `resume` and `rollback`: wire the planner and the engine to the command line.

use std::sync::Arc;
use std::time::Duration;

use meshshift_core::plan::{Plan, plan};
use meshshift_engine::run::{describe, is_over};
use meshshift_engine::{EngineError, Options, Outcome, Run, TrafficGate, TrafficVerdict};
use meshshift_kube::journal_store::{JournalStore, JournalStoreError};

use std::path::PathBuf;

use meshshift_core::slo::Slo;
use meshshift_probe::{ProbeConfig, ProbeHandle, Prober};
use serde_json::json;

use super::recorder::{Recorder, now_ms};
use super::traffic::{ProberGate, PrometheusGate};
use crate::cli::{ApplyArgs, ContinueArgs, OnBreach, RunArgs};
use crate::exit::Code;

/// `user@host pid N`: who holds the run lock, as a second run is told.
fn holder() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host} pid {}", std::process::id())
}

fn options(args: &RunArgs, cluster: &crate::cli::ClusterArgs) -> Options {
    let mut o = Options::new(holder());
    o.kubeconfig.clone_from(&cluster.kubeconfig);
    o.context.clone_from(&cluster.context);
    o.namespace.clone_from(&args.state_namespace);
    o.parallelism = args.parallelism;
    o.rollout_timeout = Duration::from_secs(args.rollout_timeout);
    o.health_check_wait = Duration::from_secs(args.health_check_wait);
    o.lock_duration = Duration::from_secs(args.lock_seconds.max(3));
    if let Ok(s) = std::env::var("MESHSHIFT_SOAK_SECONDS")
        && let Ok(n) = s.parse()
    {
        o.soak = Some(Duration::from_secs(n));
    }
    o
}

fn code_of(e: &EngineError) -> Code {
    match e {
        EngineError::Drift(_) => Code::PlanRefused,
        EngineError::RunInProgress { .. } | EngineError::Lock(_) | EngineError::NoRun(_) => Code::Busy,
        EngineError::Journal(JournalStoreError::Corrupted { .. } | JournalStoreError::Conflict { .. }) => Code::Busy,
        EngineError::Api { .. } | EngineError::Journal(_) => Code::Cluster,
        _ => Code::RunFailed,
    }
}

fn read_plan(path: &std::path::Path) -> Result<Plan, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--plan {}: {e}", path.display()))?;
    serde_json::from_str(&text).or_else(|_| serde_saphyr::from_str(&text)).map_err(|e| {
        format!("--plan {}: not a meshshift plan: {e}; save one with `meshshift plan -o json`", path.display())
    })
}

/// Reports a journal that could not be loaded: corrupted (9: an unfinished run nobody can continue),
/// forbidden or unreachable (4).
fn journal_load_failed(e: &JournalStoreError, namespace: &str) -> Code {
    match e {
        JournalStoreError::Corrupted { .. } | JournalStoreError::Conflict { .. } => {
            eprintln!("error: {e}");
            Code::Busy
        }
        JournalStoreError::Api { source, .. } => {
            let name = meshshift_kube::journal_store::JOURNAL_NAME;
            eprintln!("error: reading the journal {namespace}/{name}: {}", meshshift_engine::error::explain(source));
            Code::Cluster
        }
    }
}

/// Run options that are wrong whatever the cluster holds, refused before anything talks to it.
fn check_run_args(args: &RunArgs, rollback: bool) -> Result<(), String> {
    let ratio = |flag: &str, v: f64| {
        if v.is_finite() && (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("{flag} {v}: a share of requests, between 0 and 1 (e.g. 0.01 for 1%)"))
        }
    };
    ratio("--error-budget", args.error_budget)?;
    ratio("--prometheus-error-ratio", args.prometheus_error_ratio)?;
    if !args.probe_rate.is_finite() || args.probe_rate <= 0.0 {
        return Err(format!("--probe-rate {}: requests per second must be above 0, e.g. 50", args.probe_rate));
    }
    for url in &args.probe {
        meshshift_probe::Target::parse(url).map_err(|e| format!("--probe: {e}"))?;
    }
    if let Some(url) = &args.prometheus {
        meshshift_prom::Endpoint::parse(url).map_err(|e| format!("--prometheus: {e}"))?;
    }
    if args.parallelism == 0 {
        return Err("--parallelism 0: at least one workload must restart at a time".into());
    }
    if meshshift_core::version::Revision::parse(&args.state_namespace).is_err() {
        return Err(format!(
            "--state-namespace {:?}: not a namespace name (lowercase letters, digits and '-', at most 63)",
            args.state_namespace
        ));
    }
    match &args.until {
        Some(_) if rollback => {
            Err("--until: a rollback undoes every completed step; --until is for apply and resume".into())
        }
        Some(id) if id.is_empty() => Err("--until: give a step id from the plan, e.g. 03-switch-load-balancer".into()),
        _ => Ok(()),
    }
}

/// Before a run takes its lock: may these credentials keep meshshift's books (the namespace, the run
/// Lease and the journal ConfigMap)? Asked with SelfSubjectAccessReviews, which change nothing, so that
/// credentials that may only read are refused without a single write. A review that cannot be asked
/// leaves the answer to the run itself.
async fn may_keep_books(client: &kube::Client, namespace: &str) -> Result<(), String> {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let mut needs: Vec<(&str, &str, &str, Option<&str>)> = Vec::new();
    if let Ok(None) = namespaces.get_opt(namespace).await {
        needs.push(("", "namespaces", "create", None));
    }
    for (group, resource) in [("coordination.k8s.io", "leases"), ("", "configmaps")] {
        for verb in ["create", "update"] {
            needs.push((group, resource, verb, Some(namespace)));
        }
    }
    let reviews: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client.clone());
    let mut denied = Vec::new();
    for (group, resource, verb, ns) in needs {
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"group": group, "resource": resource, "verb": verb, "namespace": ns}}
        }))
        .map_err(|e| e.to_string())?;
        match reviews.create(&kube::api::PostParams::default(), &review).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(format!(
                "{verb} {resource}{} {}",
                if group.is_empty() { String::new() } else { format!(".{group}") },
                ns.map(|n| format!("in {n}")).unwrap_or_else(|| "cluster-wide".into())
            )),
            Err(_) => return Ok(()),
        }
    }
    if denied.is_empty() {
        return Ok(());
    }
    Err(format!(
        "forbidden: these credentials may not {} (meshshift's run lock and journal); grant them (see `meshshift rbac`) or use another --context; nothing was changed",
        denied.join(", ")
    ))
}

/// A plan installed by helm or istioctl needs the tool: a missing one is refused before the run writes its
/// journal, not found at its first step.
fn check_installer(plan: &Plan) -> Result<(), String> {
    use meshshift_core::plan::{Action, Installer};
    for step in &plan.steps {
        let Action::InstallControlPlane { installer, .. } = &step.action else { continue };
        let tool = match installer {
            Installer::Helm => "helm",
            Installer::Istioctl => "istioctl",
            Installer::Manifests | Installer::Operator => continue,
        };
        let bin = meshshift_engine::external::binary(tool);
        let found = if bin.components().count() > 1 {
            bin.is_file()
        } else {
            std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(&bin).is_file()))
        };
        if !found {
            return Err(format!(
                "--installer {tool}: {} was not found; install {tool} or point $MESHSHIFT_{} at it (step {} runs it)",
                bin.display(),
                tool.to_uppercase(),
                step.id
            ));
        }
    }
    Ok(())
}

/// `--until` must name a step of the plan; checked before the run takes its lock or writes its journal.
fn check_until(args: &RunArgs, plan: &Plan) -> Result<(), String> {
    match &args.until {
        Some(id) if !plan.steps.iter().any(|s| &s.id == id) => Err(format!(
            "--until {id}: no such step in the plan; steps: {}",
            plan.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
        )),
        _ => Ok(()),
    }
}

/// The probe that measures traffic while a run works.
struct Traffic {
    handle: Arc<ProbeHandle>,
    urls: Vec<String>,
    rate: f64,
}

fn start_traffic(args: &RunArgs) -> Result<Option<Traffic>, String> {
    if args.probe.is_empty() {
        return Ok(None);
    }
    // Connections: the prober's default, enough that answers taking a second do not queue requests.
    let mut config = ProbeConfig::new(args.probe.clone(), args.probe_rate);
    // A new connection per request, as new users make: kept-alive connections would stay on blue through
    // the soak window and the gate would never see green (docs/reliability.md, "Chaos").
    config.headers.push(("connection".to_owned(), "close".to_owned()));
    let handle = Prober::start(config).map_err(|e| format!("--probe: {e}"))?;
    Ok(Some(Traffic { handle: Arc::new(handle), urls: args.probe.clone(), rate: args.probe_rate }))
}

/// Before the first change: the probed service must already be healthy (`min_requests` in a row without
/// a failure), or the gates would blame the upgrade for what was broken before it. Waits up to 60 s.
async fn baseline(traffic: &Traffic, min_requests: u64) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut since = now_ms();
    let mut last = String::new();
    loop {
        let w = traffic.handle.window(since);
        if w.failed > 0 {
            last = format!(
                "{} of {} requests failed (first: {})",
                w.failed,
                w.ok + w.failed,
                w.first_failure.unwrap_or_default()
            );
            since = now_ms();
        } else if w.ok >= min_requests.max(1) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "the probed service is not healthy before any change ({}); fix it first, nothing was changed",
                if last.is_empty() { "no answers".to_owned() } else { last }
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The traffic gates of a run: the prober's (with `--probe`) and Prometheus' (with `--prometheus`).
fn gates(traffic: Option<&Traffic>, args: &RunArgs) -> Vec<Arc<dyn TrafficGate>> {
    let mut gates: Vec<Arc<dyn TrafficGate>> = Vec::new();
    if let Some(t) = traffic {
        gates.push(Arc::new(ProberGate { handle: t.handle.clone(), slo: slo(args) }));
    }
    if let Some(url) = &args.prometheus {
        let window = Duration::from_secs(args.prometheus_window);
        let gate = meshshift_prom::PromGate::new(args.prometheus_error_ratio, 0.5, window);
        gates.push(Arc::new(PrometheusGate { url: url.clone(), gate }));
    }
    gates
}

/// Before the first change every gate must pass on its own (Prometheus: its window holds no errors left
/// from before); waits up to 60 s for them to agree, else refuses.
async fn gates_clear(gates: &[Arc<dyn TrafficGate>]) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for gate in gates.iter().filter(|g| g.name() != "prober") {
        loop {
            let verdict = gate.check(now_ms()).await;
            match verdict {
                TrafficVerdict::Pass(_) => break,
                TrafficVerdict::NotEnough(why) | TrafficVerdict::Breach(why)
                    if std::time::Instant::now() >= deadline =>
                {
                    return Err(format!(
                        "{}: {why}; users are not served well before any change, nothing was changed",
                        gate.name()
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    Ok(())
}

fn slo(args: &RunArgs) -> Slo {
    Slo {
        max_failure_ratio: args.error_budget,
        p99_ceiling_us: args.p99_ceiling_ms.map(|ms| ms.saturating_mul(1000)),
        min_requests: args.min_requests,
    }
}

/// The default record directory: `./meshshift-runs/<UTC time>-<command>`.
fn run_dir(args: &RunArgs, command: &str) -> PathBuf {
    args.run_dir.clone().unwrap_or_else(|| {
        let t = k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        PathBuf::from("meshshift-runs").join(format!("{t}-{command}"))
    })
}

/// Opens the run's record and starts its probe (bad `--run-dir` or probe settings: usage errors).
fn start_record(args: &RunArgs, plan: &Plan, command: &str) -> Result<(Arc<Recorder>, Option<Traffic>), Code> {
    let dir = run_dir(args, command);
    let recorder = Recorder::create(&dir, plan).map(Arc::new).map_err(|e| {
        eprintln!("error: --run-dir {}: {e}", dir.display());
        Code::Usage
    })?;
    let traffic = start_traffic(args).map_err(|e| {
        recorder.progress.finish();
        eprintln!("error: {e}");
        Code::Usage
    })?;
    Ok((recorder, traffic))
}

/// Drives a run to its end with a live view and a record; Ctrl-C stops it, leaving the journal to resume
/// from. A breached traffic gate rolls back (or pauses, with `--on-breach pause`).
async fn drive(
    mut run: Run,
    recorder: Arc<Recorder>,
    traffic: Option<Traffic>,
    args: &RunArgs,
    rollback: bool,
) -> Code {
    let started = now_ms();
    for gate in gates(traffic.as_ref(), args) {
        run.add_traffic_gate(gate);
    }
    let until = args.until.as_deref();
    let mut outcome = tokio::select! {
        r = async { if rollback { run.rollback().await } else { run.forward(until).await } } => r,
        _ = tokio::signal::ctrl_c() => Err(EngineError::Interrupted),
    };
    let mut breach = None;
    if let Err(EngineError::Breach { step, detail }) = &outcome {
        recorder.event("breach", detail);
        recorder.progress.println(&format!("traffic gate breached in {step}: {detail}"));
        breach = Some(format!("step {step}: {detail}"));
        if args.on_breach == OnBreach::Rollback {
            recorder.progress.println("rolling back");
            outcome = tokio::select! {
                r = run.rollback() => r,
                _ = tokio::signal::ctrl_c() => Err(EngineError::Interrupted),
            };
        }
    }
    // Requests still in flight at the last step's verdict, or scheduled between two steps, are judged here:
    // a run is only "finished" (or cleanly "paused") if the whole of it kept the objective.
    if matches!(outcome, Ok(Outcome::Finished | Outcome::Paused))
        && !run_gates_hold(&run, traffic.as_ref(), started).await
    {
        let w = traffic.as_ref().map(|t| t.handle.window(started));
        let detail = w
            .map(|w| format!("{} of {} probe requests failed over the run", w.failed, w.ok + w.failed))
            .unwrap_or_default();
        recorder.event("breach", &detail);
        outcome = Err(EngineError::Breach { step: "the whole run".into(), detail });
    }
    if let Err(e) = &outcome {
        recorder.event("failed", &e.to_string());
    }
    let released = run.finish().await;
    recorder.progress.finish();
    let (name, code, error) = match (&outcome, &breach) {
        (Ok(Outcome::RolledBack), Some(b)) => {
            ("rolled-back", Code::RunFailed, Some(format!("traffic gate breached: {b}")))
        }
        (Ok(Outcome::Finished), _) => ("finished", Code::Ok, None),
        (Ok(Outcome::Paused), _) => ("paused", Code::Ok, None),
        (Ok(Outcome::RolledBack), None) => ("rolled-back", Code::Ok, None),
        (Err(e), _) => ("failed", code_of(e), Some(e.to_string())),
    };
    match (&outcome, &breach) {
        (Ok(Outcome::Finished), _) => eprintln!("upgrade finished"),
        (Ok(Outcome::Paused), _) => eprintln!(
            "paused after {}: `meshshift resume` continues, `meshshift rollback` undoes",
            until.unwrap_or_default()
        ),
        (Ok(Outcome::RolledBack), Some(b)) => {
            eprintln!("error: traffic gate breached ({b}); rolled back every touched step")
        }
        (Ok(Outcome::RolledBack), None) => eprintln!("rolled back: every touched step undone"),
        (Err(e), _) => eprintln!("error: {e}"),
    }
    if let Err(e) = released {
        eprintln!("warning: {e}");
    }
    finish_record(&recorder, traffic, started, name, error).await;
    code
}

/// Whether the traffic gates hold over the whole run. The probe is stopped first and drained, so every
/// request it scheduled is judged: finished, or failed as `aborted` when its drain time ran out.
async fn run_gates_hold(run: &Run, traffic: Option<&Traffic>, started: u64) -> bool {
    match traffic {
        Some(t) => t.handle.drained().await,
        None => tokio::time::sleep(Duration::from_secs(1)).await,
    }
    run.traffic_holds(started).await
}

/// Stops the probe and writes the rest of the record (probe.json, requests.jsonl, outcome.json).
async fn finish_record(
    recorder: &Recorder,
    traffic: Option<Traffic>,
    started: u64,
    outcome: &str,
    error: Option<String>,
) {
    if let Some(t) = traffic {
        match Arc::try_unwrap(t.handle) {
            Ok(handle) => match handle.stop().await {
                Ok(result) => {
                    let summary = serde_json::to_value(&result.summary).unwrap_or_default();
                    let probe = json!({"started_unix_ms": result.started_unix_ms, "urls": t.urls, "rate": t.rate, "summary": summary});
                    let _ = recorder.write_json("probe.json", &probe);
                    if let Ok(f) = std::fs::File::create(recorder.dir().join("requests.jsonl")) {
                        let _ = result.write_jsonl(std::io::BufWriter::new(f));
                    }
                    eprintln!("{} requests, {} failed", result.summary.total, result.summary.failed);
                }
                Err(e) => eprintln!("warning: the probe did not finish cleanly: {e}"),
            },
            Err(_) => eprintln!("warning: the probe is still shared; its record is incomplete"),
        }
    }
    let _ = recorder.write_json(
        "outcome.json",
        &json!({"outcome": outcome, "error": error, "started_unix_ms": started, "ended_unix_ms": now_ms()}),
    );
    match meshshift_report::write(recorder.dir()) {
        Ok((json, html)) => eprintln!("report: {} ({})", html.display(), json.display()),
        Err(e) => {
            eprintln!("warning: the report could not be written: {e}; run record in {}", recorder.dir().display())
        }
    }
}

/// `meshshift apply`.
pub async fn apply(args: ApplyArgs) -> Code {
    if let Err(e) = check_run_args(&args.run, false) {
        eprintln!("error: {e}");
        return Code::Usage;
    }
    let planned = match (&args.plan, &args.to) {
        (Some(path), _) => read_plan(path).map(Some),
        (None, Some(to)) => super::plan::request(to, &args.options).map(|_| None),
        (None, None) => Err("give --to VERSION or --plan FILE".into()),
    };
    let saved = match planned {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Code::Usage;
        }
    };
    // A saved plan must be one meshshift made, unedited: its steps are executed as written.
    if let (Some(p), Some(path)) = (&saved, &args.plan)
        && let Err(e) = meshshift_engine::drift::consistent(p)
    {
        eprintln!(
            "error: --plan {}: {e}; re-plan with `meshshift plan -o json` rather than edit a plan",
            path.display()
        );
        return Code::PlanRefused;
    }
    let client = match super::status::client(&args.cluster).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    // An unfinished run comes first: planning against a half-upgraded cluster would only confuse.
    match JournalStore::new(&client, &args.run.state_namespace).load().await {
        Ok(Some(s)) if !is_over(&s.journal) => {
            let e = EngineError::RunInProgress { detail: describe(&s) };
            eprintln!("error: {e}");
            return code_of(&e);
        }
        Ok(_) => {}
        Err(e) => return journal_load_failed(&e, &args.run.state_namespace),
    }
    let plan = match saved {
        Some(p) => {
            match meshshift_engine::drift::drift(&meshshift_engine::objects::Objects::new(client.clone()), &p).await {
                Ok(d) if d.is_empty() => p,
                Ok(d) => {
                    let e = EngineError::Drift(d);
                    eprintln!("error: {e}");
                    return code_of(&e);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return code_of(&e);
                }
            }
        }
        None => {
            let Some(to) = &args.to else { return Code::Usage };
            let req = match super::plan::request(to, &args.options) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Code::Usage;
                }
            };
            let snapshot = match meshshift_kube::read_snapshot(&client).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Code::Cluster;
                }
            };
            if let Err(code) = super::plan::refuse_partial(&snapshot) {
                return code;
            }
            match plan(&snapshot, &req) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: cannot plan: {e}");
                    return Code::PlanRefused;
                }
            }
        }
    };
    if let Err(e) = check_until(&args.run, &plan).and_then(|()| check_installer(&plan)) {
        eprintln!("error: {e}");
        return Code::Usage;
    }
    if args.dry_run {
        print!("{}", super::plan::render_table(&plan));
        eprintln!("dry run: the plan is valid against the cluster; nothing was changed");
        return Code::Ok;
    }
    if let Err(e) = may_keep_books(&client, &args.run.state_namespace).await {
        eprintln!("error: {e}");
        return Code::Cluster;
    }
    let (recorder, traffic) = match start_record(&args.run, &plan, "apply") {
        Ok(started) => started,
        Err(code) => return code,
    };
    if let Some(t) = &traffic {
        recorder.progress.println("checking that the probed service is healthy before any change");
        if let Err(e) = baseline(t, args.run.min_requests).await {
            recorder.progress.finish();
            eprintln!("error: {e}");
            return Code::RunFailed;
        }
    }
    if let Err(e) = gates_clear(&gates(traffic.as_ref(), &args.run)).await {
        recorder.progress.finish();
        eprintln!("error: {e}");
        return Code::RunFailed;
    }
    let run = match Run::start(client, plan, options(&args.run, &args.cluster), recorder.clone()).await {
        Ok(r) => r,
        Err(e) => {
            recorder.progress.finish();
            eprintln!("error: {e}");
            return code_of(&e);
        }
    };
    drive(run, recorder, traffic, &args.run, false).await
}

async fn continue_run(args: ContinueArgs, rollback: bool) -> Code {
    if let Err(e) = check_run_args(&args.run, rollback) {
        eprintln!("error: {e}");
        return Code::Usage;
    }
    let client = match super::status::client(&args.cluster).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The record needs the plan before the run opens: read it from the journal.
    let plan = match JournalStore::new(&client, &args.run.state_namespace).load().await {
        // Nothing left to do in the asked direction: refused before the run takes its lock.
        Ok(Some(s)) if !rollback && is_over(&s.journal) => {
            eprintln!(
                "error: nothing to resume: the last run is over ({}); start a new one with `meshshift apply`",
                describe(&s)
            );
            return Code::Busy;
        }
        Ok(Some(s)) if rollback && s.journal.next() == meshshift_core::journal::Next::RolledBack => {
            eprintln!("error: nothing to roll back: the last run was rolled back already ({})", describe(&s));
            return Code::Busy;
        }
        Ok(Some(s)) => s.plan,
        Ok(None) => {
            let e = EngineError::NoRun(args.run.state_namespace.clone());
            eprintln!("error: {e}");
            return code_of(&e);
        }
        Err(e) => return journal_load_failed(&e, &args.run.state_namespace),
    };
    if let Err(e) = check_until(&args.run, &plan) {
        eprintln!("error: {e}");
        return Code::Usage;
    }
    if let Err(e) = may_keep_books(&client, &args.run.state_namespace).await {
        eprintln!("error: {e}");
        return Code::Cluster;
    }
    let (recorder, traffic) = match start_record(&args.run, &plan, if rollback { "rollback" } else { "resume" }) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let run = match Run::open(client, options(&args.run, &args.cluster), recorder.clone()).await {
        Ok(r) => r,
        Err(e) => {
            recorder.progress.finish();
            eprintln!("error: {e}");
            return code_of(&e);
        }
    };
    recorder.progress.println(&format!(
        "{} run: {}",
        if rollback { "rolling back the" } else { "resuming the" },
        describe_run(&run)
    ));
    drive(run, recorder, traffic, &args.run, rollback).await
}

fn describe_run(run: &Run) -> String {
    format!("{} -> {}", run.plan().from_revision, run.plan().to_revision)
}

/// `meshshift resume`.
pub async fn resume(args: ContinueArgs) -> Code {
    continue_run(args, false).await
}

/// `meshshift rollback`.
pub async fn rollback(args: ContinueArgs) -> Code {
    continue_run(args, true).await
}
