//! meshshift's lab: a real Kubernetes 1.20 control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler) running inside a private network namespace, reachable from the host on 127.0.0.1.
//!
//! The lab is split in two halves so that it can serve both integration tests and a long-lived lab:
//! - [`supervisor::run`] is the first thing a dedicated process does: it unshares a network namespace
//!   (which must happen while the process is still single-threaded), starts the control plane inside it and
//!   forwards a host-side port to the apiserver until it is told to stop.
//! - [`testing::TestCluster`] is the client handle: it starts such a supervisor process, waits for its
//!   ready line and tears it down on drop.
//!
//! Why a separate process: a network namespace belongs to a thread/process, and a test binary is
//! multi-threaded long before any test runs, so the namespace cannot be entered from inside the tests.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod agent;
pub mod binaries;
pub mod containers;
pub mod daemon;
mod error;
pub mod kubeconfig;
pub mod layout;
pub mod pki;
pub mod state;
pub mod supervisor;
pub mod testing;

mod components;
mod forward;
pub mod netns;
pub mod netsvc;
pub mod options;
mod process;
pub mod prometheus;
mod readiness;

pub use error::LabError;
pub use layout::LabLayout;
pub use options::LabOptions;
pub use state::LabState;
pub use supervisor::{Agent, AgentContext, SupervisorOptions};
pub use testing::TestCluster;
