//! One request's record: one JSON line each in `--out`.
//!
//! Times are microseconds from the probe's start, so records from one run line up with each other and with
//! the run's start time (`started_unix_ms`). Latency is counted from the *scheduled* time: if the request had
//! to wait for a free connection, the wait is part of what a user would have seen. `service_us` is the part
//! after a connection took the request.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Response headers that say who answered. The lab's emulated gateways and sidecars set the
/// `x-meshshift-*` ones (`meshshift-lab`'s `HEADER_*` constants); a gateway keeps its upstream's values
/// under `x-meshshift-upstream-*`. Real Envoys set `server: istio-envoy`.
pub mod headers {
    /// The answering proxy's revision.
    pub const REVISION: &str = "x-meshshift-revision";
    /// The answering proxy's Istio version.
    pub const VERSION: &str = "x-meshshift-version";
    /// `gateway` or `sidecar`.
    pub const PROXY: &str = "x-meshshift-proxy";
    /// The answering pod (`namespace/name`).
    pub const POD: &str = "x-meshshift-pod";
    /// Behind a gateway: the upstream sidecar's revision.
    pub const UPSTREAM_REVISION: &str = "x-meshshift-upstream-revision";
    /// Behind a gateway: the upstream sidecar's Istio version.
    pub const UPSTREAM_VERSION: &str = "x-meshshift-upstream-version";
    /// Behind a gateway: the backend pod that answered.
    pub const UPSTREAM_POD: &str = "x-meshshift-upstream-pod";
    /// The server software.
    pub const SERVER: &str = "server";
}

/// Why a request got no complete HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The connection was refused (nothing listens: a pod or forwarder is gone).
    ConnectRefused,
    /// Connecting took longer than the request timeout.
    ConnectTimeout,
    /// Connecting failed otherwise (unreachable, name resolution).
    Connect,
    /// The peer reset the connection (or it broke while writing).
    Reset,
    /// The connection closed before a complete response (a drained or killed proxy).
    Closed,
    /// No complete response within the request timeout.
    Timeout,
    /// The response was not valid HTTP.
    Protocol,
    /// Still queued or in flight when the prober stopped and its drain time ran out.
    Aborted,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The stable name used in JSON and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    /// Sequence number (the schedule's order).
    pub seq: u64,
    /// The URL requested.
    pub url: String,
    /// When it was due.
    pub scheduled_us: u64,
    /// When a connection took it (`None`: aborted while still queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_us: Option<u64>,
    /// From the scheduled time to the complete response or the failure: queueing included.
    pub latency_us: u64,
    /// From the send time to the complete response or the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_us: Option<u64>,
    /// A complete response with a 2xx or 3xx status.
    pub ok: bool,
    /// The response status, if one arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why there is no complete response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// The underlying error message; for a response with a failing status, what its body says: the first
    /// line, or an HTML error page's text (a proxy's `upstream connect error: ...`, an app's "details are
    /// unavailable": which hop failed), at most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    /// Sent on a connection that had already served a request (a failure there may be a stale keep-alive).
    #[serde(default)]
    pub reused: bool,
    /// `x-meshshift-revision`: the answering proxy's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `x-meshshift-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `x-meshshift-proxy`: `gateway` or `sidecar`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// `x-meshshift-pod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `x-meshshift-upstream-revision`: behind a gateway, the backend sidecar's revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_revision: Option<String>,
    /// `x-meshshift-upstream-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_version: Option<String>,
    /// `x-meshshift-upstream-pod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_pod: Option<String>,
    /// `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// Whether a status counts as served: 2xx and 3xx. A 4xx during an upgrade (a route that vanished) or a
/// 5xx (no healthy upstream) is a failure the user would have seen.
pub fn is_success_status(status: u16) -> bool {
    (200..400).contains(&status)
}

impl Record {
    /// Whether the request failed (no complete response, or a 4xx/5xx status).
    pub fn failed(&self) -> bool {
        !self.ok
    }

    /// The revision key for tallies: the answering revision, `(none)` for a response without the header,
    /// `None` when there was no response at all.
    pub fn revision_key(&self) -> Option<&str> {
        self.status?;
        Some(self.revision.as_deref().unwrap_or(NO_REVISION))
    }
}

/// The tally key for responses without an `x-meshshift-revision` header.
pub const NO_REVISION: &str = "(none)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_compactly_and_round_trips() {
        let r = Record {
            seq: 3,
            url: "http://127.0.0.1:1/".into(),
            scheduled_us: 30_000,
            sent_us: Some(30_010),
            latency_us: 1_500,
            service_us: Some(1_490),
            ok: false,
            error: Some(ErrorKind::ConnectRefused),
            ..Record::default()
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"seq":3,"url":"http://127.0.0.1:1/","scheduled_us":30000,"sent_us":30010,"latency_us":1500,"service_us":1490,"ok":false,"error":"connect_refused","reused":false}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        assert_eq!(r.revision_key(), None);
    }

    #[test]
    fn statuses_and_revision_keys() {
        assert!(is_success_status(200) && is_success_status(301) && !is_success_status(404) && !is_success_status(503));
        let mut r = Record { status: Some(200), ok: true, ..Record::default() };
        assert_eq!(r.revision_key(), Some(NO_REVISION));
        r.revision = Some("1-10-6".into());
        assert_eq!(r.revision_key(), Some("1-10-6"));
        for k in [ErrorKind::ConnectRefused, ErrorKind::Aborted, ErrorKind::ConnectTimeout] {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::String(k.to_string()));
        }
    }
}
