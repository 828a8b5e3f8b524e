//! The client's error type: every variant says which Prometheus and what went wrong.

use std::time::Duration;

/// Why a query did not produce samples.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The base URL is not `http://HOST[:PORT][/PREFIX]`.
    #[error("invalid Prometheus URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The host is neither loopback nor a lab address.
    #[error(
        "refusing to query Prometheus at {url}: {host} is not a loopback address (127.0.0.0/8, ::1, localhost) \
         or a lab address (10.244.0.0/16 pods, 10.96.0.0/16 services, 10.250.0.0/24 load balancers)"
    )]
    NotAllowed {
        /// The URL as given.
        url: String,
        /// Its host.
        host: String,
    },

    /// The TCP connection could not be made.
    #[error("could not connect to Prometheus at {url}: {source}")]
    Connect {
        /// The base URL.
        url: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The HTTP exchange failed (connection reset, malformed HTTP, ...).
    #[error("HTTP exchange with Prometheus at {url} failed: {detail}")]
    Http {
        /// The base URL.
        url: String,
        /// What hyper said, with its causes.
        detail: String,
    },

    /// No complete answer within the timeout.
    #[error("Prometheus at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The base URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },

    /// Prometheus answered `"status": "error"` (bad PromQL, a failed or timed-out evaluation).
    #[error("Prometheus refused the query ({error_type}, HTTP {status}): {message}")]
    Api {
        /// The HTTP status (400 bad_data, 422 execution, 503 timeout/canceled, ...).
        status: u16,
        /// Prometheus' `errorType`.
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },

    /// A non-2xx answer that is not a Prometheus API error (a proxy, another server on that port).
    #[error("unexpected HTTP {status} from {url} (not a Prometheus API answer): {body}")]
    Status {
        /// The base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },

    /// The body is not the JSON the query API documents.
    #[error("malformed Prometheus response: {0}")]
    Malformed(String),

    /// A result type an instant query of the gate cannot use (`matrix` from a range selector, `string`).
    #[error("the query returned a {result_type}; an instant query must return a vector or a scalar")]
    UnexpectedResultType {
        /// Prometheus' `resultType`.
        result_type: String,
    },
}
