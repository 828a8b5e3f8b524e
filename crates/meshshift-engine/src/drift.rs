//! `apply --plan FILE`: compare the saved plan's assumptions with the live cluster.

use meshshift_core::drift::{Drift, check};
use meshshift_core::fields::ObjectRef;
use meshshift_core::plan::{Action, Plan};
use meshshift_core::version::{IstioVersion, Revision};

use crate::error::EngineError;
use crate::objects::Objects;

/// Every assumption of `plan` the cluster no longer meets.
pub async fn drift(objects: &Objects, plan: &Plan) -> Result<Vec<Drift>, EngineError> {
    let mut found = Vec::new();
    for a in &plan.assumptions {
        let r: ObjectRef = a.object.parse()?;
        let live = objects.get(&r).await?;
        if let Some(d) = check(a, live.as_ref()) {
            found.push(d);
        }
    }
    Ok(found)
}

/// The slug a step's id carries for its action, as the planner names steps.
fn slug(action: &Action) -> String {
    match action {
        Action::InstallControlPlane { .. } => "install-control-plane".into(),
        Action::DeployGateway { name, .. } => format!("deploy-gateway-{name}"),
        Action::PinLoadBalancer { .. } => "pin-load-balancer".into(),
        Action::SwitchLoadBalancer { .. } => "switch-load-balancer".into(),
        Action::RetireBlueGateway { deployment, .. } => {
            format!("retire-blue-{}", deployment.rsplit('/').next().unwrap_or(deployment))
        }
        Action::MoveTag { tag } => format!("move-tag-{tag}"),
        Action::MigrateNamespace { namespace } => format!("migrate-namespace-{namespace}"),
        Action::RestartWorkloads { namespace } => format!("restart-workloads-{namespace}"),
        Action::RetireRevision { revision } => format!("retire-revision-{revision}"),
    }
}

/// `apply --plan FILE`: whether a saved plan is whole and unedited as far as its own content tells (the
/// cluster is compared by [`drift`]): versions and revisions that parse, steps numbered in order whose ids
/// name their actions (a removed, reordered, duplicated or re-targeted step breaks this), the install and
/// retirement naming the plan's own revisions, and objects that parse. Pure; says what is wrong.
pub fn consistent(plan: &Plan) -> Result<(), String> {
    for (what, v) in [("from_version", &plan.from_version), ("to_version", &plan.to_version)] {
        v.parse::<IstioVersion>().map_err(|e| format!("{what}: {e}"))?;
    }
    for (what, r) in [("from_revision", &plan.from_revision), ("to_revision", &plan.to_revision)] {
        Revision::parse(r).map_err(|e| format!("{what}: {e}"))?;
    }
    if plan.steps.is_empty() {
        return Err("it has no steps".into());
    }
    for (i, step) in plan.steps.iter().enumerate() {
        let expected = format!("{:02}-{}", i + 1, slug(&step.action));
        if step.id != expected {
            return Err(format!(
                "step {} is {:?} but its position and action make it {expected:?} (steps were removed, reordered or edited)",
                i + 1,
                step.id
            ));
        }
        match &step.action {
            Action::InstallControlPlane { revision, version, .. }
                if revision != &plan.to_revision || version != &plan.to_version =>
            {
                return Err(format!(
                    "step {} installs {revision} ({version}), but the plan's target is {} ({})",
                    step.id, plan.to_revision, plan.to_version
                ));
            }
            Action::RetireRevision { revision } if revision != &plan.from_revision => {
                return Err(format!(
                    "step {} retires {revision}, but the plan's source is {}",
                    step.id, plan.from_revision
                ));
            }
            _ => {}
        }
        for c in &step.changes {
            c.object.parse::<ObjectRef>().map_err(|e| format!("step {}: {e}", step.id))?;
        }
    }
    for a in &plan.assumptions {
        a.object.parse::<ObjectRef>().map_err(|e| format!("assumption on {:?}: {e}", a.object))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use meshshift_core::plan::{Change, Step};

    use super::*;

    fn step(id: &str, action: Action) -> Step {
        Step {
            id: id.into(),
            action,
            changes: vec![Change {
                object: "Service/istio-ingress/ingress".into(),
                field: "spec.selector.version".into(),
                before: Some("1-9-7".into()),
                after: Some("1-10-6".into()),
            }],
            preconditions: vec![],
            gates: vec![],
            undo: String::new(),
        }
    }

    fn plan() -> Plan {
        Plan {
            from_revision: "1-9-7".into(),
            from_version: "1.9.7".into(),
            to_revision: "1-10-6".into(),
            to_version: "1.10.6".into(),
            control_plane_namespace: "istio-system".into(),
            hops: vec![],
            steps: vec![
                step(
                    "01-install-control-plane",
                    Action::InstallControlPlane {
                        revision: "1-10-6".into(),
                        version: "1.10.6".into(),
                        installer: Default::default(),
                        chart: None,
                    },
                ),
                step(
                    "02-switch-load-balancer",
                    Action::SwitchLoadBalancer {
                        service: "Service/istio-ingress/ingress".into(),
                        strategy: meshshift_core::plan::SwitchStrategy::Switch,
                    },
                ),
                step(
                    "03-retire-blue-gw-1-9-7",
                    Action::RetireBlueGateway {
                        deployment: "Deployment/istio-ingress/gw-1-9-7".into(),
                        soak_seconds: 1,
                    },
                ),
                step("04-migrate-namespace-apps", Action::MigrateNamespace { namespace: "apps".into() }),
                step("05-retire-revision-1-9-7", Action::RetireRevision { revision: "1-9-7".into() }),
            ],
            assumptions: vec![],
        }
    }

    #[test]
    fn a_planned_plan_is_consistent_and_edits_are_named() {
        assert_eq!(consistent(&plan()), Ok(()));
        let mut removed = plan();
        removed.steps.remove(1);
        assert!(consistent(&removed).unwrap_err().contains("step 2 is \"03-retire-blue-gw-1-9-7\""));
        let mut retargeted = plan();
        retargeted.steps[3].action = Action::MigrateNamespace { namespace: "kube-system".into() };
        assert!(consistent(&retargeted).unwrap_err().contains("04-migrate-namespace-kube-system"));
        let mut other = plan();
        other.to_version = "1.11.0".into();
        assert!(consistent(&other).unwrap_err().contains("the plan's target is 1-10-6 (1.11.0)"));
        let mut source = plan();
        source.from_revision = "canary".into();
        assert!(consistent(&source).unwrap_err().contains("retires 1-9-7"));
        let mut bad = plan();
        bad.steps[0].changes[0].object = "nonsense".into();
        assert!(consistent(&bad).is_err());
        let mut empty = plan();
        empty.steps.clear();
        assert_eq!(consistent(&empty), Err("it has no steps".into()));
        let mut version = plan();
        version.from_version = "1.x".into();
        assert!(consistent(&version).unwrap_err().starts_with("from_version:"));
    }
}
