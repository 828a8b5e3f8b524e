//! A long-lived lab for people: `meshshift lab up` starts a detached supervisor for a lab directory and
//! returns once it is ready; `lab down` stops it and removes the directory. The supervisor's pid lives in
//! the directory's `state.json`, and its `supervisor.lock` keeps a second supervisor off the same lab.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
