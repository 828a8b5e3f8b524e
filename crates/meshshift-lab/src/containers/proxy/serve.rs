//! Serving HTTP/1.1 on a listener, with the drain behaviour of an Envoy listener.
//!
//! Why one place: every listener of the proxy (router ports, sidecar inbound ports, readiness, stats) is
//! the same accept loop; data-plane listeners additionally count their connections (for
//! `EXIT_ON_ZERO_ACTIVE_CONNECTIONS` and the stats), answer `Connection: close` while the proxy drains so
//! that keep-alive clients move to another endpoint, and on `stop` close the listening socket and shut
//! their connections down gracefully (idle ones at once, busy ones after the response in flight).
//! HTTP/2 (the legacy chart names port 80 `http2`) is not served: the lab's clients speak HTTP/1.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::state::ProxyState;
use crate::containers::ContainerError;

/// Response bodies: upstream bodies stream through, local answers are buffered.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A request handler.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// A local answer with a text body.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Binds a listening socket.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ContainerError> {
    TcpListener::bind(addr).await.map_err(|source| ContainerError::Bind { addr: addr.to_string(), source })
}

/// Whether a listener carries application traffic (drains, counts connections) or is one of the proxy's
/// own endpoints (readiness, stats).
#[derive(Debug, Clone)]
pub enum Role {
    /// Application traffic; `stop` turning true closes the listener and its connections.
    DataPlane {
        /// Set when the drain is over.
        stop: watch::Receiver<bool>,
    },
    /// The proxy's own endpoints: serve until the container ends.
    Admin,
}

/// Serves `listener` until stopped (data plane) or forever (admin). Returns once the listening socket is
/// closed and every connection has finished.
pub async fn serve(listener: TcpListener, handler: Handler, state: Arc<ProxyState>, role: Role) {
    let mut stop = match &role {
        Role::DataPlane { stop } => Some(stop.clone()),
        Role::Admin => None,
    };
    let data_plane = stop.is_some();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(connection(stream, handler.clone(), state.clone(), data_plane, stop.clone()));
                }
                Err(err) => {
                    // EMFILE and the like: back off a little instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves when `stop` turns true; never for admin listeners (or when the sender is gone: the container
/// is being dropped, which aborts this task anyway).
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = stop
        && rx.wait_for(|s| *s).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

async fn connection(
    stream: TcpStream,
    handler: Handler,
    state: Arc<ProxyState>,
    data_plane: bool,
    mut stop: Option<watch::Receiver<bool>>,
) {
    let _ = stream.set_nodelay(true);
    let _guard = data_plane.then(|| state.stats.connection_opened());
    let service_state = state.clone();
    let service = service_fn(move |request| {
        let handler = handler.clone();
        let state = service_state.clone();
        async move {
            let mut response = handler(request).await;
            if data_plane && state.draining() {
                // Envoy's drain for HTTP/1: finish this request, then close, so the client reconnects
                // (to an endpoint that is not draining).
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let conn =
        http1::Builder::new().timer(TokioTimer::new()).keep_alive(true).serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%err, "connection ended with an error");
    }
}
