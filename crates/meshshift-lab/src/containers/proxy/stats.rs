//! Counters in Prometheus text format, as an Istio proxy exposes them on `:15090/stats/prometheus` (and
//! pilot-agent's merged view on `:15020`).
//!
//! Why: a Prometheus-style gate (error rate by response code during an upgrade) and the drain check
//! ("active connections reached zero before deleting blue") read these. Only the series that matter are
//! kept: `istio_requests_total` by response code, and downstream connection gauges.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use http::StatusCode;

use super::serve::{Handler, text};
use super::state::ProxyState;

/// Which side of a request the proxy reports (`reporter` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reporter {
    /// A gateway reports the requests it sends (Istio: `reporter="source"`).
    Source,
    /// A sidecar reports the requests its app receives.
    Destination,
}

impl Reporter {
    fn label(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RequestKey {
    reporter: Reporter,
    source_workload: String,
    destination_service: String,
    response_code: u16,
}

/// The proxy's counters.
#[derive(Debug, Default)]
pub struct Stats {
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    active_connections: AtomicU64,
    total_connections: AtomicU64,
}

/// Decrements the active-connection gauge when the connection ends.
#[derive(Debug)]
pub struct ConnectionGuard<'a> {
    stats: &'a Stats,
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.stats.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats {
    /// Counts one request.
    pub fn record(&self, reporter: Reporter, source_workload: &str, destination_service: &str, response_code: u16) {
        let key = RequestKey {
            reporter,
            source_workload: source_workload.to_owned(),
            destination_service: destination_service.to_owned(),
            response_code,
        };
        if let Ok(mut map) = self.requests.lock() {
            *map.entry(key).or_default() += 1;
        }
    }

    /// Counts a new downstream (data-plane) connection until the guard drops.
    pub fn connection_opened(&self) -> ConnectionGuard<'_> {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard { stats: self }
    }

    /// Open downstream connections (what `EXIT_ON_ZERO_ACTIVE_CONNECTIONS` waits on).
    pub fn active_connections(&self) -> u64 {
        self.active_connections.load(Ordering::Relaxed)
    }

    /// Requests counted with `response_code`, over all other labels.
    pub fn requests_with_code(&self, response_code: u16) -> u64 {
        self.requests
            .lock()
            .map(|m| m.iter().filter(|(k, _)| k.response_code == response_code).map(|(_, n)| n).sum())
            .unwrap_or(0)
    }

    /// The Prometheus text exposition; `labels` are added to every series (e.g. the proxy's revision).
    pub fn render(&self, labels: &[(&str, &str)], connected: bool) -> String {
        let extra: String = labels.iter().map(|(k, v)| format!(",{k}=\"{}\"", escape(v))).collect();
        let mut out = String::new();
        out.push_str("# TYPE istio_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for (key, count) in map.iter() {
                let _ = writeln!(
                    out,
                    "istio_requests_total{{response_code=\"{}\",source_workload=\"{}\",destination_service=\"{}\",reporter=\"{}\"{extra}}} {count}",
                    key.response_code,
                    escape(&key.source_workload),
                    escape(&key.destination_service),
                    key.reporter.label(),
                );
            }
        }
        let first = extra.strip_prefix(',').unwrap_or_default();
        let braces = if first.is_empty() { String::new() } else { format!("{{{first}}}") };
        let _ = writeln!(out, "# TYPE envoy_http_downstream_cx_active gauge");
        let _ = writeln!(out, "envoy_http_downstream_cx_active{braces} {}", self.active_connections());
        let _ = writeln!(out, "# TYPE envoy_http_downstream_cx_total counter");
        let _ =
            writeln!(out, "envoy_http_downstream_cx_total{braces} {}", self.total_connections.load(Ordering::Relaxed));
        let _ = writeln!(out, "# TYPE meshshift_proxy_xds_connected gauge");
        let _ = writeln!(out, "meshshift_proxy_xds_connected{braces} {}", u8::from(connected));
        out
    }
}

/// Ports serving `/stats/prometheus`: Envoy's own, and pilot-agent's merged view that the
/// `prometheus.io/port: "15020"` annotation of Istio's charts points at.
pub const STATS_PORTS: [u16; 2] = [15090, 15020];
/// The stats path.
pub const STATS_PATH: &str = "/stats/prometheus";

/// The stats endpoint's handler; every series carries the proxy's revision and version.
pub fn handler(state: Arc<ProxyState>) -> Handler {
    Arc::new(move |request| {
        let state = state.clone();
        async move {
            if request.uri().path() != STATS_PATH {
                return text(StatusCode::NOT_FOUND, "not found\n");
            }
            let id = &state.identity;
            let labels = [("proxy_revision", id.revision.as_str()), ("proxy_version", id.version.as_str())];
            let mut response = text(StatusCode::OK, state.stats.render(&labels, state.connected()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        .boxed()
    })
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_by_code_and_connection_gauges() {
        let stats = Stats::default();
        stats.record(Reporter::Source, "istio-ingressgateway", "productpage.default.svc.cluster.local", 200);
        stats.record(Reporter::Source, "istio-ingressgateway", "productpage.default.svc.cluster.local", 200);
        stats.record(Reporter::Source, "istio-ingressgateway", "unknown", 404);
        let guard = stats.connection_opened();
        let text = stats.render(&[("proxy_revision", "1-9-7")], true);
        assert!(text.contains(
            "istio_requests_total{response_code=\"200\",source_workload=\"istio-ingressgateway\",destination_service=\"productpage.default.svc.cluster.local\",reporter=\"source\",proxy_revision=\"1-9-7\"} 2\n"
        ), "{text}");
        assert!(text.contains("response_code=\"404\""), "{text}");
        assert!(text.contains("envoy_http_downstream_cx_active{proxy_revision=\"1-9-7\"} 1\n"), "{text}");
        assert!(text.contains("meshshift_proxy_xds_connected{proxy_revision=\"1-9-7\"} 1\n"), "{text}");
        drop(guard);
        assert_eq!(stats.active_connections(), 0);
        assert_eq!(stats.requests_with_code(200), 2);
        assert!(stats.render(&[], false).contains("envoy_http_downstream_cx_active 0\n"));
    }
}
