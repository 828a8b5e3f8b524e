//! An in-memory copy of one kind of object, fed by watch events.
//!
//! `kube::runtime::watcher` restarts its list from scratch after an error (`Init`, `InitApply`...,
//! `InitDone`); buffering the relisted objects and swapping them in at `InitDone` keeps the copy complete
//! at every moment, so a config push never sees half a relist. `synced` says the first list is in.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::runtime::watcher::Event;

/// Objects of one kind by `namespace/name`.
#[derive(Debug, Clone)]
pub struct Index<T> {
    items: BTreeMap<String, T>,
    relist: Option<BTreeMap<String, T>>,
    synced: bool,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self { items: BTreeMap::new(), relist: None, synced: false }
    }
}

fn key<T: ResourceExt>(obj: &T) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

impl<T: ResourceExt + Clone> Index<T> {
    /// Applies one watch event; returns whether the visible objects (or the sync state) changed.
    pub fn apply(&mut self, event: Event<T>) -> bool {
        match event {
            Event::Apply(obj) => {
                self.items.insert(key(&obj), obj);
                true
            }
            Event::Delete(obj) => self.items.remove(&key(&obj)).is_some(),
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                self.relist.get_or_insert_with(BTreeMap::new).insert(key(&obj), obj);
                false
            }
            Event::InitDone => {
                self.items = self.relist.take().unwrap_or_default();
                self.synced = true;
                true
            }
        }
    }

    /// Forgets everything and counts as synced: the kind is not served (its CRD is not installed).
    pub fn set_absent(&mut self) -> bool {
        let changed = !self.items.is_empty() || !self.synced;
        self.items.clear();
        self.relist = None;
        self.synced = true;
        changed
    }

    /// Whether the first full list has arrived.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The objects, ordered by namespace and name.
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.items.values()
    }

    /// One object by namespace (empty for cluster-scoped) and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.items.get(&format!("{namespace}/{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "data": {"v": v}})).expect("cm")
    }

    fn names(index: &Index<ConfigMap>) -> Vec<String> {
        index.items().map(|c| format!("{}={}", c.name_any(), c.data.as_ref().expect("data")["v"])).collect()
    }

    #[test]
    fn a_relist_replaces_the_copy_only_when_complete() {
        let mut index = Index::default();
        assert!(!index.synced());
        index.apply(Event::Init);
        index.apply(Event::InitApply(cm("a", "one", "1")));
        assert!(names(&index).is_empty(), "nothing visible before InitDone");
        assert!(index.apply(Event::InitDone));
        assert!(index.synced());
        assert_eq!(names(&index), ["one=1"]);
        assert!(index.apply(Event::Apply(cm("a", "two", "2"))));
        assert!(index.apply(Event::Apply(cm("a", "one", "1b"))));
        assert_eq!(names(&index), ["one=1b", "two=2"]);
        // A relist after a watch error: "two" was deleted meanwhile.
        index.apply(Event::Init);
        index.apply(Event::InitApply(cm("a", "one", "1c")));
        assert_eq!(names(&index), ["one=1b", "two=2"], "the old copy stays visible during the relist");
        index.apply(Event::InitDone);
        assert_eq!(names(&index), ["one=1c"]);
        assert!(index.apply(Event::Delete(cm("a", "one", ""))));
        assert!(!index.apply(Event::Delete(cm("a", "one", ""))));
        assert!(index.get("a", "one").is_none());
    }

    #[test]
    fn an_absent_kind_is_empty_and_synced() {
        let mut index = Index::default();
        index.apply(Event::Apply(cm("a", "one", "1")));
        assert!(index.set_absent());
        assert!(index.synced());
        assert_eq!(index.items().count(), 0);
        assert!(!index.set_absent());
    }
}
