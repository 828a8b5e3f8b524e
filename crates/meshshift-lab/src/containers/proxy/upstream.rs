//! Sending a request on to an upstream (the app behind a sidecar, or a gateway route's Service) over a
//! pooled HTTP/1.1 client.
//!
//! Why pooled: Envoy keeps upstream connections alive, and what an upgrade does to such long-lived
//! connections (a draining pod answering `Connection: close`, a pod going away under an idle connection)
//! is part of what the lab must show. hyper-util's pool drops connections the upstream closed and re-sends
//! a request that never reached a connection closed under it; on top of that, connection failures are
//! retried like Istio's default retry policy (`connect-failure`, 2 attempts, 25 ms back-off), which is why
//! request bodies are buffered.

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

    /// Sends `outgoing` to `addr`, retrying connection failures `retries` times; `timeout` bounds the
    /// whole exchange up to the response head.
    pub async fn send(
        &self,
        addr: SocketAddr,
        outgoing: &Outgoing<'_>,
        retries: u32,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let attempt = async {
            let mut tries = 0;
            loop {
                let request = build_request(addr, outgoing)?;
                match self.client.request(request).await {
                    Ok(response) => return Ok(strip_hop_by_hop(response)),
                    Err(source) if source.is_connect() && tries < retries => {
                        tries += 1;
                        tracing::debug!(%addr, error = %source, tries, "upstream connect failed, retrying");
                        tokio::time::sleep(RETRY_BACKOFF * tries).await;
                    }
                    Err(source) => return Err(UpstreamError::Send { addr, source }),
                }
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
