//! Why an emulated istiod stops with an error (the container then fails, as a crashing istiod would).

use std::net::SocketAddr;

use super::ca::CaError;
use super::identity::IdentityError;
use super::webhook::TlsError;
use crate::containers::ContainerError;

/// An istiod failure.
#[derive(Debug, thiserror::Error)]
pub enum IstiodError {
    /// The container is not a usable istiod (no version tag, bad revision).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A port is taken.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The CA material is unusable (retrying will not help).
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The webhook's TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A part that should run forever ended.
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
}

impl From<IstiodError> for ContainerError {
    fn from(err: IstiodError) -> Self {
        match err {
            IstiodError::Bind { addr, source } => ContainerError::Bind { addr: addr.to_string(), source },
            IstiodError::Identity(e) => ContainerError::Config(e.to_string()),
            other => ContainerError::Other(other.to_string()),
        }
    }
}
