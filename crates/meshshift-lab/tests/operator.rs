//! End-to-end test of the emulated in-cluster Istio operator (`*/operator:<version>`) under the lab's node
//! agent: it reconciles the IstioOperators of its revision into istiod and gateways, and ignores others.
//!
//! Needs root (or unprivileged user namespaces) and the binaries from `scripts/install-deps.sh`; run
//! `cargo build -p meshshift-lab --examples` first.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::discovery::pinned_kind;
use meshshift_lab::testing::{create_namespace, create_object, eventually, example_supervisor};
use meshshift_lab::{LabOptions, TestCluster};
use serde_json::{Value, json};

fn iop(name: &str, revision: &str, gateway: &str) -> Value {
    json!({
        "apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": {"revision": revision, "components": {
            "pilot": {"enabled": true},
            "ingressGateways": [{"name": gateway, "namespace": "istio-ingress", "enabled": true}],
        }},
    })
}

fn deployment_ready(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) >= want && want > 0
}

#[tokio::test]
async fn the_operator_reconciles_its_revision_only() {
    let cluster =
        TestCluster::start_lab(&example_supervisor(), &LabOptions::full(2)).unwrap_or_else(|err| panic!("{err}"));
    let client = cluster.client().await.expect("client");
    for crd in meshshift_core::render::crds() {
        create_object(&client, &crd, "default").await;
    }
    create_namespace(&client, "istio-system", json!({})).await;
    create_namespace(&client, "istio-ingress", json!({})).await;

    let operator = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istio-operator-1-9-7", "namespace": "istio-system"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"name": "istio-operator", "istio.io/rev": "1-9-7"}},
            "template": {
                "metadata": {"labels": {"name": "istio-operator", "istio.io/rev": "1-9-7"}},
                "spec": {"containers": [{
                    "name": "istio-operator",
                    "image": "docker.io/istio/operator:1.9.7",
                    "ports": [{"containerPort": 8383, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8383}, "periodSeconds": 1},
                    "env": [{"name": "REVISION", "value": "1-9-7"}],
                }]},
            },
        },
    });
    create_object(&client, &operator, "default").await;
    create_object(&client, &iop("istio-control-plane-1-9-7", "1-9-7", "istio-ingressgateway-1-9-7"), "default").await;
    create_object(&client, &iop("istio-control-plane-1-10-6", "1-10-6", "istio-ingressgateway-1-10-6"), "default")
        .await;

    let system: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    eventually("the operator Ready", Duration::from_secs(60), || {
        let api = system.clone();
        async move { api.get_opt("istio-operator-1-9-7").await.ok().flatten().filter(deployment_ready) }
    })
    .await;
    let istiod = eventually("istiod-1-9-7 Ready", Duration::from_secs(90), || {
        let api = system.clone();
        async move { api.get_opt("istiod-1-9-7").await.ok().flatten().filter(deployment_ready) }
    })
    .await;
    let labels = istiod.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("install.operator.istio.io/owning-resource").map(String::as_str),
        Some("istio-control-plane-1-9-7")
    );

    let ingress: Api<Deployment> = Api::namespaced(client.clone(), "istio-ingress");
    let gateway = eventually("the 1-9-7 gateway Deployment", Duration::from_secs(30), || {
        let api = ingress.clone();
        async move { api.get_opt("istio-ingressgateway-1-9-7").await.ok().flatten() }
    })
    .await;
    let image = gateway
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    assert_eq!(image.as_deref(), Some("docker.io/istio/proxyv2:1.9.7"));

    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    assert!(hooks.get_opt("istio-sidecar-injector-1-9-7").await.expect("get webhook").is_some());

    let gvk = GroupVersionKind::gvk("install.istio.io", "v1alpha1", "IstioOperator");
    let (resource, _) = pinned_kind(&client, &gvk).await.expect("IstioOperator served");
    let iops: Api<DynamicObject> = Api::namespaced_with(client.clone(), "istio-system", &resource);
    eventually("the 1-9-7 IstioOperator HEALTHY", Duration::from_secs(30), || {
        let api = iops.clone();
        async move {
            let iop = api.get("istio-control-plane-1-9-7").await.ok()?;
            (iop.data["status"]["status"] == "HEALTHY").then_some(())
        }
    })
    .await;

    // The 1-10-6 IstioOperator belongs to another operator: nothing of it appears, and no status.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(system.get_opt("istiod-1-10-6").await.expect("get").is_none());
    assert!(ingress.get_opt("istio-ingressgateway-1-10-6").await.expect("get").is_none());
    let other = iops.get("istio-control-plane-1-10-6").await.expect("get the 1-10-6 IstioOperator");
    assert!(other.data.get("status").is_none_or(Value::is_null), "{:?}", other.data.get("status"));

    // Deleting the IstioOperator deletes what the operator applied.
    iops.delete("istio-control-plane-1-9-7", &Default::default()).await.expect("delete the IstioOperator");
    eventually("the gateway Deployment deleted", Duration::from_secs(30), || {
        let api = ingress.clone();
        async move { api.get_opt("istio-ingressgateway-1-9-7").await.ok().filter(Option::is_none).map(|_| ()) }
    })
    .await;
    eventually("the injector webhook deleted", Duration::from_secs(30), || {
        let api = hooks.clone();
        async move { api.get_opt("istio-sidecar-injector-1-9-7").await.ok().filter(Option::is_none).map(|_| ()) }
    })
    .await;
    cluster.stop().expect("stop the lab");
}
