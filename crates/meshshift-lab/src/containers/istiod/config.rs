//! What an istiod pushes to its proxies: pure snapshot building and revision scoping.
//!
//! Revision scoping is Istio's rule (and the cause of issue #51569, revision-pinned config lost during a
//! migration): a config object without label `istio.io/rev` is seen by every revision; one with the label
//! only by that revision, or by a revision whose tag the label names. Services are not config: every
//! revision sees all of them (istiod's own Services carry `istio.io/rev` and still are visible).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::DynamicObject;
use serde_json::Value;

use super::identity::REV_LABEL;
use crate::containers::protocol::{ConfigSnapshot, ServiceEntry};

/// Whether a config object with `labels` is visible to `revision` (with `tags` pointing at it).
pub fn in_scope(rev_label: Option<&str>, revision: &str, tags: &BTreeSet<String>) -> bool {
    match rev_label {
        None => true,
        Some(rev) => rev == revision || tags.contains(rev),
    }
}

/// An Istio config object as pushed: as stored, with `apiVersion`/`kind` filled in (list items may lack
/// them) and `managedFields` dropped (bulk nobody reads).
pub fn config_json(obj: &DynamicObject, api_version: &str, kind: &str) -> Value {
    let mut value = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.entry("apiVersion").or_insert_with(|| Value::String(api_version.to_owned()));
        map.entry("kind").or_insert_with(|| Value::String(kind.to_owned()));
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("managedFields");
        }
    }
    value
}

fn rev_label(obj: &DynamicObject) -> Option<&str> {
    obj.metadata.labels.as_ref().and_then(|l| l.get(REV_LABEL)).map(String::as_str)
}

/// A Service as proxies see it; `None` for Services without a ClusterIP (headless, ExternalName).
pub fn service_entry(svc: &Service) -> Option<ServiceEntry> {
    let spec = svc.spec.as_ref()?;
    let cluster_ip = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None")?;
    let ports = spec.ports.iter().flatten().filter_map(|p| Some((u16::try_from(p.port).ok()?, p))).collect::<Vec<_>>();
    Some(ServiceEntry {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        cluster_ip: cluster_ip.to_owned(),
        ports: ports.iter().map(|(port, p)| (*port, p.name.clone())).collect(),
        target_ports: ports
            .iter()
            .map(|(port, p)| (*port, p.target_port.clone().unwrap_or(IntOrString::Int(i32::from(*port)))))
            .collect(),
        selector: spec.selector.clone().unwrap_or_default(),
    })
}

/// The snapshot for `revision`: the Gateways and VirtualServices in its scope and every Service, each
/// ordered by namespace and name (the inputs' order). `generation` is left 0: see [`Publisher`].
pub fn build<'a>(
    gateways: impl IntoIterator<Item = &'a DynamicObject>,
    virtual_services: impl IntoIterator<Item = &'a DynamicObject>,
    services: impl IntoIterator<Item = &'a Service>,
    revision: &str,
    tags: &BTreeSet<String>,
) -> ConfigSnapshot {
    let scoped = |objs: Vec<&'a DynamicObject>, kind: &str| -> Vec<Value> {
        objs.into_iter()
            .filter(|o| in_scope(rev_label(o), revision, tags))
            .map(|o| config_json(o, "networking.istio.io/v1alpha3", kind))
            .collect()
    };
    ConfigSnapshot {
        generation: 0,
        gateways: scoped(gateways.into_iter().collect(), "Gateway"),
        virtual_services: scoped(virtual_services.into_iter().collect(), "VirtualService"),
        services: services.into_iter().filter_map(service_entry).collect(),
    }
}

/// Numbers snapshots: a new generation only when the content changed, so proxies see a push per change
/// and none for unrelated watch events (e.g. a Service status update).
#[derive(Debug, Default)]
pub struct Publisher {
    last: Option<ConfigSnapshot>,
}

impl Publisher {
    /// The snapshot to push for `built`, or `None` when nothing changed since the last one.
    pub fn next(&mut self, mut built: ConfigSnapshot) -> Option<ConfigSnapshot> {
        let generation = match &self.last {
            Some(last) => {
                built.generation = last.generation;
                if *last == built {
                    return None;
                }
                last.generation + 1
            }
            None => 1,
        };
        built.generation = generation;
        self.last = Some(built.clone());
        Some(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vs(ns: &str, name: &str, rev: Option<&str>) -> DynamicObject {
        let mut meta = json!({"namespace": ns, "name": name, "managedFields": [{"manager": "kubectl"}]});
        if let Some(rev) = rev {
            meta["labels"] = json!({"istio.io/rev": rev});
        }
        serde_json::from_value(json!({"metadata": meta, "spec": {"hosts": ["*"]}})).expect("object")
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": ports, "selector": {"app": name}}
        }))
        .expect("service")
    }

    fn names(values: &[Value]) -> Vec<String> {
        values.iter().map(|v| v["metadata"]["name"].as_str().unwrap_or_default().to_owned()).collect()
    }

    #[test]
    fn revision_scoping_follows_istio() {
        let tags = BTreeSet::from(["prod".to_owned()]);
        assert!(in_scope(None, "1-9-7", &tags));
        assert!(in_scope(Some("1-9-7"), "1-9-7", &tags));
        assert!(in_scope(Some("prod"), "1-9-7", &tags));
        assert!(!in_scope(Some("1-10-6"), "1-9-7", &tags));
        assert!(!in_scope(Some("default"), "1-9-7", &BTreeSet::new()));
    }

    #[test]
    fn snapshots_hold_scoped_config_and_all_services() {
        let vss = [
            vs("apps", "all", None),
            vs("apps", "old", Some("1-9-7")),
            vs("apps", "new", Some("1-10-6")),
            vs("apps", "tagged", Some("prod")),
        ];
        let gws = [vs("istio-system", "gw", Some("1-10-6"))];
        let services = [
            svc(
                "apps",
                "web",
                "10.96.0.20",
                json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 9090, "targetPort": "metrics"}]),
            ),
            svc("apps", "headless", "None", json!([{"port": 80}])),
            svc("apps", "bare", "10.96.0.21", json!([{"port": 81}])),
        ];
        let old = build(&gws, &vss, &services, "1-9-7", &BTreeSet::new());
        assert_eq!(names(&old.virtual_services), ["all", "old"]);
        assert!(old.gateways.is_empty());
        let new = build(&gws, &vss, &services, "1-10-6", &BTreeSet::from(["prod".to_owned()]));
        assert_eq!(names(&new.virtual_services), ["all", "new", "tagged"]);
        assert_eq!(names(&new.gateways), ["gw"]);
        assert_eq!(new.gateways[0]["kind"], "Gateway");
        assert_eq!(new.gateways[0]["apiVersion"], "networking.istio.io/v1alpha3");
        assert!(new.gateways[0]["metadata"].get("managedFields").is_none());
        assert_eq!(new.virtual_services[0]["spec"]["hosts"], json!(["*"]));

        assert_eq!(new.services.len(), 2, "the headless Service has no ClusterIP");
        let web = &new.services[0];
        assert_eq!((web.namespace.as_str(), web.name.as_str(), web.cluster_ip.as_str()), ("apps", "web", "10.96.0.20"));
        assert_eq!(web.ports, vec![(80, Some("http".to_owned())), (9090, None)]);
        assert_eq!(web.target_ports, vec![(80, IntOrString::Int(8080)), (9090, IntOrString::String("metrics".into()))]);
        assert_eq!(web.selector.get("app").map(String::as_str), Some("web"));
        assert_eq!(new.services[1].target_ports, vec![(81, IntOrString::Int(81))]);
    }

    #[test]
    fn the_publisher_numbers_only_changes() {
        let mut publisher = Publisher::default();
        let empty = ConfigSnapshot::default();
        assert_eq!(publisher.next(empty.clone()).map(|s| s.generation), Some(1));
        assert_eq!(publisher.next(empty.clone()), None);
        let vss = [vs("apps", "all", None)];
        let changed = build([], &vss, [], "1-9-7", &BTreeSet::new());
        assert_eq!(publisher.next(changed.clone()).map(|s| s.generation), Some(2));
        assert_eq!(publisher.next(changed), None);
        assert_eq!(publisher.next(empty).map(|s| s.generation), Some(3));
    }
}
