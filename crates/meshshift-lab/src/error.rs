//! The lab's single error type: every variant says what went wrong and, where there is one, what to do.

use std::path::PathBuf;

/// Everything that can go wrong while starting, running or stopping a lab control plane.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file system operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("create directory", "write", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Neither `MESHSHIFT_K8S_BIN` nor the install script's cache tells where the Kubernetes binaries are.
    #[error(
        "the Kubernetes {version} binaries (kube-apiserver, kube-controller-manager, kube-scheduler) were not found: \
         {detail}. Run scripts/install-deps.sh (it builds and caches them), or set MESHSHIFT_K8S_BIN to their directory"
    )]
    BinariesNotInstalled {
        /// The Kubernetes version the lab expects.
        version: &'static str,
        /// Where we looked.
        detail: String,
    },

    /// A required executable is missing or not executable.
    #[error("{name} not found or not executable at {}: {hint}", path.display())]
    BinaryMissing {
        /// The program's name.
        name: &'static str,
        /// Where it was expected.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },

    /// The process could not get a private network namespace.
    #[error(
        "cannot create a private network namespace for the lab: it needs root (CAP_SYS_ADMIN) or unprivileged \
         user namespaces (sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0). \
         As root: {as_root}; as user namespace: {as_user}"
    )]
    NamespaceUnavailable {
        /// Why `unshare(CLONE_NEWNET)` failed (or why it was not tried).
        as_root: String,
        /// Why `unshare(CLONE_NEWUSER | CLONE_NEWNET)` failed.
        as_user: String,
    },

    /// The supervisor was asked to unshare after threads were started.
    #[error(
        "the lab supervisor must enter its network namespace while the process is single-threaded, but it has \
         {threads} threads: call supervisor::run before creating any runtime or thread"
    )]
    NotSingleThreaded {
        /// The number of threads found in /proc/self/status.
        threads: usize,
    },

    /// Configuring the namespace's network failed.
    #[error("network setup inside the lab namespace failed: `{command}`: {detail} (is iproute2 installed?)")]
    NetworkSetup {
        /// The command that failed.
        command: String,
        /// Its output or error.
        detail: String,
    },

    /// Generating certificates or keys failed.
    #[error("could not generate the lab's certificates: {0}")]
    Pki(#[from] rcgen::Error),

    /// A control-plane component could not be started.
    #[error("could not start {name} ({}): {source}", path.display())]
    Spawn {
        /// The component.
        name: String,
        /// Its executable.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A control-plane component died while the lab was running or starting.
    #[error("{name} exited unexpectedly ({status}); see its log {}", log.display())]
    ChildExited {
        /// The component.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
    },

    /// Something did not become ready in time.
    #[error("{what} was not ready after {waited_secs} s: {detail}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// How long we waited.
        waited_secs: u64,
        /// The last error seen, or log tails.
        detail: String,
    },

    /// Another supervisor already runs on this lab directory.
    #[error("another lab supervisor is already using {}: stop it first or use another --dir", dir.display())]
    DirLocked {
        /// The lab directory.
        dir: PathBuf,
    },

    /// The lab supervisor process failed (seen from the client handle).
    #[error("lab supervisor failed: {detail}{logs}")]
    Supervisor {
        /// What happened.
        detail: String,
        /// Tails of the component logs, already formatted (may be empty).
        logs: String,
    },

    /// A system call failed.
    #[error("{action} failed: {source}")]
    Sys {
        /// What was being done.
        action: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },

    /// A kubeconfig could not be built, read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),

    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// (De)serializing JSON failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// A background agent running inside the lab failed.
    #[error("lab agent {name} failed: {detail}")]
    Agent {
        /// The agent's name.
        name: String,
        /// What went wrong.
        detail: String,
    },
}

impl LabError {
    /// Shorthand for [`LabError::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io { action, path: path.into(), source }
    }
}
