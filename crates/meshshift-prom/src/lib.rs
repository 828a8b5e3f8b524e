//! meshshift's Prometheus client: the traffic gate of an upgrade, read from a real Prometheus.
//!
//! An upgrade step is only safe if the mesh keeps serving: the gate asks Prometheus for the ingress
//! gateways' request rate and 5xx ratio over a short window (`istio_requests_total`, as Istio's proxies and
//! the lab's emulated ones export it) and refuses to go on when the ratio is above a maximum or there was
//! too little traffic to tell.
//!
//! - [`query`] sends one instant query (`GET /api/v1/query`) over a plain HTTP/1.1 connection of its own.
//!   Only loopback and the lab's addresses may be queried ([`Endpoint::parse`]): the client never follows a
//!   name or a redirect elsewhere.
//! - [`parse_response`] turns Prometheus' JSON (vector, scalar, error) into [`Sample`]s; pure.
//! - [`PromGate`] writes the gate's PromQL ([`GateQuery`]) and [`PromGate::evaluate`] decides from its
//!   samples (request rate, 5xx ratio); pure, so every threshold is unit-tested without a Prometheus.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
mod gate;
mod response;

pub use client::{DEFAULT_TIMEOUT, Endpoint, LAB_RANGES, is_allowed_host, query, query_with_timeout};
pub use error::PromError;
pub use gate::{
    Breach, DEFAULT_MATCHERS, GateQuery, GateReading, PromGate, error_ratio, promql_duration, request_rate,
};
pub use response::{Sample, parse_response};
