//! The lab runs Istio's real 1.9.7 manifests unchanged (`../shared/fixtures`): the istiod chart of
//! revision 1-9-7 with its injector webhook, the legacy ingress gateway chart with its own LoadBalancer
//! Service, and bookinfo with its Gateway and VirtualService; real requests cross them from this process.

mod support;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use meshshift_kube::rollout::wait_rollout;
use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::{LabOptions, TestCluster};
use support::fixture_docs;
use support::mesh::{apply, in_namespace, namespace};

async fn rolled_out(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_rollout(&api, ns, name, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn lab_runs_istio_1_9_7_charts_unchanged_shared_fixtures() {
    let cluster = TestCluster::start_lab(std::path::Path::new(env!("CARGO_BIN_EXE_meshshift")), &LabOptions::full(2))
        .unwrap_or_else(|e| panic!("lab did not start: {e}"));
    let client = cluster.client().await.expect("client");

    let mut cp = fixture_docs("istio-tree/1.9.7/crds/crd-all.gen.yaml");
    cp.extend(fixture_docs("istio-tree/1.9.7/crds/crd-operator.yaml"));
    cp.push(namespace("istio-system", &[]));
    cp.extend(fixture_docs("helm-rendered/1.9.7/base-no-crds.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/istiod-rev-1-9-7.yaml"));
    apply(&client, "istio-system", cp).await;
    rolled_out(&client, "istio-system", "istiod-1-9-7").await;

    apply(&client, "istio-system", fixture_docs("helm-rendered/1.9.7/ingressgateway-rev-1-9-7.yaml")).await;
    let mut apps = vec![namespace("bookinfo", &[("istio.io/rev", "1-9-7")])];
    apps.extend(in_namespace(fixture_docs("istio-tree/1.9.7/bookinfo/bookinfo.yaml"), "bookinfo"));
    apps.extend(in_namespace(fixture_docs("istio-tree/1.9.7/bookinfo/bookinfo-gateway.yaml"), "bookinfo"));
    apply(&client, "bookinfo", apps).await;
    rolled_out(&client, "istio-system", "istio-ingressgateway").await;
    for d in ["productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1"] {
        rolled_out(&client, "bookinfo", d).await;
    }

    let addr = LoadBalancers::host_addr(cluster.dir(), "istio-system", "istio-ingressgateway", 80)
        .expect("registry")
        .expect("the chart's LoadBalancer Service has a host port");
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            let resp = http.get(format!("http://{addr}{path}").parse().expect("uri")).await.ok()?;
            let status = resp.status().as_u16();
            let rev = resp.headers().get("x-meshshift-revision").and_then(|v| v.to_str().ok()).map(str::to_owned);
            resp.into_body().collect().await.ok()?;
            Some((status, rev))
        }
    };
    let began = Instant::now();
    while get("/productpage").await.map(|r| r.0) != Some(200) {
        assert!(began.elapsed() < Duration::from_secs(60), "the chart's gateway never served bookinfo");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..200 {
        assert_eq!(get("/productpage").await, Some((200, Some("1-9-7".to_owned()))));
    }
    assert_eq!(get("/not-routed").await.map(|r| r.0), Some(404), "only the VirtualService's paths are routed");
}
