//! Relabel a namespace for the target revision: one write adds `istio.io/rev=<target>` and removes
//! `istio-injection`, so no pod is admitted between the two (with both labels, or neither, it would get
//! the wrong proxy or none). Its workloads keep their old proxies until the restart step.

use std::collections::BTreeMap;

use meshshift_core::fields::{Field, ObjectRef};
use meshshift_core::plan::{Change, Step};

use crate::context::Ctx;
use crate::error::EngineError;
use crate::gates::inject::expect_injected;

const INJECTION: &str = "istio-injection";
const REV: &str = "istio.io/rev";

pub async fn prior(ctx: &Ctx, step: &Step, namespace: &str) -> Result<Vec<Change>, EngineError> {
    let r = ObjectRef::cluster("Namespace", namespace);
    let ns = ctx.objects.get(&r).await?.ok_or_else(|| EngineError::Precondition {
        step: step.id.clone(),
        detail: format!("namespace {namespace} does not exist"),
    })?;
    let label = |k: &str| Field::Label(k.to_owned()).read(&ns);
    let mut changes = Vec::new();
    if let Some(v) = label(INJECTION) {
        changes.push(Change {
            object: r.to_string(),
            field: format!("metadata.labels.{INJECTION}"),
            before: Some(v),
            after: None,
        });
    }
    changes.push(Change {
        object: r.to_string(),
        field: format!("metadata.labels.{REV}"),
        before: label(REV),
        after: Some(ctx.plan.to_revision.clone()),
    });
    Ok(changes)
}

pub async fn verify(ctx: &Ctx, namespace: &str) -> Result<(), EngineError> {
    expect_injected(ctx, namespace, BTreeMap::new(), &ctx.plan.to_revision, &ctx.plan.to_version).await
}
