//! API faults end to end (docs/reliability.md "API faults"): meshshift talks to the lab's apiserver only
//! through a fault-injecting proxy (`support/faults.rs`) that answers 429, 500 and 503, resets
//! connections (before forwarding, and after the apiserver acted, losing its answer), delays requests,
//! answers 409 to guarded writes and cuts watches, at fixed rates. Under that, with an open-loop prober
//! sending requests through the LoadBalancer the whole time:
//!
//! 1. `apply --until` the step before the switch; someone else then widens the LoadBalancer's selector
//!    to both colours (the colour key removed): `resume` stops with exit 8, naming the Service, the field,
//!    what meshshift expected and what it found, and the selector stays exactly as they set it;
//! 2. the selector put back, a run is killed right after journaling the switch's prior values; someone
//!    else adds a key to the selector: `resume` refuses the guarded write the same way, and again
//!    leaves the selector as they set it;
//! 3. the key removed, `resume` completes the upgrade 1.9.7 -> 1.10.6; `rollback` undoes all of it, and a
//!    fresh `apply --to 1.10.6` completes again.
//!
//! The final cluster is checked object by object, no request through the LoadBalancer may fail, and the
//! proxy must have injected every kind of fault many times, so the test cannot pass vacuously.

mod support;

#[path = "support/faults.rs"]
mod faults;

use std::path::Path;
use std::time::{Duration, Instant};

use faults::{FaultCounts, FaultProxy, FaultRates};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, Patch, PatchParams};
use meshshift_lab::LabOptions;
use meshshift_probe::{ProbeConfig, Prober};
use serde_json::{Value, json};
use support::lab::MeshLab;
use support::{assert_proxies, meshshift_with_env};

/// The issue's rates: 5% 503, 3% 429, 3% 500, 2% resets, 5% delays of 200 ms, 5% 409 on guarded writes;
/// and almost a third of watches cut.
const RATES: FaultRates = FaultRates {
    throttle: 0.03,
    internal: 0.03,
    unavailable: 0.05,
    reset: 0.02,
    delay: 0.05,
    delay_ms: 200,
    conflict: 0.05,
    watch_cut: 0.3,
};

const LB: &str = "Service/istio-ingress/ingress";

/// Runs meshshift through the proxy (off the test's runtime, so the prober keeps its pace); returns the
/// exit code (`None`: killed) and the output.
async fn ms(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend(["--kubeconfig".to_owned(), kubeconfig.display().to_string()]);
    let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    env.push(("MESHSHIFT_SOAK_SECONDS".into(), "1".into()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let run = meshshift_with_env(&args, &env);
        (Some(run.code).filter(|c| *c >= 0), format!("{}{}", run.stdout, run.stderr))
    })
    .await
    .expect("meshshift ran")
}

/// Like [`ms`], but waits out a lease a killed run left behind (exit 9 naming the lock).
async fn ms_after_lease(kubeconfig: &Path, args: &[&str]) -> (Option<i32>, String) {
    let began = Instant::now();
    loop {
        let (code, out) = ms(kubeconfig, args, &[]).await;
        if code == Some(9) && out.contains("the lock") && began.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        return (code, out);
    }
}

async fn selector(client: &kube::Client) -> Value {
    let api: Api<Service> = Api::namespaced(client.clone(), "istio-ingress");
    json!(api.get("ingress").await.expect("lb").spec.and_then(|s| s.selector))
}

/// Someone else sets the LoadBalancer's selector (straight to the apiserver, not through the proxy).
async fn set_selector(client: &kube::Client, selector: Value) {
    let api: Api<Service> = Api::namespaced(client.clone(), "istio-ingress");
    let mut keys = selector.clone();
    for k in self::selector(client).await.as_object().into_iter().flatten().map(|(k, _)| k) {
        if selector.get(k).is_none() {
            keys[k] = Value::Null;
        }
    }
    let patch = json!({"spec": {"selector": keys}});
    api.patch("ingress", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("edit the selector");
}

async fn exists(client: &kube::Client, ns: &str, name: &str) -> bool {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.expect("get").is_some()
}

/// The cluster after a complete upgrade to 1.10.6, read past the proxy.
async fn assert_upgraded(client: &kube::Client, admin_kubeconfig: &Path) {
    let run =
        meshshift_with_env(&["status", "-o", "json", "--kubeconfig", &admin_kubeconfig.display().to_string()], &[]);
    assert_eq!(run.code, 0, "status: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("status json");
    assert_proxies(&report, "bookinfo", "1-10-6", "1.10.6");
    let ns: Api<Namespace> = Api::all(client.clone());
    let labels = json!(ns.get("bookinfo").await.expect("bookinfo").metadata.labels);
    assert_eq!(labels, json!({"istio.io/rev": "1-10-6"}), "bookinfo injected by 1-10-6");
    assert_eq!(selector(client).await, json!({"istio": "ingressgateway", "version": "1-10-6"}), "the LB on green");
    assert!(exists(client, "istio-system", "istiod-1-10-6").await, "istiod 1-10-6 runs");
    assert!(!exists(client, "istio-system", "istiod-1-9-7").await, "istiod 1-9-7 is retired");
    assert!(exists(client, "istio-ingress", "istio-ingressgateway-1-10-6").await, "green runs");
    assert!(!exists(client, "istio-ingress", "istio-ingressgateway-1-9-7").await, "blue is retired");
    let revisions: Vec<&str> =
        report["revisions"].as_array().into_iter().flatten().filter_map(|r| r["revision"].as_str()).collect();
    assert_eq!(revisions, ["1-10-6"]);
}

/// Every kind of fault was injected, many times.
fn assert_faults_injected(c: &FaultCounts) {
    let kinds = [
        ("429", c.throttled, 10),
        ("500", c.internal, 10),
        ("503", c.unavailable, 10),
        ("resets before forwarding", c.resets_before, 2),
        ("resets after the apiserver answered", c.resets_after, 2),
        ("delays", c.delayed, 10),
        // Rarer (a few hundred guarded writes, a few dozen watches): at least one of each.
        ("409s on guarded writes", c.conflicts, 1),
        ("watch cuts", c.watch_cuts, 1),
    ];
    for (what, n, min) in kinds {
        assert!(n >= min, "the proxy injected only {n} {what} (want at least {min}): {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_upgrade_completes_through_api_faults_and_concurrent_selector_edits_are_reported_not_overwritten() {
    let began = Instant::now();
    let MeshLab { cluster, client, url, .. } = MeshLab::start(&LabOptions::full(3)).await;
    let phase = |what: &str| eprintln!("[{:>5.1} s] {what}", began.elapsed().as_secs_f64());
    phase("lab ready, mesh serving");
    let proxy = FaultProxy::start(cluster.kubeconfig(), cluster.dir(), RATES, 0x5eed);
    eprintln!("fault proxy at {} (MESHSHIFT_FAULT_SEED={})", proxy.url(), proxy.seed());
    let kc = proxy.kubeconfig_path().to_path_buf();
    let probe = Prober::start(ProbeConfig::new(vec![url.clone()], 50.0)).expect("prober");

    // The plan, read through the faults.
    let (code, out) = ms(&kc, &["plan", "--to", "1.10.6", "-o", "json"], &[]).await;
    assert_eq!(code, Some(0), "plan through the proxy: {out}");
    let plan: Value = serde_json::from_str(&out[out.find('{').expect("plan json")..]).expect("plan json");
    let ids: Vec<String> =
        plan["steps"].as_array().expect("steps").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect();
    let switch = ids.iter().position(|id| id.contains("switch")).expect("a switch step");
    let (before_switch, switch_id) = (ids[switch - 1].clone(), ids[switch].clone());
    let blue = json!({"istio": "ingressgateway", "version": "1-9-7"});
    phase("planned");

    // 1. Paused before the switch; someone widens the LoadBalancer to both colours by hand.
    let (code, out) = ms(&kc, &["apply", "--to", "1.10.6", "--until", &before_switch], &[]).await;
    assert_eq!(code, Some(0), "apply --until {before_switch} through the faults: {out}");
    assert_eq!(selector(&client).await, blue);
    phase("paused before the switch");
    let theirs = json!({"app": "istio-ingressgateway", "istio": "ingressgateway"});
    set_selector(&client, theirs.clone()).await;
    let (code, out) = ms(&kc, &["resume"], &[]).await;
    assert_eq!(code, Some(8), "resume after someone changed the colour key: {out}");
    for needle in [LB, "spec.selector.version", "was changed by someone else", "expected 1-9-7", "found <absent>"] {
        assert!(out.contains(needle), "the message names {needle:?}: {out}");
    }
    assert_eq!(selector(&client).await, theirs, "their selector is left exactly as they set it");

    phase("colour-key edit reported");

    // 2. Put back; a run dies right after journaling the switch's prior values, then someone adds a key.
    set_selector(&client, blue.clone()).await;
    let kill = format!("{switch_id}:applying");
    let (code, out) = ms(&kc, &["resume", "--lock-seconds", "3"], &[("MESHSHIFT_FAULT_KILL_AT", kill.as_str())]).await;
    assert_eq!(code, None, "killed at {kill}: {out}");
    assert_eq!(selector(&client).await, blue, "nothing written before the kill");
    let theirs = json!({"app": "istio-ingressgateway", "istio": "ingressgateway", "version": "1-9-7"});
    set_selector(&client, theirs.clone()).await;
    let (code, out) = ms_after_lease(&kc, &["resume"]).await;
    assert_eq!(code, Some(8), "resume into a selector someone else changed: {out}");
    for needle in [
        LB,
        "spec.selector was changed by someone else",
        r#"expected {"istio":"ingressgateway","version":"1-9-7"}"#,
        r#"found {"app":"istio-ingressgateway","istio":"ingressgateway","version":"1-9-7"}"#,
    ] {
        assert!(out.contains(needle), "the message names {needle:?}: {out}");
    }
    assert_eq!(selector(&client).await, theirs, "their selector is left exactly as they set it");

    phase("guarded-write edit reported");

    // 3. Put back: the upgrade completes; rolled back and applied afresh, it completes again.
    set_selector(&client, blue.clone()).await;
    let (code, out) = ms(&kc, &["resume"], &[]).await;
    assert_eq!(code, Some(0), "resume through the faults: {out}");
    assert_upgraded(&client, cluster.kubeconfig_path()).await;
    phase("resumed to the end");
    let (code, out) = ms(&kc, &["rollback"], &[]).await;
    assert_eq!(code, Some(0), "rollback through the faults: {out}");
    assert_eq!(selector(&client).await, blue, "rolled back onto blue");
    phase("rolled back");
    let (code, out) = ms(&kc, &["apply", "--to", "1.10.6"], &[]).await;
    assert_eq!(code, Some(0), "apply through the faults: {out}");
    assert_upgraded(&client, cluster.kubeconfig_path()).await;
    phase("applied afresh");

    let counts = proxy.counts();
    eprintln!("fault proxy: {counts}");
    let result = probe.stop().await.expect("prober");
    eprintln!("{}", result.summary.to_text());
    assert!(result.summary.total > 500, "traffic flowed: {}", result.summary.total);
    assert_eq!(result.summary.failed, 0, "no request may fail:\n{}", result.summary.to_text());
    assert_faults_injected(&counts);
    assert_eq!(counts.upstream_errors, 0, "the apiserver itself never failed: {counts}");
}
