//! Emulated container images: what runs "inside" a pod of the lab.
//!
//! The node agent ([`crate::agent`]) starts one task per container of every pod bound to its nodes and
//! picks the behaviour from the image through an [`ImageRegistry`]. Every emulated container serves real
//! sockets on its pod's IP (10.244.x.y, local to the lab's network namespace), so probes, Services and the
//! traffic of a test are real TCP/HTTP.
//!
//! Addresses inside a pod: all pods share the lab's one network namespace, so a pod's "localhost" is
//! emulated by a loopback address private to the pod ([`ContainerContext::pod_loopback`], `127.a.b.c`
//! derived from the pod IP). An app container of a pod with an Istio sidecar binds there, and the sidecar
//! binds the pod IP on the app's ports and forwards inbound traffic to it, as iptables redirection does in
//! a real pod. [`ContainerContext::app_bind_ip`] gives each container the address it should bind.

pub mod bookinfo;
pub mod generic;
pub mod istiod;
pub mod operator;
pub mod protocol;
pub mod proxy;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::watch;

/// Header every emulated proxy adds to responses: its revision.
pub const HEADER_REVISION: &str = "x-meshshift-revision";
/// Header every emulated proxy adds to responses: its Istio version.
pub const HEADER_VERSION: &str = "x-meshshift-version";
/// Header every emulated proxy adds to responses: `gateway` or `sidecar`.
pub const HEADER_PROXY: &str = "x-meshshift-proxy";
/// Header every emulated server adds to responses: the answering pod (`namespace/name`).
pub const HEADER_POD: &str = "x-meshshift-pod";

/// Where a container is in its life. The node agent moves it forward; containers watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Serving.
    Running,
    /// The pod is being deleted: readiness is already false; keep serving open connections and new
    /// ones that still arrive (endpoints propagate late) until `deadline`, then exit. Proxies apply their
    /// own drain duration (terminationDrainDuration) within it.
    Terminating {
        /// When the grace period (terminationGracePeriodSeconds) ends.
        deadline: Instant,
    },
    /// The grace period is over: stop now.
    Killed,
}

/// Finds Services by host name: `name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local` (short names
/// relative to the calling pod's namespace) and a port, giving the Service's ClusterIP and port.
pub type ServiceResolver = Arc<dyn Fn(&str, &str, u16) -> Option<SocketAddrV4> + Send + Sync>;

/// Everything a container task gets.
#[derive(Clone)]
pub struct ContainerContext {
    /// The pod, as the node agent last saw it.
    pub pod: Arc<Pod>,
    /// This container's spec.
    pub container: Container,
    /// The pod's IP.
    pub pod_ip: Ipv4Addr,
    /// The pod's private loopback address (its "localhost").
    pub pod_loopback: Ipv4Addr,
    /// An admin client for the lab's apiserver (istiod watches config, patches webhooks with it).
    pub client: kube::Client,
    /// Service name resolution (the lab has no DNS): `resolve(pod_namespace, host, port)`.
    pub resolve: ServiceResolver,
    /// Lifecycle changes.
    pub lifecycle: watch::Receiver<Lifecycle>,
}

impl ContainerContext {
    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// The pod's name.
    pub fn pod_name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    /// Whether the pod has an Istio sidecar (an `istio-proxy` container that is not a gateway router).
    pub fn pod_has_sidecar(&self) -> bool {
        self.pod.spec.as_ref().is_some_and(|s| {
            let native = s
                .init_containers
                .iter()
                .flatten()
                .any(|c| c.name == "istio-proxy" && c.restart_policy.as_deref() == Some("Always"));
            let plain =
                s.containers.iter().any(|c| c.name == "istio-proxy" && !c.args.iter().flatten().any(|a| a == "router"));
            native || plain
        })
    }

    /// The address this container binds its ports on: the pod loopback for an app container behind a
    /// sidecar, else the pod IP.
    pub fn app_bind_ip(&self) -> Ipv4Addr {
        if self.container.name != "istio-proxy" && self.pod_has_sidecar() { self.pod_loopback } else { self.pod_ip }
    }

    /// The container's declared TCP ports.
    pub fn ports(&self) -> Vec<u16> {
        self.container.ports.iter().flatten().filter_map(|p| u16::try_from(p.container_port).ok()).collect()
    }

    /// An environment variable's literal value.
    pub fn env(&self, name: &str) -> Option<String> {
        self.container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
    }
}

/// The pod-private loopback address for a pod IP: 10.244.x.y -> 127.244.x.y.
pub fn pod_loopback(pod_ip: Ipv4Addr) -> Ipv4Addr {
    let [_, b, c, d] = pod_ip.octets();
    Ipv4Addr::new(127, b, c, d)
}

/// Why a container stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// It could not bind a port.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Its configuration (env, args, image) is unusable.
    #[error("bad container configuration: {0}")]
    Config(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A running container: resolves when the container exits.
pub type ContainerFuture = BoxFuture<'static, Result<(), ContainerError>>;

/// One kind of emulated image.
pub trait ContainerImage: Send + Sync {
    /// A name for logs (`istiod`, `proxy`, `bookinfo`, `http`).
    fn name(&self) -> &'static str;
    /// Whether this emulation runs `container` of `pod`.
    fn matches(&self, pod: &Pod, container: &Container) -> bool;
    /// Starts the container.
    fn start(&self, ctx: ContainerContext) -> ContainerFuture;
}

/// Image emulations, tried in order; the last one should match everything.
#[derive(Default, Clone)]
pub struct ImageRegistry {
    images: Vec<Arc<dyn ContainerImage>>,
}

impl ImageRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an emulation (earlier ones win).
    pub fn with(mut self, image: Arc<dyn ContainerImage>) -> Self {
        self.images.push(image);
        self
    }

    /// The emulation for a container, if any matches.
    pub fn find(&self, pod: &Pod, container: &Container) -> Option<Arc<dyn ContainerImage>> {
        self.images.iter().find(|i| i.matches(pod, container)).cloned()
    }
}

/// The image's last path component without tag (`docker.io/istio/proxyv2:1.9.7` -> `proxyv2`).
pub fn image_name(container: &Container) -> &str {
    container.image.as_deref().and_then(meshshift_core::version::image_component).unwrap_or_default()
}

/// The lab's image emulations, most specific first. (Filled in as the emulations land.)
pub fn default_registry() -> ImageRegistry {
    ImageRegistry::new()
        .with(Arc::new(istiod::IstiodImage::new()))
        .with(Arc::new(proxy::ProxyImage::new()))
        .with(Arc::new(bookinfo::Bookinfo))
        .with(Arc::new(operator::OperatorImage))
        // Keep last: it matches every container.
        .with(Arc::new(generic::GenericHttp))
}
