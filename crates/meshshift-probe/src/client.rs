//! HTTP/1.1 requests on connections a worker owns.
//!
//! Each worker keeps one connection per host and sends one request at a time on it, so the number of
//! connections is exactly bounded by the number of workers (a pooled client may open extra connections in
//! races, and hides which request went on which connection). A failed or timed-out connection is dropped
//! and the next request connects afresh; a response with `Connection: close` retires its connection too.
//! Requests are never retried: a retry would hide the very failures the prober is there to see. Errors are
//! classified by phase (connecting or exchanging) and by the underlying I/O error.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::ProbeError;
use crate::record::{ErrorKind, headers};
use crate::target::Target;

/// The request headers for one target: defaults (`Host`, `User-Agent`) overridden by the user's.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    headers: HeaderMap,
}

impl RequestTemplate {
    /// Builds the headers for `target`; `extra` are validated `(name, value)` pairs.
    pub(crate) fn new(target: &Target, extra: &[(String, String)]) -> Result<Self, ProbeError> {
        let invalid = |name: &str, value: &str| ProbeError::InvalidHeader {
            input: format!("{name}:{value}"),
            reason: "not a valid header".to_owned(),
        };
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_str(target.authority()).map_err(|_| invalid("host", target.authority()))?;
        headers.insert(header::HOST, host);
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("meshshift-probe/", env!("CARGO_PKG_VERSION"))),
        );
        let mut replaced: Vec<HeaderName> = Vec::new();
        for (name, value) in extra {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid(name, value))?;
            let v = HeaderValue::from_str(value).map_err(|_| invalid(name, value))?;
            // The first use of a name replaces any default; later ones add values.
            if replaced.contains(&n) {
                headers.append(n, v);
            } else {
                headers.insert(n.clone(), v);
                replaced.push(n);
            }
        }
        Ok(Self { headers })
    }
}

/// The response headers a record keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    pub revision: Option<String>,
    pub version: Option<String>,
    pub proxy: Option<String>,
    pub pod: Option<String>,
    pub upstream_revision: Option<String>,
    pub upstream_version: Option<String>,
    pub upstream_pod: Option<String>,
    pub server: Option<String>,
}

impl Answer {
    fn from_headers(h: &HeaderMap) -> Self {
        let get = |name: &str| h.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Self {
            revision: get(headers::REVISION),
            version: get(headers::VERSION),
            proxy: get(headers::PROXY),
            pod: get(headers::POD),
            upstream_revision: get(headers::UPSTREAM_REVISION),
            upstream_version: get(headers::UPSTREAM_VERSION),
            upstream_pod: get(headers::UPSTREAM_POD),
            server: get(headers::SERVER),
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exchange {
    /// The response status, if a response head arrived.
    pub status: Option<u16>,
    /// Who answered.
    pub answer: Answer,
    /// Why there is no complete response.
    pub error: Option<(ErrorKind, String)>,
    /// Sent on a connection that had served before.
    pub reused: bool,
}

/// Where a request was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Exchange,
}

/// One worker's connections, one per host:port.
#[derive(Default)]
pub(crate) struct Connections {
    conns: HashMap<(String, u16), SendRequest<Empty<Bytes>>>,
}

impl Connections {
    /// Sends a GET to `target` and reads the whole response, within `timeout` (connecting included).
    pub(crate) async fn send(&mut self, target: &Target, template: &RequestTemplate, timeout: Duration) -> Exchange {
        let key = (target.host().to_owned(), target.port());
        let mut phase = Phase::Connect;
        let mut ex = Exchange::default();
        let outcome = tokio::time::timeout(timeout, self.exchange(&key, target, template, &mut phase, &mut ex)).await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(match phase {
                Phase::Connect => (ErrorKind::ConnectTimeout, format!("no connection within {timeout:?}")),
                Phase::Exchange => (ErrorKind::Timeout, format!("no complete response within {timeout:?}")),
            }),
        };
        if error.is_some() {
            // Whatever state the connection is in, it cannot carry another request reliably.
            self.conns.remove(&key);
        }
        ex.error = error;
        ex
    }

    async fn exchange(
        &mut self,
        key: &(String, u16),
        target: &Target,
        template: &RequestTemplate,
        phase: &mut Phase,
        ex: &mut Exchange,
    ) -> Result<(), (ErrorKind, String)> {
        let mut reusable = None;
        if let Some(mut s) = self.conns.remove(key)
            && !s.is_closed()
            && s.ready().await.is_ok()
        {
            reusable = Some(s);
        }
        let mut sender = match reusable {
            Some(s) => {
                ex.reused = true;
                s
            }
            None => connect(target).await?,
        };
        *phase = Phase::Exchange;
        let mut request = Request::get(target.path())
            .body(Empty::<Bytes>::new())
            .map_err(|e| (ErrorKind::Other, format!("cannot build the request: {e}")))?;
        *request.headers_mut() = template.headers.clone();
        let response: Response<_> = sender.send_request(request).await.map_err(|e| classify_hyper(&e))?;
        ex.status = Some(response.status().as_u16());
        ex.answer = Answer::from_headers(response.headers());
        let close = wants_close(response.headers());
        response.into_body().collect().await.map_err(|e| classify_hyper(&e))?;
        if !close {
            self.conns.insert(key.clone(), sender);
        }
        Ok(())
    }
}

/// Whether the server said it closes the connection after this response.
fn wants_close(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Opens a connection and runs its HTTP/1 driver in a task that ends when the sender is dropped.
async fn connect(target: &Target) -> Result<SendRequest<Empty<Bytes>>, (ErrorKind, String)> {
    let stream = TcpStream::connect((target.host(), target.port()))
        .await
        .map_err(|e| (classify_connect(&e), format!("connecting to {}:{}: {e}", target.host(), target.port())))?;
    // Small requests: do not let Nagle's algorithm add latency that is not the server's.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| classify_hyper(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "probe connection ended with an error");
        }
    });
    Ok(sender)
}

/// A connect error's kind.
fn classify_connect(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
        _ => ErrorKind::Connect,
    }
}

/// An I/O error's kind, during an exchange.
fn classify_io(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            ErrorKind::Reset
        }
        io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    }
}

/// A hyper error's kind and message (with its causes): the I/O cause decides when there is one.
fn classify_hyper(e: &hyper::Error) -> (ErrorKind, String) {
    let mut detail = e.to_string();
    let mut io_kind = None;
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        if let Some(io) = s.downcast_ref::<io::Error>() {
            io_kind.get_or_insert(classify_io(io));
        }
        source = s.source();
    }
    let kind = match io_kind {
        Some(k) if k != ErrorKind::Other => k,
        _ if e.is_incomplete_message() || e.is_canceled() || e.is_closed() => ErrorKind::Closed,
        _ if e.is_parse() || e.is_parse_status() => ErrorKind::Protocol,
        _ if e.is_timeout() => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    };
    (kind, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        let e = |k| io::Error::new(k, "x");
        assert_eq!(classify_connect(&e(io::ErrorKind::ConnectionRefused)), ErrorKind::ConnectRefused);
        assert_eq!(classify_connect(&e(io::ErrorKind::TimedOut)), ErrorKind::ConnectTimeout);
        assert_eq!(classify_connect(&e(io::ErrorKind::AddrNotAvailable)), ErrorKind::Connect);
        assert_eq!(classify_io(&e(io::ErrorKind::ConnectionReset)), ErrorKind::Reset);
        assert_eq!(classify_io(&e(io::ErrorKind::BrokenPipe)), ErrorKind::Reset);
        assert_eq!(classify_io(&e(io::ErrorKind::UnexpectedEof)), ErrorKind::Closed);
    }

    #[test]
    fn user_headers_replace_defaults_then_add() {
        let t = Target::parse("http://127.0.0.1:8080/").unwrap();
        let extra = vec![
            ("Host".to_owned(), "bookinfo.example".to_owned()),
            ("x-a".to_owned(), "1".to_owned()),
            ("x-a".to_owned(), "2".to_owned()),
        ];
        let tpl = RequestTemplate::new(&t, &extra).unwrap();
        assert_eq!(tpl.headers[header::HOST], "bookinfo.example");
        assert_eq!(tpl.headers.get_all("x-a").iter().count(), 2);
        assert!(tpl.headers[header::USER_AGENT].to_str().unwrap().starts_with("meshshift-probe/"));
        let tpl = RequestTemplate::new(&t, &[]).unwrap();
        assert_eq!(tpl.headers[header::HOST], "127.0.0.1:8080");
    }

    #[test]
    fn connection_close_is_detected() {
        let mut h = HeaderMap::new();
        assert!(!wants_close(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Close"));
        assert!(wants_close(&h));
    }
}
