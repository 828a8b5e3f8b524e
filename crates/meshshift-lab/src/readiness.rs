//! Waiting for the control plane: each component is "ready" when it does its job, not when its process
//! exists. Every wait is bounded and reports the last reason it was still not ready.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::instrument::WithSubscriber;

use crate::LabError;
use crate::kubeconfig::client_from_file;

/// `127.0.0.1:port` inside the namespace.
pub(crate) fn inside(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

pub(crate) async fn wait_for_tcp(addr: SocketAddr, limit: Duration) -> Result<(), LabError> {
    let start = Instant::now();
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(err) if start.elapsed() >= limit => {
                return Err(LabError::NotReady {
                    what: format!("etcd ({addr})"),
                    waited_secs: limit.as_secs(),
                    detail: err.to_string(),
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls `/readyz` with the admin identity until it answers 200.
pub(crate) async fn wait_for_readyz(kubeconfig: &Path, limit: Duration) -> Result<(), LabError> {
    let client = client_from_file(kubeconfig).await?;
    poll("kube-apiserver /readyz", limit, Duration::from_millis(100), || {
        let client = client.clone();
        async move {
            let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
            client.request_text(request).await.map(|_| ()).map_err(|e| e.to_string())
        }
    })
    .await
}

/// Waits until the controller-manager has run its controllers once: the service-account controllers made
/// `default/default` and its token. Without this a test's first namespace could be created before the
/// controllers run, and its pods would fail admission ("no API token") and back off.
pub(crate) async fn wait_for_controllers(kubeconfig: &Path, limit: Duration) -> Result<(), LabError> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let client = client_from_file(kubeconfig).await?;
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client, "default");
    poll("kube-controller-manager (default/default ServiceAccount token)", limit, Duration::from_millis(100), || {
        let accounts = accounts.clone();
        async move {
            match accounts.get_opt("default").await.map_err(|e| e.to_string())? {
                Some(sa) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => Ok(()),
                Some(_) => Err("the default ServiceAccount has no token yet".to_string()),
                None => Err("the default ServiceAccount does not exist yet".to_string()),
            }
        }
    })
    .await
}

/// Retries `attempt` (which says why it is not ready yet) every `every` until it succeeds or `limit` has
/// passed; each attempt gets at most 5 s.
async fn poll<F, Fut>(what: &str, limit: Duration, every: Duration, mut attempt: F) -> Result<(), LabError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        // kube's client logs every failed request at ERROR level; while waiting for start-up, failures are
        // expected, so attempts run without a subscriber and only the last failure is reported.
        let quiet = attempt().with_subscriber(tracing::subscriber::NoSubscriber::default());
        let last = match tokio::time::timeout(Duration::from_secs(5), quiet).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err,
            Err(_) => "attempt timed out after 5 s".to_string(),
        };
        if start.elapsed() >= limit {
            return Err(LabError::NotReady { what: what.to_string(), waited_secs: limit.as_secs(), detail: last });
        }
        tokio::time::sleep(every).await;
    }
}
