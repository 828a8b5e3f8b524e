//! The upgrade planner: from a cluster snapshot and a target version, the ordered blue/green steps of a
//! revision upgrade, each with the exact fields it changes (before -> after), what must hold before it,
//! the gates that prove it worked, and how it is undone. Pure and deterministic: the same snapshot and
//! request always give the same plan, so a plan can be saved, reviewed and checked for drift.
//!
//! The steps follow `istio-upgrades.md` ("What drops requests"): install the target revision beside the
//! source; pin a colourless LoadBalancer selector to blue; deploy a green gateway beside blue and prove it
//! serves; switch only the user-owned LoadBalancer's selector; keep blue running through a soak window, then scale it down; move namespaces (or tags) and
//! restart their workloads; retire the source revision only when nothing uses it.

mod steps;
mod subject;

use serde::{Deserialize, Serialize};

pub use steps::build;
pub use subject::{Subject, find_subject};

use crate::path::{Hop, PathError, UpgradeMode, upgrade_path};
use crate::version::{IstioVersion, Revision};

/// How the LoadBalancer moves from blue to green.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchStrategy {
    /// Patch the selector from blue to green in one update (the seed's way).
    Switch,
    /// Select both colours, wait for the load balancer's health checks, then narrow to green: for
    /// `externalTrafficPolicy: Local` and pod-IP load balancers.
    WidenNarrow,
}

/// How the target control plane is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Installer {
    /// meshshift's rendered manifests, each object journaled and created.
    #[default]
    Manifests,
    /// `helm upgrade --install istiod-<rev> <chart> --set revision=<rev>`.
    Helm,
    /// `istioctl install --revision <rev>`.
    Istioctl,
    /// An in-cluster operator per revision and an `IstioOperator` resource (the seed's way).
    Operator,
}

/// What the user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    /// The target version.
    pub to: IstioVersion,
    /// The target revision (default: derived from the version, `1-10-6`).
    pub revision: Option<Revision>,
    /// The source revision when more than one control plane is installed.
    pub from: Option<String>,
    /// The user-owned LoadBalancer Service (`namespace/name`); discovered when there is exactly one.
    pub gateway_service: Option<String>,
    /// Namespaces to migrate, in order (default: every namespace the source revision injects, sorted).
    pub namespaces: Option<Vec<String>>,
    /// Only migrate the source's namespaces whose labels match (kubectl syntax: `team=a,tier!=b`).
    pub namespace_selector: Option<String>,
    /// Only these revision tags of the source move (`--tag`, in a canary order: one tag per run); namespaces
    /// pinned to the source revision itself then move only when `--namespaces` or `--namespace-selector`
    /// names them. `None`: every tag of the source moves.
    pub tags: Option<Vec<String>>,
    /// How the LoadBalancer switches.
    pub strategy: SwitchStrategy,
    /// Plan a single hop even when Istio's rules need more.
    pub allow_skip: bool,
    /// Seconds blue keeps running, not draining, after the switch.
    pub soak_seconds: u64,
    /// How the target control plane is installed.
    pub installer: Installer,
    /// The Helm chart (`--installer helm`): a repository reference (`istio/istiod`) or a local path.
    pub helm_chart: Option<String>,
}

impl PlanRequest {
    /// A request for `to` with the defaults: derived revision, discovered gateway Service, all
    /// namespaces, the `switch` strategy, no skip, a 30 s soak (Argo Rollouts' scaleDownDelaySeconds).
    pub fn new(to: IstioVersion) -> Self {
        Self {
            to,
            revision: None,
            from: None,
            gateway_service: None,
            namespaces: None,
            namespace_selector: None,
            tags: None,
            strategy: SwitchStrategy::Switch,
            allow_skip: false,
            soak_seconds: 30,
            installer: Installer::Manifests,
            helm_chart: None,
        }
    }
}

/// One field an action changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `Kind/namespace/name` or `Kind/name`.
    pub object: String,
    /// The field, as a path (`metadata.labels.istio.io/rev`, `spec.selector.version`), or `object` for a
    /// whole object created or deleted.
    pub field: String,
    /// The value now (`None`: absent).
    pub before: Option<String>,
    /// The value after the step (`None`: removed).
    pub after: Option<String>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Install the target control-plane revision beside the source.
    InstallControlPlane {
        /// Target revision.
        revision: String,
        /// Target version.
        version: String,
        /// How.
        #[serde(default)]
        installer: Installer,
        /// The Helm chart, for the Helm installer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chart: Option<String>,
    },
    /// Deploy the green gateway beside blue.
    DeployGateway {
        /// Namespace.
        namespace: String,
        /// Green Deployment and Service name.
        name: String,
        /// The blue Deployment green is cloned from (same namespace).
        blue: String,
    },
    /// Add blue's colour to a LoadBalancer selector that has none, before green exists: otherwise the
    /// selector would pick up green's pods as soon as they are Ready, before green is proven to serve.
    PinLoadBalancer {
        /// The Service.
        service: String,
        /// The colour key added to its selector.
        key: String,
        /// Blue's value for it.
        value: String,
    },
    /// Patch the LoadBalancer's selector.
    SwitchLoadBalancer {
        /// The Service.
        service: String,
        /// How.
        strategy: SwitchStrategy,
    },
    /// Keep blue serving for the soak window, then scale it to zero with a drain.
    RetireBlueGateway {
        /// Blue's Deployment.
        deployment: String,
        /// Soak seconds.
        soak_seconds: u64,
    },
    /// Point a revision tag (and, for `default`, the default validator) at the target.
    MoveTag {
        /// Tag name.
        tag: String,
    },
    /// Relabel a namespace for the target revision.
    MigrateNamespace {
        /// Namespace.
        namespace: String,
    },
    /// Rolling-restart the workloads of a namespace so their pods get the target's proxies.
    RestartWorkloads {
        /// Namespace.
        namespace: String,
    },
    /// Remove the source revision once nothing uses it.
    RetireRevision {
        /// Source revision.
        revision: String,
    },
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Stable id (`01-install-control-plane`), the journal's key.
    pub id: String,
    /// What it does.
    pub action: Action,
    /// The fields it changes.
    pub changes: Vec<Change>,
    /// What must hold before it runs.
    pub preconditions: Vec<String>,
    /// What must hold after it, before the next step.
    pub gates: Vec<String>,
    /// How it is undone.
    pub undo: String,
}

/// A field value the plan relies on; `apply --plan` refuses to run when the cluster no longer has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assumption {
    /// `Kind/namespace/name`.
    pub object: String,
    /// The field.
    pub field: String,
    /// Its value when planned (`None`: absent).
    pub value: Option<String>,
}

/// An upgrade plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Source revision.
    pub from_revision: String,
    /// Source version.
    pub from_version: String,
    /// Target revision.
    pub to_revision: String,
    /// Target version.
    pub to_version: String,
    /// The control plane's namespace.
    pub control_plane_namespace: String,
    /// The version hops Istio's rules give (one, unless skipping was allowed).
    pub hops: Vec<Hop>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// What the plan assumes of the cluster.
    pub assumptions: Vec<Assumption>,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No istiod is installed.
    #[error("no Istio control plane is installed: there is nothing to upgrade")]
    NoControlPlane,
    /// Several revisions are installed and none was named.
    #[error("several control-plane revisions are installed ({0}); name the one to upgrade from with --from")]
    AmbiguousSource(String),
    /// `--from` names no installed revision.
    #[error("--from {0}: no such control-plane revision is installed")]
    UnknownSource(String),
    /// The source's version is unknown.
    #[error("the version of revision {0} is unknown (no versioned image tag or injector ConfigMap); cannot plan")]
    UnknownVersion(String),
    /// The version rules refuse the path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// More than one hop is needed and skipping was not allowed. The message lists the first few hops only.
    #[error("{from} -> {to} needs {} hops ({}); upgrade hop by hop or pass --allow-skip", hops.len(), hop_list(hops))]
    NeedsHops {
        /// Source version.
        from: String,
        /// Target version.
        to: String,
        /// The hops (at most [`crate::path::MAX_MINORS`]: farther targets are refused as
        /// [`PathError::TooFar`]).
        hops: Vec<Hop>,
    },
    /// Nothing to do.
    #[error("revision {0} already runs {1}: nothing to upgrade")]
    AlreadyThere(String, String),
    /// The target revision name is taken by another version.
    #[error("revision {revision} is already installed with version {version}; choose another --revision")]
    RevisionTaken {
        /// The revision.
        revision: String,
        /// Its version.
        version: String,
    },
    /// The target revision is named like a tag.
    #[error("--revision {0} is the name of a revision tag; revisions and tags must differ")]
    RevisionIsTag(String),
    /// The gateway Service was not found or is ambiguous.
    #[error("{0}")]
    GatewayService(String),
    /// The namespace selector does not parse.
    #[error("--namespace-selector: {0}")]
    NamespaceSelector(String),
    /// A namespace to migrate does not exist.
    #[error("namespace {0} does not exist")]
    UnknownNamespace(String),
    /// `--tag` names no tag of the source revision.
    #[error("--tag {tag}: {from} has no such revision tag (its tags: {})", if tags.is_empty() { "none".to_owned() } else { tags.join(", ") })]
    UnknownTag {
        /// The tag asked for.
        tag: String,
        /// The source revision.
        from: String,
        /// The source's tags.
        tags: Vec<String>,
    },
    /// `--namespaces` names a namespace more than once. Refused rather than de-duplicated: a repeat is a
    /// typo or a mis-built list, and planning it twice would relabel and restart it twice, the second time
    /// from stale before-values.
    #[error("--namespaces lists {0} more than once; list each namespace once")]
    DuplicateNamespace(String),
    /// The LoadBalancer does not (only) select gateways of the source revision.
    ///
    /// The blue gateways of an upgrade are the ones the LoadBalancer selects now, and meshshift deploys green
    /// copies of the source revision's gateways only. When the LoadBalancer serves another revision's
    /// gateways, switching its selector to the target would point it at a colour no gateway has (or quietly
    /// take the other revision's gateways out of service), so the plan is refused rather than re-targeted:
    /// upgrading the revision the LoadBalancer actually serves is a different upgrade, which the user asks
    /// for with `--from`.
    #[error("{}", load_balancer_message(service, from, to, serves))]
    LoadBalancerNotOnSource {
        /// The LoadBalancer (`namespace/name`).
        service: String,
        /// The source revision.
        from: String,
        /// The target revision.
        to: String,
        /// The revisions of the gateways it selects now, sorted.
        serves: Vec<String>,
    },
    /// After the switch, the LoadBalancer's selector would not select a green gateway: green is blue with
    /// its colour labels moved from the source revision to the target, and the switched selector asks for
    /// labels green does not carry (e.g. blue is selected by `version: v1` rather than by its revision
    /// name).
    #[error("{0}")]
    SwitchMissesGreen(Box<MissedGreen>),
}

/// A switch that would select no green gateway (boxed in [`PlanError::SwitchMissesGreen`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "switching Service {service} to {key}={to} would select no green gateway: green {green} (a copy of {blue} with its revision labels moved from {from} to {to}) would not match it: {}. Have the LoadBalancer select {blue} by {key}={from} and labels green keeps, or switch it by hand",
    mismatched.join("; "),
    key = field.trim_start_matches("spec.selector.")
)]
pub struct MissedGreen {
    /// The LoadBalancer (`namespace/name`).
    pub service: String,
    /// The selector field the switch sets (`spec.selector.version`).
    pub field: String,
    /// Source revision.
    pub from: String,
    /// Target revision.
    pub to: String,
    /// Blue's Deployment.
    pub blue: String,
    /// Green's Deployment.
    pub green: String,
    /// The selector entries green would not match, as `key=value but green has key=other` (or `has no key`).
    pub mismatched: Vec<String>,
}

/// The first few hops, then how many there are in all.
fn hop_list(hops: &[Hop]) -> String {
    const SHOWN: usize = 3;
    let listed = |hops: &[Hop]| hops.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if hops.len() <= SHOWN + 1 {
        listed(hops)
    } else {
        format!("{}, ... {} in all", listed(&hops[..SHOWN]), hops.len())
    }
}

/// [`PlanError::LoadBalancerNotOnSource`]'s message: what the LoadBalancer serves and what to do instead.
fn load_balancer_message(service: &str, from: &str, to: &str, serves: &[String]) -> String {
    let others: Vec<&str> = serves.iter().map(String::as_str).filter(|r| *r != from && *r != to).collect();
    let revisions = |list: &[&str]| {
        let noun = if list.len() == 1 { "revision" } else { "revisions" };
        format!("{noun} {}", list.join(", "))
    };
    if serves.iter().any(|r| r == from) {
        format!(
            "Service {service} selects gateways of {} besides those of {from}, the revision being upgraded; switching it to {to} would take them out of service. Narrow its selector to {from}'s gateways first, or pass the LoadBalancer in front of {from}'s gateways with --gateway-service",
            revisions(&others)
        )
    } else if others.is_empty() {
        format!(
            "Service {service} already selects gateways of {to}, the target revision, and none of {from}: there is nothing to switch; plan without --gateway-service to move the rest"
        )
    } else {
        format!(
            "Service {service} selects gateways of {}, not of {from}, the revision being upgraded: greens are copies of the {from} gateways it selects, and it selects none, so switching it to {to} would leave it selecting no gateway. Pass --from {} to upgrade the revision it serves, or pass the LoadBalancer in front of {from}'s gateways with --gateway-service",
            revisions(&others),
            others[0]
        )
    }
}

/// Plans the upgrade.
pub fn plan(snapshot: &crate::model::ClusterSnapshot, request: &PlanRequest) -> Result<Plan, PlanError> {
    let subject = find_subject(snapshot, request)?;
    let hops = upgrade_path(&subject.from_version, &request.to, UpgradeMode::Revision, request.allow_skip)?;
    // Same version is only an upgrade when it moves a non-revisioned install onto a revision (Istio's
    // "Migrating to revisions").
    let migrating = subject.from_revision == "default" && !subject.to_revision.is_default();
    if hops.is_empty() && !migrating {
        return Err(PlanError::AlreadyThere(subject.from_revision.clone(), subject.from_version.to_string()));
    }
    if hops.len() > 1 {
        return Err(PlanError::NeedsHops { from: subject.from_version.to_string(), to: request.to.to_string(), hops });
    }
    let (steps, assumptions) = build(snapshot, &subject, request);
    Ok(Plan {
        from_revision: subject.from_revision.clone(),
        from_version: subject.from_version.to_string(),
        to_revision: subject.to_revision.to_string(),
        to_version: request.to.to_string(),
        control_plane_namespace: subject.control_plane_namespace.clone(),
        hops,
        steps,
        assumptions,
    })
}
