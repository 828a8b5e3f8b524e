//! Exit codes: distinct per failure class so scripts can tell "fix your kubeconfig" from "the cluster is
//! down" from "the mesh has problems".

use std::process::ExitCode;

/// meshshift's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// An unexpected failure.
    Failure = 1,
    /// Bad command-line input (clap also exits 2).
    Usage = 2,
    /// The kubeconfig or context is unusable.
    Kubeconfig = 3,
    /// The cluster did not answer or rejected the credentials.
    Cluster = 4,
    /// The cluster has no Istio control plane.
    NoIstio = 5,
    /// Findings at or above `--fail-on` were reported.
    Findings = 6,
    /// No plan can be made for the request (the message says why).
    PlanRefused = 7,
    /// A step's precondition or gate failed; the journal says where (resume or roll back).
    RunFailed = 8,
    /// Another run holds the lock or left an unfinished journal (or there is no run to continue).
    Busy = 9,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> Self {
        ExitCode::from(c as u8)
    }
}
