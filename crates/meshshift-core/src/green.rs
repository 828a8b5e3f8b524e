//! The green gateway: a copy of blue re-targeted at the new revision.
//!
//! Green is blue with its revision swapped, not a freshly rendered gateway: whatever the user put on blue
//! (extra labels the LoadBalancer selects, resources, affinity, ports, topology spread) must be on green too,
//! or the switch changes more than the revision. What changes: the name, the colour labels
//! (`version`, `istio.io/rev`, `service.istio.io/canonical-revision`) where they name the source revision, the
//! proxy image tag of non-injected gateways, the istiod address in their environment, and the revision's
//! mesh ConfigMap they mount. Green's Deployment selector gets the colour label even when blue's lacks it,
//! so the two Deployments never select each other's pods.

use serde_json::{Map, Value, json};

use crate::fields::recreatable;

/// Labels that carry a gateway's colour.
const COLOUR_KEYS: [&str; 3] = ["version", "istio.io/rev", "service.istio.io/canonical-revision"];

/// From which revision to which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recolour {
    /// Source revision (`default` for a non-revisioned install).
    pub from_revision: String,
    /// Target revision.
    pub to_revision: String,
    /// Source version.
    pub from_version: String,
    /// Target version.
    pub to_version: String,
    /// Green's name.
    pub green_name: String,
}

fn istiod_host(revision: &str) -> String {
    if revision == "default" { "istiod.".to_owned() } else { format!("istiod-{revision}.") }
}

/// The mesh ConfigMap of a revision (`istio` for the default revision).
pub fn mesh_config_name(revision: &str) -> String {
    if revision == "default" { "istio".to_owned() } else { format!("istio-{revision}") }
}

impl Recolour {
    fn labels(&self, labels: &mut Value) {
        if let Some(map) = labels.as_object_mut() {
            for key in COLOUR_KEYS {
                if map.get(key).and_then(Value::as_str) == Some(self.from_revision.as_str()) {
                    map.insert(key.to_owned(), json!(self.to_revision));
                }
            }
        }
    }

    fn container(&self, c: &mut Value) {
        if let Some(image) = c["image"].as_str()
            && image.contains("proxyv2")
            && let Some(repo) = image.strip_suffix(&format!(":{}", self.from_version))
        {
            c["image"] = json!(format!("{repo}:{}", self.to_version));
        }
        let (from_host, to_host) = (istiod_host(&self.from_revision), istiod_host(&self.to_revision));
        for env in c["env"].as_array_mut().into_iter().flatten() {
            if let Some(v) = env["value"].as_str()
                && v.contains(&from_host)
            {
                env["value"] = json!(v.replace(&from_host, &to_host));
            }
        }
    }

    /// Green's Deployment from blue's.
    pub fn deployment(&self, blue: &Value) -> Value {
        let mut d = recreatable(blue);
        d["metadata"]["name"] = json!(self.green_name);
        self.labels(&mut d["metadata"]["labels"]);
        if let Some(ann) = d["metadata"].get_mut("annotations").and_then(Value::as_object_mut) {
            ann.remove("deployment.kubernetes.io/revision");
        }
        let template_labels = &mut d["spec"]["template"]["metadata"]["labels"];
        if !template_labels.is_object() {
            *template_labels = json!({});
        }
        self.labels(template_labels);
        if template_labels.get("istio.io/rev").is_none() {
            template_labels["istio.io/rev"] = json!(self.to_revision);
        }
        let colour = if template_labels.get("version").and_then(Value::as_str) == Some(self.to_revision.as_str()) {
            "version"
        } else {
            "istio.io/rev"
        };
        let colour_value = template_labels[colour].clone();
        let selector = &mut d["spec"]["selector"]["matchLabels"];
        if !selector.is_object() {
            *selector = Value::Object(Map::new());
        }
        self.labels(selector);
        selector[colour] = colour_value;
        let annotations = &mut d["spec"]["template"]["metadata"]["annotations"];
        if let Some(map) = annotations.as_object_mut()
            && map.get("istio.io/rev").and_then(Value::as_str) == Some(self.from_revision.as_str())
        {
            map.insert("istio.io/rev".into(), json!(self.to_revision));
        }
        let spec = &mut d["spec"]["template"]["spec"];
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_array_mut().into_iter().flatten() {
                self.container(c);
            }
        }
        let (from_cm, to_cm) = (mesh_config_name(&self.from_revision), mesh_config_name(&self.to_revision));
        for v in spec["volumes"].as_array_mut().into_iter().flatten() {
            if v["configMap"]["name"] == json!(from_cm) {
                v["configMap"]["name"] = json!(to_cm);
            }
        }
        d
    }

    /// Green's own ClusterIP Service from blue's (any Service type becomes ClusterIP: the LoadBalancer stays
    /// the user's).
    pub fn service(&self, blue: &Value) -> Value {
        let mut s = recreatable(blue);
        s["metadata"]["name"] = json!(self.green_name);
        self.labels(&mut s["metadata"]["labels"]);
        self.labels(&mut s["spec"]["selector"]);
        s["spec"]["type"] = json!("ClusterIP");
        if let Some(spec) = s["spec"].as_object_mut() {
            for k in ["externalTrafficPolicy", "healthCheckNodePort", "loadBalancerIP", "loadBalancerSourceRanges"] {
                spec.remove(k);
            }
        }
        for p in s["spec"]["ports"].as_array_mut().into_iter().flatten() {
            if let Some(p) = p.as_object_mut() {
                p.remove("nodePort");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recolour() -> Recolour {
        Recolour {
            from_revision: "1-9-7".into(),
            to_revision: "1-10-6".into(),
            from_version: "1.9.7".into(),
            to_version: "1.10.6".into(),
            green_name: "istio-ingressgateway-1-10-6".into(),
        }
    }

    fn blue() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "istio-ingressgateway-1-9-7", "namespace": "istio-ingress", "uid": "x", "resourceVersion": "7",
                "labels": {"istio": "ingressgateway", "version": "1-9-7", "team": "edge"},
                "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"istio": "ingressgateway", "version": "1-9-7"}},
                "template": {
                    "metadata": {"labels": {"istio": "ingressgateway", "version": "1-9-7", "istio.io/rev": "1-9-7", "team": "edge"}},
                    "spec": {
                        "containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.9.7",
                            "env": [{"name": "CA_ADDR", "value": "istiod-1-9-7.istio-system.svc:15012"}, {"name": "X", "value": "keep"}]}],
                        "volumes": [{"name": "config-volume", "configMap": {"name": "istio-1-9-7"}}],
                    },
                },
            },
            "status": {"replicas": 2},
        })
    }

    #[test]
    fn green_is_blue_with_the_revision_swapped() {
        let g = recolour().deployment(&blue());
        assert_eq!(g["metadata"]["name"], "istio-ingressgateway-1-10-6");
        assert_eq!(g["metadata"]["labels"], json!({"istio": "ingressgateway", "version": "1-10-6", "team": "edge"}));
        assert_eq!(g["metadata"].get("uid"), None);
        assert_eq!(g.get("status"), None);
        assert_eq!(g["metadata"].get("annotations"), Some(&json!({})));
        assert_eq!(g["spec"]["selector"]["matchLabels"], json!({"istio": "ingressgateway", "version": "1-10-6"}));
        let t = &g["spec"]["template"];
        assert_eq!(t["metadata"]["labels"]["team"], "edge", "user labels kept");
        assert_eq!(t["metadata"]["labels"]["istio.io/rev"], "1-10-6");
        let c = &t["spec"]["containers"][0];
        assert_eq!(c["image"], "docker.io/istio/proxyv2:1.10.6");
        assert_eq!(c["env"][0]["value"], "istiod-1-10-6.istio-system.svc:15012");
        assert_eq!(c["env"][1]["value"], "keep");
        assert_eq!(t["spec"]["volumes"][0]["configMap"]["name"], "istio-1-10-6");
    }

    #[test]
    fn a_default_gateway_without_colour_label_gets_one() {
        let mut b = blue();
        b["spec"]["selector"]["matchLabels"] = json!({"app": "istio-ingressgateway", "istio": "ingressgateway"});
        b["spec"]["template"]["metadata"]["labels"] =
            json!({"app": "istio-ingressgateway", "istio": "ingressgateway", "istio.io/rev": "default"});
        b["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = json!("istiod.istio-system.svc:15012");
        b["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = json!("istio");
        let r = Recolour {
            from_revision: "default".into(),
            from_version: "1.9.7".into(),
            to_version: "1.9.7".into(),
            to_revision: "1-9-7".into(),
            ..recolour()
        };
        let g = r.deployment(&b);
        assert_eq!(
            g["spec"]["selector"]["matchLabels"],
            json!({"app": "istio-ingressgateway", "istio": "ingressgateway", "istio.io/rev": "1-9-7"}),
            "green's Deployment never selects blue's pods"
        );
        assert_eq!(
            g["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
            "istiod-1-9-7.istio-system.svc:15012"
        );
        assert_eq!(g["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"], "istio-1-9-7");
    }

    #[test]
    fn green_service_is_cluster_ip_with_green_selector() {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system", "labels": {"version": "1-9-7"}},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.9", "externalTrafficPolicy": "Local",
                "selector": {"istio": "ingressgateway", "version": "1-9-7"},
                "ports": [{"name": "http2", "port": 80, "targetPort": 8080, "nodePort": 31000}]}});
        let g = recolour().service(&svc);
        assert_eq!(g["spec"]["type"], "ClusterIP");
        assert_eq!(g["spec"]["selector"], json!({"istio": "ingressgateway", "version": "1-10-6"}));
        assert_eq!(g["spec"]["ports"][0], json!({"name": "http2", "port": 80, "targetPort": 8080}));
        assert_eq!(g["spec"].get("externalTrafficPolicy"), None);
        assert_eq!(g["spec"].get("clusterIP"), None);
    }
}
