//! End-to-end tests of the node agent (the lab's kubelet): real control plane, emulated nodes and pods,
//! real HTTP on pod IPs inside the lab's network namespace.
//!
//! Needs root (or unprivileged user namespaces) and the binaries from `scripts/install-deps.sh`; run
//! `cargo build -p meshshift-lab --examples` first (the tests drive `target/debug/examples/supervise`).
//! Traffic goes only to addresses inside the lab's namespace (pod IPs 10.244.x.y, ClusterIPs 10.96.x.y).

use meshshift_lab::testing::{create_namespace, eventually};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use meshshift_lab::containers::HEADER_POD;
use meshshift_lab::testing::example_supervisor;
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::{Value, json};

fn start(services: bool) -> TestCluster {
    let opts = LabOptions { nodes: 2, services, ..Default::default() };
    let cluster = TestCluster::start_lab(&example_supervisor(), &opts).unwrap_or_else(|err| panic!("{err}"));
    eprintln!("lab (2 nodes, services: {services}) ready in {:.2} s", cluster.startup_time().as_secs_f64());
    cluster
}

/// A lab with 2 nodes, once the agent registered both (it starts after the control plane's ready line).
async fn start_with_nodes(services: bool) -> (TestCluster, kube::Client) {
    let cluster = start(services);
    let client = cluster.client().await.expect("client");
    let nodes: Api<Node> = Api::all(client.clone());
    let began = Instant::now();
    eventually("2 Ready lab nodes", Duration::from_secs(30), || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await.ok()?.items;
            let ready = list.iter().filter(|n| {
                n.status
                    .iter()
                    .flat_map(|s| s.conditions.iter().flatten())
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            (ready.count() == 2).then_some(())
        }
    })
    .await;
    eprintln!("2 nodes Ready {} ms after the lab's ready line", began.elapsed().as_millis());
    (cluster, client)
}

fn condition(pod: &Pod, kind: &str) -> Option<bool> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == kind).map(|c| c.status == "True")
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && condition(pod, "Ready") == Some(true)
}

fn pod_ip(pod: &Pod) -> Ipv4Addr {
    pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).expect("pod IP").parse().expect("IPv4 pod IP")
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("name")
}

/// Pods matching `selector` that are ready, once there are exactly `count` pods and all are ready.
async fn ready_pods(pods: &Api<Pod>, selector: &str, count: usize, limit: Duration) -> Vec<Pod> {
    eventually(&format!("{count} ready pods {selector}"), limit, || async move {
        let list = pods.list(&ListParams::default().labels(selector)).await.ok()?;
        (list.items.len() == count && list.items.iter().all(is_ready)).then_some(list.items)
    })
    .await
}

/// The ready and not-ready addresses of Endpoints `name`.
async fn endpoint_ips(endpoints: &Api<Endpoints>, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let Ok(Some(ep)) = endpoints.get_opt(name).await else { return Default::default() };
    let mut ready = BTreeSet::new();
    let mut unready = BTreeSet::new();
    for subset in ep.subsets.iter().flatten() {
        ready.extend(subset.addresses.iter().flatten().map(|a| a.ip.clone()));
        unready.extend(subset.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
    }
    (ready, unready)
}

/// One answer: status, the pod header, the body.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    pod: Option<String>,
    body: String,
}

/// `GET url` on a fresh connection (run it inside the lab), with a 3 s limit.
async fn get(url: &str) -> Result<Answer, String> {
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http::<Empty<Bytes>>();
    let uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| format!("{url}: {e:?}"))?;
        let status = response.status().as_u16();
        let pod = response.headers().get(HEADER_POD).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer { status, pod, body: String::from_utf8_lossy(&body).into_owned() })
    };
    tokio::time::timeout(Duration::from_secs(3), exchange).await.map_err(|_| format!("{url}: timed out"))?
}

/// `GET url` from inside the lab's network namespace.
fn get_inside(cluster: &TestCluster, url: String) -> Result<Answer, String> {
    cluster.inside(move || async move { get(&url).await }).expect("enter the lab namespace")
}

fn web_deployment(name: &str, replicas: i32, grace: i64) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "containers": [{
                        "name": "app",
                        "image": "registry.invalid/web:1",
                        "ports": [{ "name": "http", "containerPort": 8080 }],
                        "readinessProbe": { "httpGet": { "port": "http", "path": "/healthz" }, "periodSeconds": 1 }
                    }]
                }
            }
        }
    }))
    .expect("deployment")
}

fn service(name: &str, port: i32, target: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "name": "http", "port": port, "targetPort": target }] }
    }))
    .expect("service")
}

/// The `kubectl rollout status` rule (docs/rust-kube.md): the new ReplicaSet is fully rolled out and
/// available, and no old replicas remain.
fn rollout_complete(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (d.spec.as_ref(), d.status.as_ref()) else { return false };
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
}

#[tokio::test]
async fn nodes_register_ready_with_their_labels_and_leases() {
    let (_cluster, client) = start_with_nodes(false).await;
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await.expect("nodes").items;
    let names: Vec<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
    assert_eq!(names, ["lab-node-1", "lab-node-2"]);
    for (i, node) in nodes.iter().enumerate() {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("kubernetes.io/hostname"), node.metadata.name.as_ref());
        assert_eq!(labels.get("kubernetes.io/arch").map(String::as_str), Some("amd64"));
        assert_eq!(labels.get("beta.kubernetes.io/arch").map(String::as_str), Some("amd64"));
        assert_eq!(labels.get("kubernetes.io/os").map(String::as_str), Some("linux"));
        let status = node.status.clone().expect("node status");
        let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").expect("Ready condition");
        assert_eq!(ready.status, "True");
        let ip = &status.addresses.expect("addresses")[0];
        assert_eq!((ip.type_.as_str(), ip.address.clone()), ("InternalIP", format!("10.244.{}.1", i + 1)));
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = leases.get("lab-node-1").await.expect("lease");
    let first = lease.spec.and_then(|s| s.renew_time).expect("renew time");
    let renewed = eventually("the lease to be renewed", Duration::from_secs(15), || {
        let leases = leases.clone();
        let first = first.clone();
        async move {
            let t = leases.get("lab-node-1").await.ok()?.spec?.renew_time?;
            (t != first).then_some(t)
        }
    })
    .await;
    eprintln!("lease renewed: {} -> {}", first.0, renewed.0);
}

/// A Deployment becomes Ready on two nodes, its pods answer on their IPs, Endpoints list them; a rollout
/// restart replaces them with new ready pods and the old ones disappear.
#[tokio::test]
async fn deployments_become_ready_serve_on_pod_ips_and_roll_out() {
    let (cluster, client) = start_with_nodes(false).await;
    let ns = "web";
    create_namespace(&client, ns, json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service("web", 80, json!("http")))
        .await
        .expect("service");

    let created = Instant::now();
    deployments.create(&PostParams::default(), &web_deployment("web", 2, 2)).await.expect("deployment");
    let ready = ready_pods(&pods, "app=web", 2, Duration::from_secs(60)).await;
    eprintln!("2 pods Ready {} ms after the Deployment was created", created.elapsed().as_millis());

    let ips: BTreeSet<Ipv4Addr> = ready.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 2, "pod IPs are distinct: {ips:?}");
    for pod in &ready {
        let ip = pod_ip(pod);
        assert_eq!(ip.octets()[..2], [10, 244], "{ip} is in 10.244.0.0/16");
        let status = pod.status.clone().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).expect("node");
        let index: u8 = node.trim_start_matches("lab-node-").parse().expect("lab node");
        assert_eq!(status.host_ip.as_deref(), Some(format!("10.244.{index}.1").as_str()));
        assert_eq!(ip.octets()[2], index, "the IP comes from its node's range");
        assert!(status.start_time.is_some());
        let cs = &status.container_statuses.expect("container statuses")[0];
        assert!(cs.ready && cs.state.as_ref().is_some_and(|s| s.running.is_some()), "{cs:?}");
        for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert_eq!(condition(pod, kind), Some(true), "{kind}");
        }
        let answer = get_inside(&cluster, format!("http://{ip}:8080/anything")).expect("the pod answers");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.pod, Some(format!("{ns}/{}", name(pod))));
    }
    let want: BTreeSet<String> = ips.iter().map(Ipv4Addr::to_string).collect();
    eventually("Endpoints to list both pods", Duration::from_secs(10), || {
        let endpoints = endpoints.clone();
        let want = want.clone();
        async move { (endpoint_ips(&endpoints, "web").await.0 == want).then_some(()) }
    })
    .await;

    // rollout restart: what `kubectl rollout restart` patches.
    let old: BTreeSet<String> = ready.iter().map(name).collect();
    let restart = json!({ "spec": { "template": { "metadata": { "annotations": {
        "kubectl.kubernetes.io/restartedAt": k8s_openapi::jiff::Timestamp::now().to_string()
    } } } } });
    let began = Instant::now();
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(&restart)).await.expect("restart");
    eventually("the rollout to complete", Duration::from_secs(60), || {
        let deployments = deployments.clone();
        async move { deployments.get("web").await.ok().filter(rollout_complete) }
    })
    .await;
    eprintln!("rollout restart complete after {} ms", began.elapsed().as_millis());
    let new = eventually("the old pods to be gone", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
            (list.len() == 2 && list.iter().all(is_ready)).then_some(list)
        }
    })
    .await;
    eprintln!("old pods gone after {} ms (grace period 2 s)", began.elapsed().as_millis());
    let new_names: BTreeSet<String> = new.iter().map(name).collect();
    assert!(old.is_disjoint(&new_names), "old {old:?} new {new_names:?}");
    let new_ips: BTreeSet<String> = new.iter().map(|p| pod_ip(p).to_string()).collect();
    eventually("Endpoints to list only the new pods", Duration::from_secs(10), || {
        let endpoints = endpoints.clone();
        let new_ips = new_ips.clone();
        async move { (endpoint_ips(&endpoints, "web").await.0 == new_ips).then_some(()) }
    })
    .await;
    for pod in &new {
        let answer = get_inside(&cluster, format!("http://{}:8080/", pod_ip(pod))).expect("a new pod answers");
        assert_eq!(answer.pod, Some(format!("{ns}/{}", name(pod))));
    }
    for ip in ips.iter().filter(|ip| !new_ips.contains(&ip.to_string())) {
        assert!(get_inside(&cluster, format!("http://{ip}:8080/")).is_err(), "old pod IP {ip} still answers");
    }
}

/// A deleted pod turns unready and leaves its Service's Endpoints at once, keeps answering through its
/// grace period (the app ignores SIGTERM), then is deleted. A pod with a preStop `sleep` and an app that
/// drains briefly is gone long before its 30 s grace period.
#[tokio::test]
async fn deleted_pods_serve_through_their_grace_period_while_not_ready() {
    let (cluster, client) = start_with_nodes(false).await;
    let ns = "drain";
    create_namespace(&client, ns, json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service("web", 80, json!(8080)))
        .await
        .expect("service");
    let pod = |name: &str, grace: i64, extra: Value| -> Pod {
        let mut container = json!({
            "name": "app",
            "image": "registry.invalid/web:1",
            "ports": [{ "containerPort": 8080 }],
            "readinessProbe": { "tcpSocket": { "port": 8080 }, "periodSeconds": 1 }
        });
        if let (Some(c), Some(extra)) = (container.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "app": "web" } },
            "spec": { "terminationGracePeriodSeconds": grace, "containers": [container] }
        }))
        .expect("pod")
    };
    pods.create(&PostParams::default(), &pod("stubborn", 6, json!({}))).await.expect("stubborn");
    let drainer = pod(
        "drainer",
        30,
        json!({
            "env": [{ "name": "LAB_DRAIN_MS", "value": "500" }],
            "lifecycle": { "preStop": { "exec": { "command": ["/bin/sh", "-c", "sleep 2"] } } }
        }),
    );
    pods.create(&PostParams::default(), &drainer).await.expect("drainer");
    let ready = ready_pods(&pods, "app=web", 2, Duration::from_secs(60)).await;
    let ip_of = |n: &str| pod_ip(ready.iter().find(|p| name(p) == n).expect("pod"));
    let (stubborn_ip, drainer_ip) = (ip_of("stubborn"), ip_of("drainer"));
    eventually("Endpoints to list both pods", Duration::from_secs(10), || {
        let endpoints = endpoints.clone();
        async move { (endpoint_ips(&endpoints, "web").await.0.len() == 2).then_some(()) }
    })
    .await;

    // The stubborn pod: 6 s grace period, ignores SIGTERM.
    let deleted = Instant::now();
    pods.delete("stubborn", &DeleteParams::default()).await.expect("delete");
    let unready_after = eventually("the deleted pod to report not Ready", Duration::from_secs(5), || {
        let pods = pods.clone();
        async move {
            pods.get_opt("stubborn")
                .await
                .ok()
                .flatten()
                .filter(|p| condition(p, "Ready") == Some(false))
                .map(|_| deleted.elapsed())
        }
    })
    .await;
    eventually("Endpoints to drop the deleted pod", Duration::from_secs(5), || {
        let endpoints = endpoints.clone();
        let ip = stubborn_ip.to_string();
        async move { (!endpoint_ips(&endpoints, "web").await.0.contains(&ip)).then_some(()) }
    })
    .await;
    eprintln!("deleted pod not Ready after {} ms", unready_after.as_millis());
    // From inside the lab: keep calling the pod until it stops answering.
    let url = format!("http://{stubborn_ip}:8080/");
    let (last_ok, first_fail, answers) = cluster
        .inside(move || async move {
            let (mut last_ok, mut answers) = (None, 0);
            loop {
                match get(&url).await {
                    Ok(a) if a.status == 200 => {
                        last_ok = Some(deleted.elapsed());
                        answers += 1;
                    }
                    _ => return (last_ok, deleted.elapsed(), answers),
                }
                if deleted.elapsed() > Duration::from_secs(20) {
                    return (last_ok, deleted.elapsed(), answers);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .expect("inside");
    let last_ok = last_ok.expect("the pod answered after its deletion");
    eprintln!(
        "deleted pod answered {answers} requests, the last {} ms after deletion; refused from {} ms",
        last_ok.as_millis(),
        first_fail.as_millis()
    );
    assert!(last_ok >= Duration::from_millis(5000), "served until near the 6 s deadline, not {last_ok:?}");
    assert!(first_fail <= Duration::from_secs(9), "stopped around the deadline, not {first_fail:?}");
    eventually("the deleted pod to be gone", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move { pods.get_opt("stubborn").await.ok().and_then(|p| p.is_none().then_some(())) }
    })
    .await;
    eprintln!("deleted pod gone {} ms after deletion (grace 6 s)", deleted.elapsed().as_millis());

    // The drainer: preStop sleep 2 s (serving, unaware), then drains 0.5 s and exits.
    let deleted = Instant::now();
    pods.delete("drainer", &DeleteParams::default()).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = get_inside(&cluster, format!("http://{drainer_ip}:8080/")).expect("serving during preStop");
    assert_eq!(during.status, 200);
    eventually("the drained pod to be gone", Duration::from_secs(15), || {
        let pods = pods.clone();
        async move { pods.get_opt("drainer").await.ok().and_then(|p| p.is_none().then_some(())) }
    })
    .await;
    let gone = deleted.elapsed();
    eprintln!("drained pod gone {} ms after deletion (preStop 2 s + drain 0.5 s, grace 30 s)", gone.as_millis());
    assert!(gone >= Duration::from_millis(2400) && gone < Duration::from_secs(10), "{gone:?}");
}

/// Readiness is real: a slow app is unready until it listens; a probe on a port nobody serves keeps a
/// running pod unready (listed as not ready in Endpoints); a failing liveness probe restarts the container.
#[tokio::test]
async fn readiness_and_liveness_probes_are_real() {
    let (cluster, client) = start_with_nodes(false).await;
    let ns = "probes";
    create_namespace(&client, ns, json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service("web", 80, json!(8080)))
        .await
        .expect("service");
    let pod = |name: &str, annotations: Value, probes: Value| -> Pod {
        let mut container =
            json!({ "name": "app", "image": "registry.invalid/web:1", "ports": [{ "containerPort": 8080 }] });
        if let (Some(c), Some(p)) = (container.as_object_mut(), probes.as_object()) {
            c.extend(p.clone());
        }
        serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "app": "web" }, "annotations": annotations },
            "spec": { "terminationGracePeriodSeconds": 1, "containers": [container] }
        }))
        .expect("pod")
    };
    let created = Instant::now();
    let slow = pod(
        "slow",
        json!({ "lab.meshshift.io/start-delay-ms": "3000" }),
        json!({ "readinessProbe": { "httpGet": { "port": 8080, "path": "/ready" }, "periodSeconds": 1 } }),
    );
    let broken =
        pod("broken", json!({}), json!({ "readinessProbe": { "httpGet": { "port": 9999 }, "periodSeconds": 1 } }));
    let dead = pod(
        "dead",
        json!({}),
        json!({ "livenessProbe": { "tcpSocket": { "port": 9999 }, "periodSeconds": 1, "failureThreshold": 2 } }),
    );
    for p in [&slow, &broken, &dead] {
        pods.create(&PostParams::default(), p).await.expect("create pod");
    }
    let get_pod = |n: &'static str| {
        let pods = pods.clone();
        async move { pods.get(n).await.expect("pod") }
    };
    // The slow one: running but not ready while nothing listens, then ready.
    let running = eventually("the slow pod to be running", Duration::from_secs(30), || {
        let get_pod = get_pod("slow");
        async move {
            let p = get_pod.await;
            (p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).then_some(p)
        }
    })
    .await;
    assert_eq!(condition(&running, "Ready"), Some(false), "not ready before it listens");
    eventually("the slow pod to become ready", Duration::from_secs(15), || {
        let get_pod = get_pod("slow");
        async move { is_ready(&get_pod.await).then_some(()) }
    })
    .await;
    let slow_ready = created.elapsed();
    eprintln!("pod with a 3 s start delay Ready {} ms after creation", slow_ready.as_millis());
    assert!(slow_ready >= Duration::from_secs(3), "{slow_ready:?}");

    // The broken one: its app serves 8080, its probe targets 9999: never ready.
    let broken_now = get_pod("broken").await;
    let ip = pod_ip(&broken_now);
    assert_eq!(condition(&broken_now, "Ready"), Some(false));
    let cs = &broken_now.status.clone().and_then(|s| s.container_statuses).expect("statuses")[0];
    assert!(cs.state.as_ref().is_some_and(|s| s.running.is_some()) && !cs.ready, "{cs:?}");
    assert_eq!(get_inside(&cluster, format!("http://{ip}:8080/")).expect("the app answers").status, 200);
    let (ready_ips, unready_ips) = eventually("Endpoints to settle", Duration::from_secs(10), || {
        let endpoints = endpoints.clone();
        async move {
            let (r, u) = endpoint_ips(&endpoints, "web").await;
            (u.contains(&ip.to_string()) && r.len() == 2).then_some((r, u))
        }
    })
    .await;
    assert!(
        !ready_ips.contains(&ip.to_string()),
        "an unready pod is not a ready endpoint: {ready_ips:?} {unready_ips:?}"
    );

    // The dead one: liveness fails twice, the container restarts (1 s backoff) and the count shows it.
    let restarted = eventually("the dead pod's container to restart", Duration::from_secs(20), || {
        let get_pod = get_pod("dead");
        async move {
            let p = get_pod.await;
            let cs = p.status.and_then(|s| s.container_statuses)?.into_iter().next()?;
            (cs.restart_count >= 1).then_some(cs)
        }
    })
    .await;
    let last = restarted.last_state.and_then(|s| s.terminated).expect("last state");
    assert_eq!(last.exit_code, 137);
    assert!(last.message.unwrap_or_default().contains("Liveness probe failed"));
    assert_eq!(condition(&get_pod("broken").await, "Ready"), Some(false), "still not ready");
}

/// The bookinfo manifests of Istio 1.9.7, created as they are.
async fn apply_bookinfo(client: &kube::Client, ns: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/istio-tree/1.9.7/bookinfo/bookinfo.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple::<Value>(&text).expect("yaml").into_iter().filter(|d| !d.is_null()).collect();
    let pp = PostParams::default();
    for doc in docs {
        match doc["kind"].as_str() {
            Some("Service") => {
                let svc: Service = serde_json::from_value(doc).expect("service");
                Api::<Service>::namespaced(client.clone(), ns).create(&pp, &svc).await.expect("create service");
            }
            Some("ServiceAccount") => {
                let sa: ServiceAccount = serde_json::from_value(doc).expect("service account");
                Api::<ServiceAccount>::namespaced(client.clone(), ns).create(&pp, &sa).await.expect("create account");
            }
            Some("Deployment") => {
                let d: Deployment = serde_json::from_value(doc).expect("deployment");
                Api::<Deployment>::namespaced(client.clone(), ns).create(&pp, &d).await.expect("create deployment");
            }
            other => panic!("unexpected kind {other:?} in bookinfo.yaml"),
        }
    }
}

/// Waits for the six bookinfo Deployments' pods; returns `app-version` -> pod.
async fn bookinfo_pods(client: &kube::Client, ns: &str, began: Instant) -> BTreeMap<String, Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let ready = ready_pods(&pods, "app", 6, Duration::from_secs(90)).await;
    eprintln!("6 bookinfo pods Ready {} ms after the manifests were applied", began.elapsed().as_millis());
    ready
        .into_iter()
        .map(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            (format!("{}-{}", labels["app"], labels["version"]), p)
        })
        .collect()
}

/// Bookinfo without service networking: every app answers on its pod IP; calls that need a Service fail
/// visibly (503). Then the test itself forwards the three backend ClusterIPs to one pod each (a stand-in
/// kube-proxy, inside the lab) and productpage's fan-out works end to end through them.
#[tokio::test]
async fn bookinfo_apps_answer_on_their_pod_ips_and_fan_out_through_cluster_ips() {
    let (cluster, client) = start_with_nodes(false).await;
    let ns = "bookinfo";
    create_namespace(&client, ns, json!({})).await;
    let began = Instant::now();
    apply_bookinfo(&client, ns).await;
    let pods = bookinfo_pods(&client, ns, began).await;
    let url = |key: &str, path: &str| format!("http://{}:9080{path}", pod_ip(&pods[key]));
    let pod_header = |key: &str| Some(format!("{ns}/{}", name(&pods[key])));

    let details = get_inside(&cluster, url("details-v1", "/details/0")).expect("details");
    assert_eq!((details.status, details.pod.clone()), (200, pod_header("details-v1")));
    let body: Value = serde_json::from_str(&details.body).expect("details JSON");
    assert_eq!(body["author"], "William Shakespeare");
    let ratings = get_inside(&cluster, url("ratings-v1", "/ratings/0")).expect("ratings");
    assert_eq!(serde_json::from_str::<Value>(&ratings.body).expect("json")["ratings"]["Reviewer1"], 5);
    let v1 = get_inside(&cluster, url("reviews-v1", "/reviews/0")).expect("reviews v1");
    assert_eq!(v1.status, 200, "v1 does not call ratings");
    assert_eq!(serde_json::from_str::<Value>(&v1.body).expect("json")["version"], "v1");
    let v2 = get_inside(&cluster, url("reviews-v2", "/reviews/0")).expect("reviews v2");
    assert_eq!(v2.status, 503, "v2 needs ratings, unreachable without service networking: {}", v2.body);
    let page = get_inside(&cluster, url("productpage-v1", "/productpage")).expect("productpage");
    assert_eq!(page.status, 503, "no details/reviews without service networking");
    assert_eq!(page.pod, pod_header("productpage-v1"));
    for path in ["/", "/health", "/static/bootstrap.css", "/api/v1/products"] {
        assert_eq!(get_inside(&cluster, url("productpage-v1", path)).expect(path).status, 200, "{path}");
    }
    assert_eq!(get_inside(&cluster, url("productpage-v1", "/login")).expect("login").status, 302);

    // A stand-in kube-proxy: ClusterIP:9080 of details, reviews (-> v3) and ratings, spliced to one pod each.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let mut routes = Vec::new();
    for (svc, backend) in [("details", "details-v1"), ("reviews", "reviews-v3"), ("ratings", "ratings-v1")] {
        let ip: Ipv4Addr = services
            .get(svc)
            .await
            .expect("service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("clusterIP")
            .parse()
            .expect("ip");
        routes.push((SocketAddr::from((ip, 9080)), SocketAddr::from((pod_ip(&pods[backend]), 9080))));
    }
    let page_url = url("productpage-v1", "/productpage");
    let page = cluster
        .inside(move || async move {
            let mut forwarders = tokio::task::JoinSet::new();
            for (front, back) in routes {
                let listener = tokio::net::TcpListener::bind(front).await.expect("bind the ClusterIP");
                forwarders.spawn(async move {
                    while let Ok((mut inbound, _)) = listener.accept().await {
                        tokio::spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(back).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                });
            }
            get(&page_url).await
        })
        .expect("inside")
        .expect("productpage through the forwarders");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("{ns}/{}", name(&pods["details-v1"]))), "details answered: {}", page.body);
    assert!(page.body.contains(&format!("{ns}/{}", name(&pods["reviews-v3"]))), "reviews v3 answered: {}", page.body);
    assert!(page.body.contains("red"), "v3 stars are red: {}", page.body);
}

/// The full bookinfo call graph through the lab's service networking (netsvc, `services: true`):
/// productpage's ClusterIP, then details and reviews (all three versions, round-robin) through theirs.
#[tokio::test]
async fn bookinfo_fan_out_through_service_networking() {
    let (cluster, client) = start_with_nodes(true).await;
    let ns = "bookinfo";
    create_namespace(&client, ns, json!({})).await;
    let began = Instant::now();
    apply_bookinfo(&client, ns).await;
    let pods = bookinfo_pods(&client, ns, began).await;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let ip = services.get("productpage").await.expect("service").spec.and_then(|s| s.cluster_ip).expect("clusterIP");
    let url = format!("http://{ip}:9080/productpage");
    // Endpoints reach the service proxy after its propagation delay (1 s): retry until all versions answer.
    let versions = cluster
        .inside(move || async move {
            let began = Instant::now();
            let mut seen = BTreeSet::new();
            let mut last = String::new();
            while began.elapsed() < Duration::from_secs(30) && seen.len() < 3 {
                match get(&url).await {
                    Ok(a) if a.status == 200 => {
                        for v in ["v1", "v2", "v3"] {
                            if a.body.contains(&format!("reviews-{v}-")) {
                                seen.insert(v.to_owned());
                            }
                        }
                    }
                    Ok(a) => last = format!("{}: {}", a.status, a.body),
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (seen, last)
        })
        .expect("inside");
    assert_eq!(versions.0.len(), 3, "all reviews versions answered through the service network: {versions:?}");
    assert!(pods.contains_key("reviews-v3"));
}
