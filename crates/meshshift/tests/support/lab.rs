//! The lab most end-to-end tests start from: Istio 1.9.7 (`install_mesh`) and bookinfo behind the
//! user-owned `istio-ingress/ingress` LoadBalancer, already serving `/productpage` without a failure.

use std::path::Path;
use std::time::Duration;

use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::testing::eventually;
use meshshift_lab::{LabOptions, TestCluster};
use meshshift_probe::{ProbeConfig, Prober};

use super::install_mesh;

/// A running lab with the mesh installed and its ingress serving.
pub struct MeshLab {
    pub cluster: TestCluster,
    /// The lab's kubeconfig path, for `--kubeconfig`.
    pub kc: String,
    pub client: kube::Client,
    /// `/productpage` through the LoadBalancer's host port.
    pub url: String,
}

impl MeshLab {
    /// Starts a lab with `options`, installs the mesh and waits until the ingress serves.
    pub async fn start(options: &LabOptions) -> MeshLab {
        let cluster = TestCluster::start_lab(Path::new(env!("CARGO_BIN_EXE_meshshift")), options)
            .unwrap_or_else(|e| panic!("lab did not start: {e}"));
        install_mesh(cluster.dir().to_str().expect("dir"));
        let addr = LoadBalancers::host_addr(cluster.dir(), "istio-ingress", "ingress", 80)
            .expect("loadbalancers.json")
            .expect("the ingress has a host port");
        let kc = cluster.kubeconfig_path().to_str().expect("kubeconfig").to_owned();
        let client = cluster.client().await.expect("client");
        let url = format!("http://{addr}/productpage");
        wait_until_serving("the ingress serves", &url).await;
        MeshLab { cluster, kc, client, url }
    }
}

/// Waits (60 s at most) until a short burst of probe requests to `url` all succeed.
pub async fn wait_until_serving(what: &str, url: &str) {
    eventually(what, Duration::from_secs(60), || {
        let url = url.to_owned();
        async move {
            let mut c = ProbeConfig::new(vec![url], 50.0);
            c.duration = Some(Duration::from_millis(400));
            let r = Prober::start(c).ok()?.wait().await.ok()?;
            (r.summary.total > 0 && r.summary.failed == 0).then_some(())
        }
    })
    .await;
}
