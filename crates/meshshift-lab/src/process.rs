//! Starting, watching and stopping the control-plane processes.
//!
//! Why this shape:
//! - Every child gets `PR_SET_PDEATHSIG(SIGKILL)`, so if the supervisor is killed outright (SIGKILL, OOM)
//!   its components die with it instead of holding etcd data and ports. The signal fires when the *thread*
//!   that forked the child exits, so children must be spawned from the supervisor's main thread, which
//!   lives until shutdown: the supervisor runs a current-thread tokio runtime on its main thread.
//! - Each child is in its own process group, so a Ctrl-C in the supervisor's terminal reaches the
//!   supervisor only, and the shutdown order (SIGTERM, grace, SIGKILL) stays ours.
//! - A per-child task awaits its exit and reports it on the supervisor's event channel: an exit that was
//!   not asked for is a failure of the lab.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::LabError;

/// Proxy variables are removed from the children's environment: nothing outside the namespace is reachable
/// anyway, and a proxy would swallow the apiserver's calls to webhooks on pod IPs.
const PROXY_VARS: [&str; 8] =
    ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"];

/// Something the supervisor's main loop must react to.
#[derive(Debug)]
pub(crate) enum Event {
    /// A stop was requested (signal, stdin EOF); the text says which.
    Stop(String),
    /// A child process exited.
    ChildExited {
        /// The component's name.
        name: String,
        /// How it exited.
        status: String,
    },
    /// A background agent failed.
    AgentFailed(LabError),
}

struct Running {
    name: String,
    pid: Pid,
    log: PathBuf,
    /// Set by the waiting task in the same poll that reaped the child, so we never signal a reused pid
    /// (the runtime is single-threaded: no other task runs in between).
    exited: Arc<AtomicBool>,
}

/// The supervisor's children.
pub(crate) struct Children {
    running: Vec<Running>,
    events: UnboundedSender<Event>,
}

impl Children {
    /// No children yet; exits will be reported on `events`.
    pub(crate) fn new(events: UnboundedSender<Event>) -> Self {
        Children { running: Vec::new(), events }
    }

    /// Starts `program args` as component `name`, stdout and stderr to `log` (truncated). Must be called on
    /// the supervisor's main thread (see the module docs).
    pub(crate) fn spawn(&mut self, name: &str, program: &Path, args: &[String], log: &Path) -> Result<u32, LabError> {
        let out = File::create(log).map_err(|e| LabError::io("create", log, e))?;
        let err = out.try_clone().map_err(|e| LabError::io("duplicate the handle of", log, e))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        // SAFETY: the closure runs in the forked child before exec and only makes the async-signal-safe
        // prctl(2) system call; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let spawn_error = |source| LabError::Spawn { name: name.to_string(), path: program.to_path_buf(), source };
        let mut child = cmd.spawn().map_err(spawn_error)?;
        let Some(pid) = child.id() else {
            return Err(spawn_error(std::io::Error::other("the process exited before its pid was read")));
        };
        let exited = Arc::new(AtomicBool::new(false));
        let (task_name, task_exited, events) = (name.to_string(), exited.clone(), self.events.clone());
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(err) => format!("wait failed: {err}"),
            };
            task_exited.store(true, Ordering::SeqCst);
            // The receiver is gone only once the supervisor has returned; nothing left to tell.
            let _ = events.send(Event::ChildExited { name: task_name, status });
        });
        self.running.push(Running {
            name: name.to_string(),
            pid: Pid::from_raw(pid as i32),
            log: log.to_path_buf(),
            exited,
        });
        tracing::info!(name, pid, log = %log.display(), "started");
        Ok(pid)
    }

    /// Pids of the children started so far (by component name).
    pub(crate) fn pids(&self) -> BTreeMap<String, u32> {
        self.running.iter().map(|r| (r.name.clone(), r.pid.as_raw() as u32)).collect()
    }

    /// The log file of component `name`.
    pub(crate) fn log_of(&self, name: &str) -> PathBuf {
        self.running.iter().find(|r| r.name == name).map(|r| r.log.clone()).unwrap_or_default()
    }

    fn alive(&self) -> impl Iterator<Item = &Running> {
        self.running.iter().filter(|r| !r.exited.load(Ordering::SeqCst))
    }

    fn signal_alive(&self, signal: Signal) {
        for r in self.alive() {
            if let Err(err) = kill(r.pid, signal) {
                tracing::debug!(name = r.name, %err, ?signal, "signal not delivered");
            }
        }
    }

    /// Stops every child in reverse start order, each after the previous one has exited: the apiserver
    /// must go before etcd (an apiserver whose etcd vanished can hang in its shutdown). All of this shares
    /// one `grace` period; whatever still runs after it gets SIGKILL. Waits until all have been reaped.
    /// Other events arriving meanwhile are dropped: we are stopping anyway.
    pub(crate) async fn stop_all(&mut self, events: &mut UnboundedReceiver<Event>, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for index in (0..self.running.len()).rev() {
            let r = &self.running[index];
            if r.exited.load(Ordering::SeqCst) {
                continue;
            }
            let _ = kill(r.pid, Signal::SIGTERM);
            if !self.wait_until(events, deadline, |c| c.running[index].exited.load(Ordering::SeqCst)).await {
                break;
            }
        }
        if self.alive().next().is_some() {
            let names: Vec<_> = self.alive().map(|r| r.name.clone()).collect();
            tracing::warn!(?names, "still running after SIGTERM and {grace:?}: sending SIGKILL");
            self.signal_alive(Signal::SIGKILL);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            if !self.wait_until(events, deadline, |c| c.alive().next().is_none()).await {
                tracing::error!("children survived SIGKILL; giving up waiting");
            }
        }
    }

    /// Handles exit events until `done` holds or `deadline` passes; returns whether `done` holds.
    async fn wait_until(
        &self,
        events: &mut UnboundedReceiver<Event>,
        deadline: tokio::time::Instant,
        done: impl Fn(&Self) -> bool,
    ) -> bool {
        while !done(self) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::ChildExited { name, status })) => {
                    tracing::info!(name, status, "stopped")
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return done(self),
            }
        }
        true
    }
}
