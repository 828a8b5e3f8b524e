//! HTTP/1.1 requests on connections a worker owns, written and parsed by hand.
//!
//! Each worker keeps one connection per host and sends one request at a time on it, so the number of
//! connections is exactly bounded by the number of workers (a pooled client may open extra connections in
//! races, and hides which request went on which connection). A failed or timed-out connection is dropped
//! and the next request connects afresh; a response with `Connection: close` (or an HTTP/1.0 response
//! without keep-alive, or a body delimited by the end of the connection) retires its connection too.
//! Requests are never retried: a retry would hide the very failures the prober is there to see. Errors are
//! classified by phase (connecting or exchanging) and by the underlying I/O error.
//!
//! # Why not hyper
//!
//! Until this module replaced it, the prober used hyper 1's client connection API. In the benchmark of
//! docs/benchmarks.md ("Prober vs wrk and oha": `crates/meshshift/benches/prober_vs_wrk_oha.sh`, a one-thread
//! local server on one core, the load generator pinned to the other, 16 connections) it kept at most 94,900
//! requests/s against wrk's 143,038 (0.66x), at 10.9 µs of CPU per request against wrk's 6.9 µs; `perf` put
//! about 15% of its time in hyper's per-connection task (a second task per connection, with a channel hop
//! and a wake-up each way per request) and about 10% in the prober's own bookkeeping. Yet the prober only
//! ever sends a `GET` without a body, whose head never changes for a target, and reads one response at a
//! time: all the HTTP/1.1 it needs is one pre-serialized write, [`httparse`] (the parser hyper itself uses)
//! for the response head, and the three ways a body can end (Content-Length, chunked, the connection
//! closing). Done in the worker's own task on a plain [`TcpStream`], that is one `send` and usually one
//! `recv` per request and no other task. Measured again on the same 2-core machine (one repetition each,
//! 16 connections): hyper 87,100 requests/s kept, 10.9 µs per request, wrk 144,013/s in the same run
//! (0.60x); this module 143,800/s at 7.5 µs, wrk 144,405/s (1.00x, the server's core then at 89%), and
//! 136,500/s at 7.7 µs against wrk's 145,527/s with 64 connections (0.94x). About 80% of what is left is
//! the kernel's TCP work, as for wrk.
//!
//! What it does not do, because the prober never needs it: request bodies, pipelining, `Expect`,
//! upgrades (a `101` is a protocol error), HTTP/2, TLS.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::ProbeError;
use crate::record::{ErrorKind, is_success_status};
use crate::response::{Answer, Body, Head, MAX_LINE, parse_head, reason};
use crate::target::Target;

/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Free space made in the read buffer before each read.
const READ_SPACE: usize = 8 * 1024;

/// The request for one target, serialized once: `GET` with its path, the default headers (`Host`,
/// `User-Agent`) overridden by the user's, and no body.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    request: Box<[u8]>,
}

impl RequestTemplate {
    /// Builds the request for `target`; `extra` are validated `(name, value)` pairs.
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
        // As hyper writes it: the request line, then the headers in the map's order, names in lower case.
        let mut request = Vec::with_capacity(256);
        request.extend_from_slice(b"GET ");
        request.extend_from_slice(target.path().as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &headers {
            request.extend_from_slice(name.as_str().as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        Ok(Self { request: request.into_boxed_slice() })
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
    /// For a failing status, what the body says of the failure (`response::reason`).
    pub reason: Option<String>,
}

/// Where a request was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Exchange,
}

/// An open connection that has served a request and may serve another.
struct Conn {
    host: String,
    port: u16,
    stream: TcpStream,
}

/// One worker's connections (one per host:port), its read buffer and its request timer.
pub(crate) struct Connections {
    conns: Vec<Conn>,
    buf: Vec<u8>,
    /// Reset for every request rather than made anew: moving a pending timer's deadline later is one atomic
    /// operation, arming and cancelling one takes the timer wheel's lock twice.
    timer: Pin<Box<Sleep>>,
}

impl Connections {
    /// No connection yet. Must be called inside a Tokio runtime (the timer needs one).
    pub(crate) fn new() -> Self {
        Self {
            conns: Vec::new(),
            buf: Vec::with_capacity(READ_SPACE),
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
        }
    }

    /// Sends a GET to `target` and reads the whole response, within `timeout` (connecting included).
    pub(crate) async fn send(&mut self, target: &Target, template: &RequestTemplate, timeout: Duration) -> Exchange {
        self.timer.as_mut().reset(Instant::now() + timeout);
        // Taken out while in use: whatever goes wrong, a connection only comes back after a clean exchange.
        let conn = self
            .conns
            .iter()
            .position(|c| c.port == target.port() && c.host == target.host())
            .map(|i| self.conns.swap_remove(i));
        let mut phase = Phase::Connect;
        let mut ex = Exchange::default();
        let outcome = tokio::select! {
            biased;
            r = exchange(conn, &mut self.buf, target, template, &mut phase, &mut ex) => r,
            () = self.timer.as_mut() => Err(match phase {
                Phase::Connect => (ErrorKind::ConnectTimeout, format!("no connection within {timeout:?}")),
                Phase::Exchange => (ErrorKind::Timeout, format!("no complete response within {timeout:?}")),
            }),
        };
        match outcome {
            Ok(Some(conn)) => self.conns.push(conn),
            Ok(None) => {}
            Err(e) => ex.error = Some(e),
        }
        ex
    }
}

/// Sends the request on `conn` (or a new connection) and reads the response. Returns the connection if it
/// can carry another request.
async fn exchange(
    conn: Option<Conn>,
    buf: &mut Vec<u8>,
    target: &Target,
    template: &RequestTemplate,
    phase: &mut Phase,
    ex: &mut Exchange,
) -> Result<Option<Conn>, (ErrorKind, String)> {
    // A connection the server closed while it was idle is not used: hyper's connection task notices the
    // close and a new connection is made, and so does this (from the readiness the reactor already has, no
    // system call). A close that crosses the request fails it, as `closed` (or `reset`), as with hyper.
    let mut conn = match conn.filter(|c| !peer_closed(&c.stream)) {
        Some(c) => {
            ex.reused = true;
            c
        }
        None => connect(target).await?,
    };
    *phase = Phase::Exchange;
    conn.stream
        .write_all(&template.request)
        .await
        .map_err(|e| (classify_io(&e), format!("sending the request: {e}")))?;
    let reusable = read_response(&mut conn.stream, buf, ex).await?;
    Ok(reusable.then_some(conn))
}

/// Opens a connection.
async fn connect(target: &Target) -> Result<Conn, (ErrorKind, String)> {
    let stream = TcpStream::connect((target.host(), target.port()))
        .await
        .map_err(|e| (classify_connect(&e), format!("connecting to {}:{}: {e}", target.host(), target.port())))?;
    // Small requests: do not let Nagle's algorithm add latency that is not the server's.
    let _ = stream.set_nodelay(true);
    Ok(Conn { host: target.host().to_owned(), port: target.port(), stream })
}

/// Whether the reactor has seen the peer close (or break) an idle connection. Polls the readiness once,
/// without waiting and without a system call.
fn peer_closed(stream: &TcpStream) -> bool {
    let ready = pin!(stream.ready(Interest::READABLE));
    match ready.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(r)) => r.is_read_closed(),
        Poll::Ready(Err(_)) => true,
        Poll::Pending => false,
    }
}

/// Reads one response on `io` into `buf`, setting the status and answer in `ex` as soon as the head has
/// arrived. Returns whether the connection can carry another request.
async fn read_response<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    ex: &mut Exchange,
) -> Result<bool, (ErrorKind, String)> {
    buf.clear();
    let protocol = |e: String| (ErrorKind::Protocol, e);
    // The head, after any informational (1xx) responses.
    let mut answer = Answer::default();
    let (mut pos, mut body, close, mut excerpt) = loop {
        match parse_head(buf, &mut answer).map_err(protocol)? {
            Head::Final(head) => {
                ex.status = Some(head.status);
                ex.answer = answer;
                let excerpt = (!is_success_status(head.status)).then(Vec::new);
                break (head.len, head.body, head.close, excerpt);
            }
            Head::Informational(len) => {
                buf.drain(..len);
                continue;
            }
            Head::Partial => {}
        }
        if buf.len() >= MAX_HEAD {
            return Err(protocol(format!("response head larger than {MAX_HEAD} bytes")));
        }
        if fill(io, buf).await? == 0 {
            let detail = if buf.is_empty() && ex.reused {
                "connection closed before message completed (no byte of the response; a reused connection)".to_owned()
            } else if buf.is_empty() {
                "connection closed before message completed (no byte of the response)".to_owned()
            } else {
                format!("connection closed before message completed (in the response head, after {} bytes)", buf.len())
            };
            return Err((ErrorKind::Closed, detail));
        }
    };
    // The body.
    let result = loop {
        pos += body.decode(&buf[pos..], excerpt.as_mut()).map_err(protocol)?;
        if body.is_done() {
            // Bytes after the response were not asked for: the connection is out of step, do not reuse it.
            break Ok(!close && pos == buf.len());
        }
        // What is left is an incomplete line: keep it, at the start of the buffer.
        if pos == buf.len() {
            buf.clear();
        } else {
            buf.drain(..pos);
        }
        pos = 0;
        if buf.len() >= MAX_LINE {
            break Err(protocol(format!("chunk-size or trailer line longer than {MAX_LINE} bytes")));
        }
        match fill(io, buf).await {
            // The end of a close-delimited body: complete, and the connection is spent.
            Ok(0) if body == Body::Eof => break Ok(false),
            Ok(0) => {
                break Err((
                    ErrorKind::Closed,
                    format!("connection closed before message completed ({})", body.missing()),
                ));
            }
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    // Whatever became of the body, what arrived of a failure's reason is kept.
    ex.reason = excerpt.as_deref().and_then(reason);
    result
}

/// Reads what is available (at least one byte, or 0 at the end of the stream) after the end of `buf`.
async fn fill<R: AsyncRead + Unpin>(io: &mut R, buf: &mut Vec<u8>) -> Result<usize, (ErrorKind, String)> {
    buf.reserve(READ_SPACE);
    io.read_buf(buf).await.map_err(|e| (classify_io(&e), format!("reading the response: {e}")))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
    use tokio::net::TcpListener;

    use super::*;
    use crate::response::MAX_HEADERS;

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
    fn the_request_is_serialized_once_with_user_headers_replacing_defaults_then_adding() {
        let t = Target::parse("http://127.0.0.1:8080/productpage?u=1").unwrap();
        let extra = vec![
            ("Host".to_owned(), "bookinfo.example".to_owned()),
            ("x-a".to_owned(), "1".to_owned()),
            ("x-a".to_owned(), "2".to_owned()),
        ];
        let tpl = RequestTemplate::new(&t, &extra).unwrap();
        let ua = concat!("meshshift-probe/", env!("CARGO_PKG_VERSION"));
        assert_eq!(
            String::from_utf8(tpl.request.to_vec()).unwrap(),
            format!(
                "GET /productpage?u=1 HTTP/1.1\r\nhost: bookinfo.example\r\n\
                 user-agent: {ua}\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
            )
        );
        let tpl = RequestTemplate::new(&Target::parse("http://127.0.0.1:8080").unwrap(), &[]).unwrap();
        assert_eq!(
            String::from_utf8(tpl.request.to_vec()).unwrap(),
            format!("GET / HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nuser-agent: {ua}\r\n\r\n")
        );
        let bad = [("x-b".to_owned(), "a\nb".to_owned())];
        assert!(matches!(RequestTemplate::new(&t, &bad), Err(ProbeError::InvalidHeader { .. })));
    }

    /// A stream that hands out `data` at most `step` bytes per read, then ends.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let n = self.step.min(self.data.len() - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.data[from..from + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// What reading one response from `data` gives, `step` bytes per read: the result (reusable or an
    /// error kind), the exchange, and how many bytes of the stream were left unread.
    fn read(data: &[u8], step: usize) -> (Result<bool, ErrorKind>, Exchange, usize) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut io = Trickle { data: data.to_vec(), pos: 0, step };
        let mut buf = Vec::new();
        let mut ex = Exchange::default();
        let r = rt.block_on(read_response(&mut io, &mut buf, &mut ex));
        (r.map_err(|(kind, _)| kind), ex, io.data.len() - io.pos)
    }

    /// Reading `data` whole and one byte at a time gives the same result and status.
    fn read_every_way(data: &[u8]) -> (Result<bool, ErrorKind>, Exchange, usize) {
        let whole = read(data, usize::MAX);
        for step in [1, 2, 3, 7] {
            let split = read(data, step);
            assert_eq!(
                (split.0, split.1.status, &split.1.answer, &split.1.reason),
                (whole.0, whole.1.status, &whole.1.answer, &whole.1.reason)
            );
            assert_eq!(split.2, 0, "step {step}: the whole stream is read");
        }
        whole
    }

    #[test]
    fn content_length_body_keeps_the_connection_and_the_headers_a_record_needs() {
        let (r, ex, left) = read_every_way(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Meshshift-Revision: 1-9-7\r\nx-meshshift-revision: other\r\n\
              x-meshshift-upstream-pod: default/b\r\nserver: istio-envoy\r\nx-meshshift-unknown: z\r\n\r\nhello",
        );
        assert_eq!((r, ex.status, left), (Ok(true), Some(200), 0));
        let a = &ex.answer;
        assert_eq!(a.revision.as_deref(), Some("1-9-7"), "the first value counts");
        assert_eq!(a.upstream_pod.as_deref(), Some("default/b"));
        assert_eq!(a.server.as_deref(), Some("istio-envoy"));
        assert_eq!((a.version.as_ref(), a.proxy.as_ref(), a.pod.as_ref()), (None, None, None));
        // A 503 is a complete response too: the status decides whether it counts as served.
        assert_eq!(read_every_way(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno").0, Ok(true));
        // No body for 204 and 304, whatever they say; informational responses are skipped.
        assert_eq!(read_every_way(b"HTTP/1.1 204 No Content\r\n\r\n").0, Ok(true));
        let (r, ex, _) =
            read_every_way(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n");
        assert_eq!((r, ex.status), (Ok(true), Some(304)));
        // Repeated equal lengths are one length.
        assert_eq!(
            read_every_way(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok").0,
            Ok(true)
        );
    }

    #[test]
    fn a_failing_status_keeps_the_reason_its_body_gives() {
        let reason = |data: &[u8]| read_every_way(data).1.reason;
        assert_eq!(
            reason(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 36\r\n\r\nupstream connect error: refused\nmore"
            ),
            Some("upstream connect error: refused".to_owned())
        );
        assert_eq!(
            reason(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nno \r\n5\r\nroute\r\n0\r\n\r\n"),
            Some("no route".to_owned()),
            "chunk framing is not content"
        );
        assert_eq!(reason(b"HTTP/1.0 500 Internal\r\n\r\nclose-delimited"), Some("close-delimited".to_owned()));
        // A success keeps nothing; an empty body gives no reason.
        assert_eq!(reason(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"), None);
        assert_eq!(reason(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"), None);
        // What arrived of a body cut short is kept too.
        let (r, ex, _) = read(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 50\r\n\r\nupstream re", 4);
        assert_eq!((r, ex.reason.as_deref()), (Err(ErrorKind::Closed), Some("upstream re")));
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers_are_read_to_their_end() {
        let (r, ex, _) = read_every_way(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-meshshift-proxy: gateway\r\n\r\n\
              5;name=value\r\nhello\r\n1A ; a=\"b;c\"\r\nabcdefghijklmnopqrstuvwxyz\r\n001\r\n\n\r\n\
              0\r\nx-trailer: 1\r\nx-other: 2\r\n\r\n",
        );
        assert_eq!((r, ex.status, ex.answer.proxy.as_deref()), (Ok(true), Some(200), Some("gateway")));
        // Without trailers; and chunked wins over a content-length.
        let (r, _, _) = read_every_way(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        );
        assert_eq!(r, Ok(true));
    }

    #[test]
    fn close_delimited_bodies_are_read_to_the_end_and_retire_the_connection() {
        let (r, ex, _) = read_every_way(b"HTTP/1.1 200 OK\r\nserver: old\r\n\r\nuntil the end\r\n\r\nof the stream");
        assert_eq!((r, ex.status, ex.answer.server.as_deref()), (Ok(false), Some(200), Some("old")));
        // A transfer-coding that is not chunked also ends with the connection.
        assert_eq!(read_every_way(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nxyz").0, Ok(false));
        // HTTP/1.0: close unless kept alive.
        assert_eq!(read_every_way(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok").0, Ok(false));
        let kept = b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(read_every_way(kept).0, Ok(true));
    }

    #[test]
    fn connection_close_retires_the_connection() {
        for close in ["close", "Close", "keep-alive, CLOSE", "upgrade,close"] {
            let data = format!("HTTP/1.1 200 OK\r\nConnection: {close}\r\ncontent-length: 2\r\n\r\nok");
            let (r, ex, _) = read_every_way(data.as_bytes());
            assert_eq!((r, ex.status), (Ok(false), Some(200)), "{close}");
        }
        let (r, _, _) = read_every_way(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(r, Ok(true));
    }

    #[test]
    fn bytes_after_the_response_retire_the_connection() {
        let (r, _, left) = read(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", usize::MAX);
        assert_eq!((r, left), (Ok(false), 0));
        // Read a byte at a time, the response ends before them: the rest stays unread.
        let (r, _, left) = read(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokextra", 1);
        assert_eq!((r, left), (Ok(true), 5));
    }

    #[test]
    fn malformed_responses_are_protocol_errors() {
        for bad in [
            &b"HTTP/1.1 abc OK\r\n\r\n"[..],
            b"hello world\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nxyz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokay\r\n0\r\n\r\n",
        ] {
            for step in [1, usize::MAX] {
                assert_eq!(read(bad, step).0, Err(ErrorKind::Protocol), "{}", String::from_utf8_lossy(bad));
            }
        }
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() <= MAX_HEAD {
            huge.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(read(&huge, usize::MAX).0, Err(ErrorKind::Protocol), "too large a head");
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(read(&many, usize::MAX).0, Err(ErrorKind::Protocol), "too many headers");
        let mut long = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;".to_vec();
        long.resize(long.len() + 2 * MAX_LINE, b'x');
        assert_eq!(read(&long, 1000).0, Err(ErrorKind::Protocol), "too long a chunk-size line");
    }

    #[test]
    fn a_stream_that_ends_early_is_closed() {
        // Nothing, part of a head, part of a body: the status is kept when the head arrived.
        for (data, status) in [
            (&b""[..], None),
            (b"HTTP/1.1 200 OK\r\ncontent-len", None),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello", Some(200)),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel", Some(200)),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r", Some(200)),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-trailer: 1\r\n", Some(200)),
        ] {
            for step in [1, usize::MAX] {
                let (r, ex, _) = read(data, step);
                assert_eq!((r, ex.status), (Err(ErrorKind::Closed), status), "{}", String::from_utf8_lossy(data));
            }
        }
    }

    /// A server on 127.0.0.1 that answers each request on a connection with the next of `answers` (then
    /// closes the connection when `answers` runs out); `None` closes without answering. Counts connections.
    async fn scripted(answers: Vec<Option<&'static str>>) -> (Target, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::parse(&format!("http://{}/x", listener.local_addr().unwrap())).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for answer in answers {
                        // One request: up to its empty line.
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let Some(answer) = answer else { return };
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (target, accepted)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-meshshift-pod: ns/p\r\n\r\nok";
    const CLOSE: &str = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";

    fn template(t: &Target) -> RequestTemplate {
        RequestTemplate::new(t, &[]).unwrap()
    }

    #[tokio::test]
    async fn connections_are_kept_alive_and_retired_on_connection_close() {
        let (t, accepted) = scripted(vec![Some(OK), Some(OK), Some(CLOSE)]).await;
        let tpl = template(&t);
        let mut conns = Connections::new();
        let timeout = Duration::from_secs(5);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let ex = conns.send(&t, &tpl, timeout).await;
            assert!(ex.error.is_none() && ex.status == Some(200), "{ex:?}");
            seen.push((ex.reused, ex.answer.pod));
        }
        let pod = || Some("ns/p".to_owned());
        assert_eq!(
            seen,
            [(false, pod()), (true, pod()), (true, None), (false, pod())],
            "after close, a new connection"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_without_an_error() {
        // The server answers once and closes (no Connection: close): the next request gets a new connection.
        let (t, accepted) = scripted(vec![Some(OK)]).await;
        let tpl = template(&t);
        let mut conns = Connections::new();
        for _ in 0..3 {
            let ex = conns.send(&t, &tpl, Duration::from_secs(5)).await;
            assert!(ex.error.is_none() && !ex.reused, "{ex:?}");
            // Time for the close to reach the reactor.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_close_instead_of_a_response_is_closed_and_drops_the_connection() {
        // On a fresh connection, and on a reused one (the close crossed the request, as hyper reports it).
        let (t, accepted) = scripted(vec![Some(OK), None]).await;
        let tpl = template(&t);
        let mut conns = Connections::new();
        assert!(conns.send(&t, &tpl, Duration::from_secs(5)).await.error.is_none());
        let ex = conns.send(&t, &tpl, Duration::from_secs(5)).await;
        let (kind, detail) = ex.error.clone().unwrap();
        assert_eq!((kind, ex.reused, ex.status), (ErrorKind::Closed, true, None), "{detail}");
        assert!(detail.contains("reused"), "{detail}");
        let ex = conns.send(&t, &tpl, Duration::from_secs(5)).await;
        assert!(ex.error.is_none() && !ex.reused, "{ex:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        let (t, _) = scripted(vec![None]).await;
        let ex = Connections::new().send(&t, &template(&t), Duration::from_secs(5)).await;
        assert_eq!((ex.error.map(|e| e.0), ex.reused), (Some(ErrorKind::Closed), false));
    }

    #[tokio::test]
    async fn timeouts_and_refusals_are_classified_by_phase() {
        // Accepted, never answered: a timeout in the exchange; the timer serves request after request.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = Target::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let tpl = template(&t);
        let mut conns = Connections::new();
        for _ in 0..2 {
            let started = Instant::now();
            let ex = conns.send(&t, &tpl, Duration::from_millis(100)).await;
            assert_eq!(ex.error.map(|e| e.0), Some(ErrorKind::Timeout));
            assert!(started.elapsed() >= Duration::from_millis(100));
        }
        drop(listener);
        let ex = conns.send(&t, &tpl, Duration::from_secs(5)).await;
        assert_eq!(ex.error.map(|e| e.0), Some(ErrorKind::ConnectRefused));
    }
}
