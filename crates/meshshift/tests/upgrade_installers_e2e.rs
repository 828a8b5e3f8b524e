//! The control-plane installers other than meshshift's manifests, in the lab against the real apiserver:
//! Helm (the real helm v3.17.1 binary, installed by scripts/install-deps.sh) and the operator per revision
//! with an IstioOperator resource (the seed's way). Each installs revision 1-10-6 beside 1-9-7 and must
//! pass the same gates (istiod ready, a dry-run pod injected by 1-10-6, one root CA); rollback must leave
//! the cluster as it was, object by object.
//!
//! Istio's Helm charts are not reachable from here (GitHub is not), so the chart is the closest real
//! thing: a chart whose only template emits Istio's own `helm template` output for istiod 1.10.6
//! (../shared/fixtures/helm-rendered, rendered from the official chart by helm v3.17.1). Everything after
//! the chart (helm's install and uninstall, release storage, the objects in the cluster) is real.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use meshshift_lab::{LabOptions, TestCluster};
use support::view::{assert_same, view};
use support::{fixtures_dir, install_mesh, meshshift_with_env};

fn helm_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MESHSHIFT_HELM") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("MESHSHIFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/meshshift"));
    let path = std::fs::read_to_string(cache.join("helm.path"))
        .unwrap_or_else(|e| panic!("helm is not installed ({e}); run scripts/install-deps.sh"));
    PathBuf::from(path.trim())
}

/// A chart named `istiod` whose template is Istio's rendered istiod 1.10.6 (revision 1-10-6).
fn istiod_chart(dir: &Path) -> PathBuf {
    let chart = dir.join("istiod");
    std::fs::create_dir_all(chart.join("templates")).expect("chart dirs");
    std::fs::create_dir_all(chart.join("files")).expect("chart dirs");
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: istiod\nversion: 1.10.6\nappVersion: 1.10.6\n")
        .expect("Chart.yaml");
    let rendered = std::fs::read_to_string(fixtures_dir().join("helm-rendered/1.10.6/istiod-rev-1-10-6.yaml"))
        .expect("rendered istiod fixture");
    std::fs::write(chart.join("files/istiod.yaml"), rendered).expect("files");
    // .Files.Get returns the text as is: Istio's injection templates inside stay unrendered.
    std::fs::write(chart.join("templates/istiod.yaml"), "{{ .Files.Get \"files/istiod.yaml\" }}\n").expect("template");
    chart
}

fn ms(kc: &str, args: &[&str], helm: &Path) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--kubeconfig", kc]);
    let helm = helm.to_str().expect("helm path");
    let run = meshshift_with_env(&all, &[("MESHSHIFT_SOAK_SECONDS", "1"), ("MESHSHIFT_HELM", helm)]);
    assert_eq!(run.code, 0, "meshshift {args:?} failed:\n{}\n{}", run.stdout, run.stderr);
    run.stderr
}

fn helm_releases(helm: &Path, kc: &str) -> String {
    let out = Command::new(helm)
        .args(["list", "--namespace", "istio-system", "--short", "--kubeconfig", kc])
        .output()
        .expect("helm list");
    assert!(out.status.success(), "helm list: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_and_operator_installers_pass_the_gates_and_roll_back_exactly() {
    let helm = helm_binary();
    let cluster = TestCluster::start_lab(Path::new(env!("CARGO_BIN_EXE_meshshift")), &LabOptions::full(3))
        .unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let dir = cluster.dir().to_str().expect("dir").to_owned();
    let kc = cluster.kubeconfig_path().to_str().expect("kubeconfig").to_owned();
    let client = cluster.client().await.expect("client");
    install_mesh(&dir);
    let start = view(&client).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");

    // Helm. Istio's istiod chart runs as `istiod-service-account`, which its `base` chart creates; the
    // mesh here was installed by meshshift's manifests, so the account is made as `base` would.
    meshshift_lab::testing::create_object(
        &client,
        &serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "istiod-service-account", "namespace": "istio-system"}}),
        "istio-system",
    )
    .await;
    let chart = istiod_chart(cluster.dir());
    let chart = chart.to_str().expect("chart path");
    let out = ms(
        &kc,
        &[
            "apply",
            "--to",
            "1.10.6",
            "--installer",
            "helm",
            "--helm-chart",
            chart,
            "--until",
            "01-install-control-plane",
        ],
        &helm,
    );
    assert!(out.contains("paused after 01-install-control-plane"), "{out}");
    assert!(helm_releases(&helm, &kc).lines().any(|l| l == "istiod-1-10-6"), "helm owns the new revision");
    let istiod = deployments.get("istiod-1-10-6").await.expect("istiod-1-10-6 installed by helm");
    let labels = istiod.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("Helm"));
    ms(&kc, &["rollback"], &helm);
    assert_eq!(helm_releases(&helm, &kc).trim(), "", "the release is uninstalled");
    assert_same(&start, &view(&client).await, "after rolling back the Helm install");

    // Operator: install through an IstioOperator, deploy green behind it, roll both back.
    ms(
        &kc,
        &[
            "apply",
            "--to",
            "1.10.6",
            "--installer",
            "operator",
            "--until",
            "02-deploy-gateway-istio-ingressgateway-1-10-6",
        ],
        &helm,
    );
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("install.istio.io", "v1alpha1", "IstioOperator"),
        "istiooperators",
    );
    let iops: Api<DynamicObject> = Api::namespaced_with(client.clone(), "istio-system", &ar);
    let iop = iops.get("istio-control-plane-1-10-6").await.expect("the IstioOperator of 1-10-6");
    assert_eq!(iop.data["status"]["status"], "HEALTHY", "{:?}", iop.data["status"]);
    let istiod = deployments.get("istiod-1-10-6").await.expect("istiod-1-10-6 made by the operator");
    let labels = istiod.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("install.operator.istio.io/owning-resource").map(String::as_str),
        Some("istio-control-plane-1-10-6")
    );
    ms(&kc, &["rollback"], &helm);
    assert!(iops.get_opt("istio-control-plane-1-10-6").await.expect("get").is_none());
    assert!(deployments.get_opt("istio-operator-1-10-6").await.expect("get").is_none());
    assert_same(&start, &view(&client).await, "after rolling back the operator install");
}
