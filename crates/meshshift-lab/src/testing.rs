//! [`TestCluster`]: a lab control plane for integration tests, driven from the test process.
//!
//! The control plane runs in a separate supervisor process (see [`crate::supervisor`]): the test process is
//! multi-threaded and cannot enter a network namespace itself. The handle keeps the write end of the
//! supervisor's stdin: if the test process dies without running `Drop` (panic=abort, SIGKILL, a cluster in
//! a `static`), the pipe closes and the supervisor stops the control plane by itself.
//!
//! Everything here is blocking and needs no tokio runtime, except [`TestCluster::client`], which builds a
//! new client on the caller's runtime (each `#[tokio::test]` has its own, and a client must not outlive it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::binaries::{Binaries, find_k8s_bin_dir};
use crate::state::{LabState, ReadyLine};
use crate::{LabError, LabLayout, LabOptions};

/// How long [`TestCluster::start`] waits for the ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping supervisor gets before SIGKILL (it gives its components 5 s itself).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Temporary lab directories are named `meshshift-lab-XXXXXX`.
const DIR_PREFIX: &str = "meshshift-lab-";
/// Set (to anything non-empty) to keep lab directories after the test, for debugging.
pub const KEEP_ENV: &str = "MESHSHIFT_LAB_KEEP";
/// Set to a directory to create lab directories there instead of the system temp dir.
pub const TMPDIR_ENV: &str = "MESHSHIFT_LAB_TMPDIR";
/// Component logs whose tails are quoted when start-up fails (etcd last: its JSON lines are long and it is
/// rarely the culprit).
const LOGS: [&str; 6] =
    ["supervisor", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "prometheus", "etcd"];
/// Lines quoted per log, and characters per line.
const TAIL_LINES: usize = 20;
const TAIL_WIDTH: usize = 400;

/// The `supervise` example of this crate (`target/<profile>/examples/supervise`), the supervisor
/// [`TestCluster::start`] and friends run. For this crate's own integration tests, which cannot depend on the
/// CLI crate (whose hidden `meshshift lab supervise` the example mirrors).
///
/// It is found next to the running test binary (`target/<profile>/deps/<test>-<hash>`), so it comes from the
/// same target directory and profile. Plain `cargo test -p meshshift-lab` builds it; `cargo test -p
/// meshshift-lab --test NAME` alone does not. So a missing binary, or one older than the newest file under
/// this crate's `src/` or `examples/` (a stale build), is refused with the command to run rather than
/// silently tested. The comparison is with the sources, not with a `libmeshshift_lab-*.rlib`: a plain build
/// and the examples build different variants of the library (dev-dependency features), so in a shared
/// target directory another build would make a fresh example look stale.
///
/// Decided once per test process: in a shared tree the sources may change during a run, and the tests of
/// one run should not disagree.
///
/// # Panics
/// When the example is missing or stale, or the test binary is not in a `target/<profile>/deps` directory.
pub fn example_supervisor() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let test_exe = std::env::current_exe().expect("the path of the running test binary");
        let profile_dir = test_exe.parent().and_then(Path::parent).expect("a test binary in target/<profile>/deps");
        let path = profile_dir.join("examples").join("supervise");
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        if let Err(problem) = check_fresh(&path, &[crate_dir.join("src"), crate_dir.join("examples")]) {
            panic!("{problem}: run `cargo build -p meshshift-lab --examples` (or plain `cargo test -p meshshift-lab`)");
        }
        path
    })
    .clone()
}

/// `Ok` when `binary` exists and is not older than any file under `sources`; else what is wrong.
fn check_fresh(binary: &Path, sources: &[PathBuf]) -> Result<(), String> {
    let built = modified(binary).ok_or_else(|| format!("{} is missing", binary.display()))?;
    match sources.iter().filter_map(|dir| newest_under(dir)).max() {
        Some((newest, file)) if newest > built => Err(format!("{} is older than {}", binary.display(), file.display())),
        _ => Ok(()),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files under `dir` (recursively), with that file.
fn newest_under(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() { newest_under(&path) } else { modified(&path).map(|t| (t, path)) };
        if let Some(candidate) = candidate
            && newest.as_ref().is_none_or(|(time, _)| candidate.0 > *time)
        {
            newest = Some(candidate);
        }
    }
    newest
}

/// A running lab control plane owned by a test. Dropping it stops the control plane and deletes its
/// directory.
#[derive(Debug)]
pub struct TestCluster {
    supervisor: Child,
    stdin: Option<ChildStdin>,
    dir: Option<tempfile::TempDir>,
    layout: LabLayout,
    kubeconfig: kube::config::Kubeconfig,
    ready: ReadyLine,
    state: LabState,
    startup: Duration,
}

impl TestCluster {
    /// Starts a control plane by running `<supervisor_exe> lab supervise --dir <tmp> --bin-dir <bin>
    /// --exit-on-stdin-eof` and waiting (at most 60 s) for its ready line. The Kubernetes binaries are found
    /// with [`find_k8s_bin_dir`] (`MESHSHIFT_K8S_BIN`, else the install script's record).
    pub fn start(supervisor_exe: &Path) -> Result<TestCluster, LabError> {
        Self::start_with_bin_dir(supervisor_exe, &find_k8s_bin_dir()?)
    }

    /// [`TestCluster::start`] with an explicit directory of Kubernetes binaries (passed as `--bin-dir`).
    pub fn start_with_bin_dir(supervisor_exe: &Path, bin_dir: &Path) -> Result<TestCluster, LabError> {
        Self::start_lab_with_bin_dir(supervisor_exe, bin_dir, &LabOptions::default())
    }

    /// Starts a lab: the control plane plus the node agent and service networking that `lab` asks for.
    pub fn start_lab(supervisor_exe: &Path, lab: &LabOptions) -> Result<TestCluster, LabError> {
        Self::start_lab_with_bin_dir(supervisor_exe, &find_k8s_bin_dir()?, lab)
    }

    /// [`TestCluster::start_lab`] with an explicit directory of Kubernetes binaries.
    pub fn start_lab_with_bin_dir(
        supervisor_exe: &Path,
        bin_dir: &Path,
        lab: &LabOptions,
    ) -> Result<TestCluster, LabError> {
        let began = Instant::now();
        Binaries::locate(Some(bin_dir))?; // fail here, with the install hint, rather than in the supervisor
        let parent = std::env::var_os(TMPDIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        sweep_stale_dirs(&parent);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&parent)
            .map_err(|e| LabError::io("create a temporary directory in", &parent, e))?;
        let layout = LabLayout::new(dir.path());
        std::fs::create_dir_all(layout.logs_dir())
            .map_err(|e| LabError::io("create directory", layout.logs_dir(), e))?;
        let supervisor_log = layout.log("supervisor");
        let stderr = std::fs::File::create(&supervisor_log).map_err(|e| LabError::io("create", &supervisor_log, e))?;

        let mut supervisor = Command::new(supervisor_exe)
            .args(["lab", "supervise", "--dir"])
            .arg(dir.path())
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--exit-on-stdin-eof")
            .args(lab.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|source| LabError::Spawn {
                name: "lab supervisor".into(),
                path: supervisor_exe.to_path_buf(),
                source,
            })?;
        let stdin = supervisor.stdin.take();
        let ready = supervisor.stdout.take().map(read_ready_line);

        let outcome = match ready {
            Some(rx) => match rx.recv_timeout(READY_TIMEOUT) {
                Ok(Ok(line)) => Ok(line),
                Ok(Err(detail)) => Err(detail),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    Err(format!("no ready line after {} s", READY_TIMEOUT.as_secs()))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => Err("the stdout reader stopped".into()),
            },
            None => Err("the supervisor's stdout was not captured".into()),
        };
        let mut cluster = TestCluster {
            supervisor,
            stdin,
            dir: Some(dir),
            layout,
            kubeconfig: kube::config::Kubeconfig::default(),
            ready: ReadyLine { ready: false, kubeconfig: PathBuf::new(), apiserver: String::new() },
            state: LabState {
                pid: 0,
                host_port: 0,
                apiserver: String::new(),
                kubeconfig: PathBuf::new(),
                dir: PathBuf::new(),
                started_at: 0,
                ready_at: 0,
                startup_ms: 0,
                namespace: String::new(),
                children: Default::default(),
                prometheus: None,
            },
            startup: Duration::ZERO,
        };
        let ready = match outcome {
            Ok(line) => line,
            Err(detail) => return Err(cluster.fail(detail)),
        };
        cluster.startup = began.elapsed();
        let loaded = LabState::read(&cluster.layout.state_file()).and_then(|state| {
            let kubeconfig = kube::config::Kubeconfig::read_from(&ready.kubeconfig)
                .map_err(|e| LabError::Kubeconfig(format!("reading {}: {e}", ready.kubeconfig.display())))?;
            Ok((state, kubeconfig))
        });
        match loaded {
            Ok((state, kubeconfig)) => {
                cluster.state = state;
                cluster.kubeconfig = kubeconfig;
                cluster.ready = ready;
                Ok(cluster)
            }
            Err(err) => Err(cluster.fail(err.to_string())),
        }
    }

    /// The admin kubeconfig file (cluster-admin, server `https://127.0.0.1:<port>`, context `meshshift-lab`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.ready.kubeconfig
    }

    /// The admin kubeconfig, parsed (edit a copy, e.g. `auth_infos[0].auth_info.impersonate`, to act as
    /// another user).
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        self.kubeconfig.clone()
    }

    /// A new cluster-admin client, bound to the calling tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, LabError> {
        crate::kubeconfig::client_from(self.kubeconfig()).await
    }

    /// `https://127.0.0.1:<port>`: the apiserver as seen from the host.
    pub fn apiserver_url(&self) -> &str {
        &self.ready.apiserver
    }

    /// `http://127.0.0.1:<port>`: the lab's Prometheus as seen from the host, when the lab was started with
    /// [`LabOptions::prometheus`] (see [`crate::prometheus`]).
    pub fn prometheus_url(&self) -> Option<&str> {
        self.state.prometheus.as_deref()
    }

    /// The lab directory (removed on drop unless `MESHSHIFT_LAB_KEEP` is set).
    pub fn dir(&self) -> &Path {
        self.layout.root()
    }

    /// The log of component `name` (`etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`,
    /// `prometheus`, `supervisor`).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.layout.log(name)
    }

    /// The apiserver's audit log (JSON lines, every write by a client other than the control plane's
    /// components; see [`LabLayout::audit_log`]).
    pub fn audit_log_path(&self) -> PathBuf {
        self.layout.audit_log()
    }

    /// The supervisor's state file contents (pids, host port, start-up time as seen by the supervisor).
    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// The supervisor's pid.
    pub fn supervisor_pid(&self) -> u32 {
        self.supervisor.id()
    }

    /// Runs `f` on a thread that has entered the lab's network namespace, with a current-thread tokio
    /// runtime: sockets it opens live inside the lab, so a test can reach pod IPs (10.244.x.y) and
    /// ClusterIPs (10.96.x.y) or serve on them. Needs the right to `setns` (root).
    pub fn inside<F, Fut, R>(&self, f: F) -> Result<R, LabError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R>,
        R: Send + 'static,
    {
        let path = PathBuf::from(format!("/proc/{}/ns/net", self.supervisor_pid()));
        let ns = std::fs::File::open(&path).map_err(|e| LabError::io("open", &path, e))?;
        let worker = std::thread::spawn(move || -> Result<R, std::io::Error> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            Ok(rt.block_on(f()))
        });
        match worker.join() {
            Ok(result) => result.map_err(|e| LabError::io("enter the network namespace of", &path, e)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Wall time from [`TestCluster::start`] until the ready line.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Stops the control plane like `Drop` does, but reports a supervisor that failed or had to be killed.
    pub fn stop(mut self) -> Result<(), LabError> {
        self.shutdown()
    }

    /// Closes stdin, sends SIGTERM, waits up to 10 s (then SIGKILL), waits for the components to be gone
    /// and removes the directory.
    fn shutdown(&mut self) -> Result<(), LabError> {
        if self.dir.is_none() {
            return Ok(()); // already done
        }
        drop(self.stdin.take());
        let pid = Pid::from_raw(self.supervisor.id() as i32);
        let mut problem = None;
        if self.supervisor.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, Signal::SIGTERM);
        }
        match wait_timeout(&mut self.supervisor, STOP_TIMEOUT) {
            Some(status) if status.success() => {}
            Some(status) => problem = Some(format!("the supervisor exited with {status}")),
            None => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = self.supervisor.wait();
                problem =
                    Some(format!("the supervisor did not stop within {} s and was killed", STOP_TIMEOUT.as_secs()));
            }
        }
        // Normally the supervisor reaped its components before exiting; after a SIGKILL their
        // PR_SET_PDEATHSIG kills them. Either way, do not delete etcd's files under a live etcd.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.state.children.values().any(|&p| process_alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let survivors: Vec<_> = self.state.children.iter().filter(|(_, p)| process_alive(**p)).collect();
        if !survivors.is_empty() {
            problem = Some(format!("components still running after the supervisor stopped: {survivors:?}"));
        }
        let logs = if problem.is_some() { log_tails(&self.layout) } else { String::new() };
        self.remove_dir();
        match problem {
            None => Ok(()),
            Some(detail) => Err(LabError::Supervisor { detail, logs }),
        }
    }

    /// Start-up failed: stop whatever runs, and build an error quoting the logs.
    fn fail(&mut self, detail: String) -> LabError {
        drop(self.stdin.take());
        let pid = Pid::from_raw(self.supervisor.id() as i32);
        let status = match self.supervisor.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                let _ = kill(pid, Signal::SIGTERM);
                wait_timeout(&mut self.supervisor, STOP_TIMEOUT).or_else(|| {
                    let _ = kill(pid, Signal::SIGKILL);
                    self.supervisor.wait().ok()
                })
            }
        };
        let detail = match status {
            Some(status) => format!("{detail} (supervisor: {status})"),
            None => detail,
        };
        let logs = log_tails(&self.layout);
        self.remove_dir();
        LabError::Supervisor { detail, logs }
    }

    fn remove_dir(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty()) {
            let kept = dir.keep();
            // A marker so that sweep_stale_dirs leaves it alone.
            let _ = std::fs::write(kept.join("keep"), b"");
            eprintln!("meshshift-lab: kept lab directory {}", kept.display());
        } else if let Err(err) = dir.close() {
            eprintln!("meshshift-lab: could not remove the lab directory: {err}");
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            eprintln!("meshshift-lab: {err}");
        }
    }
}

/// Whether process `pid` exists and is not a zombie (a zombie has exited; only its parent's `wait` is
/// missing, which in a container may never come).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces or parens.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// Reads the supervisor's stdout on a thread until the ready line (or EOF), and hands the result over.
fn read_ready_line(stdout: std::process::ChildStdout) -> mpsc::Receiver<Result<ReadyLine, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if let Ok(ready) = serde_json::from_str::<ReadyLine>(&line)
                        && ready.ready
                    {
                        let _ = tx.send(Ok(ready));
                        return;
                    }
                }
                Err(err) => {
                    let _ = tx.send(Err(format!("reading the supervisor's stdout: {err}")));
                    return;
                }
            }
        }
        let _ = tx.send(Err("the supervisor exited (closed stdout) without becoming ready".into()));
    });
    rx
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// The last lines of every component log, formatted for an error message.
pub(crate) fn log_tails(layout: &LabLayout) -> String {
    let mut out = String::new();
    for name in LOGS {
        let path = layout.log(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        out.push_str(&format!("\n--- last {} lines of {} ---", tail.len(), path.display()));
        for line in tail {
            out.push('\n');
            out.extend(line.chars().take(TAIL_WIDTH));
        }
    }
    out
}

/// Removes lab directories left behind by test processes that died without dropping their cluster (the
/// supervisor stopped, but nobody deleted the directory, whose etcd WAL alone preallocates 64 MB).
/// A directory is stale when it is older than ten minutes, has no `keep` marker, and no supervisor holds
/// its lock. Best effort: errors are ignored.
fn sweep_stale_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_lab = entry.file_name().to_str().is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_lab || !path.is_dir() || path.join("keep").exists() {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        if old && !lock_held(&LabLayout::new(&path).lock_file()) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn lock_held(lock: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(lock) else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// Retries `check` every 100 ms until it returns `Some`, and panics naming `what` after `limit`: the
/// wait of every lab test ("eventually the pod is ready"), never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates namespace `name` with `labels` (or leaves an existing one) and waits until its `default`
/// ServiceAccount has a token: the apiserver admits pods only from then on, so a test that creates pods
/// right after its namespace would otherwise race the controller-manager.
pub async fn create_namespace(client: &kube::Client, name: &str, labels: serde_json::Value) {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use kube::api::{Api, PostParams};
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
    match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("namespace {name}: {err}"),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually("the default ServiceAccount token", Duration::from_secs(30), || {
        let accounts = accounts.clone();
        async move {
            accounts
                .get_opt("default")
                .await
                .ok()
                .flatten()
                .filter(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
        }
    })
    .await;
}

/// Creates one manifest exactly as written (a DynamicObject), resolving its kind by discovery and retrying
/// while a freshly created CRD becomes served; namespaced objects without a namespace go to
/// `default_namespace`, and an existing object is left alone. The lab's tests cannot use meshshift-kube's
/// applier (that crate depends on nothing of the lab, and the lab must not depend on it).
pub async fn create_object(client: &kube::Client, doc: &serde_json::Value, default_namespace: &str) {
    use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
    use kube::discovery::{Scope, pinned_kind};
    let api_version = doc["apiVersion"].as_str().unwrap_or_else(|| panic!("no apiVersion in {doc}"));
    let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("no kind in {doc}"));
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = eventually(&format!("{api_version} {kind} to be served"), Duration::from_secs(30), || {
        let gvk = gvk.clone();
        async move { pinned_kind(client, &gvk).await.ok() }
    })
    .await;
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or(default_namespace);
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let object: DynamicObject =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{kind} {:?}: {e}", doc["metadata"]["name"]));
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating {kind} {:?}: {err}", doc["metadata"]["name"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_alive_sees_live_and_reaped_processes() {
        assert!(process_alive(std::process::id()));
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!process_alive(pid));
    }

    #[test]
    fn an_example_older_than_any_source_file_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("supervise");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("nested")).expect("mkdir");
        let set = |path: &Path, secs: u64| {
            let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).expect("open");
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).expect("set mtime");
        };
        let sources = [src.clone(), dir.path().join("examples-absent")];
        let err = check_fresh(&binary, &sources).expect_err("missing");
        assert!(err.ends_with("supervise is missing"), "{err}");

        set(&binary, 2_000);
        set(&src.join("lib.rs"), 1_000);
        set(&src.join("nested").join("deep.rs"), 1_500);
        check_fresh(&binary, &sources).expect("fresh");
        set(&src.join("nested").join("deep.rs"), 2_000);
        check_fresh(&binary, &sources).expect("as new as the newest source is fresh");

        set(&src.join("nested").join("deep.rs"), 3_000);
        let err = check_fresh(&binary, &sources).expect_err("stale");
        assert!(err.contains("is older than") && err.ends_with("deep.rs"), "{err}");
    }
}
