//! A fault-injecting proxy in front of a lab's apiserver (test support, docs/reliability.md "API faults").
//!
//! It listens on `127.0.0.1` with TLS (its own self-signed CA), forwards every request to the apiserver as
//! the lab's admin (a kube client from the lab's kubeconfig), and on a set fraction of requests does what
//! a busy or failing control plane does instead:
//!
//! - answers **429** Too Many Requests (with `Retry-After: 0`), **500** or **503**, without forwarding;
//! - **resets the connection** (TCP RST, no answer): half of the time before forwarding, half after the
//!   apiserver answered (the write happened, its answer is lost: the case that makes replays dangerous);
//! - **delays** the request before forwarding it;
//! - answers **409 Conflict** to a guarded write (a PUT carrying a resourceVersion, a patch testing one)
//!   without forwarding it, as if someone else had just written the object. An unguarded write never
//!   meets a 409 from a real apiserver (it retries its own conflicts), so none is forced on it;
//! - **cuts a watch** (`?watch=1`) mid-stream; watches are otherwise proxied untouched.
//!
//! Fault choices come from a seeded generator (`MESHSHIFT_FAULT_SEED`), and every injected fault is
//! counted, so a test can prove the faults really happened. Include with
//! `#[path = "support/faults.rs"] mod faults;` (it needs TLS crates the other tests do not).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// What fraction of requests meets each fault. The non-watch faults are exclusive and their rates add
/// up (0.05 + 0.03 = 8% of requests meet one of the two).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRates {
    /// 429 with `Retry-After: 0`.
    pub throttle: f64,
    /// 500.
    pub internal: f64,
    /// 503.
    pub unavailable: f64,
    /// Connection reset (half before forwarding, half after).
    pub reset: f64,
    /// Delay by `delay_ms` before forwarding.
    pub delay: f64,
    /// How long a delay is.
    pub delay_ms: u64,
    /// 409 Conflict, of guarded writes only.
    pub conflict: f64,
    /// Watches cut mid-stream (after 0.2-2 s).
    pub watch_cut: f64,
}

impl FaultRates {
    /// No faults: a transparent proxy.
    pub fn none() -> Self {
        Self {
            throttle: 0.0,
            internal: 0.0,
            unavailable: 0.0,
            reset: 0.0,
            delay: 0.0,
            delay_ms: 0,
            conflict: 0.0,
            watch_cut: 0.0,
        }
    }
}

/// What the proxy saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests received.
    pub requests: u64,
    /// Of which watches.
    pub watches: u64,
    /// Of which guarded writes (PUT with a resourceVersion, patches testing one).
    pub guarded_writes: u64,
    /// Requests forwarded to the apiserver.
    pub forwarded: u64,
    /// 429s injected.
    pub throttled: u64,
    /// 500s injected.
    pub internal: u64,
    /// 503s injected.
    pub unavailable: u64,
    /// Connections reset before forwarding.
    pub resets_before: u64,
    /// Connections reset after the apiserver answered (the answer lost).
    pub resets_after: u64,
    /// Of which writes (POST, PUT, PATCH, DELETE): the write happened, its answer was lost.
    pub resets_after_writes: u64,
    /// Requests delayed.
    pub delayed: u64,
    /// 409s injected on guarded writes.
    pub conflicts: u64,
    /// Watches cut mid-stream.
    pub watch_cuts: u64,
    /// Upstream failures (answered 502).
    pub upstream_errors: u64,
}

impl FaultCounts {
    /// Every injected fault.
    pub fn injected(&self) -> u64 {
        self.throttled
            + self.internal
            + self.unavailable
            + self.resets_before
            + self.resets_after
            + self.delayed
            + self.conflicts
            + self.watch_cuts
    }
}

impl std::fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests ({} watches, {} guarded writes), {} forwarded; injected: {} x 429, {} x 500, {} x 503, \
             {} resets before + {} after forwarding ({} of them writes), {} delays, {} x 409, {} watch cuts; \
             {} upstream errors",
            self.requests,
            self.watches,
            self.guarded_writes,
            self.forwarded,
            self.throttled,
            self.internal,
            self.unavailable,
            self.resets_before,
            self.resets_after,
            self.resets_after_writes,
            self.delayed,
            self.conflicts,
            self.watch_cuts,
            self.upstream_errors
        )
    }
}

/// The fault one request meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwarded untouched.
    None,
    /// 429.
    Throttle,
    /// 500.
    Internal,
    /// 503.
    Unavailable,
    /// Reset before forwarding.
    ResetBefore,
    /// Reset after the apiserver answered.
    ResetAfter,
    /// Delayed, then forwarded.
    Delay,
    /// 409.
    Conflict,
    /// A watch cut after this many ms.
    CutWatch(u64),
}

/// splitmix64: small, seedable, good enough to pick faults.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Which fault a request meets: `watch` requests may only be cut; others meet at most one fault, a 409
/// only when `guarded`.
pub fn choose(rates: &FaultRates, rng: &mut Rng, watch: bool, guarded: bool) -> Fault {
    let roll = rng.unit();
    if watch {
        return if roll < rates.watch_cut { Fault::CutWatch(200 + (rng.unit() * 1800.0) as u64) } else { Fault::None };
    }
    let conflict = if guarded { rates.conflict } else { 0.0 };
    let reset = if rng.unit() < 0.5 { Fault::ResetBefore } else { Fault::ResetAfter };
    let mut edge = 0.0;
    for (rate, fault) in [
        (rates.throttle, Fault::Throttle),
        (rates.internal, Fault::Internal),
        (rates.unavailable, Fault::Unavailable),
        (rates.reset, reset),
        (conflict, Fault::Conflict),
        (rates.delay, Fault::Delay),
    ] {
        edge += rate;
        if roll < edge {
            return fault;
        }
    }
    Fault::None
}

/// Whether a write carries a resourceVersion precondition (the only writes a real apiserver answers
/// with 409 Conflict).
pub fn guarded_write(method: &Method, body: &[u8]) -> bool {
    if method != Method::PUT && method != Method::PATCH {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return false };
    let rv_in_metadata = v["metadata"]["resourceVersion"].as_str().is_some_and(|s| !s.is_empty());
    let rv_tested = v
        .as_array()
        .is_some_and(|ops| ops.iter().any(|op| op["op"] == "test" && op["path"] == "/metadata/resourceVersion"));
    rv_in_metadata || rv_tested
}

fn is_watch(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=1" || kv == "watch=true"))
}

/// An apiserver-style `Status` answer.
fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Response<ProxyBody> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code.as_u16(),
    });
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn full(text: String) -> ProxyBody {
    Full::new(Bytes::from(text)).map_err(|never: Infallible| match never {}).boxed_unsync()
}

/// `(resource, name)` of an object path (`.../<resource>/<name>`, subresources ignored).
fn resource_and_name(path: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let n = parts.len();
    match n {
        0 | 1 => (String::new(), String::new()),
        _ => (parts[n - 2].to_owned(), parts[n - 1].to_owned()),
    }
}

/// The signal that tears a connection down (hyper closes it; zero linger makes the close a RST).
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault proxy: connection reset")
    }
}

impl std::error::Error for Reset {}

struct Shared {
    upstream: kube::Client,
    rates: Mutex<FaultRates>,
    rng: Mutex<Rng>,
    counts: Mutex<FaultCounts>,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut FaultCounts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }
}

/// A running fault proxy; dropping it stops it.
pub struct FaultProxy {
    url: String,
    kubeconfig: PathBuf,
    seed: u64,
    shared: Arc<Mutex<Option<Arc<Shared>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to the apiserver of `upstream` (a kubeconfig with the admin's credentials) with
    /// `rates`, on its own runtime thread; writes its kubeconfig (server: the proxy, CA: the proxy's, no
    /// credentials) to `dir/fault-proxy.kubeconfig`. The seed is `MESHSHIFT_FAULT_SEED`, else `seed`.
    pub fn start(upstream: kube::config::Kubeconfig, dir: &Path, rates: FaultRates, seed: u64) -> FaultProxy {
        let seed = std::env::var("MESHSHIFT_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(seed);
        let ca = meshshift_lab::pki::LabCa::generate().expect("proxy CA");
        let leaf = ca
            .issue(&meshshift_lab::pki::LeafSpec::server(
                "meshshift-fault-proxy",
                &["127.0.0.1".to_owned(), "localhost".to_owned()],
            ))
            .expect("proxy certificate");
        let ca_path = dir.join("fault-proxy-ca.crt");
        std::fs::write(&ca_path, &ca.cert_pem).expect("write the proxy CA");
        let tls = acceptor(&leaf.cert_pem, &leaf.key_pem);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr: SocketAddr = listener.local_addr().expect("proxy address");
        let url = format!("https://{addr}");
        let kubeconfig = dir.join("fault-proxy.kubeconfig");
        let doc = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fault-proxy", "cluster": {"server": url, "certificate-authority": ca_path}}],
            "users": [{"name": "through-the-proxy", "user": {}}],
            "contexts": [{"name": "fault-proxy", "context": {"cluster": "fault-proxy", "user": "through-the-proxy"}}],
            "current-context": "fault-proxy",
        });
        std::fs::write(&kubeconfig, serde_json::to_string_pretty(&doc).expect("json")).expect("write kubeconfig");

        let shared: Arc<Mutex<Option<Arc<Shared>>>> = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let slot = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let mut config =
                        kube::Config::from_custom_kubeconfig(upstream, &kube::config::KubeConfigOptions::default())
                            .await
                            .expect("upstream config");
                    // Transparent: the apiserver's own answers pass through unretried, watches unhurried.
                    config.default_retry = false;
                    config.read_timeout = None;
                    let client = kube::Client::try_from(config).expect("upstream client");
                    let state = Arc::new(Shared {
                        upstream: client,
                        rates: Mutex::new(rates),
                        rng: Mutex::new(Rng::new(seed)),
                        counts: Mutex::new(FaultCounts::default()),
                    });
                    *slot.lock().expect("slot") = Some(state.clone());
                    let _ = ready_tx.send(());
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let accept = async {
                        loop {
                            let Ok((tcp, _)) = listener.accept().await else { continue };
                            let (tls, state) = (tls.clone(), state.clone());
                            tokio::spawn(async move { connection(tcp, tls, state).await });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn the proxy thread");
        ready_rx.recv_timeout(Duration::from_secs(30)).expect("the proxy started");
        FaultProxy { url, kubeconfig, seed, shared, stop: Some(stop), thread: Some(thread) }
    }

    fn state(&self) -> Arc<Shared> {
        self.shared.lock().expect("slot").clone().expect("started")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The kubeconfig that talks through the proxy.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The seed the faults were drawn with (set `MESHSHIFT_FAULT_SEED` to it to draw them again).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// What happened so far.
    pub fn counts(&self) -> FaultCounts {
        *self.state().counts.lock().expect("counts")
    }

    /// Changes the rates from the next request on.
    pub fn set_rates(&self, rates: FaultRates) {
        *self.state().rates.lock().expect("rates") = rates;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn acceptor(cert_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>().expect("certificate pem");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn connection(tcp: tokio::net::TcpStream, tls: tokio_rustls::TlsAcceptor, state: Arc<Shared>) {
    // Every close of this connection is a RST: a reset fault is a real reset.
    let _ = tcp.set_zero_linger();
    let _ = tcp.set_nodelay(true);
    let Ok(stream) = tls.accept(tcp).await else { return };
    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

async fn handle(state: Arc<Shared>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Reset> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Reset),
    };
    let watch = is_watch(parts.uri.query());
    let guarded = guarded_write(&parts.method, &body);
    let fault = {
        let rates = *state.rates.lock().expect("rates");
        let mut rng = state.rng.lock().expect("rng");
        choose(&rates, &mut rng, watch, guarded)
    };
    let delay_ms = state.rates.lock().expect("rates").delay_ms;
    state.count(|c| {
        c.requests += 1;
        c.watches += u64::from(watch);
        c.guarded_writes += u64::from(guarded);
        match fault {
            Fault::Throttle => c.throttled += 1,
            Fault::Internal => c.internal += 1,
            Fault::Unavailable => c.unavailable += 1,
            Fault::ResetBefore => c.resets_before += 1,
            Fault::ResetAfter => {
                c.resets_after += 1;
                c.resets_after_writes += u64::from(parts.method != Method::GET && parts.method != Method::HEAD);
            }
            Fault::Delay => c.delayed += 1,
            Fault::Conflict => c.conflicts += 1,
            Fault::CutWatch(_) | Fault::None => {}
        }
    });
    let path = parts.uri.path().to_owned();
    let (resource, name) = resource_and_name(&path);
    match fault {
        Fault::Throttle => {
            let mut r = status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests, please try again later. (injected by the fault proxy)".into(),
                json!({"retryAfterSeconds": 0}),
            );
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("0"));
            return Ok(r);
        }
        Fault::Internal => {
            return Ok(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "Internal error occurred: injected by the fault proxy".into(),
                json!({"causes": [{"message": "injected by the fault proxy"}]}),
            ));
        }
        Fault::Unavailable => {
            return Ok(status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the server is currently unable to handle the request (injected by the fault proxy)".into(),
                json!({}),
            ));
        }
        Fault::Conflict => {
            return Ok(status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
                json!({"name": name, "kind": resource}),
            ));
        }
        Fault::ResetBefore => return Err(Reset),
        Fault::Delay => tokio::time::sleep(Duration::from_millis(delay_ms)).await,
        Fault::ResetAfter | Fault::CutWatch(_) | Fault::None => {}
    }

    let mut upstream = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.path_and_query().map(|pq| pq.as_str().to_owned()).unwrap_or_else(|| "/".to_owned()));
    for (k, v) in &parts.headers {
        if !matches!(k.as_str(), "host" | "authorization" | "connection" | "content-length" | "transfer-encoding") {
            upstream = upstream.header(k, v);
        }
    }
    let upstream = upstream.body(kube::client::Body::from(body.to_vec())).map_err(|_| Reset)?;
    let answer = match state.upstream.send(upstream).await {
        Ok(a) => a,
        Err(e) => {
            state.count(|c| c.upstream_errors += 1);
            return Ok(status(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                format!("fault proxy upstream: {e}"),
                json!({}),
            ));
        }
    };
    state.count(|c| c.forwarded += 1);
    if fault == Fault::ResetAfter {
        // The apiserver has done it; its answer is lost.
        let _ = answer.into_body().collect().await;
        return Err(Reset);
    }
    let (mut head, body) = answer.into_parts();
    head.headers.remove("transfer-encoding");
    head.headers.remove("connection");
    let body = body.map_err(|e| -> BoxError { Box::new(e) });
    let body: ProxyBody = match fault {
        Fault::CutWatch(after) => {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(after);
            let frames = BodyStream::new(body);
            let cut = futures::stream::unfold(
                (Box::pin(frames), false, state.clone()),
                move |(mut s, done, st)| async move {
                    if done {
                        return None;
                    }
                    tokio::select! {
                        next = s.next() => next.map(|f| (f, (s, false, st))),
                        _ = tokio::time::sleep_until(deadline) => {
                            st.count(|c| c.watch_cuts += 1);
                            let e: BoxError = Box::new(Reset);
                            Some((Err(e), (s, true, st)))
                        }
                    }
                },
            );
            BodyExt::boxed_unsync(StreamBody::new(cut))
        }
        _ => body.boxed_unsync(),
    };
    Ok(Response::from_parts(head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_come_at_their_rates_and_409s_only_on_guarded_writes() {
        let rates = FaultRates {
            throttle: 0.03,
            internal: 0.03,
            unavailable: 0.05,
            reset: 0.02,
            delay: 0.05,
            delay_ms: 1,
            conflict: 0.05,
            watch_cut: 0.2,
        };
        let mut rng = Rng::new(7);
        let n = 100_000;
        let mut seen = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..n {
            let f = choose(&rates, &mut rng, false, true);
            let key = format!("{f:?}");
            *seen.entry(key).or_default() += 1;
        }
        let share = |k: &str| f64::from(seen.get(k).copied().unwrap_or(0)) / f64::from(n);
        assert!((share("Throttle") - 0.03).abs() < 0.005, "{seen:?}");
        assert!((share("Unavailable") - 0.05).abs() < 0.005, "{seen:?}");
        assert!((share("ResetBefore") + share("ResetAfter") - 0.02).abs() < 0.004, "{seen:?}");
        assert!((share("Conflict") - 0.05).abs() < 0.005, "{seen:?}");
        for _ in 0..1000 {
            assert_ne!(choose(&rates, &mut rng, false, false), Fault::Conflict);
            assert!(matches!(choose(&rates, &mut rng, true, false), Fault::None | Fault::CutWatch(_)));
        }
        assert_eq!(choose(&FaultRates::none(), &mut rng, false, true), Fault::None);
    }

    #[test]
    fn guarded_writes_are_recognised() {
        let put = json!({"metadata": {"name": "x", "resourceVersion": "5"}}).to_string();
        let patch = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "5"}]).to_string();
        assert!(guarded_write(&Method::PUT, put.as_bytes()));
        assert!(guarded_write(&Method::PATCH, patch.as_bytes()));
        assert!(!guarded_write(&Method::PATCH, br#"{"metadata":{"labels":{"a":"b"}}}"#));
        assert!(!guarded_write(&Method::POST, put.as_bytes()));
        assert_eq!(resource_and_name("/api/v1/namespaces/m/configmaps/j"), ("configmaps".into(), "j".into()));
    }
}
