//! meshshift's pure core.
//!
//! Everything here is plain data and pure functions: no Kubernetes client, no async runtime, no file or
//! network I/O. Adapters (the `meshshift-kube` crate, the lab) translate the outside world into this crate's
//! model and carry its decisions back out, so the rules that decide an upgrade can be tested exhaustively
//! without a cluster.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod drift;
pub mod fields;
pub mod finding;
pub mod green;
pub mod journal;
pub mod lock;
pub mod model;
pub mod path;
pub mod plan;
pub mod proxy;
pub mod rbac;
pub mod render;
pub mod selector;
pub mod slo;
pub mod status;
pub mod version;
