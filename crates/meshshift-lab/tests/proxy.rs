//! Integration tests of the emulated Istio proxy (`containers::proxy`): real sockets inside a real lab
//! network namespace.
//!
//! The first three tests use a bare control plane (no node agent, no service networking) and run the
//! proxy themselves, with a `ContainerContext` they build, on a thread that entered the
//! lab's namespace (`TestCluster::inside`), next to:
//! - a fake istiod: a TEST DOUBLE of the control plane speaking `containers::protocol` (hello, accepted or
//!   rejected, config pushes, pings), whose behaviour each test steers. The real emulated istiod is
//!   tested elsewhere; this double only lets these tests cut, silence or refuse the control plane at will;
//! - a backend HTTP server standing in for productpage (with its sidecar's headers), or an app on the pod
//!   loopback for the sidecar test.
//!
//! Name resolution is a closure (the lab's ClusterIP forwarding is not running), so the addresses are pod
//! addresses: istiod 10.244.9.9:15012, productpage 10.244.9.20:9080, the gateway pod 10.244.9.30.
//!
//! The last test runs a full lab instead: the node agent starts the rendered 1.9.7 gateway chart with this
//! emulation, and the gateway reaches the fake istiod and productpage through the lab's service networking.
//!
//! Needs root (or unprivileged user namespaces) and the binaries from `scripts/install-deps.sh`.

use meshshift_lab::testing::eventually;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use meshshift_lab::containers::protocol::{ClientMessage, ConfigSnapshot, ProxyKind, ServerMessage, ServiceEntry};
use meshshift_lab::containers::proxy::ProxyImage;
use meshshift_lab::containers::{
    ContainerContext, ContainerError, ContainerImage, HEADER_POD, HEADER_PROXY, HEADER_REVISION, HEADER_VERSION,
    Lifecycle, ServiceResolver, pod_loopback,
};
use meshshift_lab::testing::example_supervisor;
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

const ISTIOD: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 9), 15012);
const BACKEND: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 9, 20), 9080);
const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 30);
const SIDECAR_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 40);
const BOOKINFO_GATEWAY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/istio-tree/1.9.7/bookinfo/bookinfo-gateway.yaml");
const BACKEND_POD: &str = "default/productpage-v1-abc12";

fn lab() -> TestCluster {
    TestCluster::start_lab(&example_supervisor(), &LabOptions::default()).unwrap_or_else(|err| panic!("{err}"))
}

// ---------------------------------------------------------------------------------------------------
// The fake istiod (test double of the control plane).

/// How the fake istiod treats connections.
#[derive(Debug, Clone, PartialEq)]
enum Behaviour {
    /// Read the hello and answer nothing (yet).
    Hold,
    /// Accept, push the config, ping every 500 ms.
    Serve,
    /// Keep connections open but stop pinging (a hung istiod).
    Silent,
    /// Refuse with this reason and close.
    Reject(String),
}

struct FakeIstiod {
    behaviour: watch::Sender<Behaviour>,
    config: watch::Sender<ConfigSnapshot>,
    hellos: mpsc::UnboundedReceiver<ClientMessage>,
    server: Option<JoinHandle<()>>,
}

impl FakeIstiod {
    async fn start(behaviour: Behaviour, config: ConfigSnapshot) -> FakeIstiod {
        FakeIstiod::start_at(ISTIOD, behaviour, config).await
    }

    async fn start_at(addr: SocketAddrV4, behaviour: Behaviour, config: ConfigSnapshot) -> FakeIstiod {
        let (hello_tx, hellos) = mpsc::unbounded_channel();
        let mut fake = FakeIstiod {
            behaviour: watch::Sender::new(behaviour),
            config: watch::Sender::new(config),
            hellos,
            server: None,
        };
        fake.listen(addr, hello_tx).await;
        fake
    }

    async fn listen(&mut self, addr: SocketAddrV4, hellos: mpsc::UnboundedSender<ClientMessage>) {
        let listener = TcpListener::bind(addr).await.expect("bind the fake istiod");
        let (behaviour, config) = (self.behaviour.clone(), self.config.clone());
        self.server = Some(tokio::spawn(async move {
            // Owned here: aborting the server task drops every connection with it.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    Ok((stream, _)) = listener.accept() => {
                        connections.spawn(fake_session(stream, behaviour.subscribe(), config.subscribe(), hellos.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
    }

    /// istiod goes away: its listener and every connection close.
    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    fn set(&self, behaviour: Behaviour) {
        self.behaviour.send_replace(behaviour);
    }

    async fn next_hello(&mut self) -> ClientMessage {
        tokio::time::timeout(Duration::from_secs(10), self.hellos.recv())
            .await
            .expect("a hello within 10 s")
            .expect("hello channel open")
    }
}

async fn fake_session(
    stream: TcpStream,
    mut behaviour: watch::Receiver<Behaviour>,
    mut config: watch::Receiver<ConfigSnapshot>,
    hellos: mpsc::UnboundedSender<ClientMessage>,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let _ = hellos.send(serde_json::from_str(&line).expect("hello line"));
    let send = |message: ServerMessage| {
        let mut text = serde_json::to_string(&message).expect("encode");
        text.push('\n');
        text
    };
    let Ok(current) = behaviour.wait_for(|b| *b != Behaviour::Hold).await.map(|b| b.clone()) else { return };
    match current {
        Behaviour::Reject(reason) => {
            let _ = write.write_all(send(ServerMessage::Rejected { reason }).as_bytes()).await;
            return;
        }
        Behaviour::Serve | Behaviour::Silent => {
            let accepted = ServerMessage::Accepted { revision: "1-9-7".into(), version: "1.9.7".into() };
            let snapshot = ServerMessage::Config(config.borrow_and_update().clone());
            if write.write_all((send(accepted) + &send(snapshot)).as_bytes()).await.is_err() {
                return;
            }
        }
        Behaviour::Hold => unreachable!(),
    }
    let mut ping = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if *behaviour.borrow() == Behaviour::Serve && write.write_all(send(ServerMessage::Ping).as_bytes()).await.is_err() {
                    return;
                }
            }
            Ok(()) = config.changed() => {
                let snapshot = ServerMessage::Config(config.borrow_and_update().clone());
                if write.write_all(send(snapshot).as_bytes()).await.is_err() {
                    return;
                }
            }
            _ = behaviour.changed() => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Config, pods, contexts.

/// The fixture's Gateway and VirtualService (namespace `default`), and the productpage Service.
fn bookinfo_config(generation: u64) -> ConfigSnapshot {
    let text = std::fs::read_to_string(BOOKINFO_GATEWAY).expect("fixture");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("yaml");
    let mut snapshot = ConfigSnapshot { generation, ..ConfigSnapshot::default() };
    for mut doc in docs {
        doc["metadata"]["namespace"] = json!("default");
        match doc["kind"].as_str() {
            Some("Gateway") => snapshot.gateways.push(doc),
            Some("VirtualService") => snapshot.virtual_services.push(doc),
            other => panic!("unexpected kind {other:?}"),
        }
    }
    snapshot.services.push(ServiceEntry {
        namespace: "default".into(),
        name: "productpage".into(),
        cluster_ip: "10.96.0.50".into(),
        ports: vec![(9080, Some("http".into()))],
        ..ServiceEntry::default()
    });
    snapshot
}

/// A legacy-chart ingress gateway pod of revision 1-9-7 (ports and args as in
/// helm-rendered/1.9.7/ingressgateway-rev-1-9-7.yaml), draining for `drain_seconds`.
fn gateway_pod(name: &str, drain_seconds: u32) -> Pod {
    let ports: Vec<Value> = [15021, 8080, 8443, 15012, 15443, 15090]
        .iter()
        .map(|p| json!({ "containerPort": p, "protocol": "TCP" }))
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": "istio-system",
            "labels": { "app": "istio-ingressgateway", "istio": "ingressgateway", "istio.io/rev": "1-9-7",
                        "sidecar.istio.io/inject": "false" }
        },
        "spec": { "containers": [{
            "name": "istio-proxy",
            "image": "docker.io/istio/proxyv2:1.9.7",
            "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
            "ports": ports,
            "env": [
                { "name": "CA_ADDR", "value": "istiod-1-9-7.istio-system.svc:15012" },
                { "name": "ISTIO_META_WORKLOAD_NAME", "value": "istio-ingressgateway" },
                { "name": "TERMINATION_DRAIN_DURATION_SECONDS", "value": drain_seconds.to_string() }
            ]
        }] }
    }))
    .expect("pod")
}

/// An injected bookinfo pod: app container `productpage` on 9080 plus a 1.9.7 sidecar (env as in
/// istio-tree/1.9.7/injection/hello.yaml.injected, with a revisioned discovery address).
fn sidecar_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": "productpage-v1-abc12", "namespace": "default",
                      "labels": { "app": "productpage", "version": "v1", "istio.io/rev": "1-9-7" } },
        "spec": { "containers": [
            { "name": "productpage", "image": "docker.io/istio/examples-bookinfo-productpage-v1:1.16.2",
              "ports": [{ "containerPort": 9080 }] },
            { "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.9.7",
              "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
              "ports": [{ "containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP" }],
              "env": [
                  { "name": "CA_ADDR", "value": "istiod.istio-system.svc:15012" },
                  { "name": "PROXY_CONFIG", "value": "{\"discoveryAddress\":\"istiod-1-9-7.istio-system.svc:15012\"}\n" }
              ] }
        ] }
    }))
    .expect("pod")
}

/// Resolves the istiod and productpage Services to the test's servers.
fn resolver() -> ServiceResolver {
    Arc::new(|_namespace: &str, host: &str, port: u16| {
        if host.starts_with("istiod-1-9-7.istio-system.svc") && port == 15012 {
            Some(ISTIOD)
        } else if (host == "productpage" || host.starts_with("productpage.default")) && port == 9080 {
            Some(BACKEND)
        } else {
            None
        }
    })
}

async fn context(
    cluster_kubeconfig: kube::config::Kubeconfig,
    pod: Pod,
    pod_ip: Ipv4Addr,
    lifecycle: watch::Receiver<Lifecycle>,
) -> ContainerContext {
    let container = pod.spec.as_ref().and_then(|s| s.containers.iter().find(|c| c.name == "istio-proxy")).cloned();
    ContainerContext {
        pod: Arc::new(pod),
        container: container.expect("istio-proxy container"),
        pod_ip,
        pod_loopback: pod_loopback(pod_ip),
        // Never used by the proxy; built lazily, it does not need to reach the apiserver.
        client: meshshift_lab::kubeconfig::client_from(cluster_kubeconfig).await.expect("client"),
        resolve: resolver(),
        lifecycle,
    }
}

/// Starts the proxy as the node agent would.
fn start_proxy(ctx: ContainerContext) -> JoinHandle<Result<(), ContainerError>> {
    let image = ProxyImage::new();
    let pod = ctx.pod.clone();
    assert!(image.matches(&pod, &ctx.container), "the proxy image must claim istio-proxy/proxyv2");
    tokio::spawn(image.start(ctx))
}

// ---------------------------------------------------------------------------------------------------
// HTTP helpers.

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One GET on a fresh connection.
async fn get(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(http::header::HOST, "bookinfo.example.com")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() })
}

async fn status(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    get(addr, path).await.ok().map(|r| r.status)
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// A server answering every request with `pod` in `x-meshshift-pod` (and, for the backend behind a
/// gateway, the headers its own sidecar would add), echoing the path.
async fn serve_app(addr: SocketAddrV4, pod: &'static str, with_sidecar_headers: bool) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let app = axum::Router::new().fallback(move |uri: http::Uri, headers: HeaderMap| async move {
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
        let mut response = http::Response::new(axum::body::Body::from(format!("app {} host={host}", uri.path())));
        response.headers_mut().insert(HEADER_POD, pod.parse().expect("header"));
        if with_sidecar_headers {
            response.headers_mut().insert(HEADER_REVISION, "1-9-7".parse().expect("header"));
            response.headers_mut().insert(HEADER_PROXY, "sidecar".parse().expect("header"));
        }
        response
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// The proxy's istiod-connection gauge reads `value`.
async fn xds_gauge(ip: Ipv4Addr, value: u8) -> Option<()> {
    let stats = get(at(ip, 15090), "/stats/prometheus").await.ok()?;
    stats
        .body
        .lines()
        .any(|l| l.starts_with("meshshift_proxy_xds_connected") && l.ends_with(&format!(" {value}")))
        .then_some(())
}

async fn connected(ip: Ipv4Addr) -> Option<()> {
    xds_gauge(ip, 1).await
}

async fn disconnected(ip: Ipv4Addr) -> Option<()> {
    xds_gauge(ip, 0).await
}

// ---------------------------------------------------------------------------------------------------
// Tests.

/// A gateway router: ready once istiod accepted it and sent config; routes follow the bookinfo-gateway
/// fixture; a lost or silent istiod is noticed (connection gauge) while the proxy stays ready and keeps
/// serving its last config, as Envoy does; it reconnects; on termination it drains with
/// `Connection: close`, then closes its listener.
#[test]
fn gateway_router_follows_istiod_routes_bookinfo_and_drains() {
    let cluster = lab();
    let kubeconfig = cluster.kubeconfig();
    cluster
        .inside(move || async move {
            let mut istiod = FakeIstiod::start(Behaviour::Hold, bookinfo_config(1)).await;
            let _backend = serve_app(BACKEND, BACKEND_POD, true).await;
            let (lifecycle, lifecycle_rx) = watch::channel(Lifecycle::Running);
            let pod = gateway_pod("istio-ingressgateway-1-9-7-5d8f7", 2);
            let proxy = start_proxy(context(kubeconfig, pod, GATEWAY_IP, lifecycle_rx).await);
            let ready = at(GATEWAY_IP, 15021);
            let gateway = at(GATEWAY_IP, 8080);

            // Connected but not yet accepted: serving, not ready, no config.
            let first = eventually("the readiness endpoint", Duration::from_secs(10), || status(ready, "/healthz/ready")).await;
            assert_eq!(first, StatusCode::SERVICE_UNAVAILABLE, "not ready before any config");
            let hello = istiod.next_hello().await;
            assert_eq!(
                hello,
                ClientMessage::Hello {
                    revision: "1-9-7".into(),
                    version: "1.9.7".into(),
                    pod: "istio-system/istio-ingressgateway-1-9-7-5d8f7".into(),
                    kind: ProxyKind::Router,
                }
            );
            let early = get(gateway, "/productpage").await.expect("gateway answers before config");
            assert_eq!(early.status, StatusCode::SERVICE_UNAVAILABLE, "{}", early.body);

            // Accepted + config: ready, and the fixture's routes work.
            istiod.set(Behaviour::Serve);
            let began = Instant::now();
            eventually("ready after Accepted + Config", Duration::from_secs(5), || async move {
                (status(ready, "/healthz/ready").await == Some(StatusCode::OK)).then_some(())
            })
            .await;
            eprintln!("ready {} ms after the config", began.elapsed().as_millis());
            for path in ["/productpage", "/static/css/x.css", "/login", "/logout", "/api/v1/products/1"] {
                let reply = get(gateway, path).await.expect("request");
                assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
                assert_eq!(reply.body, format!("app {path} host=bookinfo.example.com"));
                assert_eq!(reply.header(HEADER_PROXY), Some("gateway"));
                assert_eq!(reply.header(HEADER_REVISION), Some("1-9-7"));
                assert_eq!(reply.header(HEADER_VERSION), Some("1.9.7"));
                assert_eq!(reply.header(HEADER_POD), Some("istio-system/istio-ingressgateway-1-9-7-5d8f7"));
                assert_eq!(reply.header("x-meshshift-upstream-pod"), Some(BACKEND_POD), "the backend pod is kept");
                assert_eq!(reply.header("x-meshshift-upstream-proxy"), Some("sidecar"));
            }
            let nope = get(gateway, "/nope").await.expect("request");
            assert_eq!(nope.status, StatusCode::NOT_FOUND, "{}", nope.body);
            assert_eq!(nope.header(HEADER_PROXY), Some("gateway"));
            let stats = get(at(GATEWAY_IP, 15090), "/stats/prometheus").await.expect("stats");
            assert!(stats.body.contains(
                "istio_requests_total{response_code=\"200\",source_workload=\"istio-ingressgateway\",destination_service=\"productpage.default.svc.cluster.local\",reporter=\"source\""
            ), "{}", stats.body);
            assert!(stats.body.contains("response_code=\"404\""), "{}", stats.body);
            assert!(stats.body.contains("response_code=\"503\""), "the early answer is counted: {}", stats.body);

            // A hung istiod (no pings): the proxy notices within a few seconds, stays ready, still routes.
            istiod.set(Behaviour::Silent);
            let began = Instant::now();
            eventually("disconnected after pings stop", Duration::from_secs(6), || disconnected(GATEWAY_IP)).await;
            eprintln!("disconnected {} ms after pings stopped", began.elapsed().as_millis());
            assert_eq!(status(ready, "/healthz/ready").await, Some(StatusCode::OK), "a configured proxy stays ready");
            assert_eq!(get(gateway, "/productpage").await.expect("request").status, StatusCode::OK, "stale config serves");

            // istiod recovers: the proxy reconnects (new hello).
            istiod.set(Behaviour::Serve);
            let again = istiod.next_hello().await;
            assert!(matches!(again, ClientMessage::Hello { .. }));
            eventually("connected again", Duration::from_secs(6), || connected(GATEWAY_IP)).await;

            // istiod goes away (connection closed, nothing listening): still ready, the last config serves.
            istiod.stop();
            let began = Instant::now();
            eventually("disconnected after istiod closed", Duration::from_secs(4), || disconnected(GATEWAY_IP)).await;
            eprintln!("disconnected {} ms after istiod closed", began.elapsed().as_millis());
            assert_eq!(status(ready, "/healthz/ready").await, Some(StatusCode::OK), "a configured proxy stays ready");
            for _ in 0..5 {
                let reply = get(gateway, "/productpage").await.expect("request");
                assert_eq!(reply.status, StatusCode::OK, "the last config keeps serving: {}", reply.body);
            }

            // Termination: not ready at once; requests during the 2 s drain are served with
            // Connection: close; then the listener is closed and the container exits by itself.
            lifecycle.send_replace(Lifecycle::Terminating { deadline: std::time::Instant::now() + Duration::from_secs(30) });
            let began = Instant::now();
            eventually("unready once terminating", Duration::from_secs(1), || async move {
                let reply = get(ready, "/healthz/ready").await.ok()?;
                (reply.status == StatusCode::SERVICE_UNAVAILABLE && reply.body.contains("draining")).then_some(())
            })
            .await;
            let mut served_while_draining = 0;
            while began.elapsed() < Duration::from_millis(1500) {
                let reply = get(gateway, "/productpage").await.expect("served during the drain");
                assert_eq!(reply.status, StatusCode::OK);
                assert_eq!(reply.header("connection"), Some("close"), "draining responses ask clients to close");
                served_while_draining += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(served_while_draining >= 5, "{served_while_draining}");
            let result = tokio::time::timeout(Duration::from_secs(5), proxy).await.expect("the proxy exits after its drain");
            result.expect("task").expect("clean exit");
            let drained = began.elapsed();
            assert!(drained >= Duration::from_secs(2) && drained < Duration::from_secs(4), "drained in {drained:?}");
            let refused = TcpStream::connect(gateway).await;
            assert!(refused.is_err(), "the listener must be closed after the drain");
        })
        .expect("enter the lab");
}

/// A proxy istiod rejects (unsupported skew) never becomes ready and keeps retrying; a gateway without
/// config answers 503; `Killed` ends the container at once.
#[test]
fn a_rejected_proxy_stays_unready_and_killed_exits_at_once() {
    let cluster = lab();
    let kubeconfig = cluster.kubeconfig();
    cluster
        .inside(move || async move {
            let reason = "proxy 1.9.7 is 2 minors behind istiod 1.11.0; at most 1 is supported";
            let mut istiod = FakeIstiod::start(Behaviour::Reject(reason.into()), bookinfo_config(1)).await;
            let (lifecycle, lifecycle_rx) = watch::channel(Lifecycle::Running);
            let pod = gateway_pod("istio-ingressgateway-1-9-7-rej", 5);
            let proxy = start_proxy(context(kubeconfig, pod, GATEWAY_IP, lifecycle_rx).await);
            let ready = at(GATEWAY_IP, 15021);
            istiod.next_hello().await;
            let rejected = eventually("the rejection to show", Duration::from_secs(5), || async move {
                let reply = get(ready, "/healthz/ready").await.ok()?;
                reply.body.contains("rejected").then_some(reply)
            })
            .await;
            assert_eq!(rejected.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(rejected.body.contains(reason), "{}", rejected.body);
            // It stays unready, and retries (slowly).
            for _ in 0..20 {
                assert_eq!(status(ready, "/healthz/ready").await, Some(StatusCode::SERVICE_UNAVAILABLE));
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let retried = istiod.next_hello().await;
            assert!(matches!(retried, ClientMessage::Hello { .. }), "a rejected proxy retries");
            let reply = get(at(GATEWAY_IP, 8080), "/productpage").await.expect("request");
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "no config: 503");

            lifecycle
                .send_replace(Lifecycle::Terminating { deadline: std::time::Instant::now() + Duration::from_secs(30) });
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!proxy.is_finished(), "draining for 5 s");
            let began = Instant::now();
            lifecycle.send_replace(Lifecycle::Killed);
            let result = tokio::time::timeout(Duration::from_secs(1), proxy).await.expect("killed exits at once");
            result.expect("task").expect("clean exit");
            eprintln!("killed -> exited in {} ms", began.elapsed().as_millis());
            assert!(TcpStream::connect(ready).await.is_err(), "everything is closed");
        })
        .expect("enter the lab");
}

/// A sidecar forwards inbound traffic on the app's ports from the pod IP to the app on the pod loopback,
/// stamping its headers and keeping the app's pod header; without the app it answers 503.
#[test]
fn a_sidecar_forwards_to_its_app_on_the_pod_loopback() {
    let cluster = lab();
    let kubeconfig = cluster.kubeconfig();
    cluster
        .inside(move || async move {
            let mut istiod = FakeIstiod::start(Behaviour::Serve, bookinfo_config(1)).await;
            let (_lifecycle, lifecycle_rx) = watch::channel(Lifecycle::Running);
            let ctx = context(kubeconfig, sidecar_pod(), SIDECAR_IP, lifecycle_rx).await;
            let loopback = ctx.pod_loopback;
            assert_eq!(loopback, Ipv4Addr::new(127, 244, 9, 40));
            let proxy = start_proxy(ctx);
            let hello = istiod.next_hello().await;
            assert!(matches!(&hello, ClientMessage::Hello { revision, kind: ProxyKind::Sidecar, .. } if revision == "1-9-7"), "{hello:?}");
            eventually("sidecar ready", Duration::from_secs(5), || async move {
                (status(at(SIDECAR_IP, 15021), "/healthz/ready").await == Some(StatusCode::OK)).then_some(())
            })
            .await;

            let inbound = at(SIDECAR_IP, 9080);
            let down = get(inbound, "/productpage").await.expect("the sidecar answers");
            assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "app not listening yet: {}", down.body);
            assert_eq!(down.header(HEADER_PROXY), Some("sidecar"));

            let app = serve_app(SocketAddrV4::new(loopback, 9080), "default/productpage-v1-abc12", false).await;
            let reply = get(inbound, "/productpage?u=1").await.expect("request");
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert_eq!(reply.body, "app /productpage host=bookinfo.example.com");
            assert_eq!(reply.header(HEADER_PROXY), Some("sidecar"));
            assert_eq!(reply.header(HEADER_REVISION), Some("1-9-7"));
            assert_eq!(reply.header(HEADER_VERSION), Some("1.9.7"));
            assert_eq!(reply.header(HEADER_POD), Some("default/productpage-v1-abc12"), "the app's header is kept");

            // Keep-alive: several requests on one connection.
            let stream = TcpStream::connect(inbound).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(conn);
            for i in 0..3 {
                let request = Request::get(format!("/r/{i}")).header("host", "x").body(Empty::<Bytes>::new()).expect("req");
                let response = sender.send_request(request).await.expect("keep-alive request");
                assert_eq!(response.status(), StatusCode::OK);
                let _ = response.into_body().collect().await;
            }

            let stats = get(at(SIDECAR_IP, 15090), "/stats/prometheus").await.expect("stats");
            assert!(stats.body.contains("reporter=\"destination\""), "{}", stats.body);
            assert!(stats.body.contains("envoy_http_downstream_cx_active"), "{}", stats.body);
            let counts: BTreeMap<&str, usize> =
                ["response_code=\"200\"", "response_code=\"503\""].iter().map(|k| (*k, stats.body.matches(k).count())).collect();
            assert!(counts.values().all(|n| *n >= 1), "{counts:?}\n{}", stats.body);

            app.abort();
            proxy.abort();
        })
        .expect("enter the lab");
}

// ---------------------------------------------------------------------------------------------------
// With the node agent and service networking.

/// A thread inside the lab's network namespace whose runtime runs futures for the whole test, while the
/// test itself (host namespace) talks to the apiserver.
struct LabThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LabThread {
    fn start(cluster: &TestCluster) -> LabThread {
        let path = format!("/proc/{}/ns/net", cluster.supervisor_pid());
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            handle_tx.send(rt.handle().clone()).expect("send handle");
            let _ = rt.block_on(stopped);
        });
        let handle = handle_rx.recv().expect("lab thread handle");
        LabThread { handle, stop: Some(stop), thread: Some(thread) }
    }

    /// Runs `future` inside the lab and waits for its result.
    async fn run<T: Send + 'static>(&self, future: impl std::future::Future<Output = T> + Send + 'static) -> T {
        self.handle.spawn(future).await.expect("lab task")
    }
}

impl Drop for LabThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures");
/// The fake istiod's address in the full lab: outside the node agent's pod ranges (10.244.<node>.0/24).
const E2E_ISTIOD: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 200, 9), 15012);

async fn create<K>(client: &kube::Client, ns: Option<&str>, object: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + std::fmt::Debug,
    K: serde::de::DeserializeOwned + serde::Serialize,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).expect("object");
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), ns.unwrap_or("default"));
    api.create(&kube::api::PostParams::default(), &object).await.unwrap_or_else(|e| panic!("create: {e}"))
}

/// The proxy as the node agent runs it, reached through the lab's service networking: the legacy 1.9.7
/// ingress gateway chart (Deployment, Service, ServiceAccount as rendered) becomes Ready once its istiod
/// (the fake, behind a selector-less `istiod-1-9-7` Service) pushes config, and routes /productpage through
/// its ClusterIP to a productpage Deployment; deleting the gateway pod drains it.
#[tokio::test]
async fn the_node_agent_runs_the_gateway_chart_through_service_networking() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service, ServiceAccount};
    use kube::api::{Api, DeleteParams, ListParams, PostParams};

    let cluster = TestCluster::start_lab(&example_supervisor(), &LabOptions::full(1)).unwrap_or_else(|e| panic!("{e}"));
    let client = cluster.client().await.expect("client");
    let inside = LabThread::start(&cluster);
    let _istiod = inside.run(FakeIstiod::start_at(E2E_ISTIOD, Behaviour::Serve, bookinfo_config(1))).await;

    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": "istio-system" } })).expect("ns");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    let _: Service = create(
        &client,
        Some("istio-system"),
        json!({
            "metadata": { "name": "istiod-1-9-7" },
            "spec": { "ports": [{ "name": "https-dns", "port": 15012, "targetPort": 15012 }] }
        }),
    )
    .await;
    let _: Endpoints = create(&client, Some("istio-system"), json!({
        "metadata": { "name": "istiod-1-9-7" },
        "subsets": [{ "addresses": [{ "ip": E2E_ISTIOD.ip().to_string() }], "ports": [{ "name": "https-dns", "port": 15012 }] }]
    }))
    .await;
    let _: Service = create(
        &client,
        None,
        json!({
            "metadata": { "name": "productpage", "labels": { "app": "productpage" } },
            "spec": { "selector": { "app": "productpage" }, "ports": [{ "name": "http", "port": 9080 }] }
        }),
    )
    .await;
    let _: Deployment = create(&client, None, json!({
        "metadata": { "name": "productpage-v1" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "productpage" } },
            "template": {
                "metadata": { "labels": { "app": "productpage", "version": "v1" } },
                "spec": { "containers": [{ "name": "web", "image": "example.com/web:1", "ports": [{ "containerPort": 9080 }] }] }
            }
        }
    }))
    .await;

    // The rendered legacy gateway chart of revision 1-9-7 as it is; only the PDB, HPA and RBAC objects are
    // left out (the lab does not need them).
    let path = format!("{FIXTURES}/helm-rendered/1.9.7/ingressgateway-rev-1-9-7.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("yaml");
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        match doc["kind"].as_str() {
            Some("ServiceAccount") => drop(create::<ServiceAccount>(&client, Some("istio-system"), doc).await),
            Some("Service") => drop(create::<Service>(&client, Some("istio-system"), doc).await),
            Some("Deployment") => drop(create::<Deployment>(&client, Some("istio-system"), doc).await),
            _ => {}
        }
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), "istio-system");
    let began = Instant::now();
    let gateway_pod = eventually("the gateway pod Ready", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("istio=ingressgateway")).await.ok()?;
            list.items.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        }
    })
    .await;
    eprintln!("gateway Ready after {} ms", began.elapsed().as_millis());
    let gateway_name = gateway_pod.metadata.name.clone().expect("name");
    let svc =
        Api::<Service>::namespaced(client.clone(), "istio-system").get("istio-ingressgateway").await.expect("svc");
    let cluster_ip: Ipv4Addr = svc.spec.and_then(|s| s.cluster_ip).expect("cluster ip").parse().expect("ip");

    let through_gateway = at(cluster_ip, 80);
    let reply = inside
        .run(async move {
            eventually("/productpage through the gateway's ClusterIP", Duration::from_secs(30), || async move {
                get(through_gateway, "/productpage").await.ok().filter(|r| r.status == StatusCode::OK)
            })
            .await
        })
        .await;
    assert_eq!(reply.header(HEADER_PROXY), Some("gateway"));
    assert_eq!(reply.header(HEADER_REVISION), Some("1-9-7"));
    assert_eq!(reply.header(HEADER_POD), Some(format!("istio-system/{gateway_name}").as_str()));
    assert!(
        reply.header("x-meshshift-upstream-pod").is_some_and(|p| p.starts_with("default/productpage-v1-")),
        "{reply:?}"
    );
    let nope = inside.run(async move { get(through_gateway, "/nope").await }).await.expect("request");
    assert_eq!(nope.status, StatusCode::NOT_FOUND);

    // Deleting the pod: it drains (5 s default) while still answering through its pod IP.
    let pod_ip: Ipv4Addr = gateway_pod.status.and_then(|s| s.pod_ip).expect("pod ip").parse().expect("ip");
    pods.delete(&gateway_name, &DeleteParams::default()).await.expect("delete");
    let during = inside
        .run(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            get(at(pod_ip, 8080), "/productpage").await
        })
        .await
        .expect("served during the drain");
    assert_eq!(during.status, StatusCode::OK);
    assert_eq!(during.header("connection"), Some("close"));
}
