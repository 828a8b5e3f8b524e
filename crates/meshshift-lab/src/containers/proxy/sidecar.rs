//! The sidecar: inbound interception for the app containers of its pod.
//!
//! In a real pod iptables redirects inbound traffic for the app's ports to Envoy, which forwards it to the
//! app on localhost. Here the app binds the pod's private loopback ([`ContainerContext::pod_loopback`]) and
//! the sidecar binds the pod IP on every port the pod's other containers declare, forwarding to
//! `pod_loopback:port` and stamping responses with `x-meshshift-revision`/`-version`/`-proxy: sidecar`
//! (the app's `x-meshshift-pod` is kept; it is added when the app sets none).
//!
//! Until the first config from istiod arrives the sidecar answers 503, as an Envoy without listeners would
//! refuse the connection; afterwards it keeps forwarding even when istiod is gone (stale config). If the app
//! does not answer: 503. Inbound requests are not retried (Envoy's inbound path does not retry).
//!
//! Outbound traffic is NOT intercepted: the lab has no iptables, so apps call other Services' ClusterIPs
//! directly and the lab's kube-proxy emulation balances those connections. Outbound routing rules
//! (mesh VirtualServices, subsets) therefore have no effect in the lab.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::ready::READY_PORT;
use super::retry::RetryPolicy;
use super::routes::RESERVED_PORTS;
use super::serve::{self, Body, Handler, Role, text};
use super::state::ProxyState;
use super::stats::Reporter;
use super::upstream::{Outgoing, Upstream};
use crate::containers::{ContainerContext, ContainerError, HEADER_POD};

/// The ports the pod's app containers declare (every container but `istio-proxy`, including native
/// sidecars and other restartable init containers), minus the proxy's own ports.
pub fn app_ports(pod: &Pod) -> BTreeSet<u16> {
    let Some(spec) = pod.spec.as_ref() else { return BTreeSet::new() };
    let restartable_init =
        spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(restartable_init)
        .filter(|c| c.name != "istio-proxy")
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .filter(|p| !RESERVED_PORTS.contains(p) && *p != READY_PORT)
        .collect()
}

struct Sidecar {
    state: Arc<ProxyState>,
    upstream: Upstream,
    pod_loopback: Ipv4Addr,
    pod_header: HeaderValue,
    labels: std::collections::BTreeMap<String, String>,
}

/// Binds the inbound listeners (errors now, e.g. a port already taken) and returns the future serving
/// them until `stop`.
pub async fn start(
    ctx: &ContainerContext,
    state: Arc<ProxyState>,
    stop: watch::Receiver<bool>,
) -> Result<BoxFuture<'static, ()>, ContainerError> {
    let sidecar = Arc::new(Sidecar {
        state: state.clone(),
        upstream: Upstream::new(),
        pod_loopback: ctx.pod_loopback,
        pod_header: HeaderValue::from_str(&state.identity.pod())
            .map_err(|e| ContainerError::Config(format!("pod name unusable in a header: {e}")))?,
        labels: ctx.pod.metadata.labels.clone().unwrap_or_default(),
    });
    let mut listeners = Vec::new();
    for port in app_ports(&ctx.pod) {
        let listener = serve::bind(SocketAddr::V4(SocketAddrV4::new(ctx.pod_ip, port))).await?;
        listeners.push((port, listener));
    }
    tracing::info!(
        pod = %state.identity.pod(),
        ports = ?listeners.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        loopback = %ctx.pod_loopback,
        "sidecar intercepting inbound traffic"
    );
    Ok(async move {
        let mut stop = stop;
        let mut tasks = JoinSet::new();
        for (port, listener) in listeners {
            let handler = handler(sidecar.clone(), port);
            tasks.spawn(serve::serve(listener, handler, state.clone(), Role::DataPlane { stop: stop.clone() }));
        }
        if tasks.is_empty() {
            // An app without ports: nothing to intercept, but the proxy lives until it is stopped.
            let _ = stop.wait_for(|s| *s).await;
        }
        while tasks.join_next().await.is_some() {}
    }
    .boxed())
}

fn handler(sidecar: Arc<Sidecar>, port: u16) -> Handler {
    Arc::new(move |request| sidecar.clone().handle(port, request).boxed())
}

impl Sidecar {
    async fn handle(self: Arc<Self>, port: u16, request: Request<Incoming>) -> Response<Body> {
        let destination = self.destination_service(port);
        let mut response = self.forward(port, request).await;
        let id = &self.state.identity;
        self.state.stats.record(Reporter::Destination, "unknown", &destination, response.status().as_u16());
        id.stamp(response.headers_mut());
        if !response.headers().contains_key(HEADER_POD) {
            response.headers_mut().insert(HEADER_POD, self.pod_header.clone());
        }
        response
    }

    async fn forward(&self, port: u16, request: Request<Incoming>) -> Response<Body> {
        if self.state.config().is_none() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "sidecar has no config from istiod yet\n");
        }
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => return text(StatusCode::BAD_REQUEST, format!("reading the request body: {err}\n")),
        };
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let outgoing = Outgoing { parts: &parts, body, path_and_query: &path_and_query, authority: None };
        let app = SocketAddr::V4(SocketAddrV4::new(self.pod_loopback, port));
        match self.upstream.send(app, &outgoing, &RetryPolicy::NONE, None).await {
            Ok(response) => response.map(|b| b.boxed()),
            Err(err) => {
                tracing::debug!(pod = %self.state.identity.pod(), %err, "app unreachable");
                text(StatusCode::SERVICE_UNAVAILABLE, format!("upstream connect error: {err}\n"))
            }
        }
    }

    /// The Service this pod serves on `port` (selector matching the pod's labels), for telemetry.
    fn destination_service(&self, port: u16) -> String {
        let Some(config) = self.state.config() else { return "unknown".into() };
        config
            .services
            .iter()
            .filter(|s| s.namespace == self.state.identity.namespace && !s.selector.is_empty())
            .filter(|s| s.selector.iter().all(|(k, v)| self.labels.get(k) == Some(v)))
            .find(|s| {
                s.target_ports.iter().any(|(_, t)| {
                    matches!(t, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) if i32::from(port) == *n)
                }) || s.ports.iter().any(|(p, _)| *p == port)
            })
            .map_or_else(|| "unknown".into(), |s| format!("{}.{}.svc.cluster.local", s.name, s.namespace))
    }
}
