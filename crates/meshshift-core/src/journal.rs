//! The journal state machine: where an `apply` stands, so it can resume after a crash without repeating
//! side effects, and roll back exactly what it changed, in reverse.
//!
//! Every mutation is journaled first: a step is `Started` (with the prior values of every field it is
//! about to change) before anything is written, `Applied` after the writes, `Done` once its gates passed.
//! A crash between `Started` and `Applied` is resumed by re-applying (the engine compares the cluster with
//! the intended values, so a write that already happened is not repeated). Rollback walks back from the
//! last touched step, restoring the recorded prior values. The adapter stores the journal in the cluster;
//! this module only decides, and is exhaustively testable without one.

use serde::{Deserialize, Serialize};

use crate::plan::{Change, Plan};

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Not touched.
    Pending,
    /// Prior values recorded; the writes may or may not have happened.
    Started,
    /// Written; gates not yet passed.
    Applied,
    /// Gates passed.
    Done,
    /// Restoring prior values.
    Undoing,
    /// Prior values restored.
    Undone,
}

/// One step's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The plan step's id.
    pub id: String,
    /// Its state.
    pub state: StepState,
    /// The values of every field it changes, read just before it started (what rollback restores).
    pub prior: Vec<Change>,
}

/// Which way the journal runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Applying the plan.
    Forward,
    /// Undoing it.
    Rollback,
}

/// The journal of one plan's execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Which way it runs.
    pub direction: Direction,
    /// One record per plan step, in plan order.
    pub steps: Vec<StepRecord>,
}

/// Something that happened to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// About to write: these are the prior values.
    Started(Vec<Change>),
    /// Written.
    Applied,
    /// Gates passed.
    Verified,
    /// About to restore prior values.
    UndoStarted,
    /// Restored.
    Undone,
}

/// What the engine should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Record prior values of step `i`, then write it.
    Start(usize),
    /// Write step `i` (again, idempotently: it was started but not recorded as applied).
    Apply(usize),
    /// Check step `i`'s gates.
    Verify(usize),
    /// Restore step `i`'s prior values.
    Undo(usize),
    /// Every step is done.
    Finished,
    /// Every touched step is undone.
    RolledBack,
}

/// A transition the journal refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The step id is not in the journal.
    #[error("step {0} is not in this plan's journal")]
    UnknownStep(String),
    /// The event does not fit the step's state (or the journal's direction, or the step order).
    #[error("step {step} is {state:?}: cannot record {event}")]
    InvalidTransition {
        /// Step id.
        step: String,
        /// Its state.
        state: StepState,
        /// The refused event.
        event: &'static str,
    },
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::Started(_) => "started",
        Event::Applied => "applied",
        Event::Verified => "verified",
        Event::UndoStarted => "undo-started",
        Event::Undone => "undone",
    }
}

impl Journal {
    /// A fresh journal for `plan`: every step pending, running forward.
    pub fn new(plan: &Plan) -> Self {
        Self {
            direction: Direction::Forward,
            steps: plan
                .steps
                .iter()
                .map(|s| StepRecord { id: s.id.clone(), state: StepState::Pending, prior: Vec::new() })
                .collect(),
        }
    }

    /// What to do next.
    pub fn next(&self) -> Next {
        match self.direction {
            Direction::Forward => match self.steps.iter().position(|s| s.state != StepState::Done) {
                None => Next::Finished,
                Some(i) => match self.steps[i].state {
                    StepState::Pending => Next::Start(i),
                    StepState::Started => Next::Apply(i),
                    StepState::Applied => Next::Verify(i),
                    // Forward journals never hold undo states (rollback switches direction for good).
                    StepState::Done | StepState::Undoing | StepState::Undone => Next::Finished,
                },
            },
            Direction::Rollback => {
                let touched = |s: &StepRecord| !matches!(s.state, StepState::Pending | StepState::Undone);
                match self.steps.iter().rposition(touched) {
                    None => Next::RolledBack,
                    Some(i) => Next::Undo(i),
                }
            }
        }
    }

    /// Turns the journal around: from now on `next` undoes touched steps, last first.
    pub fn begin_rollback(&mut self) {
        self.direction = Direction::Rollback;
    }

    /// Records `event` for step `id`. Recording an event the step already reflects is a no-op, so a
    /// resumed engine may record again what it recorded before crashing.
    pub fn record(&mut self, id: &str, event: Event) -> Result<(), JournalError> {
        let i = self.steps.iter().position(|s| s.id == id).ok_or_else(|| JournalError::UnknownStep(id.to_owned()))?;
        let state = self.steps[i].state;
        let refuse = || JournalError::InvalidTransition { step: id.to_owned(), state, event: event_name(&event) };
        let forward = self.direction == Direction::Forward;
        let previous_done = self.steps[..i].iter().all(|s| s.state == StepState::Done);
        let next_state = match (&event, state) {
            (Event::Started(_), StepState::Started) if forward => return Ok(()),
            (Event::Started(_), StepState::Pending) if forward && previous_done => StepState::Started,
            (Event::Applied, StepState::Applied) if forward => return Ok(()),
            (Event::Applied, StepState::Started) if forward => StepState::Applied,
            (Event::Verified, StepState::Done) if forward => return Ok(()),
            (Event::Verified, StepState::Applied) if forward => StepState::Done,
            (Event::UndoStarted, StepState::Undoing) if !forward => return Ok(()),
            (Event::UndoStarted, StepState::Started | StepState::Applied | StepState::Done) if !forward => {
                // Undo runs last-touched first.
                let later_touched =
                    self.steps[i + 1..].iter().any(|s| !matches!(s.state, StepState::Pending | StepState::Undone));
                if later_touched {
                    return Err(refuse());
                }
                StepState::Undoing
            }
            (Event::Undone, StepState::Undone) if !forward => return Ok(()),
            (Event::Undone, StepState::Undoing) if !forward => StepState::Undone,
            _ => return Err(refuse()),
        };
        if let Event::Started(prior) = event {
            self.steps[i].prior = prior;
        }
        self.steps[i].state = next_state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::plan::{Action, Plan, Step};

    fn plan(n: usize) -> Plan {
        Plan {
            from_revision: "1-9-7".into(),
            from_version: "1.9.7".into(),
            to_revision: "1-10-6".into(),
            to_version: "1.10.6".into(),
            control_plane_namespace: "istio-system".into(),
            hops: vec![],
            steps: (0..n)
                .map(|i| Step {
                    id: format!("{:02}-step", i + 1),
                    action: Action::MigrateNamespace { namespace: format!("ns{i}") },
                    changes: vec![],
                    preconditions: vec![],
                    gates: vec![],
                    undo: String::new(),
                })
                .collect(),
            assumptions: vec![],
        }
    }

    fn prior(i: usize) -> Vec<Change> {
        vec![Change {
            object: format!("Namespace/ns{i}"),
            field: "metadata.labels.istio.io/rev".into(),
            before: Some("1-9-7".into()),
            after: Some("1-10-6".into()),
        }]
    }

    /// Drives the journal as the engine would, for at most `budget` events (a crash after that).
    fn drive(j: &mut Journal, budget: usize) -> usize {
        let mut events = 0;
        while events < budget {
            let (id, event) = match j.next() {
                Next::Start(i) => (j.steps[i].id.clone(), Event::Started(prior(i))),
                Next::Apply(i) => (j.steps[i].id.clone(), Event::Applied),
                Next::Verify(i) => (j.steps[i].id.clone(), Event::Verified),
                Next::Undo(i) if j.steps[i].state == StepState::Undoing => (j.steps[i].id.clone(), Event::Undone),
                Next::Undo(i) => (j.steps[i].id.clone(), Event::UndoStarted),
                Next::Finished | Next::RolledBack => break,
            };
            j.record(&id, event).expect("the engine only records what next() asks for");
            events += 1;
        }
        events
    }

    #[test]
    fn forward_runs_every_step_in_order() {
        let mut j = Journal::new(&plan(3));
        assert_eq!(j.next(), Next::Start(0));
        j.record("01-step", Event::Started(prior(0))).expect("start");
        assert_eq!(j.next(), Next::Apply(0));
        j.record("01-step", Event::Applied).expect("apply");
        assert_eq!(j.next(), Next::Verify(0));
        j.record("01-step", Event::Verified).expect("verify");
        assert_eq!(j.next(), Next::Start(1));
        drive(&mut j, usize::MAX);
        assert_eq!(j.next(), Next::Finished);
        assert_eq!(j.steps[0].prior, prior(0), "prior values are kept for rollback");
    }

    #[test]
    fn refuses_out_of_order_and_unknown_steps() {
        let mut j = Journal::new(&plan(2));
        let err = j.record("02-step", Event::Started(vec![])).expect_err("step 2 before step 1");
        assert!(err.to_string().contains("02-step is Pending: cannot record started"), "{err}");
        assert!(j.record("01-step", Event::Applied).is_err(), "applied before started");
        assert_eq!(j.record("99-nope", Event::Applied), Err(JournalError::UnknownStep("99-nope".into())));
        assert!(j.record("01-step", Event::UndoStarted).is_err(), "undo while running forward");
    }

    #[test]
    fn repeated_events_are_idempotent() {
        let mut j = Journal::new(&plan(1));
        j.record("01-step", Event::Started(prior(0))).expect("start");
        j.record("01-step", Event::Started(vec![])).expect("again");
        assert_eq!(j.steps[0].prior, prior(0), "a repeated start does not overwrite the recorded prior values");
        j.record("01-step", Event::Applied).expect("apply");
        j.record("01-step", Event::Applied).expect("again");
        assert_eq!(j.steps[0].state, StepState::Applied);
    }

    #[test]
    fn rollback_undoes_last_touched_first() {
        let mut j = Journal::new(&plan(4));
        drive(&mut j, 7); // steps 1 and 2 done, step 3 started
        assert_eq!(
            (j.steps[1].state, j.steps[2].state, j.steps[3].state),
            (StepState::Done, StepState::Started, StepState::Pending)
        );
        j.begin_rollback();
        assert_eq!(j.next(), Next::Undo(2));
        assert!(j.record("01-step", Event::UndoStarted).is_err(), "step 1 cannot be undone before step 3");
        drive(&mut j, usize::MAX);
        assert_eq!(j.next(), Next::RolledBack);
        let states: Vec<StepState> = j.steps.iter().map(|s| s.state).collect();
        assert_eq!(states, [StepState::Undone, StepState::Undone, StepState::Undone, StepState::Pending]);
    }

    #[test]
    fn journals_serialise() {
        let mut j = Journal::new(&plan(2));
        drive(&mut j, 2);
        let back: Journal = serde_json::from_str(&serde_json::to_string(&j).expect("json")).expect("parse");
        assert_eq!(back, j);
    }

    proptest! {
        /// A crash after any number of events, then a resume from the stored journal, finishes the plan
        /// with every step done exactly once.
        #[test]
        fn resume_after_any_crash_finishes(steps in 1usize..8, crash in 0usize..40) {
            let mut j = Journal::new(&plan(steps));
            drive(&mut j, crash);
            let mut resumed: Journal = serde_json::from_str(&serde_json::to_string(&j).expect("json")).expect("parse");
            let more = drive(&mut resumed, usize::MAX);
            prop_assert_eq!(resumed.next(), Next::Finished);
            prop_assert_eq!(crash.min(3 * steps) + more, 3 * steps, "no event is repeated or skipped");
            for (i, s) in resumed.steps.iter().enumerate() {
                prop_assert_eq!(&s.prior, &prior(i));
            }
        }

        /// Rolling back from any point, with crashes inside the rollback too, leaves every touched step
        /// undone and every untouched step pending.
        #[test]
        fn rollback_from_anywhere(steps in 1usize..8, at in 0usize..40, crash in 0usize..40) {
            let mut j = Journal::new(&plan(steps));
            drive(&mut j, at);
            let touched: Vec<bool> = j.steps.iter().map(|s| s.state != StepState::Pending).collect();
            j.begin_rollback();
            drive(&mut j, crash);
            let mut resumed: Journal = serde_json::from_str(&serde_json::to_string(&j).expect("json")).expect("parse");
            drive(&mut resumed, usize::MAX);
            prop_assert_eq!(resumed.next(), Next::RolledBack);
            for (s, t) in resumed.steps.iter().zip(touched) {
                prop_assert_eq!(s.state, if t { StepState::Undone } else { StepState::Pending });
            }
        }
    }
}
