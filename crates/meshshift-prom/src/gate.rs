//! The traffic gate: over the last `window`, did the ingress serve enough requests, and few enough 5xx?
//!
//! The numbers come from `istio_requests_total`, the counter every Istio proxy exports (the lab's emulated
//! proxies too) with the labels `reporter` (`source` on gateways, `destination` on sidecars),
//! `response_code`, `source_workload`, `destination_service`, plus the lab's `proxy_revision` and
//! `proxy_version`. By default the gate reads `reporter="source"`: what the gateways (all colours) answered
//! to the clients behind the LoadBalancer, each request counted once.
//!
//! The gate runs one query, `sum by (response_code) (rate(istio_requests_total{M}[W]))`, so the request
//! rate and the 5xx rate come from the same evaluation, and decides from its samples with pure functions.
//! [`GateQuery`] also carries the classic two expressions (the ratio and the rate) for reports and for a
//! person to paste into Prometheus.

use std::time::Duration;

use crate::response::Sample;
use crate::{PromError, query};

/// The default series of the gate: what the gateways report.
pub const DEFAULT_MATCHERS: &str = r#"reporter="source""#;

/// The gate's thresholds and the series it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct PromGate {
    /// The highest acceptable share of 5xx answers (0.01 = 1 %).
    pub error_ratio_max: f64,
    /// The lowest request rate (requests per second) that makes the ratio meaningful; below it the gate
    /// breaches with [`Breach::TooLittleTraffic`] (0 accepts silence).
    pub min_rate: f64,
    /// The `rate()` window. Prometheus needs at least two scrapes in it: four scrape intervals or more.
    pub window: Duration,
    /// Label matchers (PromQL, without braces) selecting the series, e.g. [`DEFAULT_MATCHERS`] or
    /// `reporter="source",proxy_revision="1-10-6"`; empty for every series.
    pub matchers: String,
}

impl Default for PromGate {
    /// At most 1 % 5xx, at least 1 request/s, over 30 s, of what the gateways report.
    fn default() -> Self {
        PromGate::new(0.01, 1.0, Duration::from_secs(30))
    }
}

/// The PromQL of a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateQuery {
    /// What the gate runs: `sum by (response_code) (rate(istio_requests_total{M}[W]))`.
    pub by_code: String,
    /// The 5xx ratio: `sum(rate(istio_requests_total{M,response_code=~"5.."}[W])) /
    /// sum(rate(istio_requests_total{M}[W]))` (empty when nothing failed, NaN without traffic).
    pub error_ratio: String,
    /// The request rate: `sum(rate(istio_requests_total{M}[W]))`.
    pub request_rate: String,
}

/// What the gate saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateReading {
    /// Requests per second over the window.
    pub rate: f64,
    /// 5xx answers per second over the window.
    pub error_rate: f64,
    /// `error_rate / rate` (0 without traffic).
    pub error_ratio: f64,
}

/// Why the gate refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Breach {
    /// Too many 5xx answers.
    #[error("5xx ratio {ratio:.4} is above the maximum {max} ({error_rate:.2} of {rate:.2} requests/s over {window})")]
    ErrorRatio {
        /// The observed ratio.
        ratio: f64,
        /// The gate's maximum.
        max: f64,
        /// 5xx answers per second.
        error_rate: f64,
        /// Requests per second.
        rate: f64,
        /// The window, in PromQL syntax.
        window: String,
    },
    /// Not enough traffic to judge (no data at all included).
    #[error("too little traffic to judge: {rate:.2} requests/s over {window}, the gate needs at least {min}")]
    TooLittleTraffic {
        /// The observed rate.
        rate: f64,
        /// The gate's minimum.
        min: f64,
        /// The window, in PromQL syntax.
        window: String,
    },
}

impl PromGate {
    /// A gate over the gateways' series ([`DEFAULT_MATCHERS`]).
    pub fn new(error_ratio_max: f64, min_rate: f64, window: Duration) -> Self {
        PromGate { error_ratio_max, min_rate, window, matchers: DEFAULT_MATCHERS.to_owned() }
    }

    /// The gate's PromQL.
    pub fn queries(&self) -> GateQuery {
        let window = promql_duration(self.window);
        let all = selector(&self.matchers, None);
        let errors = selector(&self.matchers, Some(r#"response_code=~"5..""#));
        GateQuery {
            by_code: format!("sum by (response_code) (rate({all}[{window}]))"),
            error_ratio: format!("sum(rate({errors}[{window}])) / sum(rate({all}[{window}]))"),
            request_rate: format!("sum(rate({all}[{window}]))"),
        }
    }

    /// Runs [`GateQuery::by_code`] against the Prometheus at `base_url`; hand the samples to
    /// [`PromGate::evaluate`].
    pub async fn sample(&self, base_url: &str) -> Result<Vec<Sample>, PromError> {
        query(base_url, &self.queries().by_code).await
    }

    /// Decides from the samples of [`GateQuery::by_code`] (one per response code): first enough traffic
    /// (`rate >= min_rate`), then a 5xx ratio of at most `error_ratio_max`.
    pub fn evaluate(&self, samples: &[Sample]) -> Result<GateReading, Breach> {
        let window = promql_duration(self.window);
        let rate = request_rate(samples);
        let error_rate = error_rate(samples);
        if rate < self.min_rate {
            return Err(Breach::TooLittleTraffic { rate, min: self.min_rate, window });
        }
        let ratio = error_ratio(samples).unwrap_or(0.0);
        if ratio > self.error_ratio_max {
            return Err(Breach::ErrorRatio { ratio, max: self.error_ratio_max, error_rate, rate, window });
        }
        Ok(GateReading { rate, error_rate, error_ratio: ratio })
    }
}

/// The total request rate of `by_code` samples: the sum of their finite values.
pub fn request_rate(samples: &[Sample]) -> f64 {
    samples.iter().map(|s| s.value).filter(|v| v.is_finite()).sum()
}

/// The 5xx share of `by_code` samples (those whose `response_code` is `5xx`); `None` without traffic.
pub fn error_ratio(samples: &[Sample]) -> Option<f64> {
    let total = request_rate(samples);
    (total > 0.0).then(|| error_rate(samples) / total)
}

fn error_rate(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .filter(|s| s.label("response_code").is_some_and(is_5xx))
        .map(|s| s.value)
        .filter(|v| v.is_finite())
        .sum()
}

fn is_5xx(code: &str) -> bool {
    code.len() == 3 && code.starts_with('5') && code.bytes().all(|b| b.is_ascii_digit())
}

/// `istio_requests_total{matchers[,extra]}`.
fn selector(matchers: &str, extra: Option<&str>) -> String {
    let parts: Vec<&str> = [matchers.trim(), extra.unwrap_or("")].into_iter().filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        "istio_requests_total".to_owned()
    } else {
        format!("istio_requests_total{{{}}}", parts.join(","))
    }
}

/// A duration in PromQL syntax: whole seconds as `30s`, anything else in milliseconds (`1500ms`); at least
/// `1ms`.
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn by_code(rates: &[(&str, f64)]) -> Vec<Sample> {
        rates
            .iter()
            .map(|(code, value)| Sample {
                metric: BTreeMap::from([("response_code".to_owned(), (*code).to_owned())]),
                timestamp: 1.0,
                value: *value,
            })
            .collect()
    }

    #[test]
    fn queries_read_the_gateways_series() {
        let q = PromGate::new(0.01, 1.0, Duration::from_secs(10)).queries();
        assert_eq!(q.by_code, r#"sum by (response_code) (rate(istio_requests_total{reporter="source"}[10s]))"#);
        assert_eq!(
            q.error_ratio,
            r#"sum(rate(istio_requests_total{reporter="source",response_code=~"5.."}[10s])) / sum(rate(istio_requests_total{reporter="source"}[10s]))"#
        );
        assert_eq!(q.request_rate, r#"sum(rate(istio_requests_total{reporter="source"}[10s]))"#);
        let mut every = PromGate::new(0.01, 1.0, Duration::from_millis(2500));
        every.matchers = String::new();
        let q = every.queries();
        assert_eq!(q.request_rate, "sum(rate(istio_requests_total[2500ms]))");
        assert!(q.error_ratio.starts_with(r#"sum(rate(istio_requests_total{response_code=~"5.."}[2500ms]))"#));
    }

    #[test]
    fn durations_in_promql() {
        assert_eq!(promql_duration(Duration::from_secs(30)), "30s");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(promql_duration(Duration::ZERO), "1ms");
    }

    #[test]
    fn rates_and_ratios_from_samples() {
        let samples = by_code(&[("200", 9.0), ("503", 0.5), ("504", 0.5), ("404", 1.0), ("5xx", 7.0)]);
        // "5xx" is not a code: counted in the total only.
        assert_eq!(request_rate(&samples), 18.0);
        assert_eq!(error_ratio(&samples), Some(1.0 / 18.0));
        assert_eq!(error_ratio(&[]), None);
        assert_eq!(request_rate(&by_code(&[("200", f64::NAN), ("200", 2.0)])), 2.0);
    }

    #[test]
    fn a_healthy_window_passes() {
        let gate = PromGate::new(0.05, 1.0, Duration::from_secs(10));
        let reading = gate.evaluate(&by_code(&[("200", 99.0), ("503", 1.0)])).expect("1 % < 5 %");
        assert_eq!(reading, GateReading { rate: 100.0, error_rate: 1.0, error_ratio: 0.01 });
        assert_eq!(gate.evaluate(&by_code(&[("200", 20.0)])).map(|r| r.error_ratio), Ok(0.0));
        // Exactly at the maximum passes.
        assert!(gate.evaluate(&by_code(&[("200", 95.0), ("500", 5.0)])).is_ok());
    }

    #[test]
    fn too_many_errors_breach() {
        let gate = PromGate::new(0.01, 1.0, Duration::from_secs(10));
        let breach = gate.evaluate(&by_code(&[("200", 8.0), ("503", 2.0)])).expect_err("20 %");
        assert_eq!(
            breach,
            Breach::ErrorRatio { ratio: 0.2, max: 0.01, error_rate: 2.0, rate: 10.0, window: "10s".into() }
        );
        assert_eq!(
            breach.to_string(),
            "5xx ratio 0.2000 is above the maximum 0.01 (2.00 of 10.00 requests/s over 10s)"
        );
        assert!(
            matches!(gate.evaluate(&by_code(&[("503", 5.0)])), Err(Breach::ErrorRatio { ratio, .. }) if ratio == 1.0)
        );
    }

    #[test]
    fn too_little_traffic_breaches_unless_silence_is_accepted() {
        let gate = PromGate::new(0.01, 1.0, Duration::from_secs(10));
        assert_eq!(gate.evaluate(&[]), Err(Breach::TooLittleTraffic { rate: 0.0, min: 1.0, window: "10s".into() }));
        assert!(matches!(gate.evaluate(&by_code(&[("503", 0.5)])), Err(Breach::TooLittleTraffic { .. })));
        let silent_ok = PromGate::new(0.01, 0.0, Duration::from_secs(10));
        assert_eq!(silent_ok.evaluate(&[]), Ok(GateReading { rate: 0.0, error_rate: 0.0, error_ratio: 0.0 }));
        assert_eq!(PromGate::default().min_rate, 1.0);
    }
}
