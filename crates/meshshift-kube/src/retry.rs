//! Bounded retries of transient API failures, as a tower [`Policy`] in front of kube's client stack.
//!
//! kube 5 retries 429, 503 and 504 by default, up to 15 times with delays growing to 1000 s: unbounded
//! for a CLI in the middle of an upgrade, and blind to whether a request may be sent twice. This policy
//! decides per request:
//!
//! - **429 Too Many Requests** and **503 Service Unavailable** are retried for every request: the
//!   apiserver (or the load balancer in front of it) refused it before doing anything, as kube's own
//!   default policy assumes too. A `Retry-After` is honoured up to the longest backoff.
//! - **Connection failures before the request left** (refused, closed during the handshake) are
//!   retried for every request once the apiserver has answered this client (before that, a wrong
//!   address must fail at once); a connect timeout (5 s, a dead endpoint) is not.
//! - **Ambiguous failures** (500, 502, 504, a connection reset or closed while the request was in
//!   flight, a read timeout) may have been applied, so they are retried only for requests whose replay
//!   cannot do harm ([`replay_safe`]): reads (GET, LIST, WATCH), dry runs, access reviews, and writes
//!   whose replay either changes nothing or is refused: a create of a named object (a replay gets 409
//!   AlreadyExists), a PUT carrying a resourceVersion or a JSON patch testing it (a replay gets 409/422),
//!   a merge, strategic or apply patch (idempotent), a DELETE (a replay gets 404). Callers already treat
//!   those answers as "look again": meshshift's guarded writes re-read and re-check on 409/422.
//! - Everything else, above all 4xx other than 429 (409 is the caller's business), is returned as is.
//! - Answers of the apiserver's proxy subresources (`.../services/<name>:<port>/proxy/...`) are the
//!   backend's, not the apiserver's: the gates that send them must see them as they are, so only 429 and
//!   connection failures are retried there.
//!
//! Bounded: at most [`RetryConfig::attempts`] attempts (8), waiting `min_delay` (100 ms) doubling up to
//! `max_delay` (2 s) between them, each wait jittered down to as little as half, so a request gives up
//! after at most about 7 s of waiting. Eight rather than six: under the fault test's rates (13% of
//! requests fail) six attempts still lose about one request in 200,000, one upgrade in a hundred.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use tower::BoxError;
use tower::retry::Policy;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the first retry (before jitter).
    pub min_delay: Duration,
    /// The longest wait between two attempts, a server's `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { attempts: 8, min_delay: Duration::from_millis(100), max_delay: Duration::from_secs(2) }
    }
}

impl RetryConfig {
    /// The un-jittered wait after failed attempt `n` (1-based): `min_delay * 2^(n-1)`, at most `max_delay`.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.min_delay.checked_mul(factor).unwrap_or(self.max_delay).min(self.max_delay)
    }

    /// The wait after failed attempt `n`: the backoff jittered into `[backoff/2, backoff]` (`unit` in
    /// `[0, 1)`), raised to the server's `Retry-After`, never above `max_delay`.
    pub fn delay(&self, n: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let base = self.backoff(n);
        let jittered = base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0));
        jittered.max(retry_after.unwrap_or_default()).min(self.max_delay)
    }
}

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An HTTP answer with this status.
    Status(u16),
    /// The connection failed before the request was sent (refused, closed during the handshake).
    NotSent,
    /// The connection could not be made within the connect timeout: a dead endpoint, not a blip; waiting
    /// for it again and again would only delay the error.
    ConnectTimeout,
    /// The connection failed after the request may have been sent (reset, closed, read timeout).
    InFlight,
    /// Not a transport failure (auth plugin, malformed request...): never retried.
    Other,
}

/// The parts of a request the decision looks at.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path (no query).
    pub path: &'a str,
    /// The query, if any.
    pub query: Option<&'a str>,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// The body, when it could be read without waiting (kube's bodies are in memory).
    pub body: Option<&'a [u8]>,
}

/// Whether an attempt that failed with `failure` is worth another attempt.
pub fn retryable(req: &RequestFacts<'_>, failure: Failure) -> bool {
    let proxied = is_proxy_subresource(req.path);
    match failure {
        Failure::Status(429) | Failure::NotSent => true,
        Failure::Status(503) => !proxied,
        Failure::Status(500 | 502 | 504) => !proxied && replay_safe(req),
        Failure::InFlight => replay_safe(req),
        Failure::Status(_) | Failure::ConnectTimeout | Failure::Other => false,
    }
}

/// `.../proxy` and `.../proxy/...` subresources (services, pods, nodes): the answer is the backend's.
fn is_proxy_subresource(path: &str) -> bool {
    path.ends_with("/proxy") || path.contains("/proxy/")
}

/// Whether sending `req` a second time, after a first attempt that may have been applied, is harmless
/// (see the module documentation).
pub fn replay_safe(req: &RequestFacts<'_>) -> bool {
    let m = req.method;
    if m == Method::GET || m == Method::HEAD || m == Method::OPTIONS || m == Method::DELETE {
        return true;
    }
    if req.query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("dryRun="))) {
        return true;
    }
    let body: Option<serde_json::Value> = req.body.and_then(|b| serde_json::from_slice(b).ok());
    if m == Method::POST {
        // Access reviews are answered, not stored.
        if req.path.ends_with("accessreviews")
            || req.path.ends_with("rulesreviews")
            || req.path.ends_with("tokenreviews")
        {
            return true;
        }
        // A create of a named object: a replay is refused with 409 AlreadyExists.
        return body.as_ref().and_then(|b| b["metadata"]["name"].as_str()).is_some_and(|n| !n.is_empty());
    }
    if m == Method::PUT {
        return body.as_ref().and_then(|b| b["metadata"]["resourceVersion"].as_str()).is_some_and(|v| !v.is_empty());
    }
    if m == Method::PATCH {
        let content_type = req.content_type.unwrap_or_default();
        if content_type.starts_with("application/json-patch+json") {
            // A replay of a patch that tests the resourceVersion first fails that test.
            return body.as_ref().and_then(|b| b.as_array()).and_then(|ops| ops.first()).is_some_and(|op| {
                op["op"] == "test" && op["path"] == "/metadata/resourceVersion" && op["value"].is_string()
            });
        }
        return content_type.starts_with("application/merge-patch+json")
            || content_type.starts_with("application/strategic-merge-patch+json")
            || content_type.starts_with("application/apply-patch+yaml");
    }
    false
}

/// Classifies a transport error by its source chain.
pub fn classify_error(err: &(dyn std::error::Error + 'static)) -> Failure {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut transport = false;
    while let Some(e) = current {
        if let Some(legacy) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if legacy.is_connect() {
                return if timed_out(e) { Failure::ConnectTimeout } else { Failure::NotSent };
            }
            transport = true;
        } else if e.downcast_ref::<hyper::Error>().is_some() {
            transport = true;
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | TimedOut) {
                transport = true;
            }
        }
        current = e.source();
    }
    if transport { Failure::InFlight } else { Failure::Other }
}

fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        current = e.source();
    }
    false
}

/// A uniform number in `[0, 1)`, different on every call (jitter needs no cryptographic quality).
fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The body of a kube request, when it is in memory (kube's requests always are).
fn body_bytes(req: &Request<Body>) -> Option<Bytes> {
    let copy = req.body().try_clone()?;
    copy.collect_bytes().now_or_never()?.ok()
}

fn retry_after(response_headers: &http::HeaderMap) -> Option<Duration> {
    let v = response_headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The tower retry policy: one per request (tower clones it for each), counting that request's attempts.
/// The clones of one client share whether the apiserver ever answered: until it has, a refused
/// connection is not retried, so a wrong address (a typo, a stopped cluster) fails at once; once it has,
/// a refusal is an apiserver restarting and is ridden out.
#[derive(Debug, Clone, Default)]
pub struct ApiRetry {
    config: RetryConfig,
    failed: u32,
    answered: Arc<AtomicBool>,
}

impl ApiRetry {
    /// A policy with `config`.
    pub fn new(config: RetryConfig) -> Self {
        Self { config, failed: 0, answered: Arc::default() }
    }
}

impl<B> Policy<Request<Body>, Response<B>, BoxError> for ApiRetry {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, req: &mut Request<Body>, result: &mut Result<Response<B>, BoxError>) -> Option<Self::Future> {
        if result.is_ok() {
            self.answered.store(true, Ordering::Relaxed);
        }
        let (failure, server_wait) = match result {
            Ok(r) if r.status().is_success() || r.status().is_informational() || r.status().is_redirection() => {
                return None;
            }
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS || r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                (Failure::Status(r.status().as_u16()), retry_after(r.headers()))
            }
            Ok(r) => (Failure::Status(r.status().as_u16()), None),
            Err(e) => (classify_error(e.as_ref()), None),
        };
        self.failed += 1;
        if self.failed >= self.config.attempts
            || matches!(failure, Failure::Other)
            || (failure == Failure::NotSent && !self.answered.load(Ordering::Relaxed))
        {
            return None;
        }
        let body = match req.method() {
            &Method::POST | &Method::PUT | &Method::PATCH => body_bytes(req),
            _ => None,
        };
        let facts = RequestFacts {
            method: req.method(),
            path: req.uri().path(),
            query: req.uri().query(),
            content_type: req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            body: body.as_deref(),
        };
        if !retryable(&facts, failure) {
            return None;
        }
        let wait = self.config.delay(self.failed, unit_random(), server_wait);
        tracing::debug!(
            method = %req.method(),
            uri = %req.uri(),
            ?failure,
            attempt = self.failed + 1,
            of = self.config.attempts,
            wait_ms = wait.as_millis() as u64,
            "retrying a transient API failure"
        );
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        let body = req.body().try_clone()?;
        let mut copy = Request::builder().method(req.method().clone()).uri(req.uri().clone()).version(req.version());
        if let Some(headers) = copy.headers_mut() {
            headers.extend(req.headers().clone());
        }
        let mut copy = copy.body(body).ok()?;
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts<'a>(
        method: &'a Method,
        path: &'a str,
        content_type: Option<&'a str>,
        body: Option<&'a [u8]>,
    ) -> RequestFacts<'a> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        RequestFacts { method, path, query, content_type, body }
    }

    const SVC: &str = "/api/v1/namespaces/istio-ingress/services/ingress";

    #[test]
    fn throttling_and_unavailability_are_retried_for_every_request() {
        for m in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let f = facts(&m, SVC, Some("application/json-patch+json"), Some(b"[]"));
            assert!(retryable(&f, Failure::Status(429)), "{m} 429");
            assert!(retryable(&f, Failure::Status(503)), "{m} 503");
            assert!(retryable(&f, Failure::NotSent), "{m} not sent");
        }
    }

    #[test]
    fn client_errors_are_the_callers_business() {
        let get = Method::GET;
        for code in [400, 401, 403, 404, 409, 410, 422, 501] {
            assert!(!retryable(&facts(&get, SVC, None, None), Failure::Status(code)), "{code}");
        }
        assert!(!retryable(&facts(&get, SVC, None, None), Failure::Other));
    }

    #[test]
    fn reads_are_retried_after_ambiguous_failures() {
        let get = Method::GET;
        for path in [SVC, "/api/v1/pods?limit=500", "/apis/apps/v1/namespaces/b/deployments?watch=1&resourceVersion=5"]
        {
            for failure in [Failure::Status(500), Failure::Status(502), Failure::Status(504), Failure::InFlight] {
                assert!(retryable(&facts(&get, path, None, None), failure), "{path} {failure:?}");
            }
        }
    }

    #[test]
    fn writes_are_retried_after_ambiguous_failures_only_when_a_replay_is_harmless() {
        let (post, put, patch, delete) = (Method::POST, Method::PUT, Method::PATCH, Method::DELETE);
        let named = json!({"metadata": {"name": "x"}}).to_string();
        let generated = json!({"metadata": {"generateName": "x-"}}).to_string();
        let guarded_put = json!({"metadata": {"name": "x", "resourceVersion": "12"}}).to_string();
        let blind_put = json!({"metadata": {"name": "x"}}).to_string();
        let guarded_patch = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "12"},
            {"op": "replace", "path": "/spec/selector", "value": {}}])
        .to_string();
        let blind_patch = json!([{"op": "add", "path": "/spec/ports/-", "value": {}}]).to_string();
        let jp = Some("application/json-patch+json");
        let cases: [(RequestFacts<'_>, bool); 10] = [
            (facts(&post, "/api/v1/namespaces/a/configmaps", None, Some(named.as_bytes())), true),
            (facts(&post, "/api/v1/namespaces/a/pods", None, Some(generated.as_bytes())), false),
            (facts(&post, "/api/v1/namespaces/a/pods?dryRun=All", None, Some(generated.as_bytes())), true),
            (facts(&post, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None, Some(b"{}")), true),
            (facts(&put, SVC, None, Some(guarded_put.as_bytes())), true),
            (facts(&put, SVC, None, Some(blind_put.as_bytes())), false),
            (facts(&patch, SVC, jp, Some(guarded_patch.as_bytes())), true),
            (facts(&patch, SVC, jp, Some(blind_patch.as_bytes())), false),
            (facts(&patch, SVC, Some("application/merge-patch+json"), Some(b"{}")), true),
            (facts(&delete, SVC, None, None), true),
        ];
        for (f, want) in cases {
            for failure in [Failure::Status(500), Failure::InFlight] {
                assert_eq!(retryable(&f, failure), want, "{} {}?{:?} {:?}", f.method, f.path, f.query, failure);
            }
        }
        // A body that could not be read is not known to be safe.
        assert!(!retryable(&facts(&put, SVC, None, None), Failure::InFlight));
    }

    #[test]
    fn proxied_answers_belong_to_the_backend() {
        let get = Method::GET;
        let path = "/api/v1/namespaces/istio-ingress/services/gw:80/proxy/productpage";
        for code in [500, 502, 503, 504] {
            assert!(!retryable(&facts(&get, path, None, None), Failure::Status(code)), "{code}");
        }
        assert!(retryable(&facts(&get, path, None, None), Failure::Status(429)));
        assert!(retryable(&facts(&get, path, None, None), Failure::InFlight));
        assert!(!retryable(
            &facts(&get, "/api/v1/namespaces/a/services/gw:80/proxy", None, None),
            Failure::Status(503)
        ));
    }

    #[test]
    fn backoff_doubles_from_100ms_to_2s_with_jitter_and_honours_retry_after_up_to_the_cap() {
        let c = RetryConfig::default();
        let bases: Vec<u128> = (1..=8).map(|n| c.backoff(n).as_millis()).collect();
        assert_eq!(bases, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(c.delay(1, 0.0, None), Duration::from_millis(50));
        assert_eq!(c.delay(3, 0.999_999, None).as_millis(), 399);
        assert_eq!(c.delay(1, 0.0, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(c.delay(1, 0.0, Some(Duration::from_secs(30))), Duration::from_secs(2));
        assert_eq!(c.backoff(64), Duration::from_secs(2));
        // The worst case of all waits of one request: about 7 s.
        let worst: Duration = (1..c.attempts).map(|n| c.delay(n, 0.999_999, None)).sum();
        assert!(worst <= Duration::from_millis(7100), "{worst:?}");
        for _ in 0..1000 {
            let u = unit_random();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[tokio::test]
    async fn the_policy_counts_attempts_and_stops() {
        let mut p = ApiRetry::default();
        let mut req = Request::get(SVC).body(Body::empty()).expect("request");
        let mut tries = 0;
        loop {
            let mut res: Result<Response<()>, BoxError> =
                Ok(Response::builder().status(503).body(()).expect("response"));
            if p.retry(&mut req, &mut res).is_none() {
                break;
            }
            tries += 1;
        }
        assert_eq!(tries, 7, "8 attempts: 7 retries");
        let mut p = ApiRetry::default();
        let mut ok: Result<Response<()>, BoxError> = Ok(Response::builder().status(200).body(()).expect("response"));
        assert!(p.retry(&mut req, &mut ok).is_none());
        let mut conflict: Result<Response<()>, BoxError> =
            Ok(Response::builder().status(409).body(()).expect("response"));
        assert!(p.retry(&mut req, &mut conflict).is_none());
    }

    #[tokio::test]
    async fn a_guarded_patch_body_is_read_for_the_decision() {
        let patch = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "7"}]).to_string();
        let mut req = Request::patch(SVC)
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(Body::from(patch.into_bytes()))
            .expect("request");
        let mut p = ApiRetry::default();
        let mut res: Result<Response<()>, BoxError> = Ok(Response::builder().status(500).body(()).expect("response"));
        assert!(p.retry(&mut req, &mut res).is_some(), "a guarded patch is retried after a 500");
        assert!(Policy::<Request<Body>, Response<()>, BoxError>::clone_request(&mut p, &req).is_some());
        let mut blind = Request::patch(SVC)
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(Body::from(b"[]".to_vec()))
            .expect("request");
        let mut p = ApiRetry::default();
        let mut res: Result<Response<()>, BoxError> = Ok(Response::builder().status(500).body(()).expect("response"));
        assert!(p.retry(&mut blind, &mut res).is_none(), "an unguarded JSON patch is not");
    }

    #[test]
    fn transport_errors_are_classified_by_their_source_chain() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify_error(&reset), Failure::InFlight);
        let other = std::io::Error::other("exec plugin failed");
        assert_eq!(classify_error(&other), Failure::Other);
    }
}
