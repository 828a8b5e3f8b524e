//! `meshshift status -o json` against a real control plane loaded with Istio's real manifests
//! (`../shared/fixtures`), one cluster per mesh state, compared exactly with the reviewed reports in
//! `tests/expected/`.

mod support;

use serde_json::Value;
use support::mesh::{apply, in_namespace, inject_all, inject_gateway, namespace, without_webhooks};
use support::{assert_expected, fixture_docs, kubelet, meshshift, normalise_pod_names, start_cluster};

/// Loads `control_plane` (webhooks last), `workloads`, makes every pod ready, then applies the webhooks.
async fn build(client: &kube::Client, control_plane: Vec<Value>, workloads: Vec<Value>) {
    let (rest, webhooks) = without_webhooks(control_plane);
    kubelet::register_node(client, "node-1").await;
    apply(client, "istio-system", rest).await;
    apply(client, "default", workloads).await;
    kubelet::make_all_ready(client).await;
    apply(client, "istio-system", webhooks).await;
}

fn status_json(kubeconfig: &std::path::Path) -> Value {
    let run = meshshift(&["status", "-o", "json", "--kubeconfig", kubeconfig.to_str().expect("utf-8 path")]);
    assert_eq!(run.code, 0, "status failed: {}", run.stderr);
    let mut report: Value = serde_json::from_str(&run.stdout).expect("status prints JSON");
    normalise_pod_names(&mut report);
    report
}

fn bookinfo(golden: &str, version: &str, revision: &str, ns: &str) -> Vec<Value> {
    in_namespace(
        inject_all(fixture_docs(&format!("istio-tree/{golden}/bookinfo/bookinfo.yaml")), golden, version, revision),
        ns,
    )
}

fn hello(golden: &str, version: &str, revision: &str, ns: &str) -> Vec<Value> {
    let mut docs = fixture_docs(&format!("istio-tree/{golden}/injection/hello.yaml.injected"));
    for d in &mut docs {
        d["spec"]["replicas"] = Value::from(2);
    }
    let text = serde_json::to_string(&docs).expect("json");
    let text = text.replace("gcr.io/istio-testing/", "docker.io/istio/").replace(":latest", &format!(":{version}"));
    let text = if revision == "default" {
        text
    } else {
        text.replace("istiod.istio-system.svc", &format!("istiod-{revision}.istio-system.svc"))
            .replace("\"istio.io/rev\":\"default\"", &format!("\"istio.io/rev\":\"{revision}\""))
            .replace("\\\"revision\\\":\\\"default\\\"", &format!("\\\"revision\\\":\\\"{revision}\\\""))
    };
    in_namespace(serde_json::from_str(&text).expect("json"), ns)
}

#[tokio::test]
async fn status_1_9_7_default_install_shared_fixtures() {
    let cluster = start_cluster();
    let client = cluster.client().await.expect("client");
    let mut cp = fixture_docs("istio-tree/1.9.7/crds/crd-all.gen.yaml");
    cp.extend(fixture_docs("istio-tree/1.9.7/crds/crd-operator.yaml"));
    cp.push(namespace("istio-system", &[]));
    cp.extend(fixture_docs("helm-rendered/1.9.7/base-no-crds.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/istiod-default.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/ingressgateway-default.yaml"));
    let mut apps = vec![
        namespace("bookinfo", &[("istio-injection", "enabled")]),
        namespace("plain", &[]),
        namespace("opted-out", &[("istio-injection", "disabled")]),
        // Labelled after its pods started: they run without a sidecar until restarted.
        namespace("late", &[("istio-injection", "enabled")]),
    ];
    apps.extend(bookinfo("1.9.7", "1.9.7", "default", "bookinfo"));
    apps.extend(in_namespace(fixture_docs("istio-tree/1.9.7/bookinfo/bookinfo.yaml"), "plain"));
    apps.extend(in_namespace(fixture_docs("istio-tree/1.9.7/injection/hello.yaml"), "opted-out"));
    apps.extend(in_namespace(fixture_docs("istio-tree/1.9.7/injection/hello.yaml"), "late"));
    build(&client, cp, apps).await;
    assert_expected("status-1.9.7-default.json", &status_json(cluster.kubeconfig_path()));
}

#[tokio::test]
async fn status_1_9_7_and_1_10_6_revisions_side_by_side_shared_fixtures() {
    let cluster = start_cluster();
    let client = cluster.client().await.expect("client");
    let mut cp = fixture_docs("istio-tree/1.10.6/crds/crd-all.gen.yaml");
    cp.extend(fixture_docs("istio-tree/1.10.6/crds/crd-operator.yaml"));
    cp.push(namespace("istio-system", &[]));
    cp.extend(fixture_docs("helm-rendered/1.9.7/base-no-crds.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/istiod-rev-1-9-7.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.10.6/istiod-rev-1-10-6.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/ingressgateway-rev-1-9-7.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.10.6/ingressgateway-green-rev-1-10-6.yaml"));
    // The seed's layout: a gateway in its own namespace reading a copy of the revision's mesh ConfigMap.
    cp.push(namespace("istio-gateways", &[]));
    let mesh_config = fixture_docs("helm-rendered/1.9.7/istiod-rev-1-9-7.yaml")
        .into_iter()
        .filter(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "istio-1-9-7");
    cp.extend(in_namespace(mesh_config.collect(), "istio-gateways"));
    cp.extend(in_namespace(fixture_docs("helm-rendered/1.9.7/ingressgateway-rev-1-9-7.yaml"), "istio-gateways"));
    let mut apps = vec![
        namespace("bookinfo-blue", &[("istio.io/rev", "1-9-7")]),
        namespace("bookinfo-green", &[("istio.io/rev", "1-10-6")]),
        namespace("stale", &[("istio.io/rev", "1-8-0")]),
        namespace("both", &[("istio-injection", "enabled"), ("istio.io/rev", "1-10-6")]),
    ];
    apps.extend(bookinfo("1.9.7", "1.9.7", "1-9-7", "bookinfo-blue"));
    // Relabelled for 1-10-6 but not restarted yet: bookinfo still runs 1.9.7 proxies, hello was restarted.
    apps.extend(bookinfo("1.9.7", "1.9.7", "1-9-7", "bookinfo-green"));
    apps.extend(hello("1.10.6", "1.10.6", "1-10-6", "bookinfo-green"));
    build(&client, cp, apps).await;
    assert_expected("status-1.9.7-1.10.6-revisions.json", &status_json(cluster.kubeconfig_path()));
}

#[tokio::test]
async fn status_1_24_6_default_and_prod_tags_shared_fixtures() {
    let cluster = start_cluster();
    let client = cluster.client().await.expect("client");
    let mut cp = fixture_docs("istio-tree/1.24.6/crds/crd-all.gen.yaml");
    cp.push(namespace("istio-system", &[]));
    cp.push(namespace("istio-ingress", &[]));
    cp.extend(fixture_docs("helm-rendered/1.24.6/base-no-crds.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.24.6/istiod-rev-1-24-6.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.24.6/revision-tags-default-prod-to-1-24-6.yaml"));
    let mut gateway = fixture_docs("helm-rendered/1.24.6/gateway-chart-rev-1-24-6.yaml");
    inject_gateway(&mut gateway, "1.24.6", "1-24-6");
    cp.extend(gateway);
    let mut apps = vec![
        namespace("app-default", &[("istio-injection", "enabled")]),
        namespace("app-prod", &[("istio.io/rev", "prod")]),
        namespace("app-rev", &[("istio.io/rev", "1-24-6")]),
    ];
    apps.extend(hello("1.24.6", "1.24.6", "1-24-6", "app-default"));
    apps.extend(bookinfo("1.24.6", "1.24.6", "1-24-6", "app-prod"));
    apps.extend(hello("1.24.6", "1.24.6", "1-24-6", "app-rev"));
    build(&client, cp, apps).await;
    assert_expected("status-1.24.6-tags.json", &status_json(cluster.kubeconfig_path()));
}

/// Drops the 1.18+ `istio.io/rev` pod annotation, leaving the 1.11-1.17 convention (the `revision` field
/// of `sidecar.istio.io/status`).
fn as_1_11_to_1_17(mut docs: Vec<Value>) -> Vec<Value> {
    for d in docs.iter_mut().filter(|d| d["kind"] == "Deployment") {
        if let Some(a) = d["spec"]["template"]["metadata"]["annotations"].as_object_mut() {
            a.remove("istio.io/rev");
        }
    }
    docs
}

#[tokio::test]
async fn status_1_24_6_default_with_1_25_5_canary_and_broken_tags_shared_fixtures() {
    let cluster = start_cluster();
    let client = cluster.client().await.expect("client");
    let mut cp = fixture_docs("istio-tree/1.25.5/crds/crd-all.gen.yaml");
    cp.push(namespace("istio-system", &[]));
    cp.extend(fixture_docs("helm-rendered/1.24.6/base-no-crds.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.24.6/istiod-default.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.25.5/istiod-rev-1-25-5.yaml"));
    // Tags left pointing at a revision that was never installed here, and the old default injector not
    // deactivated: the mistakes `status` must catch before an upgrade.
    cp.extend(fixture_docs("helm-rendered/1.24.6/revision-tags-default-prod-to-1-24-6.yaml"));
    let mut apps = vec![
        namespace("app", &[("istio-injection", "enabled")]),
        namespace("canary", &[("istio.io/rev", "1-25-5")]),
        namespace("old", &[]),
    ];
    apps.extend(hello("1.24.6", "1.24.6", "default", "app"));
    apps.extend(hello("1.24.6", "1.25.5", "1-25-5", "canary"));
    // Proxies of 1.14 (1.11-1.17 conventions) left behind two control-plane upgrades.
    apps.extend(as_1_11_to_1_17(hello("1.24.6", "1.14.6", "default", "old")));
    build(&client, cp, apps).await;
    assert_expected("status-1.24.6-1.25.5-canary.json", &status_json(cluster.kubeconfig_path()));
}
