//! End-to-end tests of the lab control plane: a real etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler (1.20.2) in a private network namespace, driven through the `supervise` example (the
//! same entry point as `meshshift lab supervise`).
//!
//! Needs root (or unprivileged user namespaces) and the binaries from `scripts/install-deps.sh`.

use meshshift_lab::testing::{create_namespace, eventually};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use meshshift_lab::state::{LabState, ReadyLine};
use meshshift_lab::testing::{example_supervisor, process_alive};
use meshshift_lab::{LabLayout, TestCluster};
use serde_json::json;

fn start() -> TestCluster {
    let cluster = TestCluster::start(&example_supervisor()).unwrap_or_else(|err| panic!("{err}"));
    eprintln!(
        "lab ready in {:.2} s (supervisor-side {} ms) at {}",
        cluster.startup_time().as_secs_f64(),
        cluster.state().startup_ms,
        cluster.apiserver_url()
    );
    cluster
}

fn ready_node(name: &str) -> Node {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        "status": {
            "capacity": { "cpu": "8", "memory": "16Gi", "pods": "110" },
            "allocatable": { "cpu": "8", "memory": "16Gi", "pods": "110" },
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "lab node",
                "lastHeartbeatTime": now, "lastTransitionTime": now
            }]
        }
    }))
    .expect("node")
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] }
            }
        }
    }))
    .expect("deployment")
}

#[tokio::test]
async fn apiserver_is_kubernetes_1_20_2() {
    let cluster = start();
    let client = cluster.client().await.expect("client");
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.git_version, "v1.20.2");
    // The kubeconfig is usable as a file too, with the documented context name.
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig_path()).expect("kubeconfig file");
    assert_eq!(kubeconfig.current_context.as_deref(), Some("meshshift-lab"));
    assert!(cluster.apiserver_url().starts_with("https://127.0.0.1:"));
    assert!(cluster.log_path("kube-apiserver").is_file());
}

#[tokio::test]
async fn deployments_get_replicasets_and_pods_bound_to_a_node() {
    let cluster = start();
    let client = cluster.client().await.expect("client");
    let ns = "workloads";
    create_namespace(&client, ns, json!({})).await;

    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.create(&PostParams::default(), &ready_node("lab-node-1")).await.expect("create node");
    // Node status is kept on create; check rather than assume.
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "the Node's Ready condition was dropped on create");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments.create(&PostParams::default(), &deployment("web", 2)).await.expect("create deployment");

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let rs = eventually("a ReplicaSet owned by the Deployment", Duration::from_secs(30), || {
        let replicasets = replicasets.clone();
        async move {
            let list = replicasets.list(&ListParams::default().labels("app=web")).await.ok()?;
            list.items.into_iter().find(|rs| {
                rs.metadata.owner_references.iter().flatten().any(|o| o.kind == "Deployment" && o.name == "web")
            })
        }
    })
    .await;
    let rs_name = rs.metadata.name.expect("rs name");

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let bound = eventually("2 pods bound to lab-node-1", Duration::from_secs(60), || {
        let pods = pods.clone();
        let rs_name = rs_name.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
            let bound: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| {
                    p.metadata.owner_references.iter().flatten().any(|o| o.kind == "ReplicaSet" && o.name == rs_name)
                })
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("lab-node-1"))
                .collect();
            (bound.len() == 2).then_some(bound)
        }
    })
    .await;
    for pod in bound {
        // No kubelet: scheduled but never started.
        let status = pod.status.expect("status");
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let scheduled =
            status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "PodScheduled" && c.status == "True");
        assert!(scheduled, "PodScheduled is not True");
    }
}

#[tokio::test]
async fn rbac_is_enforced_for_other_identities() {
    let cluster = start();
    let admin = cluster.client().await.expect("client");
    let ns = "rbac";
    create_namespace(&admin, ns, json!({})).await;

    // The admin (O=system:masters) may impersonate anyone; the impersonated user has no bindings.
    let mut kubeconfig = cluster.kubeconfig();
    kubeconfig.auth_infos[0].auth_info.as_mut().expect("auth info").impersonate = Some("lab-reader".into());
    let reader = meshshift_lab::kubeconfig::client_from(kubeconfig).await.expect("impersonating client");

    let forbidden = |result: Result<_, kube::Error>| match result {
        Err(kube::Error::Api(status)) => status.code == 403,
        other => panic!("expected 403 Forbidden, got {other:?}"),
    };
    let pods_in = |ns: &str| Api::<Pod>::namespaced(reader.clone(), ns);
    assert!(forbidden(pods_in(ns).list(&ListParams::default()).await.map(|_| ())));

    // Grant read access to pods in one namespace: allowed there, still forbidden elsewhere.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "pod-reader" },
        "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"] }]
    }))
    .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "pod-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "lab-reader" }]
    }))
    .expect("binding");
    Api::<Role>::namespaced(admin.clone(), ns).create(&PostParams::default(), &role).await.expect("role");
    Api::<RoleBinding>::namespaced(admin.clone(), ns).create(&PostParams::default(), &binding).await.expect("binding");
    eventually("the RoleBinding to take effect", Duration::from_secs(10), || {
        let pods = pods_in(ns);
        async move { pods.list(&ListParams::default()).await.ok() }
    })
    .await;
    assert!(forbidden(pods_in("default").list(&ListParams::default()).await.map(|_| ())));
    let nodes = Api::<Node>::all(reader.clone());
    assert!(forbidden(nodes.list(&ListParams::default()).await.map(|_| ())));

    // A ServiceAccount token (signed by the controller-manager with the lab's ECDSA key) authenticates:
    // 403 as that account, not 401.
    let sa = Api::<ServiceAccount>::namespaced(admin.clone(), ns).get("default").await.expect("sa");
    let secret_name = sa.secrets.unwrap_or_default().first().and_then(|r| r.name.clone()).expect("token secret");
    let secret = Api::<Secret>::namespaced(admin.clone(), ns).get(&secret_name).await.expect("secret");
    let token = secret.data.unwrap_or_default().remove("token").expect("token");
    let mut doc = serde_json::to_value(cluster.kubeconfig()).expect("kubeconfig to json");
    doc["users"][0]["user"] = json!({ "token": String::from_utf8(token.0).expect("utf8 token") });
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(doc).expect("token kubeconfig");
    let sa_client = meshshift_lab::kubeconfig::client_from(kubeconfig).await.expect("token client");
    match Api::<Node>::all(sa_client).list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("system:serviceaccount:rbac:default"), "{}", status.message);
        }
        other => panic!("expected 403 for the service account, got {other:?}"),
    }
}

#[test]
fn dropping_the_cluster_stops_every_process_and_removes_its_directory() {
    let cluster = start();
    let dir = cluster.dir().to_path_buf();
    let supervisor = cluster.supervisor_pid();
    let children: BTreeMap<String, u32> = cluster.state().children.clone();
    assert_eq!(
        children.keys().map(String::as_str).collect::<Vec<_>>(),
        ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    );
    assert!(children.values().all(|&pid| process_alive(pid)));
    let began = Instant::now();
    drop(cluster);
    eprintln!("dropped in {:.2} s", began.elapsed().as_secs_f64());
    assert!(!process_alive(supervisor), "supervisor {supervisor} still running");
    for (name, pid) in &children {
        assert!(!process_alive(*pid), "{name} ({pid}) still running");
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test]
async fn two_clusters_run_side_by_side() {
    let exe = example_supervisor();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| TestCluster::start(&exe));
        let b = s.spawn(|| TestCluster::start(&exe));
        (a.join().expect("thread").expect("cluster a"), b.join().expect("thread").expect("cluster b"))
    });
    eprintln!(
        "two labs started concurrently: {:.2} s and {:.2} s",
        a.startup_time().as_secs_f64(),
        b.startup_time().as_secs_f64()
    );
    assert_ne!(a.apiserver_url(), b.apiserver_url());
    assert_ne!(a.dir(), b.dir());
    let (ca, cb) = (a.client().await.expect("client a"), b.client().await.expect("client b"));
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": "only-in-a" } })).expect("ns");
    Api::<Namespace>::all(ca.clone()).create(&PostParams::default(), &ns).await.expect("create in a");
    assert!(Api::<Namespace>::all(ca).get_opt("only-in-a").await.expect("get a").is_some());
    assert!(Api::<Namespace>::all(cb).get_opt("only-in-a").await.expect("get b").is_none());
    a.stop().expect("stop a");
    b.stop().expect("stop b");
}

/// A supervisor started by hand, as a process that is not a `TestCluster`.
struct RawSupervisor {
    child: Child,
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
    state: LabState,
}

impl Drop for RawSupervisor {
    /// Stop the supervisor (if still running) before the directory is deleted under its etcd.
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
        wait_gone(self.state.children.values().copied(), Duration::from_secs(5));
    }
}

fn spawn_raw() -> RawSupervisor {
    let dir = tempfile::Builder::new().prefix("meshshift-lab-raw-").tempdir().expect("tempdir");
    // No --bin-dir: the supervisor finds the binaries itself (MESHSHIFT_K8S_BIN or the install record).
    let mut child = Command::new(example_supervisor())
        .args(["lab", "supervise", "--exit-on-stdin-eof", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn supervisor");
    let stdin = child.stdin.take();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let ready: ReadyLine = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert!(ready.ready);
    let layout = LabLayout::new(dir.path());
    assert!(layout.ready_file().exists());
    let state = LabState::read(&layout.state_file()).expect("state.json");
    assert_eq!(state.pid, child.id());
    RawSupervisor { child, stdin, dir, state }
}

fn wait_gone(pids: impl IntoIterator<Item = u32> + Clone, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if pids.clone().into_iter().all(|pid| !process_alive(pid)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn supervisor_stops_when_its_stdin_closes() {
    let mut raw = spawn_raw();
    drop(raw.stdin.take()); // what happens when the test process dies
    let start = Instant::now();
    let status = loop {
        if let Some(status) = raw.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "supervisor ignored stdin EOF");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "supervisor exited with {status}");
    assert!(wait_gone(raw.state.children.values().copied(), Duration::from_secs(1)), "components survived");
    assert!(!LabLayout::new(raw.dir.path()).ready_file().exists(), "ready marker left behind");
}

#[test]
fn components_die_with_a_killed_supervisor() {
    let mut raw = spawn_raw();
    raw.child.kill().expect("SIGKILL"); // no chance to clean up: PR_SET_PDEATHSIG must do it
    raw.child.wait().expect("wait");
    assert!(
        wait_gone(raw.state.children.values().copied(), Duration::from_secs(5)),
        "components survived SIGKILL of the supervisor"
    );
}

#[test]
fn the_supervisor_fails_when_a_component_dies() {
    let mut raw = spawn_raw();
    let scheduler = raw.state.children["kube-scheduler"];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(scheduler as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = raw.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "supervisor did not notice the dead scheduler");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "a dead component must fail the lab");
    assert!(wait_gone(raw.state.children.values().copied(), Duration::from_secs(1)), "components survived");
    drop(raw.stdin.take());
}

#[test]
fn a_lab_directory_has_one_supervisor_at_a_time() {
    let raw = spawn_raw();
    let out = Command::new(example_supervisor())
        .args(["lab", "supervise", "--dir"])
        .arg(raw.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("second supervisor");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another lab supervisor is already using"), "{stderr}");
    assert!(process_alive(raw.state.pid), "the first supervisor must be unaffected");
    drop(raw); // stdin closes: the first supervisor stops
}

#[test]
fn a_failing_apiserver_is_reported_with_its_log() {
    // A bin dir whose kube-apiserver fails at once; the other binaries are the real ones.
    let real = meshshift_lab::binaries::find_k8s_bin_dir().expect("binaries");
    let bin = tempfile::tempdir().expect("tempdir");
    for name in ["kube-controller-manager", "kube-scheduler"] {
        std::os::unix::fs::symlink(real.join(name), bin.path().join(name)).expect("symlink");
    }
    let fake = bin.path().join("kube-apiserver");
    std::fs::write(&fake, "#!/bin/sh\necho 'fake apiserver: cannot serve' >&2\nexit 3\n").expect("write");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");

    let start = Instant::now();
    let err = TestCluster::start_with_bin_dir(&example_supervisor(), bin.path()).expect_err("must fail");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(start.elapsed() < Duration::from_secs(20), "failure took {:?}", start.elapsed());
    assert!(text.contains("kube-apiserver exited unexpectedly"), "{text}");
    assert!(text.contains("fake apiserver: cannot serve"), "the apiserver log tail is missing: {text}");
}

/// A test thread can enter the lab's namespace: the apiserver's advertise address (10.244.255.254) is
/// local there and nowhere else.
#[test]
fn tests_can_run_code_inside_the_lab_network_namespace() {
    let cluster = start();
    let reached = cluster
        .inside(|| async { tokio::net::TcpStream::connect("10.244.255.254:6443").await.is_ok() })
        .expect("enter the lab namespace");
    assert!(reached, "the apiserver's advertise address answers inside the lab");
    let bound = cluster
        .inside(|| async { tokio::net::TcpListener::bind("10.244.7.7:8080").await.map(|l| l.local_addr().ok()) })
        .expect("enter the lab namespace");
    assert_eq!(bound.expect("bind a pod IP inside the lab").map(|a| a.to_string()).as_deref(), Some("10.244.7.7:8080"));
}
