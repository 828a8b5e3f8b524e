//! Where things live inside a lab directory. One place, so the supervisor (which writes) and the client
//! handle (which reads) cannot disagree.

use std::path::{Path, PathBuf};

/// The files of one lab directory (`--dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabLayout {
    root: PathBuf,
}

impl LabLayout {
    /// The layout of the lab directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LabLayout { root: root.into() }
    }

    /// The lab directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Certificates and keys (`ca.crt`, `apiserver.crt`, ...).
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// Kubeconfigs used by components inside the namespace (server `https://127.0.0.1:6443`).
    pub fn etc_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// etcd's data directory.
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.root.join("etcd")
    }

    /// Component logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The log file of component `name` (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `prometheus`, `supervisor`).
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }

    /// The lab's Prometheus (when it runs one): `prometheus.yml` and the TSDB in `data/`.
    pub fn prometheus_dir(&self) -> PathBuf {
        self.root.join("prometheus")
    }

    /// The apiserver's audit policy: which requests the audit log records (written by the supervisor).
    pub fn audit_policy(&self) -> PathBuf {
        self.etc_dir().join("audit-policy.yaml")
    }

    /// The apiserver's audit log: one JSON event per line for every write request by a client other than
    /// the control plane's own components (`user.username`, `userAgent`, `verb`, `objectRef`,
    /// `responseStatus.code`, `requestReceivedTimestamp`). Rotated at 100 MB into one `audit-<time>.log`.
    pub fn audit_log(&self) -> PathBuf {
        self.logs_dir().join("audit.log")
    }

    /// The admin kubeconfig for the host (server `https://127.0.0.1:<host port>`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    /// An admin kubeconfig for code running inside the namespace (server `https://127.0.0.1:6443`).
    pub fn inside_kubeconfig(&self) -> PathBuf {
        self.etc_dir().join("admin.kubeconfig")
    }

    /// The supervisor's state (`pid`, `host_port`, `started_at`, child pids, ...).
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Exists while the control plane is ready.
    pub fn ready_file(&self) -> PathBuf {
        self.root.join("ready")
    }

    /// Held (flock) by the supervisor so two supervisors cannot share a directory.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("supervisor.lock")
    }
}
