//! The accept loop shared by istiod's HTTP(S) ports (webhooks on 15017, readiness on 8080, metrics on
//! 15014): HTTP/1.1 and HTTP/2 (the apiserver negotiates h2 over TLS), a synchronous handler per request.
//!
//! Connections live in a `JoinSet` owned by the loop: when the container's task set is dropped, every
//! connection goes with it, so nothing outlives the emulated process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Largest request body accepted (an AdmissionReview of a big pod is well below).
const MAX_BODY: usize = 8 << 20;
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A `text/plain` reply.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: body.into().into_bytes() }
    }

    /// An `application/json` 200 reply.
    pub fn json(value: &serde_json::Value) -> Reply {
        Reply { status: StatusCode::OK, content_type: "application/json", body: value.to_string().into_bytes() }
    }
}

/// Answers one request: method, path (no query), body.
pub type Handler = Arc<dyn Fn(&Method, &str, Bytes) -> Reply + Send + Sync>;

/// Serves `listener` until `stop`, then stops accepting and lets open connections finish.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, handler: Handler, stop: CancellationToken) {
    let local = listener.local_addr().ok();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(stream, peer, tls.clone(), handler.clone()));
                }
                Err(err) => {
                    tracing::warn!(?local, %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    tracing::debug!(?local, "no longer accepting connections");
    while connections.join_next().await.is_some() {}
}

async fn connection(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, handler: Handler) {
    let service = service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(respond(request, handler).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let result = match tls {
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => builder.serve_connection(TokioIo::new(stream), service).await,
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        None => builder.serve_connection(TokioIo::new(stream), service).await,
    };
    if let Err(err) = result {
        tracing::debug!(%peer, %err, "connection ended with an error");
    }
}

async fn respond(request: Request<Incoming>, handler: Handler) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let reply = match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => handler(&parts.method, parts.uri.path(), body.to_bytes()),
        Err(err) => Reply::text(StatusCode::BAD_REQUEST, format!("unreadable body: {err}\n")),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    response
}
