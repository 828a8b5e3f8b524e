//! meshshift renders Istio's install manifests itself; these tests hold the parts that decide injection,
//! discovery and selection to Istio's real rendered charts in `../shared/fixtures`.

mod support;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use meshshift_core::model::Webhook;
use meshshift_core::render::{ControlPlaneSpec, control_plane, tag_webhook};
use meshshift_core::version::{IstioVersion, Revision};
use serde_json::Value;
use support::fixture_docs;

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

/// The injection-relevant part of each webhook: name, selectors, service and path.
fn hooks(v: &Value) -> Vec<(String, Webhook)> {
    // 1.9 writes admissionregistration v1beta1; selectors, service and path have the same shape in v1.
    let mut v = v.clone();
    v["apiVersion"] = Value::from("admissionregistration.k8s.io/v1");
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(v).expect("MutatingWebhookConfiguration");
    let mut out: Vec<(String, Webhook)> = meshshift_kube::convert::mutating(&mwc)
        .webhooks
        .into_iter()
        .map(|mut w| {
            w.has_ca_bundle = false;
            (w.name.clone(), w)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn spec(version: &str, revision: &str) -> ControlPlaneSpec {
    ControlPlaneSpec::new(
        version.parse::<IstioVersion>().expect("version"),
        Revision::parse(revision).expect("revision"),
    )
}

fn assert_control_plane_matches(version: &str, revision: &str, fixture: &str) {
    let real = fixture_docs(fixture);
    let ours = control_plane(&spec(version, revision));
    let (real_mwc, our_mwc) =
        (find(&real, "MutatingWebhookConfiguration"), find(&ours, "MutatingWebhookConfiguration"));
    assert_eq!(our_mwc["metadata"]["name"], real_mwc["metadata"]["name"], "{fixture}: injector name");
    assert_eq!(our_mwc["metadata"]["labels"]["istio.io/rev"], real_mwc["metadata"]["labels"]["istio.io/rev"]);
    assert_eq!(hooks(our_mwc), hooks(real_mwc), "{fixture}: injector webhooks");

    let real_dep: Deployment = serde_json::from_value(find(&real, "Deployment").clone()).expect("deployment");
    let our_dep: Deployment = serde_json::from_value(find(&ours, "Deployment").clone()).expect("deployment");
    assert_eq!(our_dep.metadata.name, real_dep.metadata.name);
    let (rs, os) = (real_dep.spec.expect("spec"), our_dep.spec.expect("spec"));
    assert_eq!(os.selector, rs.selector, "{fixture}: istiod selector");
    let label = |d: &k8s_openapi::api::apps::v1::DeploymentSpec, k: &str| {
        d.template.metadata.as_ref().and_then(|m| m.labels.as_ref()).and_then(|l| l.get(k).cloned())
    };
    for k in ["app", "istio", "istio.io/rev", "sidecar.istio.io/inject"] {
        assert_eq!(label(&os, k), label(&rs, k), "{fixture}: pod label {k}");
    }
    let image = |d: &k8s_openapi::api::apps::v1::DeploymentSpec| {
        d.template
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == "discovery"))
            .and_then(|c| c.image.clone())
    };
    assert_eq!(image(&os), image(&rs), "{fixture}: discovery image");

    let real_svc: Service = serde_json::from_value(find(&real, "Service").clone()).expect("service");
    let our_svc: Service = serde_json::from_value(find(&ours, "Service").clone()).expect("service");
    assert_eq!(our_svc.metadata.name, real_svc.metadata.name);
    assert_eq!(
        our_svc.spec.as_ref().and_then(|s| s.selector.clone()),
        real_svc.spec.as_ref().and_then(|s| s.selector.clone()),
        "{fixture}: istiod Service selector"
    );

    let cm_names = |docs: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = docs
            .iter()
            .filter(|d| d["kind"] == "ConfigMap")
            .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    assert_eq!(cm_names(&ours), cm_names(&real), "{fixture}: ConfigMaps");
}

#[test]
fn render_1_9_7_revision_matches_istio_shared_fixtures() {
    assert_control_plane_matches("1.9.7", "1-9-7", "helm-rendered/1.9.7/istiod-rev-1-9-7.yaml");
}

#[test]
fn render_1_10_6_revision_matches_istio_shared_fixtures() {
    assert_control_plane_matches("1.10.6", "1-10-6", "helm-rendered/1.10.6/istiod-rev-1-10-6.yaml");
}

#[test]
fn render_1_24_6_and_1_25_5_revisions_match_istio_shared_fixtures() {
    assert_control_plane_matches("1.24.6", "1-24-6", "helm-rendered/1.24.6/istiod-rev-1-24-6.yaml");
    assert_control_plane_matches("1.25.5", "1-25-5", "helm-rendered/1.25.5/istiod-rev-1-25-5.yaml");
}

#[test]
fn render_default_installs_match_istio_shared_fixtures() {
    assert_control_plane_matches("1.9.7", "default", "helm-rendered/1.9.7/istiod-default.yaml");
    assert_control_plane_matches("1.10.6", "default", "helm-rendered/1.10.6/istiod-default.yaml");
    assert_control_plane_matches("1.24.6", "default", "helm-rendered/1.24.6/istiod-default.yaml");
}

#[test]
fn render_revision_tags_match_istio_shared_fixtures() {
    let real = fixture_docs("helm-rendered/1.10.6/revision-tag-prod-to-1-10-6.yaml");
    let ours =
        tag_webhook(&"1.10.6".parse().expect("v"), "prod", &Revision::parse("1-10-6").expect("r"), "istio-system");
    let real_mwc = find(&real, "MutatingWebhookConfiguration");
    assert_eq!(ours["metadata"]["name"], real_mwc["metadata"]["name"]);
    assert_eq!(ours["metadata"]["labels"]["istio.io/tag"], real_mwc["metadata"]["labels"]["istio.io/tag"]);
    assert_eq!(hooks(&ours), hooks(real_mwc), "prod tag webhooks");

    let real = fixture_docs("helm-rendered/1.24.6/revision-tags-default-prod-to-1-24-6.yaml");
    let real_default =
        real.iter().find(|d| d["metadata"]["name"] == "istio-revision-tag-default").expect("default tag");
    let ours =
        tag_webhook(&"1.24.6".parse().expect("v"), "default", &Revision::parse("1-24-6").expect("r"), "istio-system");
    assert_eq!(hooks(&ours), hooks(real_default), "default tag webhooks");
}
