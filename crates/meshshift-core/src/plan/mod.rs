//! The upgrade planner: from a cluster snapshot and a target version, the ordered blue/green steps of a
//! revision upgrade, each with the exact fields it changes (before -> after), what must hold before it,
//! the gates that prove it worked, and how it is undone. Pure and deterministic: the same snapshot and
//! request always give the same plan, so a plan can be saved, reviewed and checked for drift.
//!
//! The steps follow `istio-upgrades.md` ("What drops requests"): install the target revision beside the
//! source; deploy a green gateway beside blue and prove it serves; switch only the user-owned LoadBalancer's
//! selector; keep blue running through a soak window, then scale it down; move namespaces (or tags) and
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
    /// More than one hop is needed and skipping was not allowed.
    #[error("{from} -> {to} needs {} hops ({}); upgrade hop by hop or pass --allow-skip", hops.len(), hops.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    NeedsHops {
        /// Source version.
        from: String,
        /// Target version.
        to: String,
        /// The hops.
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
