//! The objects and fields a plan names (`Namespace/bookinfo`, `metadata.labels.istio.io/rev`), read from and
//! written to JSON objects.
//!
//! Plans and journals name fields the way people read them; label and annotation keys contain dots and
//! slashes, so a field is parsed by its known prefix rather than split on dots. Writes are JSON patches
//! guarded by the resourceVersion the caller checked the current values at, so a concurrent edit by
//! someone else makes the write fail instead of being overwritten.

use std::fmt;
use std::str::FromStr;

use serde_json::{Value, json};

/// `Kind/namespace/name` or `Kind/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// Kind (`Deployment`).
    pub kind: String,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// A malformed object or field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Not `Kind/name` or `Kind/namespace/name`.
    #[error("{0:?} is not an object reference (expected Kind/name or Kind/namespace/name)")]
    Object(String),
    /// A field meshshift does not write.
    #[error("{0:?} is not a field meshshift changes")]
    Field(String),
    /// A value that does not fit its field.
    #[error("{value:?} is not a valid value for {field}")]
    Value {
        /// The field.
        field: String,
        /// The value.
        value: String,
    },
}

impl ObjectRef {
    /// A namespaced object.
    pub fn namespaced(kind: &str, namespace: &str, name: &str) -> Self {
        Self { kind: kind.to_owned(), namespace: Some(namespace.to_owned()), name: name.to_owned() }
    }

    /// A cluster-scoped object.
    pub fn cluster(kind: &str, name: &str) -> Self {
        Self { kind: kind.to_owned(), namespace: None, name: name.to_owned() }
    }

    /// The reference of a JSON object (`kind`, `metadata.namespace`, `metadata.name`).
    pub fn of(obj: &Value) -> Option<Self> {
        Some(Self {
            kind: obj["kind"].as_str()?.to_owned(),
            namespace: obj["metadata"]["namespace"].as_str().map(str::to_owned),
            name: obj["metadata"]["name"].as_str()?.to_owned(),
        })
    }
}

impl FromStr for ObjectRef {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [kind, name] if !kind.is_empty() && !name.is_empty() => Ok(Self::cluster(kind, name)),
            [kind, ns, name] if !kind.is_empty() && !ns.is_empty() && !name.is_empty() => {
                Ok(Self::namespaced(kind, ns, name))
            }
            _ => Err(FieldError::Object(s.to_owned())),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// A field meshshift changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// The whole object (created or deleted); its value is the object's JSON.
    Object,
    /// `metadata.labels.<key>`.
    Label(String),
    /// `spec.selector` of a Service, the whole map as JSON (switches replace it in one write).
    Selector,
    /// `spec.selector.<key>` of a Service.
    SelectorKey(String),
    /// `spec.replicas`.
    Replicas,
    /// `spec.template.metadata.annotations.<key>`.
    TemplateAnnotation(String),
}

const LABELS: &str = "metadata.labels.";
const SELECTOR: &str = "spec.selector";
const TEMPLATE_ANNOTATIONS: &str = "spec.template.metadata.annotations.";

impl FromStr for Field {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = |k: &str| if k.is_empty() { Err(FieldError::Field(s.to_owned())) } else { Ok(k.to_owned()) };
        if s == "object" {
            Ok(Field::Object)
        } else if s == SELECTOR {
            Ok(Field::Selector)
        } else if s == "spec.replicas" {
            Ok(Field::Replicas)
        } else if let Some(k) = s.strip_prefix(LABELS) {
            key(k).map(Field::Label)
        } else if let Some(k) = s.strip_prefix("spec.selector.") {
            key(k).map(Field::SelectorKey)
        } else if let Some(k) = s.strip_prefix(TEMPLATE_ANNOTATIONS) {
            key(k).map(Field::TemplateAnnotation)
        } else {
            Err(FieldError::Field(s.to_owned()))
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Object => f.write_str("object"),
            Field::Label(k) => write!(f, "{LABELS}{k}"),
            Field::Selector => f.write_str(SELECTOR),
            Field::SelectorKey(k) => write!(f, "{SELECTOR}.{k}"),
            Field::Replicas => f.write_str("spec.replicas"),
            Field::TemplateAnnotation(k) => write!(f, "{TEMPLATE_ANNOTATIONS}{k}"),
        }
    }
}

/// RFC 6901 escaping of one pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

impl Field {
    /// The JSON pointer of the field and of the map holding it (for keyed fields).
    fn pointers(&self) -> (String, Option<&'static str>) {
        match self {
            Field::Object => (String::new(), None),
            Field::Label(k) => (format!("/metadata/labels/{}", escape(k)), Some("/metadata/labels")),
            Field::Selector => ("/spec/selector".into(), None),
            Field::SelectorKey(k) => (format!("/spec/selector/{}", escape(k)), Some("/spec/selector")),
            Field::Replicas => ("/spec/replicas".into(), None),
            Field::TemplateAnnotation(k) => (
                format!("/spec/template/metadata/annotations/{}", escape(k)),
                Some("/spec/template/metadata/annotations"),
            ),
        }
    }

    /// The field's value in `obj`, as the plan and journal write it (`None`: absent). Objects are their
    /// JSON, selectors their JSON map, the rest their string form.
    pub fn read(&self, obj: &Value) -> Option<String> {
        let v = obj.pointer(&self.pointers().0)?;
        match (self, v) {
            (_, Value::Null) => None,
            (Field::Object | Field::Selector, v) => Some(v.to_string()),
            (_, Value::String(s)) => Some(s.clone()),
            (_, v) => Some(v.to_string()),
        }
    }

    /// The JSON a journal value stands for.
    fn json(&self, value: &str) -> Result<Value, FieldError> {
        let bad = || FieldError::Value { field: self.to_string(), value: value.to_owned() };
        match self {
            Field::Object => Err(bad()),
            Field::Selector => match serde_json::from_str::<Value>(value) {
                Ok(v @ Value::Object(_)) => Ok(v),
                _ => Err(bad()),
            },
            Field::Replicas => value.parse::<u64>().map(|n| json!(n)).map_err(|_| bad()),
            _ => Ok(Value::String(value.to_owned())),
        }
    }

    /// JSON-patch operations setting the field in `obj` to `value` (`None`: remove it), guarded by the
    /// object's resourceVersion. Empty when the field already has the value.
    pub fn set(&self, obj: &Value, value: Option<&str>) -> Result<Vec<Value>, FieldError> {
        if self.read(obj).as_deref() == value {
            return Ok(Vec::new());
        }
        let (path, parent) = self.pointers();
        let mut ops = vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]}),
        ];
        match value {
            None => ops.push(json!({"op": "remove", "path": path})),
            Some(v) => {
                if let Some(parent) = parent.filter(|p| obj.pointer(p).is_none_or(Value::is_null)) {
                    ops.push(json!({"op": "add", "path": parent, "value": {}}));
                }
                ops.push(json!({"op": "add", "path": path, "value": self.json(v)?}));
            }
        }
        Ok(ops)
    }
}

/// An object as it can be created again: without the fields the apiserver owns (uid, resourceVersion,
/// timestamps, managed fields, status) and, for Services, without the allocated cluster IPs.
pub fn recreatable(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink"] {
            meta.remove(k);
        }
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.remove("kubectl.kubernetes.io/last-applied-configuration");
            ann.remove("deployment.kubernetes.io/revision");
        }
    }
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    if o["kind"] == "Service"
        && let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_refs_round_trip() {
        for s in ["Namespace/bookinfo", "Service/istio-ingress/ingress"] {
            assert_eq!(s.parse::<ObjectRef>().expect("ref").to_string(), s);
        }
        for bad in ["Namespace", "a/b/c/d", "/x", "Kind//name"] {
            assert!(bad.parse::<ObjectRef>().is_err(), "{bad}");
        }
        let obj = json!({"kind": "Service", "metadata": {"name": "n", "namespace": "ns"}});
        assert_eq!(ObjectRef::of(&obj), Some(ObjectRef::namespaced("Service", "ns", "n")));
    }

    #[test]
    fn fields_parse_by_prefix_and_round_trip() {
        let cases = [
            ("metadata.labels.istio.io/rev", Field::Label("istio.io/rev".into())),
            ("spec.selector.version", Field::SelectorKey("version".into())),
            ("spec.selector", Field::Selector),
            ("spec.replicas", Field::Replicas),
            (
                "spec.template.metadata.annotations.kubectl.kubernetes.io/restartedAt",
                Field::TemplateAnnotation("kubectl.kubernetes.io/restartedAt".into()),
            ),
            ("object", Field::Object),
        ];
        for (s, f) in cases {
            assert_eq!(s.parse::<Field>().as_ref(), Ok(&f));
            assert_eq!(f.to_string(), s);
        }
        assert!("metadata.labels.".parse::<Field>().is_err());
        assert!("spec.ports".parse::<Field>().is_err());
    }

    #[test]
    fn reads_values_as_the_journal_writes_them() {
        let svc = json!({"metadata": {"labels": {"istio.io/rev": "1-9-7"}}, "spec": {"replicas": 2, "selector": {"istio": "ingressgateway"}}});
        assert_eq!(Field::Label("istio.io/rev".into()).read(&svc).as_deref(), Some("1-9-7"));
        assert_eq!(Field::Label("istio-injection".into()).read(&svc), None);
        assert_eq!(Field::Replicas.read(&svc).as_deref(), Some("2"));
        assert_eq!(Field::Selector.read(&svc).as_deref(), Some(r#"{"istio":"ingressgateway"}"#));
        assert_eq!(Field::SelectorKey("istio".into()).read(&svc).as_deref(), Some("ingressgateway"));
    }

    #[test]
    fn writes_are_guarded_json_patches() {
        let ns = json!({"metadata": {"name": "b", "resourceVersion": "42", "labels": {"istio-injection": "enabled"}}});
        let ops = Field::Label("istio-injection".into()).set(&ns, None).expect("ops");
        assert_eq!(ops[0], json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"}));
        assert_eq!(ops[1], json!({"op": "remove", "path": "/metadata/labels/istio-injection"}));
        let ops = Field::Label("istio.io/rev".into()).set(&ns, Some("1-10-6")).expect("ops");
        assert_eq!(ops[1], json!({"op": "add", "path": "/metadata/labels/istio.io~1rev", "value": "1-10-6"}));
        assert!(Field::Label("istio-injection".into()).set(&ns, Some("enabled")).expect("ops").is_empty(), "no-op");

        let bare = json!({"metadata": {"resourceVersion": "1"}, "spec": {"template": {"metadata": {}}}});
        let ops = Field::TemplateAnnotation("a/b".into()).set(&bare, Some("t")).expect("ops");
        assert_eq!(ops.len(), 3, "creates the missing annotations map first");
        let mut patched = bare.clone();
        let patch: json_patch::Patch = serde_json::from_value(json!(ops)).expect("patch");
        json_patch::patch(&mut patched, &patch).expect("applies");
        assert_eq!(Field::TemplateAnnotation("a/b".into()).read(&patched).as_deref(), Some("t"));
        let ops =
            Field::Replicas.set(&json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 2}}), Some("0"));
        assert_eq!(ops.expect("ops")[1]["value"], json!(0));
        assert!(Field::Replicas.set(&bare, Some("two")).is_err());
        assert!(Field::Selector.set(&bare, Some("[]")).is_err());
    }

    #[test]
    fn recreatable_objects_lose_server_fields() {
        let svc = json!({"kind": "Service", "metadata": {"name": "s", "uid": "u", "resourceVersion": "9",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}},
            "spec": {"clusterIP": "10.0.0.1", "selector": {"a": "b"}}, "status": {}});
        let r = recreatable(&svc);
        assert_eq!(
            r,
            json!({"kind": "Service", "metadata": {"name": "s", "annotations": {"keep": "me"}}, "spec": {"selector": {"a": "b"}}})
        );
    }
}
