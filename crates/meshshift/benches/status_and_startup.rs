//! Benchmarks behind docs/benchmarks.md, run with `cargo bench -p meshshift --bench status_and_startup`:
//! 1. start-up of the test control plane (etcd + apiserver + controller-manager + scheduler, in a network
//!    namespace) until the apiserver is ready;
//! 2. `meshshift status -o json` on a mesh of a few hundred pods, side by side with what a user would run to
//!    fetch the same data with kubectl (one `kubectl get -A -o json` of the same kinds), which is only the
//!    fetch, without any analysis.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::mesh::{apply, namespace, without_webhooks};
use support::{fixture_docs, kubelet, start_cluster};

const STARTS: usize = 5;
const RUNS: usize = 10;
const NAMESPACES: usize = 20;
const DEPLOYMENTS_PER_NS: usize = 5;
const REPLICAS: i64 = 4;

fn stats(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    (ms(d[0]), ms(d[d.len() / 2]), ms(d[d.len() - 1]))
}

fn time(mut cmd: Command) -> Duration {
    let began = Instant::now();
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    began.elapsed()
}

fn main() {
    let mut startups = Vec::new();
    for _ in 0..STARTS {
        let c = start_cluster();
        startups.push(c.startup_time());
    }
    let (min, med, max) = stats(startups);
    println!("| control-plane start-up until ready (n={STARTS}) | {:.0} ms | {:.0} ms | {:.0} ms |", min, med, max);

    let cluster = start_cluster();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pods = rt.block_on(async {
        let client = cluster.client().await.expect("client");
        let mut cp = fixture_docs("istio-tree/1.10.6/crds/crd-all.gen.yaml");
        cp.push(namespace("istio-system", &[]));
        cp.extend(fixture_docs("helm-rendered/1.9.7/base-no-crds.yaml"));
        cp.extend(fixture_docs("helm-rendered/1.9.7/istiod-rev-1-9-7.yaml"));
        cp.extend(fixture_docs("helm-rendered/1.10.6/istiod-rev-1-10-6.yaml"));
        let (rest, webhooks) = without_webhooks(cp);
        kubelet::register_node(&client, "node-1").await;
        apply(&client, "istio-system", rest).await;
        let mut apps = Vec::new();
        for n in 0..NAMESPACES {
            let ns = format!("app-{n}");
            let rev = if n % 2 == 0 { "1-9-7" } else { "1-10-6" };
            apps.push(namespace(&ns, &[("istio.io/rev", rev)]));
            for d in 0..DEPLOYMENTS_PER_NS {
                apps.push(json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": format!("svc-{d}"), "namespace": ns},
                    "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": format!("svc-{d}")}},
                        "template": {"metadata": {"labels": {"app": format!("svc-{d}"), "istio.io/rev": "1-9-7"}},
                            "spec": {"containers": [
                                {"name": "app", "image": "example/app:1"},
                                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.9.7", "args": ["proxy", "sidecar"]}]}}}
                }));
            }
        }
        apply(&client, "default", apps).await;
        let want = NAMESPACES * DEPLOYMENTS_PER_NS * REPLICAS as usize;
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client.clone());
        for _ in 0..600 {
            let n = api.list(&Default::default()).await.expect("pods").items.len();
            if n >= want {
                // Last: with no istiod serving them, the injectors would reject the pods above.
                apply(&client, "istio-system", webhooks).await;
                return n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("pods were not created");
    });
    let kc = cluster.kubeconfig_path().to_str().expect("utf-8").to_owned();
    let status = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_meshshift"));
        c.args(["status", "-o", "json", "--kubeconfig", &kc]);
        c
    };
    let kubectl = || {
        let mut c = Command::new("kubectl");
        c.args([
            "get",
            "namespaces,deployments,statefulsets,daemonsets,replicasets,pods,services,configmaps,mutatingwebhookconfigurations,validatingwebhookconfigurations",
            "-A",
            "-o",
            "json",
            "--kubeconfig",
            &kc,
        ]);
        c
    };
    time(status());
    let (a, b, c) = stats((0..RUNS).map(|_| time(status())).collect());
    println!("| `meshshift status -o json`, {pods} pods (n={RUNS}) | {a:.0} ms | {b:.0} ms | {c:.0} ms |");
    if Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success()) {
        time(kubectl());
        let (a, b, c) = stats((0..RUNS).map(|_| time(kubectl())).collect());
        println!(
            "| `kubectl get <same 10 kinds> -A -o json` (fetch only), {pods} pods (n={RUNS}) | {a:.0} ms | {b:.0} ms | {c:.0} ms |"
        );
    } else {
        println!("| kubectl not installed: baseline skipped | | | |");
    }
}
