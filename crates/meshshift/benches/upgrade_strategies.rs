//! Blue/green (`meshshift apply`) against an in-place upgrade (what `istioctl upgrade` does: new images in
//! the running Deployments), side by side in one run, each in a fresh lab with the same mesh (Istio 1.9.7,
//! legacy gateway behind the user's LoadBalancer, bookinfo with 2 replicas) under 200 requests/s through the
//! LoadBalancer; then the blue/green run's wall time against its unavoidable waits (soak windows, rollouts,
//! drains) from its timeline. Run: `cargo bench -p meshshift --bench upgrade_strategies`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::Value;
use support::install_mesh;

const BIN: &str = env!("CARGO_BIN_EXE_meshshift");
const RATE: &str = "200";
const SOAK_SECONDS: &str = "10";
/// Requests scheduled this long after a disruptive action ends still count for it.
const AFTER: u64 = 5_000;
/// The in-place run's probe: 15 s of steady state, then the actions (about 75 s, most of it the old
/// istiod's termination), then the rest.
const IN_PLACE_PROBE_S: u64 = 110;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// One request of a probe's JSON-lines record, placed on the wall clock.
struct Req {
    at_ms: u64,
    latency_us: u64,
    ok: bool,
}

fn read_records(path: &Path, started_unix_ms: u64) -> Vec<Req> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| Req {
            at_ms: started_unix_ms + r["scheduled_us"].as_u64().unwrap_or(0) / 1000,
            latency_us: r["latency_us"].as_u64().unwrap_or(0),
            ok: r["ok"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// Requests, failed, p99 (ms, nearest rank, failed included) of the requests scheduled in `[from, to)`.
fn window(reqs: &[Req], from: u64, to: u64) -> (usize, usize, f64) {
    let mut lat: Vec<u64> = reqs.iter().filter(|r| r.at_ms >= from && r.at_ms < to).map(|r| r.latency_us).collect();
    let failed = reqs.iter().filter(|r| r.at_ms >= from && r.at_ms < to && !r.ok).count();
    lat.sort_unstable();
    let p99 =
        if lat.is_empty() { 0.0 } else { lat[((lat.len() as f64 * 0.99).ceil() as usize).max(1) - 1] as f64 / 1000.0 };
    (lat.len(), failed, p99)
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn lab() -> (TestCluster, String, String) {
    let lab = TestCluster::start_lab(Path::new(BIN), &LabOptions::full(3)).expect("lab");
    install_mesh(lab.dir().to_str().expect("utf-8"));
    let lb = LoadBalancers::host_addr(lab.dir(), "istio-ingress", "ingress", 80).expect("registry").expect("host port");
    let kc = lab.kubeconfig_path().to_str().expect("utf-8").to_owned();
    (lab, kc, format!("http://{lb}/productpage"))
}

/// `meshshift probe URL --rate 200 --duration D --out FILE -o json`: returns its `started_unix_ms`.
fn probe_cmd(url: &str, duration: &str, out: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["probe", url, "--rate", RATE, "--duration", duration, "-o", "json", "--out"]).arg(out);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn probe_started(stdout: &[u8]) -> u64 {
    let v: Value = serde_json::from_slice(stdout).expect("probe -o json");
    v["started_unix_ms"].as_u64().expect("started_unix_ms")
}

fn kubectl(kc: &str, args: &[&str]) -> String {
    let out = Command::new("kubectl").arg("--kubeconfig").arg(kc).args(args).output().expect("run kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct BlueGreen {
    steady: (usize, usize, f64),
    totals: (u64, u64, f64),
    switch: (usize, usize, f64),
    switch_ms: u64,
    outcome: String,
    process_s: f64,
    events: Vec<Value>,
    plan: Value,
}

fn blue_green(runs: &Path) -> BlueGreen {
    let (lab, kc, url) = lab();
    std::thread::sleep(Duration::from_secs(2));
    // Steady state: 20 s of the same traffic before the upgrade.
    let steady_file = runs.join("bg-steady.jsonl");
    let out = probe_cmd(&url, "20s", &steady_file).output().expect("probe");
    let steady = window(&read_records(&steady_file, probe_started(&out.stdout)), 0, u64::MAX);

    let run_dir = runs.join("bg-run");
    let began = Instant::now();
    let out = Command::new(BIN)
        .args(["apply", "--to", "1.10.6", "--kubeconfig", &kc, "--probe", &url, "--probe-rate", RATE, "--run-dir"])
        .arg(&run_dir)
        .env_remove("KUBECONFIG")
        .env("MESHSHIFT_SOAK_SECONDS", SOAK_SECONDS)
        .current_dir(runs)
        .output()
        .expect("run apply");
    let process_s = began.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!("apply exited {:?}:\n{}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    }
    let report = json_file(&run_dir.join("report.json"));
    let t = &report["totals"];
    let totals =
        (t["requests"].as_u64().unwrap_or(0), t["failed"].as_u64().unwrap_or(0), t["p99_ms"].as_f64().unwrap_or(0.0));
    let probe = json_file(&run_dir.join("probe.json"));
    let reqs = read_records(&run_dir.join("requests.jsonl"), probe["started_unix_ms"].as_u64().expect("started"));
    let events = support::timeline(&run_dir);
    let sw: Vec<u64> =
        events.iter().filter(|e| e["step"] == "03-switch-load-balancer").filter_map(|e| e["t_ms"].as_u64()).collect();
    let (from, to) = (sw.iter().min().copied().unwrap_or(0), sw.iter().max().copied().unwrap_or(0));
    drop(lab);
    BlueGreen {
        steady,
        totals,
        switch: window(&reqs, from, to + AFTER),
        switch_ms: to - from,
        outcome: report["outcome"].as_str().unwrap_or("?").to_owned(),
        process_s,
        events,
        plan: json_file(&run_dir.join("plan.json")),
    }
}

struct InPlace {
    steady: (usize, usize, f64),
    total: (usize, usize, f64),
    windows: Vec<(String, u64, u64)>,
    reqs: Vec<Req>,
    actions: Vec<(String, u64)>,
}

fn in_place(runs: &Path) -> InPlace {
    let (lab, kc, url) = lab();
    std::thread::sleep(Duration::from_secs(2));
    let file = runs.join("inplace-requests.jsonl");
    let probe = probe_cmd(&url, &format!("{}s", IN_PLACE_PROBE_S), &file).spawn().expect("start probe");
    let t0 = now_ms();
    std::thread::sleep(Duration::from_secs(15));
    let mut actions = Vec::new();
    let mut windows = Vec::new();
    let act = |what: String, actions: &mut Vec<(String, u64)>| {
        actions.push((what, now_ms()));
    };
    let retag = |image: &str| image.rsplit_once(':').map(|(hub, _)| format!("{hub}:1.10.6")).expect("tagged image");

    // istiod in place, then the gateway's proxy in place, then every workload restarted.
    for (ns, deploy, container) in
        [("istio-system", "istiod-1-9-7", "discovery"), ("istio-ingress", "istio-ingressgateway-1-9-7", "istio-proxy")]
    {
        let image = kubectl(
            &kc,
            &[
                "-n",
                ns,
                "get",
                "deployment",
                deploy,
                "-o",
                &format!("jsonpath={{.spec.template.spec.containers[?(@.name==\"{container}\")].image}}"),
            ],
        );
        let start = now_ms();
        act(format!("set image {ns}/{deploy} {container}: {image} -> {}", retag(&image)), &mut actions);
        kubectl(
            &kc,
            &["-n", ns, "set", "image", &format!("deployment/{deploy}"), &format!("{container}={}", retag(&image))],
        );
        kubectl(&kc, &["-n", ns, "rollout", "status", &format!("deployment/{deploy}"), "--timeout=300s"]);
        act(format!("rollout of {ns}/{deploy} complete"), &mut actions);
        if ns == "istio-system" {
            // The old istiod keeps answering injection calls (the apiserver's connection stays on it) for its
            // whole termination grace period: restarted pods would get 1.9.7 sidecars again.
            while kubectl(&kc, &["-n", ns, "get", "pods", "-o", "jsonpath={.items[*].spec.containers[*].image}"])
                .contains(&image)
            {
                assert!(now_ms() < start + 120_000, "the old istiod pod did not go away");
                std::thread::sleep(Duration::from_millis(500));
            }
            act(format!("old {deploy} pod gone"), &mut actions);
        }
        windows.push((format!("{deploy} restart (+5 s)"), start, now_ms() + AFTER));
    }
    let names = kubectl(&kc, &["-n", "bookinfo", "get", "deployments", "-o", "jsonpath={.items[*].metadata.name}"]);
    let start = now_ms();
    for d in names.split_whitespace() {
        act(format!("rollout restart bookinfo/{d}"), &mut actions);
        kubectl(&kc, &["-n", "bookinfo", "rollout", "restart", &format!("deployment/{d}")]);
        kubectl(&kc, &["-n", "bookinfo", "rollout", "status", &format!("deployment/{d}"), "--timeout=300s"]);
    }
    act("bookinfo restarts complete".into(), &mut actions);
    windows.push(("bookinfo restarts (+5 s)".into(), start, now_ms() + AFTER));
    let images = kubectl(
        &kc,
        &[
            "get",
            "pods",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} deleting={.metadata.deletionTimestamp}: {.spec.containers[*].image}{\"\\n\"}{end}",
        ],
    );
    let live: Vec<&str> = images.lines().filter(|l| l.starts_with("bookinfo/") && l.contains("deleting=:")).collect();
    let upgraded = live.iter().filter(|l| l.contains("proxyv2:1.10.6")).count();
    act(format!("afterwards: {upgraded} of {} live bookinfo pods run proxyv2:1.10.6", live.len()), &mut actions);
    let out = probe.wait_with_output().expect("probe");
    assert!(now_ms() < t0 + IN_PLACE_PROBE_S * 1000 + 12_000, "the in-place actions outlasted the probe");
    let started = probe_started(&out.stdout);
    let reqs = read_records(&file, started);
    let first = actions.first().map(|a| a.1).unwrap_or(u64::MAX);
    eprintln!("in-place: pods afterwards:\n{images}");
    drop(lab);
    InPlace { steady: window(&reqs, 0, first), total: window(&reqs, 0, u64::MAX), windows, reqs, actions }
}

/// Time from each timeline event to the next, by what the engine was doing (the event's `detail`).
/// Wall time, time per category, time per step.
type Breakdown = (u64, Vec<(&'static str, u64)>, Vec<(String, u64)>);

fn breakdown(events: &[Value]) -> Breakdown {
    let mut cats: Vec<(&'static str, u64)> = [
        "soak",
        "rollout/drain (new pods ready, old pods terminated)",
        "gates and checks",
        "writes and step bookkeeping",
        "after a soak: writes, foreground deletes (retired pods terminating)",
    ]
    .iter()
    .map(|c| (*c, 0))
    .collect();
    let mut per_step: Vec<(String, u64)> = Vec::new();
    let ts: Vec<u64> = events.iter().filter_map(|e| e["t_ms"].as_u64()).collect();
    let wall = ts.last().copied().unwrap_or(0) - ts.first().copied().unwrap_or(0);
    for (e, next) in events.iter().zip(events.iter().skip(1)) {
        let d = next["t_ms"].as_u64().unwrap_or(0) - e["t_ms"].as_u64().unwrap_or(0);
        let detail = e["detail"].as_str().unwrap_or("");
        let phase = e["phase"].as_str().unwrap_or("");
        let soak_ms = detail
            .strip_prefix("soaking ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n * 1000);
        if let Some(soak) = soak_ms {
            // After the soak, a step writes without a detail; retiring the revision deletes in the foreground,
            // i.e. waits for the retired istiod's pods to terminate.
            cats[0].1 += d.min(soak);
            cats[4].1 += d.saturating_sub(soak);
        }
        let cat = if soak_ms.is_some() {
            usize::MAX
        } else if detail.starts_with("waiting for")
            // Retiring blue verifies that its pods are gone: their drain.
            || (phase == "verifying" && e["step"].as_str().is_some_and(|s| s.contains("retire-blue")) && e["gate"].is_null())
            || detail.starts_with("waiting:")
            || (detail.starts_with("restarting ") && !detail.contains("workload(s)"))
        {
            1
        } else if phase == "verifying"
            || e.get("gate").is_some_and(|g| !g.is_null())
            || detail.starts_with("probing")
            || detail.starts_with("dry-run")
        {
            2
        } else {
            3
        };
        if cat != usize::MAX {
            cats[cat].1 += d;
        }
        let step = e["step"].as_str().unwrap_or("").to_owned();
        match per_step.iter_mut().find(|(s, _)| *s == step) {
            Some(s) => s.1 += d,
            None => per_step.push((step, d)),
        }
    }
    (wall, cats, per_step)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let sh = |c: &str| {
        Command::new("sh")
            .args(["-c", c])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    format!("{} cores ({cpu}), {}; load before: `{}`", sh("nproc"), sh("date -u +%Y-%m-%dT%H:%MZ"), sh("uptime"))
}

fn main() {
    let before = machine();
    let runs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("upgrade_strategies-{}", now_ms()));
    std::fs::create_dir_all(&runs).expect("mkdir");
    eprintln!("run records in {}", runs.display());

    let bg = blue_green(&runs);
    let ip = in_place(&runs);
    let after = Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    println!("{before}; load after: `{after}`\n");
    println!(
        "| strategy (200 req/s through the LB) | requests | failed | p99 overall | steady-state p99 | p99 in the disruptive window | failed in it |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| blue/green: `meshshift apply --to 1.10.6` (soak {SOAK_SECONDS} s), outcome {} | {} | {} | {:.1} ms | {:.1} ms (20 s before, {} req, {} failed) | {:.1} ms (LB switch {:.1} s + 5 s, {} req) | {} |",
        bg.outcome,
        bg.totals.0,
        bg.totals.1,
        bg.totals.2,
        bg.steady.2,
        bg.steady.0,
        bg.steady.1,
        bg.switch.2,
        bg.switch_ms as f64 / 1000.0,
        bg.switch.0,
        bg.switch.1
    );
    for (name, from, to) in &ip.windows {
        let w = window(&ip.reqs, *from, *to);
        println!(
            "| in place: {name} | {} | {} | {:.1} ms | {:.1} ms ({} req before the first change, {} failed) | {:.1} ms ({:.1} s, {} req) | {} |",
            ip.total.0,
            ip.total.1,
            ip.total.2,
            ip.steady.2,
            ip.steady.0,
            ip.steady.1,
            w.2,
            (to - from) as f64 / 1000.0,
            w.0,
            w.1
        );
    }
    let t0 = ip.actions.first().map(|a| a.1).unwrap_or(0);
    println!("\nin-place actions:");
    for (what, t) in &ip.actions {
        println!("- t+{:.1} s: {what}", (t - t0) as f64 / 1000.0);
    }

    let (wall, cats, per_step) = breakdown(&bg.events);
    let waits = cats[0].1 + cats[1].1 + cats[4].1;
    println!(
        "\nblue/green wall time (first step start to last step done): {:.1} s; apply process: {:.1} s",
        wall as f64 / 1000.0,
        bg.process_s
    );
    println!(
        "plan soak per retire-blue step: {:?}",
        bg.plan["steps"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["action"]["soak_seconds"].as_u64()).collect::<Vec<_>>())
    );
    println!("\n| where the wall time goes | time | share |\n|---|---|---|");
    for (c, d) in &cats {
        println!("| {c} | {:.1} s | {:.0}% |", *d as f64 / 1000.0, *d as f64 * 100.0 / wall.max(1) as f64);
    }
    println!(
        "| **wall / unavoidable waits (soak + rollout/drain + retired pods terminating)** | {:.1} s / {:.1} s | **{:.2}x** |",
        wall as f64 / 1000.0,
        waits as f64 / 1000.0,
        wall as f64 / waits.max(1) as f64
    );
    println!("\n| step | time |\n|---|---|");
    for (s, d) in &per_step {
        println!("| {s} | {:.1} s |", *d as f64 / 1000.0);
    }
    println!("\ntimeline:");
    let first = bg.events.first().and_then(|e| e["t_ms"].as_u64()).unwrap_or(0);
    for e in &bg.events {
        println!(
            "  {:>7.2} {} {} {} {}",
            (e["t_ms"].as_u64().unwrap_or(0) - first) as f64 / 1000.0,
            e["step"].as_str().unwrap_or(""),
            e["phase"].as_str().unwrap_or(""),
            e["detail"].as_str().unwrap_or(""),
            if e["gate"].is_null() { String::new() } else { e["gate"].to_string() }
        );
    }
}
