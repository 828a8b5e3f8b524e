//! The lab supervisor: one process that owns a private network namespace and the control plane in it.
//!
//! [`run`] must be the first thing its process does (before any tokio runtime or thread exists), because
//! entering a network namespace only moves the calling thread, and entering a user namespace (the
//! unprivileged fallback) is refused to multi-threaded processes. The order is:
//!
//! 1. lock the lab directory, find the binaries, bind the host listener on `127.0.0.1:0` (host namespace),
//!    and a second one for Prometheus if asked;
//! 2. unshare the network namespace and make the pod and service ranges local;
//! 3. create or reuse the PKI and the components' kubeconfigs;
//! 4. on a current-thread tokio runtime on the main thread (children must be forked by a thread that lives
//!    until shutdown, for `PR_SET_PDEATHSIG`): forward the host listeners to the apiserver (and
//!    Prometheus), start etcd, the apiserver (wait for `/readyz`), Prometheus if asked, the
//!    controller-manager and the scheduler (wait until they work, and for Prometheus' `/-/ready`);
//! 5. write `<dir>/kubeconfig`, `<dir>/state.json`, `<dir>/ready`, print the ready line on stdout;
//! 6. run until SIGTERM/SIGINT/SIGHUP, stdin EOF (if asked), a component's death or an agent's failure;
//!    then stop every component (SIGTERM, 5 s grace, SIGKILL) and return.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;

use crate::binaries::Binaries;
use crate::components::{
    apiserver_args, controller_manager_args, etcd_args, scheduler_args, write_audit_policy, write_component_kubeconfigs,
};
use crate::kubeconfig::KubeconfigSpec;
use crate::netns::{self, APISERVER_PORT, ETCD_CLIENT_PORT, NamespaceKind};
use crate::pki::{self, ADMIN_USER, PkiFiles};
use crate::process::{Children, Event};
use crate::readiness::{inside, wait_for_controllers, wait_for_readyz, wait_for_tcp};
use crate::state::{LabState, ReadyLine};
use crate::{LabError, LabLayout};

/// How long SIGTERMed components get before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A future run by an agent; `Send` so it can be spawned on the supervisor's runtime.
pub type AgentFuture = Pin<Box<dyn Future<Output = Result<(), LabError>> + Send>>;

/// Starts an agent once the control plane is ready.
pub type AgentFn = Box<dyn FnOnce(AgentContext) -> AgentFuture + Send>;

/// A task that runs inside the lab's network namespace, on the supervisor's runtime, once the control
/// plane is ready: e.g. a node agent that registers a Node and publishes pod status and IPs, which must
/// listen on pod addresses (10.244.x.y) that exist only inside the namespace. An agent that returns `Err`
/// stops the lab; one that returns `Ok` simply ends.
pub struct Agent {
    /// A name for logs and errors.
    pub name: String,
    /// Starts the agent.
    pub start: AgentFn,
}

impl Agent {
    /// An agent named `name`.
    pub fn new<F, Fut>(name: impl Into<String>, start: F) -> Agent
    where
        F: FnOnce(AgentContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), LabError>> + Send + 'static,
    {
        Agent { name: name.into(), start: Box::new(move |ctx| Box::pin(start(ctx))) }
    }
}

/// What an agent gets.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// The lab directory's layout.
    pub layout: LabLayout,
    /// An admin kubeconfig whose server is the apiserver inside the namespace (`https://127.0.0.1:6443`).
    pub inside_kubeconfig: PathBuf,
    /// The lab's certificate files (its CA can issue serving certificates via [`pki::LabCa::load`]).
    pub pki: PkiFiles,
    /// Becomes `true` when the supervisor stops; agents should return promptly then.
    pub shutdown: watch::Receiver<bool>,
    /// The host's network namespace (`/proc/self/ns/net` opened before the unshare), for agents that must
    /// open host-side sockets (a thread that `setns`es into it binds them; see `netsvc`). `None` if it
    /// could not be opened. Entering it needs root: an unprivileged lab holds it but `setns` fails.
    pub host_netns: Option<Arc<OwnedFd>>,
}

/// How to run a supervisor. Build it with [`SupervisorOptions::new`] and set the public fields.
pub struct SupervisorOptions {
    /// The lab directory (created if missing): PKI, etcd data, logs, kubeconfig, state.
    pub dir: PathBuf,
    /// The directory of kube-apiserver, kube-controller-manager and kube-scheduler; `None` means
    /// [`crate::binaries::find_k8s_bin_dir`].
    pub bin_dir: Option<PathBuf>,
    /// Stop when stdin reaches EOF. The test handle keeps the write end of a pipe: when the test process
    /// dies, the pipe closes and the lab stops. Leave false for a detached lab with stdin at /dev/null.
    pub exit_on_stdin_eof: bool,
    /// How long the control plane may take to become ready.
    pub ready_timeout: Duration,
    /// Tasks to run inside the namespace once ready.
    pub agents: Vec<Agent>,
    /// Run Prometheus (see [`crate::prometheus`]) as a component, with a host port forwarded to it.
    pub prometheus: bool,
}

impl SupervisorOptions {
    /// Options for lab directory `dir`: binaries from the install cache, no stdin watch, 60 s to be ready.
    pub fn new(dir: impl Into<PathBuf>) -> SupervisorOptions {
        SupervisorOptions {
            dir: dir.into(),
            bin_dir: None,
            exit_on_stdin_eof: false,
            ready_timeout: Duration::from_secs(60),
            agents: Vec::new(),
            prometheus: false,
        }
    }
}

impl std::fmt::Debug for SupervisorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorOptions")
            .field("dir", &self.dir)
            .field("bin_dir", &self.bin_dir)
            .field("exit_on_stdin_eof", &self.exit_on_stdin_eof)
            .field("ready_timeout", &self.ready_timeout)
            .field("agents", &self.agents.iter().map(|a| &a.name).collect::<Vec<_>>())
            .field("prometheus", &self.prometheus)
            .finish()
    }
}

/// Runs a lab control plane until told to stop (see the module docs). Call it first thing in `main`,
/// before any runtime or thread exists. Returns `Ok(())` after a requested stop, an error if the lab could
/// not start or a component died.
pub fn run(opts: SupervisorOptions) -> Result<(), LabError> {
    let started = (Instant::now(), SystemTime::now());
    std::fs::create_dir_all(&opts.dir).map_err(|e| LabError::io("create directory", &opts.dir, e))?;
    let root = opts.dir.canonicalize().map_err(|e| LabError::io("resolve", &opts.dir, e))?;
    let layout = LabLayout::new(root);
    for dir in [layout.logs_dir(), layout.etc_dir()] {
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io("create directory", &dir, e))?;
    }
    let _lock = lock_dir(&layout)?;
    remove_if_exists(&layout.ready_file())?;
    let binaries = Binaries::locate(opts.bin_dir.as_deref())?;

    // Bound before unsharing: these sockets stay in the host namespace.
    let (listener, host_port) = bind_host_listener()?;
    let prometheus = if opts.prometheus {
        let bin = crate::prometheus::locate()?;
        let (listener, port) = bind_host_listener()?;
        Some(PrometheusHost { bin, listener: Some(listener), port })
    } else {
        None
    };
    let host_netns = open_host_netns();

    let namespace = netns::enter()?;
    netns::configure()?;
    tracing::info!(?namespace, host_port, dir = %layout.root().display(), "entered the lab network namespace");

    let pki = pki::ensure(&layout.pki_dir())?;
    write_component_kubeconfigs(&layout, &pki)?;
    write_audit_policy(&layout)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::io("start the async runtime in", layout.root(), e))?;
    let lab =
        Lab { layout: layout.clone(), binaries, pki, host_port, host_netns, namespace, started, opts, prometheus };
    let result = runtime.block_on(lab.supervise(listener));
    // Agents and forwarded connections are abandoned here; the stdin reader thread may be blocked in read(2).
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = remove_if_exists(&layout.ready_file());
    if let Err(err) = &result {
        tracing::error!(%err, "lab supervisor stopped with an error");
    }
    result
}

/// Why the supervisor stops.
enum Halt {
    /// A stop was requested: not an error.
    Stop(String),
    /// A failure.
    Error(LabError),
}

impl From<LabError> for Halt {
    fn from(err: LabError) -> Self {
        Halt::Error(err)
    }
}

/// The lab's Prometheus, seen from the host.
struct PrometheusHost {
    /// Its executable.
    bin: PathBuf,
    /// The host listener forwarded to it (taken when the forwarding starts).
    listener: Option<std::net::TcpListener>,
    /// The listener's port.
    port: u16,
}

impl PrometheusHost {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

struct Lab {
    layout: LabLayout,
    binaries: Binaries,
    pki: PkiFiles,
    host_port: u16,
    host_netns: Option<Arc<OwnedFd>>,
    namespace: NamespaceKind,
    started: (Instant, SystemTime),
    opts: SupervisorOptions,
    prometheus: Option<PrometheusHost>,
}

impl Lab {
    async fn supervise(mut self, listener: std::net::TcpListener) -> Result<(), LabError> {
        let (events_tx, mut events) = unbounded_channel();
        watch_stop_requests(&events_tx, self.opts.exit_on_stdin_eof)?;
        let listener = crate::forward::into_tokio(listener)?;
        tokio::spawn(crate::forward::serve(listener, inside(APISERVER_PORT)));
        if let Some(listener) = self.prometheus.as_mut().and_then(|p| p.listener.take()) {
            let listener = crate::forward::into_tokio(listener)?;
            tokio::spawn(crate::forward::serve(listener, SocketAddr::V4(crate::prometheus::LISTEN_ADDR)));
        }

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut children = Children::new(events_tx.clone());
        let outcome = self.start_and_wait(&mut children, &mut events, &events_tx, shutdown_rx).await;
        let _ = shutdown_tx.send(true);
        match &outcome {
            Err(Halt::Stop(reason)) => tracing::info!(reason, "stopping the lab"),
            Err(Halt::Error(err)) => tracing::error!(%err, "stopping the lab after a failure"),
            Ok(()) => {}
        }
        children.stop_all(&mut events, STOP_GRACE).await;
        match outcome {
            Ok(()) | Err(Halt::Stop(_)) => Ok(()),
            Err(Halt::Error(err)) => Err(err),
        }
    }

    /// Starts everything, announces readiness, then waits for the event that ends the lab (always `Err`).
    async fn start_and_wait(
        &mut self,
        children: &mut Children,
        events: &mut UnboundedReceiver<Event>,
        events_tx: &UnboundedSender<Event>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Halt> {
        let timeout = self.opts.ready_timeout;
        let l = self.layout.clone();
        let b = self.binaries.clone();

        children.spawn("etcd", &b.etcd, &etcd_args(&l), &l.log("etcd"))?;
        race(events, children, wait_for_tcp(inside(ETCD_CLIENT_PORT), timeout)).await?;

        children.spawn(
            "kube-apiserver",
            &b.kube_apiserver,
            &apiserver_args(&l, &self.pki),
            &l.log("kube-apiserver"),
        )?;
        let inside_kubeconfig = l.inside_kubeconfig();
        race(events, children, wait_for_readyz(&inside_kubeconfig, timeout)).await?;

        // Started before the controllers so that its start-up overlaps theirs; stopped before the apiserver.
        if let Some(prometheus) = &self.prometheus {
            // Discovery first, so that Prometheus' first refresh finds it listening.
            let sd = crate::prometheus::sd::SD_ADDR;
            let listener =
                tokio::net::TcpListener::bind(sd).await.map_err(|e| LabError::io("listen on", sd.to_string(), e))?;
            let (kubeconfig, shutdown, events_tx) = (inside_kubeconfig.clone(), shutdown.clone(), events_tx.clone());
            tokio::spawn(async move {
                if let Err(err) = crate::prometheus::sd::serve(kubeconfig, listener, shutdown).await {
                    let (name, detail) = ("prometheus-discovery".to_owned(), err.to_string());
                    let _ = events_tx.send(Event::AgentFailed(LabError::Agent { name, detail }));
                }
            });
            let args = crate::prometheus::prepare(&l.prometheus_dir())?;
            children.spawn("prometheus", &prometheus.bin, &args, &l.log("prometheus"))?;
        }

        let etc = l.etc_dir();
        let cm_args = controller_manager_args(&etc.join("controller-manager.kubeconfig"), &self.pki);
        children.spawn(
            "kube-controller-manager",
            &b.kube_controller_manager,
            &cm_args,
            &l.log("kube-controller-manager"),
        )?;
        let sched_args = scheduler_args(&etc.join("scheduler.kubeconfig"));
        children.spawn("kube-scheduler", &b.kube_scheduler, &sched_args, &l.log("kube-scheduler"))?;
        race(events, children, wait_for_controllers(&inside_kubeconfig, timeout)).await?;
        if self.prometheus.is_some() {
            race(events, children, crate::prometheus::wait_ready(timeout)).await?;
        }

        self.announce_ready(children)?;

        for agent in std::mem::take(&mut self.opts.agents) {
            let ctx = AgentContext {
                layout: l.clone(),
                inside_kubeconfig: inside_kubeconfig.clone(),
                pki: self.pki.clone(),
                shutdown: shutdown.clone(),
                host_netns: self.host_netns.clone(),
            };
            let (name, future) = (agent.name, (agent.start)(ctx));
            let events_tx = events_tx.clone();
            tokio::spawn(async move {
                match future.await {
                    Ok(()) => tracing::info!(agent = name, "agent finished"),
                    Err(err) => {
                        let detail = err.to_string();
                        let _ = events_tx.send(Event::AgentFailed(LabError::Agent { name, detail }));
                    }
                }
            });
        }

        race(events, children, std::future::pending::<Result<(), LabError>>()).await
    }

    /// Writes the host kubeconfig, the state file and the ready marker, then prints the ready line.
    fn announce_ready(&self, children: &Children) -> Result<(), LabError> {
        let l = &self.layout;
        let apiserver = format!("https://127.0.0.1:{}", self.host_port);
        let p = &self.pki;
        KubeconfigSpec::write_from_files(
            &apiserver,
            ADMIN_USER,
            &p.ca_cert,
            &p.admin_cert,
            &p.admin_key,
            &l.kubeconfig(),
        )?;
        let now = SystemTime::now();
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let startup_ms = self.started.0.elapsed().as_millis() as u64;
        let state = LabState {
            pid: std::process::id(),
            host_port: self.host_port,
            apiserver: apiserver.clone(),
            kubeconfig: l.kubeconfig(),
            dir: l.root().to_path_buf(),
            started_at: unix(self.started.1),
            ready_at: unix(now),
            startup_ms,
            namespace: match self.namespace {
                NamespaceKind::Root => "root".into(),
                NamespaceKind::User => "user".into(),
            },
            children: children.pids(),
            prometheus: self.prometheus.as_ref().map(PrometheusHost::url),
        };
        state.write(&l.state_file())?;
        pki::write_file(&l.ready_file(), b"", 0o644)?;
        let line = serde_json::to_string(&ReadyLine { ready: true, kubeconfig: l.kubeconfig(), apiserver })?;
        let mut out = std::io::stdout().lock();
        if let Err(err) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            // Nobody reads our stdout (detached lab): the ready file and state.json still say it.
            tracing::warn!(%err, "could not print the ready line");
        }
        tracing::info!(startup_ms, "lab control plane ready");
        Ok(())
    }
}

/// Runs `work` until it finishes or an event ends the lab first.
async fn race<T>(
    events: &mut UnboundedReceiver<Event>,
    children: &Children,
    work: impl Future<Output = Result<T, LabError>>,
) -> Result<T, Halt> {
    tokio::select! {
        result = work => result.map_err(Halt::Error),
        event = events.recv() => Err(match event {
            Some(Event::Stop(reason)) => Halt::Stop(reason),
            Some(Event::ChildExited { name, status }) => {
                let log = children.log_of(&name);
                Halt::Error(LabError::ChildExited { name, status, log })
            }
            Some(Event::AgentFailed(err)) => Halt::Error(err),
            None => Halt::Stop("event channel closed".into()),
        }),
    }
}

/// Turns SIGTERM, SIGINT, SIGHUP and (optionally) stdin EOF into [`Event::Stop`].
fn watch_stop_requests(events: &UnboundedSender<Event>, stdin_eof: bool) -> Result<(), LabError> {
    for (kind, name) in
        [(SignalKind::terminate(), "SIGTERM"), (SignalKind::interrupt(), "SIGINT"), (SignalKind::hangup(), "SIGHUP")]
    {
        let mut stream = signal(kind).map_err(|e| LabError::io("install a handler for", name, e))?;
        let events = events.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let _ = events.send(Event::Stop(format!("received {name}")));
            }
        });
    }
    if stdin_eof {
        let events = events.clone();
        // A plain thread: a blocking read on stdin has no async equivalent worth the trouble, and threads
        // created now (after unshare) are in the namespace anyway. It is never joined.
        std::thread::Builder::new()
            .name("stdin-eof".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 256];
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                let _ = events.send(Event::Stop("stdin reached EOF (the parent process is gone)".into()));
            })
            .map_err(|e| LabError::io("start the stdin watcher for", "stdin", e))?;
    }
    Ok(())
}

/// Takes an exclusive, non-blocking flock on `<dir>/supervisor.lock` for the supervisor's lifetime. The
/// descriptor is close-on-exec, so children do not inherit it and the lock dies with the supervisor.
fn lock_dir(l: &LabLayout) -> Result<Flock<std::fs::File>, LabError> {
    let path = l.lock_file();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LabError::io("open", &path, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LabError::DirLocked { dir: l.root().to_path_buf() }),
        Err((_, source)) => Err(LabError::Sys { action: "flock(supervisor.lock)", source }),
    }
}

/// Binds a listener on `127.0.0.1:0` (call before unsharing: it stays in the host namespace).
fn bind_host_listener() -> Result<(std::net::TcpListener, u16), LabError> {
    let host = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    let listener = std::net::TcpListener::bind(host).map_err(|e| LabError::io("listen on", "127.0.0.1:0", e))?;
    let port = listener.local_addr().map_err(|e| LabError::io("inspect", "the host listener", e))?.port();
    Ok((listener, port))
}

/// Opens the current (host) network namespace, to be kept across the unshare. The descriptor is
/// close-on-exec, so components do not inherit it. Failure only costs host-side load balancer ports.
fn open_host_netns() -> Option<Arc<OwnedFd>> {
    match std::fs::File::open("/proc/self/ns/net") {
        Ok(file) => Some(Arc::new(OwnedFd::from(file))),
        Err(err) => {
            tracing::warn!(%err, "could not open /proc/self/ns/net: agents cannot open host-side listeners");
            None
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<(), LabError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::io("remove", path, e)),
        _ => Ok(()),
    }
}
