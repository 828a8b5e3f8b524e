//! meshshift's open-loop HTTP prober.
//!
//! An upgrade is only "zero-downtime" if traffic says so. This crate sends HTTP requests at a constant arrival
//! rate (open loop: a request's send time never depends on an earlier response), records every request
//! (scheduled time, send time, latency from the *scheduled* time, status or transport-error kind, and the
//! revision that answered), and aggregates them into 100 ms buckets and an HDR-histogram summary. Failed
//! requests are records like any other: nothing is dropped.
//!
//! It is a library so the upgrade engine can run it in-process around each step ([`Prober::start`] ->
//! [`ProbeHandle::snapshot`] / [`ProbeHandle::stop`]); `meshshift probe` is its command-line front end.
//!
//! Modules: [`schedule`] (pure arrival times), [`record`] (one request's record), [`buckets`] (pure
//! aggregation), [`target`] (which URLs may be probed), `client` (HTTP/1 connections), `response`
//! (HTTP/1 response framing, no I/O), [`run`] (the tokio
//! driver).
#![forbid(unsafe_code)]

pub mod buckets;
mod client;
pub mod config;
pub mod record;
mod response;
pub mod run;
pub mod schedule;
pub mod target;

pub use buckets::{Bucket, FailureWindow, Latency, RevisionShare, Summary, bucketize, summarize};
pub use config::{MAX_CONNECTIONS, ProbeConfig, ProbeError, default_connections, parse_duration, parse_header};
pub use record::{ErrorKind, Record};
pub use run::{ProbeHandle, ProbeResult, ProbeSnapshot, Prober, Stopper, Window};
pub use schedule::{Schedule, Slot};
pub use target::{Target, is_allowed_host};
