//! Drift: has the cluster moved away from what a saved plan assumed?
//!
//! `apply --plan FILE` runs a plan computed earlier; if someone relabelled a namespace or edited the
//! LoadBalancer since, the plan's before-values are wrong and running it would overwrite their change.
//! Each assumption names an object, a field and the value it had; the adapter fetches the objects and
//! this module compares.

use serde_json::Value;

use crate::fields::Field;
use crate::plan::Assumption;

/// One assumption the cluster no longer meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The object.
    pub object: String,
    /// The field.
    pub field: String,
    /// What the plan assumed.
    pub assumed: Option<String>,
    /// What the cluster has (`None`: absent, or the object is gone).
    pub found: Option<String>,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "<absent>".into());
        write!(
            f,
            "{} {}: plan assumed {}, cluster has {}",
            self.object,
            self.field,
            show(&self.assumed),
            show(&self.found)
        )
    }
}

/// Compares one assumption with the live object (`None`: the object does not exist).
pub fn check(assumption: &Assumption, live: Option<&Value>) -> Option<Drift> {
    let found = match (live, assumption.field.parse::<Field>()) {
        (Some(obj), Ok(field)) => field.read(obj),
        _ => None,
    };
    let gone = live.is_none();
    (found != assumption.value || gone).then(|| Drift {
        object: assumption.object.clone(),
        field: assumption.field.clone(),
        assumed: assumption.value.clone(),
        found,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn assume(value: Option<&str>) -> Assumption {
        Assumption {
            object: "Namespace/bookinfo".into(),
            field: "metadata.labels.istio.io/rev".into(),
            value: value.map(str::to_owned),
        }
    }

    #[test]
    fn unchanged_fields_do_not_drift() {
        let ns = json!({"metadata": {"labels": {"istio.io/rev": "1-9-7"}}});
        assert_eq!(check(&assume(Some("1-9-7")), Some(&ns)), None);
        let bare = json!({"metadata": {}});
        assert_eq!(check(&assume(None), Some(&bare)), None, "absent and still absent");
    }

    #[test]
    fn changed_added_removed_and_deleted_drift() {
        let ns = json!({"metadata": {"labels": {"istio.io/rev": "canary"}}});
        let d = check(&assume(Some("1-9-7")), Some(&ns)).expect("drift");
        assert_eq!(d.found.as_deref(), Some("canary"));
        assert!(d.to_string().contains("plan assumed 1-9-7, cluster has canary"), "{d}");
        assert!(check(&assume(None), Some(&ns)).is_some(), "added");
        assert!(check(&assume(Some("1-9-7")), Some(&json!({"metadata": {}}))).is_some(), "removed");
        assert!(check(&assume(None), None).is_some(), "the object is gone");
    }
}
