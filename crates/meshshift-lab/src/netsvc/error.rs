//! Service networking's error type. The agent converts it into [`LabError::Agent`] at its boundary, so the
//! supervisor reports it like any other agent failure.

use std::path::PathBuf;

use crate::LabError;

/// What can go wrong in service networking.
#[derive(Debug, thiserror::Error)]
pub enum NetsvcError {
    /// The in-namespace admin client could not be built.
    #[error("could not build the service proxy's Kubernetes client: {0}")]
    Client(#[source] Box<LabError>),

    /// A watch stream ended; the kube watcher never ends on its own, so this means the runtime is going away.
    #[error("the {kind} watch stream ended")]
    WatchEnded {
        /// `Service` or `Endpoints`.
        kind: &'static str,
    },

    /// A file operation on the load balancer registry failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The load balancer registry could not be (de)serialized.
    #[error("{} is not a valid load balancer registry: {source}", path.display())]
    Registry {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// Binding a listener failed (address in use, or the host namespace could not be entered).
    #[error("could not listen on {addr}: {source}")]
    Listen {
        /// The address (`127.0.0.1:0 (host)` for host-side listeners).
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl NetsvcError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NetsvcError::Io { action, path: path.into(), source }
    }
}

impl From<NetsvcError> for LabError {
    fn from(err: NetsvcError) -> Self {
        LabError::Agent { name: super::AGENT_NAME.to_owned(), detail: err.to_string() }
    }
}
