//! The upgrade engine end to end in the lab, under traffic, through the real `meshshift` binary:
//! Istio 1.9.7 installed without revisions (`istio-injection=enabled`, the gateway `istio-ingressgateway`
//! behind the user's LoadBalancer) is migrated onto revision 1-9-7 and then upgraded to 1.10.6 with the
//! seed's blue/green gateway layout and bookinfo. Each run is first stopped in the middle and rolled back
//! (the cluster must equal the start, object by object), then run to the end and checked object by
//! object. An open-loop prober sends requests through the LoadBalancer the whole time: none may fail.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, Patch, PatchParams};
use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::{LabOptions, TestCluster};
use meshshift_probe::{ProbeConfig, Prober};
use serde_json::{Value, json};
use support::view::{assert_same, view};
use support::{assert_proxies, meshshift, meshshift_with_env, run_ok};

const SOAK: (&str, &str) = ("MESHSHIFT_SOAK_SECONDS", "2");

fn lab() -> TestCluster {
    TestCluster::start_lab(std::path::Path::new(env!("CARGO_BIN_EXE_meshshift")), &LabOptions::full(3))
        .unwrap_or_else(|e| panic!("lab did not start: {e}"))
}

/// Runs meshshift against the lab with a short soak; returns exit code and stderr.
fn ms(kubeconfig: &str, args: &[&str]) -> (i32, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig]);
    let run = meshshift_with_env(&all, &[SOAK]);
    (run.code, format!("{}{}", run.stdout, run.stderr))
}

fn ms_ok(kubeconfig: &str, args: &[&str]) -> String {
    let (code, out) = ms(kubeconfig, args);
    assert_eq!(code, 0, "meshshift {args:?} failed:\n{out}");
    out
}

fn status(kubeconfig: &str) -> Value {
    let run = meshshift(&["status", "-o", "json", "--kubeconfig", kubeconfig]);
    assert_eq!(run.code, 0, "status: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("status json")
}

async fn labels(client: &kube::Client, ns: &str) -> Value {
    let api: Api<Namespace> = Api::all(client.clone());
    json!(api.get(ns).await.expect("namespace").metadata.labels)
}

async fn selector(client: &kube::Client) -> Value {
    let api: Api<Service> = Api::namespaced(client.clone(), "istio-ingress");
    json!(api.get("ingress").await.expect("lb").spec.and_then(|s| s.selector))
}

/// The istiod Service the 1.9 default validator (`istiod-istio-system`) calls.
async fn validator_service(client: &kube::Client) -> String {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let v = api.get("istiod-istio-system").await.expect("default validator");
    let hooks = v.webhooks.unwrap_or_default();
    hooks[0].client_config.service.as_ref().map(|s| s.name.clone()).unwrap_or_default()
}

async fn exists(client: &kube::Client, ns: &str, name: &str) -> bool {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.expect("get").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_revisioned_to_revision_to_1_10_6_under_traffic_with_rollbacks_from_the_middle() {
    let cluster = lab();
    let dir = cluster.dir().to_str().expect("dir").to_owned();
    let kc = cluster.kubeconfig_path().to_str().expect("kubeconfig").to_owned();
    let client = cluster.client().await.expect("client");
    run_ok(&[
        "lab",
        "install-istio",
        "--dir",
        &dir,
        "--version",
        "1.9.7",
        "--default",
        "--gateway",
        "istio-ingress/istio-ingressgateway",
        "--load-balancer",
        "istio-ingress/ingress",
    ]);
    run_ok(&[
        "lab",
        "install-bookinfo",
        "--dir",
        &dir,
        "--namespace",
        "bookinfo",
        "--revision",
        "default",
        "--replicas",
        "2",
    ]);
    let addr = LoadBalancers::host_addr(cluster.dir(), "istio-ingress", "ingress", 80)
        .expect("loadbalancers.json")
        .expect("the ingress has a host port");
    let url = format!("http://{addr}/productpage");
    meshshift_lab::testing::eventually("the ingress serves", Duration::from_secs(60), || {
        let url = url.clone();
        async move { serves(&url).await.then_some(()) }
    })
    .await;
    let start = view(&client).await;
    let prober = Prober::start(ProbeConfig::new(vec![url.clone()], 50.0)).expect("prober");

    // A saved plan is refused once the cluster drifts from it, and nothing is written.
    let plan_file = cluster.dir().join("plan.json");
    let plan = ms_ok(&kc, &["plan", "--to", "1.9.7", "--revision", "1-9-7", "-o", "json"]);
    std::fs::write(&plan_file, &plan).expect("save plan");
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let drift = json!({"metadata": {"labels": {"istio.io/rev": "canary"}}});
    ns_api.patch("bookinfo", &PatchParams::default(), &Patch::Merge(&drift)).await.expect("drift");
    let (code, out) = ms(&kc, &["apply", "--plan", plan_file.to_str().expect("path")]);
    assert_eq!(code, 7, "a drifted plan is refused: {out}");
    assert!(
        out.contains("Namespace/bookinfo metadata.labels.istio.io/rev: plan assumed <absent>, cluster has canary"),
        "{out}"
    );
    let undrift = json!({"metadata": {"labels": {"istio.io/rev": null}}});
    ns_api.patch("bookinfo", &PatchParams::default(), &Patch::Merge(&undrift)).await.expect("undrift");
    assert_same(&start, &view(&client).await, "after a refused apply");

    // Migration onto revision 1-9-7: stop after the relabel, check a second run is refused, roll back.
    ms_ok(&kc, &["apply", "--plan", plan_file.to_str().expect("path"), "--until", "05-migrate-namespace-bookinfo"]);
    assert_eq!(labels(&client, "bookinfo").await, json!({"istio.io/rev": "1-9-7"}), "istio-injection removed, rev set");
    assert_eq!(selector(&client).await["version"], "1-9-7", "the LoadBalancer serves green");
    let (code, out) = ms(&kc, &["apply", "--to", "1.10.6"]);
    assert_eq!(code, 9, "a second apply while one is unfinished is refused: {out}");
    assert!(out.contains("meshshift resume"), "{out}");
    ms_ok(&kc, &["rollback"]);
    assert_same(&start, &view(&client).await, "after rolling back the migration from step 5");

    // The whole migration.
    ms_ok(&kc, &["apply", "--to", "1.9.7", "--revision", "1-9-7"]);
    let report = status(&kc);
    assert_proxies(&report, "bookinfo", "1-9-7", "1.9.7");
    assert_eq!(labels(&client, "bookinfo").await, json!({"istio.io/rev": "1-9-7"}));
    assert_eq!(selector(&client).await, json!({"istio": "ingressgateway", "version": "1-9-7"}));
    assert!(!exists(&client, "istio-system", "istiod").await, "the non-revisioned istiod is retired");
    assert!(!exists(&client, "istio-ingress", "istio-ingressgateway").await, "blue is retired");
    assert!(exists(&client, "istio-ingress", "istio-ingressgateway-1-9-7").await);
    let revisions: Vec<&str> =
        report["revisions"].as_array().into_iter().flatten().filter_map(|r| r["revision"].as_str()).collect();
    assert_eq!(revisions, ["1-9-7"]);
    assert_eq!(validator_service(&client).await, "istiod-1-9-7", "the default validator moved off the retired istiod");

    // 1-9-7 -> 1.10.6: stop after the switch and blue's retirement, roll back, then all the way.
    let middle = view(&client).await;
    ms_ok(&kc, &["apply", "--to", "1.10.6", "--until", "04-retire-blue-istio-ingressgateway-1-9-7"]);
    assert_eq!(selector(&client).await["version"], "1-10-6");
    ms_ok(&kc, &["rollback"]);
    assert_same(&middle, &view(&client).await, "after rolling back the upgrade from step 4");
    ms_ok(&kc, &["apply", "--to", "1.10.6"]);
    let report = status(&kc);
    assert_proxies(&report, "bookinfo", "1-10-6", "1.10.6");
    assert_eq!(labels(&client, "bookinfo").await, json!({"istio.io/rev": "1-10-6"}));
    assert_eq!(selector(&client).await, json!({"istio": "ingressgateway", "version": "1-10-6"}));
    assert!(!exists(&client, "istio-system", "istiod-1-9-7").await);
    assert!(exists(&client, "istio-system", "istiod-1-10-6").await);
    assert_eq!(validator_service(&client).await, "istiod-1-10-6");

    let result = prober.stop().await.expect("prober");
    let s = &result.summary;
    eprintln!("{}", s.to_text());
    assert!(result.records.len() > 500, "traffic flowed the whole time: {}", result.records.len());
    let failed = result.records.iter().filter(|r| r.failed()).count();
    assert_eq!(failed, 0, "no request may fail during the upgrades and rollbacks:\n{}", s.to_text());
    let seen: std::collections::BTreeSet<String> = result.records.iter().filter_map(|r| r.revision.clone()).collect();
    for rev in ["default", "1-9-7", "1-10-6"] {
        assert!(seen.contains(rev), "gateway revision {rev} answered some requests: {seen:?}");
    }
}

/// Whether a short burst of requests to `url` all succeed.
async fn serves(url: &str) -> bool {
    let config =
        ProbeConfig { duration: Some(Duration::from_millis(100)), ..ProbeConfig::new(vec![url.to_owned()], 10.0) };
    match Prober::start(config) {
        Ok(h) => {
            h.wait().await.map(|r| !r.records.is_empty() && r.records.iter().all(|r| !r.failed())).unwrap_or(false)
        }
        Err(_) => false,
    }
}
