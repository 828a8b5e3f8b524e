//! The engine's state in a real cluster: the run lock (a Lease) and the journal (a ConfigMap), against a
//! real kube-apiserver: a second run is refused naming the holder, a dead holder's lock expires, and a
//! journal changed by someone else is detected instead of overwritten.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use meshshift_core::journal::{Event, Journal};
use meshshift_core::plan::{Action, Plan, Step};
use meshshift_kube::journal_store::{JOURNAL_NAME, JournalStore, JournalStoreError};
use meshshift_kube::lock::{LockError, RunLock};
use meshshift_lab::testing::create_namespace;
use serde_json::json;
use support::start_cluster;

fn plan() -> Plan {
    Plan {
        from_revision: "1-9-7".into(),
        from_version: "1.9.7".into(),
        to_revision: "1-10-6".into(),
        to_version: "1.10.6".into(),
        control_plane_namespace: "istio-system".into(),
        hops: vec![],
        steps: vec![Step {
            id: "01-migrate-namespace-bookinfo".into(),
            action: Action::MigrateNamespace { namespace: "bookinfo".into() },
            changes: vec![],
            preconditions: vec![],
            gates: vec!["g".into()],
            undo: "u".into(),
        }],
        assumptions: vec![],
    }
}

#[tokio::test]
async fn lock_refuses_a_second_run_and_expires_with_its_holder() {
    let cluster = start_cluster();
    let client = cluster.client().await.expect("client");
    create_namespace(&client, "meshshift", json!({})).await;

    let first = RunLock::acquire(&client, "meshshift", "run-a@host1", Duration::from_secs(2))
        .await
        .expect("first run takes the lock");
    match RunLock::acquire(&client, "meshshift", "run-b@host2", Duration::from_secs(2)).await {
        Err(e @ LockError::Held { .. }) => assert!(e.to_string().contains("run-a@host1"), "names the holder: {e}"),
        other => panic!("a second run must be refused, got {other:?}"),
    }
    first.renew().await.expect("the holder renews");

    // run-a dies (stops renewing): after the lease duration run-b takes over.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = RunLock::acquire(&client, "meshshift", "run-b@host2", Duration::from_secs(2))
        .await
        .expect("expired lock taken over");
    assert!(first.renew().await.is_err(), "the dead holder cannot renew a lock someone else took");
    second.release().await.expect("release");
    let third = RunLock::acquire(&client, "meshshift", "run-c@host3", Duration::from_secs(30))
        .await
        .expect("a released lock is free at once");
    third.release().await.expect("release");
}

#[tokio::test]
async fn journal_round_trips_and_detects_concurrent_and_corrupt_changes() {
    let cluster = start_cluster();
    let client = cluster.client().await.expect("client");
    create_namespace(&client, "meshshift", json!({})).await;
    let store = JournalStore::new(&client, "meshshift");
    assert_eq!(store.load().await.expect("load"), None, "no run yet");

    let plan = plan();
    let mut stored = store.create(&plan, &Journal::new(&plan)).await.expect("create");
    assert!(
        matches!(store.create(&plan, &Journal::new(&plan)).await, Err(JournalStoreError::Conflict { .. })),
        "one run's journal at a time"
    );
    stored.journal.record("01-migrate-namespace-bookinfo", Event::Started(vec![])).expect("record");
    store.save(&mut stored).await.expect("save");
    let loaded = store.load().await.expect("load").expect("journal");
    assert_eq!(loaded, stored, "what was saved is what is loaded");

    // Another writer (a concurrent run, or a person) changes it: our stale save is refused.
    let mut stale = loaded.clone();
    let mut other = loaded.clone();
    other.journal.record("01-migrate-namespace-bookinfo", Event::Applied).expect("record");
    store.save(&mut other).await.expect("the other writer saves first");
    stale.journal.record("01-migrate-namespace-bookinfo", Event::Applied).expect("record");
    assert!(matches!(store.save(&mut stale).await, Err(JournalStoreError::Conflict { .. })));

    // A corrupted journal is reported, not guessed at.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "meshshift");
    cms.patch(JOURNAL_NAME, &PatchParams::default(), &Patch::Merge(json!({"data": {"journal.json": "{not json"}})))
        .await
        .expect("corrupt it");
    match store.load().await {
        Err(e @ JournalStoreError::Corrupted { .. }) => assert!(e.to_string().contains("journal.json"), "{e}"),
        other => panic!("expected Corrupted, got {other:?}"),
    }
}
