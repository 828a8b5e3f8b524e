//! Readiness (`/ready` on 8080, what the Deployment's probe asks) and a minimal `/metrics` (15014).
//!
//! Ready means what a blue/green handover needs from a new control plane: its webhooks carry its CA (so
//! the apiserver can call it) and its config watches have synced (so the first push to a proxy is
//! complete). A terminating istiod is never ready.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::admission::Decision;
use super::http::{Handler, Reply};
use super::identity::Istiod;

/// The readiness port.
pub const READY_PORT: u16 = 8080;
/// The monitoring port.
pub const METRICS_PORT: u16 = 15014;

/// Counters for `/metrics` and logs.
#[derive(Debug, Default)]
pub struct Stats {
    injected: AtomicU64,
    skipped: AtomicU64,
    denied: AtomicU64,
    validated: AtomicU64,
    xds_connected: AtomicI64,
    xds_accepted: AtomicU64,
    xds_rejected: AtomicU64,
    pushes: AtomicU64,
    webhook_patches: AtomicU64,
}

impl Stats {
    /// Counts an injection decision.
    pub fn count_injection(&self, decision: &Decision) {
        let counter = match decision {
            Decision::Patch(_) => &self.injected,
            Decision::Allow => &self.skipped,
            Decision::Deny(_) => &self.denied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a validation request (all are allowed).
    pub fn count_validation(&self) {
        self.validated.fetch_add(1, Ordering::Relaxed);
    }

    /// Pods injected so far.
    pub fn injections(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// A proxy stream was accepted (`true`) or rejected.
    pub fn count_hello(&self, accepted: bool) {
        if accepted {
            self.xds_accepted.fetch_add(1, Ordering::Relaxed);
            self.xds_connected.fetch_add(1, Ordering::Relaxed);
        } else {
            self.xds_rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An accepted stream ended.
    pub fn count_disconnect(&self) {
        self.xds_connected.fetch_sub(1, Ordering::Relaxed);
    }

    /// Proxies connected now.
    pub fn connected(&self) -> i64 {
        self.xds_connected.load(Ordering::Relaxed)
    }

    /// A config was pushed to one proxy.
    pub fn count_push(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
    }

    /// A webhook configuration was patched.
    pub fn count_webhook_patch(&self) {
        self.webhook_patches.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, istiod: &Istiod) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE istiod_info gauge");
        let _ = writeln!(out, "istiod_info{{revision=\"{}\",version=\"{}\"}} 1", istiod.revision, istiod.version);
        let _ = writeln!(out, "# TYPE pilot_xds gauge");
        let _ = writeln!(out, "pilot_xds {}", self.connected());
        let _ = writeln!(out, "# TYPE pilot_xds_pushes counter");
        let _ = writeln!(out, "pilot_xds_pushes {}", load(&self.pushes));
        let _ = writeln!(out, "# TYPE pilot_xds_rejected counter");
        let _ = writeln!(out, "pilot_xds_rejected {}", load(&self.xds_rejected));
        let _ = writeln!(out, "# TYPE sidecar_injection_success_total counter");
        let _ = writeln!(out, "sidecar_injection_success_total {}", load(&self.injected));
        let _ = writeln!(out, "# TYPE sidecar_injection_skip_total counter");
        let _ = writeln!(out, "sidecar_injection_skip_total {}", load(&self.skipped));
        let _ = writeln!(out, "# TYPE sidecar_injection_failure_total counter");
        let _ = writeln!(out, "sidecar_injection_failure_total {}", load(&self.denied));
        let _ = writeln!(out, "# TYPE galley_validation_passed counter");
        let _ = writeln!(out, "galley_validation_passed {}", load(&self.validated));
        let _ = writeln!(out, "# TYPE webhook_patch_total counter");
        let _ = writeln!(out, "webhook_patch_total {}", load(&self.webhook_patches));
        out
    }
}

/// What readiness depends on.
#[derive(Debug, Clone)]
pub struct Health {
    /// Every webhook calling this istiod carries its CA.
    pub webhooks_patched: watch::Receiver<bool>,
    /// Gateways, VirtualServices and Services are listed.
    pub config_synced: watch::Receiver<bool>,
    /// The pod is being deleted.
    pub terminating: CancellationToken,
}

impl Health {
    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.terminating.is_cancelled() {
            Err("terminating")
        } else if !*self.webhooks_patched.borrow() {
            Err("webhook configurations not patched with the CA bundle yet")
        } else if !*self.config_synced.borrow() {
            Err("config watches not synced yet")
        } else {
            Ok(())
        }
    }
}

/// `GET /ready`: 200 when [`Health::check`] passes, else 503 with the reason.
pub fn ready_handler(health: Health) -> Handler {
    Arc::new(move |method: &Method, path: &str, _body: Bytes| {
        if path != "/ready" {
            return Reply::text(StatusCode::NOT_FOUND, "not found\n");
        }
        if method != Method::GET && method != Method::HEAD {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "GET /ready\n");
        }
        match health.check() {
            Ok(()) => Reply::text(StatusCode::OK, "ready\n"),
            Err(reason) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        }
    })
}

/// `GET /metrics`.
pub fn metrics_handler(istiod: Arc<Istiod>, stats: Arc<Stats>) -> Handler {
    Arc::new(move |_method: &Method, path: &str, _body: Bytes| {
        if path == "/metrics" {
            Reply {
                status: StatusCode::OK,
                content_type: "text/plain; version=0.0.4",
                body: stats.render(&istiod).into_bytes(),
            }
        } else {
            Reply::text(StatusCode::NOT_FOUND, "not found\n")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_patched_synced_and_running() {
        let (patched_tx, patched) = watch::channel(false);
        let (synced_tx, synced) = watch::channel(false);
        let terminating = CancellationToken::new();
        let handle = ready_handler(Health {
            webhooks_patched: patched,
            config_synced: synced,
            terminating: terminating.clone(),
        });
        let status = || handle(&Method::GET, "/ready", Bytes::new()).status;
        assert_eq!(status(), StatusCode::SERVICE_UNAVAILABLE);
        patched_tx.send_replace(true);
        assert_eq!(status(), StatusCode::SERVICE_UNAVAILABLE);
        synced_tx.send_replace(true);
        assert_eq!(status(), StatusCode::OK);
        terminating.cancel();
        let reply = handle(&Method::GET, "/ready", Bytes::new());
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&reply.body).contains("terminating"));
        assert_eq!(handle(&Method::GET, "/other", Bytes::new()).status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn metrics_count() {
        let stats = Arc::new(Stats::default());
        stats.count_hello(true);
        stats.count_hello(false);
        stats.count_push();
        stats.count_injection(&Decision::Patch(json_patch::Patch::default()));
        let istiod = Arc::new(Istiod {
            version: meshshift_core::version::IstioVersion::new(1, 9, 7),
            revision: "1-9-7".into(),
            namespace: "istio-system".into(),
        });
        let reply = metrics_handler(istiod, stats)(&Method::GET, "/metrics", Bytes::new());
        let text = String::from_utf8(reply.body).expect("utf8");
        assert!(text.contains("istiod_info{revision=\"1-9-7\",version=\"1.9.7\"} 1"), "{text}");
        assert!(text.contains("pilot_xds 1\n") && text.contains("pilot_xds_rejected 1\n"), "{text}");
        assert!(text.contains("sidecar_injection_success_total 1\n"), "{text}");
    }
}
