//! One module per plan action. Each step has four parts, called by the run loop in `run.rs`:
//! `prior` reads the values it is about to change (journaled before any write), `apply` writes them
//! idempotently (a resumed run may apply again), `verify` checks the step's gates, `undo` restores the
//! prior values. Field writes and object creations/deletions share the helpers below, so every step's
//! journal entry has the same shape: `Change { object, field, before, after }`.

mod gateway;
mod install;
mod namespace;
mod pin;
mod restart;
mod retire;
mod retire_blue;
mod switch;
mod tag;

use std::collections::BTreeMap;

use meshshift_core::fields::{Field, ObjectRef};
use meshshift_core::journal::Journal;
use meshshift_core::plan::{Action, Change, Step};
use serde_json::Value;

use crate::context::Ctx;
use crate::error::EngineError;
use crate::objects::FieldChange;

/// Reads the prior values of everything `step` changes (and checks its preconditions).
pub async fn prior(ctx: &Ctx, step: &Step) -> Result<Vec<Change>, EngineError> {
    match &step.action {
        Action::InstallControlPlane { revision, version, installer, chart } => {
            install::prior(ctx, revision, version, *installer, chart.as_deref()).await
        }
        Action::DeployGateway { namespace, name, blue } => gateway::prior(ctx, namespace, name, blue).await,
        Action::PinLoadBalancer { service, key, value } => pin::prior(ctx, service, key, value).await,
        Action::SwitchLoadBalancer { service, strategy } => switch::prior(ctx, step, service, *strategy).await,
        Action::RetireBlueGateway { deployment, .. } => retire_blue::prior(ctx, deployment).await,
        Action::MoveTag { tag } => tag::prior(ctx, step, tag).await,
        Action::MigrateNamespace { namespace } => namespace::prior(ctx, step, namespace).await,
        Action::RestartWorkloads { .. } => restart::prior(ctx, step).await,
        Action::RetireRevision { revision } => retire::prior(ctx, step, revision).await,
    }
}

/// Writes the step (idempotent).
pub async fn apply(ctx: &Ctx, step: &Step, prior: &[Change]) -> Result<(), EngineError> {
    match &step.action {
        Action::InstallControlPlane { revision, version, installer, chart } => {
            install::apply(ctx, revision, version, *installer, chart.as_deref(), prior).await
        }
        Action::DeployGateway { namespace, name, .. } => gateway::apply(ctx, namespace, name, prior).await,
        Action::PinLoadBalancer { .. } => pin::apply(ctx, prior).await,
        Action::SwitchLoadBalancer { strategy, .. } => switch::apply(ctx, *strategy, prior).await,
        Action::RetireBlueGateway { soak_seconds, .. } => retire_blue::apply(ctx, *soak_seconds, prior).await,
        Action::MoveTag { .. } => write(ctx, prior).await,
        Action::MigrateNamespace { .. } => write(ctx, prior).await,
        Action::RestartWorkloads { namespace } => restart::apply(ctx, namespace, prior).await,
        Action::RetireRevision { .. } => retire::apply(ctx, prior).await,
    }
}

/// Checks the step's gates.
pub async fn verify(ctx: &Ctx, step: &Step, prior: &[Change]) -> Result<(), EngineError> {
    let gate = |detail: String| EngineError::Gate { step: step.id.clone(), detail };
    match &step.action {
        Action::InstallControlPlane { revision, version, .. } => install::verify(ctx, revision, version).await,
        Action::DeployGateway { namespace, name, blue } => gateway::verify(ctx, namespace, name, blue).await,
        Action::PinLoadBalancer { .. } => pin::verify(ctx, prior).await,
        Action::SwitchLoadBalancer { .. } => switch::verify(ctx, prior).await,
        Action::RetireBlueGateway { deployment, .. } => retire_blue::verify(ctx, deployment).await,
        Action::MoveTag { tag } => tag::verify(ctx, tag).await,
        Action::MigrateNamespace { namespace } => namespace::verify(ctx, namespace).await,
        Action::RestartWorkloads { namespace } => restart::verify(ctx, namespace, &ctx.plan.to_revision).await,
        Action::RetireRevision { revision } => retire::verify(ctx, revision).await,
    }
    .map_err(|e| match e {
        EngineError::Precondition { detail, .. } => gate(detail),
        other => other,
    })
}

/// Restores the step's prior values.
pub async fn undo(ctx: &Ctx, step: &Step, prior: &[Change], journal: &Journal) -> Result<(), EngineError> {
    match &step.action {
        Action::InstallControlPlane { revision, installer, .. } => {
            install::undo(ctx, revision, *installer, prior).await
        }
        Action::RestartWorkloads { namespace } => restart::undo(ctx, namespace, prior, journal).await,
        Action::RetireBlueGateway { .. } => retire_blue::undo(ctx, prior).await,
        Action::PinLoadBalancer { .. } => pin::undo(ctx, prior).await,
        Action::SwitchLoadBalancer { .. } => switch::undo(ctx, prior).await,
        Action::RetireRevision { .. } => retire::undo(ctx, prior).await,
        _ => restore(ctx, prior).await,
    }
}

/// Parses a change's object.
fn object_of(change: &Change) -> Result<ObjectRef, EngineError> {
    Ok(change.object.parse()?)
}

fn json_of(value: &str) -> Result<Value, EngineError> {
    serde_json::from_str(value).map_err(|e| EngineError::Invalid(format!("journaled object: {e}")))
}

/// Changes grouped per object, in first-appearance order: whole-object changes alone, field changes of
/// one object together (one write).
fn grouped(changes: &[Change]) -> Result<Vec<(ObjectRef, Vec<&Change>)>, EngineError> {
    let mut order: Vec<ObjectRef> = Vec::new();
    let mut by: BTreeMap<ObjectRef, Vec<&Change>> = BTreeMap::new();
    for c in changes {
        let r = object_of(c)?;
        if !by.contains_key(&r) {
            order.push(r.clone());
        }
        by.entry(r).or_default().push(c);
    }
    Ok(order
        .into_iter()
        .map(|r| {
            let cs = by.remove(&r).unwrap_or_default();
            (r, cs)
        })
        .collect())
}

async fn set(ctx: &Ctx, r: &ObjectRef, changes: &[&Change], forward: bool) -> Result<(), EngineError> {
    let mut fields = Vec::new();
    for c in changes {
        let field: Field = c.field.parse()?;
        if field == Field::Object {
            let target = if forward { &c.after } else { &c.before };
            match target {
                Some(obj) => ctx.objects.put(r, &json_of(obj)?).await?,
                None => ctx.objects.delete(r).await?,
            }
        } else {
            let (expected, target) = if forward { (&c.before, &c.after) } else { (&c.after, &c.before) };
            fields.push(FieldChange { field, expected: expected.clone(), target: target.clone() });
        }
    }
    if fields.is_empty() { Ok(()) } else { ctx.objects.set_fields(r, &fields).await }
}

/// Writes every change's `after`, in order.
pub async fn write(ctx: &Ctx, changes: &[Change]) -> Result<(), EngineError> {
    for (r, cs) in grouped(changes)? {
        set(ctx, &r, &cs, true).await?;
    }
    Ok(())
}

/// Restores every change's `before`, last first.
pub async fn restore(ctx: &Ctx, changes: &[Change]) -> Result<(), EngineError> {
    for (r, cs) in grouped(changes)?.into_iter().rev() {
        set(ctx, &r, &cs, false).await?;
    }
    Ok(())
}

/// A whole-object change: `before` is the object now (or `None`), `after` the object to write (`None`:
/// delete it).
async fn object_change(ctx: &Ctx, r: &ObjectRef, after: Option<&Value>) -> Result<Change, EngineError> {
    let before = ctx.objects.get(r).await?.map(|o| meshshift_core::fields::recreatable(&o).to_string());
    Ok(Change { object: r.to_string(), field: "object".into(), before, after: after.map(Value::to_string) })
}
