//! The generic container: what runs for any image no more specific emulation claims.
//!
//! It is an HTTP/1.1 (and h2c) server on every declared container port, bound to
//! [`ContainerContext::app_bind_ip`], answering `200` on every path with the [`HEADER_POD`] header, so a
//! test can tell which pod answered. Knobs, for tests that need slow or draining apps:
//! - start delay: env `LAB_START_DELAY_MS` on the container, or pod annotation
//!   `lab.meshshift.io/start-delay-ms` (nothing listens meanwhile: connections are refused, probes fail);
//! - drain: by default the app ignores "SIGTERM" and keeps serving open and new connections until its grace
//!   period ends ([`Lifecycle::Killed`]); env `LAB_DRAIN_MS` (or annotation `lab.meshshift.io/drain-ms`)
//!   makes it exit that long after [`Lifecycle::Terminating`] instead.
//!
//! A container without ports idles until it is stopped.
//!
//! [`serve`] and [`until_stopped`] are shared with other emulations (bookinfo) that want the same
//! lifecycle behaviour.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, Method, Uri};
use axum::response::Response;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{ContainerContext, ContainerError, ContainerFuture, ContainerImage, HEADER_POD, Lifecycle};

/// Env var: milliseconds before the container starts listening.
pub const START_DELAY_ENV: &str = "LAB_START_DELAY_MS";
/// Pod annotation: milliseconds before the containers start listening (the env var wins).
pub const START_DELAY_ANNOTATION: &str = "lab.meshshift.io/start-delay-ms";
/// Env var: milliseconds the container keeps serving after it is told to terminate, then exits.
pub const DRAIN_ENV: &str = "LAB_DRAIN_MS";
/// Pod annotation: as [`DRAIN_ENV`] (the env var wins).
pub const DRAIN_ANNOTATION: &str = "lab.meshshift.io/drain-ms";

/// The generic HTTP emulation; matches every container, so register it last.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenericHttp;

impl ContainerImage for GenericHttp {
    fn name(&self) -> &'static str {
        "http"
    }

    fn matches(&self, _pod: &Pod, _container: &Container) -> bool {
        true
    }

    fn start(&self, ctx: ContainerContext) -> ContainerFuture {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: ContainerContext) -> Result<(), ContainerError> {
    let delay = millis_setting(&ctx, START_DELAY_ENV, START_DELAY_ANNOTATION)?;
    if let Some(delay) = delay {
        let mut lifecycle = ctx.lifecycle.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            // Told to stop while still starting: a process would die of its SIGTERM here.
            _ = lifecycle.wait_for(|l| *l != Lifecycle::Running) => return Ok(()),
        }
    }
    let ports = ctx.ports();
    if ports.is_empty() {
        until_stopped(ctx.lifecycle.clone(), drain_of(&ctx)?).await;
        return Ok(());
    }
    let pod = format!("{}/{}", ctx.namespace(), ctx.pod_name());
    let container = ctx.container.name.clone();
    let app = Router::new().fallback(move |method: Method, uri: Uri| {
        let body = format!("meshshift lab: {pod} ({container}) answered {method} {}\n", uri.path());
        async move { body }
    });
    serve(&ctx, &ports, with_pod_header(app, &ctx)).await
}

/// A millisecond setting from the container's env, else the pod's annotations.
fn millis_setting(ctx: &ContainerContext, env: &str, annotation: &str) -> Result<Option<Duration>, ContainerError> {
    let value = ctx.env(env).or_else(|| ctx.pod.metadata.annotations.as_ref().and_then(|a| a.get(annotation)).cloned());
    match value {
        None => Ok(None),
        Some(v) => v.trim().parse::<u64>().map(|ms| Some(Duration::from_millis(ms))).map_err(|_| {
            ContainerError::Config(format!("{env}/{annotation} must be a number of milliseconds, got {v:?}"))
        }),
    }
}

/// The container's drain setting ([`DRAIN_ENV`], [`DRAIN_ANNOTATION`]).
pub fn drain_of(ctx: &ContainerContext) -> Result<Option<Duration>, ContainerError> {
    millis_setting(ctx, DRAIN_ENV, DRAIN_ANNOTATION)
}

/// Adds [`HEADER_POD`] (`namespace/name`) to every response of `router`.
pub fn with_pod_header(router: Router, ctx: &ContainerContext) -> Router {
    let pod = format!("{}/{}", ctx.namespace(), ctx.pod_name());
    let value = HeaderValue::from_str(&pod).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    router.layer(axum::middleware::map_response(move |mut response: Response| {
        let value = value.clone();
        async move {
            response.headers_mut().insert(HEADER_POD, value);
            response
        }
    }))
}

/// How long after its deadline a terminating container stops by itself if it was never killed.
const KILL_SAFETY_NET: Duration = Duration::from_secs(2);

/// Resolves when a container should stop: at [`Lifecycle::Killed`], or `drain` after terminating began
/// (but not after the deadline), or shortly after the deadline if no `Killed` came. Also resolves if the
/// node agent dropped the lifecycle sender (nothing will ever stop the container otherwise).
pub async fn until_stopped(mut lifecycle: watch::Receiver<Lifecycle>, drain: Option<Duration>) {
    let mut terminating_since: Option<Instant> = None;
    loop {
        let current = *lifecycle.borrow_and_update();
        match current {
            Lifecycle::Running => {}
            Lifecycle::Killed => return,
            Lifecycle::Terminating { deadline } => {
                let since = *terminating_since.get_or_insert_with(Instant::now);
                // Without a drain the app ignores "SIGTERM": the agent's Killed ends it at the deadline (and
                // reports exit code 137); stopping by itself a little later is only a safety net.
                let end = drain.map_or(deadline + KILL_SAFETY_NET, |d| deadline.min(since + d));
                tokio::select! {
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(end)) => return,
                    changed = lifecycle.changed() => if changed.is_err() { return },
                }
                continue;
            }
        }
        if lifecycle.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `app` on `ports` of the container's bind address until the container should stop (see
/// [`until_stopped`], with the container's drain setting); then closes the listeners and every open
/// connection. Fails at once if a port cannot be bound.
pub async fn serve(ctx: &ContainerContext, ports: &[u16], app: Router) -> Result<(), ContainerError> {
    let ip = ctx.app_bind_ip();
    let mut listeners = Vec::with_capacity(ports.len());
    for port in ports {
        let addr = SocketAddrV4::new(ip, *port);
        let listener =
            TcpListener::bind(addr).await.map_err(|source| ContainerError::Bind { addr: addr.to_string(), source })?;
        listeners.push(listener);
    }
    tracing::debug!(pod = ctx.pod_name(), container = ctx.container.name, %ip, ?ports, "serving HTTP");
    let accepts = listeners.into_iter().map(|listener| {
        Box::pin(futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await;
            Some((accepted, listener))
        }))
    });
    let mut incoming = futures::stream::select_all(accepts);
    let stop = until_stopped(ctx.lifecycle.clone(), drain_of(ctx)?);
    let mut stop = std::pin::pin!(stop);
    // Connections live in this set: dropping it (when the container stops or is dropped) closes them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(accepted) = incoming.next() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, app.clone()));
                }
                Err(err) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
    Ok(())
}

async fn serve_connection(stream: TcpStream, app: Router) {
    let _ = stream.set_nodelay(true);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(err) = builder.serve_connection(TokioIo::new(stream), service).await {
        tracing::trace!(%err, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use super::*;

    fn ctx(
        container: serde_json::Value,
        annotations: serde_json::Value,
    ) -> (ContainerContext, watch::Sender<Lifecycle>) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1", "namespace": "apps", "annotations": annotations },
            "spec": { "containers": [container.clone()] }
        }))
        .expect("pod");
        let container: Container = serde_json::from_value(container).expect("container");
        let (tx, rx) = watch::channel(Lifecycle::Running);
        // A client is required by the context but never used here: point it at nothing.
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        let client = kube::Client::try_from(config).expect("client");
        let ctx = ContainerContext {
            pod: Arc::new(pod),
            container,
            pod_ip: Ipv4Addr::LOCALHOST,
            pod_loopback: Ipv4Addr::LOCALHOST,
            client,
            resolve: Arc::new(|_: &str, _: &str, _: u16| None),
            lifecycle: rx,
        };
        (ctx, tx)
    }

    #[tokio::test]
    async fn settings_come_from_env_then_annotations() {
        let (c, _tx) = ctx(
            serde_json::json!({ "name": "app", "env": [{ "name": "LAB_START_DELAY_MS", "value": "250" }] }),
            serde_json::json!({ "lab.meshshift.io/start-delay-ms": "900", "lab.meshshift.io/drain-ms": "40" }),
        );
        assert_eq!(
            millis_setting(&c, START_DELAY_ENV, START_DELAY_ANNOTATION).expect("ok"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(drain_of(&c).expect("ok"), Some(Duration::from_millis(40)));
        let (c, _tx) =
            ctx(serde_json::json!({ "name": "app" }), serde_json::json!({ "lab.meshshift.io/drain-ms": "x" }));
        assert!(matches!(drain_of(&c), Err(ContainerError::Config(_))));
        assert_eq!(millis_setting(&c, START_DELAY_ENV, START_DELAY_ANNOTATION).expect("ok"), None);
    }

    #[tokio::test]
    async fn stops_when_killed_or_after_the_drain() {
        // Real time: the lifecycle deadline is a std Instant, which paused tokio time does not move.
        let (tx, rx) = watch::channel(Lifecycle::Running);
        let stopped = tokio::spawn(until_stopped(rx.clone(), None));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!stopped.is_finished(), "running containers do not stop");
        let deadline = Instant::now() + Duration::from_millis(800);
        tx.send_replace(Lifecycle::Terminating { deadline });
        let drained = tokio::spawn(until_stopped(rx, Some(Duration::from_millis(200))));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(drained.is_finished(), "the drain ends before the deadline");
        assert!(!stopped.is_finished(), "without a drain, serve until killed");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!stopped.is_finished(), "past the deadline, the agent's Killed is expected first");
        tx.send_replace(Lifecycle::Killed);
        tokio::time::timeout(Duration::from_secs(1), stopped).await.expect("stopped when killed").expect("join");
        let (_tx, rx) = watch::channel(Lifecycle::Terminating { deadline: Instant::now() });
        let orphan = tokio::time::timeout(KILL_SAFETY_NET + Duration::from_secs(1), until_stopped(rx, None)).await;
        assert!(orphan.is_ok(), "a container never killed stops by itself shortly after its deadline");
    }

    #[tokio::test]
    async fn serves_every_path_with_the_pod_header_until_killed() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (c, tx) =
            ctx(serde_json::json!({ "name": "app", "ports": [{ "containerPort": port }] }), serde_json::json!({}));
        let server = tokio::spawn(GenericHttp.start(c));
        let url = format!("http://127.0.0.1:{port}/any/path");
        let mut answer = None;
        for _ in 0..50 {
            if let Ok(r) = get(&url).await {
                answer = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, pod, body) = answer.expect("the server answers");
        assert_eq!(status, 200);
        assert_eq!(pod.as_deref(), Some("apps/web-1"));
        assert!(body.contains("GET /any/path"), "{body}");
        // Terminating: still serving.
        tx.send_replace(Lifecycle::Terminating { deadline: Instant::now() + Duration::from_secs(60) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get(&url).await.expect("still serving").0, 200);
        tx.send_replace(Lifecycle::Killed);
        server.await.expect("join").expect("clean exit");
        assert!(get(&url).await.is_err(), "the port is closed once killed");
    }

    async fn get(url: &str) -> Result<(u16, Option<String>, String), String> {
        use http_body_util::BodyExt;
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let response = client.get(url.parse().map_err(|e| format!("{e}"))?).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let pod = response.headers().get(HEADER_POD).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, pod, String::from_utf8_lossy(&body).into_owned()))
    }
}
