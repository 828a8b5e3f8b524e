//! End-to-end tests of the lab's service networking (kube-proxy emulation and load balancers) against a real
//! control plane, with real TCP traffic.
//!
//! There is no node agent here (`nodes: 0`): each test runs its own backends inside the lab's network
//! namespace on pod-like IPs (10.244.9.x), with selector-less Services and hand-written Endpoints. Every
//! backend greets a new connection with its name and then echoes lines prefixed with it, so a client sees
//! which backend it reached and whether an open connection is still on it.
//!
//! Traffic only goes to 127.0.0.1 (host-side load balancer ports) or to addresses inside the lab.
//! Needs root (entering the lab's namespace) and the binaries from `scripts/install-deps.sh`.

use meshshift_lab::testing::eventually;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use meshshift_lab::netsvc::{LoadBalancerEntry, LoadBalancers};
use meshshift_lab::testing::example_supervisor;
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

fn start_lab(propagation_delay: Duration) -> TestCluster {
    let opts = LabOptions { nodes: 0, services: true, propagation_delay, ..Default::default() };
    TestCluster::start_lab(&example_supervisor(), &opts).unwrap_or_else(|err| panic!("{err}"))
}

// ---------------------------------------------------------------------------------------------------------
// Backends inside the lab.

/// Greeting-echo servers running inside the lab's namespace until dropped.
struct Backends {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backends {
    /// Serves `(name, address)` pairs on a thread that entered the lab's network namespace; returns once
    /// every address is bound.
    fn start(cluster: &TestCluster, backends: &[(&str, &str)]) -> Backends {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", cluster.supervisor_pid())).expect("open netns");
        let backends: Vec<(String, SocketAddr)> =
            backends.iter().map(|(n, a)| ((*n).to_owned(), a.parse().expect("backend address"))).collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let outcome = (|| -> Result<tokio::runtime::Runtime, String> {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
            })();
            let rt = match outcome {
                Ok(rt) => rt,
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                    return;
                }
            };
            rt.block_on(async move {
                for (name, addr) in backends {
                    let listener = match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => l,
                        Err(err) => {
                            let _ = ready_tx.send(Err(format!("bind {addr}: {err}")));
                            return;
                        }
                    };
                    tokio::spawn(async move {
                        while let Ok((stream, _)) = listener.accept().await {
                            tokio::spawn(greet_and_echo(stream, name.clone()));
                        }
                    });
                }
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
            });
        });
        ready_rx.recv().expect("backend thread").unwrap_or_else(|err| panic!("backends: {err}"));
        Backends { stop: Some(stop_tx), thread: Some(thread) }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn greet_and_echo(stream: TcpStream, name: String) {
    let (r, mut w) = stream.into_split();
    if w.write_all(format!("{name}\n").as_bytes()).await.is_err() {
        return;
    }
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if w.write_all(format!("{name} {line}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Clients.

/// Why a connection did not greet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// `connect` refused: nothing listens there.
    Refused,
    /// Accepted, then reset or closed without a greeting: what the lab does when it cannot serve.
    Dropped(String),
    /// Anything else (timeouts).
    Other(String),
}

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens a connection to `addr` and returns the greeting: the name of the backend reached.
async fn hello(addr: SocketAddr) -> Result<String, Failure> {
    Ok(Pinned::open(addr).await?.name)
}

/// An open connection and the backend it reached.
struct Pinned {
    lines: Lines<BufReader<OwnedReadHalf>>,
    w: OwnedWriteHalf,
    name: String,
}

impl Pinned {
    async fn open(addr: SocketAddr) -> Result<Pinned, Failure> {
        let stream = match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(Failure::Refused),
            // Accepted and reset so fast that the non-blocking connect reports the reset itself.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(Failure::Dropped(e.to_string()));
            }
            Ok(Err(e)) => return Err(Failure::Other(format!("connect: {e}"))),
            Err(_) => return Err(Failure::Other("connect timed out".into())),
        };
        let (r, w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        match tokio::time::timeout(IO_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(name))) => Ok(Pinned { lines, w, name }),
            Ok(Ok(None)) => Err(Failure::Dropped("closed".into())),
            Ok(Err(e)) => Err(Failure::Dropped(e.to_string())),
            Err(_) => Err(Failure::Other("no greeting".into())),
        }
    }

    /// Sends `msg` and returns the answer (`<backend> <msg>`).
    async fn ask(&mut self, msg: &str) -> String {
        self.w.write_all(format!("{msg}\n").as_bytes()).await.expect("write on the pinned connection");
        let line = tokio::time::timeout(IO_TIMEOUT, self.lines.next_line()).await;
        line.expect("answer in time").expect("read on the pinned connection").expect("an answer, not EOF")
    }
}

/// Waits until `n` consecutive greetings from `addr` all come from `name`.
async fn settle_on(addr: SocketAddr, name: &str, n: usize, limit: Duration) {
    let mut streak = 0;
    eventually(&format!("{n} consecutive greetings from {name} at {addr}"), limit, || {
        let ok = name.to_owned();
        async move { Some(hello(addr).await.ok().filter(|got| *got == ok)) }
    })
    .await;
    let start = Instant::now();
    while streak < n {
        match hello(addr).await {
            Ok(got) if got == name => streak += 1,
            _ => streak = 0,
        }
        assert!(start.elapsed() < limit, "no {n} consecutive greetings from {name} at {addr} within {limit:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Objects.

fn service(name: &str, extra: Value) -> Service {
    let mut value = json!({
        "metadata": { "name": name },
        "spec": { "ports": [{ "name": "tcp", "port": 80, "targetPort": 8080 }] }
    });
    merge(&mut value, extra);
    serde_json::from_value(value).expect("service")
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// Endpoints subsets: ready `(ip, node)` addresses on port `tcp`/8080, plus not-ready ones.
fn subsets(ready: &[(&str, &str)], not_ready: &[&str]) -> Value {
    let addresses: Vec<Value> = ready.iter().map(|(ip, node)| json!({ "ip": ip, "nodeName": node })).collect();
    let not_ready: Vec<Value> = not_ready.iter().map(|ip| json!({ "ip": ip })).collect();
    let mut subset = json!({ "ports": [{ "name": "tcp", "port": 8080 }] });
    if !addresses.is_empty() {
        subset["addresses"] = json!(addresses);
    }
    if !not_ready.is_empty() {
        subset["notReadyAddresses"] = json!(not_ready);
    }
    json!([subset])
}

async fn create_endpoints(api: &Api<Endpoints>, name: &str, subsets: Value) {
    let eps: Endpoints =
        serde_json::from_value(json!({ "metadata": { "name": name }, "subsets": subsets })).expect("endpoints");
    api.create(&PostParams::default(), &eps).await.expect("create endpoints");
}

async fn set_endpoints(api: &Api<Endpoints>, name: &str, subsets: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({ "subsets": subsets })))
        .await
        .expect("patch endpoints");
}

fn cluster_ip(svc: &Service, port: u16) -> SocketAddr {
    let ip: Ipv4Addr =
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).expect("a ClusterIP").parse().expect("IPv4");
    SocketAddr::from((ip, port))
}

async fn inside_client(kubeconfig: &Path) -> kube::Client {
    meshshift_lab::kubeconfig::client_from_file(kubeconfig).await.expect("in-namespace client")
}

/// The registry entry of `default/<name>:<port>` once it has a host address.
async fn registry_entry(dir: &Path, name: &str, port: u16) -> LoadBalancerEntry {
    eventually(&format!("{name}:{port} in loadbalancers.json"), Duration::from_secs(20), || async {
        let entries = LoadBalancers::read(dir).expect("read loadbalancers.json");
        LoadBalancers::find(&entries, "default", name, port).filter(|e| e.host.is_some()).cloned()
    })
    .await
}

// ---------------------------------------------------------------------------------------------------------
// Tests.

/// ClusterIP forwarding: round-robin over ready endpoints, the propagation delay, connection pinning,
/// refusal without ready endpoints, port changes and deletion; and the `kubernetes` Service.
#[tokio::test]
async fn cluster_ip_forwarding_follows_endpoints_after_the_propagation_delay() {
    // Long enough that the patch request itself (slow on a loaded machine) ends well inside the window.
    const DELAY: Duration = Duration::from_millis(1000);
    let cluster = start_lab(DELAY);
    let _backends =
        Backends::start(&cluster, &[("a", "10.244.9.1:8080"), ("b", "10.244.9.2:8080"), ("c", "10.244.9.3:8080")]);
    let kubeconfig = cluster.dir().join("etc").join("admin.kubeconfig");
    cluster
        .inside(move || async move {
            let client = inside_client(&kubeconfig).await;
            let services: Api<Service> = Api::namespaced(client.clone(), "default");
            let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");

            // The apiserver's own Service works through the proxy (TLS passes through untouched).
            let mut via_service = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
            if let Some(c) = via_service.clusters[0].cluster.as_mut() {
                c.server = Some("https://10.96.0.1:443".into());
            }
            let via_service = meshshift_lab::kubeconfig::client_from(via_service).await.expect("client");
            let version = eventually("the apiserver through 10.96.0.1:443", Duration::from_secs(20), || {
                let c = via_service.clone();
                async move { c.apiserver_version().await.ok() }
            })
            .await;
            assert_eq!(version.git_version, "v1.20.2");

            let svc = services.create(&PostParams::default(), &service("echo", json!({}))).await.expect("create");
            let vip = cluster_ip(&svc, 80);
            create_endpoints(&endpoints, "echo", subsets(&[("10.244.9.1", "n1"), ("10.244.9.2", "n1")], &[])).await;
            eventually("the ClusterIP to answer", Duration::from_secs(20), || async { hello(vip).await.ok() }).await;

            // Round-robin: sequential connections alternate between the two ready endpoints.
            let mut names = Vec::new();
            for _ in 0..10 {
                names.push(hello(vip).await.expect("greeting"));
            }
            assert_eq!(names.iter().filter(|n| *n == "a").count(), 5, "{names:?}");
            assert_eq!(names.iter().filter(|n| *n == "b").count(), 5, "{names:?}");
            assert!(names.windows(2).all(|w| w[0] != w[1]), "strict alternation: {names:?}");

            // Move the endpoints to c while a connection is open.
            let mut pinned = Pinned::open(vip).await.expect("pinned connection");
            let old = pinned.name.clone();
            let patched_at = Instant::now();
            set_endpoints(&endpoints, "echo", subsets(&[("10.244.9.3", "n1")], &[])).await;
            let mut early = Vec::new();
            let first_c = loop {
                let name = hello(vip).await.expect("no connection fails while endpoints move");
                let at = patched_at.elapsed();
                if name == "c" {
                    break at;
                }
                if at < DELAY {
                    early.push(name);
                }
                assert!(at < Duration::from_secs(10), "new connections never moved to c");
            };
            // The agent observes the change after the patch was sent, so nothing may move before the delay.
            assert!(first_c >= DELAY, "new connections moved after {first_c:?}, before the {DELAY:?} delay");
            assert!(!early.is_empty(), "no connection was made during the propagation window");
            assert!(early.iter().all(|n| n == "a" || n == "b"), "{early:?}");
            for _ in 0..4 {
                assert_eq!(hello(vip).await.expect("greeting"), "c");
            }
            // The connection opened before the change is still on its backend.
            assert_eq!(pinned.ask("ping").await, format!("{old} ping"));

            // Only not-ready addresses: new connections are accepted and reset; the pinned one lives on.
            set_endpoints(&endpoints, "echo", subsets(&[], &["10.244.9.3"])).await;
            eventually("connections to fail without ready endpoints", Duration::from_secs(10), || async {
                hello(vip).await.err()
            })
            .await;
            for _ in 0..5 {
                let failure = hello(vip).await.expect_err("no ready endpoint: the connection must fail");
                assert!(matches!(failure, Failure::Dropped(_)), "accepted and reset, got {failure:?}");
            }
            assert_eq!(pinned.ask("still there?").await, format!("{old} still there?"));

            // The Service port changes: the listener moves from 80 to 81.
            set_endpoints(&endpoints, "echo", subsets(&[("10.244.9.1", "n1")], &[])).await;
            settle_on(vip, "a", 3, Duration::from_secs(10)).await;
            let patch =
                json!({ "spec": { "ports": [{ "name": "tcp", "port": 81, "targetPort": 8080, "protocol": "TCP" }] } });
            services.patch("echo", &PatchParams::default(), &Patch::Merge(patch)).await.expect("patch ports");
            let vip81 = SocketAddr::new(vip.ip(), 81);
            settle_on(vip81, "a", 3, Duration::from_secs(10)).await;
            assert_eq!(hello(vip).await, Err(Failure::Refused), "nothing listens on the old port");
            assert_eq!(pinned.ask("after the port change").await, format!("{old} after the port change"));

            // Deleted: the listener goes away; the open connection continues.
            services.delete("echo", &DeleteParams::default()).await.expect("delete service");
            eventually("the ClusterIP listener to stop", Duration::from_secs(10), || async {
                (hello(vip81).await == Err(Failure::Refused)).then_some(())
            })
            .await;
            assert_eq!(pinned.ask("after delete").await, format!("{old} after delete"));
        })
        .expect("run inside the lab");
}

/// A LoadBalancer Service gets an ingress IP in 10.250.0.0/24 in its status (and nothing else written into
/// it), is reachable at that IP inside the lab and at the host port recorded in loadbalancers.json.
#[tokio::test]
async fn load_balancer_gets_an_ingress_ip_and_a_host_port() {
    let cluster = start_lab(Duration::from_millis(300));
    let _backends = Backends::start(&cluster, &[("a", "10.244.9.1:8080")]);
    let client = cluster.client().await.expect("client");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");

    let user = json!({
        "metadata": { "labels": { "app": "gateway" }, "annotations": { "team": "edge" } },
        "spec": { "type": "LoadBalancer", "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] }
    });
    let created = services.create(&PostParams::default(), &service("gateway", user)).await.expect("create");
    let eps = json!([{
        "addresses": [{ "ip": "10.244.9.1", "nodeName": "n1" }],
        "ports": [{ "name": "http", "port": 8080 }]
    }]);
    create_endpoints(&endpoints, "gateway", eps).await;

    let ingress = eventually("status.loadBalancer.ingress", Duration::from_secs(20), || async {
        let svc = services.get("gateway").await.ok()?;
        let ip = svc.status?.load_balancer?.ingress?.first()?.ip.clone()?;
        Some(ip.parse::<Ipv4Addr>().expect("an IPv4 ingress"))
    })
    .await;
    assert_eq!(ingress.octets()[..3], [10, 250, 0], "{ingress} is in 10.250.0.0/24");

    let entry = registry_entry(cluster.dir(), "gateway", 80).await;
    assert_eq!(entry.ingress_ip, ingress);
    assert_eq!(entry.port_name.as_deref(), Some("http"));
    let host = entry.host.expect("a host address");
    assert_eq!(host.ip(), Ipv4Addr::LOCALHOST);
    assert_eq!(LoadBalancers::host_addr(cluster.dir(), "default", "gateway", 80).expect("read"), Some(host));

    // From the host (this process is in the host namespace).
    assert_eq!(hello(host).await, Ok("a".to_owned()));
    // Inside the lab, at the ingress IP and the ClusterIP.
    let vip = cluster_ip(&created, 80);
    let lb = SocketAddr::from((ingress, 80));
    let (via_lb, via_vip) = cluster.inside(move || async move { (hello(lb).await, hello(vip).await) }).expect("inside");
    assert_eq!(via_lb, Ok("a".to_owned()));
    assert_eq!(via_vip, Ok("a".to_owned()));

    // Nothing but the status was written into the user's Service.
    let now = services.get("gateway").await.expect("get");
    assert_eq!(now.metadata.labels, created.metadata.labels);
    assert_eq!(now.metadata.annotations, created.metadata.annotations);
    assert_eq!(now.spec, created.spec);

    // A second load balancer gets another address; deleting it removes it from the registry.
    let second = json!({ "spec": { "type": "LoadBalancer" } });
    services.create(&PostParams::default(), &service("second", second)).await.expect("create second");
    let other = registry_entry(cluster.dir(), "second", 80).await;
    assert_ne!(other.ingress_ip, ingress);
    assert_ne!(other.host, entry.host);
    services.delete("second", &DeleteParams::default()).await.expect("delete second");
    eventually("second to leave loadbalancers.json", Duration::from_secs(10), || async {
        let entries = LoadBalancers::read(cluster.dir()).expect("read");
        LoadBalancers::find(&entries, "default", "second", 80).is_none().then_some(())
    })
    .await;
    assert_eq!(hello(host).await, Ok("a".to_owned()), "the first load balancer is unaffected");
}

/// Sends a connection every 20 ms to `addr` for `window` and counts the failures.
async fn failures_during(addr: SocketAddr, window: Duration) -> (usize, usize) {
    let start = Instant::now();
    let (mut failed, mut total) = (0, 0);
    while start.elapsed() < window {
        total += 1;
        if hello(addr).await.is_err() {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (failed, total)
}

/// Moving a load balancer's endpoints to another node: with `externalTrafficPolicy: Local` connections
/// fail until the health checks mark the old node unhealthy (the make-before-break failure mode); with
/// `Cluster` none fail.
#[tokio::test]
async fn local_traffic_policy_drops_connections_until_health_checks_catch_up() {
    let cluster = start_lab(Duration::from_millis(300));
    let _backends = Backends::start(&cluster, &[("old", "10.244.9.1:8080"), ("new", "10.244.9.2:8080")]);
    let client = cluster.client().await.expect("client");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");

    // Checks every 500 ms; a node stops receiving traffic after 3 failed checks (>= 1 s of failures).
    let lb = |policy: &str| {
        json!({
            "metadata": { "annotations": {
                "lab.meshshift.io/health-check-interval-ms": "500",
                "lab.meshshift.io/healthy-threshold": "2",
                "lab.meshshift.io/unhealthy-threshold": "3",
            }},
            "spec": { "type": "LoadBalancer", "externalTrafficPolicy": policy }
        })
    };
    let mut hosts = Vec::new();
    for (name, policy) in [("local", "Local"), ("cluster", "Cluster")] {
        services.create(&PostParams::default(), &service(name, lb(policy))).await.expect("create");
        create_endpoints(&endpoints, name, subsets(&[("10.244.9.1", "node-a")], &[])).await;
        let host = registry_entry(cluster.dir(), name, 80).await.host.expect("host address");
        settle_on(host, "old", 5, Duration::from_secs(20)).await;
        hosts.push((name, host));
    }

    for (name, host) in hosts {
        set_endpoints(&endpoints, name, subsets(&[("10.244.9.2", "node-b")], &[])).await;
        let (failed, total) = failures_during(host, Duration::from_secs(3)).await;
        eprintln!("{name}: {failed} of {total} connections failed while the endpoints moved");
        match name {
            "local" => {
                assert!(failed > 0, "Local policy: connections to node-a must fail until it is marked unhealthy")
            }
            _ => assert_eq!(failed, 0, "Cluster policy: kube-proxy forwards from any node"),
        }
        // Once the health checks caught up, everything reaches the new endpoint.
        settle_on(host, "new", 20, Duration::from_secs(20)).await;
    }
}

/// Connects `count` times to `addr`, closing each connection first (so this side holds the TIME_WAIT),
/// and returns the first connect error.
async fn connect_and_close_first(addr: SocketAddr, count: usize) -> Result<(), std::io::Error> {
    for _ in 0..count {
        let stream = TcpStream::connect(addr).await?;
        drop(stream);
    }
    Ok(())
}

/// Every pod's outgoing connections share the lab namespace's ephemeral ports, and the emulated apps open
/// one per call: new connections must be able to reuse ports left in TIME_WAIT, or a few minutes at
/// 500 requests/s exhaust them (the kernel's default reuses only for 127/8 addresses, and the lab's are
/// 10.x on `lo`). With the namespace's port range narrowed to 16 ports, a second round of 16 connections
/// (after the kernel's 1 s reuse delay) succeeds only through reuse.
#[tokio::test]
async fn new_connections_reuse_ports_left_in_time_wait() {
    let cluster = start_lab(Duration::from_millis(300));
    let rounds = cluster
        .inside(|| async {
            const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
            let listener = tokio::net::TcpListener::bind("10.244.9.9:7070").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            // The server reads to the end before closing: the client closes first.
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut sink = Vec::new();
                        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
                    });
                }
            });
            let before = std::fs::read_to_string(RANGE).expect("read the port range");
            std::fs::write(RANGE, "40000 40015").expect("narrow the port range");
            let first = connect_and_close_first(addr, 16).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let second = connect_and_close_first(addr, 16).await;
            std::fs::write(RANGE, before.trim().replace('\t', " ")).expect("restore the port range");
            (first.map_err(|e| e.to_string()), second.map_err(|e| e.to_string()))
        })
        .expect("run inside the lab");
    assert_eq!(rounds.0, Ok(()), "the first 16 connections use fresh ports");
    assert_eq!(rounds.1, Ok(()), "the next 16 reuse ports in TIME_WAIT");
}
