//! Findings: what is wrong or risky in a mesh, each with a stable code, a severity and a one-line fix.
//!
//! Codes are part of meshshift's interface (scripts and gates match on them), so they are an enum with a
//! fixed serialised spelling rather than free text.

use serde::{Deserialize, Serialize};

/// How much a finding matters for an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing breaks.
    Info,
    /// Something will go wrong later or an upgrade step must handle it.
    Warning,
    /// Broken now, or an upgrade would break it.
    Error,
}

/// The stable finding codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingCode {
    /// A proxy's version is outside what its control plane supports.
    ProxySkewUnsupported,
    /// A proxy belongs to a revision that has no istiod.
    ProxyRevisionMissing,
    /// A namespace is labelled for a revision or tag that does not exist.
    NamespaceRevisionMissing,
    /// A namespace is labelled for injection but no injector webhook selects it.
    NamespaceNoInjector,
    /// More than one injector webhook configuration selects a namespace.
    NamespaceMultipleInjectors,
    /// A namespace has both `istio-injection` and `istio.io/rev`; the former wins.
    NamespaceConflictingLabels,
    /// A pod's proxy is from another revision than the one its namespace selects now.
    PodRevisionMismatch,
    /// A pod's proxy is older or newer than its revision's control plane.
    PodVersionMismatch,
    /// A pod in an injected namespace runs without a sidecar.
    PodWithoutSidecar,
    /// A revision tag points at a revision that has no istiod.
    TagRevisionMissing,
    /// The `default` tag points at a revision that has no istiod.
    DefaultTagRevisionMissing,
    /// The default validating webhook calls a revision that has no istiod.
    DefaultValidatorRevisionMissing,
    /// A gateway not deployed by injection reads a mesh ConfigMap from its own namespace.
    GatewayLocalMeshConfig,
    /// A Service (LoadBalancer above all) sends traffic to gateways of more than one revision.
    ServiceSelectsMultipleRevisions,
    /// An istiod Deployment has no ready replica.
    ControlPlaneNotReady,
    /// An istiod's version could not be determined.
    ControlPlaneVersionUnknown,
    /// A kind could not be listed; the report is partial.
    ReadForbidden,
}

/// One finding about one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Finding {
    /// Stable code.
    pub code: FindingCode,
    /// Severity.
    pub severity: Severity,
    /// The object concerned, as `kind/namespace/name` or `kind/name`.
    pub subject: String,
    /// What is wrong.
    pub message: String,
    /// The one-line fix.
    pub fix: String,
}

impl Finding {
    /// A finding; `subject`, `message` and `fix` are free text.
    pub fn new(
        code: FindingCode,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self { code, severity, subject: subject.into(), message: message.into(), fix: fix.into() }
    }
}
