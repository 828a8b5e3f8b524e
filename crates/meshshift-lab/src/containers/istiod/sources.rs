//! The watches behind the config stream: Gateways and VirtualServices (`networking.istio.io`, read as
//! `v1alpha3`, which every CRD set in the fixtures serves) and Services, folded into numbered snapshots.
//!
//! The Istio kinds are resolved by discovery: until their CRDs are installed they count as empty (and
//! synced, so a bare lab's istiod still becomes ready), and discovery is retried.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::config::{Publisher, build};
use super::error::IstiodError;
use super::identity::Istiod;
use super::index::Index;
use super::patcher::KnownTags;
use crate::containers::protocol::ConfigSnapshot;

/// The group and version the Istio kinds are read in.
const GROUP: &str = "networking.istio.io";
const VERSION: &str = "v1alpha3";
/// How often discovery is retried while a CRD is missing.
const REDISCOVER: Duration = Duration::from_secs(3);

/// The Istio config kinds pushed to proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IstioKind {
    Gateway,
    VirtualService,
}

impl IstioKind {
    fn name(self) -> &'static str {
        match self {
            IstioKind::Gateway => "Gateway",
            IstioKind::VirtualService => "VirtualService",
        }
    }
}

/// One watch event for the config state. The events are boxed: a channel slot is as large as the largest
/// variant, and an `Event<Service>` is hundreds of bytes.
enum Source {
    Istio(IstioKind, Box<Event<DynamicObject>>),
    Absent(IstioKind),
    Service(Box<Event<Service>>),
}

/// The ApiResource of `kind`, or `None` when the apiserver does not serve it (CRD not installed).
async fn discover(client: &kube::Client, kind: IstioKind) -> Result<Option<ApiResource>, kube::Error> {
    let gvk = GroupVersionKind::gvk(GROUP, VERSION, kind.name());
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, _)) => Ok(Some(resource)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

async fn follow_istio_kind(client: kube::Client, kind: IstioKind, tx: mpsc::Sender<Source>) {
    let resource = loop {
        match discover(&client, kind).await {
            Ok(Some(resource)) => break resource,
            Ok(None) => {
                tracing::debug!(kind = kind.name(), "not served yet (CRD missing)");
                if tx.send(Source::Absent(kind)).await.is_err() {
                    return;
                }
            }
            Err(err) => tracing::warn!(kind = kind.name(), %err, "discovery failed"),
        }
        tokio::time::sleep(REDISCOVER).await;
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if tx.send(Source::Istio(kind, Box::new(event))).await.is_err() {
                    return;
                }
            }
            Err(err) => tracing::warn!(kind = kind.name(), %err, "watch failed"),
        }
    }
}

async fn follow_services(client: kube::Client, tx: mpsc::Sender<Source>) {
    let mut events =
        watcher::watcher(Api::<Service>::all(client), watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if tx.send(Source::Service(Box::new(event))).await.is_err() {
                    return;
                }
            }
            Err(err) => tracing::warn!(%err, "watching Services failed"),
        }
    }
}

/// The three indexes.
#[derive(Default)]
struct Indexes {
    gateways: Index<DynamicObject>,
    virtual_services: Index<DynamicObject>,
    services: Index<Service>,
}

impl Indexes {
    fn apply(&mut self, source: Source) {
        match source {
            Source::Istio(IstioKind::Gateway, e) => self.gateways.apply(*e),
            Source::Istio(IstioKind::VirtualService, e) => self.virtual_services.apply(*e),
            Source::Absent(IstioKind::Gateway) => self.gateways.set_absent(),
            Source::Absent(IstioKind::VirtualService) => self.virtual_services.set_absent(),
            Source::Service(e) => self.services.apply(*e),
        };
    }

    fn synced(&self) -> bool {
        self.gateways.synced() && self.virtual_services.synced() && self.services.synced()
    }
}

/// Watches config and publishes a snapshot (for this revision and its tags) whenever it changes;
/// sets `synced` once every watch has listed. Runs until dropped.
pub async fn run(
    client: kube::Client,
    istiod: Arc<Istiod>,
    mut tags: watch::Receiver<KnownTags>,
    config_tx: watch::Sender<Option<Arc<ConfigSnapshot>>>,
    synced_tx: watch::Sender<bool>,
) -> Result<(), IstiodError> {
    let (tx, mut rx) = mpsc::channel(256);
    let mut watches = JoinSet::new();
    watches.spawn(follow_istio_kind(client.clone(), IstioKind::Gateway, tx.clone()));
    watches.spawn(follow_istio_kind(client.clone(), IstioKind::VirtualService, tx.clone()));
    watches.spawn(follow_services(client, tx));
    let mut indexes = Indexes::default();
    let mut publisher = Publisher::default();
    loop {
        tokio::select! {
            source = rx.recv() => match source {
                Some(source) => {
                    indexes.apply(source);
                    // Fold a burst of events into one snapshot.
                    while let Ok(source) = rx.try_recv() {
                        indexes.apply(source);
                    }
                }
                None => return Err(IstiodError::Stopped("the config watches")),
            },
            changed = tags.changed() => {
                if changed.is_err() {
                    return Err(IstiodError::Stopped("the revision tag source"));
                }
            }
        }
        // Scoping needs the tags: nothing is published before they are known.
        let known = tags.borrow_and_update().clone();
        let Some(known) = known.filter(|_| indexes.synced()) else {
            continue;
        };
        synced_tx.send_if_modified(|synced| !std::mem::replace(synced, true));
        let snapshot = build(
            indexes.gateways.items(),
            indexes.virtual_services.items(),
            indexes.services.items(),
            &istiod.revision,
            &known,
        );
        if let Some(snapshot) = publisher.next(snapshot) {
            tracing::debug!(
                revision = %istiod.revision,
                generation = snapshot.generation,
                gateways = snapshot.gateways.len(),
                virtual_services = snapshot.virtual_services.len(),
                services = snapshot.services.len(),
                "new config"
            );
            config_tx.send_replace(Some(Arc::new(snapshot)));
        }
    }
}
