//! Restart a namespace's workloads so their pods get the target's proxies: Deployments, StatefulSets
//! and DaemonSets, a bounded number at a time, each waited for by the rollout-status rule, with
//! PodDisruptionBudgets honoured (a workload whose budget allows no disruption waits). The restart is
//! kubectl's: a `kubectl.kubernetes.io/restartedAt` template annotation, journaled with its prior value.
//!
//! Undo first puts the namespace's injection back (the earlier relabel or tag move, from the journal),
//! then restores the annotation, so the workloads roll back to their previous ReplicaSets and the new
//! pods are injected by the source revision again.

use std::time::Duration;

use futures::stream::{self, TryStreamExt};
use meshshift_core::fields::ObjectRef;
use meshshift_core::journal::{Journal, StepState};
use meshshift_core::plan::{Action, Change, Step};

use super::{object_of, restore, write};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::rollout::{pods_on, wait_workload};

const RESTARTED_AT: &str = "spec.template.metadata.annotations.kubectl.kubernetes.io/restartedAt";

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub async fn prior(ctx: &Ctx, step: &Step) -> Result<Vec<Change>, EngineError> {
    let at = now();
    let mut changes = Vec::new();
    for c in step.changes.iter().filter(|c| c.field == RESTARTED_AT) {
        let r = object_of(c)?;
        // A workload deleted since planning has nothing to restart.
        if let Some(obj) = ctx.objects.get(&r).await? {
            let field: meshshift_core::fields::Field = RESTARTED_AT.parse()?;
            changes.push(Change {
                object: r.to_string(),
                field: RESTARTED_AT.into(),
                before: field.read(&obj),
                after: Some(at.clone()),
            });
        }
    }
    Ok(changes)
}

/// Waits until no PodDisruptionBudget of `namespace` that selects `workload`'s pods is at zero allowed
/// disruptions (a rollout's surge pods must not push a protected app below its budget).
async fn budget_allows(ctx: &Ctx, workload: &ObjectRef) -> Result<(), EngineError> {
    let ns = workload.namespace.clone().unwrap_or_default();
    let obj = ctx.objects.get(workload).await?.ok_or_else(|| EngineError::Missing(workload.to_string()))?;
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_value(obj["spec"]["template"]["metadata"]["labels"].clone()).unwrap_or_default();
    let outcome = crate::gates::until(ctx.options.rollout_timeout, Duration::from_secs(1), || {
        let (labels, ns) = (labels.clone(), ns.clone());
        async move {
            // policy/v1beta1: what a 1.20 apiserver serves. Budgets not readable: nothing meshshift can honour.
            let Ok(pdbs) = ctx.objects.list("PodDisruptionBudget", Some(&ns), "").await else {
                return Ok::<_, EngineError>(Ok(()));
            };
            for pdb in pdbs {
                let selects = pdb["spec"]["selector"]["matchLabels"].as_object().is_some_and(|m| {
                    !m.is_empty() && m.iter().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
                });
                let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
                if selects && allowed < 1 {
                    return Ok(Err(format!(
                        "PodDisruptionBudget {} allows no disruption now",
                        pdb["metadata"]["name"].as_str().unwrap_or_default()
                    )));
                }
            }
            Ok(Ok(()))
        }
    })
    .await?;
    outcome.map_err(|detail| EngineError::Timeout(format!("{workload}: {detail}")))
}

/// Restarts (or restores) each change's workload, `parallelism` at a time, waiting for each rollout.
async fn roll(ctx: &Ctx, prior: &[Change], forward: bool) -> Result<(), EngineError> {
    let parallelism = ctx.options.parallelism.max(1);
    stream::iter(prior.iter().map(Ok::<_, EngineError>))
        .try_for_each_concurrent(parallelism, |c| async move {
            let r = object_of(c)?;
            if ctx.objects.get(&r).await?.is_none() {
                return Ok(());
            }
            budget_allows(ctx, &r).await?;
            ctx.detail(format!("{} {r}", if forward { "restarting" } else { "restoring" }));
            let one = std::slice::from_ref(c);
            if forward {
                write(ctx, one).await?
            } else {
                restore(ctx, one).await?
            }
            wait_workload(ctx, &r).await
        })
        .await
}

pub async fn apply(ctx: &Ctx, namespace: &str, prior: &[Change]) -> Result<(), EngineError> {
    ctx.detail(format!("restarting {} workload(s) in {namespace}", prior.len()));
    roll(ctx, prior, true).await
}

/// Which revision injects `namespace` after this plan: the target, or the target's tag.
pub async fn verify(ctx: &Ctx, namespace: &str, revision: &str) -> Result<(), EngineError> {
    let outcome = crate::gates::until(Duration::from_secs(60), Duration::from_millis(500), || async {
        Ok::<_, EngineError>(pods_on(ctx, namespace, revision, &ctx.plan.to_version).await)
    })
    .await?;
    outcome.map_err(|detail| EngineError::Precondition { step: String::new(), detail })
}

/// The journaled steps that moved `namespace`'s injection: its relabel, or the tags it uses.
fn injection_steps<'a>(
    ctx: &'a Ctx,
    namespace: &str,
    journal: &'a Journal,
) -> Vec<&'a meshshift_core::journal::StepRecord> {
    ctx.plan
        .steps
        .iter()
        .zip(&journal.steps)
        .filter(|(s, _)| match &s.action {
            Action::MigrateNamespace { namespace: n } => n == namespace,
            Action::MoveTag { .. } => true,
            _ => false,
        })
        .filter(|(_, rec)| !matches!(rec.state, StepState::Pending | StepState::Undone))
        .map(|(_, rec)| rec)
        .collect()
}

pub async fn undo(ctx: &Ctx, namespace: &str, prior: &[Change], journal: &Journal) -> Result<(), EngineError> {
    for rec in injection_steps(ctx, namespace, journal) {
        ctx.detail(format!("restoring injection of {namespace} ({})", rec.id));
        restore(ctx, &rec.prior).await?;
    }
    roll(ctx, prior, false).await?;
    let outcome = crate::gates::until(Duration::from_secs(60), Duration::from_millis(500), || async {
        Ok::<_, EngineError>(pods_on(ctx, namespace, &ctx.plan.from_revision, &ctx.plan.from_version).await)
    })
    .await?;
    outcome.map_err(|detail| EngineError::Gate { step: format!("undo restart of {namespace}"), detail })
}
