//! Traffic gates: is what users saw during a step within the error budget and the latency ceiling?
//!
//! The engine asks after every step (and every second of a soak window) over the requests scheduled since
//! the step began. A window with too few requests proves nothing, so it is "not enough yet" rather than a
//! pass; the caller waits for more traffic.

use serde::{Deserialize, Serialize};

/// The service-level objective a step must keep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Largest share of failed requests allowed in a step (0: none may fail).
    pub max_failure_ratio: f64,
    /// Highest p99 latency allowed, microseconds.
    pub p99_ceiling_us: Option<u64>,
    /// Fewest requests a window must hold before it can pass.
    pub min_requests: u64,
}

impl Default for Slo {
    /// Zero failed requests, no latency ceiling, at least 20 requests.
    fn default() -> Self {
        Self { max_failure_ratio: 0.0, p99_ceiling_us: None, min_requests: 20 }
    }
}

/// What a window held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStats {
    /// Succeeded requests.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
    /// p99 latency, microseconds.
    pub p99_us: Option<u64>,
}

/// The verdict on a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Within the objective (the summary says by how much).
    Pass(String),
    /// Not enough requests yet to judge.
    NotEnough(String),
    /// Outside the objective: stop the upgrade.
    Breach(String),
}

/// Judges `w` against `slo`. A breach of the error budget is reported even on few requests (a failure is
/// a failure); a pass needs `min_requests`.
pub fn evaluate(slo: &Slo, w: &WindowStats) -> Verdict {
    let total = w.ok + w.failed;
    let ratio = if total == 0 { 0.0 } else { w.failed as f64 / total as f64 };
    let p99 = w.p99_us.map(|us| format!("{:.1} ms", us as f64 / 1000.0)).unwrap_or_else(|| "-".into());
    let summary = format!("{total} requests, {} failed ({:.3}%), p99 {p99}", w.failed, ratio * 100.0);
    if w.failed > 0 && ratio > slo.max_failure_ratio {
        return Verdict::Breach(format!("{summary}: above the error budget of {:.3}%", slo.max_failure_ratio * 100.0));
    }
    if total < slo.min_requests {
        return Verdict::NotEnough(format!("{summary}: waiting for {} requests", slo.min_requests));
    }
    match (slo.p99_ceiling_us, w.p99_us) {
        (Some(ceiling), Some(p99)) if p99 > ceiling => {
            Verdict::Breach(format!("{summary}: p99 above the ceiling of {:.1} ms", ceiling as f64 / 1000.0))
        }
        _ => Verdict::Pass(summary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ok: u64, failed: u64, p99_ms: u64) -> WindowStats {
        WindowStats { ok, failed, p99_us: Some(p99_ms * 1000) }
    }

    #[test]
    fn zero_budget_breaches_on_one_failure_even_early() {
        let slo = Slo::default();
        assert!(matches!(evaluate(&slo, &w(3, 1, 5)), Verdict::Breach(m) if m.contains("error budget")));
        assert!(matches!(evaluate(&slo, &w(5, 0, 5)), Verdict::NotEnough(_)));
        assert!(matches!(evaluate(&slo, &w(500, 0, 5)), Verdict::Pass(m) if m.starts_with("500 requests, 0 failed")));
    }

    #[test]
    fn budgets_and_ceilings() {
        let slo = Slo { max_failure_ratio: 0.01, p99_ceiling_us: Some(50_000), min_requests: 100 };
        assert!(matches!(evaluate(&slo, &w(995, 5, 10)), Verdict::Pass(_)), "0.5% within 1%");
        assert!(matches!(evaluate(&slo, &w(980, 20, 10)), Verdict::Breach(_)), "2% above 1%");
        assert!(matches!(evaluate(&slo, &w(1000, 0, 80)), Verdict::Breach(m) if m.contains("ceiling")));
        assert!(matches!(evaluate(&slo, &WindowStats::default()), Verdict::NotEnough(_)));
    }
}
