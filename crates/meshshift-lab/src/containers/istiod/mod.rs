//! The emulated istiod (image `*/pilot:<version>`): one revision's control plane, as far as upgrades can
//! tell it apart from the real one.
//!
//! What it does, each in its own module:
//! - finds or creates the namespace's root CA ([`ca`]) and publishes it as `istio-ca-root-cert` in every
//!   namespace ([`rootcert`]);
//! - serves the injection and validation webhooks over HTTPS on 15017 ([`webhook`], [`admission`]),
//!   injecting what Istio of its version injects ([`inject`]), and writes its CA into the `caBundle` of
//!   the webhook configurations that call it, learning its revision tags on the way ([`patcher`]);
//! - watches Gateways, VirtualServices and Services ([`sources`]), scopes them to its revision
//!   ([`config`]) and streams them to the proxies it admits on 15012 ([`xds`]);
//! - answers `/ready` on 8080 and `/metrics` on 15014 ([`ready`]).
//!
//! Lifecycle: on `Terminating` it stops accepting webhook and stream connections and closes the open
//! streams (proxies keep their config but go unready), reports unready, and exits at the deadline.

pub mod admission;
pub mod ca;
pub mod config;
pub mod error;
mod http;
pub mod identity;
pub mod index;
pub mod inject;
pub mod patcher;
pub mod ready;
pub mod rootcert;
pub mod sources;
pub mod webhook;
pub mod xds;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::error::IstiodError;
pub use self::identity::Istiod;
use super::protocol::XDS_PORT;
use super::{ContainerContext, ContainerFuture, ContainerImage, Lifecycle, image_name};

/// The image component of istiod's image.
pub const IMAGE_NAME: &str = "pilot";
/// How long to wait before retrying the CA when the apiserver is unavailable.
const CA_RETRY: Duration = Duration::from_secs(1);

/// The `pilot` image.
#[derive(Debug, Clone, Copy, Default)]
pub struct IstiodImage;

impl IstiodImage {
    /// The emulation.
    pub fn new() -> IstiodImage {
        IstiodImage
    }
}

impl ContainerImage for IstiodImage {
    fn name(&self) -> &'static str {
        "istiod"
    }

    /// Any container whose image is `.../pilot:<tag>` (the chart's container is named `discovery`).
    fn matches(&self, _pod: &Pod, container: &Container) -> bool {
        image_name(container) == IMAGE_NAME
    }

    fn start(&self, ctx: ContainerContext) -> ContainerFuture {
        async move { run(ctx).await.map_err(Into::into) }.boxed()
    }
}

async fn bind(ip: Ipv4Addr, port: u16) -> Result<TcpListener, IstiodError> {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
    TcpListener::bind(addr).await.map_err(|source| IstiodError::Bind { addr, source })
}

/// Waits until the container must exit; cancels `terminating` as soon as the pod is being deleted.
async fn until_exit(mut lifecycle: watch::Receiver<Lifecycle>, terminating: CancellationToken) {
    loop {
        let state = *lifecycle.borrow_and_update();
        match state {
            Lifecycle::Running => {}
            Lifecycle::Terminating { deadline } => {
                terminating.cancel();
                let deadline = tokio::time::Instant::from_std(deadline);
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return,
                    changed = lifecycle.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep_until(deadline).await;
                            return;
                        }
                        continue;
                    }
                }
            }
            Lifecycle::Killed => {
                terminating.cancel();
                return;
            }
        }
        if lifecycle.changed().await.is_err() {
            // Nobody can tell us to stop any more: the node agent let go of this container.
            terminating.cancel();
            return;
        }
    }
}

/// The CA, retrying while the apiserver is unavailable; bad CA material is fatal, as for istiod.
async fn load_ca(client: &kube::Client, namespace: &str) -> Result<ca::RootCa, IstiodError> {
    loop {
        match ca::load_or_create(client, namespace).await {
            Ok(ca) => return Ok(ca),
            Err(err) if err.is_transient() => {
                tracing::warn!(%err, "loading the root CA; retrying");
                tokio::time::sleep(CA_RETRY).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// The CA-dependent part: webhook server, certificate reissuing, caBundle patching, root cert publishing.
async fn run_with_ca(
    client: kube::Client,
    istiod: Arc<Istiod>,
    webhook_listener: TcpListener,
    tags_tx: watch::Sender<patcher::KnownTags>,
    patched_tx: watch::Sender<bool>,
    stats: Arc<ready::Stats>,
    stop_accepting: CancellationToken,
) -> Result<(), IstiodError> {
    let root = Arc::new(load_ca(&client, &istiod.namespace).await?);
    let known = tags_tx.borrow().clone().unwrap_or_default();
    let names = istiod.dns_names(&known);
    let certs = Arc::new(webhook::ServingCerts::new(root.issue_serving(&names)?)?);
    let acceptor = webhook::acceptor(certs.clone())?;
    tracing::info!(revision = %istiod.revision, source = ?root.source, "webhook serving certificate ready");
    let mut tasks = JoinSet::new();
    let handler = webhook::handler(istiod.clone(), stats.clone());
    tasks.spawn(http::serve(webhook_listener, Some(acceptor), handler, stop_accepting).map(|()| Ok(())));
    tasks.spawn(
        webhook::follow_tags(root.clone(), istiod.clone(), certs, tags_tx.subscribe(), names)
            .map(|r| r.map_err(IstiodError::from)),
    );
    let bundle = root.root_cert_pem.clone();
    tasks.spawn(patcher::run(client.clone(), istiod.clone(), bundle.clone(), tags_tx, patched_tx, stats));
    tasks.spawn(rootcert::run(client, istiod, bundle));
    // The webhook server ends Ok once it stops accepting; the others run until dropped.
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err),
            Err(err) => return Err(IstiodError::Stopped(if err.is_panic() { "a panicking task" } else { "a task" })),
        }
    }
    std::future::pending().await
}

/// The container: binds its ports, starts every part, and runs until the lifecycle says to exit.
async fn run(ctx: ContainerContext) -> Result<(), IstiodError> {
    let istiod = Arc::new(Istiod::from_pod(&ctx.pod, &ctx.container)?);
    tracing::info!(
        pod = %format!("{}/{}", ctx.namespace(), ctx.pod_name()),
        version = %istiod.version,
        revision = %istiod.revision,
        ip = %ctx.pod_ip,
        "istiod starting"
    );
    // Bind everything first: a port clash fails the container at once, like a real process.
    let webhook_listener = bind(ctx.pod_ip, webhook::WEBHOOK_PORT).await?;
    let ready_listener = bind(ctx.pod_ip, ready::READY_PORT).await?;
    let metrics_listener = bind(ctx.pod_ip, ready::METRICS_PORT).await?;
    let xds_listener = bind(ctx.pod_ip, XDS_PORT).await?;

    let terminating = CancellationToken::new();
    let stats = Arc::new(ready::Stats::default());
    let (patched_tx, patched_rx) = watch::channel(false);
    let (synced_tx, synced_rx) = watch::channel(false);
    let (tags_tx, tags_rx) = watch::channel(None);
    let (config_tx, config_rx) = watch::channel(None);
    let health =
        ready::Health { webhooks_patched: patched_rx, config_synced: synced_rx, terminating: terminating.clone() };

    // Dropping this set (at exit, or when the container's future is dropped) aborts every part.
    let mut tasks: JoinSet<Result<(), IstiodError>> = JoinSet::new();
    // Readiness and metrics keep answering until exit (503 while terminating).
    let never = CancellationToken::new();
    tasks.spawn(http::serve(ready_listener, None, ready::ready_handler(health), never.clone()).map(|()| Ok(())));
    let metrics = ready::metrics_handler(istiod.clone(), stats.clone());
    tasks.spawn(http::serve(metrics_listener, None, metrics, never).map(|()| Ok(())));
    tasks.spawn(sources::run(ctx.client.clone(), istiod.clone(), tags_rx.clone(), config_tx, synced_tx));
    let xds_ctx = xds::XdsContext { istiod: istiod.clone(), tags: tags_rx, config: config_rx, stats: stats.clone() };
    tasks.spawn(xds::serve(xds_listener, xds_ctx, terminating.clone()).map(|()| Ok(())));
    tasks.spawn(run_with_ca(
        ctx.client.clone(),
        istiod.clone(),
        webhook_listener,
        tags_tx,
        patched_tx,
        stats,
        terminating.clone(),
    ));

    let exit = until_exit(ctx.lifecycle.clone(), terminating.clone());
    tokio::pin!(exit);
    loop {
        tokio::select! {
            () = &mut exit => {
                tracing::info!(revision = %istiod.revision, "istiod exiting");
                return Ok(());
            }
            Some(joined) = tasks.join_next() => match joined {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::error!(revision = %istiod.revision, %err, "istiod failed");
                    return Err(err);
                }
                Err(err) => {
                    tracing::error!(revision = %istiod.revision, %err, "istiod task died");
                    return Err(IstiodError::Stopped("an istiod task"));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_pilot_images_only() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "istiod-1-9-7-abc", "namespace": "istio-system"},
            "spec": {"containers": [
                {"name": "discovery", "image": "docker.io/istio/pilot:1.9.7"},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.9.7"}
            ]}
        }))
        .expect("pod");
        let containers = &pod.spec.as_ref().expect("spec").containers;
        assert!(IstiodImage.matches(&pod, &containers[0]));
        assert!(!IstiodImage.matches(&pod, &containers[1]));
        assert_eq!(IstiodImage.name(), "istiod");
    }

    #[tokio::test]
    async fn terminating_cancels_at_once_and_exits_at_the_deadline() {
        let (tx, rx) = watch::channel(Lifecycle::Running);
        let terminating = CancellationToken::new();
        let exit = tokio::spawn(until_exit(rx, terminating.clone()));
        tokio::task::yield_now().await;
        assert!(!terminating.is_cancelled());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        tx.send_replace(Lifecycle::Terminating { deadline });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(terminating.is_cancelled(), "stops accepting at once");
        assert!(!exit.is_finished(), "keeps running until the deadline");
        tx.send_replace(Lifecycle::Killed);
        tokio::time::timeout(Duration::from_secs(1), exit).await.expect("killed ends it").expect("join");
    }
}
