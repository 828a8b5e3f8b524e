//! Service networking: the lab's kube-proxy and its cloud load balancer.
//!
//! Inside the lab's network namespace (where `10.96.0.0/16`, `10.244.0.0/16` and `10.250.0.0/24` are local):
//! - every Service with a ClusterIP gets a TCP listener on `ClusterIP:port` per TCP port, splicing each
//!   connection to one of the Service's **ready** endpoints (Endpoints `subsets[].addresses`), round-robin;
//! - every `type: LoadBalancer` Service gets an ingress IP from `10.250.0.0/24`, published in
//!   `status.loadBalancer.ingress[0].ip`, a listener on `ingressIP:port`, and a listener on
//!   `127.0.0.1:<ephemeral>` in the **host** namespace per port, recorded in `<lab dir>/loadbalancers.json`
//!   (read it with [`LoadBalancers`]). With `externalTrafficPolicy: Local` the balancer health-checks nodes
//!   (every 2 s, 2 successes / 2 failures, overridable per Service with the `lab.meshshift.io/*`
//!   annotations [`ANNOTATION_INTERVAL`], [`ANNOTATION_HEALTHY`], [`ANNOTATION_UNHEALTHY`]) and a connection
//!   sent to a node without a local ready endpoint fails.
//!
//! Realism that upgrades depend on (see docs "What drops requests"): every Service or Endpoints change
//! takes effect `propagation_delay` after the agent observes it (kube-proxy's lag); an open connection
//! stays on its backend until it closes; connections that cannot be served are accepted and reset.
//!
//! Shape: `spec` parses objects into small comparable views, `index` is a pure state machine fed
//! by watch events and the clock (delays, IP allocation, health checks, status decisions), `forward`,
//! `hostnet`, `status` and `registry` carry its decisions out. This file only wires them together.

mod endpoints;
mod error;
mod forward;
mod hostnet;
mod index;
mod loadbalancer;
mod registry;
mod route;
mod spec;
mod status;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};

use crate::LabError;
use crate::kubeconfig::client_from_file;
use crate::options::LabOptions;
use crate::supervisor::{Agent, AgentContext};

pub use error::NetsvcError;
pub use loadbalancer::POOL_CIDR;
pub use registry::{FILE_NAME as REGISTRY_FILE, LoadBalancerEntry, LoadBalancers};
pub use spec::{ANNOTATION_HEALTHY, ANNOTATION_INTERVAL, ANNOTATION_UNHEALTHY};

use forward::Dataplane;
use hostnet::HostNet;
use index::Index;
use registry::RegistryWriter;
use status::StatusWriter;

/// The agent's name in logs and errors.
pub(crate) const AGENT_NAME: &str = "service-proxy";

/// How soon a listener that could not be bound (or a registry that could not be written) is retried.
const RETRY: Duration = Duration::from_secs(1);

/// The service-networking agent: kube-proxy emulation and load balancers, with `opts.propagation_delay`.
pub fn agent(opts: &LabOptions) -> Agent {
    let delay = opts.propagation_delay;
    Agent::new(AGENT_NAME, move |ctx| async move { run(ctx, delay).await.map_err(LabError::from) })
}

/// Watches Services and Endpoints and keeps the data plane in line until the lab stops.
async fn run(ctx: AgentContext, delay: Duration) -> Result<(), NetsvcError> {
    let client = client_from_file(&ctx.inside_kubeconfig).await.map_err(|e| NetsvcError::Client(Box::new(e)))?;
    let mut registry = RegistryWriter::new(ctx.layout.root());
    registry.write(Vec::new())?;
    let mut dataplane = Dataplane::new(HostNet::new(ctx.host_netns.clone()));
    let status = StatusWriter::spawn(client.clone());
    let mut index = Index::new(delay);
    let mut services =
        watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff().boxed();
    let mut endpoints = watcher(Api::<Endpoints>::all(client), watcher::Config::default()).default_backoff().boxed();
    let mut shutdown = ctx.shutdown.clone();
    let mut retry_at: Option<Instant> = None;
    tracing::info!(propagation_delay_ms = delay.as_millis() as u64, "service networking started");

    while !*shutdown.borrow() {
        let wake = [index.next_wakeup(), retry_at].into_iter().flatten().min();
        let timer = async move {
            match wake {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() { break },
            event = services.next() => match event {
                Some(Ok(event)) => index.service_event(event, Instant::now()),
                Some(Err(err)) => tracing::warn!(%err, "Service watch failed; retrying"),
                None => return Err(NetsvcError::WatchEnded { kind: "Service" }),
            },
            event = endpoints.next() => match event {
                Some(Ok(event)) => index.endpoints_event(event, Instant::now()),
                Some(Err(err)) => tracing::warn!(%err, "Endpoints watch failed; retrying"),
                None => return Err(NetsvcError::WatchEnded { kind: "Endpoints" }),
            },
            () = timer => {}
        }

        let now = Instant::now();
        index.advance(now);
        let retry_due = retry_at.is_some_and(|at| at <= now);
        if index.take_dirty() || retry_due {
            let routes = index.routes();
            let mut complete = dataplane.sync(&routes).await;
            if let Err(err) = registry.write(dataplane.load_balancers(&routes)) {
                tracing::warn!(%err, "could not write the load balancer registry; will retry");
                complete = false;
            }
            retry_at = (!complete).then(|| Instant::now() + RETRY);
        }
        // After the sync: a status is published once its listeners are up, as a cloud controller does.
        for update in index.status_updates() {
            status.send(update);
        }
    }
    dataplane.stop();
    tracing::info!("service networking stopped");
    Ok(())
}
