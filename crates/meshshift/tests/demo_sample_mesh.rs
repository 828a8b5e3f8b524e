//! The demo of `scripts/demo.sh`: a sample mesh on a real control plane, reported by `meshshift status`.
//! It also runs with the suite, so the demo cannot silently break.

mod support;

use support::mesh::{apply, in_namespace, inject_all, namespace, without_webhooks};
use support::{fixture_docs, kubelet, meshshift, start_cluster};

#[tokio::test]
async fn demo_sample_mesh_shared_fixtures() {
    let cluster = start_cluster();
    println!("control plane ready in {:.1} s at {}", cluster.startup_time().as_secs_f64(), cluster.apiserver_url());
    let client = cluster.client().await.expect("client");
    let mut cp = fixture_docs("istio-tree/1.10.6/crds/crd-all.gen.yaml");
    cp.push(namespace("istio-system", &[]));
    cp.extend(fixture_docs("helm-rendered/1.9.7/base-no-crds.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/istiod-rev-1-9-7.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.10.6/istiod-rev-1-10-6.yaml"));
    cp.extend(fixture_docs("helm-rendered/1.9.7/ingressgateway-rev-1-9-7.yaml"));
    let (rest, webhooks) = without_webhooks(cp);
    let mut apps = vec![namespace("bookinfo", &[("istio.io/rev", "1-10-6")])];
    let bookinfo = fixture_docs("istio-tree/1.9.7/bookinfo/bookinfo.yaml");
    apps.extend(in_namespace(inject_all(bookinfo, "1.9.7", "1.9.7", "1-9-7"), "bookinfo"));
    kubelet::register_node(&client, "node-1").await;
    apply(&client, "istio-system", rest).await;
    apply(&client, "bookinfo", apps).await;
    kubelet::make_all_ready(&client).await;
    apply(&client, "istio-system", webhooks).await;

    let kubeconfig = cluster.kubeconfig_path().to_str().expect("utf-8").to_owned();
    println!("\n$ meshshift status --kubeconfig {kubeconfig}\n");
    let run = meshshift(&["status", "--kubeconfig", &kubeconfig]);
    print!("{}", run.stdout);
    eprint!("{}", run.stderr);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("POD_REVISION_MISMATCH"), "bookinfo was relabelled for 1-10-6 but not restarted");
}
