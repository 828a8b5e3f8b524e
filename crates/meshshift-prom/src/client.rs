//! One instant query on one HTTP/1.1 connection.
//!
//! Where it may go: only loopback (a Prometheus on this machine, or port-forwarded to it, or the lab's
//! forwarded port) and the lab's own ranges (from inside the lab's network namespace). Hosts must be IP
//! literals or `localhost`, so no name can resolve somewhere unexpected, and redirects are not followed.
//! Plain HTTP only: the lab's Prometheus serves plain HTTP, and a TLS Prometheus is reached through a
//! `kubectl port-forward` to loopback.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::PromError;
use crate::response::{Sample, parse_response};

/// How long [`query`] waits for a complete answer (connection included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The lab's address ranges, as `(network, prefix length)`: pods (10.244.0.0/16), services (10.96.0.0/16)
/// and load balancers (10.250.0.0/24), as `meshshift_lab::netns` defines them.
pub const LAB_RANGES: [(Ipv4Addr, u8); 3] =
    [(Ipv4Addr::new(10, 244, 0, 0), 16), (Ipv4Addr::new(10, 96, 0, 0), 16), (Ipv4Addr::new(10, 250, 0, 0), 24)];

/// Answers larger than this are refused (a gate's queries return a handful of series).
const MAX_BODY: usize = 16 << 20;

/// Whether `host` (without brackets) may be queried: `localhost`, an IP literal in 127.0.0.0/8, `::1`, or
/// an address in one of the [`LAB_RANGES`] (IPv4-mapped IPv6 forms too).
pub fn is_allowed_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => {
            v4.is_loopback()
                || LAB_RANGES.iter().any(|(net, len)| {
                    let mask = u32::MAX << (32 - u32::from(*len));
                    u32::from(v4) & mask == u32::from(*net) & mask
                })
        }
        Ok(IpAddr::V6(v6)) => v6.is_loopback(),
        Err(_) => false,
    }
}

/// A validated Prometheus base URL: `http://HOST[:PORT][/PREFIX]` (port 80 by default, `PREFIX` for a
/// Prometheus run with `--web.route-prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    host: String,
    port: u16,
    authority: String,
    prefix: String,
}

impl Endpoint {
    /// Parses and checks `base_url` (see [`is_allowed_host`]).
    pub fn parse(base_url: &str) -> Result<Self, PromError> {
        let invalid = |reason: &str| PromError::InvalidUrl { url: base_url.to_owned(), reason: reason.to_owned() };
        let uri: Uri = base_url.parse().map_err(|e| invalid(&format!("not a URL ({e})")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported: query a plain-HTTP Prometheus (the lab's), or port-forward to loopback",
                ));
            }
            Some(other) => return Err(invalid(&format!("unsupported scheme {other:?} (use http://)"))),
            None => return Err(invalid("missing scheme (use http://HOST:PORT)")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information in URLs is not supported"));
        }
        if uri.query().is_some() {
            return Err(invalid("a base URL has no query string"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        if !is_allowed_host(&host) {
            return Err(PromError::NotAllowed { url: base_url.to_owned(), host });
        }
        Ok(Self {
            url: base_url.to_owned(),
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request target of an instant query of `promql`: `<prefix>/api/v1/query?query=<encoded>`.
    pub fn query_path(&self, promql: &str) -> String {
        format!("{}/api/v1/query?query={}", self.prefix, form_encode(promql))
    }
}

/// Runs the instant query `promql` against the Prometheus at `base_url` (e.g. `http://127.0.0.1:9090`),
/// evaluated now, with the [`DEFAULT_TIMEOUT`]. Returns one sample per series of a vector result, one
/// label-less sample for a scalar.
pub async fn query(base_url: &str, promql: &str) -> Result<Vec<Sample>, PromError> {
    query_with_timeout(base_url, promql, DEFAULT_TIMEOUT).await
}

/// [`query`] with an explicit timeout for the whole exchange.
pub async fn query_with_timeout(base_url: &str, promql: &str, timeout: Duration) -> Result<Vec<Sample>, PromError> {
    let endpoint = Endpoint::parse(base_url)?;
    let path = endpoint.query_path(promql);
    let (status, body) = tokio::time::timeout(timeout, exchange(&endpoint, &path))
        .await
        .map_err(|_| PromError::Timeout { url: endpoint.url.clone(), timeout })??;
    parse_response(status, &body).map_err(|err| match err {
        PromError::Status { status, body, .. } => PromError::Status { url: endpoint.url.clone(), status, body },
        other => other,
    })
}

/// One GET on a fresh connection; the status and the whole body.
async fn exchange(endpoint: &Endpoint, path: &str) -> Result<(u16, Bytes), PromError> {
    let url = || endpoint.url.clone();
    let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| PromError::Connect { url: url(), source })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        http1::handshake(TokioIo::new(stream)).await.map_err(|e| PromError::Http { url: url(), detail: chain(&e) })?;
    let driver = tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(%err, "Prometheus connection ended with an error");
        }
    });
    let request = Request::get(path)
        .header(header::HOST, endpoint.authority.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, concat!("meshshift-prom/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| PromError::InvalidUrl { url: url(), reason: format!("cannot build the request: {e}") })?;
    let result = async {
        let response =
            sender.send_request(request).await.map_err(|e| PromError::Http { url: url(), detail: chain(&e) })?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
            return Err(PromError::Status {
                url: url(),
                status,
                body: format!("redirect to {location:?} not followed"),
            });
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| PromError::Http { url: url(), detail: format!("reading the body: {e}") })?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    drop(sender);
    driver.abort();
    result
}

/// An error with its causes, `a: b: c`.
fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of a query parameter value (unreserved characters kept,
/// everything else percent-encoded, so `+`, `=`, `&`, `{`, `"` and spaces survive intact).
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(byte)),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_lab_hosts_are_allowed() {
        for ok in [
            "localhost",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
            "10.244.0.7",
            "10.244.255.254",
            "10.96.0.10",
            "10.250.0.3",
        ] {
            assert!(is_allowed_host(ok), "{ok}");
        }
        for refused in [
            "prometheus.example.com",
            "8.8.8.8",
            "10.0.0.1",
            "10.245.0.1",
            "10.97.0.1",
            "10.250.1.1",
            "192.168.1.10",
            "172.16.0.1",
            "0.0.0.0",
            "::",
            "2001:db8::1",
        ] {
            assert!(!is_allowed_host(refused), "{refused}");
        }
    }

    #[test]
    fn endpoints_parse_with_prefixes_and_refuse_the_rest() {
        let e = Endpoint::parse("http://127.0.0.1:9090").expect("parse");
        assert_eq!((e.host.as_str(), e.port, e.prefix.as_str()), ("127.0.0.1", 9090, ""));
        assert_eq!(e.query_path("up"), "/api/v1/query?query=up");
        let e = Endpoint::parse("http://[::1]:9090/prom/").expect("parse");
        assert_eq!((e.host.as_str(), e.authority.as_str(), e.prefix.as_str()), ("::1", "[::1]:9090", "/prom"));
        assert_eq!(e.query_path("up"), "/prom/api/v1/query?query=up");
        assert_eq!(Endpoint::parse("http://localhost").expect("parse").port, 80);

        let err = Endpoint::parse("http://prometheus.monitoring:9090").expect_err("a name");
        assert!(matches!(&err, PromError::NotAllowed { host, .. } if host == "prometheus.monitoring"), "{err}");
        assert!(err.to_string().contains("refusing to query"), "{err}");
        assert!(matches!(Endpoint::parse("http://192.168.0.2:9090"), Err(PromError::NotAllowed { .. })));
        for invalid in [
            "https://127.0.0.1:9090",
            "127.0.0.1:9090",
            "ftp://127.0.0.1",
            "http://u:p@127.0.0.1",
            "http://127.0.0.1/?a=b",
            "::",
        ] {
            assert!(matches!(Endpoint::parse(invalid), Err(PromError::InvalidUrl { .. })), "{invalid}");
        }
    }

    #[test]
    fn promql_is_form_encoded() {
        assert_eq!(
            form_encode(r#"sum(rate(istio_requests_total{response_code=~"5.."}[30s]))"#),
            "sum%28rate%28istio_requests_total%7Bresponse_code%3D~%225..%22%7D%5B30s%5D%29%29"
        );
        assert_eq!(form_encode("a + b & c"), "a%20%2B%20b%20%26%20c");
    }
}
