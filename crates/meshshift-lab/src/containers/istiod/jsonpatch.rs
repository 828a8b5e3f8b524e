//! RFC 6902 JSON Patch operations: what the injector answers and what the caBundle patcher sends.
//!
//! Kept as plain values (no client) so that the injector's output can be applied to a golden pod in unit
//! tests exactly as the apiserver applies it. Only the operations istiod needs are implemented: `add`,
//! `replace`, `remove` and `test`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One JSON Patch operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    /// What to do.
    pub op: OpKind,
    /// A JSON Pointer (RFC 6901).
    pub path: String,
    /// The value for `add`, `replace` and `test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The operations istiod uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Insert into an array (at an index or `-` for the end) or set an object member.
    Add,
    /// Replace an existing value.
    Replace,
    /// Remove an existing value.
    Remove,
    /// Fail the whole patch unless the value equals: a precondition (e.g. on `resourceVersion`).
    Test,
}

impl PatchOp {
    /// `add` at `path`.
    pub fn add(path: impl Into<String>, value: Value) -> PatchOp {
        PatchOp { op: OpKind::Add, path: path.into(), value: Some(value) }
    }

    /// `replace` at `path`.
    pub fn replace(path: impl Into<String>, value: Value) -> PatchOp {
        PatchOp { op: OpKind::Replace, path: path.into(), value: Some(value) }
    }

    /// `test` at `path`.
    pub fn test(path: impl Into<String>, value: Value) -> PatchOp {
        PatchOp { op: OpKind::Test, path: path.into(), value: Some(value) }
    }
}

/// Escapes one reference token of a JSON Pointer: `~` -> `~0`, `/` -> `~1` (label keys contain `/`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Why a patch does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// A path does not lead to an existing container of the right kind.
    #[error("path {0} does not exist")]
    NoSuchPath(String),
    /// A `test` operation failed.
    #[error("test failed at {0}")]
    TestFailed(String),
    /// The operation lacks its value.
    #[error("operation at {0} needs a value")]
    MissingValue(String),
}

/// Applies `ops` to `doc` in order, as the apiserver does; on error `doc` may be partly patched.
pub fn apply(doc: &mut Value, ops: &[PatchOp]) -> Result<(), PatchError> {
    for op in ops {
        apply_one(doc, op)?;
    }
    Ok(())
}

fn apply_one(doc: &mut Value, op: &PatchOp) -> Result<(), PatchError> {
    let missing = || PatchError::NoSuchPath(op.path.clone());
    let value = || op.value.clone().ok_or_else(|| PatchError::MissingValue(op.path.clone()));
    if op.op == OpKind::Test {
        let found = doc.pointer(&op.path).ok_or_else(missing)?;
        return if Some(found) == op.value.as_ref() { Ok(()) } else { Err(PatchError::TestFailed(op.path.clone())) };
    }
    if op.path.is_empty() {
        return match op.op {
            OpKind::Add | OpKind::Replace => {
                *doc = value()?;
                Ok(())
            }
            _ => Err(missing()),
        };
    }
    let (parent_path, last) = op.path.rsplit_once('/').ok_or_else(missing)?;
    let key = last.replace("~1", "/").replace("~0", "~");
    let parent = doc.pointer_mut(parent_path).ok_or_else(missing)?;
    match (op.op, parent) {
        (OpKind::Add, Value::Object(map)) => {
            map.insert(key, value()?);
        }
        (OpKind::Replace, Value::Object(map)) => {
            let slot = map.get_mut(&key).ok_or_else(missing)?;
            *slot = value()?;
        }
        (OpKind::Remove, Value::Object(map)) => {
            map.remove(&key).ok_or_else(missing)?;
        }
        (OpKind::Add, Value::Array(items)) => {
            let index = if key == "-" { items.len() } else { key.parse().map_err(|_| missing())? };
            if index > items.len() {
                return Err(missing());
            }
            items.insert(index, value()?);
        }
        (OpKind::Replace, Value::Array(items)) => {
            let index: usize = key.parse().map_err(|_| missing())?;
            let slot = items.get_mut(index).ok_or_else(missing)?;
            *slot = value()?;
        }
        (OpKind::Remove, Value::Array(items)) => {
            let index: usize = key.parse().map_err(|_| missing())?;
            if index >= items.len() {
                return Err(missing());
            }
            items.remove(index);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn add_replace_remove_and_test_follow_rfc_6902() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "app"}]}});
        let ops = vec![
            PatchOp::test("/metadata/labels/a", json!("1")),
            PatchOp::add(format!("/metadata/labels/{}", escape("istio.io/rev")), json!("1-9-7")),
            PatchOp::add("/spec/containers/-", json!({"name": "istio-proxy"})),
            PatchOp::add("/spec/initContainers", json!([{"name": "istio-init"}])),
            PatchOp::add("/spec/initContainers/0", json!({"name": "first"})),
            PatchOp::replace("/spec/containers/0", json!({"name": "app2"})),
            PatchOp { op: OpKind::Remove, path: "/metadata/labels/a".into(), value: None },
        ];
        apply(&mut doc, &ops).expect("applies");
        assert_eq!(
            doc,
            json!({
                "metadata": {"labels": {"istio.io/rev": "1-9-7"}},
                "spec": {
                    "containers": [{"name": "app2"}, {"name": "istio-proxy"}],
                    "initContainers": [{"name": "first"}, {"name": "istio-init"}]
                }
            })
        );
    }

    #[test]
    fn failures_are_reported() {
        let mut doc = json!({"metadata": {"resourceVersion": "5"}});
        let stale = [PatchOp::test("/metadata/resourceVersion", json!("4"))];
        assert_eq!(apply(&mut doc, &stale), Err(PatchError::TestFailed("/metadata/resourceVersion".into())));
        let nowhere = [PatchOp::add("/spec/containers/-", json!({}))];
        assert_eq!(apply(&mut doc, &nowhere), Err(PatchError::NoSuchPath("/spec/containers/-".into())));
        let replace_missing = [PatchOp::replace("/metadata/name", json!("x"))];
        assert!(apply(&mut doc, &replace_missing).is_err());
    }

    #[test]
    fn escaping_round_trips_through_apply() {
        assert_eq!(escape("sidecar.istio.io/status"), "sidecar.istio.io~1status");
        assert_eq!(escape("a~b/c"), "a~0b~1c");
        let mut doc = json!({"m": {}});
        apply(&mut doc, &[PatchOp::add(format!("/m/{}", escape("a~b/c")), json!(1))]).expect("applies");
        assert_eq!(doc, json!({"m": {"a~b/c": 1}}));
    }

    #[test]
    fn serialises_as_rfc_6902() {
        let op = PatchOp::add("/a", json!(1));
        assert_eq!(serde_json::to_value(&op).expect("json"), json!({"op": "add", "path": "/a", "value": 1}));
        let remove = PatchOp { op: OpKind::Remove, path: "/a".into(), value: None };
        assert_eq!(serde_json::to_value(&remove).expect("json"), json!({"op": "remove", "path": "/a"}));
    }
}
