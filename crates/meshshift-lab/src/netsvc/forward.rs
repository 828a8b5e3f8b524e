//! The data plane: TCP listeners on ClusterIPs, ingress IPs and host ports, each splicing accepted
//! connections to the backend its route picks.
//!
//! - The backend is chosen once, when the connection is accepted, and the connection stays on it until
//!   either side closes (iptables' conntrack pinning): endpoint changes only affect new connections.
//! - A connection that cannot be served (no ready endpoint, no healthy node, a node without a local
//!   endpoint, a backend refusing) is **accepted and reset**: the client's `connect` succeeds, then its
//!   first read or write fails with `ECONNRESET` (a non-blocking `connect` that checks its result after the
//!   reset arrived reports `ECONNRESET` itself; never `ECONNREFUSED`, which means "nothing listens").
//!   Real kube-proxy rejects at `connect` for a Service without endpoints and drops packets for a node
//!   without local endpoints; a reset is the one behaviour a userspace proxy can give every case, and it
//!   fails fast, so tests never wait for a timeout.
//! - Listeners are stopped when their Service port goes away; connections already open continue.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::NetsvcError;
use super::hostnet::{HostListenError, HostNet};
use super::registry::LoadBalancerEntry;
use super::route::{Frontend, Listen, Pick, Picker, RouteKey, RouteSpec, RouteTable};

/// A backend that does not complete the handshake within this time is treated as refusing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The live picker of one route, shared by its listeners.
#[derive(Debug)]
struct Route {
    label: String,
    picker: Mutex<Picker>,
}

impl Route {
    fn pick(&self) -> Pick {
        // A poisoned lock only means a panic elsewhere mid-pick; the picker's state is still valid.
        self.picker.lock().unwrap_or_else(|e| e.into_inner()).pick()
    }

    fn set_table(&self, table: RouteTable) -> bool {
        self.picker.lock().unwrap_or_else(|e| e.into_inner()).set_table(table)
    }
}

/// A bound listener; dropping it stops accepting (open connections are separate tasks and continue).
#[derive(Debug)]
struct Listening {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The listeners and routes currently served.
#[derive(Debug)]
pub(crate) struct Dataplane {
    hostnet: HostNet,
    host_available: bool,
    routes: HashMap<RouteKey, Arc<Route>>,
    listeners: BTreeMap<(RouteKey, Listen), Listening>,
    /// Listeners whose failure was already logged at warn level (later attempts log at debug).
    warned: BTreeSet<(RouteKey, Listen)>,
}

impl Dataplane {
    /// An empty data plane opening host-side listeners through `hostnet`.
    pub(crate) fn new(hostnet: HostNet) -> Self {
        Dataplane {
            hostnet,
            host_available: true,
            routes: HashMap::new(),
            listeners: BTreeMap::new(),
            warned: BTreeSet::new(),
        }
    }

    /// Makes the listeners and routes match `specs`. Returns `false` when some listener could not be bound
    /// (the caller retries later).
    pub(crate) async fn sync(&mut self, specs: &[RouteSpec]) -> bool {
        let desired: BTreeSet<(RouteKey, Listen)> =
            specs.iter().flat_map(|s| s.listen.iter().map(|l| (s.key.clone(), *l))).collect();
        self.listeners.retain(|key, listening| {
            let keep = desired.contains(key);
            if !keep {
                tracing::info!(route = %key.0, addr = %listening.local, "listener stopped");
            }
            keep
        });
        self.warned.retain(|key| desired.contains(key));

        let wanted: BTreeSet<&RouteKey> = specs.iter().map(|s| &s.key).collect();
        self.routes.retain(|key, _| wanted.contains(key));
        for spec in specs {
            let route = self.routes.entry(spec.key.clone()).or_insert_with(|| {
                Arc::new(Route { label: spec.key.to_string(), picker: Mutex::new(Picker::new(spec.table.clone())) })
            });
            if route.set_table(spec.table.clone()) {
                tracing::debug!(route = %spec.key, table = ?spec.table, "route updated");
            }
        }

        let mut complete = true;
        for spec in specs {
            for listen in &spec.listen {
                let key = (spec.key.clone(), *listen);
                if self.listeners.contains_key(&key) || (*listen == Listen::Host && !self.host_available) {
                    continue;
                }
                let Some(route) = self.routes.get(&spec.key).cloned() else { continue };
                match self.bind(*listen).await {
                    Ok(listener) => {
                        let local = listener
                            .local_addr()
                            .unwrap_or(SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)));
                        tracing::info!(route = %spec.key, addr = %local, host = (*listen == Listen::Host), "listening");
                        let task = tokio::spawn(accept_loop(listener, route));
                        self.warned.remove(&key);
                        self.listeners.insert(key, Listening { local, task });
                    }
                    Err(HostListenError::Unavailable) => self.host_available = false,
                    Err(HostListenError::Failed(err)) => {
                        complete = false;
                        if self.warned.insert(key) {
                            tracing::warn!(route = %spec.key, %err, "could not listen; will retry");
                        } else {
                            tracing::debug!(route = %spec.key, %err, "could not listen; will retry");
                        }
                    }
                }
            }
        }
        complete
    }

    async fn bind(&mut self, listen: Listen) -> Result<TcpListener, HostListenError> {
        match listen {
            Listen::Namespace(addr) => TcpListener::bind(addr)
                .await
                .map_err(|source| HostListenError::Failed(NetsvcError::Listen { addr: addr.to_string(), source })),
            Listen::Host => self.hostnet.listen().await,
        }
    }

    /// The registry entries of the load balancer routes among `specs`, with their host ports.
    pub(crate) fn load_balancers(&self, specs: &[RouteSpec]) -> Vec<LoadBalancerEntry> {
        specs
            .iter()
            .filter(|s| s.key.frontend == Frontend::LoadBalancer)
            .filter_map(|s| {
                Some(LoadBalancerEntry {
                    namespace: s.key.service.namespace.clone(),
                    name: s.key.service.name.clone(),
                    port: s.key.port,
                    port_name: s.port_name.clone(),
                    ingress_ip: s.ingress_ip?,
                    host: self.listeners.get(&(s.key.clone(), Listen::Host)).map(|l| l.local),
                })
            })
            .collect()
    }

    /// Stops every listener.
    pub(crate) fn stop(&mut self) {
        self.listeners.clear();
        self.routes.clear();
    }
}

async fn accept_loop(listener: TcpListener, route: Arc<Route>) {
    loop {
        match listener.accept().await {
            Ok((inbound, peer)) => {
                let pick = route.pick();
                tokio::spawn(serve(inbound, peer, pick, route.label.clone()));
            }
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(route = route.label, %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(mut inbound: TcpStream, peer: SocketAddr, pick: Pick, route: String) {
    let backend = match pick {
        Pick::Backend(backend) => backend,
        refusal => {
            tracing::debug!(route, %peer, ?refusal, "connection refused (reset)");
            reset(inbound);
            return;
        }
    };
    let mut outbound = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(route, %peer, %backend, %err, "backend refused the connection (reset)");
            reset(inbound);
            return;
        }
        Err(_) => {
            tracing::debug!(route, %peer, %backend, "backend did not answer (reset)");
            reset(inbound);
            return;
        }
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tracing::trace!(route, %peer, %backend, "connection forwarded");
    if let Err(err) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
        // Pass a backend's reset on to the client rather than turning it into a clean close.
        tracing::debug!(route, %peer, %backend, %err, "forwarded connection ended with an error");
        reset(inbound);
    }
}

/// Closes `stream` with a TCP reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
    if let Err(err) = stream.set_zero_linger() {
        tracing::debug!(%err, "could not set SO_LINGER 0; the connection closes normally");
    }
    drop(stream);
}
