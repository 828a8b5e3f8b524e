//! Install the target control-plane revision beside the source, by one of four installers:
//! meshshift's rendered manifests (each object journaled and created), an operator per revision with an
//! IstioOperator resource (the seed's way), `helm upgrade --install`, or `istioctl install`. Whatever the
//! installer, the gates are the same: istiod ready, its webhook injecting a dry-run pod, one root CA.

use std::time::Duration;

use meshshift_core::fields::ObjectRef;
use meshshift_core::plan::{Change, Installer};
use meshshift_core::render::{ControlPlaneSpec, control_plane, istio_operator_name, istiod_name, operator};
use meshshift_core::version::{IstioVersion, Revision};
use serde_json::json;

use super::{object_change, restore, write};
use crate::context::Ctx;
use crate::error::EngineError;
use crate::external;
use crate::gates::inject::probe_label;
use crate::gates::rollout::wait_workload;

fn parse(revision: &str, version: &str) -> Result<(Revision, IstioVersion), EngineError> {
    let r = Revision::parse(revision).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let v = version.parse().map_err(|e: meshshift_core::version::VersionError| EngineError::Invalid(e.to_string()))?;
    Ok((r, v))
}

fn istiod(ctx: &Ctx, revision: &Revision) -> ObjectRef {
    ObjectRef::namespaced("Deployment", &ctx.plan.control_plane_namespace, &istiod_name(revision))
}

/// The Helm release name (`istiod-<rev>`, as Istio's docs name it).
fn release(revision: &Revision) -> String {
    istiod_name(revision)
}

fn helm_install_args(ctx: &Ctx, r: &Revision, v: &IstioVersion, chart: &str) -> Vec<String> {
    let ns = &ctx.plan.control_plane_namespace;
    [
        "upgrade",
        "--install",
        &release(r),
        chart,
        "--namespace",
        ns,
        "--set",
        &format!("revision={r}"),
        "--set",
        &format!("global.tag={v}"),
        "--set",
        &format!("global.hub={}", meshshift_core::render::DEFAULT_HUB),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn istioctl_install_args(r: &Revision, v: &IstioVersion) -> Vec<String> {
    [
        "install",
        "-y",
        "--revision",
        r.as_str(),
        "--set",
        &format!("tag={v}"),
        "--set",
        &format!("hub={}", meshshift_core::render::DEFAULT_HUB),
        "--set",
        "components.ingressGateways[0].name=istio-ingressgateway",
        "--set",
        "components.ingressGateways[0].enabled=false",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

pub async fn prior(
    ctx: &Ctx,
    revision: &str,
    version: &str,
    installer: Installer,
    chart: Option<&str>,
) -> Result<Vec<Change>, EngineError> {
    let (r, v) = parse(revision, version)?;
    let ns = ctx.plan.control_plane_namespace.clone();
    let docs = match installer {
        Installer::Manifests => control_plane(&ControlPlaneSpec {
            version: v.clone(),
            revision: r.clone(),
            namespace: ns.clone(),
            hub: meshshift_core::render::DEFAULT_HUB.to_owned(),
        }),
        Installer::Operator => operator(&v, &r, &ns),
        Installer::Helm | Installer::Istioctl => {
            // The installer owns the objects; the journal records the release it creates, and refuses to
            // adopt one that already exists (undo would uninstall someone else's release).
            if ctx.objects.get(&istiod(ctx, &r)).await?.is_some() {
                return Err(EngineError::Precondition {
                    step: String::new(),
                    detail: format!(
                        "{} already exists; meshshift will not take over an install it did not make",
                        istiod(ctx, &r)
                    ),
                });
            }
            let (kind, what) = match installer {
                Installer::Helm => (
                    "HelmRelease",
                    json!({"release": release(&r), "chart": chart.unwrap_or("istio/istiod"), "args": helm_install_args(ctx, &r, &v, chart.unwrap_or("istio/istiod"))}),
                ),
                _ => ("IstioctlInstall", json!({"revision": r.as_str(), "args": istioctl_install_args(&r, &v)})),
            };
            return Ok(vec![Change {
                object: format!("{kind}/{ns}/{}", release(&r)),
                field: "object".into(),
                before: None,
                after: Some(what.to_string()),
            }]);
        }
    };
    let mut changes = Vec::new();
    for doc in docs {
        let r = ObjectRef::of(&doc).ok_or_else(|| EngineError::Invalid("rendered object without a name".into()))?;
        changes.push(object_change(ctx, &r, Some(&doc)).await?);
    }
    Ok(changes)
}

pub async fn apply(
    ctx: &Ctx,
    revision: &str,
    version: &str,
    installer: Installer,
    chart: Option<&str>,
    prior: &[Change],
) -> Result<(), EngineError> {
    let (r, v) = parse(revision, version)?;
    match installer {
        Installer::Manifests | Installer::Operator => write(ctx, prior).await?,
        // Both commands are idempotent: a resumed run may run them again.
        Installer::Helm => {
            external::run(ctx, "helm", &helm_install_args(ctx, &r, &v, chart.unwrap_or("istio/istiod"))).await?;
        }
        Installer::Istioctl => {
            external::run(ctx, "istioctl", &istioctl_install_args(&r, &v)).await?;
        }
    }
    let istiod = istiod(ctx, &r);
    ctx.detail(format!("waiting for {istiod}"));
    wait_workload(ctx, &istiod).await
}

/// The first caBundle of the injector webhooks of `revision` (not its tags).
async fn ca_bundle(ctx: &Ctx, revision: &str) -> Result<Option<String>, EngineError> {
    let hooks = ctx
        .objects
        .list("MutatingWebhookConfiguration", None, &format!("istio.io/rev={revision},!istio.io/tag"))
        .await?;
    Ok(hooks
        .iter()
        .flat_map(|h| h["webhooks"].as_array().cloned().unwrap_or_default())
        .find_map(|w| w["clientConfig"]["caBundle"].as_str().filter(|s| !s.is_empty()).map(str::to_owned)))
}

pub async fn verify(ctx: &Ctx, revision: &str, version: &str) -> Result<(), EngineError> {
    let (r, _) = parse(revision, version)?;
    wait_workload(ctx, &istiod(ctx, &r)).await?;
    ctx.detail(format!("dry-run pod in a namespace labelled istio.io/rev={revision}"));
    probe_label(ctx, revision, revision, version).await?;
    let (new, old) = (ca_bundle(ctx, revision).await?, ca_bundle(ctx, &ctx.plan.from_revision).await?);
    match (new, old) {
        (Some(a), Some(b)) if a == b => Ok(()),
        (None, _) => Err(EngineError::Precondition {
            step: String::new(),
            detail: format!("the injector webhook of {revision} has no caBundle"),
        }),
        (Some(_), None) => Ok(()),
        (Some(_), Some(_)) => Err(EngineError::Precondition {
            step: String::new(),
            detail: format!(
                "revisions {} and {revision} have different root CAs: their workloads would not trust each other; plug in a shared CA (Secret cacerts)",
                ctx.plan.from_revision
            ),
        }),
    }
}

/// Waits until istiod of `revision` is gone (an operator or installer removes it asynchronously).
async fn wait_gone(ctx: &Ctx, r: &Revision) -> Result<(), EngineError> {
    let target = istiod(ctx, r);
    let outcome = crate::gates::until(Duration::from_secs(120), Duration::from_millis(250), || async {
        Ok::<_, EngineError>(match ctx.objects.get(&target).await? {
            None => Ok(()),
            Some(_) => Err(format!("{target} still exists")),
        })
    })
    .await?;
    outcome.map_err(EngineError::Timeout)
}

pub async fn undo(ctx: &Ctx, revision: &str, installer: Installer, prior: &[Change]) -> Result<(), EngineError> {
    let r = Revision::parse(revision).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let ns = ctx.plan.control_plane_namespace.clone();
    match installer {
        Installer::Manifests => restore(ctx, prior).await,
        Installer::Operator => {
            // The IstioOperator first, while its operator still runs to remove what it installed.
            let iop = ObjectRef::namespaced("IstioOperator", &ns, &istio_operator_name(&r));
            ctx.objects.delete(&iop).await?;
            wait_gone(ctx, &r).await?;
            restore(ctx, prior).await
        }
        Installer::Helm => {
            let exists =
                external::succeeds(ctx, "helm", &["status".into(), release(&r), "--namespace".into(), ns.clone()])
                    .await?;
            if exists {
                external::run(ctx, "helm", &["uninstall".into(), release(&r), "--namespace".into(), ns]).await?;
            }
            wait_gone(ctx, &r).await
        }
        Installer::Istioctl => {
            if ctx.objects.get(&istiod(ctx, &r)).await?.is_some() {
                external::run(ctx, "istioctl", &["uninstall".into(), "-y".into(), "--revision".into(), r.to_string()])
                    .await?;
            }
            wait_gone(ctx, &r).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istioctl_installs_the_revision_without_a_gateway() {
        let args = istioctl_install_args(&Revision::parse("1-10-6").expect("rev"), &"1.10.6".parse().expect("v"));
        assert_eq!(&args[..4], ["install", "-y", "--revision", "1-10-6"]);
        assert!(args.contains(&"tag=1.10.6".to_owned()));
        assert!(args.contains(&"components.ingressGateways[0].enabled=false".to_owned()), "gateways are blue/green's");
    }
}
