//! The lab's Prometheus end to end: a real Prometheus (Debian's package) inside the lab discovers the
//! emulated proxies through the lab's apiserver, scrapes them every second, counts the requests this test
//! sends through the ingress, and the upgrade gate (`meshshift_prom::PromGate`) reads it: passing while
//! bookinfo serves, breaching once productpage is gone and the gateway answers 503.
//!
//! Istio 1.10.6 (istiod, an injected gateway behind a LoadBalancer) and bookinfo are rendered by
//! `meshshift_core::render` and created as written. Traffic goes from this process to the LoadBalancer's
//! host port on 127.0.0.1 only, in bounded loops.
//!
//! Needs root (or unprivileged user namespaces), the binaries from `scripts/install-deps.sh` and
//! `/usr/bin/prometheus` (`apt-get install prometheus`); run `cargo build -p meshshift-lab --examples`
//! first.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use meshshift_core::render::{self, BaseSpec, BookinfoSpec, ControlPlaneSpec, GatewaySpec, LoadBalancerSpec};
use meshshift_core::version::IstioVersion;
use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::testing::{create_namespace, create_object, eventually, example_supervisor, process_alive};
use meshshift_lab::{LabOptions, TestCluster};
use meshshift_prom::{Breach, PromGate, Sample};
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

const VERSION: &str = "1.10.6";
/// Requests counted exactly.
const COUNTED: u64 = 200;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One GET of `/productpage` through the ingress: the status, or `None` on a transport error or timeout.
async fn get(client: &HttpClient, addr: SocketAddr) -> Option<u16> {
    let uri: hyper::Uri = format!("http://{addr}/productpage").parse().ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri)).await.ok()?.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

fn deployment_ready(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.as_ref();
    want > 0
        && status.and_then(|s| s.ready_replicas).unwrap_or(0) >= want
        && status.and_then(|s| s.updated_replicas).unwrap_or(0) >= want
}

async fn wait_deployments_ready(client: &kube::Client, namespace: &str, count: usize) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("{count} Deployments Ready in {namespace}"), Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?.items;
            (list.len() == count && list.iter().all(deployment_ready)).then_some(())
        }
    })
    .await;
}

/// Creates `docs` in order: namespaces first (waiting for their ServiceAccount tokens), then the rest.
async fn create_all(client: &kube::Client, docs: &[Value], default_namespace: &str) {
    for doc in docs.iter().filter(|d| d["kind"] == "Namespace") {
        let name = doc["metadata"]["name"].as_str().expect("namespace name");
        create_namespace(client, name, doc["metadata"]["labels"].clone()).await;
    }
    for doc in docs.iter().filter(|d| d["kind"] != "Namespace") {
        create_object(client, doc, default_namespace).await;
    }
}

/// istiod 1.10.6 (revision 1-10-6), one injected gateway behind the LoadBalancer `istio-ingress/ingress`,
/// and bookinfo (one replica each) in namespace `bookinfo`, injected by that revision.
async fn install_mesh(client: &kube::Client) {
    let version: IstioVersion = VERSION.parse().expect("version");
    let revision = version.revision();
    let cp = ControlPlaneSpec::new(version.clone(), revision.clone());
    let mut docs = render::base(&BaseSpec {
        version: version.clone(),
        namespace: cp.namespace.clone(),
        default_revision: revision.clone(),
    });
    docs.extend(render::control_plane(&cp));
    let injector = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .and_then(|d| d["metadata"]["name"].as_str())
        .expect("the revision's injector webhook")
        .to_owned();
    create_all(client, &docs, &cp.namespace).await;
    wait_deployments_ready(client, &cp.namespace, 1).await;
    // Pods of the revision are admitted only once istiod has put its CA into the injector webhook.
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    eventually("the injector webhook's caBundle", Duration::from_secs(30), || {
        let (hooks, injector) = (hooks.clone(), injector.clone());
        async move {
            let hook = hooks.get_opt(&injector).await.ok().flatten()?;
            let patched = hook.webhooks.iter().flatten().all(|w| w.client_config.ca_bundle.is_some());
            patched.then_some(())
        }
    })
    .await;

    let mut gateway = GatewaySpec::new("istio-ingress", revision.clone(), version.clone());
    gateway.replicas = 1;
    let mut docs = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-ingress"}})];
    docs.extend(render::gateway(&gateway));
    docs.push(render::load_balancer(&LoadBalancerSpec {
        name: "ingress".into(),
        namespace: "istio-ingress".into(),
        selector: gateway.selector(),
        external_traffic_policy: "Cluster".into(),
    }));
    let labels = json!({"istio.io/rev": revision.as_str()});
    docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bookinfo", "labels": labels}}));
    docs.extend(render::bookinfo(&BookinfoSpec::new("bookinfo", 1)));
    docs.extend(render::bookinfo_gateway("bookinfo"));
    create_all(client, &docs, "default").await;
    wait_deployments_ready(client, "istio-ingress", 1).await;
    wait_deployments_ready(client, "bookinfo", 6).await;
}

/// The names of the pods in `namespaces` that run an `istio-proxy` container.
async fn proxy_pods(client: &kube::Client, namespaces: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for ns in namespaces {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        for pod in pods.list(&ListParams::default()).await.expect("list pods").items {
            let has_proxy = pod.spec.iter().flat_map(|s| &s.containers).any(|c| c.name == "istio-proxy");
            if has_proxy && pod.metadata.deletion_timestamp.is_none() {
                names.insert(pod.metadata.name.unwrap_or_default());
            }
        }
    }
    names
}

/// A query that returns one number (`... or vector(0)`).
async fn number(prometheus: &str, promql: &str) -> Option<f64> {
    let samples = meshshift_prom::query(prometheus, promql).await.map_err(|e| eprintln!("{promql}: {e}")).ok()?;
    samples.first().map(|s| s.value)
}

/// The gateways' 200s and productpage's sidecar's 200s, as Prometheus last scraped them.
async fn counters(prometheus: &str) -> Option<(f64, f64)> {
    let gateway = number(
        prometheus,
        r#"sum(istio_requests_total{job="istio-proxies",reporter="source",response_code="200"}) or vector(0)"#,
    )
    .await?;
    let sidecar = number(
        prometheus,
        r#"sum(istio_requests_total{reporter="destination",namespace="bookinfo",app="productpage",response_code="200"}) or vector(0)"#,
    )
    .await?;
    Some((gateway, sidecar))
}

/// Background traffic through the ingress (one request every 25 ms at most, stops when told or after
/// two minutes); counts answers by class.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(addr: SocketAddr) -> Traffic {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let client = http_client();
            let began = Instant::now();
            while !s.load(Ordering::SeqCst) && began.elapsed() < Duration::from_secs(120) {
                match get(&client, addr).await {
                    Some(200) => o.fetch_add(1, Ordering::SeqCst),
                    _ => f.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        Traffic { stop, ok, failed, task }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_proxies_and_the_gate_sees_a_failing_backend() {
    let began = Instant::now();
    let opts = LabOptions { propagation_delay: Duration::from_millis(500), ..LabOptions::full(1) }.with_prometheus();
    let cluster = TestCluster::start_lab(&example_supervisor(), &opts).unwrap_or_else(|err| panic!("{err}"));
    eprintln!("lab with Prometheus ready in {:.2} s", cluster.startup_time().as_secs_f64());
    let prometheus = cluster.prometheus_url().expect("the lab records its Prometheus").to_owned();
    assert!(prometheus.starts_with("http://127.0.0.1:"), "{prometheus}");
    assert_eq!(
        meshshift_prom::LAB_RANGES.map(|(net, len)| format!("{net}/{len}")),
        [meshshift_lab::netns::POD_CIDR, meshshift_lab::netns::SERVICE_CIDR, meshshift_lab::netsvc::POOL_CIDR],
        "meshshift-prom allows exactly the lab's ranges"
    );
    let up = number(&prometheus, "vector(1)").await;
    assert_eq!(up, Some(1.0), "Prometheus answers on the host port");

    let client = cluster.client().await.expect("client");
    install_mesh(&client).await;
    eprintln!("Istio {VERSION} and bookinfo ready at {:.1} s", began.elapsed().as_secs_f64());
    let addr = eventually("the ingress LoadBalancer's host port", Duration::from_secs(30), || {
        let dir = cluster.dir().to_path_buf();
        async move { LoadBalancers::host_addr(&dir, "istio-ingress", "ingress", 80).ok().flatten() }
    })
    .await;
    let http = http_client();
    let mut sent_before = 0u64;
    eventually("the ingress serving /productpage", Duration::from_secs(60), || {
        sent_before += 1;
        let http = http.clone();
        async move { (get(&http, addr).await == Some(200)).then_some(()) }
    })
    .await;

    // Discovery: every proxy (the gateway and six sidecars) is a target that is up.
    let proxies = proxy_pods(&client, &["istio-ingress", "bookinfo"]).await;
    assert_eq!(proxies.len(), 7, "{proxies:?}");
    let up_pods = eventually("every proxy scraped (up == 1)", Duration::from_secs(30), || {
        let (prometheus, proxies) = (prometheus.clone(), proxies.clone());
        async move {
            let samples = meshshift_prom::query(&prometheus, r#"up{job="istio-proxies"} == 1"#).await.ok()?;
            let up: BTreeSet<String> = samples.iter().filter_map(|s| s.label("pod")).map(str::to_owned).collect();
            proxies.is_subset(&up).then_some(samples)
        }
    })
    .await;
    let gateway_target =
        up_pods.iter().find(|s| s.label("namespace") == Some("istio-ingress")).expect("gateway target");
    assert!(gateway_target.label("instance").is_some_and(|i| i.starts_with("10.244.") && i.ends_with(":15090")));
    assert_eq!(gateway_target.label("app"), Some("istio-ingressgateway"));
    eprintln!("{} proxy targets up at {:.1} s", up_pods.len(), began.elapsed().as_secs_f64());

    // Counting: a baseline once two reads two scrapes apart agree, then COUNTED requests.
    let baseline = eventually("a settled request counter", Duration::from_secs(30), || {
        let prometheus = prometheus.clone();
        async move {
            let first = counters(&prometheus).await?;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let second = counters(&prometheus).await?;
            (first == second).then_some(second)
        }
    })
    .await;
    for i in 0..COUNTED {
        assert_eq!(get(&http, addr).await, Some(200), "request {i} through the ingress");
    }
    let want = baseline.0 + COUNTED as f64;
    let after = eventually("Prometheus to count the requests", Duration::from_secs(30), || {
        let prometheus = prometheus.clone();
        async move {
            counters(&prometheus)
                .await
                .filter(|(gateway, sidecar)| *gateway >= want && *sidecar >= baseline.1 + COUNTED as f64)
        }
    })
    .await;
    // A baseline read before the last warm-up request was scraped could only be low by those requests.
    let slack = sent_before as f64;
    assert!(
        after.0 - baseline.0 <= COUNTED as f64 + slack,
        "gateway counted {} for {COUNTED} sent",
        after.0 - baseline.0
    );
    assert!(
        after.1 - baseline.1 <= COUNTED as f64 + slack,
        "sidecar counted {} for {COUNTED} sent",
        after.1 - baseline.1
    );
    eprintln!(
        "counted +{} (gateway) +{} (productpage sidecar) for {COUNTED} requests at {:.1} s",
        after.0 - baseline.0,
        after.1 - baseline.1,
        began.elapsed().as_secs_f64()
    );

    // The gate: passes while bookinfo serves...
    let gate = PromGate::new(0.05, 1.0, Duration::from_secs(5));
    let traffic = Traffic::start(addr);
    let reading = eventually("the gate to pass under healthy traffic", Duration::from_secs(30), || {
        let (gate, prometheus) = (gate.clone(), prometheus.clone());
        async move { gate.evaluate(&gate.sample(&prometheus).await.ok()?).ok() }
    })
    .await;
    eprintln!("gate passed: {reading:?}");

    // ...and breaches once productpage has no endpoints and the gateway answers 503.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "bookinfo");
    deployments
        .patch("productpage-v1", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 0}})))
        .await
        .expect("scale productpage to 0");
    let scaled = Instant::now();
    let breach = eventually("the gate to report the 5xx ratio", Duration::from_secs(60), || {
        let (gate, prometheus) = (gate.clone(), prometheus.clone());
        async move {
            let samples: Vec<Sample> = gate.sample(&prometheus).await.ok()?;
            match gate.evaluate(&samples) {
                Err(breach @ Breach::ErrorRatio { .. }) => Some(breach),
                _ => None,
            }
        }
    })
    .await;
    eprintln!("gate breached {:.1} s after the scale-down: {breach}", scaled.elapsed().as_secs_f64());
    // The classic ratio expression agrees (and is valid PromQL on a real Prometheus).
    let ratio = number(&prometheus, &gate.queries().error_ratio).await.expect("the ratio query has a value");
    assert!(ratio > 0.05, "{} = {ratio}", gate.queries().error_ratio);
    let (ok, failed) = traffic.stop().await;
    assert!(ok > 0 && failed > 0, "traffic saw both answers: {ok} ok, {failed} failed");
    let five_xx =
        number(&prometheus, r#"sum(istio_requests_total{reporter="source",response_code="503"}) or vector(0)"#)
            .await
            .expect("503 count");
    assert!(five_xx > 0.0, "the gateway's 503s are in Prometheus");

    // Prometheus stops with the lab and leaves nothing behind.
    let pid = *cluster.state().children.get("prometheus").expect("prometheus is a lab component");
    let dir = cluster.dir().to_path_buf();
    assert!(dir.join("prometheus/data").is_dir() && cluster.log_path("prometheus").is_file());
    cluster.stop().expect("the lab stops cleanly");
    assert!(!process_alive(pid), "prometheus (pid {pid}) stopped with the lab");
    if std::env::var_os(meshshift_lab::testing::KEEP_ENV).is_none() {
        assert!(!dir.exists(), "the lab directory (with the TSDB) is gone");
    }
    eprintln!("total {:.1} s", began.elapsed().as_secs_f64());
}
