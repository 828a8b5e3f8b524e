//! Chaos in the lab (docs/reliability.md, "Chaos"): the upgrade 1.9.7 -> 1.10.6 under traffic while
//! something breaks underneath it, through the real binary. Each run ends in one of two states only: the
//! upgrade finished with no failed request seen by its traffic gate (and the cluster fully upgraded), or
//! the run rolled back (by a breach, or by hand after a failed gate) and the cluster equals the start
//! object by object.
//!
//! - in one upgrade: a green gateway pod killed (grace period 0) the moment green answers through the
//!   LoadBalancer after the switch, and the new istiod killed the moment the bookinfo restart begins (its new pods need
//!   1-10-6's injector, which fails closed);
//! - kube-proxy lagging 4 s (a full upgrade with an 8 s soak; and no soak at all), and 8 s, longer than
//!   a gateway's 5 s drain, where only the soak (forward) and the hold after switching back (rollback)
//!   keep users served, and no soak is caught by the traffic gate and rolled back.
//!
//! Besides apply's own prober (keep-alive connections, as browsers and most clients use), an independent
//! in-process prober opens a new connection for every request (`Connection: close`), so the LoadBalancer
//! balances each request afresh: it sees what a keep-alive client pinned to a healthy gateway does not.
//! Every case prints `chaos:` lines with its numbers (docs/reliability.md quotes them); run with
//! `--nocapture` to see them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use meshshift_lab::LabOptions;
use meshshift_lab::testing::eventually;
use meshshift_probe::{ProbeConfig, ProbeHandle, ProbeResult, Prober};
use serde_json::Value;
use support::lab::MeshLab;
use support::view::{assert_same, view};

const SWITCH: &str = "03-switch-load-balancer";
const RETIRE_BLUE: &str = "04-retire-blue-istio-ingressgateway-1-9-7";
const RESTART: &str = "06-restart-workloads-bookinfo";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The shared mesh lab, with the kube-proxy lag it was started with.
struct Lab {
    mesh: MeshLab,
    delay: Duration,
}

impl std::ops::Deref for Lab {
    type Target = MeshLab;
    fn deref(&self) -> &MeshLab {
        &self.mesh
    }
}

/// A lab with kube-proxy lagging `delay`, Istio 1.9.7, bookinfo, and an ingress that serves.
async fn lab(delay: Duration) -> Lab {
    let options = LabOptions { propagation_delay: delay, ..LabOptions::full(3) };
    Lab { mesh: MeshLab::start(&options).await, delay }
}

/// A client that reconnects for every request, at 50/s.
fn reconnecting_client(lab: &Lab) -> ProbeHandle {
    let mut c = ProbeConfig::new(vec![lab.url.clone()], 50.0);
    c.headers = vec![("Connection".into(), "close".into())];
    Prober::start(c).expect("reconnecting client")
}

/// A meshshift run in the background (apply, resume or rollback) with apply's prober on the ingress.
struct Running {
    child: Child,
    dir: PathBuf,
    began: Instant,
}

fn spawn(lab: &Lab, name: &str, args: &[&str], soak_seconds: u64) -> Running {
    let dir = lab.cluster.dir().join(name);
    std::fs::create_dir_all(&dir).expect("run dir");
    let stderr = std::fs::File::create(dir.join("stderr.txt")).expect("stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_meshshift"))
        .args(args)
        .args(["--kubeconfig", &lab.kc, "--probe", &lab.url, "--probe-rate", "50", "--run-dir"])
        .arg(&dir)
        .env_remove("KUBECONFIG")
        .env("MESHSHIFT_SOAK_SECONDS", soak_seconds.to_string())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start meshshift");
    Running { child, dir, began: Instant::now() }
}

/// Waits until the run's timeline shows `step` in `phase`; `false` when the run ended first.
async fn reach(run: &mut Running, step: &str, phase: &str) -> bool {
    while !support::timeline(&run.dir).iter().any(|e| e["step"] == step && e["phase"] == phase) {
        assert!(run.began.elapsed() < Duration::from_secs(300), "{step} never reached {phase}");
        if run.child.try_wait().expect("poll").is_some() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The step the run was in at `t_ms` (its last event before then), and that event's phase.
fn at(dir: &Path, t_ms: u64) -> String {
    support::timeline(dir)
        .iter()
        .rfind(|e| e["t_ms"].as_u64().is_some_and(|t| t <= t_ms) && e["step"].is_string())
        .map(|e| format!("{} {}", e["step"].as_str().unwrap_or_default(), e["phase"].as_str().unwrap_or_default()))
        .unwrap_or_default()
}

/// How a run ended: exit code, `outcome.json`, and apply's prober (`probe.json`).
#[derive(Debug)]
struct Ended {
    code: Option<i32>,
    outcome: String,
    error: String,
    requests: u64,
    failed: u64,
    secs: f64,
    dir: PathBuf,
    stderr: String,
}

impl Ended {
    fn breach_step(&self) -> Option<String> {
        support::timeline(&self.dir)
            .iter()
            .find(|e| e["phase"] == "breach")
            .and_then(|e| e["step"].as_str().map(str::to_owned))
    }

    /// Apply's requests per step, from the run's report (a step undone counts while it is undone too).
    fn steps(&self) -> String {
        let report: Value = std::fs::read_to_string(self.dir.join("report.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let steps: Vec<String> = report["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["requests"].as_u64().is_some_and(|n| n > 0))
            .map(|s| {
                format!(
                    "{} {}/{}",
                    s["id"].as_str().and_then(|id| id.get(..2)).unwrap_or_default(),
                    s["failed"],
                    s["requests"]
                )
            })
            .collect();
        format!("failed/requests per step: {}", steps.join(", "))
    }

    fn describe(&self) -> String {
        let breach = self.breach_step().map(|s| format!(", breach in {s}")).unwrap_or_default();
        format!(
            "{} (exit {:?}) in {:.1} s{breach}; apply's prober {} requests, {} failed ({})",
            self.outcome,
            self.code,
            self.secs,
            self.requests,
            self.failed,
            self.steps()
        )
    }
}

async fn ended(run: Running) -> Ended {
    let Running { child, dir, began } = run;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("wait");
    let read = |name: &str| -> Value {
        std::fs::read_to_string(dir.join(name)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    };
    let (outcome, probe) = (read("outcome.json"), read("probe.json"));
    Ended {
        code: out.status.code(),
        outcome: outcome["outcome"].as_str().unwrap_or("none").to_owned(),
        error: outcome["error"].as_str().unwrap_or_default().to_owned(),
        requests: probe["summary"]["total"].as_u64().unwrap_or(0),
        failed: probe["summary"]["failed"].as_u64().unwrap_or(0),
        secs: began.elapsed().as_secs_f64(),
        stderr: std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default(),
        dir,
    }
}

/// The reconnecting client's failures: how many, and when (ms from `origin`) the first and last were due.
fn failures(r: &ProbeResult, origin: u64) -> (u64, Option<(i64, i64)>) {
    let times: Vec<i64> = r
        .records
        .iter()
        .filter(|x| x.failed())
        .map(|x| (r.started_unix_ms + x.scheduled_us / 1000) as i64 - origin as i64)
        .collect();
    let span = times.iter().min().zip(times.iter().max()).map(|(a, b)| (*a, *b));
    (r.summary.failed, span)
}

fn client_line(r: &ProbeResult) -> String {
    let mut kinds: Vec<String> = r.summary.errors.iter().map(|(k, n)| format!("{k:?} {n}")).collect();
    kinds.extend(r.summary.statuses.iter().filter(|(s, _)| **s >= 400).map(|(s, n)| format!("HTTP {s} {n}")));
    format!(
        "{} requests, {} failed{}",
        r.summary.total,
        r.summary.failed,
        if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) }
    )
}

/// After a finished upgrade: the LoadBalancer on green, nothing of 1-9-7 left, every proxy 1.10.6, both
/// green gateway replicas ready (the killed one replaced).
async fn assert_upgraded(lab: &Lab) {
    let deployments: Api<Deployment> = Api::namespaced(lab.client.clone(), "istio-ingress");
    eventually("green has 2 ready replicas", Duration::from_secs(60), || {
        let api = deployments.clone();
        async move {
            let d = api.get("istio-ingressgateway-1-10-6").await.ok()?;
            d.status.and_then(|s| s.ready_replicas).filter(|r| *r == 2)
        }
    })
    .await;
    let v = view(&lab.client).await;
    assert_eq!(v["services"]["istio-ingress/ingress"]["selector"]["version"], "1-10-6", "{v}");
    let text =
        |section: &str| v[section].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    for section in ["deployments", "services", "mutating", "config_maps"] {
        assert!(text(section).iter().all(|k| !k.contains("1-9-7")), "{section} still hold 1-9-7: {v}");
    }
    let proxies = v["proxies"].as_object().expect("proxies");
    assert!(proxies.keys().all(|k| k.contains(":1.10.6") && !k.contains("1.9.7")), "{proxies:?}");
    let count = |prefix: &str| {
        proxies.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, n)| n.as_u64().unwrap_or(0)).sum::<u64>()
    };
    assert_eq!(count("bookinfo/"), 12, "{proxies:?}");
    assert_eq!(count("istio-ingress/istio-ingressgateway-1-10-6 "), 2, "{proxies:?}");
}

/// The two states a chaos run may end in: finished with no failure seen by apply's gate and the cluster
/// upgraded, or rolled back (by a breach, or by hand after a failed step) to exactly the start.
async fn assert_consistent(lab: &Lab, start: &Value, e: &Ended) {
    match (e.code, e.outcome.as_str()) {
        (Some(0), "finished") => {
            assert_eq!(e.failed, 0, "a finished run passed every traffic gate: {e:?}");
            assert_upgraded(lab).await;
        }
        (Some(8), "rolled-back") => {
            assert!(e.error.contains("traffic gate breached"), "{e:?}");
            assert_same(start, &view(&lab.client).await, "after the automatic rollback");
        }
        (Some(_), "failed") => {
            // A gate that timed out stops the run where it is; the operator's next move is a rollback.
            let back = ended(spawn(lab, "run-rollback-after-failure", &["rollback"], 2)).await;
            assert_eq!(back.code, Some(0), "rollback after the failed run: {}", back.stderr);
            assert_same(start, &view(&lab.client).await, "after rolling back the failed run");
        }
        _ => panic!("neither finished nor rolled back: {e:?}\n{}", e.stderr),
    }
}

async fn kill(client: &kube::Client, namespace: &str, selector: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods.list(&ListParams::default().labels(selector)).await.expect("list pods");
    let victim = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find_map(|p| p.metadata.name.clone())
        .unwrap_or_else(|| panic!("no pod {namespace}/{selector} to kill"));
    let force = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    pods.delete(&victim, &force).await.expect("delete pod with grace period 0");
    victim
}

/// Kills a green gateway pod the moment green answers through the LoadBalancer: the switch has reached
/// the data plane, and kube-proxy will keep balancing new connections to the dead pod for its lag.
/// (Killed at the selector write instead, the Endpoints without the pod reach kube-proxy within
/// milliseconds of those with it: 0 to 2 failed requests, too little to show anything.)
async fn kill_green_once_it_serves(lab: &Lab, run: &mut Running, client: &ProbeHandle) -> (String, u64) {
    assert!(reach(run, SWITCH, "applying").await, "the run ended before the switch");
    while !client.snapshot().summary.revisions.contains_key("1-10-6") {
        assert!(run.began.elapsed() < Duration::from_secs(300), "green never answered through the LoadBalancer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = now_ms();
    (kill(&lab.client, "istio-ingress", "version=1-10-6").await, killed_at)
}

/// Kills the 1-10-6 istiod the moment the bookinfo restart begins; returns the pod, when, and when a
/// replacement was ready. `None` when the run ended before the restart.
async fn kill_istiod_at_the_restart(lab: &Lab, run: &mut Running) -> Option<(String, u64, u64)> {
    if !reach(run, RESTART, "applying").await {
        return None;
    }
    let killed_at = now_ms();
    let victim = kill(&lab.client, "istio-system", "app=istiod,istio.io/rev=1-10-6").await;
    let pods: Api<Pod> = Api::namespaced(lab.client.clone(), "istio-system");
    let back = eventually("a new 1-10-6 istiod is ready", Duration::from_secs(120), || {
        let (pods, victim) = (pods.clone(), victim.clone());
        async move {
            let list = pods.list(&ListParams::default().labels("app=istiod,istio.io/rev=1-10-6")).await.ok()?;
            list.items
                .iter()
                .filter(|p| p.metadata.name.as_deref() != Some(&victim))
                .any(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .then(now_ms)
        }
    })
    .await;
    Some((victim, killed_at, back))
}

/// Pod creations the ReplicaSets of bookinfo were refused (the injector fails closed without istiod).
async fn refused_creations(lab: &Lab) -> String {
    let events: Api<Event> = Api::namespaced(lab.client.clone(), "bookinfo");
    let refused: Vec<(i32, String)> = events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|ev| ev.reason.as_deref() == Some("FailedCreate"))
        .map(|ev| (ev.count.unwrap_or(1), ev.message.unwrap_or_default()))
        .collect();
    let total: i32 = refused.iter().map(|(n, _)| n).sum();
    match refused.first() {
        None => "none".into(),
        Some((_, first)) => format!("{total} ({first})"),
    }
}

/// Both process kills in one upgrade (one lab, one run: they are 3 steps apart, and the report keeps
/// each step's requests apart): a green gateway pod the moment green answers through the LoadBalancer,
/// then the new istiod the moment the bookinfo restart begins. If the first kill rolls the run back,
/// a second run from the restored start takes the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_gateway_pod_and_new_istiod_killed_mid_upgrade() {
    let lab = lab(Duration::from_secs(1)).await;
    let start = view(&lab.client).await;
    let client = reconnecting_client(&lab);
    let mut run = spawn(&lab, "run-kills", &["apply", "--to", "1.10.6"], 2);
    let (gateway, gateway_at) = kill_green_once_it_serves(&lab, &mut run, &client).await;
    let mut istiod = kill_istiod_at_the_restart(&lab, &mut run).await;
    let e = ended(run).await;
    let c = client.stop().await.expect("client");
    let (_, span) = failures(&c, gateway_at);
    eprintln!(
        "chaos: green gateway {gateway} killed at {}; reconnecting client's failures due {span:?} ms from the kill",
        at(&e.dir, gateway_at)
    );
    if let Some((pod, killed_at, back)) = &istiod {
        eprintln!(
            "chaos: istiod {pod} killed at {}, a new one ready {} ms later; pod creations refused meanwhile: {}",
            at(&e.dir, *killed_at),
            back.saturating_sub(*killed_at),
            refused_creations(&lab).await
        );
    }
    eprintln!("chaos: both kills, full upgrade: {}; reconnecting client {}", e.describe(), client_line(&c));
    assert_consistent(&lab, &start, &e).await;
    if e.outcome == "finished" && c.summary.failed > 0 {
        // Failures apply's gate did not attribute to a breach (a finished run is re-judged over its whole
        // traffic, so these are the reconnecting client's alone), bounded: only new connections balanced
        // to the dead pod before kube-proxy dropped it fail. The istiod kill fails nothing: old pods serve
        // (maxUnavailable 0) until new ones are ready.
        let (first, last) = span.expect("failure times");
        let bound = lab.delay.as_millis() as i64 + 3000;
        assert!(
            first >= -1000 && last <= bound,
            "failures due {first}..{last} ms from the gateway kill, beyond {bound} ms"
        );
    }
    if istiod.is_none() {
        // The gateway kill rolled the run back before the restart (checked above): again, for istiod.
        let client = reconnecting_client(&lab);
        let mut run = spawn(&lab, "run-kill-istiod", &["apply", "--to", "1.10.6"], 2);
        istiod = kill_istiod_at_the_restart(&lab, &mut run).await;
        let e = ended(run).await;
        let c = client.stop().await.expect("client");
        eprintln!(
            "chaos: istiod killed at the restart ({istiod:?}): {}; reconnecting client {}; refused: {}",
            e.describe(),
            client_line(&c),
            refused_creations(&lab).await
        );
        assert!(istiod.is_some(), "the second run reached the restart: {}", e.stderr);
        assert_consistent(&lab, &start, &e).await;
        if e.outcome == "finished" {
            assert_eq!(c.summary.failed, 0, "{}", c.summary.to_text());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_propagating_in_4s_full_upgrade_with_an_8s_soak() {
    let lab = lab(Duration::from_secs(4)).await;
    let start = view(&lab.client).await;
    let client = reconnecting_client(&lab);
    let e = ended(spawn(&lab, "run-lag4-soak8", &["apply", "--to", "1.10.6"], 8)).await;
    let c = client.stop().await.expect("client");
    eprintln!(
        "chaos: 4 s propagation, soak 8 s, full upgrade: {}; reconnecting client {}",
        e.describe(),
        client_line(&c)
    );
    assert_eq!((e.code, e.outcome.as_str()), (Some(0), "finished"), "{}", e.stderr);
    assert_consistent(&lab, &start, &e).await;
    assert_eq!(c.summary.failed, 0, "blue serves while kube-proxy lags: {}", c.summary.to_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_propagating_in_4s_without_a_soak() {
    let lab = lab(Duration::from_secs(4)).await;
    let start = view(&lab.client).await;
    let client = reconnecting_client(&lab);
    let e = ended(spawn(&lab, "run-lag4-soak0", &["apply", "--to", "1.10.6", "--until", RETIRE_BLUE], 0)).await;
    let c = client.stop().await.expect("client");
    eprintln!(
        "chaos: 4 s propagation, no soak, until {RETIRE_BLUE}: {}; reconnecting client {}",
        e.describe(),
        client_line(&c)
    );
    // Blue's 5 s drain outlasts a 4 s lag: whatever happens, the gate must agree with what users saw.
    match (e.code, e.outcome.as_str()) {
        (Some(0), "paused") => assert_eq!(e.failed, 0, "a paused run passed its gates: {e:?}"),
        _ => assert_consistent(&lab, &start, &e).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_propagating_in_8s_longer_than_a_drain() {
    let lab = lab(Duration::from_secs(8)).await;
    let start = view(&lab.client).await;

    // A soak longer than the lag: blue serves until every load balancer follows the switch.
    let client = reconnecting_client(&lab);
    let e = ended(spawn(&lab, "run-lag8-soak10", &["apply", "--to", "1.10.6", "--until", RETIRE_BLUE], 10)).await;
    let c = client.stop().await.expect("client");
    eprintln!(
        "chaos: 8 s propagation, soak 10 s, until {RETIRE_BLUE}: {}; reconnecting client {}",
        e.describe(),
        client_line(&c)
    );
    assert_eq!((e.code, e.outcome.as_str(), e.failed), (Some(0), "paused", 0), "{}", e.stderr);
    assert_eq!(c.summary.failed, 0, "{}", c.summary.to_text());

    // Rolled back: green keeps serving for the soak after the switch back, before it is deleted.
    let client = reconnecting_client(&lab);
    let e = ended(spawn(&lab, "run-lag8-rollback", &["rollback"], 10)).await;
    let c = client.stop().await.expect("client");
    eprintln!(
        "chaos: 8 s propagation, rollback with a 10 s hold: {}; reconnecting client {}",
        e.describe(),
        client_line(&c)
    );
    assert_eq!((e.code, e.outcome.as_str()), (Some(0), "rolled-back"), "{}", e.stderr);
    assert_same(&start, &view(&lab.client).await, "after the rollback");
    assert_eq!((e.failed, c.summary.failed), (0, 0), "{}", c.summary.to_text());

    // No soak: blue drains (5 s) and goes while the load balancer still sends to it. The gate sees the
    // resets and rolls back; with no soak there is no hold either, so the rollback drops requests too.
    let client = reconnecting_client(&lab);
    let e = ended(spawn(&lab, "run-lag8-soak0", &["apply", "--to", "1.10.6", "--until", RETIRE_BLUE], 0)).await;
    let c = client.stop().await.expect("client");
    eprintln!(
        "chaos: 8 s propagation, no soak, until {RETIRE_BLUE}: {}; reconnecting client {}",
        e.describe(),
        client_line(&c)
    );
    assert_eq!((e.code, e.outcome.as_str()), (Some(8), "rolled-back"), "the gate catches it: {}", e.stderr);
    assert_eq!(e.breach_step().as_deref(), Some(RETIRE_BLUE), "{e:?}");
    assert!(e.failed > 0 && c.summary.failed > 0);
    assert_consistent(&lab, &start, &e).await;
}
