//! Traffic gates during `apply`, in the lab: the in-process prober measures users' requests through the
//! LoadBalancer while the upgrade runs; when users start failing mid-upgrade (here: productpage goes away
//! during blue's soak window), the gate breaches, the run rolls back every completed step by itself, and
//! the record says what happened. Prometheus (Debian's, scraping the emulated proxies) gates the steps too. A probed service already failing before the first change is refused
//! with nothing changed.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, Patch, PatchParams};
use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::{Value, json};
use support::install_mesh;
use support::view::{assert_same, view};

async fn scale(client: &kube::Client, name: &str, replicas: i32) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "bookinfo");
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("scale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_failing_mid_upgrade_breach_the_gate_and_the_run_rolls_back() {
    let options = LabOptions::full(3).with_prometheus();
    let cluster = TestCluster::start_lab(Path::new(env!("CARGO_BIN_EXE_meshshift")), &options)
        .unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let dir = cluster.dir().to_str().expect("dir").to_owned();
    let kc = cluster.kubeconfig_path().to_str().expect("kubeconfig").to_owned();
    let client = cluster.client().await.expect("client");
    install_mesh(&dir);
    let addr = LoadBalancers::host_addr(cluster.dir(), "istio-ingress", "ingress", 80)
        .expect("loadbalancers.json")
        .expect("the ingress has a host port");
    let url = format!("http://{addr}/productpage");
    let start = view(&client).await;

    // Broken before any change: refused, nothing written.
    scale(&client, "productpage-v1", 0).await;
    let refused_dir = cluster.dir().join("run-refused");
    let out = Command::new(env!("CARGO_BIN_EXE_meshshift"))
        .args(["apply", "--to", "1.10.6", "--kubeconfig", &kc, "--probe", &url, "--run-dir"])
        .arg(&refused_dir)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run meshshift");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("not healthy before any change"), "{stderr}");
    let journals: Api<ConfigMap> = Api::namespaced(client.clone(), "meshshift");
    assert!(journals.get_opt("meshshift-journal").await.map(|j| j.is_none()).unwrap_or(true), "no run started");
    scale(&client, "productpage-v1", 2).await;

    // Healthy start; users fail during blue's soak window: breach, automatic rollback.
    let run_dir = cluster.dir().join("run-breach");
    let prometheus = cluster.prometheus_url().expect("the lab runs Prometheus").to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshshift"))
        .args(["apply", "--to", "1.10.6", "--kubeconfig", &kc, "--probe", &url, "--probe-rate", "50"])
        .args(["--prometheus", &prometheus, "--prometheus-window", "5", "--run-dir"])
        .arg(&run_dir)
        .env_remove("KUBECONFIG")
        .env("MESHSHIFT_SOAK_SECONDS", "30")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start apply");
    let began = Instant::now();
    while !support::timeline(&run_dir).iter().any(|e| e["step"] == "03-switch-load-balancer" && e["phase"] == "done") {
        assert!(
            began.elapsed() < Duration::from_secs(240),
            "the switch never completed: {:?}",
            support::timeline(&run_dir)
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "apply ended early: {}",
            std::fs::read_to_string(run_dir.join("outcome.json")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scale(&client, "productpage-v1", 0).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "a breach fails the run:\n{stderr}");
    assert!(stderr.contains("traffic gate breached"), "{stderr}");

    let events = support::timeline(&run_dir);
    let breach = events.iter().find(|e| e["phase"] == "breach").expect("a breach event");
    assert_eq!(breach["step"], "04-retire-blue-istio-ingressgateway-1-9-7", "caught during the soak: {breach}");
    for undone in
        ["03-switch-load-balancer", "02-deploy-gateway-istio-ingressgateway-1-10-6", "01-install-control-plane"]
    {
        assert!(events.iter().any(|e| e["step"] == undone && e["phase"] == "undone"), "{undone} undone");
    }
    // Both gates judged the steps before the breach: the prober and Prometheus (real, scraping the proxies).
    for gate in ["prober", "prometheus"] {
        assert!(
            events.iter().any(|e| e["step"] == "03-switch-load-balancer"
                && e["gate"]["name"] == gate
                && e["gate"]["ok"] == true),
            "{gate} passed the switch: {events:?}"
        );
    }
    let outcome: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("outcome.json")).expect("outcome")).expect("json");
    assert_eq!(outcome["outcome"], "rolled-back");
    assert!(outcome["error"].as_str().is_some_and(|e| e.contains("breached")), "{outcome}");
    let probe: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("probe.json")).expect("probe")).expect("json");
    assert!(probe["summary"]["failed"].as_u64().unwrap_or(0) > 0, "the record keeps the failed requests");

    let services: Api<Service> = Api::namespaced(client.clone(), "istio-ingress");
    let selector = services.get("ingress").await.expect("lb").spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(selector.get("version").map(String::as_str), Some("1-9-7"), "switched back to blue");
    scale(&client, "productpage-v1", 2).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "bookinfo");
    meshshift_lab::testing::eventually("productpage back", Duration::from_secs(60), || {
        let api = deployments.clone();
        async move {
            api.get("productpage-v1")
                .await
                .ok()
                .and_then(|d| d.status)
                .and_then(|s| s.ready_replicas)
                .filter(|r| *r == 2)
        }
    })
    .await;
    assert_same(&start, &view(&client).await, "after the automatic rollback");
}
