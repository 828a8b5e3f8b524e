//! `apply --plan FILE`: compare the saved plan's assumptions with the live cluster.

use meshshift_core::drift::{Drift, check};
use meshshift_core::fields::ObjectRef;
use meshshift_core::plan::Plan;

use crate::error::EngineError;
use crate::objects::Objects;

/// Every assumption of `plan` the cluster no longer meets.
pub async fn drift(objects: &Objects, plan: &Plan) -> Result<Vec<Drift>, EngineError> {
    let mut found = Vec::new();
    for a in &plan.assumptions {
        let r: ObjectRef =
            a.object.parse().map_err(|e: meshshift_core::fields::FieldError| EngineError::Invalid(e.to_string()))?;
        let live = objects.get(&r).await?;
        if let Some(d) = check(a, live.as_ref()) {
            found.push(d);
        }
    }
    Ok(found)
}
