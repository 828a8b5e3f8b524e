//! `meshshift apply`, `resume` and `rollback`: wire the planner and the engine to the command line.

use std::sync::Arc;
use std::time::Duration;

use meshshift_core::plan::{Plan, plan};
use meshshift_engine::run::{describe, is_over};
use meshshift_engine::{EngineError, Options, Outcome, Run};
use meshshift_kube::journal_store::JournalStore;

use super::progress::StepsProgress;
use crate::cli::{ApplyArgs, ContinueArgs, RunArgs};
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
        EngineError::Api { .. } | EngineError::Journal(_) => Code::Cluster,
        _ => Code::RunFailed,
    }
}

fn read_plan(path: &std::path::Path) -> Result<Plan, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--plan {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .or_else(|_| serde_saphyr::from_str(&text))
        .map_err(|e| format!("--plan {}: not a meshshift plan: {e}", path.display()))
}

/// Drives a run to its end with a live view; Ctrl-C stops it, leaving the journal to resume from.
async fn drive(mut run: Run, rollback: bool, until: Option<&str>) -> Code {
    let outcome = tokio::select! {
        r = async { if rollback { run.rollback().await } else { run.forward(until).await } } => r,
        _ = tokio::signal::ctrl_c() => Err(EngineError::Interrupted),
    };
    let released = run.finish().await;
    match outcome {
        Ok(Outcome::Finished) => {
            eprintln!("upgrade finished");
            if let Err(e) = released {
                eprintln!("warning: {e}");
            }
            Code::Ok
        }
        Ok(Outcome::Paused) => {
            eprintln!(
                "paused after {}: `meshshift resume` continues, `meshshift rollback` undoes",
                until.unwrap_or_default()
            );
            Code::Ok
        }
        Ok(Outcome::RolledBack) => {
            eprintln!("rolled back: every touched step undone");
            Code::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            code_of(&e)
        }
    }
}

/// `meshshift apply`.
pub async fn apply(args: ApplyArgs) -> Code {
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
        Err(e) => {
            eprintln!("error: {e}");
            return Code::Cluster;
        }
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
            match plan(&snapshot, &req) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: cannot plan: {e}");
                    return Code::PlanRefused;
                }
            }
        }
    };
    if args.dry_run {
        print!("{}", super::plan::render_table(&plan));
        eprintln!("dry run: the plan is valid against the cluster; nothing was changed");
        return Code::Ok;
    }
    let progress = Arc::new(StepsProgress::new(plan.steps.len()));
    let run = match Run::start(client, plan, options(&args.run, &args.cluster), progress.clone()).await {
        Ok(r) => r,
        Err(e) => {
            progress.finish();
            eprintln!("error: {e}");
            return code_of(&e);
        }
    };
    let code = drive(run, false, args.run.until.as_deref()).await;
    progress.finish();
    code
}

async fn continue_run(args: ContinueArgs, rollback: bool) -> Code {
    let client = match super::status::client(&args.cluster).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let progress = Arc::new(StepsProgress::new(0));
    let run = match Run::open(client, options(&args.run, &args.cluster), progress.clone()).await {
        Ok(r) => r,
        Err(e) => {
            progress.finish();
            eprintln!("error: {e}");
            return code_of(&e);
        }
    };
    eprintln!("{} run: {}", if rollback { "rolling back the" } else { "resuming the" }, describe_run(&run));
    progress.set_len(run.plan().steps.len());
    let code = drive(run, rollback, args.run.until.as_deref()).await;
    progress.finish();
    code
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
