//! The emulated Istio proxy (image `*/proxyv2:<version>`, container `istio-proxy`): a sidecar, or with
//! `proxy router` in its args a gateway router.
//!
//! What it does, and why each part matters for a blue/green upgrade:
//! - connects to its revision's istiod ([`xds_client`]) and serves the config it pushes; keeps serving the
//!   last config when istiod goes away, but is then not ready ([`ready`]);
//! - a gateway routes per Gateway/VirtualService ([`routes`], [`router`]); a sidecar forwards inbound
//!   traffic to its app ([`sidecar`]); both stamp responses with their revision and version, so a test
//!   sees which colour served each request;
//! - on termination it drains for `terminationDrainDuration` ([`drain`]), then stops;
//! - it counts requests by response code and its connections ([`stats`]).
//!
//! Ports on the pod IP: 15021 (`/healthz/ready`), 15090 and 15020 (`/stats/prometheus`), plus the data
//! plane's listeners.

pub mod drain;
pub mod proxy_config;
pub mod ready;
pub mod retry;
pub mod route_config;
pub mod router;
pub mod routes;
pub mod serve;
pub mod sidecar;
pub mod state;
pub mod stats;
pub mod upstream;
pub mod xds_client;

use std::net::{SocketAddr, SocketAddrV4};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use meshshift_core::version::version_from_image;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::drain::{DrainSettings, Ending};
use self::serve::Role;
use self::state::{ProxyIdentity, ProxyState};
use self::xds_client::DiscoveryAddress;
use super::protocol::{ClientMessage, ProxyKind};
use super::{ContainerContext, ContainerError, ContainerFuture, ContainerImage, image_name};

/// The container name Istio gives its proxy.
pub const CONTAINER_NAME: &str = "istio-proxy";
/// The image component of the proxy image.
pub const IMAGE_NAME: &str = "proxyv2";

/// The `proxyv2` image: sidecar or gateway router.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyImage;

impl ProxyImage {
    /// The emulation.
    pub fn new() -> ProxyImage {
        ProxyImage
    }
}

impl ContainerImage for ProxyImage {
    fn name(&self) -> &'static str {
        "proxy"
    }

    /// Container `istio-proxy` with image `.../proxyv2:<tag>` (an un-injected `image: auto` is not a proxy
    /// image, as it would not pull in a real cluster).
    fn matches(&self, _pod: &Pod, container: &Container) -> bool {
        container.name == CONTAINER_NAME && image_name(container) == IMAGE_NAME
    }

    fn start(&self, ctx: ContainerContext) -> ContainerFuture {
        run(ctx).boxed()
    }
}

/// Router when the args contain `router` (`proxy router ...`), else sidecar.
pub fn proxy_kind(container: &Container) -> ProxyKind {
    if container.args.iter().flatten().any(|a| a == "router") { ProxyKind::Router } else { ProxyKind::Sidecar }
}

/// Who the proxy in `ctx` is: kind, version (image tag), revision (discovery address, else the pod's
/// `istio.io/rev` label, else `default`), workload name.
pub fn identity(ctx: &ContainerContext, address: &DiscoveryAddress) -> Result<ProxyIdentity, ContainerError> {
    let image = ctx.container.image.clone().unwrap_or_default();
    let version = version_from_image(&image).ok_or_else(|| {
        ContainerError::Config(format!("image {image:?} has no Istio version tag (was the pod injected?)"))
    })?;
    let labels = ctx.pod.metadata.labels.clone().unwrap_or_default();
    let revision =
        address.revision().or_else(|| labels.get("istio.io/rev").cloned()).unwrap_or_else(|| "default".to_owned());
    let workload = ctx
        .env("ISTIO_META_WORKLOAD_NAME")
        .or_else(|| labels.get("service.istio.io/canonical-name").cloned())
        .or_else(|| labels.get("app").cloned())
        .unwrap_or_else(|| ctx.pod_name().to_owned());
    Ok(ProxyIdentity {
        kind: proxy_kind(&ctx.container),
        version: version.to_string(),
        revision,
        namespace: ctx.namespace().to_owned(),
        pod_name: ctx.pod_name().to_owned(),
        workload,
    })
}

/// The container's life: admin endpoints, istiod client, data plane; then drain and stop.
async fn run(ctx: ContainerContext) -> Result<(), ContainerError> {
    let address = DiscoveryAddress::from_context(&ctx);
    let identity = identity(&ctx, &address)?;
    let settings = DrainSettings::from_context(&ctx);
    tracing::info!(
        pod = %identity.pod(),
        kind = identity.kind_name(),
        version = %identity.version,
        revision = %identity.revision,
        istiod = %address,
        drain_ms = settings.duration.as_millis() as u64,
        "proxy starting"
    );
    let state = ProxyState::new(identity);
    // Dropping this set (the container ends or its future is dropped) aborts every background task.
    let mut tasks = JoinSet::new();
    let hello = ClientMessage::Hello {
        revision: state.identity.revision.clone(),
        version: state.identity.version.clone(),
        pod: state.identity.pod(),
        kind: state.identity.kind,
    };
    tasks.spawn(xds_client::run(address, hello, ctx.namespace().to_owned(), ctx.resolve.clone(), state.clone()));

    let at = |port| SocketAddr::V4(SocketAddrV4::new(ctx.pod_ip, port));
    let ready = serve::bind(at(ready::READY_PORT)).await?;
    tasks.spawn(serve::serve(ready, ready::handler(state.clone()), state.clone(), Role::Admin));
    let app_ports = sidecar::app_ports(&ctx.pod);
    for port in stats::STATS_PORTS {
        if app_ports.contains(&port) {
            continue;
        }
        let listener = serve::bind(at(port)).await?;
        tasks.spawn(serve::serve(listener, stats::handler(state.clone()), state.clone(), Role::Admin));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut data_plane = match state.identity.kind {
        ProxyKind::Router => router::start(&ctx, state.clone(), stop_rx).await?,
        ProxyKind::Sidecar => sidecar::start(&ctx, state.clone(), stop_rx).await?,
    };
    let mut lifecycle = ctx.lifecycle.clone();
    let ending = tokio::select! {
        () = &mut data_plane => return Err(ContainerError::Other("the data plane stopped unexpectedly".into())),
        ending = drain::drain(&mut lifecycle, &state, settings) => ending,
    };
    let Ending::StopListening { deadline } = ending else {
        tracing::info!(pod = %state.identity.pod(), "killed");
        return Ok(());
    };
    stop_tx.send_replace(true);
    tokio::select! {
        () = data_plane => tracing::info!(pod = %state.identity.pod(), "drained: exiting"),
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!(pod = %state.identity.pod(), "grace period over with requests in flight");
        }
        () = drain::killed(&mut lifecycle) => tracing::info!(pod = %state.identity.pod(), "killed while closing"),
    }
    Ok(())
}
