//! The lab runs Istio's real 1.9.7 manifests unchanged (`../shared/fixtures`): the istiod chart of
//! revision 1-9-7 with its injector webhook, the legacy ingress gateway chart with its own LoadBalancer
//! Service, and bookinfo with its Gateway and VirtualService; real requests cross them from this process.

mod support;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use meshshift_kube::rollout::wait_rollout;
use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::{LabOptions, TestCluster};
use support::fixture_docs;
use support::mesh::{apply, in_namespace, namespace};

async fn rolled_out(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_rollout(&api, ns, name, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}"));
}

/// Istio's real 1.9.7 manifests: CRDs, base, istiod 1-9-7, the gateway chart with its own LoadBalancer
/// Service, bookinfo with its Gateway and VirtualService.
async fn install_real_1_9_7(client: &kube::Client) {
    let mut cp = fixture_docs("istio-tree/1.9.7/crds/crd-all.gen.yaml");
    cp.extend(fixture_docs("istio-tree/1.9.7/crds/crd-operator.yaml"));
    cp.push(namespace("istio-system", &[]));
    cp.extend(fixture_docs("helm-rendered/1.9.7/base-no-crds.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/istiod-rev-1-9-7.yaml"));
    apply(client, "istio-system", cp).await;
    rolled_out(client, "istio-system", "istiod-1-9-7").await;

    apply(client, "istio-system", fixture_docs("helm-rendered/1.9.7/ingressgateway-rev-1-9-7.yaml")).await;
    let mut apps = vec![namespace("bookinfo", &[("istio.io/rev", "1-9-7")])];
    apps.extend(in_namespace(fixture_docs("istio-tree/1.9.7/bookinfo/bookinfo.yaml"), "bookinfo"));
    apps.extend(in_namespace(fixture_docs("istio-tree/1.9.7/bookinfo/bookinfo-gateway.yaml"), "bookinfo"));
    apply(client, "bookinfo", apps).await;
    rolled_out(client, "istio-system", "istio-ingressgateway").await;
    for d in ["productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"] {
        rolled_out(client, "bookinfo", d).await;
    }
}

/// Every 100 ms: (unix ms, the pods the LoadBalancer's Endpoints list). In a static so that the sampling
/// task can simply be aborted.
static LB_ENDPOINTS: std::sync::Mutex<Vec<(u64, Vec<String>)>> = std::sync::Mutex::new(Vec::new());

async fn endpoint_history(client: kube::Client, namespace: &str, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Endpoints> = Api::namespaced(client, namespace);
    loop {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if let Ok(eps) = api.get(name).await {
            let pods = eps
                .subsets
                .into_iter()
                .flatten()
                .flat_map(|s| s.addresses.into_iter().flatten().chain(s.not_ready_addresses.into_iter().flatten()))
                .filter_map(|a| a.target_ref.and_then(|r| r.name))
                .collect();
            LB_ENDPOINTS.lock().expect("endpoint history").push((t, pods));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn lab_runs_istio_1_9_7_charts_unchanged_shared_fixtures() {
    let cluster = TestCluster::start_lab(std::path::Path::new(env!("CARGO_BIN_EXE_meshshift")), &LabOptions::full(2))
        .unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let client = cluster.client().await.expect("client");
    install_real_1_9_7(&client).await;

    let addr = LoadBalancers::host_addr(cluster.dir(), "istio-system", "istio-ingressgateway", 80)
        .expect("registry")
        .expect("the chart's LoadBalancer Service has a host port");
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            let resp = http.get(format!("http://{addr}{path}").parse().expect("uri")).await.ok()?;
            let status = resp.status().as_u16();
            let rev = resp.headers().get("x-meshshift-revision").and_then(|v| v.to_str().ok()).map(str::to_owned);
            resp.into_body().collect().await.ok()?;
            Some((status, rev))
        }
    };
    let began = Instant::now();
    while get("/productpage").await.map(|r| r.0) != Some(200) {
        assert!(began.elapsed() < Duration::from_secs(60), "the chart's gateway never served bookinfo");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..200 {
        assert_eq!(get("/productpage").await, Some((200, Some("1-9-7".to_owned()))));
    }
    assert_eq!(get("/not-routed").await.map(|r| r.0), Some(404), "only the VirtualService's paths are routed");
}

/// The upgrade engine, starting from Istio's real 1.9.7 manifests: the chart's gateway owns its
/// LoadBalancer Service, whose selector has no colour label, so the switch is make-before-break
/// (`--strategy widen-narrow`: both colours, then green only). Under 50 req/s, no request may fail; afterwards
/// the LoadBalancer selects only green and every bookinfo proxy runs 1.10.6 from 1-10-6.
///
/// `apply` runs on a blocking thread: the prober shares this runtime, and a blocked runtime would
/// queue its requests until after the upgrade instead of sending them during it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_1_9_7_manifests_upgrade_to_1_10_6_widen_narrow_under_traffic() {
    let cluster = TestCluster::start_lab(std::path::Path::new(env!("CARGO_BIN_EXE_meshshift")), &LabOptions::full(3))
        .unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let client = cluster.client().await.expect("client");
    install_real_1_9_7(&client).await;
    let addr = LoadBalancers::host_addr(cluster.dir(), "istio-system", "istio-ingressgateway", 80)
        .expect("registry")
        .expect("the chart's LoadBalancer Service has a host port");
    let url = format!("http://{addr}/productpage");
    support::lab::wait_until_serving("the chart's gateway serves", &url).await;
    let mut config = meshshift_probe::ProbeConfig::new(vec![url], 50.0);
    // A connection per request: each one is balanced afresh, so a green the LoadBalancer selected too early
    // would answer some of them.
    config.headers = vec![("Connection".into(), "close".into())];
    let probe = meshshift_probe::Prober::start(config).expect("prober");
    let endpoints = tokio::spawn(endpoint_history(client.clone(), "istio-system", "istio-ingressgateway"));
    let kc = cluster.kubeconfig_path().to_str().expect("kubeconfig").to_owned();
    let run_dir = cluster.dir().join("upgrade-run");
    let (apply_kc, apply_dir) = (kc.clone(), run_dir.to_str().expect("run dir").to_owned());
    let run = tokio::task::spawn_blocking(move || {
        support::meshshift_with_env(
            &[
                "apply",
                "--to",
                "1.10.6",
                "--strategy",
                "widen-narrow",
                "--health-check-wait",
                "2",
                "--kubeconfig",
                &apply_kc,
                "--run-dir",
                &apply_dir,
            ],
            &[("MESHSHIFT_SOAK_SECONDS", "2")],
        )
    })
    .await
    .expect("apply thread");
    assert_eq!(run.code, 0, "apply failed:\n{}\n{}", run.stdout, run.stderr);

    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "istio-system");
    let selector =
        services.get("istio-ingressgateway").await.expect("lb").spec.and_then(|s| s.selector).unwrap_or_default();
    assert_eq!(selector.get("istio.io/rev").map(String::as_str), Some("1-10-6"), "{selector:?}");
    let status = support::meshshift(&["status", "-o", "json", "--kubeconfig", &kc]);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    let bookinfo_pods: Vec<&serde_json::Value> = report["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["namespace"] == "bookinfo")
        .flat_map(|w| w["pods"].as_array().into_iter().flatten())
        .collect();
    assert!(!bookinfo_pods.is_empty());
    for p in bookinfo_pods {
        assert_eq!(
            (p["proxy"]["revision"].as_str(), p["proxy"]["version"].as_str()),
            (Some("1-10-6"), Some("1.10.6")),
            "{p}"
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    assert!(deployments.get_opt("istiod-1-9-7").await.expect("get").is_none(), "1-9-7 retired");
    let result = probe.stop().await.expect("prober");
    eprintln!("{}", result.summary.to_text());
    assert!(result.summary.total > 200, "traffic flowed");
    // Requests answered by both revisions: the probe ran during the upgrade, not only after it.
    let served: Vec<&str> = result.summary.revisions.keys().map(String::as_str).collect();
    assert_eq!(served, ["1-10-6", "1-9-7"], "{}", result.summary.to_text());
    // The chart's selector has no colour: it was pinned to blue before green existed, so green answered
    // nothing sent before the switch began.
    let timeline = std::fs::read_to_string(run_dir.join("timeline.jsonl")).expect("timeline");
    let events: Vec<serde_json::Value> = timeline.lines().map(|l| serde_json::from_str(l).expect("event")).collect();
    let step_ids: Vec<&str> =
        events.iter().filter(|e| e["phase"] == "starting").filter_map(|e| e["step"].as_str()).collect();
    assert_eq!(
        &step_ids[..3],
        ["01-install-control-plane", "02-pin-load-balancer", "03-deploy-gateway-istio-ingressgateway-1-10-6"]
    );
    let switch_ms = events
        .iter()
        .find(|e| e["phase"] == "starting" && e["step"].as_str().is_some_and(|s| s.ends_with("switch-load-balancer")))
        .and_then(|e| e["t_ms"].as_u64())
        .expect("the switch started");
    endpoints.abort();
    let _ = endpoints.await;
    let history = LB_ENDPOINTS.lock().expect("endpoint history").clone();
    assert!(history.iter().any(|(t, _)| *t < switch_ms), "Endpoints were sampled before the switch");
    for (t, pods) in history.iter().filter(|(t, _)| *t < switch_ms) {
        assert!(
            !pods.iter().any(|p| p.starts_with("istio-ingressgateway-1-10-6")),
            "the LoadBalancer selected green {} ms before the switch: {pods:?}",
            switch_ms - t
        );
    }
    let before_switch =
        |r: &&meshshift_probe::Record| r.sent_us.is_some_and(|us| result.started_unix_ms + us / 1000 < switch_ms);
    let early: Vec<&meshshift_probe::Record> = result.records.iter().filter(before_switch).collect();
    assert!(early.len() > 100, "traffic before the switch: {}", early.len());
    let early_green = early.iter().filter(|r| r.revision.as_deref() == Some("1-10-6")).count();
    assert_eq!(early_green, 0, "green answered {early_green} of {} requests sent before the switch", early.len());
    assert_eq!(result.summary.failed, 0, "no request may fail:\n{}", result.summary.to_text());
}
