//! The emulated istiod against a real Kubernetes 1.20 control plane, with Istio's real manifests.
//!
//! No node agent is involved: each test plays the kubelet for one istiod pod itself. It creates the pod
//! from the chart's Deployment template, writes its status (Running, Ready, a pod IP) so the endpoints
//! controller publishes it behind the istiod Service, and runs `IstiodImage::start` on a thread inside the
//! lab's network namespace, where that pod IP exists. The apiserver (run with
//! `--enable-aggregator-routing`) then calls the webhooks on that IP, exactly as it would call a real
//! istiod pod.
//!
//! Needs root (to enter the lab's namespace) and the binaries from `scripts/install-deps.sh`; run
//! `cargo build -p meshshift-lab --examples` first.

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Node, Pod, Secret};
use kube::api::{Api, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::pinned_kind;
use meshshift_lab::containers::istiod::IstiodImage;
use meshshift_lab::containers::protocol::{ClientMessage, ConfigSnapshot, ProxyKind, ServerMessage};
use meshshift_lab::containers::{ContainerContext, ContainerImage, Lifecycle, pod_loopback};
use meshshift_lab::testing::{create_namespace, create_object, eventually, example_supervisor};
use meshshift_lab::{LabLayout, LabOptions, TestCluster};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

const FIXTURES: &str = "/work/shared/fixtures";

fn start() -> TestCluster {
    let cluster =
        TestCluster::start_lab(&example_supervisor(), &LabOptions::default()).unwrap_or_else(|err| panic!("{err}"));
    eprintln!("lab ready in {:.2} s", cluster.startup_time().as_secs_f64());
    cluster
}

/// A thread inside the lab's network namespace running a tokio runtime until dropped: what it spawns
/// opens its sockets in the lab (pod IPs, the apiserver at 127.0.0.1:6443).
struct Inside {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Inside {
    fn enter(cluster: &TestCluster) -> Inside {
        let path = format!("/proc/{}/ns/net", cluster.supervisor_pid());
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the lab");
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            handle_tx.send(runtime.handle().clone()).expect("hand over the runtime");
            runtime.block_on(async {
                let _ = stopped.await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Inside { handle: handle_rx.recv().expect("runtime handle"), stop: Some(stop), thread: Some(thread) }
    }

    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    async fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(future).await.expect("task inside the lab")
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// Kinds the tests leave out: the test plays the Deployment's pod itself, and 1.20 does not serve the
/// newer charts' `policy/v1` PDB or `autoscaling/v2` HPA.
const SKIPPED: [&str; 3] = ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"];

/// Applies a fixture file; returns its Deployments (for the pod template).
async fn apply(client: &kube::Client, file: &str) -> Vec<Value> {
    let mut deployments = Vec::new();
    for doc in yaml_docs(&format!("{FIXTURES}/{file}")) {
        if SKIPPED.contains(&doc["kind"].as_str().unwrap_or_default()) {
            if doc["kind"] == "Deployment" {
                deployments.push(doc);
            }
            continue;
        }
        create_object(client, &doc, "istio-system").await;
    }
    deployments
}

/// The node the istiod pods are bound to. Endpoints name their pod's node (an empty name is invalid),
/// and the pod garbage collector deletes pods of unknown nodes, so the test registers one and keeps its
/// Ready heartbeat fresh (else the node lifecycle controller marks its pods unready after 40 s).
const NODE: &str = "lab-istiod-node";

fn node_status() -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    json!({
        "capacity": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "istiod test node",
            "lastHeartbeatTime": now, "lastTransitionTime": now
        }]
    })
}

async fn register_node(client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        "status": node_status()
    }))
    .expect("node");
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let status = json!({"status": node_status()});
            if let Err(err) = nodes.patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status)).await {
                eprintln!("node heartbeat: {err}");
            }
        }
    });
}

/// The 1.9.7 CRDs (networking.istio.io/v1alpha3 is served by every CRD set), istio-system, and the node.
async fn install_base(client: &kube::Client) {
    register_node(client).await;
    create_namespace(client, "istio-system", json!({})).await;
    for file in ["istio-tree/1.9.7/crds/crd-all.gen.yaml", "istio-tree/1.9.7/crds/crd-operator.yaml"] {
        apply(client, file).await;
    }
    for kind in ["VirtualService", "Gateway", "EnvoyFilter"] {
        eventually(&format!("CRD {kind} established"), Duration::from_secs(30), || async move {
            pinned_kind(client, &GroupVersionKind::gvk("networking.istio.io", "v1alpha3", kind)).await.ok()
        })
        .await;
    }
}

/// A running istiod pod the test stands in for.
struct IstiodPod {
    lifecycle: watch::Sender<Lifecycle>,
    task: tokio::task::JoinHandle<Result<(), meshshift_lab::containers::ContainerError>>,
    ip: Ipv4Addr,
}

impl IstiodPod {
    fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.ip)
    }
}

/// Creates the pod of `deployment`'s template as `name` with IP `ip`, marks it Running and Ready, waits
/// for its Service's Endpoints to list it, and starts the istiod emulation for it inside the lab.
async fn start_istiod(
    cluster: &TestCluster,
    client: &kube::Client,
    inside: &Inside,
    deployment: &Value,
    name: &str,
    ip: Ipv4Addr,
) -> IstiodPod {
    let template = &deployment["spec"]["template"];
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "istio-system",
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"]
        },
        "spec": template["spec"]
    }))
    .expect("pod");
    let mut pod = pod;
    pod.spec.as_mut().expect("spec").node_name = Some(NODE.to_owned());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "istio-system");
    // The ServiceAccount's token Secret may lag its creation: the admission plugin refuses until then.
    let created = eventually(&format!("pod {name} created"), Duration::from_secs(30), || {
        let (pods, pod) = (pods.clone(), pod.clone());
        async move {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(created) => Some(created),
                Err(err) => {
                    eprintln!("creating {name}: {err}");
                    None
                }
            }
        }
    })
    .await;
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "PodScheduled", "status": "True"}
        ]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("pod status");
    let service = format!(
        "istiod-{}",
        template["spec"]["containers"][0]["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == "REVISION"))
            .and_then(|e| e["value"].as_str())
            .expect("REVISION")
    );
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "istio-system");
    eventually(&format!("{service} endpoints to list {ip}"), Duration::from_secs(30), || {
        let endpoints = endpoints.clone();
        let (service, ip) = (service.clone(), ip.to_string());
        async move {
            let ep = endpoints.get_opt(&service).await.ok()??;
            ep.subsets?.iter().flat_map(|s| s.addresses.iter().flatten()).any(|a| a.ip == ip).then_some(())
        }
    })
    .await;

    let container = created.spec.as_ref().expect("spec").containers[0].clone();
    let kubeconfig = kube::config::Kubeconfig::read_from(LabLayout::new(cluster.dir()).inside_kubeconfig())
        .expect("inside kubeconfig");
    let (lifecycle, lifecycle_rx) = watch::channel(Lifecycle::Running);
    let task = inside.spawn(async move {
        let client = meshshift_lab::kubeconfig::client_from(kubeconfig).await.expect("inside client");
        let ctx = ContainerContext {
            pod: Arc::new(created),
            container,
            pod_ip: ip,
            pod_loopback: pod_loopback(ip),
            client,
            resolve: Arc::new(|_, _, _| None),
            lifecycle: lifecycle_rx,
        };
        IstiodImage::new().start(ctx).await
    });
    IstiodPod { lifecycle, task, ip }
}

/// `GET` over plain HTTP inside the lab; the status code.
async fn http_get(addr: String, path: &'static str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: istiod\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await.ok()?.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, response))
}

async fn wait_ready(inside: &Inside, istiod: &IstiodPod) {
    let addr = istiod.addr(8080);
    let start = Instant::now();
    loop {
        let answer = inside.run(http_get(addr.clone(), "/ready")).await;
        if answer.as_ref().is_some_and(|(code, _)| *code == 200) {
            eprintln!("{addr} ready after {:.2} s", start.elapsed().as_secs_f64());
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{addr} not ready: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A config stream opened inside the lab; messages (then `None` at EOF) arrive on the channel.
fn open_stream(
    inside: &Inside,
    addr: String,
    revision: &str,
    version: &str,
) -> mpsc::UnboundedReceiver<Option<ServerMessage>> {
    let hello = ClientMessage::Hello {
        revision: revision.into(),
        version: version.into(),
        pod: "apps/test-proxy".into(),
        kind: ProxyKind::Sidecar,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    inside.spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect to istiod");
        let line = format!("{}\n", serde_json::to_string(&hello).expect("hello"));
        stream.write_all(line.as_bytes()).await.expect("send hello");
        let (read, _write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(Some(serde_json::from_str(&line).expect("server message"))).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    rx
}

/// The next message that is not a ping.
async fn next_message(rx: &mut mpsc::UnboundedReceiver<Option<ServerMessage>>) -> Option<ServerMessage> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("a message within 20 s") {
            Some(Some(ServerMessage::Ping)) => continue,
            Some(message) => return message,
            None => return None,
        }
    }
}

/// Waits for a pushed config satisfying `check`.
async fn config_where(
    rx: &mut mpsc::UnboundedReceiver<Option<ServerMessage>>,
    what: &str,
    check: impl Fn(&ConfigSnapshot) -> bool,
) -> ConfigSnapshot {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(30), "no config with {what}");
        match next_message(rx).await {
            Some(ServerMessage::Config(config)) if check(&config) => return config,
            Some(ServerMessage::Config(_)) => {}
            other => panic!("waiting for a config with {what}, got {other:?}"),
        }
    }
}

fn names(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            format!(
                "{}/{}",
                v["metadata"]["namespace"].as_str().unwrap_or_default(),
                v["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn app_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web", "version": "v1"}},
        "spec": {"containers": [{"name": "web", "image": "docker.io/library/nginx:1.25", "ports": [{"containerPort": 8080, "name": "http"}]}]}
    }))
    .expect("pod")
}

fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a k8s_openapi::api::core::v1::Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name)
}

fn env(container: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
    container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

fn discovery_address(pod: &Pod) -> String {
    let proxy = container(pod, "istio-proxy").expect("istio-proxy");
    let config: Value =
        serde_json::from_str(&env(proxy, "PROXY_CONFIG").expect("PROXY_CONFIG")).expect("PROXY_CONFIG JSON");
    config["discoveryAddress"].as_str().expect("discoveryAddress").to_owned()
}

fn root_of(config_map: &ConfigMap) -> String {
    config_map.data.as_ref().and_then(|d| d.get("root-cert.pem")).cloned().expect("root-cert.pem")
}

async fn ca_bundle(client: &kube::Client, mwc: &str) -> Vec<Vec<u8>> {
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone()).get(mwc).await.expect("mwc");
    mwc.webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default())
        .collect()
}

async fn wait_patched(client: &kube::Client, mwc: &'static str) -> Vec<u8> {
    eventually(&format!("{mwc} caBundle"), Duration::from_secs(60), || async move {
        let bundles = ca_bundle(client, mwc).await;
        (bundles.iter().all(|b| !b.is_empty()) && !bundles.is_empty()).then(|| bundles[0].clone())
    })
    .await
}

/// One 1.9.7 revision end to end: CA and root cert publishing, caBundle patching, injection through the
/// real apiserver (plain and server-side dry run), readiness, the config stream with revision scoping and
/// skew rejection, and termination.
#[tokio::test]
async fn a_1_9_7_revision_injects_patches_its_webhook_and_streams_scoped_config() {
    let cluster = start();
    let client = cluster.client().await.expect("client");
    install_base(&client).await;
    apply(&client, "helm-rendered/1.9.7/base-no-crds.yaml").await;
    let deployments = apply(&client, "helm-rendered/1.9.7/istiod-rev-1-9-7.yaml").await;
    create_namespace(&client, "apps", json!({"istio.io/rev": "1-9-7"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");

    // Before istiod serves, its failurePolicy: Fail webhook refuses the namespace's pods.
    let refused = pods.create(&PostParams::default(), &app_pod("too-early")).await;
    assert!(refused.is_err(), "a pod was admitted before istiod served its webhook: {refused:?}");

    let inside = Inside::enter(&cluster);
    let istiod =
        start_istiod(&cluster, &client, &inside, &deployments[0], "istiod-1-9-7-lab", Ipv4Addr::new(10, 244, 9, 9))
            .await;

    // The root CA: created in istio-ca-secret, published in every namespace, written into the webhook.
    let bundle = wait_patched(&client, "istio-sidecar-injector-1-9-7").await;
    let secret = Api::<Secret>::namespaced(client.clone(), "istio-system")
        .get("istio-ca-secret")
        .await
        .expect("istio-ca-secret");
    let ca_cert = secret.data.as_ref().and_then(|d| d.get("ca-cert.pem")).map(|b| b.0.clone()).expect("ca-cert.pem");
    assert_eq!(bundle, ca_cert, "the caBundle is the self-signed root");
    for ns in ["istio-system", "apps", "default"] {
        let root = eventually(&format!("istio-ca-root-cert in {ns}"), Duration::from_secs(30), || {
            let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
            async move { api.get_opt("istio-ca-root-cert").await.ok().flatten() }
        })
        .await;
        assert_eq!(root_of(&root).as_bytes(), bundle.as_slice(), "istio-ca-root-cert in {ns}");
    }
    // The 1.9 base validator calls `istiod` (the default revision): not this revision's to patch.
    let validator =
        Api::<ValidatingWebhookConfiguration>::all(client.clone()).get("istiod-istio-system").await.expect("vwc");
    assert!(validator.webhooks.unwrap_or_default()[0].client_config.ca_bundle.as_ref().is_none_or(|b| b.0.is_empty()));
    wait_ready(&inside, &istiod).await;

    // Injection through the apiserver (1.9 charts ask for AdmissionReview v1beta1).
    let injected = eventually("an injected pod", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &app_pod("web-1")).await.map_err(|e| eprintln!("{e}")).ok() }
    })
    .await;
    let proxy = container(&injected, "istio-proxy").expect("istio-proxy injected");
    assert_eq!(proxy.image.as_deref(), Some("docker.io/istio/proxyv2:1.9.7"));
    assert_eq!(
        container(&injected, "istio-init").and_then(|c| c.image.as_deref()),
        Some("docker.io/istio/proxyv2:1.9.7")
    );
    let labels = injected.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("istio.io/rev").map(String::as_str), Some("1-9-7"));
    assert_eq!(labels.get("security.istio.io/tlsMode").map(String::as_str), Some("istio"));
    assert_eq!(labels.get("service.istio.io/canonical-name").map(String::as_str), Some("web"));
    assert_eq!(labels.get("service.istio.io/canonical-revision").map(String::as_str), Some("v1"));
    let annotations = injected.metadata.annotations.clone().unwrap_or_default();
    let status: Value =
        serde_json::from_str(annotations.get("sidecar.istio.io/status").expect("status")).expect("status JSON");
    assert_eq!(status["containers"], json!(["istio-proxy"]));
    assert!(status.get("revision").is_none(), "1.9 status has no revision");
    assert_eq!(discovery_address(&injected), "istiod-1-9-7.istio-system.svc:15012");
    assert_eq!(env(proxy, "CA_ADDR").as_deref(), Some("istiod-1-9-7.istio-system.svc:15012"));
    let probe = proxy.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("readiness probe");
    assert_eq!(probe.path.as_deref(), Some("/healthz/ready"));

    // A server-side dry run is injected alike, and not stored.
    let dry = PostParams { dry_run: true, ..Default::default() };
    let dry_pod = pods.create(&dry, &app_pod("dry-run")).await.expect("dry-run create");
    assert_eq!(
        container(&dry_pod, "istio-proxy").and_then(|c| c.image.as_deref()),
        Some("docker.io/istio/proxyv2:1.9.7")
    );
    assert!(pods.get_opt("dry-run").await.expect("get").is_none());
    // An opted-out pod is left alone.
    let mut opted = app_pod("opted-out");
    opted.metadata.labels.get_or_insert_with(Default::default).insert("sidecar.istio.io/inject".into(), "false".into());
    let plain = pods.create(&PostParams::default(), &opted).await.expect("opted-out pod");
    assert!(container(&plain, "istio-proxy").is_none());

    // The config stream: this revision's proxy gets config; revision-pinned config of another revision is
    // not in it.
    let mut stream = open_stream(&inside, istiod.addr(15012), "1-9-7", "1.9.7");
    assert_eq!(
        next_message(&mut stream).await,
        Some(ServerMessage::Accepted { revision: "1-9-7".into(), version: "1.9.7".into() })
    );
    let first =
        config_where(&mut stream, "the istiod Service", |c| c.services.iter().any(|s| s.name == "istiod-1-9-7")).await;
    let own = first.services.iter().find(|s| s.name == "istiod-1-9-7").expect("istiod Service");
    assert!(own.target_ports.iter().any(|(port, target)| *port == 443
        && *target == k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15017)));
    for doc in yaml_docs(&format!("{FIXTURES}/istio-tree/1.9.7/bookinfo/bookinfo-gateway.yaml")) {
        create_object(&client, &doc, "apps").await;
    }
    let pinned = |name: &str, rev: &str| {
        json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "apps", "labels": {"istio.io/rev": rev}},
            "spec": {"hosts": [format!("{name}.apps.svc.cluster.local")], "http": [{"route": [{"destination": {"host": "web"}}]}]}
        })
    };
    create_object(&client, &pinned("pinned-to-other", "1-10-6"), "apps").await;
    create_object(&client, &pinned("pinned-to-me", "1-9-7"), "apps").await;
    let config = config_where(&mut stream, "bookinfo and the pinned VirtualService", |c| {
        names(&c.virtual_services).contains(&"apps/pinned-to-me".to_owned())
            && names(&c.gateways).contains(&"apps/bookinfo-gateway".to_owned())
    })
    .await;
    assert_eq!(names(&config.virtual_services), ["apps/bookinfo", "apps/pinned-to-me"]);
    assert_eq!(config.virtual_services[0]["spec"]["http"][0]["match"][0]["uri"]["exact"], "/productpage");

    // Unsupported skew and foreign revisions are refused.
    let mut old = open_stream(&inside, istiod.addr(15012), "1-9-7", "1.7.0");
    match next_message(&mut old).await {
        Some(ServerMessage::Rejected { reason }) => assert!(reason.contains("behind"), "{reason}"),
        other => panic!("a 1.7 proxy must be rejected, got {other:?}"),
    }
    let mut foreign = open_stream(&inside, istiod.addr(15012), "1-10-6", "1.9.7");
    assert!(matches!(next_message(&mut foreign).await, Some(ServerMessage::Rejected { .. })));

    // Termination: streams close at once, readiness fails, the container exits at the deadline.
    let deadline = Instant::now() + Duration::from_secs(3);
    istiod.lifecycle.send_replace(Lifecycle::Terminating { deadline });
    let closed = Instant::now();
    loop {
        match next_message(&mut stream).await {
            Some(ServerMessage::Config(_)) => continue,
            None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(closed.elapsed() < Duration::from_secs(2), "the stream was not closed promptly");
    let (code, _) =
        inside.run(http_get(istiod.addr(8080), "/ready")).await.expect("readiness answers while terminating");
    assert_eq!(code, 503);
    let exited =
        tokio::time::timeout(Duration::from_secs(10), istiod.task).await.expect("exits at the deadline").expect("join");
    assert!(exited.is_ok(), "{exited:?}");
    assert!(Instant::now() >= deadline, "exited before the deadline");
}

/// Two revisions started together share one root CA (one wins the race to create istio-ca-secret), each
/// patches its own injector (and 1.10.6 its `prod` tag), the tag's namespace gets 1.10.6 sidecars, an
/// injected gateway gets the 1.10.6 proxy image, and proxies are admitted by tag.
#[tokio::test]
async fn two_revisions_share_the_root_and_a_tag_routes_to_its_revision() {
    let cluster = start();
    let client = cluster.client().await.expect("client");
    install_base(&client).await;
    apply(&client, "helm-rendered/1.9.7/base-no-crds.yaml").await;
    let old_deployment = apply(&client, "helm-rendered/1.9.7/istiod-rev-1-9-7.yaml").await.remove(0);
    let new_deployment = apply(&client, "helm-rendered/1.10.6/istiod-rev-1-10-6.yaml").await.remove(0);
    apply(&client, "helm-rendered/1.10.6/revision-tag-prod-to-1-10-6.yaml").await;

    let inside = Inside::enter(&cluster);
    let (old, new) = tokio::join!(
        start_istiod(&cluster, &client, &inside, &old_deployment, "istiod-1-9-7-lab", Ipv4Addr::new(10, 244, 9, 9)),
        start_istiod(&cluster, &client, &inside, &new_deployment, "istiod-1-10-6-lab", Ipv4Addr::new(10, 244, 9, 10)),
    );
    let old_bundle = wait_patched(&client, "istio-sidecar-injector-1-9-7").await;
    let new_bundle = wait_patched(&client, "istio-sidecar-injector-1-10-6").await;
    let tag_bundle = wait_patched(&client, "istio-revision-tag-prod").await;
    assert_eq!(old_bundle, new_bundle, "both revisions share the root CA");
    assert_eq!(tag_bundle, new_bundle);
    let secrets =
        Api::<Secret>::namespaced(client.clone(), "istio-system").list(&ListParams::default()).await.expect("secrets");
    assert_eq!(secrets.items.iter().filter(|s| s.metadata.name.as_deref() == Some("istio-ca-secret")).count(), 1);
    wait_ready(&inside, &old).await;
    wait_ready(&inside, &new).await;

    // A namespace on the tag gets the tag's revision (1.10 writes the revision, not the tag, on the pod).
    create_namespace(&client, "canary", json!({"istio.io/rev": "prod"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "canary");
    let injected = eventually("an injected canary pod", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &app_pod("web-1")).await.map_err(|e| eprintln!("{e}")).ok() }
    })
    .await;
    assert_eq!(
        container(&injected, "istio-proxy").and_then(|c| c.image.as_deref()),
        Some("docker.io/istio/proxyv2:1.10.6")
    );
    assert_eq!(
        injected.metadata.labels.as_ref().and_then(|l| l.get("istio.io/rev")).map(String::as_str),
        Some("1-10-6")
    );
    assert_eq!(discovery_address(&injected), "istiod-1-10-6.istio-system.svc:15012");
    let annotations = injected.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("kubectl.kubernetes.io/default-container"), "1.10 template");

    // An injected gateway (Helm gateway chart style: image auto) in the tag's namespace.
    let gateway: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "ingress-1",
            "labels": {"app": "istio-ingressgateway", "istio": "ingressgateway", "sidecar.istio.io/inject": "true"},
            "annotations": {"inject.istio.io/templates": "gateway"}
        },
        "spec": {"containers": [{"name": "istio-proxy", "image": "auto", "ports": [{"containerPort": 8080, "name": "http2"}]}]}
    }))
    .expect("gateway pod");
    let gateway = pods.create(&PostParams::default(), &gateway).await.expect("gateway created");
    let proxy = container(&gateway, "istio-proxy").expect("istio-proxy");
    assert_eq!(proxy.image.as_deref(), Some("docker.io/istio/proxyv2:1.10.6"));
    assert_eq!(proxy.args.as_ref().and_then(|a| a.get(1)).map(String::as_str), Some("router"));
    assert!(container(&gateway, "istio-init").is_none());
    assert_eq!(gateway.spec.as_ref().expect("spec").containers.len(), 1);

    // Proxies of the tag are admitted by the tag's revision (one minor of skew allowed), not by the other.
    let mut by_tag = open_stream(&inside, new.addr(15012), "prod", "1.9.7");
    assert!(matches!(next_message(&mut by_tag).await, Some(ServerMessage::Accepted { .. })));
    assert!(matches!(next_message(&mut by_tag).await, Some(ServerMessage::Config(_))));
    let mut wrong = open_stream(&inside, old.addr(15012), "prod", "1.9.7");
    assert!(matches!(next_message(&mut wrong).await, Some(ServerMessage::Rejected { .. })));

    for istiod in [old, new] {
        istiod.lifecycle.send_replace(Lifecycle::Killed);
        let exited = tokio::time::timeout(Duration::from_secs(5), istiod.task).await.expect("exits").expect("join");
        assert!(exited.is_ok(), "{exited:?}");
    }
}

/// A plugged-in CA (Secret `cacerts`: an RSA intermediate with a PKCS#1 key under a separate root) with
/// the 1.24.6 charts (v1 webhooks without a caBundle field, a per-revision validator): the apiserver's Go
/// TLS accepts the chain, and 1.24 injection and validation both go through.
#[tokio::test]
async fn a_plugged_in_ca_serves_1_24_webhooks() {
    let cluster = start();
    let client = cluster.client().await.expect("client");
    install_base(&client).await;
    let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/src/containers/istiod/testdata");
    let read = |file: &str| std::fs::read_to_string(format!("{testdata}/{file}")).expect("testdata");
    let cacerts: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cacerts", "namespace": "istio-system"},
        "stringData": {
            "ca-cert.pem": read("ca-cert.pem"),
            "ca-key.pem": read("ca-key.pem"),
            "root-cert.pem": read("root-cert.pem"),
            "cert-chain.pem": read("cert-chain.pem")
        }
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), "istio-system")
        .create(&PostParams::default(), &cacerts)
        .await
        .expect("cacerts");
    apply(&client, "helm-rendered/1.24.6/base-no-crds.yaml").await;
    let deployment = apply(&client, "helm-rendered/1.24.6/istiod-rev-1-24-6.yaml").await.remove(0);
    let inside = Inside::enter(&cluster);
    let istiod =
        start_istiod(&cluster, &client, &inside, &deployment, "istiod-1-24-6-lab", Ipv4Addr::new(10, 244, 9, 24)).await;

    let bundle = wait_patched(&client, "istio-sidecar-injector-1-24-6").await;
    assert_eq!(
        String::from_utf8(bundle.clone()).expect("pem").trim(),
        read("root-cert.pem").trim(),
        "caBundle is the plugged-in root"
    );
    let validators = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let validator = eventually("the 1.24.6 validator's caBundle", Duration::from_secs(30), || {
        let validators = validators.clone();
        async move {
            let vwc = validators.get("istio-validator-1-24-6-istio-system").await.ok()?;
            let ca = vwc.webhooks?.first()?.client_config.ca_bundle.clone()?;
            (!ca.0.is_empty()).then_some(ca.0)
        }
    })
    .await;
    assert_eq!(validator, bundle);
    let default_validator = validators.get("istiod-default-validator").await.expect("default validator");
    assert!(
        default_validator.webhooks.unwrap_or_default()[0]
            .client_config
            .ca_bundle
            .as_ref()
            .is_none_or(|b| b.0.is_empty()),
        "without the default tag, istiod-default-validator is not this revision's"
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), "istio-system")
            .get_opt("istio-ca-secret")
            .await
            .expect("get")
            .is_none()
    );
    wait_ready(&inside, &istiod).await;

    create_namespace(&client, "apps", json!({"istio.io/rev": "1-24-6"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let injected = eventually("an injected 1.24 pod", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &app_pod("web-1")).await.map_err(|e| eprintln!("{e}")).ok() }
    })
    .await;
    assert_eq!(
        container(&injected, "istio-proxy").and_then(|c| c.image.as_deref()),
        Some("docker.io/istio/proxyv2:1.24.6")
    );
    let annotations = injected.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("istio.io/rev").map(String::as_str), Some("1-24-6"));
    let status: Value =
        serde_json::from_str(annotations.get("sidecar.istio.io/status").expect("status")).expect("JSON");
    assert_eq!(status["revision"], "1-24-6");
    assert!(injected.metadata.labels.as_ref().and_then(|l| l.get("istio.io/rev")).is_none());

    // Config labelled with the revision passes its validating webhook (which the apiserver now calls).
    let vs = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": {"name": "validated", "namespace": "apps", "labels": {"istio.io/rev": "1-24-6"}},
        "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}
    });
    create_object(&client, &vs, "apps").await;
    let (code, metrics) = inside.run(http_get(istiod.addr(15014), "/metrics")).await.expect("metrics");
    assert_eq!(code, 200);
    let validated = metrics
        .lines()
        .find_map(|l| l.strip_prefix("galley_validation_passed "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("validation counter");
    assert!(validated >= 1, "the apiserver did not call /validate:\n{metrics}");

    istiod.lifecycle.send_replace(Lifecycle::Killed);
    let exited = tokio::time::timeout(Duration::from_secs(5), istiod.task).await.expect("exits").expect("join");
    assert!(exited.is_ok(), "{exited:?}");
}

/// The whole path under the lab's own node agent and service networking: the chart's istiod Deployment
/// runs as the `pilot` emulation, becomes Ready through its `/ready` probe, patches its webhook, injects a
/// labelled namespace's Deployment, and the injected proxies connect to it through the istiod Service and
/// become Ready.
#[tokio::test]
async fn under_the_node_agent_a_chart_installed_istiod_serves_injected_workloads() {
    let cluster =
        TestCluster::start_lab(&example_supervisor(), &LabOptions::full(1)).unwrap_or_else(|err| panic!("{err}"));
    let client = cluster.client().await.expect("client");
    create_namespace(&client, "istio-system", json!({})).await;
    for file in ["istio-tree/1.9.7/crds/crd-all.gen.yaml", "istio-tree/1.9.7/crds/crd-operator.yaml"] {
        apply(&client, file).await;
    }
    apply(&client, "helm-rendered/1.9.7/base-no-crds.yaml").await;
    for doc in yaml_docs(&format!("{FIXTURES}/helm-rendered/1.9.7/istiod-rev-1-9-7.yaml")) {
        if doc["kind"] != "HorizontalPodAutoscaler" {
            create_object(&client, &doc, "istio-system").await;
        }
    }
    wait_patched(&client, "istio-sidecar-injector-1-9-7").await;
    let istiod_pods: Api<Pod> = Api::namespaced(client.clone(), "istio-system");
    eventually("the istiod pod Ready", Duration::from_secs(60), || {
        let pods = istiod_pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=istiod")).await.ok()?;
            list.items
                .iter()
                .any(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .then_some(())
        }
    })
    .await;

    create_namespace(&client, "apps", json!({"istio.io/rev": "1-9-7"})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    eventually("an injected pod", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &app_pod("web-1")).await.map_err(|e| eprintln!("{e}")).ok() }
    })
    .await;
    let pod = eventually("the injected pod Ready", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("web-1").await.ok()?;
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            ready.then_some(pod)
        }
    })
    .await;
    assert_eq!(container(&pod, "istio-proxy").and_then(|c| c.image.as_deref()), Some("docker.io/istio/proxyv2:1.9.7"));
}
