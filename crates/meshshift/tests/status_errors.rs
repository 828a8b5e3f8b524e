//! How `meshshift status` fails: bad kubeconfig, unknown context, unreachable cluster, no Istio, a
//! forbidden kind (real RBAC on the real apiserver), and `--fail-on`. Each gives its own exit code and a
//! message that says what to do.

mod support;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::mesh::{apply, namespace, without_webhooks};
use support::{fixture_docs, kubelet, meshshift, start_cluster};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn bad_kubeconfig_and_unknown_context_exit_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let run = meshshift(&["status", "--kubeconfig", path(&missing)]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("cannot load kubeconfig") && run.stderr.contains("--kubeconfig"), "{}", run.stderr);

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "clusters: [this is: not: a kubeconfig").expect("write");
    let run = meshshift(&["status", "--kubeconfig", path(&garbage)]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("cannot load kubeconfig"), "{}", run.stderr);

    let one = dir.path().join("one");
    std::fs::write(&one, serde_json::to_string(&kubeconfig_json("https://127.0.0.1:1")).expect("json")).expect("write");
    let run = meshshift(&["status", "--kubeconfig", path(&one), "--context", "prod"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("\"prod\" is not in the kubeconfig") && run.stderr.contains("known contexts: lab"),
        "{}",
        run.stderr
    );
}

fn kubeconfig_json(server: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": server, "insecure-skip-tls-verify": true}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}]
    })
}

#[test]
fn unreachable_cluster_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = dir.path().join("kc");
    // Port 1 on loopback: nothing listens there.
    std::fs::write(&kc, serde_json::to_string(&kubeconfig_json("https://127.0.0.1:1")).expect("json")).expect("write");
    let run = meshshift(&["status", "--kubeconfig", path(&kc)]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach the Kubernetes API at https://127.0.0.1:1"), "{}", run.stderr);
}

#[tokio::test]
async fn no_istio_forbidden_kinds_and_fail_on_shared_fixtures() {
    let cluster = start_cluster();
    let client = cluster.client().await.expect("client");
    let kc = cluster.kubeconfig_path();

    // An empty cluster: no Istio, exit 5.
    let run = meshshift(&["status", "-o", "json", "--kubeconfig", path(kc)]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("no Istio control plane"), "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON report even without Istio");
    assert_eq!(report["revisions"], json!([]));

    // Bad credentials: exit 4.
    let mut bad = cluster.kubeconfig();
    for a in &mut bad.auth_infos {
        if let Some(info) = a.auth_info.as_mut() {
            info.client_certificate_data = None;
            info.client_key_data = None;
            info.token = Some("not-a-token".to_owned().into());
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_path = dir.path().join("bad");
    std::fs::write(&bad_path, serde_json::to_string(&bad).expect("json")).expect("write");
    let run = meshshift(&["status", "--kubeconfig", path(&bad_path)]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("rejected the credentials (401)"), "{}", run.stderr);

    // A 1.9.7 default install with one namespace labelled after its pods started.
    let mut cp = fixture_docs("istio-tree/1.9.7/crds/crd-all.gen.yaml");
    cp.push(namespace("istio-system", &[]));
    cp.extend(fixture_docs("helm-rendered/1.9.7/base-no-crds.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/istiod-default.yaml"));
    let (rest, webhooks) = without_webhooks(cp);
    kubelet::register_node(&client, "node-1").await;
    apply(&client, "istio-system", rest).await;
    apply(&client, "late", vec![namespace("late", &[("istio-injection", "enabled")])]).await;
    apply(&client, "late", fixture_docs("istio-tree/1.9.7/injection/hello.yaml")).await;
    kubelet::make_all_ready(&client).await;
    apply(&client, "istio-system", webhooks).await;

    let run = meshshift(&["status", "--kubeconfig", path(kc)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for section in ["CONTROL PLANE REVISIONS", "INJECTION", "DATA PLANE", "FINDINGS", "POD_WITHOUT_SIDECAR"] {
        assert!(run.stdout.contains(section), "table output lacks {section}:\n{}", run.stdout);
    }
    let run = meshshift(&["status", "--kubeconfig", path(kc), "--fail-on", "warning"]);
    assert_eq!(run.code, 6, "a warning must fail --fail-on warning: {}", run.stderr);
    let run = meshshift(&["status", "--kubeconfig", path(kc), "--fail-on", "error"]);
    assert_eq!(run.code, 0, "no error finding, so --fail-on error passes: {}", run.stderr);
    let run = meshshift(&["status", "-o", "yaml", "--kubeconfig", path(kc)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("revision: default") && run.stdout.contains("version: \"1.9.7\""), "{}", run.stdout);

    // A user who may read everything but pods and webhooks (real RBAC): the report degrades.
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "reader-without-pods"},
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces", "services", "configmaps"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "verbs": ["list"]}
        ]
    }))
    .expect("role");
    Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &role).await.expect("create role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "reader-without-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader-without-pods"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "restricted"}]
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
    let mut restricted = cluster.kubeconfig();
    for a in &mut restricted.auth_infos {
        if let Some(info) = a.auth_info.as_mut() {
            info.impersonate = Some("restricted".to_owned());
        }
    }
    let restricted_path = dir.path().join("restricted");
    std::fs::write(&restricted_path, serde_json::to_string(&restricted).expect("json")).expect("write");
    let run = meshshift(&["status", "-o", "json", "--kubeconfig", path(&restricted_path)]);
    assert_eq!(run.code, 0, "a forbidden kind must not fail the report: {}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("json");
    let forbidden: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["code"] == "READ_FORBIDDEN")
        .map(|f| f["subject"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        forbidden,
        vec!["resource/mutatingwebhookconfigurations", "resource/pods", "resource/validatingwebhookconfigurations"]
    );
    assert_eq!(report["revisions"][0]["version"], "1.9.7", "what may be read is still reported");
    assert_eq!(report["proxies"], json!([]), "no pods could be read");
}
