//! Scenario (2) end to end: Istio 1.24.6 installed as revision 1-24-6 with revision tags `default` and
//! `prod`, bookinfo injected through the `prod` tag (`istio.io/rev=prod`) and a second, smaller bookinfo
//! (`shop`) injected through the `default` tag (`istio-injection=enabled`), upgraded to 1.25.5 by the real
//! `meshshift` binary while an open-loop prober sends ~50 requests/s through the user's LoadBalancer:
//!
//! 1. `apply --until <the last restart>`, then `rollback`: the cluster is back to what it was,
//!    object by object (`support::view`);
//! 2. `apply` to the end: the tags (and the default validator) call the 1-25-5 istiod, no namespace is
//!    relabelled for a tag, every pod runs proxy 1.25.5, the LoadBalancer selects the 1-25-5 gateway, and
//!    revision 1-24-6 is gone;
//! 3. the prober saw no failed request, answered by both gateway revisions.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ListParams};
use meshshift_core::version::{IstioVersion, Revision};
use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::testing::{create_object, eventually};
use meshshift_lab::{LabOptions, TestCluster};
use meshshift_probe::{ProbeConfig, Prober};
use serde_json::Value;
use support::view::{assert_same, view};
use support::{Run, run_ok};

const FROM: &str = "1-24-6";
const TO: &str = "1-25-5";
const TAGS: [&str; 2] = ["default", "prod"];
/// Namespaces injected through a tag: bookinfo by `prod`, shop by `default` (`istio-injection=enabled`).
const APP_NAMESPACES: [&str; 2] = ["bookinfo", "shop"];

fn lab() -> TestCluster {
    let mut opts = LabOptions::full(3);
    opts.propagation_delay = Duration::from_millis(500);
    TestCluster::start_lab(std::path::Path::new(env!("CARGO_BIN_EXE_meshshift")), &opts)
        .unwrap_or_else(|e| panic!("lab did not start: {e}"))
}

/// Runs the real binary without blocking the runtime the prober runs on, with `envs` set.
async fn cli(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let began = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshshift"))
        .args(args)
        .env_remove("KUBECONFIG")
        .envs(envs.iter().copied())
        .output()
        .await
        .expect("run meshshift");
    eprintln!("meshshift {} -> {:?} in {:.1} s", args.join(" "), out.status.code(), began.elapsed().as_secs_f64());
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `meshshift status -o json`.
async fn status(kubeconfig: &str) -> Value {
    let run = cli(&["status", "-o", "json", "--kubeconfig", kubeconfig], &[]).await;
    assert_eq!(run.code, 0, "status failed:\n{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("status json")
}

/// The revision each tag points at, from `status -o json`.
fn tags_of(report: &Value) -> BTreeMap<String, String> {
    report["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| {
            (t["tag"].as_str().unwrap_or_default().to_owned(), t["revision"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The pods of the app namespaces that do not run proxy `version` from `revision` (empty: all do), and
/// how many pods were checked.
fn pods_not_on(report: &Value, revision: &str, version: &str) -> (Vec<String>, usize) {
    let mut wrong = Vec::new();
    let mut checked = 0;
    let workloads = report["workloads"].as_array().expect("workloads");
    for w in workloads.iter().filter(|w| w["namespace"].as_str().is_some_and(|n| APP_NAMESPACES.contains(&n))) {
        for p in w["pods"].as_array().expect("pods") {
            checked += 1;
            if p["proxy"]["revision"] != revision || p["proxy"]["version"] != version || p["ready"] != true {
                wrong.push(format!("{}/{}: {}", w["namespace"], p["name"], p));
            }
        }
    }
    (wrong, checked)
}

/// The service names every webhook of a configuration calls.
fn services_called(hooks: &[k8s_openapi::api::admissionregistration::v1::MutatingWebhook]) -> Vec<String> {
    hooks.iter().map(|w| w.client_config.service.as_ref().map(|s| s.name.clone()).unwrap_or_default()).collect()
}

/// The proxy images of the app namespaces' pods that are not terminating, counted.
async fn proxy_images(client: &kube::Client) -> BTreeMap<String, usize> {
    let mut images = BTreeMap::new();
    for ns in APP_NAMESPACES {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        for p in pods.list(&ListParams::default()).await.expect("list pods").items {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let containers = p.spec.map(|s| s.containers).unwrap_or_default();
            for c in containers.into_iter().filter(|c| c.name == "istio-proxy") {
                *images.entry(c.image.unwrap_or_default()).or_default() += 1;
            }
        }
    }
    images
}

fn lb_addr(cluster: &TestCluster) -> SocketAddr {
    LoadBalancers::host_addr(cluster.dir(), "istio-ingress", "ingress", 80)
        .expect("read loadbalancers.json")
        .expect("the ingress LoadBalancer has a host port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_1_24_6_to_1_25_5_rollback_then_apply_under_traffic() {
    let began = Instant::now();
    let cluster = lab();
    let dir = cluster.dir().to_str().expect("utf-8").to_owned();
    let kubeconfig = cluster.kubeconfig_path().to_str().expect("utf-8").to_owned();
    let client = cluster.client().await.expect("client");
    eprintln!("[{:>5.1} s] lab up", began.elapsed().as_secs_f64());

    // 1. Istio 1.24.6 as revision 1-24-6, its gateway behind the user's LoadBalancer.
    run_ok(&[
        "lab",
        "install-istio",
        "--dir",
        &dir,
        "--version",
        "1.24.6",
        "--gateway",
        "istio-ingress/istio-ingressgateway-1-24-6",
        "--load-balancer",
        "istio-ingress/ingress",
    ]);
    eprintln!("[{:>5.1} s] istio 1.24.6 installed", began.elapsed().as_secs_f64());

    // 2. Revision tags `default` and `prod` -> 1-24-6 (what `istioctl tag set` creates); istiod writes its
    //    CA into their caBundle before any pod can be injected through them (failurePolicy Fail).
    let version: IstioVersion = "1.24.6".parse().expect("version");
    let revision = Revision::parse(FROM).expect("revision");
    for tag in TAGS {
        let doc = meshshift_core::render::tag_webhook(&version, tag, &revision, "istio-system");
        create_object(&client, &doc, "istio-system").await;
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for tag in TAGS {
        let name = format!("istio-revision-tag-{tag}");
        eventually(&format!("istiod to patch the caBundle of {name}"), Duration::from_secs(60), || {
            let mutating = mutating.clone();
            let name = name.clone();
            async move {
                let hook = mutating.get_opt(&name).await.ok().flatten()?;
                let hooks = hook.webhooks.unwrap_or_default();
                let patched = !hooks.is_empty()
                    && hooks.iter().all(|w| w.client_config.ca_bundle.as_ref().is_some_and(|b| !b.0.is_empty()));
                patched.then_some(())
            }
        })
        .await;
    }

    // 3. bookinfo through the `prod` tag; shop (one replica each) through the `default` tag.
    run_ok(&[
        "lab",
        "install-bookinfo",
        "--dir",
        &dir,
        "--namespace",
        "bookinfo",
        "--revision",
        "prod",
        "--replicas",
        "2",
    ]);
    run_ok(&[
        "lab",
        "install-bookinfo",
        "--dir",
        &dir,
        "--namespace",
        "shop",
        "--revision",
        "default",
        "--replicas",
        "1",
    ]);
    eprintln!("[{:>5.1} s] tags and both bookinfos installed", began.elapsed().as_secs_f64());

    // 4. Status sees both tags on 1-24-6 and every app pod on proxy 1.24.6 from it.
    let report = status(&kubeconfig).await;
    let expected_tags: BTreeMap<String, String> = TAGS.iter().map(|t| ((*t).to_owned(), FROM.to_owned())).collect();
    assert_eq!(tags_of(&report), expected_tags, "tags before the upgrade: {}", report["tags"]);
    let (wrong, checked) = pods_not_on(&report, FROM, "1.24.6");
    assert!(wrong.is_empty(), "before the upgrade, pods not on 1.24.6 from {FROM}:\n{}", wrong.join("\n"));
    assert_eq!(checked, 6 * 2 + 6, "bookinfo (6 x 2) and shop (6 x 1) pods");

    let view0 = view(&client).await;
    // The view sees the proxies the upgrade replaces (so comparing views after the rollback means something).
    let old_proxies: u64 = view0["proxies"]
        .as_object()
        .expect("proxies")
        .iter()
        .filter(|(k, _)| APP_NAMESPACES.iter().any(|ns| k.starts_with(&format!("{ns}/"))) && k.contains(":1.24.6"))
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    assert_eq!(old_proxies, 6 * 2 + 6, "app proxies in the view: {}", view0["proxies"]);
    let url = format!("http://{}/productpage", lb_addr(&cluster));
    let client_http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<hyper::body::Bytes>>();
    eventually("the ingress to serve /productpage", Duration::from_secs(60), || {
        let (client_http, url) = (client_http.clone(), url.clone());
        async move {
            let resp = client_http.get(url.parse().ok()?).await.ok()?;
            resp.status().is_success().then_some(())
        }
    })
    .await;
    let prober = Prober::start(ProbeConfig::new(vec![url.clone()], 50.0)).expect("start the prober");
    eprintln!("[{:>5.1} s] prober started on {url}", began.elapsed().as_secs_f64());

    // 5. The plan; apply up to its last restart, then roll back.
    let run = cli(&["plan", "--to", "1.25.5", "-o", "json", "--kubeconfig", &kubeconfig], &[]).await;
    assert_eq!(run.code, 0, "plan failed:\n{}", run.stderr);
    let plan: Value = serde_json::from_str(&run.stdout).expect("plan json");
    let ids: Vec<String> =
        plan["steps"].as_array().expect("steps").iter().filter_map(|s| s["id"].as_str().map(str::to_owned)).collect();
    eprintln!("plan: {ids:?}");
    for tag in TAGS {
        assert!(ids.iter().any(|id| id.ends_with(&format!("-move-tag-{tag}"))), "no step moves tag {tag}: {ids:?}");
    }
    // The last restart: every step but the source's retirement is done, so the rollback undoes tag moves
    // and restarts of tag namespaces (injection restored first) as well as the gateway switch and install.
    let until = ids
        .iter()
        .rfind(|id| id.contains("-restart-workloads-"))
        .unwrap_or_else(|| panic!("no restart in the plan: {ids:?}"))
        .clone();
    for ns in APP_NAMESPACES {
        assert!(
            ids.iter().any(|id| id.ends_with(&format!("-restart-workloads-{ns}"))),
            "{ns} is not restarted: {ids:?}"
        );
    }
    let soak = [("MESHSHIFT_SOAK_SECONDS", "2")];
    let run = cli(&["apply", "--to", "1.25.5", "--until", &until, "--kubeconfig", &kubeconfig], &soak).await;
    assert_eq!(run.code, 0, "apply --until {until} failed:\n{}\n{}", run.stdout, run.stderr);
    eprintln!("[{:>5.1} s] paused after {until}", began.elapsed().as_secs_f64());
    let paused = status(&kubeconfig).await;
    assert_eq!(
        tags_of(&paused),
        TAGS.iter().map(|t| ((*t).to_owned(), TO.to_owned())).collect::<BTreeMap<_, _>>(),
        "both tags moved before the pause"
    );
    // Both namespaces were restarted onto 1.25.5 before the pause (pods still terminating aside).
    let images = proxy_images(&client).await;
    assert_eq!(
        images,
        BTreeMap::from([("docker.io/istio/proxyv2:1.25.5".to_owned(), 6 * 2 + 6)]),
        "app proxies at the pause"
    );
    let run = cli(&["rollback", "--kubeconfig", &kubeconfig], &soak).await;
    assert_eq!(run.code, 0, "rollback failed:\n{}\n{}", run.stdout, run.stderr);
    eprintln!("[{:>5.1} s] rolled back", began.elapsed().as_secs_f64());
    // Garbage collection of the deleted green objects' pods finishes shortly after the run.
    let settle = Instant::now();
    let mut after = view(&client).await;
    while after != view0 && settle.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = view(&client).await;
    }
    assert_same(&view0, &after, "after apply --until + rollback");
    eprintln!("[{:>5.1} s] the cluster is as before the upgrade", began.elapsed().as_secs_f64());

    // 6. The whole upgrade, in a canary order: `--tag prod` first (install, gateway, the prod tag and its
    //    namespace), then the rest (the default tag, its namespace, the source's retirement).
    let run = cli(&["apply", "--to", "1.25.5", "--tag", "prod", "--kubeconfig", &kubeconfig], &soak).await;
    assert_eq!(run.code, 0, "apply --tag prod failed:\n{}\n{}", run.stdout, run.stderr);
    eprintln!("[{:>5.1} s] prod moved", began.elapsed().as_secs_f64());
    let halfway = status(&kubeconfig).await;
    assert_eq!(
        tags_of(&halfway),
        BTreeMap::from([("default".to_owned(), FROM.to_owned()), ("prod".to_owned(), TO.to_owned())]),
        "only prod moved"
    );
    let istiods: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    assert!(istiods.get_opt(&format!("istiod-{FROM}")).await.expect("get").is_some(), "default still uses {FROM}");
    // Both revisions are in use now, so the second run names its source.
    let run = cli(&["apply", "--to", "1.25.5", "--from", FROM, "--kubeconfig", &kubeconfig], &soak).await;
    assert_eq!(run.code, 0, "apply (the rest) failed:\n{}\n{}", run.stdout, run.stderr);
    eprintln!("[{:>5.1} s] upgraded", began.elapsed().as_secs_f64());
    let gateways: Api<Deployment> = Api::namespaced(client.clone(), "istio-ingress");
    let blue = format!("istio-ingressgateway-{FROM}");
    assert!(gateways.get_opt(&blue).await.expect("get").is_none(), "the parked blue {blue} was retired");

    let istiod_to = format!("istiod-{TO}");
    for tag in TAGS {
        let name = format!("istio-revision-tag-{tag}");
        let hook = mutating.get(&name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let labels = hook.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("istio.io/rev").map(String::as_str), Some(TO), "{name} labels {labels:?}");
        assert_eq!(labels.get("istio.io/tag").map(String::as_str), Some(tag), "{name} labels {labels:?}");
        let called = services_called(hook.webhooks.as_deref().unwrap_or_default());
        assert!(!called.is_empty() && called.iter().all(|s| *s == istiod_to), "{name} calls {called:?}");
    }
    let validators: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let validator = validators.get("istiod-default-validator").await.expect("istiod-default-validator");
    let called: Vec<String> = validator
        .webhooks
        .unwrap_or_default()
        .iter()
        .map(|w| w.client_config.service.as_ref().map(|s| s.name.clone()).unwrap_or_default())
        .collect();
    assert!(!called.is_empty() && called.iter().all(|s| *s == istiod_to), "the default validator calls {called:?}");

    // Tags move; the namespaces that use them keep their labels. Checked last (see the end), so that a
    // relabel does not hide what the rest of the run did.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let injection = |labels: BTreeMap<String, String>| -> BTreeMap<String, String> {
        labels.into_iter().filter(|(k, _)| k == "istio.io/rev" || k == "istio-injection").collect()
    };
    let mut relabelled = Vec::new();
    for ns in APP_NAMESPACES {
        let now = injection(namespaces.get(ns).await.expect("namespace").metadata.labels.unwrap_or_default());
        let before = injection(serde_json::from_value(view0["namespaces"][ns].clone()).unwrap_or_default());
        if now != before {
            relabelled.push(format!("{ns}: {before:?} -> {now:?}"));
        }
    }

    // Every app pod on proxy 1.25.5 from 1-25-5 (pods of the old ReplicaSets may still be terminating).
    let report = eventually("every app pod on 1.25.5 in status", Duration::from_secs(60), || {
        let kubeconfig = kubeconfig.clone();
        async move {
            let report = status(&kubeconfig).await;
            let (wrong, checked) = pods_not_on(&report, TO, "1.25.5");
            (wrong.is_empty() && checked == 6 * 2 + 6).then_some(report)
        }
    })
    .await;
    assert_eq!(
        tags_of(&report),
        TAGS.iter().map(|t| ((*t).to_owned(), TO.to_owned())).collect::<BTreeMap<_, _>>(),
        "status: tags after the upgrade"
    );

    // The LoadBalancer selects the 1-25-5 gateway, and only it.
    let services: Api<Service> = Api::namespaced(client.clone(), "istio-ingress");
    let lb = services.get("ingress").await.expect("Service istio-ingress/ingress");
    let selector = lb.spec.and_then(|s| s.selector).unwrap_or_default();
    assert!(selector.values().any(|v| v == TO) && !selector.values().any(|v| v == FROM), "LB selector {selector:?}");
    let label_selector = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "istio-ingress");
    let selected: Vec<String> = pods
        .list(&ListParams::default().labels(&label_selector))
        .await
        .expect("list gateway pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        !selected.is_empty() && selected.iter().all(|p| p.starts_with(&format!("istio-ingressgateway-{TO}-"))),
        "the LoadBalancer selects {selected:?}"
    );

    // Revision 1-24-6 is gone: its istiod and its injector.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "istio-system");
    assert!(
        deployments.get_opt(&format!("istiod-{FROM}")).await.expect("get istiod").is_none(),
        "istiod-{FROM} remains"
    );
    let injector = format!("istio-sidecar-injector-{FROM}");
    assert!(mutating.get_opt(&injector).await.expect("get injector").is_none(), "{injector} remains");

    // 7. Traffic: nothing failed, and both gateway revisions answered.
    let result = prober.stop().await.expect("stop the prober");
    let summary = &result.summary;
    let pretty = serde_json::to_string_pretty(summary).expect("summary json");
    eprintln!(
        "[{:>5.1} s] prober: {} requests, {} failed",
        began.elapsed().as_secs_f64(),
        summary.total,
        summary.failed
    );
    assert!(summary.total > 0, "the prober sent nothing");
    assert_eq!(summary.failed, 0, "requests failed during the upgrade:\n{pretty}");
    for rev in [FROM, TO] {
        assert!(
            summary.revisions.get(rev).is_some_and(|s| s.count > 0),
            "no response from the {rev} gateway:\n{pretty}"
        );
    }
    eprintln!("{pretty}");

    // A namespace injected through a tag (`istio.io/rev=prod`, or `istio-injection=enabled` through the
    // `default` tag) moves with the tag: relabelling it would pin it to 1-25-5 and take it out of the tag.
    assert!(relabelled.is_empty(), "namespaces relabelled instead of following their tag:\n{}", relabelled.join("\n"));
}
