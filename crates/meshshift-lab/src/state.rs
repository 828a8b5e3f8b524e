//! `<dir>/state.json`: what a running supervisor tells other processes about itself (the client handle, a
//! later `meshshift lab status`/`stop`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LabError;
use crate::pki::write_file;

/// The contents of `<dir>/state.json`, written once the control plane is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    /// The supervisor's pid.
    pub pid: u32,
    /// The host-side port forwarded to the apiserver.
    pub host_port: u16,
    /// `https://127.0.0.1:<host_port>`.
    pub apiserver: String,
    /// The admin kubeconfig for the host.
    pub kubeconfig: PathBuf,
    /// The lab directory.
    pub dir: PathBuf,
    /// When the supervisor started (seconds since the Unix epoch).
    pub started_at: u64,
    /// When the control plane became ready (seconds since the Unix epoch).
    pub ready_at: u64,
    /// Milliseconds from supervisor start to ready.
    pub startup_ms: u64,
    /// How the network namespace was made: `root` or `user`.
    pub namespace: String,
    /// Pids of the control-plane processes, by component name.
    pub children: BTreeMap<String, u32>,
    /// `http://127.0.0.1:<port>`: the lab's Prometheus as seen from the host, when the lab runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
}

impl LabState {
    /// Writes the state atomically.
    pub fn write(&self, path: &Path) -> Result<(), LabError> {
        write_file(path, serde_json::to_string_pretty(self)?.as_bytes(), 0o644)
    }

    /// Reads a state file.
    pub fn read(path: &Path) -> Result<LabState, LabError> {
        let text = std::fs::read_to_string(path).map_err(|e| LabError::io("read", path, e))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// The ready line the supervisor prints on stdout (one JSON object on one line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// Always true.
    pub ready: bool,
    /// The admin kubeconfig for the host.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<host port>`.
    pub apiserver: String,
}
