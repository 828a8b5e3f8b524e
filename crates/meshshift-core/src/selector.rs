//! Kubernetes label selectors, evaluated without a cluster.
//!
//! Injection is decided by the apiserver matching webhook `namespaceSelector`/`objectSelector`s against
//! labels; meshshift answers "which revision would inject here?" by doing the same match itself, so it
//! needs the exact Kubernetes semantics (notably: `NotIn` and `DoesNotExist` match an absent key).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels of an object, ordered for deterministic output.
pub type Labels = BTreeMap<String, String>;

/// The operator of one selector requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// The key is present and its value is one of the values.
    In,
    /// The key is absent, or its value is none of the values.
    NotIn,
    /// The key is present, whatever its value.
    Exists,
    /// The key is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the key's value is compared.
    pub operator: Operator,
    /// The values for `In` and `NotIn`.
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement, with Kubernetes' semantics.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A `metav1.LabelSelector`. An empty selector matches everything, as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LabelSelector {
    /// Exact key/value pairs, all required.
    pub match_labels: Labels,
    /// Requirements, all required.
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// A selector of exact labels only.
    pub fn from_labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            match_labels: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether `labels` satisfy every part of the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector requires `key` to equal `value` (used to spot istioctl's
    /// `istio.io/deactivated: never-match` neutralised webhooks).
    pub fn requires(&self, key: &str, value: &str) -> bool {
        self.match_labels.get(key).is_some_and(|v| v == value)
            || self
                .match_expressions
                .iter()
                .any(|r| r.key == key && r.operator == Operator::In && r.values.len() == 1 && r.values[0] == value)
    }
}

/// Whether a Service's plain `spec.selector` selects pods with `labels`. An empty Service selector
/// selects nothing (Kubernetes then leaves Endpoints to the user), unlike an empty `LabelSelector`.
pub fn service_selects(selector: &Labels, labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Parses a kubectl-style equality selector (`team=payments,tier!=canary,env`): `=`/`==`, `!=`, and bare
/// keys (exists) or `!key` (does not exist).
pub fn parse_selector(text: &str) -> Result<LabelSelector, String> {
    let mut requirements = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, operator, values) = if let Some((k, v)) = part.split_once("!=") {
            (k, Operator::NotIn, vec![v.trim().to_owned()])
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (k, Operator::In, vec![v.trim().to_owned()])
        } else if let Some(k) = part.strip_prefix('!') {
            (k, Operator::DoesNotExist, vec![])
        } else {
            (part, Operator::Exists, vec![])
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("{part:?} is not a label requirement (key=value, key!=value, key or !key)"));
        }
        requirements.push(Requirement { key: key.to_owned(), operator, values });
    }
    if requirements.is_empty() {
        return Err("empty label selector".into());
    }
    Ok(LabelSelector { match_labels: Labels::new(), match_expressions: requirements })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectl_selectors() {
        let s = parse_selector("team=payments, tier!=canary,env,!legacy").expect("selector");
        let l = |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect() };
        assert!(s.matches(&l(&[("team", "payments"), ("env", "prod")])));
        assert!(!s.matches(&l(&[("team", "payments"), ("env", "prod"), ("tier", "canary")])));
        assert!(!s.matches(&l(&[("team", "payments"), ("env", "prod"), ("legacy", "y")])));
        assert!(!s.matches(&l(&[("team", "payments")])), "env must exist");
        assert!(parse_selector("").is_err());
        assert!(parse_selector("=x").is_err());
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement { key: key.into(), operator, values: values.iter().map(|v| (*v).into()).collect() }
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let none = labels(&[]);
        let on = labels(&[("istio-injection", "enabled")]);
        let off = labels(&[("istio-injection", "disabled")]);
        let inn = req("istio-injection", Operator::In, &["enabled"]);
        assert!(inn.matches(&on) && !inn.matches(&off) && !inn.matches(&none));
        let not_in = req("istio-injection", Operator::NotIn, &["disabled"]);
        assert!(not_in.matches(&on) && !not_in.matches(&off) && not_in.matches(&none));
        let exists = req("istio-injection", Operator::Exists, &[]);
        assert!(exists.matches(&on) && exists.matches(&off) && !exists.matches(&none));
        let absent = req("istio-injection", Operator::DoesNotExist, &[]);
        assert!(!absent.matches(&on) && absent.matches(&none));
    }

    #[test]
    fn selector_requires_all_parts_and_empty_matches_all() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        let sel = LabelSelector {
            match_labels: labels(&[("istio.io/rev", "1-9-7")]),
            match_expressions: vec![req("istio-injection", Operator::DoesNotExist, &[])],
        };
        assert!(sel.matches(&labels(&[("istio.io/rev", "1-9-7")])));
        assert!(!sel.matches(&labels(&[("istio.io/rev", "1-9-7"), ("istio-injection", "enabled")])));
        assert!(!sel.matches(&labels(&[("istio.io/rev", "1-10-6")])));
    }

    #[test]
    fn requires_spots_never_match() {
        let sel = LabelSelector::from_labels([("istio.io/deactivated", "never-match")]);
        assert!(sel.requires("istio.io/deactivated", "never-match"));
        assert!(!LabelSelector::default().requires("istio.io/deactivated", "never-match"));
    }

    #[test]
    fn service_selector_empty_selects_nothing() {
        let pod = labels(&[("istio", "ingressgateway"), ("version", "1-9-7")]);
        assert!(!service_selects(&labels(&[]), &pod));
        assert!(service_selects(&labels(&[("istio", "ingressgateway")]), &pod));
        assert!(!service_selects(&labels(&[("istio", "ingressgateway"), ("version", "1-10-6")]), &pod));
    }
}
