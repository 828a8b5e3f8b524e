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
use hyper_util::rt::TokioIo;
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
    // No idle timeout on the server side, as Envoy's listeners (its HTTP idle timeout is an hour): hyper's
    // default `header_read_timeout` (30 s, once a timer is set) also closes a kept-alive connection idle
    // that long, and a client pool (a gateway's, whose idle timeout is 60 s) that picks such a connection
    // just as it closes fails the request (`SendRequest`). That race made the lab answer a rare 503 no
    // Envoy would. Idle connections are closed by their client.
    let conn = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::containers::protocol::ProxyKind;
    use crate::containers::proxy::state::ProxyIdentity;

    async fn exchange(stream: &mut TcpStream) -> String {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Time is paused: the hour of idleness passes at once, with real sockets.
    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_is_not_closed_for_being_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let identity = ProxyIdentity {
            kind: ProxyKind::Sidecar,
            version: "1.10.6".into(),
            revision: "1-10-6".into(),
            namespace: "default".into(),
            pod_name: "p".into(),
            workload: "p".into(),
        };
        let handler: Handler = Arc::new(|_| Box::pin(async { text(StatusCode::OK, "ok") }));
        tokio::spawn(serve(listener, handler, ProxyState::new(identity), Role::Admin));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(exchange(&mut stream).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        let second = exchange(&mut stream).await;
        assert!(second.starts_with("HTTP/1.1 200"), "the same connection serves after an idle hour: {second:?}");
    }
}
