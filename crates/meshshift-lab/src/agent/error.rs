//! Why the node agent stops. Everything per pod or per heartbeat is retried and logged instead: only
//! failing to start at all is fatal (it stops the lab, which would otherwise wait forever for pods).

use crate::LabError;

/// A fatal node agent error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// More nodes than the pod range can hold (`10.244.<node>.0/24`, and `10.244.255.x` is taken by the
    /// apiserver's advertise address).
    #[error("the lab supports at most {max} nodes, {asked} were asked for")]
    TooManyNodes {
        /// The limit.
        max: u32,
        /// The request.
        asked: u32,
    },
    /// The agent's API client could not be built.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// Registering a node failed.
    #[error("registering node {node}: {source}")]
    Register {
        /// The node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl From<AgentError> for LabError {
    fn from(err: AgentError) -> LabError {
        match err {
            AgentError::Lab(err) => err,
            other => LabError::Agent { name: super::AGENT_NAME.into(), detail: other.to_string() },
        }
    }
}
