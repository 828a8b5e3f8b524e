//! The lab end to end, driven through the real `meshshift` binary: a control plane with emulated nodes,
//! Istio installed by `lab install-istio` (rendered by meshshift), bookinfo by `lab install-bookinfo`, and
//! real HTTP traffic from this process to the LoadBalancer's host port, through the gateway, productpage,
//! reviews and ratings.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::testing::create_namespace;
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::json;
use support::{install_mesh, meshshift, run_ok};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn lab() -> TestCluster {
    let mut opts = LabOptions::full(3);
    opts.propagation_delay = Duration::from_millis(500);
    TestCluster::start_lab(std::path::Path::new(env!("CARGO_BIN_EXE_meshshift")), &opts)
        .unwrap_or_else(|e| panic!("lab did not start: {e}"))
}

/// One GET; the status and the headers that tell who answered, or the transport error.
async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, Option<String>, Option<String>), String> {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().map_err(|e| format!("{e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| format!("{e}"))?;
    let status = resp.status().as_u16();
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (rev, proxy) = (header("x-meshshift-revision"), header("x-meshshift-proxy"));
    resp.into_body().collect().await.map_err(|e| format!("{e}"))?;
    Ok((status, rev, proxy))
}

async fn wait_serving(client: &HttpClient, addr: SocketAddr) {
    let began = Instant::now();
    loop {
        if let Ok((200, _, _)) = get(client, addr, "/productpage").await {
            return;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "ingress never served /productpage");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn lb_addr(cluster: &TestCluster) -> SocketAddr {
    LoadBalancers::host_addr(cluster.dir(), "istio-ingress", "ingress", 80)
        .expect("read loadbalancers.json")
        .expect("the ingress LoadBalancer has a host port")
}

#[tokio::test]
async fn lab_bookinfo_through_the_ingress_answers_every_request() {
    let cluster = lab();
    let dir = cluster.dir().to_str().expect("utf-8").to_owned();
    install_mesh(&dir);
    let addr = lb_addr(&cluster);
    assert!(addr.ip().is_loopback(), "the host reaches the LoadBalancer on loopback: {addr}");
    let client = http_client();
    wait_serving(&client, addr).await;

    let mut failures = Vec::new();
    for _ in 0..1000 {
        match get(&client, addr, "/productpage").await {
            Ok((200, rev, proxy)) => {
                assert_eq!(rev.as_deref(), Some("1-9-7"), "answered by the 1-9-7 gateway");
                assert_eq!(proxy.as_deref(), Some("gateway"));
            }
            other => failures.push(other),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 1000 requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // The plan to 1.10.6 for this mesh: the blue/green sequence, read from the real cluster, nothing changed.
    let kubeconfig = cluster.kubeconfig_path().to_str().expect("utf-8").to_owned();
    let run = meshshift(&["plan", "--to", "1.10.6", "-o", "json", "--kubeconfig", &kubeconfig]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).expect("plan json");
    let ids: Vec<&str> = plan["steps"].as_array().expect("steps").iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "01-install-control-plane",
            "02-deploy-gateway-istio-ingressgateway-1-10-6",
            "03-switch-load-balancer",
            "04-retire-blue-istio-ingressgateway-1-9-7",
            "05-migrate-namespace-bookinfo",
            "06-restart-workloads-bookinfo",
            "07-retire-revision-1-9-7",
        ]
    );
    assert_eq!(plan["steps"][2]["changes"][0]["object"], "Service/istio-ingress/ingress");
    assert_eq!(plan["steps"][5]["changes"].as_array().map(Vec::len), Some(6), "the six bookinfo Deployments restart");

    // Every bookinfo pod was injected by the 1-9-7 istiod through the real webhook.
    let run = meshshift(&["status", "-o", "json", "--kubeconfig", cluster.kubeconfig_path().to_str().expect("utf-8")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let bookinfo: Vec<&serde_json::Value> =
        report["workloads"].as_array().expect("workloads").iter().filter(|w| w["namespace"] == "bookinfo").collect();
    assert_eq!(bookinfo.len(), 6);
    for w in bookinfo {
        for p in w["pods"].as_array().expect("pods") {
            assert_eq!(p["proxy"]["revision"], "1-9-7", "{w}");
            assert_eq!(p["proxy"]["version"], "1.9.7", "{w}");
            assert_eq!(p["ready"], true, "{w}");
        }
    }
}

#[tokio::test]
async fn lab_failure_modes_istiod_loss_gateway_loss_and_selector_switch() {
    let cluster = lab();
    let dir = cluster.dir().to_str().expect("utf-8").to_owned();
    install_mesh(&dir);
    let kube = cluster.client().await.expect("client");
    let addr = lb_addr(&cluster);
    let client = http_client();
    wait_serving(&client, addr).await;

    // A pod created in a namespace labelled for the revision is injected by that revision's istiod.
    create_namespace(&kube, "probe", json!({"istio.io/rev": "1-9-7"})).await;
    let pods: Api<Pod> = Api::namespaced(kube.clone(), "probe");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "app"}, "spec": {"containers": [{"name": "app", "image": "example/app:1", "ports": [{"containerPort": 8080}]}]}})).expect("pod");
    let created = pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let spec = created.spec.expect("spec");
    let proxy = spec.containers.iter().find(|c| c.name == "istio-proxy").expect("injected istio-proxy");
    assert_eq!(proxy.image.as_deref(), Some("docker.io/istio/proxyv2:1.9.7"));
    assert_eq!(created.metadata.labels.as_ref().and_then(|l| l.get("istio.io/rev")).map(String::as_str), Some("1-9-7"));

    // A second gateway colour behind the same LoadBalancer: patching only its selector moves new
    // connections to green after the propagation delay, and with both colours up nothing fails.
    run_ok(&[
        "lab",
        "install-istio",
        "--dir",
        &dir,
        "--version",
        "1.10.6",
        "--gateway",
        "istio-ingress/istio-ingressgateway-1-10-6",
    ]);
    for _ in 0..50 {
        assert!(
            matches!(get(&client, addr, "/productpage").await, Ok((200, Some(r), _)) if r == "1-9-7"),
            "blue serves until the switch"
        );
    }
    let services: Api<Service> = Api::namespaced(kube.clone(), "istio-ingress");
    let select = |rev: &str| json!({"spec": {"selector": {"istio": "ingressgateway", "version": rev}}});
    services
        .patch("ingress", &PatchParams::default(), &Patch::Merge(&select("1-10-6")))
        .await
        .expect("switch selector");
    let began = Instant::now();
    let (mut blue_after_switch, mut failed) = (0, 0);
    loop {
        // A new client per request: new connections, as new users arrive.
        match get(&http_client(), addr, "/productpage").await {
            Ok((200, Some(r), _)) if r == "1-10-6" => break,
            Ok((200, _, _)) => blue_after_switch += 1,
            _ => failed += 1,
        }
        assert!(began.elapsed() < Duration::from_secs(60), "green never served after the switch");
    }
    assert!(blue_after_switch > 0, "new connections move only after the propagation delay");
    assert_eq!(failed, 0, "a selector switch between two serving colours fails no request");
    for _ in 0..50 {
        assert!(
            matches!(get(&http_client(), addr, "/productpage").await, Ok((200, Some(r), _)) if r == "1-10-6"),
            "all new connections go to green"
        );
    }
    services.patch("ingress", &PatchParams::default(), &Patch::Merge(&select("1-9-7"))).await.expect("switch back");
    let began = Instant::now();
    while !matches!(get(&http_client(), addr, "/productpage").await, Ok((200, Some(r), _)) if r == "1-9-7") {
        assert!(began.elapsed() < Duration::from_secs(60), "blue never served after switching back");
    }

    // istiod goes away: running proxies keep serving, but a new pod of the revision never becomes ready.
    let deployments: Api<Deployment> = Api::namespaced(kube.clone(), "istio-system");
    deployments.delete("istiod-1-9-7", &DeleteParams::default()).await.expect("delete istiod");
    let istiod_pods: Api<Pod> = Api::namespaced(kube.clone(), "istio-system");
    let began = Instant::now();
    while !istiod_pods.list(&ListParams::default().labels("istio.io/rev=1-9-7")).await.expect("list").items.is_empty() {
        assert!(began.elapsed() < Duration::from_secs(60), "istiod pods never went away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..100 {
        assert!(
            matches!(get(&client, addr, "/productpage").await, Ok((200, _, _))),
            "running proxies keep serving without istiod"
        );
    }
    let gateways: Api<Deployment> = Api::namespaced(kube.clone(), "istio-ingress");
    gateways
        .patch("istio-ingressgateway-1-9-7", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .expect("scale up");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let gw_pods: Api<Pod> = Api::namespaced(kube.clone(), "istio-ingress");
    let listed = gw_pods.list(&ListParams::default().labels("version=1-9-7")).await.expect("list").items;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed.iter().filter(|p| ready(p)).count(),
        2,
        "the new gateway pod never becomes ready without its istiod"
    );

    // The gateway pods go away: ingress requests fail.
    gateways
        .patch("istio-ingressgateway-1-9-7", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .expect("scale down");
    let began = Instant::now();
    loop {
        if get(&http_client(), addr, "/productpage").await.is_err() {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "requests kept succeeding with no gateway pod");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
