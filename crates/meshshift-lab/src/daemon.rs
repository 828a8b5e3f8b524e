//! A long-lived lab for people: `meshshift lab up` starts a detached supervisor for a lab directory and
//! returns once it is ready; `lab down` stops it and removes the directory. The supervisor's pid lives in
//! the directory's `state.json`, and its `supervisor.lock` keeps a second supervisor off the same lab.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netsvc::{LoadBalancers, NetsvcError};
use crate::testing::{log_tails, process_alive};
use crate::{LabError, LabLayout, LabOptions, LabState};

/// How long `up` waits for the control plane.
pub const UP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `down` waits after SIGTERM before SIGKILL.
pub const DOWN_GRACE: Duration = Duration::from_secs(20);

/// The default lab directory: `$MESHSHIFT_LAB_DIR`, else `$XDG_STATE_HOME/meshshift/lab`, else
/// `~/.local/state/meshshift/lab`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MESHSHIFT_LAB_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state.join("meshshift/lab")
}

/// The running lab of `dir`, if its supervisor is alive.
pub fn running(dir: &Path) -> Option<LabState> {
    let state = LabState::read(&LabLayout::new(dir).state_file()).ok()?;
    process_alive(state.pid).then_some(state)
}

/// Whether `dir` is safe to delete: absent, empty, or made by a lab (never a user's directory).
fn is_lab_dir(dir: &Path) -> bool {
    let layout = LabLayout::new(dir);
    match std::fs::read_dir(dir) {
        Err(_) => true,
        Ok(mut entries) => entries.next().is_none() || layout.pki_dir().is_dir() || layout.lock_file().exists(),
    }
}

fn remove_lab_dir(dir: &Path) -> Result<(), LabError> {
    if !is_lab_dir(dir) {
        return Err(LabError::Supervisor {
            detail: format!("{} is not empty and is not a lab directory; choose another --dir", dir.display()),
            logs: String::new(),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::io("remove", dir, e)),
        _ => Ok(()),
    }
}

/// What `up` did.
#[derive(Debug)]
pub enum Up {
    /// A lab was started.
    Started(LabState),
    /// The lab was already running.
    AlreadyRunning(LabState),
}

/// Starts a detached lab supervisor (`<exe> lab supervise --dir D ...`) and waits until it is ready.
/// `progress` is called with short status lines while waiting.
pub fn up(exe: &Path, dir: &Path, opts: &LabOptions, mut progress: impl FnMut(&str)) -> Result<Up, LabError> {
    if let Some(state) = running(dir) {
        return Ok(Up::AlreadyRunning(state));
    }
    // A lab directory whose supervisor is gone is left-over state: start afresh.
    remove_lab_dir(dir)?;
    let layout = LabLayout::new(dir);
    std::fs::create_dir_all(layout.logs_dir()).map_err(|e| LabError::io("create directory", layout.logs_dir(), e))?;
    let log = layout.log("supervisor");
    let stderr = std::fs::File::create(&log).map_err(|e| LabError::io("create", &log, e))?;
    let out = layout.log("supervisor-stdout");
    let stdout = std::fs::File::create(&out).map_err(|e| LabError::io("create", &out, e))?;
    let began = Instant::now();
    let mut child = Command::new(exe)
        .args(["lab", "supervise", "--dir"])
        .arg(dir)
        .args(opts.args())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Its own process group: a Ctrl-C in the terminal that ran `lab up` must not stop the lab.
        .process_group(0)
        .spawn()
        .map_err(|source| LabError::Spawn { name: "lab supervisor".into(), path: exe.to_path_buf(), source })?;
    progress("starting etcd, kube-apiserver, controller-manager and scheduler");
    loop {
        if layout.ready_file().exists() {
            let state = LabState::read(&layout.state_file())?;
            return Ok(Up::Started(state));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LabError::Supervisor {
                detail: format!("the supervisor exited ({status}) before the lab was ready"),
                logs: log_tails(&layout),
            });
        }
        if began.elapsed() > UP_TIMEOUT {
            let _ = child.kill();
            return Err(LabError::Supervisor {
                detail: format!("not ready after {} s", UP_TIMEOUT.as_secs()),
                logs: log_tails(&layout),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The shell exports of a running lab (`meshshift lab env`): `KUBECONFIG`; `MESHSHIFT_INGRESS` once an HTTP
/// LoadBalancer (port 80 or a port named `http*`) has a host port, the first such; `MESHSHIFT_PROMETHEUS`
/// when the lab runs Prometheus.
pub fn env_exports(dir: &Path, state: &LabState) -> Result<Vec<String>, NetsvcError> {
    let mut exports = vec![format!("export KUBECONFIG={}", state.kubeconfig.display())];
    let lbs = LoadBalancers::read(dir)?;
    if let Some(host) = lbs
        .iter()
        .filter(|l| l.port == 80 || l.port_name.as_deref().is_some_and(|n| n.starts_with("http")))
        .find_map(|l| l.host)
    {
        exports.push(format!("export MESHSHIFT_INGRESS=http://{host}"));
    }
    if let Some(url) = &state.prometheus {
        exports.push(format!("export {PROMETHEUS_ENV}={url}"));
    }
    Ok(exports)
}

/// The variable `lab env` sets to the lab's Prometheus (`http://127.0.0.1:<port>`).
pub const PROMETHEUS_ENV: &str = "MESHSHIFT_PROMETHEUS";

/// What `down` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Down {
    /// The supervisor stopped after SIGTERM.
    Stopped,
    /// It had to be killed.
    Killed,
    /// Nothing was running.
    NotRunning,
}

/// Stops the lab of `dir` and removes the directory.
pub fn down(dir: &Path) -> Result<Down, LabError> {
    let layout = LabLayout::new(dir);
    let outcome = match LabState::read(&layout.state_file()).ok().filter(|s| process_alive(s.pid)) {
        None => Down::NotRunning,
        Some(state) => {
            let pid = Pid::from_raw(i32::try_from(state.pid).unwrap_or(i32::MAX));
            let _ = kill(pid, Signal::SIGTERM);
            let began = Instant::now();
            while process_alive(state.pid) && began.elapsed() < DOWN_GRACE {
                std::thread::sleep(Duration::from_millis(100));
            }
            let killed = process_alive(state.pid);
            if killed {
                let _ = kill(pid, Signal::SIGKILL);
            }
            // The components die with the supervisor (PDEATHSIG); make sure of it.
            for child in state.children.values().filter(|p| process_alive(**p)) {
                let _ = kill(Pid::from_raw(i32::try_from(*child).unwrap_or(i32::MAX)), Signal::SIGKILL);
            }
            if killed { Down::Killed } else { Down::Stopped }
        }
    };
    remove_lab_dir(dir)?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dir: &Path, prometheus: Option<&str>) -> LabState {
        LabState {
            pid: 1,
            host_port: 40000,
            apiserver: "https://127.0.0.1:40000".into(),
            kubeconfig: dir.join("kubeconfig"),
            dir: dir.to_path_buf(),
            started_at: 0,
            ready_at: 0,
            startup_ms: 0,
            namespace: "root".into(),
            children: Default::default(),
            prometheus: prometheus.map(str::to_owned),
        }
    }

    #[test]
    fn env_exports_the_kubeconfig_and_the_prometheus_when_there_is_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let without = env_exports(dir.path(), &state(dir.path(), None)).expect("exports");
        assert_eq!(without, vec![format!("export KUBECONFIG={}", dir.path().join("kubeconfig").display())]);
        let with = env_exports(dir.path(), &state(dir.path(), Some("http://127.0.0.1:40001"))).expect("exports");
        assert_eq!(with.last().map(String::as_str), Some("export MESHSHIFT_PROMETHEUS=http://127.0.0.1:40001"));
    }

    #[test]
    fn state_files_without_prometheus_still_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut json = serde_json::to_value(state(dir.path(), None)).expect("json");
        assert!(json.get("prometheus").is_none(), "omitted when absent: {json}");
        json.as_object_mut().expect("object").remove("prometheus");
        let back: LabState = serde_json::from_value(json).expect("older state.json");
        assert_eq!(back.prometheus, None);
    }
}
