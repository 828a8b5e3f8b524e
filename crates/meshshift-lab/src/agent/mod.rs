//! The node agent: the lab's kubelet.
//!
//! For each of `LabOptions::nodes` nodes (`lab-node-1`, ...) it registers a Node and keeps it alive
//! (Lease and status heartbeats, `nodes`), watches the pods bound to it (`dispatch`) and runs each pod
//! (`pods`): a pod IP from the node's range `10.244.<n>.0/24` (`ipam`), one task per container running
//! its image's emulation (`runner`, [`crate::containers`]), real HTTP/TCP probes (`probes`), status
//! written through the status subresource (`status`), and deletions carried out like the kubelet does
//! (preStop, Terminating, grace period, final DELETE; `hooks`, `pods`). Containers resolve Service
//! names through a Services reflector (`resolver`).
//!
//! Everything runs on the supervisor's single-threaded runtime inside the lab's network namespace, so the
//! containers' sockets bind pod IPs that exist only there.
//!
//! Not emulated: exec (exec probes pass, exec preStop hooks other than `sleep` are skipped), volumes,
//! images being pulled, resource limits, readiness gates, in-place container image changes (a changed
//! image takes effect only in a new pod), ephemeral containers, the kubelet's own API (no `kubectl logs`,
//! `exec` or `port-forward`), Events. Native sidecars stop together with the other containers (the
//! kubelet stops them last).

mod actions;
mod dispatch;
mod error;
mod hooks;
mod ipam;
mod nodes;
mod pods;
mod probes;
mod resolver;
mod runner;
mod status;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::task::JoinSet;

pub use error::AgentError;
pub use nodes::{node_ip, node_name};

use crate::LabError;
use crate::containers::{ImageRegistry, ServiceResolver};
use crate::kubeconfig::client_from_file;
use crate::options::LabOptions;
use crate::supervisor::{Agent, AgentContext};
use nodes::NodeIdentity;

/// The agent's name in logs and errors.
pub const AGENT_NAME: &str = "node-agent";
/// The most nodes a lab can have: one /24 of 10.244.0.0/16 each, and 10.244.255.x is the apiserver's.
pub const MAX_NODES: u32 = 254;
/// How long to wait for the first list of Services before starting pods anyway.
const SERVICES_WAIT: Duration = Duration::from_secs(30);
/// Attempts at registering a node before the agent gives up.
const REGISTER_ATTEMPTS: u32 = 10;

/// What every pod worker of a node shares.
pub(crate) struct NodeEnv {
    pub client: Client,
    pub images: ImageRegistry,
    pub resolve: ServiceResolver,
    pub node: NodeIdentity,
}

/// The node agent for `opts.nodes` nodes, running containers with `images` (containers no emulation
/// matches run as [`crate::containers::generic::GenericHttp`]).
pub fn agent(opts: &LabOptions, images: ImageRegistry) -> Agent {
    let nodes = opts.nodes;
    Agent::new(AGENT_NAME, move |ctx| async move { run(nodes, images, ctx).await.map_err(LabError::from) })
}

async fn run(nodes: u32, images: ImageRegistry, ctx: AgentContext) -> Result<(), AgentError> {
    if nodes > MAX_NODES {
        return Err(AgentError::TooManyNodes { max: MAX_NODES, asked: nodes });
    }
    let client = client_from_file(&ctx.inside_kubeconfig).await?;
    let mut tasks = JoinSet::new();

    let (services, reflect) = resolver::services_reflector(client.clone());
    tasks.spawn(reflect);
    // Containers resolve Services as soon as they start: let the first list land first.
    if tokio::time::timeout(SERVICES_WAIT, services.wait_until_ready()).await.is_err() {
        tracing::warn!("Services not listed after {} s; starting pods anyway", SERVICES_WAIT.as_secs());
    }
    let resolve = resolver::from_store(services);

    let mut envs = Vec::new();
    for index in 1..=nodes {
        let id = NodeIdentity::new(
            u8::try_from(index).map_err(|_| AgentError::TooManyNodes { max: MAX_NODES, asked: nodes })?,
        );
        let uid = register_with_retries(&client, &id).await?;
        tasks.spawn(nodes::keep_alive(client.clone(), id.clone(), uid, ctx.shutdown.clone()));
        envs.push(Arc::new(NodeEnv {
            client: client.clone(),
            images: images.clone(),
            resolve: resolve.clone(),
            node: id,
        }));
    }
    for env in envs {
        tasks.spawn(dispatch::run(env, ctx.shutdown.clone()));
    }
    tracing::info!(nodes, "node agent running");

    let mut shutdown = ctx.shutdown.clone();
    let _ = shutdown.wait_for(|stop| *stop).await;
    tasks.abort_all();
    Ok(())
}

async fn register_with_retries(client: &Client, id: &NodeIdentity) -> Result<String, AgentError> {
    let mut attempt = 1;
    loop {
        match nodes::register(client, id).await {
            Ok(uid) => return Ok(uid),
            Err(source) if attempt >= REGISTER_ATTEMPTS => {
                return Err(AgentError::Register { node: id.name.clone(), source });
            }
            Err(err) => {
                tracing::warn!(node = id.name, %err, attempt, "registering the node failed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
