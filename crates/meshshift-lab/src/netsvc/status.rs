//! Writes `status.loadBalancer` of load balancer Services, from a task of its own so that a slow or failing
//! apiserver never stalls forwarding (the linkerd status-controller shape: decisions arrive on a channel,
//! a small writer carries them out and retries).
//!
//! Only the status subresource is written: never the Service's spec, labels or annotations, which users
//! (and meshshift's tests) compare before and after an upgrade.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::spec::ServiceKey;

/// The first retry delay after a failed write; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A write request: the ingress IP to publish, or `None` to clear `status.loadBalancer.ingress`.
pub(crate) type StatusUpdate = (ServiceKey, Option<Ipv4Addr>);

/// The sending half; the writer task ends when it is dropped.
#[derive(Debug, Clone)]
pub(crate) struct StatusWriter {
    tx: UnboundedSender<StatusUpdate>,
}

impl StatusWriter {
    /// Starts the writer task on the current runtime.
    pub(crate) fn spawn(client: kube::Client) -> Self {
        let (tx, rx) = unbounded_channel();
        tokio::spawn(run(client, rx));
        StatusWriter { tx }
    }

    /// Queues a write (a newer request for the same Service replaces a pending one).
    pub(crate) fn send(&self, update: StatusUpdate) {
        if self.tx.send(update).is_err() {
            tracing::warn!("the load balancer status writer has stopped; status not written");
        }
    }
}

async fn run(client: kube::Client, mut rx: UnboundedReceiver<StatusUpdate>) {
    let mut pending: BTreeMap<ServiceKey, Option<Ipv4Addr>> = BTreeMap::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some((key, ip)) => {
                    pending.insert(key, ip);
                }
                None => return,
            }
        }
        while let Ok((key, ip)) = rx.try_recv() {
            pending.insert(key, ip);
        }
        let mut failed = BTreeMap::new();
        for (key, ip) in std::mem::take(&mut pending) {
            match write(&client, &key, ip).await {
                Ok(()) => tracing::info!(service = %key, ip = ?ip, "load balancer status written"),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    tracing::debug!(service = %key, "service gone before its load balancer status was written");
                }
                Err(err) => {
                    let retry_ms = backoff.as_millis() as u64;
                    tracing::warn!(service = %key, %err, retry_ms, "could not write load balancer status");
                    failed.insert(key, ip);
                }
            }
        }
        if failed.is_empty() {
            backoff = FIRST_BACKOFF;
            continue;
        }
        pending = failed;
        // Wait before retrying, but take newer requests meanwhile (they replace the failed ones).
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                msg = rx.recv() => match msg {
                    Some((key, ip)) => { pending.insert(key, ip); }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A JSON merge patch of the status subresource: `ingress` is replaced as a whole (or removed with null).
fn patch_body(ip: Option<Ipv4Addr>) -> serde_json::Value {
    match ip {
        Some(ip) => json!({ "status": { "loadBalancer": { "ingress": [{ "ip": ip.to_string() }] } } }),
        None => json!({ "status": { "loadBalancer": { "ingress": null } } }),
    }
}

async fn write(client: &kube::Client, key: &ServiceKey, ip: Option<Ipv4Addr>) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch_body(ip))).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_touch_only_the_ingress_list() {
        assert_eq!(
            patch_body(Some(Ipv4Addr::new(10, 250, 0, 1))),
            json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "10.250.0.1" }] } } })
        );
        assert_eq!(patch_body(None), json!({ "status": { "loadBalancer": { "ingress": null } } }));
    }
}
