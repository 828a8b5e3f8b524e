//! The lab's private network namespace.
//!
//! Why: Endpoints validation rejects loopback pod IPs, so emulated pods need real-looking addresses. In a
//! namespace of our own, `ip route add local 10.244.0.0/16 dev lo` makes every pod address local, and the
//! same for the service and load balancer ranges; none of that traffic can ever reach the host's network.
//! Fixed ports (2379, 6443) are safe because every lab has its own namespace.

use std::process::Command;

use nix::sched::{CloneFlags, unshare};
use nix::unistd::{getegid, geteuid};

use crate::LabError;
use crate::binaries::which;

/// Pod addresses (local inside the namespace).
pub const POD_CIDR: &str = "10.244.0.0/16";
/// Service addresses (local inside the namespace); the apiserver's `--service-cluster-ip-range`.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Load balancer ingress addresses (local inside the namespace); see `netsvc`.
pub const LOAD_BALANCER_CIDR: &str = "10.250.0.0/24";
/// The apiserver's advertise address: must be a non-loopback address local to the namespace.
pub const ADVERTISE_ADDRESS: &str = "10.244.255.254";
/// The ClusterIP of the `kubernetes` Service (first address of [`SERVICE_CIDR`]).
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// The apiserver's port inside the namespace.
pub const APISERVER_PORT: u16 = 6443;
/// etcd's client port inside the namespace.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port inside the namespace.
pub const ETCD_PEER_PORT: u16 = 2380;

/// How the namespace was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamespaceKind {
    /// `unshare(CLONE_NEWNET)` as root.
    Root,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET)` without root.
    User,
}

/// Moves the calling process into a new network namespace. Must be called while the process has exactly
/// one thread: `unshare(CLONE_NEWUSER)` refuses otherwise, and with `CLONE_NEWNET` alone any other thread
/// would stay behind in the host namespace.
pub(crate) fn enter() -> Result<NamespaceKind, LabError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(LabError::NotSingleThreaded { threads });
    }
    let as_root = if geteuid().is_root() {
        match unshare(CloneFlags::CLONE_NEWNET) {
            Ok(()) => return Ok(NamespaceKind::Root),
            Err(err) => format!("unshare(CLONE_NEWNET): {err}"),
        }
    } else {
        "not running as root".to_string()
    };
    match enter_user_namespace() {
        Ok(()) => Ok(NamespaceKind::User),
        Err(as_user) => Err(LabError::NamespaceUnavailable { as_root, as_user }),
    }
}

/// Unprivileged path: a user namespace in which we are root, plus the network namespace it owns.
fn enter_user_namespace() -> Result<(), String> {
    let (uid, gid) = (geteuid(), getegid());
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
        .map_err(|err| format!("unshare(CLONE_NEWUSER | CLONE_NEWNET): {err}"))?;
    // setgroups must be denied before an unprivileged process may write gid_map.
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), &text)
            .map_err(|err| format!("writing {text:?} to /proc/self/{file}: {err}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1"))?;
    write("gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// Brings up loopback and makes the pod, service and load balancer ranges local. Runs the `ip` binary,
/// which inherits our namespace.
pub(crate) fn configure() -> Result<(), LabError> {
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| which("ip"))
        .ok_or_else(|| LabError::NetworkSetup {
            command: "ip".into(),
            detail: "the `ip` command was not found".into(),
        })?;
    let steps: [&[&str]; 4] = [
        &["link", "set", "lo", "up"],
        &["route", "add", "local", POD_CIDR, "dev", "lo"],
        &["route", "add", "local", SERVICE_CIDR, "dev", "lo"],
        &["route", "add", "local", LOAD_BALANCER_CIDR, "dev", "lo"],
    ];
    for args in steps {
        let command = format!("ip {}", args.join(" "));
        let out = Command::new(&ip)
            .args(args)
            .output()
            .map_err(|err| LabError::NetworkSetup { command: command.clone(), detail: err.to_string() })?;
        if !out.status.success() {
            let detail = format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
            return Err(LabError::NetworkSetup { command, detail });
        }
    }
    reuse_time_wait_ports();
    Ok(())
}

/// The namespace's `net.ipv4.tcp_tw_reuse` sysctl (per network namespace).
const TCP_TW_REUSE: &str = "/proc/sys/net/ipv4/tcp_tw_reuse";

/// Lets new outgoing connections reuse ports held in TIME_WAIT (`tcp_tw_reuse=1`).
///
/// Why: every lab address is local and routed over `lo`, but the kernel's default (`2`) allows reuse only
/// for loopback *addresses* (127/8), not for 10.x addresses on `lo`. The emulated apps open a connection
/// per call, as the real bookinfo apps do, and all pods share this one namespace's ephemeral ports (a
/// real cluster has a namespace per pod). At 500 requests/s the ~28,000 ports towards one Service
/// address sit in TIME_WAIT within a minute, after which `connect` scans for a free port on every call
/// and the lab stalls. Reuse is safe here: TCP timestamps are on and every peer is in this namespace.
/// A kernel that refuses the write only lowers the lab's sustainable rate, so that is a warning.
fn reuse_time_wait_ports() {
    if let Err(err) = std::fs::write(TCP_TW_REUSE, "1") {
        tracing::warn!(%err, path = TCP_TW_REUSE, "cannot enable TIME_WAIT reuse; high request rates may exhaust ports");
    }
}

/// The number of threads of this process (from `/proc/self/status`); 1 if it cannot be read.
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| line.strip_prefix("Threads:").and_then(|n| n.trim().parse().ok()))
        })
        .unwrap_or(1)
}
