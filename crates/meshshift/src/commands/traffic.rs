//! The in-process prober as a traffic gate: the engine asks it after every step (and during soaks)
//! whether the requests scheduled since the step began kept the objective (`meshshift_core::slo`).

use std::sync::Arc;

use futures::future::BoxFuture;
use meshshift_core::slo::{Slo, Verdict, WindowStats, evaluate};
use meshshift_engine::{TrafficGate, TrafficVerdict};
use meshshift_probe::ProbeHandle;

/// A gate over a running probe.
pub struct ProberGate {
    /// The probe.
    pub handle: Arc<ProbeHandle>,
    /// The objective.
    pub slo: Slo,
}

impl TrafficGate for ProberGate {
    fn name(&self) -> &str {
        "prober"
    }

    fn check(&self, since_unix_ms: u64) -> BoxFuture<'_, TrafficVerdict> {
        let w = self.handle.window(since_unix_ms);
        let stats = WindowStats { ok: w.ok, failed: w.failed, p99_us: w.p99_us };
        let verdict = match evaluate(&self.slo, &stats) {
            Verdict::Pass(s) => TrafficVerdict::Pass(s),
            Verdict::NotEnough(s) => TrafficVerdict::NotEnough(s),
            Verdict::Breach(s) => TrafficVerdict::Breach(match w.first_failure {
                Some(first) => format!("{s} (first failure: {first})"),
                None => s,
            }),
        };
        Box::pin(std::future::ready(verdict))
    }
}

/// Prometheus as a traffic gate: the 5xx share of `istio_requests_total` the gateways report, over a
/// sliding window. It sees every client's traffic, not only the prober's.
pub struct PrometheusGate {
    /// Prometheus' base URL.
    pub url: String,
    /// The thresholds and window.
    pub gate: meshshift_prom::PromGate,
}

impl TrafficGate for PrometheusGate {
    fn name(&self) -> &str {
        "prometheus"
    }

    fn check(&self, _since_unix_ms: u64) -> BoxFuture<'_, TrafficVerdict> {
        Box::pin(async move {
            let samples = match self.gate.sample(&self.url).await {
                Ok(s) => s,
                // An unreachable Prometheus cannot vouch for the step: wait (the engine gives up after
                // its patience and stops the run).
                Err(e) => return TrafficVerdict::NotEnough(format!("querying {}: {e}", self.url)),
            };
            match self.gate.evaluate(&samples) {
                Ok(r) => TrafficVerdict::Pass(format!(
                    "{:.1} requests/s, 5xx ratio {:.4} over {}",
                    r.rate,
                    r.error_ratio,
                    meshshift_prom::promql_duration(self.gate.window)
                )),
                Err(b @ meshshift_prom::Breach::TooLittleTraffic { .. }) => TrafficVerdict::NotEnough(b.to_string()),
                Err(b) => TrafficVerdict::Breach(b.to_string()),
            }
        })
    }
}
