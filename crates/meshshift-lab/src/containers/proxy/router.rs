//! The gateway router (`proxy router`): listeners, routing per the config's Gateways and
//! VirtualServices ([`super::routes`]), and forwarding to the destination Services' ClusterIPs.
//!
//! Listeners: every port the container declares (legacy chart: 8080 `http2`, 8443 `https`, served as
//! plain HTTP: the lab has no gateway certificates), except the proxy's own and the TCP passthrough ports
//! 15012/15443; plus every port the config's Gateway servers map to (an injected gateway declares no
//! traffic ports: its listeners come from config, as Envoy's do). A port first seen in config is bound
//! when the config arrives; listeners are not removed when config drops them.
//!
//! Answers: no config yet -> 503; no route -> 404; upstream unreachable -> 503, timeout -> 504. Responses
//! carry this gateway's `x-meshshift-revision`/`-version`/`-proxy: gateway`/`-pod`; the upstream's values
//! of those headers (its sidecar's, its pod's) are kept as `x-meshshift-upstream-*`. Forwarded requests
//! are retried as the route's `retries` say, by default as Istio does: twice, on a connection failure or
//! an upstream 503 (`super::retry`).

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::retry::RetryPolicy;
use super::routes::{GatewayPod, RESERVED_PORTS, RequestInfo, RouteAction, RouteTable, pick_destination};
use super::serve::{self, Body, Handler, Role, text};
use super::state::ProxyState;
use super::stats::Reporter;
use super::upstream::{Outgoing, Upstream, UpstreamError};
use crate::containers::{
    ContainerContext, ContainerError, HEADER_POD, HEADER_PROXY, HEADER_REVISION, HEADER_VERSION, ServiceResolver,
};

/// Prefix under which a gateway keeps the upstream's `x-meshshift-*` headers
/// (`x-meshshift-upstream-pod`: the backend pod that answered).
pub const UPSTREAM_HEADER_PREFIX: &str = "x-meshshift-upstream-";
/// Ports a legacy gateway declares for TCP passthrough (istiod, SNI/mTLS): not HTTP listeners.
const PASSTHROUGH_PORTS: [u16; 2] = [15012, 15443];
/// How long to wait before trying a config-derived port again after a bind failure.
const REBIND_DELAY: Duration = Duration::from_secs(2);

struct Router {
    state: Arc<ProxyState>,
    upstream: Upstream,
    resolve: ServiceResolver,
    table: watch::Receiver<Option<Arc<RouteTable>>>,
    pod_header: HeaderValue,
    rolls: AtomicU64,
    seed: RandomState,
}

/// A routing decision, owned so that no borrow of the table is held across the upstream call.
enum Plan {
    Answer(StatusCode, String, String),
    Redirect(StatusCode, String),
    Forward {
        addr: SocketAddr,
        service: String,
        path: String,
        authority: Option<String>,
        retry: RetryPolicy,
        timeout: Option<Duration>,
    },
}

/// The gateway pod as the route table sees it.
pub fn gateway_pod(ctx: &ContainerContext) -> GatewayPod {
    GatewayPod {
        namespace: ctx.namespace().to_owned(),
        labels: ctx.pod.metadata.labels.clone().unwrap_or_default(),
        container_ports: ctx
            .container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.container_port).ok().map(|n| (n, p.name.clone())))
            .collect(),
    }
}

/// The ports a router listens on before any config: its declared ports minus the proxy's own and TCP
/// passthrough ports.
pub fn static_ports(pod: &GatewayPod) -> BTreeSet<u16> {
    pod.container_ports
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !RESERVED_PORTS.contains(p) && !PASSTHROUGH_PORTS.contains(p))
        .collect()
}

/// Binds the declared listeners (errors now) and returns the future that serves them, rebuilds the route
/// table on every config, binds config-derived ports, and ends when `stop` turned true and every
/// connection finished.
pub async fn start(
    ctx: &ContainerContext,
    state: Arc<ProxyState>,
    mut stop: watch::Receiver<bool>,
) -> Result<BoxFuture<'static, ()>, ContainerError> {
    let pod = gateway_pod(ctx);
    let mut bound = Vec::new();
    for port in static_ports(&pod) {
        bound.push((port, serve::bind(SocketAddr::V4(SocketAddrV4::new(ctx.pod_ip, port))).await?));
    }
    let (table_tx, table_rx) = watch::channel(None);
    let router = Arc::new(Router {
        state: state.clone(),
        upstream: Upstream::new(),
        resolve: ctx.resolve.clone(),
        table: table_rx,
        pod_header: HeaderValue::from_str(&state.identity.pod())
            .map_err(|e| ContainerError::Config(format!("pod name unusable in a header: {e}")))?,
        rolls: AtomicU64::new(0),
        seed: RandomState::new(),
    });
    let pod_ip = ctx.pod_ip;
    tracing::info!(pod = %state.identity.pod(), ports = ?bound.iter().map(|(p, _)| *p).collect::<Vec<_>>(), "gateway router listening");
    Ok(async move {
        let mut listeners = JoinSet::new();
        let mut listening = BTreeSet::new();
        let listener_stop = stop.clone();
        let spawn = |listeners: &mut JoinSet<()>, port: u16, listener: TcpListener| {
            let role = Role::DataPlane { stop: listener_stop.clone() };
            listeners.spawn(serve::serve(listener, handler(router.clone(), port), state.clone(), role));
        };
        for (port, listener) in bound {
            listening.insert(port);
            spawn(&mut listeners, port, listener);
        }
        let mut config = state.subscribe_config();
        let mut generation = None;
        let mut retry_bind = false;
        loop {
            let snapshot = config.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                let table = RouteTable::build(&snapshot, &pod);
                if generation != Some(snapshot.generation) {
                    for warning in &table.warnings {
                        tracing::warn!(pod = %state.identity.pod(), generation = snapshot.generation, %warning, "config not applied");
                    }
                    generation = Some(snapshot.generation);
                }
                retry_bind = false;
                let new_ports: Vec<u16> = table.ports().difference(&listening).copied().collect();
                for port in new_ports {
                    match serve::bind(SocketAddr::V4(SocketAddrV4::new(pod_ip, port))).await {
                        Ok(listener) => {
                            tracing::info!(pod = %state.identity.pod(), port, "gateway listener added from config");
                            listening.insert(port);
                            spawn(&mut listeners, port, listener);
                        }
                        Err(err) => {
                            tracing::warn!(pod = %state.identity.pod(), %err, "gateway listener from config not bound");
                            retry_bind = true;
                        }
                    }
                }
                table_tx.send_replace(Some(Arc::new(table)));
            }
            tokio::select! {
                changed = config.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(REBIND_DELAY), if retry_bind => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        while listeners.join_next().await.is_some() {}
    }
    .boxed())
}

fn handler(router: Arc<Router>, port: u16) -> Handler {
    Arc::new(move |request| router.clone().handle(port, request).boxed())
}

impl Router {
    async fn handle(self: Arc<Self>, port: u16, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let plan = self.plan(port, &parts);
        let (mut response, service) = match plan {
            Plan::Answer(status, message, service) => (text(status, message), service),
            Plan::Redirect(status, location) => {
                let mut response = text(status, "");
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                (response, "unknown".to_owned())
            }
            Plan::Forward { addr, service, path, authority, retry, timeout } => {
                let body = match body.collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(err) => return text(StatusCode::BAD_REQUEST, format!("reading the request body: {err}\n")),
                };
                let outgoing = Outgoing { parts: &parts, body, path_and_query: &path, authority: authority.as_deref() };
                let response = match self.upstream.send(addr, &outgoing, &retry, timeout).await {
                    Ok(response) => keep_upstream_headers(response.map(|b| b.boxed())),
                    Err(err @ UpstreamError::Timeout { .. }) => {
                        text(StatusCode::GATEWAY_TIMEOUT, format!("upstream request timeout: {err}\n"))
                    }
                    Err(err) => {
                        tracing::debug!(pod = %self.state.identity.pod(), %err, "upstream failed");
                        text(StatusCode::SERVICE_UNAVAILABLE, format!("upstream connect error: {err}\n"))
                    }
                };
                (response, service)
            }
        };
        let id = &self.state.identity;
        self.state.stats.record(Reporter::Source, &id.workload, &service, response.status().as_u16());
        id.stamp(response.headers_mut());
        response.headers_mut().insert(HEADER_POD, self.pod_header.clone());
        response
    }

    fn plan(&self, port: u16, parts: &http::request::Parts) -> Plan {
        let unknown = || "unknown".to_owned();
        let Some(table) = self.table.borrow().clone() else {
            return Plan::Answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway has no config from istiod yet\n".into(),
                unknown(),
            );
        };
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let path = parts.uri.path();
        let info =
            RequestInfo { listener_port: port, host, method: parts.method.as_str(), path, headers: &parts.headers };
        let Some(matched) = table.route(&info) else {
            return Plan::Answer(
                StatusCode::NOT_FOUND,
                format!("no route for {host}{path} on port {port}\n"),
                unknown(),
            );
        };
        match &matched.route.action {
            RouteAction::Direct { status, body } => {
                Plan::Answer(StatusCode::from_u16(*status).unwrap_or(StatusCode::OK), body.clone(), unknown())
            }
            RouteAction::Redirect { uri, authority, code } => {
                let location = format!(
                    "http://{}{}",
                    authority.as_deref().unwrap_or(host),
                    uri.as_deref().unwrap_or_else(|| parts.uri.path_and_query().map_or(path, |p| p.as_str()))
                );
                Plan::Redirect(StatusCode::from_u16(*code).unwrap_or(StatusCode::MOVED_PERMANENTLY), location)
            }
            RouteAction::Forward { destinations, rewrite_authority, timeout, retry, .. } => {
                let Some(destination) = pick_destination(destinations, self.roll()) else {
                    return Plan::Answer(StatusCode::SERVICE_UNAVAILABLE, "no destination\n".into(), unknown());
                };
                let service = destination.fqdn();
                let Some(dest_port) = destination.port else {
                    return Plan::Answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("no port for destination {service}\n"),
                        service,
                    );
                };
                let Some(addr) = (self.resolve)(&destination.namespace, &destination.host, dest_port) else {
                    return Plan::Answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("no healthy upstream: {service}:{dest_port} does not resolve\n"),
                        service,
                    );
                };
                Plan::Forward {
                    addr: SocketAddr::V4(addr),
                    path: matched.upstream_path(path, parts.uri.query()),
                    service,
                    authority: rewrite_authority.clone(),
                    retry: retry.clone(),
                    timeout: *timeout,
                }
            }
        }
    }

    /// A uniformly distributed number for weighted picks (no `rand` crate in the lab: a keyed hash of a
    /// counter is random enough for traffic splitting).
    fn roll(&self) -> u32 {
        let n = self.rolls.fetch_add(1, Ordering::Relaxed);
        (self.seed.hash_one(n) >> 32) as u32
    }
}

/// Moves the upstream's `x-meshshift-*` headers to `x-meshshift-upstream-*`, before the gateway stamps
/// its own.
fn keep_upstream_headers(mut response: Response<Body>) -> Response<Body> {
    for name in [HEADER_REVISION, HEADER_VERSION, HEADER_PROXY, HEADER_POD] {
        if let Some(value) = response.headers_mut().remove(name) {
            let suffix = name.trim_start_matches("x-meshshift-");
            if let Ok(upstream) = HeaderName::try_from(format!("{UPSTREAM_HEADER_PREFIX}{suffix}")) {
                response.headers_mut().insert(upstream, value);
            }
        }
    }
    response
}
