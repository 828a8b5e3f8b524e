//! When the emulated Envoy tries a forwarded request again: a VirtualService rule's `retries`, translated
//! as istiod does it (`pilot/pkg/networking/core/route/retry`).
//!
//! - No `retries`: Istio's default policy, 2 retries on
//!   `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with 503 retriable. So a
//!   503 from upstream (its sidecar's "upstream connect error", an app's own 503) is tried again, as in
//!   production. Why it matters: without it the lab would fail requests that Istio's gateways hide from
//!   users, and blame the upgrade for them.
//! - `attempts` 0 (or missing): no retries.
//! - `retryOn` given: its conditions replace the default ones; bare status codes count as
//!   `retriable-status-codes`.
//!
//! Conditions the lab tells apart: `connect-failure` (no connection to the upstream), `reset` (the
//! connection broke before a response; also `reset-before-request`), and response statuses. As Envoy
//! defines them, `5xx` is every 5xx status plus both failures, `gateway-error` is 502-504 plus both, and
//! `retriable-4xx` is 409. `refused-stream`, `unavailable`, `cancelled` and `resource-exhausted` concern
//! HTTP/2 and gRPC, which the lab does not speak: accepted, no effect. Not modelled: `perTryTimeout`,
//! the back-off's jitter, and Envoy's preference for hosts not tried yet (`previous_hosts`): a retry goes
//! to the Service's ClusterIP again, where kube-proxy's pick decides.

use serde_json::Value;

/// How a forwarded request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    /// Retry when no connection could be made.
    pub connect_failure: bool,
    /// Retry when the connection broke before a response.
    pub reset: bool,
    /// Inclusive ranges of response statuses to retry.
    statuses: Vec<(u16, u16)>,
}

impl RetryPolicy {
    /// No retries (a sidecar's hop to its own app).
    pub const NONE: RetryPolicy =
        RetryPolicy { attempts: 0, connect_failure: false, reset: false, statuses: Vec::new() };

    /// Istio's default policy.
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy { attempts: 2, connect_failure: true, reset: false, statuses: vec![(503, 503)] }
    }

    /// The policy of a rule whose `retries` is `retries` (`None`: the rule has none).
    pub fn from_rule(retries: Option<&Value>) -> RetryPolicy {
        let Some(retries) = retries else { return RetryPolicy::istio_default() };
        let attempts = retries.get("attempts").and_then(Value::as_u64).unwrap_or(0);
        if attempts == 0 {
            return RetryPolicy::NONE;
        }
        let mut policy = RetryPolicy::istio_default();
        policy.attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        if let Some(on) = retries.get("retryOn").and_then(Value::as_str).filter(|s| !s.trim().is_empty()) {
            policy.connect_failure = false;
            policy.statuses.clear();
            for condition in on.split(',').map(str::trim) {
                policy.add(condition);
            }
        }
        policy
    }

    fn add(&mut self, condition: &str) {
        let (failures, statuses) = match condition {
            "connect-failure" => {
                self.connect_failure = true;
                return;
            }
            "reset" | "reset-before-request" => {
                self.reset = true;
                return;
            }
            "5xx" => (true, Some((500, 599))),
            "gateway-error" => (true, Some((502, 504))),
            "retriable-4xx" => (false, Some((409, 409))),
            code => (false, code.parse::<u16>().ok().filter(|c| (100..=599).contains(c)).map(|c| (c, c))),
        };
        if failures {
            self.connect_failure = true;
            self.reset = true;
        }
        self.statuses.extend(statuses);
    }

    /// Whether a response with `status` is tried again (while attempts are left).
    pub fn retries_status(&self, status: u16) -> bool {
        self.statuses.iter().any(|&(from, to)| (from..=to).contains(&status))
    }

    /// Whether a failure to get a response is tried again: `connect` when no connection could be made.
    pub fn retries_failure(&self, connect: bool) -> bool {
        if connect { self.connect_failure } else { self.reset }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn without_retries_a_route_gets_istios_default() {
        let p = RetryPolicy::from_rule(None);
        assert_eq!(p.attempts, 2);
        assert!(p.retries_status(503) && p.retries_failure(true));
        assert!(
            !p.retries_status(500) && !p.retries_status(502) && !p.retries_status(200) && !p.retries_failure(false)
        );
    }

    #[test]
    fn attempts_zero_or_missing_turns_retries_off() {
        for retries in [json!({"attempts": 0}), json!({}), json!({"attempts": 0, "retryOn": "5xx"})] {
            let p = RetryPolicy::from_rule(Some(&retries));
            assert_eq!(p, RetryPolicy::NONE, "{retries}");
            assert!(!p.retries_status(503) && !p.retries_failure(true) && !p.retries_failure(false));
        }
    }

    #[test]
    fn attempts_alone_keep_the_default_conditions() {
        let p = RetryPolicy::from_rule(Some(&json!({"attempts": 5, "perTryTimeout": "2s"})));
        assert_eq!(p, RetryPolicy { attempts: 5, ..RetryPolicy::istio_default() });
        let p = RetryPolicy::from_rule(Some(&json!({"attempts": 3, "retryOn": " "})));
        assert_eq!(p, RetryPolicy { attempts: 3, ..RetryPolicy::istio_default() });
    }

    #[test]
    fn retry_on_replaces_the_conditions() {
        let p = RetryPolicy::from_rule(Some(&json!({"attempts": 3, "retryOn": "connect-failure"})));
        assert!(p.retries_failure(true) && !p.retries_failure(false) && !p.retries_status(503));
        let p = RetryPolicy::from_rule(Some(&json!({"attempts": 3, "retryOn": "gateway-error"})));
        assert!(p.retries_failure(true) && p.retries_failure(false));
        assert!([502, 503, 504].iter().all(|&s| p.retries_status(s)) && !p.retries_status(500));
        let p = RetryPolicy::from_rule(Some(&json!({"attempts": 1, "retryOn": "5xx,retriable-4xx"})));
        assert!(p.retries_status(500) && p.retries_status(599) && p.retries_status(409) && !p.retries_status(404));
        // Bare codes are retriable-status-codes; HTTP/2 and gRPC conditions and junk change nothing.
        let p = RetryPolicy::from_rule(Some(&json!({
            "attempts": 2,
            "retryOn": "retriable-status-codes, 429 ,refused-stream,unavailable,cancelled,bogus,999"
        })));
        assert_eq!(p.statuses, vec![(429, 429)]);
        assert!(!p.retries_failure(true) && !p.retries_failure(false));
        let p = RetryPolicy::from_rule(Some(&json!({"attempts": 2, "retryOn": "reset-before-request"})));
        assert!(p.retries_failure(false) && !p.retries_failure(true) && !p.retries_status(503));
    }
}
