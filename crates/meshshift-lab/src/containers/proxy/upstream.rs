//! Sending a request on to an upstream (the app behind a sidecar, or a gateway route's Service) over a
//! pooled HTTP/1.1 client.
//!
//! Why pooled: Envoy keeps upstream connections alive, and what an upgrade does to such long-lived
//! connections (a draining pod answering `Connection: close`, a pod going away under an idle connection)
//! is part of what the lab must show. hyper-util's pool drops connections the upstream closed and re-sends
//! a request that never reached a connection closed under it; on top of that, requests are retried as the
//! route's policy says (`super::retry`; Istio's default: twice, on a connection failure or a 503, 25 ms
//! back-off growing linearly), which is why request bodies are buffered.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::request::Parts;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::retry::RetryPolicy;

/// Headers that describe one hop's connection and must not be forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Envoy's default connect timeout in Istio.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Base back-off between retries (Envoy's 25 ms).
const RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request could not be rebuilt for the upstream.
    #[error("bad upstream request: {0}")]
    Request(#[from] http::Error),
    /// Connecting or exchanging with the upstream failed.
    #[error("upstream {addr}: {source}")]
    Send {
        /// The upstream.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No response within the route's timeout.
    #[error("upstream {addr}: no response within {timeout:?}")]
    Timeout {
        /// The upstream.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
}

/// A pooled HTTP/1.1 client.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

/// What to send.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The downstream request's head.
    pub parts: &'a Parts,
    /// Its body.
    pub body: Bytes,
    /// Path and query to send.
    pub path_and_query: &'a str,
    /// Host header to send instead of the downstream one.
    pub authority: Option<&'a str>,
}

impl Upstream {
    /// A client with Envoy-like timeouts.
    pub fn new() -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT).build(connector);
        Upstream { client }
    }

    /// Sends `outgoing` to `addr`, trying again as `retry` says (a failure, or a response whose status it
    /// retries, while attempts are left; the last try's response or failure is the answer); `timeout`
    /// bounds all tries together up to the response head, as Envoy's route timeout does.
    pub async fn send(
        &self,
        addr: SocketAddr,
        outgoing: &Outgoing<'_>,
        retry: &RetryPolicy,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let attempt = async {
            let mut tries = 0;
            loop {
                let request = build_request(addr, outgoing)?;
                let why = match self.client.request(request).await {
                    Ok(response) if tries < retry.attempts && retry.retries_status(response.status().as_u16()) => {
                        // Dropped unread: the pool does not reuse its connection.
                        format!("status {}", response.status())
                    }
                    Ok(response) => return Ok(strip_hop_by_hop(response)),
                    Err(source) if tries < retry.attempts && retry.retries_failure(source.is_connect()) => {
                        source.to_string()
                    }
                    Err(source) => return Err(UpstreamError::Send { addr, source }),
                };
                tries += 1;
                tracing::debug!(%addr, why, tries, "upstream try failed, retrying");
                tokio::time::sleep(RETRY_BACKOFF * tries).await;
            }
        };
        match timeout {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .map_err(|_| UpstreamError::Timeout { addr, timeout: limit })?,
            None => attempt.await,
        }
    }
}

fn build_request(addr: SocketAddr, outgoing: &Outgoing<'_>) -> Result<Request<Full<Bytes>>, http::Error> {
    let uri: Uri = format!("http://{addr}{}", outgoing.path_and_query).parse()?;
    let mut builder = Request::builder().method(outgoing.parts.method.clone()).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        for (name, value) in &outgoing.parts.headers {
            if !HOP_BY_HOP.contains(name) && name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(authority) = outgoing.authority {
            headers.insert(header::HOST, header::HeaderValue::from_str(authority).map_err(http::Error::from)?);
        }
    }
    builder.body(Full::new(outgoing.body.clone()))
}

/// An upstream's `Connection: close` concerns that connection only: it must not close the client's.
fn strip_hop_by_hop<B>(mut response: Response<B>) -> Response<B> {
    for name in &HOP_BY_HOP {
        response.headers_mut().remove(name);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::StatusCode;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::net::TcpListener;

    use super::*;

    /// A server whose first `failing` requests get `status`, the rest 200; counts requests.
    async fn server(failing: usize, status: StatusCode) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let code = if n < failing { status } else { StatusCode::OK };
                        async move {
                            Ok::<_, Infallible>(Response::builder().status(code).body(Full::new(Bytes::new())).unwrap())
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        (addr, seen)
    }

    async fn send(addr: SocketAddr, retry: &RetryPolicy) -> Result<StatusCode, String> {
        let (parts, _) = Request::get("/").body(()).unwrap().into_parts();
        let outgoing = Outgoing { parts: &parts, body: Bytes::new(), path_and_query: "/", authority: None };
        Upstream::new()
            .send(addr, &outgoing, retry, Some(Duration::from_secs(5)))
            .await
            .map(|r| r.status())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn istios_default_retries_an_upstream_503_twice() {
        let (addr, seen) = server(2, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(send(addr, &RetryPolicy::istio_default()).await, Ok(StatusCode::OK));
        assert_eq!(seen.load(Ordering::SeqCst), 3, "two retries");
        // Three 503s in a row: the last one is the answer.
        let (addr, seen) = server(3, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(send(addr, &RetryPolicy::istio_default()).await, Ok(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn other_statuses_and_disabled_retries_pass_through() {
        let (addr, seen) = server(1, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert_eq!(send(addr, &RetryPolicy::istio_default()).await, Ok(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(seen.load(Ordering::SeqCst), 1, "a 500 is not retried by default");
        let (addr, seen) = server(1, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(send(addr, &RetryPolicy::NONE).await, Ok(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        let five_xx = RetryPolicy::from_rule(Some(&json!({"attempts": 1, "retryOn": "5xx"})));
        let (addr, seen) = server(1, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert_eq!(send(addr, &five_xx).await, Ok(StatusCode::OK));
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_failures_are_retried_then_reported() {
        // A port nothing listens on: refused, retried twice, then the failure.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let started = tokio::time::Instant::now();
        let err = send(closed, &RetryPolicy::istio_default()).await.unwrap_err();
        assert!(err.contains(&closed.to_string()), "{err}");
        assert!(started.elapsed() >= RETRY_BACKOFF * 3, "waited 25 ms, then 50 ms, between the tries");
    }
}
