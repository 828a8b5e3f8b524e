//! Crash and rollback at every step of a lab upgrade (1.9.7 -> 1.10.6, the seed's layout, bookinfo) under
//! traffic, through the real binary (docs/reliability.md):
//! - meshshift is killed with SIGKILL at every step, at three points (prior values journaled but nothing
//!   written; written but not journaled; journaled done), and `resume` carries on each time: the final
//!   cluster equals an uninterrupted run's, object by object;
//! - for every step k, a run stopped after k and rolled back leaves the cluster identical to the start.
//!
//! An in-process open-loop prober sends requests through the LoadBalancer the whole time: none may fail.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshshift_lab::LabOptions;
use meshshift_probe::{ProbeConfig, ProbeHandle, Prober};
use serde_json::Value;
use support::lab::MeshLab;
use support::meshshift_with_env;
use support::view::{assert_same, view};

type Lab = MeshLab;

async fn lab() -> Lab {
    MeshLab::start(&LabOptions::full(3)).await
}

/// Runs meshshift (short soak, short lease); returns (exit code, killed by a signal, output).
fn ms(lab: &Lab, args: &[&str], kill_at: Option<&str>) -> (Option<i32>, bool, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--kubeconfig", &lab.kc]);
    if args[0] != "plan" {
        all.extend(["--lock-seconds", "3"]);
    }
    let mut env = vec![("MESHSHIFT_SOAK_SECONDS", "1")];
    if let Some(point) = kill_at {
        env.push(("MESHSHIFT_FAULT_KILL_AT", point));
    }
    let run = meshshift_with_env(&all, &env);
    (Some(run.code).filter(|c| *c >= 0), run.code < 0, format!("{}{}", run.stdout, run.stderr))
}

/// Runs until it is not refused for a lock a killed run left (its lease expires after 3 s).
fn ms_after_lease(lab: &Lab, args: &[&str], kill_at: Option<&str>) -> (Option<i32>, bool, String) {
    let began = Instant::now();
    loop {
        let (code, killed, out) = ms(lab, args, kill_at);
        if code == Some(9) && out.contains("the lock") && began.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        return (code, killed, out);
    }
}

fn step_ids(lab: &Lab, to: &str) -> Vec<String> {
    let (code, _, out) = ms(lab, &["plan", "--to", to, "-o", "json"], None);
    assert_eq!(code, Some(0), "{out}");
    let json_start = out.find('{').expect("plan json");
    let plan: Value = serde_json::from_str(&out[json_start..]).expect("plan json");
    plan["steps"].as_array().expect("steps").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect()
}

/// Restart times differ between runs; everything else must not.
fn without_restart_times(mut v: Value) -> Value {
    for d in v["deployments"].as_object_mut().into_iter().flatten().map(|(_, d)| d) {
        if let Some(a) = d["template_annotations"].as_object_mut()
            && a.contains_key("kubectl.kubernetes.io/restartedAt")
        {
            a.insert("kubectl.kubernetes.io/restartedAt".into(), Value::from("<restarted>"));
        }
    }
    v
}

/// What the test did when, in seconds of the probe, so that a failed request can be placed among the runs.
#[derive(Default)]
struct Timeline(Vec<(f64, String)>);

impl Timeline {
    /// From the probe's wall-clock start (a snapshot would copy every record to say the same).
    fn mark(&mut self, probe: &ProbeHandle, what: impl Into<String>) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.0.push((now_ms.saturating_sub(probe.started_unix_ms()) as f64 / 1000.0, what.into()));
    }
}

async fn no_failures(probe: ProbeHandle, timeline: &Timeline) {
    let result = probe.stop().await.expect("prober");
    eprintln!("{}", result.summary.to_text());
    assert!(result.summary.total > 500, "traffic flowed: {}", result.summary.total);
    let failed: Vec<String> =
        result.records.iter().filter(|r| !r.ok).map(|r| serde_json::to_string(r).unwrap_or_default()).collect();
    let runs: Vec<String> = timeline.0.iter().map(|(s, what)| format!("{s:8.1} s  {what} ended")).collect();
    assert_eq!(
        result.summary.failed,
        0,
        "no request may fail:\n{}\n{}\nthe runs, in seconds of the probe:\n{}",
        result.summary.to_text(),
        failed.join("\n"),
        runs.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_step_and_resumed_ends_like_an_uninterrupted_run() {
    let lab = lab().await;
    let start = view(&lab.client).await;
    let probe = Prober::start(ProbeConfig::new(vec![lab.url.clone()], 50.0)).expect("prober");
    let ids = step_ids(&lab, "1.10.6");
    let points: Vec<String> =
        ids.iter().flat_map(|id| ["applying", "applied", "done"].map(|p| format!("{id}:{p}"))).collect();

    let mut timeline = Timeline::default();
    let (code, killed, out) = ms(&lab, &["apply", "--to", "1.10.6"], Some(&points[0]));
    assert!(killed, "killed at {}: {code:?} {out}", points[0]);
    timeline.mark(&probe, format!("apply killed at {}", points[0]));
    for point in &points[1..] {
        let (code, killed, out) = ms_after_lease(&lab, &["resume"], Some(point));
        assert!(killed, "resume killed at {point}: {code:?}\n{out}");
        timeline.mark(&probe, format!("resume killed at {point}"));
    }
    // Killed right after journaling the last step done: the run is over, and resume says so.
    let (code, _, out) = ms_after_lease(&lab, &["resume"], None);
    assert_eq!(code, Some(9), "{out}");
    assert!(out.contains("the last run is over"), "{out}");
    let crashed = without_restart_times(view(&lab.cluster.client().await.expect("client")).await);

    // The same upgrade without crashes, from the same start.
    let (code, _, out) = ms_after_lease(&lab, &["rollback"], None);
    assert_eq!(code, Some(0), "{out}");
    timeline.mark(&probe, "rollback");
    assert_same(&start, &view(&lab.client).await, "rolled back after the crashed run");
    let (code, _, out) = ms_after_lease(&lab, &["apply", "--to", "1.10.6"], None);
    assert_eq!(code, Some(0), "{out}");
    timeline.mark(&probe, "uninterrupted apply");
    let uninterrupted = without_restart_times(view(&lab.client).await);
    assert_same(&uninterrupted, &crashed, "the crashed-and-resumed run against an uninterrupted one");
    no_failures(probe, &timeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_after_every_step_the_cluster_is_the_start() {
    let lab = lab().await;
    let start = view(&lab.client).await;
    let probe = Prober::start(ProbeConfig::new(vec![lab.url.clone()], 50.0)).expect("prober");
    let mut timeline = Timeline::default();
    for id in step_ids(&lab, "1.10.6") {
        let (code, _, out) = ms_after_lease(&lab, &["apply", "--to", "1.10.6", "--until", &id], None);
        assert_eq!(code, Some(0), "apply --until {id}: {out}");
        timeline.mark(&probe, format!("apply --until {id}"));
        let (code, _, out) = ms_after_lease(&lab, &["rollback"], None);
        assert_eq!(code, Some(0), "rollback after {id}: {out}");
        timeline.mark(&probe, format!("rollback after {id}"));
        assert_same(&start, &view(&lab.client).await, &format!("rolled back after {id}"));
    }
    no_failures(probe, &timeline).await;
}
