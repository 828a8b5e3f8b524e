//! Why a run stopped.

use meshshift_core::drift::Drift;
use meshshift_core::fields::ObjectRef;
use meshshift_core::journal::JournalError;
use meshshift_kube::journal_store::JournalStoreError;
use meshshift_kube::lock::LockError;
use meshshift_kube::rollout::RolloutError;

/// Why a run stopped. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The cluster moved away from what the saved plan assumed.
    #[error("the cluster changed since the plan was made; re-plan:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Drift(Vec<Drift>),
    /// Someone else changed a field meshshift manages; it is left as they set it.
    #[error(
        "{object} {field} was changed by someone else (expected {}, found {}); meshshift does not overwrite it: check who changed it, then resume or roll back",
        expected.as_deref().unwrap_or("<absent>"), found.as_deref().unwrap_or("<absent>")
    )]
    ConcurrentEdit {
        /// The object.
        object: String,
        /// The field.
        field: String,
        /// What meshshift expected.
        expected: Option<String>,
        /// What it found.
        found: Option<String>,
    },
    /// A step's precondition does not hold; nothing was changed by this step.
    #[error("step {step}: {detail}")]
    Precondition {
        /// Step id.
        step: String,
        /// What does not hold.
        detail: String,
    },
    /// A gate failed after the step's writes: resume retries it, rollback undoes the step.
    #[error(
        "step {step}: gate failed: {detail}; run `meshshift rollback` to undo, or fix the cause and `meshshift resume`"
    )]
    Gate {
        /// Step id.
        step: String,
        /// What failed.
        detail: String,
    },
    /// A traffic gate saw users hurt: the upgrade stops here.
    #[error("step {step}: traffic gate breached: {detail}")]
    Breach {
        /// Step id.
        step: String,
        /// What the gate saw.
        detail: String,
    },
    /// A run already left a journal.
    #[error(
        "a run is in progress ({detail}); continue it with `meshshift resume` or undo it with `meshshift rollback`"
    )]
    RunInProgress {
        /// Where it stands.
        detail: String,
    },
    /// No journal to resume or roll back.
    #[error("no upgrade run was found in namespace {0} (nothing to resume or roll back)")]
    NoRun(String),
    /// Interrupted (Ctrl-C); the journal says where it stopped.
    #[error("interrupted; `meshshift resume` continues from the last recorded step, `meshshift rollback` undoes it")]
    Interrupted,
    /// The run lock was lost (another run took it over after this one stalled).
    #[error("lost the run lock: {0}")]
    LockLost(String),
    /// A kind meshshift does not handle.
    #[error("{0}: meshshift does not handle this kind")]
    UnsupportedKind(String),
    /// An object that must exist does not.
    #[error("{0} does not exist")]
    Missing(String),
    /// Malformed data (a journal value, a field).
    #[error("invalid data: {0}")]
    Invalid(String),
    /// A guarded write kept racing other writers.
    #[error("{0} kept changing under every write; retry later")]
    Contended(String),
    /// An external installer (helm, istioctl) failed.
    #[error("{command}: {detail}")]
    Tool {
        /// The command line.
        command: String,
        /// Its exit status and stderr.
        detail: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The API failed (a 403 says which permission to grant: [`explain`]).
    #[error("{object}: {}", explain(source))]
    Api {
        /// The object.
        object: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The journal store.
    #[error(transparent)]
    Journal(#[from] JournalStoreError),
    /// The journal state machine refused a transition (a bug, or a journal edited by hand).
    #[error(transparent)]
    JournalState(#[from] JournalError),
    /// The run lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A rollout.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
}

/// An object reference or field path that does not parse: a plan or journal that is not meshshift's own.
impl From<meshshift_core::fields::FieldError> for EngineError {
    fn from(e: meshshift_core::fields::FieldError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl EngineError {
    /// An API error about `object`.
    pub fn api(object: &ObjectRef, source: kube::Error) -> Self {
        Self::Api { object: object.to_string(), source }
    }

    /// An API error about something named in words.
    pub fn api_about(what: impl Into<String>, source: kube::Error) -> Self {
        Self::Api { object: what.into(), source }
    }
}

/// An API error in words: a 403 as `forbidden: <verb> <resource> in <namespace>: grant it (see
/// `meshshift rbac`)`, anything else as kube shows it.
pub fn explain(source: &kube::Error) -> String {
    match source {
        kube::Error::Api(s) if s.code == 403 => forbidden(&s.message),
        other => other.to_string(),
    }
}

/// Reads the RBAC authorizer's `... cannot <verb> resource "<r>" in API group "<g>" in the namespace
/// "<ns>"` (or `at the cluster scope`); an unfamiliar message is kept whole.
fn forbidden(message: &str) -> String {
    let quoted =
        |s: &str, after: &str| s.split_once(after).and_then(|(_, r)| r.split_once('"')).map(|(v, _)| v.to_owned());
    let parsed = message.split_once(" cannot ").and_then(|(_, rest)| {
        let (verb, rest) = rest.split_once(" resource \"")?;
        let (resource, rest) = rest.split_once('"')?;
        let group = quoted(rest, "in API group \"").unwrap_or_default();
        let resource = if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") };
        let scope =
            quoted(rest, "in the namespace \"").map(|ns| format!("in {ns}")).unwrap_or_else(|| "cluster-wide".into());
        Some(format!("{verb} {resource} {scope}"))
    });
    format!("forbidden: {}: grant it (see `meshshift rbac`)", parsed.unwrap_or_else(|| message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            serde_json::from_value(
                serde_json::json!({"status": "Failure", "message": message, "reason": "Forbidden", "code": code}),
            )
            .expect("status"),
        )
    }

    #[test]
    fn forbidden_names_the_verb_resource_and_namespace() {
        let e = EngineError::api_about(
            "Service/istio-ingress/ingress",
            api(
                403,
                r#"services "ingress" is forbidden: User "system:serviceaccount:meshshift:meshshift" cannot patch resource "services" in API group "" in the namespace "istio-ingress""#,
            ),
        );
        assert_eq!(
            e.to_string(),
            "Service/istio-ingress/ingress: forbidden: patch services in istio-ingress: grant it (see `meshshift rbac`)"
        );
        let cluster = explain(&api(
            403,
            r#"namespaces is forbidden: User "u" cannot create resource "namespaces" in API group "" at the cluster scope"#,
        ));
        assert_eq!(cluster, "forbidden: create namespaces cluster-wide: grant it (see `meshshift rbac`)");
        let grouped = explain(&api(
            403,
            r#"deployments.apps "x" is forbidden: User "u" cannot delete resource "deployments" in API group "apps" in the namespace "a""#,
        ));
        assert_eq!(grouped, "forbidden: delete deployments.apps in a: grant it (see `meshshift rbac`)");
        assert_eq!(explain(&api(403, "odd")), "forbidden: odd: grant it (see `meshshift rbac`)");
        assert!(!explain(&api(404, "not found")).contains("forbidden"));
    }
}
