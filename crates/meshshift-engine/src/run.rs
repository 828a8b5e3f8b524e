//! The run loop: the journal state machine (`meshshift_core::journal`) decides, this module does what it
//! says and records each event in the cluster before moving on. A crash anywhere leaves a journal from
//! which `resume` continues (a started step is applied again, idempotently) and `rollback` undoes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use meshshift_core::journal::{Direction, Event, Journal, Next, StepState};
use meshshift_core::plan::Plan;
use meshshift_kube::journal_store::{JournalStore, JournalStoreError, Stored};
use meshshift_kube::lock::{LockError, RunLock};
use serde_json::json;

use crate::context::{Ctx, Observer, Options, Phase};
use crate::error::EngineError;
use crate::steps;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step done.
    Finished,
    /// Every touched step undone.
    RolledBack,
    /// Stopped after the step asked for (`--until`); `resume` continues.
    Paused,
}

/// A run holding the lock and the journal.
pub struct Run {
    ctx: Ctx,
    store: JournalStore,
    stored: Stored,
    held: Held,
    /// When each step started in this process (unix ms): the traffic gates' window.
    step_started: std::collections::BTreeMap<usize, u64>,
}

/// How long a traffic gate may wait for enough requests to judge a step.
const TRAFFIC_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<(), EngineError> {
    let api: Api<Namespace> = Api::all(client.clone());
    // Read first, so that a run refused by the lock writes nothing (a failed read falls back to creating).
    if let Ok(Some(_)) = api.get_opt(name).await {
        return Ok(());
    }
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "meshshift"}}}),
    )
    .map_err(|e| EngineError::Invalid(e.to_string()))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(EngineError::api_about(format!("Namespace/{name}"), e)),
    }
}

/// Where a journal stands, in words.
pub fn describe(stored: &Stored) -> String {
    let done = stored.journal.steps.iter().filter(|s| s.state == StepState::Done).count();
    let undone = stored.journal.steps.iter().filter(|s| s.state == StepState::Undone).count();
    let current = match stored.journal.next() {
        Next::Start(i) | Next::Apply(i) | Next::Verify(i) | Next::Undo(i) => stored.journal.steps[i].id.clone(),
        Next::Finished => "finished".into(),
        Next::RolledBack => "rolled back".into(),
    };
    format!(
        "{} -> {} ({:?}; {done} of {} steps done, {undone} undone; at {current})",
        stored.plan.from_revision,
        stored.plan.to_revision,
        stored.journal.direction,
        stored.journal.steps.len()
    )
}

/// Whether a journal's run is over (nothing left to do in its direction).
pub fn is_over(journal: &Journal) -> bool {
    matches!(journal.next(), Next::Finished | Next::RolledBack)
}

/// The run lock while a run holds it: the Lease, whether it was lost, and the task that renews it.
struct Held {
    lock: Arc<RunLock>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Stops renewing and releases the Lease at once, for a run that could not begin (the journal
    /// refused it): the next run need not wait for the lease to expire. Best effort: an unreleased Lease
    /// still expires.
    async fn give_up(self) {
        self.renewer.abort();
        if let Ok(l) = Arc::try_unwrap(self.lock) {
            l.release().await.ok();
        }
    }
}

async fn lock(client: &Client, options: &Options) -> Result<Held, EngineError> {
    ensure_namespace(client, &options.namespace).await?;
    // A lost race for the Lease is decided again from a fresh read: another run's Lease then shows as
    // held, while this run's own create or update, replayed after its answer was lost, shows as its own.
    let mut raced = 0;
    let lock = loop {
        match RunLock::acquire(client, &options.namespace, &options.holder, options.lock_duration).await {
            Err(LockError::Raced) if raced < LOCK_ATTEMPTS => raced += 1,
            other => break Arc::new(other?),
        }
    };
    let lost = Arc::new(AtomicBool::new(false));
    let (l, flag, every) = (lock.clone(), lost.clone(), options.lock_duration / 3);
    // Renewal runs beside the steps, so a long wait (a soak, a rollout) never lets the lease lapse. A
    // failed renewal is tried again (each reads the Lease afresh) while the lease still runs; the lock is
    // lost when another holder shows up or the tries run out.
    let renewer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let mut tries = 0;
            loop {
                match l.renew().await {
                    Ok(()) => break,
                    Err(e @ LockError::Held { .. }) => {
                        tracing::error!("renewing the run lock failed: {e}");
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) if tries + 1 >= LOCK_ATTEMPTS => {
                        tracing::error!("renewing the run lock failed {LOCK_ATTEMPTS} times: {e}");
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("renewing the run lock failed, trying again: {e}");
                        tries += 1;
                        tokio::time::sleep((every / 8).max(std::time::Duration::from_millis(100))).await;
                    }
                }
            }
        }
    });
    Ok(Held { lock, lost, renewer })
}

/// Tries at the Lease (acquire after a lost race, a renewal, the release) before giving up.
const LOCK_ATTEMPTS: u32 = 4;

/// Tries at one journal save whose resourceVersion moved while the journal itself did not.
const SAVE_ATTEMPTS: u32 = 4;

/// Saves `stored`, guarded by its resourceVersion. On a conflict the journal is read again: if it still
/// holds what this run last saved (`previous`: only the resourceVersion moved, e.g. a label added) the
/// save is tried again at the new version; if it already holds what is being saved (this run's own
/// write, replayed after its answer was lost) it is done. Anything else is another writer's journal,
/// and the conflict stands.
async fn save_journal(store: &JournalStore, stored: &mut Stored, previous: &Journal) -> Result<(), EngineError> {
    for _ in 0..SAVE_ATTEMPTS {
        let conflict = match store.save(stored).await {
            Ok(()) => return Ok(()),
            Err(e @ JournalStoreError::Conflict { .. }) => e,
            Err(e) => return Err(e.into()),
        };
        let Some(current) = store.load().await? else { return Err(conflict.into()) };
        if current.plan != stored.plan {
            return Err(conflict.into());
        }
        if current.journal == stored.journal {
            stored.resource_version = current.resource_version;
            return Ok(());
        }
        if current.journal != *previous {
            return Err(conflict.into());
        }
        stored.resource_version = current.resource_version;
    }
    Err(EngineError::Contended(format!("the journal {}", meshshift_kube::journal_store::JOURNAL_NAME)))
}

impl Run {
    /// Starts a new run of `plan`: takes the lock, refuses when an unfinished run exists, archives a
    /// finished one, and journals the plan.
    pub async fn start(
        client: Client,
        plan: Plan,
        options: Options,
        observer: Arc<dyn Observer>,
    ) -> Result<Run, EngineError> {
        let held = lock(&client, &options).await?;
        let store = JournalStore::new(&client, &options.namespace);
        let outcome = async {
            if let Some(existing) = store.load().await? {
                if !is_over(&existing.journal) {
                    return Err(EngineError::RunInProgress { detail: describe(&existing) });
                }
                match store.archive(&existing).await {
                    Ok(archived) => tracing::info!("archived the previous run's journal as {archived}"),
                    // The guarded delete, replayed after its answer was lost, finds the journal gone.
                    Err(JournalStoreError::Api { source: kube::Error::Api(s), .. }) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let fresh = Journal::new(&plan);
            match store.create(&plan, &fresh).await {
                Ok(stored) => Ok(stored),
                // This run's create, replayed after its answer was lost (the lock is held: no other run
                // can have written the same plan's fresh journal).
                Err(e @ JournalStoreError::Conflict { .. }) => match store.load().await? {
                    Some(s) if s.plan == plan && s.journal == fresh => Ok(s),
                    _ => Err(e.into()),
                },
                Err(e) => Err(e.into()),
            }
        }
        .await;
        let stored = match outcome {
            Ok(s) => s,
            Err(e) => {
                held.give_up().await;
                return Err(e);
            }
        };
        Ok(Run::holding(client, plan, options, observer, store, stored, held))
    }

    /// Opens the run a journal records (for resume and rollback).
    pub async fn open(client: Client, options: Options, observer: Arc<dyn Observer>) -> Result<Run, EngineError> {
        let held = lock(&client, &options).await?;
        let store = JournalStore::new(&client, &options.namespace);
        let stored = match store.load().await {
            Ok(Some(s)) => s,
            other => {
                held.give_up().await;
                return Err(match other {
                    Err(e) => e.into(),
                    _ => EngineError::NoRun(options.namespace.clone()),
                });
            }
        };
        let plan = stored.plan.clone();
        Ok(Run::holding(client, plan, options, observer, store, stored, held))
    }

    fn holding(
        client: Client,
        plan: Plan,
        options: Options,
        observer: Arc<dyn Observer>,
        store: JournalStore,
        stored: Stored,
        held: Held,
    ) -> Run {
        Run { ctx: Ctx::new(client, plan, options, observer), store, stored, held, step_started: Default::default() }
    }

    /// Adds a traffic gate, checked after every step and during soak windows.
    pub fn add_traffic_gate(&mut self, gate: Arc<dyn crate::TrafficGate>) {
        self.ctx.traffic.push(gate);
    }

    /// Whether every traffic gate holds over the requests since `since_unix_ms` (true without gates).
    pub async fn traffic_holds(&self, since_unix_ms: u64) -> bool {
        self.ctx.traffic_holds(since_unix_ms, TRAFFIC_PATIENCE).await.is_ok()
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.ctx.plan
    }

    /// The journal as last saved.
    pub fn journal(&self) -> &Journal {
        &self.stored.journal
    }

    /// Which way the journal runs.
    pub fn direction(&self) -> Direction {
        self.stored.journal.direction
    }

    async fn record(&mut self, id: &str, event: Event) -> Result<(), EngineError> {
        if self.held.lost.load(Ordering::SeqCst) {
            return Err(EngineError::LockLost("the lease could not be renewed; another run may hold it".into()));
        }
        let previous = self.stored.journal.clone();
        self.stored.journal.record(id, event)?;
        save_journal(&self.store, &mut self.stored, &previous).await
    }

    fn with_step(e: EngineError, id: &str) -> EngineError {
        match e {
            EngineError::Breach { step, detail } if step.is_empty() => {
                EngineError::Breach { step: id.to_owned(), detail }
            }
            EngineError::Precondition { step, detail } if step.is_empty() => {
                EngineError::Precondition { step: id.to_owned(), detail }
            }
            EngineError::Gate { step, detail } if step.is_empty() => EngineError::Gate { step: id.to_owned(), detail },
            other => other,
        }
    }

    /// Runs forward to the end (or continues a forward run); with `until`, stops once that step is done.
    pub async fn forward(&mut self, until: Option<&str>) -> Result<Outcome, EngineError> {
        if let Some(id) = until
            && !self.ctx.plan.steps.iter().any(|s| s.id == id)
        {
            return Err(EngineError::Invalid(format!(
                "--until {id}: no such step in the plan (steps: {})",
                self.ctx.plan.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        if self.stored.journal.direction != Direction::Forward {
            return self.rollback().await;
        }
        loop {
            let next = self.stored.journal.next();
            let (i, phase) = match next {
                Next::Start(i) => (i, Phase::Starting),
                Next::Apply(i) => (i, Phase::Applying),
                Next::Verify(i) => (i, Phase::Verifying),
                Next::Finished => return Ok(Outcome::Finished),
                Next::Undo(_) | Next::RolledBack => return self.rollback().await,
            };
            let step = self.ctx.plan.steps[i].clone();
            self.ctx.observer.step(i, &step, phase);
            let ctx = self.ctx.clone();
            match next {
                Next::Start(_) => {
                    self.step_started.insert(i, now_ms());
                    let prior = steps::prior(&ctx, &step).await.map_err(|e| Self::with_step(e, &step.id))?;
                    self.record(&step.id, Event::Started(prior)).await?;
                }
                Next::Apply(_) => {
                    let prior = self.stored.journal.steps[i].prior.clone();
                    steps::apply(&ctx, &step, &prior).await.map_err(|e| Self::with_step(e, &step.id))?;
                    self.ctx.observer.step(i, &step, Phase::Applied);
                    self.record(&step.id, Event::Applied).await?;
                }
                _ => {
                    let prior = self.stored.journal.steps[i].prior.clone();
                    steps::verify(&ctx, &step, &prior).await.map_err(|e| Self::with_step(e, &step.id))?;
                    // What users saw while this step ran (since it started in this process, else since now).
                    let since = self.step_started.get(&i).copied().unwrap_or_else(now_ms);
                    match ctx.traffic_holds(since, TRAFFIC_PATIENCE).await {
                        Ok(verdicts) => {
                            for (gate, summary) in verdicts {
                                self.ctx.observer.gate(i, &step, &gate, true, &summary);
                            }
                        }
                        Err(why) => {
                            self.ctx.observer.gate(i, &step, "traffic", false, &why);
                            return Err(EngineError::Breach { step: step.id.clone(), detail: why });
                        }
                    }
                    self.record(&step.id, Event::Verified).await?;
                    self.ctx.observer.step(i, &step, Phase::Done);
                    if until == Some(step.id.as_str()) && i + 1 < self.ctx.plan.steps.len() {
                        return Ok(Outcome::Paused);
                    }
                }
            }
        }
    }

    /// Turns the run around (if not already) and undoes every touched step, last first.
    pub async fn rollback(&mut self) -> Result<Outcome, EngineError> {
        if self.stored.journal.direction != Direction::Rollback {
            let previous = self.stored.journal.clone();
            self.stored.journal.begin_rollback();
            save_journal(&self.store, &mut self.stored, &previous).await?;
        }
        loop {
            match self.stored.journal.next() {
                Next::Undo(i) => {
                    let step = self.ctx.plan.steps[i].clone();
                    self.ctx.observer.step(i, &step, Phase::Undoing);
                    self.record(&step.id, Event::UndoStarted).await?;
                    let prior = self.stored.journal.steps[i].prior.clone();
                    let ctx = self.ctx.clone();
                    let journal = self.stored.journal.clone();
                    steps::undo(&ctx, &step, &prior, &journal).await.map_err(|e| Self::with_step(e, &step.id))?;
                    self.record(&step.id, Event::Undone).await?;
                    self.ctx.observer.step(i, &step, Phase::Undone);
                }
                _ => return Ok(Outcome::RolledBack),
            }
        }
    }

    /// Releases the lock.
    pub async fn finish(self) -> Result<(), EngineError> {
        self.held.renewer.abort();
        let _ = self.held.renewer.await;
        let Ok(lock) = Arc::try_unwrap(self.held.lock) else { return Ok(()) };
        // The release reads the Lease afresh each time: a lost race or a transient failure is tried again.
        let mut tries = 1;
        loop {
            match lock.release().await {
                Err(LockError::Raced | LockError::Api { .. }) if tries < LOCK_ATTEMPTS => tries += 1,
                other => return Ok(other?),
            }
        }
    }
}
