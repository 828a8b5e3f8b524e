//! meshshift's upgrade engine: executes a plan (`meshshift_core::plan`) against the cluster.
//!
//! The core decides (planner, journal state machine); this crate does: each plan action has a module in
//! `steps` that reads prior values, writes, checks gates and undoes; `run` drives the journal, stored in
//! the cluster before every write, under a Lease so one run at a time. The CLI only wires it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod context;
pub mod drift;
pub mod error;
pub mod external;
pub mod gates;
pub mod objects;
pub mod run;
mod steps;

pub use context::{Ctx, LogObserver, Observer, Options, Phase, TrafficGate, TrafficVerdict};
pub use error::EngineError;
pub use run::{Outcome, Run};
