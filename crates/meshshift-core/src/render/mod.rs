//! Rendering Istio's install manifests for any 1.9+ version, with that version's conventions.
//!
//! meshshift renders the objects itself instead of shelling out to Helm or istioctl: the lab installs
//! Istio with it, and the upgrade engine's "manifests" installer applies them. The shapes follow
//! `istio-upgrades.md` (names, labels, selectors, webhook layout by minor); the integration tests compare
//! the parts `meshshift status` and the engine rely on against Istio's real rendered charts.
//! Output is plain JSON objects (`apiVersion`, `kind`, `metadata`, ...), ready to apply.

mod bookinfo;
mod controlplane;
mod crds;
mod gateway;
mod operator;
mod webhooks;

use serde_json::Value;

pub use bookinfo::{BookinfoSpec, bookinfo, bookinfo_gateway};
pub use controlplane::{BaseSpec, ControlPlaneSpec, base, control_plane};
pub use crds::crds;
pub use gateway::{GatewaySpec, LoadBalancerSpec, gateway, load_balancer};
pub use operator::{istio_operator_name, operator, operator_name};
pub use webhooks::{injector_webhook, tag_webhook};

use crate::version::{IstioVersion, Revision};

/// The image registry Istio publishes to.
pub const DEFAULT_HUB: &str = "docker.io/istio";

/// `istiod` for the default revision, `istiod-<rev>` otherwise: the name of istiod's Deployment and
/// Service.
pub fn istiod_name(revision: &Revision) -> String {
    if revision.is_default() { "istiod".to_owned() } else { format!("istiod-{revision}") }
}

/// The discovery address proxies of `revision` use.
pub fn discovery_address(revision: &Revision, namespace: &str) -> String {
    format!("{}.{namespace}.svc:15012", istiod_name(revision))
}

/// The `istio.io/rev` label value of a revision (`default` for the default revision).
pub fn rev_label(revision: &Revision) -> String {
    revision.as_str().to_owned()
}

/// Whether `version` uses the 1.10+ injector webhook layout (`rev.namespace.`/`rev.object.`).
pub fn has_split_injector(version: &IstioVersion) -> bool {
    version.minor_line() >= (1, 10)
}

/// Object metadata with a namespace (when given) and labels.
fn meta(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    let mut m = serde_json::json!({ "name": name, "labels": labels });
    if let Some(ns) = namespace {
        m["namespace"] = Value::from(ns);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(r: &str) -> Revision {
        Revision::parse(r).expect("revision")
    }

    #[test]
    fn names_follow_istio_conventions() {
        assert_eq!(istiod_name(&Revision::default_revision()), "istiod");
        assert_eq!(istiod_name(&rev("1-10-6")), "istiod-1-10-6");
        assert_eq!(discovery_address(&rev("1-9-7"), "istio-system"), "istiod-1-9-7.istio-system.svc:15012");
        assert_eq!(webhooks::injector_name(&rev("canary"), "istio-system"), "istio-sidecar-injector-canary");
        assert_eq!(webhooks::injector_name(&rev("canary"), "mesh"), "istio-sidecar-injector-canary-mesh");
    }

    #[test]
    fn split_injector_from_1_10() {
        let v = |s: &str| s.parse::<IstioVersion>().expect("version");
        assert!(!has_split_injector(&v("1.9.7")));
        assert!(has_split_injector(&v("1.10.0")));
        let w = injector_webhook(&v("1.9.7"), &rev("1-9-7"), "istio-system");
        assert_eq!(w["webhooks"].as_array().map(Vec::len), Some(1));
        let w = injector_webhook(&v("1.10.6"), &Revision::default_revision(), "istio-system");
        assert_eq!(
            w["webhooks"].as_array().map(Vec::len),
            Some(4),
            "default 1.10+: rev.namespace, rev.object, namespace, object"
        );
    }

    #[test]
    fn control_plane_is_self_contained_per_revision() {
        let spec = ControlPlaneSpec::new("1.10.6".parse().expect("v"), rev("1-10-6"));
        let objs = control_plane(&spec);
        let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "ConfigMap", "ConfigMap", "Deployment", "Service", "MutatingWebhookConfiguration"]
        );
        for o in &objs {
            assert_eq!(o["metadata"]["labels"]["istio.io/rev"], "1-10-6", "{} carries its revision", o["kind"]);
        }
        let values: serde_json::Value =
            serde_json::from_str(objs[2]["data"]["values"].as_str().expect("values")).expect("json");
        assert_eq!(values["global"]["tag"], "1.10.6", "status falls back to this when the image has no tag");
    }

    #[test]
    fn gateways_are_colours_behind_one_load_balancer() {
        let g = GatewaySpec::new("istio-ingress", rev("1-10-6"), "1.10.6".parse().expect("v"));
        let objs = gateway(&g);
        assert_eq!(objs[0]["spec"]["selector"]["matchLabels"]["version"], "1-10-6");
        assert_eq!(objs[0]["spec"]["template"]["metadata"]["annotations"]["inject.istio.io/templates"], "gateway");
        assert_eq!(objs[1]["spec"]["selector"], serde_json::to_value(g.selector()).expect("json"));
        let lb = load_balancer(&LoadBalancerSpec {
            name: "ingress".into(),
            namespace: "istio-ingress".into(),
            selector: g.selector(),
            external_traffic_policy: "Cluster".into(),
        });
        assert_eq!(lb["spec"]["type"], "LoadBalancer");
        assert_eq!(lb["spec"]["selector"]["version"], "1-10-6");
        let legacy = GatewaySpec { injected: false, ..g };
        let objs = gateway(&legacy);
        assert_eq!(objs[0]["spec"]["template"]["spec"]["containers"][0]["image"], "docker.io/istio/proxyv2:1.10.6");
        assert_eq!(objs[0]["spec"]["template"]["spec"]["containers"][0]["args"][1], "router");
    }

    #[test]
    fn bookinfo_has_four_services_and_six_deployments() {
        let objs = bookinfo(&BookinfoSpec::new("bookinfo", 2));
        let count = |k: &str| objs.iter().filter(|o| o["kind"] == k).count();
        assert_eq!((count("Service"), count("Deployment"), count("ServiceAccount")), (4, 6, 4));
        assert!(objs.iter().filter(|o| o["kind"] == "Deployment").all(|d| d["spec"]["replicas"] == 2));
        let gw = bookinfo_gateway("bookinfo");
        assert_eq!(gw[1]["spec"]["http"][0]["route"][0]["destination"]["host"], "productpage");
    }

    #[test]
    fn base_validator_name_by_version() {
        let b = |v: &str| {
            base(&BaseSpec {
                version: v.parse().expect("v"),
                namespace: "istio-system".into(),
                default_revision: rev("1-9-7"),
            })
        };
        let name = |objs: Vec<serde_json::Value>| {
            objs.iter().find(|o| o["kind"] == "ValidatingWebhookConfiguration").map(|o| o["metadata"]["name"].clone())
        };
        assert_eq!(name(b("1.9.7")), Some(serde_json::json!("istiod-istio-system")));
        assert_eq!(name(b("1.24.6")), Some(serde_json::json!("istiod-default-validator")));
        assert_eq!(crds().len(), 9);
    }
}
