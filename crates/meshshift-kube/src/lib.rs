//! meshshift's Kubernetes adapter.
//!
//! A thin layer between the API server and `meshshift-core`: [`connect`] builds a client the way kubectl
//! would (kubeconfig, context), [`snapshot::read_snapshot`] reads one paginated list per kind into the
//! core's [`ClusterSnapshot`](meshshift_core::model::ClusterSnapshot), and [`manifest`] applies
//! multi-document YAML. No decision about Istio is made here.
#![forbid(unsafe_code)]

pub mod connect;
pub mod convert;
pub mod install;
pub mod journal_store;
pub mod list;
pub mod lock;
pub mod manifest;
pub mod retry;
pub mod rollout;
pub mod snapshot;

pub use connect::{ConnectError, ConnectOptions, connect};
pub use snapshot::{ReadError, read_snapshot};
