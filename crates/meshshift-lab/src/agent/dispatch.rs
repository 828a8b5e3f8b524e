//! One node's pods: a watch on the pods bound to it (`spec.nodeName=<node>`, as the kubelet does) feeding
//! one [`PodWorker`] per pod UID, and the node's IP pool.
//!
//! A worker that finished (its pod deleted) leaves a tombstone, so that late watch events about its UID
//! (the echo of its own last status write, a pod held by finalizers) do not start the pod again. An IP
//! returns to the pool only when its worker has ended, i.e. after its containers stopped.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::NodeEnv;
use super::ipam::NodeIpam;
use super::pods::{PodUpdate, PodWorker};

/// A running worker.
struct Tracked {
    updates: mpsc::UnboundedSender<PodUpdate>,
    ip: Ipv4Addr,
    /// From the node pool (false for host-network pods, which use the node's address).
    pooled: bool,
    key: String,
    /// The watch reported the pod deleted: no tombstone needed when the worker ends.
    deleted: bool,
}

/// The node's pod bookkeeping.
struct Dispatcher {
    env: Arc<NodeEnv>,
    ipam: NodeIpam,
    workers: HashMap<String, Tracked>,
    /// Task id -> pod UID, to know whose worker ended.
    tasks: HashMap<tokio::task::Id, String>,
    /// UIDs whose worker finished.
    finished: HashSet<String>,
    /// UIDs listed since the last watch restart (`Init`), until `InitDone`.
    listing: Option<HashSet<String>>,
    running: JoinSet<()>,
}

/// Watches the node's pods and runs them until `shutdown`.
pub(crate) async fn run(env: Arc<NodeEnv>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(env.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", env.node.name));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    let mut d = Dispatcher {
        ipam: NodeIpam::new(env.node.index),
        env,
        workers: HashMap::new(),
        tasks: HashMap::new(),
        finished: HashSet::new(),
        listing: None,
        running: JoinSet::new(),
    };
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(event)) => d.on_event(event),
                Some(Err(err)) => tracing::warn!(node = d.env.node.name, %err, "pod watch failed; retrying"),
                None => return,
            },
            Some(ended) = d.running.join_next_with_id(), if !d.running.is_empty() => {
                let id = match &ended {
                    Ok((id, ())) => *id,
                    Err(err) => {
                        tracing::error!(node = d.env.node.name, %err, "a pod worker crashed");
                        err.id()
                    }
                };
                d.worker_ended(id);
            }
            _ = shutdown.changed() => return,
        }
    }
}

impl Dispatcher {
    fn on_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.listing = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(listing), Some(uid)) = (self.listing.as_mut(), pod.metadata.uid.clone()) {
                    listing.insert(uid);
                }
                self.observe(pod);
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let vanished: Vec<String> = self.workers.keys().filter(|uid| !listed.contains(*uid)).cloned().collect();
                for uid in vanished {
                    self.gone(&uid);
                }
                self.finished.retain(|uid| listed.contains(uid));
            }
            watcher::Event::Apply(pod) => self.observe(pod),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.gone(uid);
                    self.finished.remove(uid);
                    if let Some(tracked) = self.workers.get_mut(uid) {
                        tracked.deleted = true;
                    }
                }
            }
        }
    }

    fn observe(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        if self.finished.contains(&uid) {
            return;
        }
        let pod = Arc::new(pod);
        if let Some(tracked) = self.workers.get(&uid) {
            let _ = tracked.updates.send(PodUpdate::Changed(pod));
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return; // terminal pods are not run again
        }
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let Some((ip, pooled)) = self.address_for(&pod) else {
            tracing::error!(node = self.env.node.name, pod = key, "no free pod IP on this node");
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = PodWorker::new(self.env.clone(), pod, ip);
        let handle = self.running.spawn(worker.run(rx));
        self.tasks.insert(handle.id(), uid.clone());
        self.workers.insert(uid, Tracked { updates: tx, ip, pooled, key, deleted: false });
    }

    /// The pod's address: the node's for host-network pods; else the IP it already had (the agent
    /// restarted) if still free, else a new one.
    fn address_for(&mut self, pod: &Pod) -> Option<(Ipv4Addr, bool)> {
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            return Some((self.env.node.internal_ip, false));
        }
        let previous = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok());
        if let Some(ip) = previous
            && self.ipam.reserve(ip)
        {
            return Some((ip, true));
        }
        self.ipam.allocate().map(|ip| (ip, true))
    }

    fn gone(&mut self, uid: &str) {
        if let Some(tracked) = self.workers.get(uid) {
            let _ = tracked.updates.send(PodUpdate::Gone);
        }
    }

    fn worker_ended(&mut self, id: tokio::task::Id) {
        let Some(uid) = self.tasks.remove(&id) else { return };
        let Some(tracked) = self.workers.remove(&uid) else { return };
        if tracked.pooled {
            self.ipam.release(tracked.ip);
        }
        tracing::debug!(node = self.env.node.name, pod = tracked.key, ip = %tracked.ip, in_use = self.ipam.in_use(), "pod finished; IP released");
        if !tracked.deleted {
            self.finished.insert(uid);
        }
    }
}
