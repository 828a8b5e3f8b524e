//! `lab install-istio` and `lab install-bookinfo`: render with `meshshift_core::render`, apply, wait.

use std::time::Duration;

use meshshift_core::render::{self, BaseSpec, BookinfoSpec, ControlPlaneSpec, GatewaySpec, LoadBalancerSpec};
use meshshift_core::version::{IstioVersion, Revision};
use meshshift_kube::install::apply_and_wait;
use serde_json::{Value, json};

use super::lifecycle::spinner;
use crate::cli::{InstallBookinfoArgs, InstallIstioArgs};
use crate::exit::Code;

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);

fn split_ref(s: &str, default_ns: &str) -> (String, String) {
    match s.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (default_ns.to_owned(), s.to_owned()),
    }
}

pub async fn istio(args: &InstallIstioArgs) -> anyhow::Result<Code> {
    let version: IstioVersion = args.version.parse()?;
    if version.minor_line() < (1, 9) {
        anyhow::bail!("the lab emulates Istio 1.9 and later; {version} is older");
    }
    let revision = match (&args.revision, args.default) {
        (_, true) => Revision::default_revision(),
        (Some(r), false) => Revision::parse(r)?,
        (None, false) => version.revision(),
    };
    let client = super::client(&args.dir).await?;
    let cp = ControlPlaneSpec::new(version.clone(), revision.clone());
    let mut docs: Vec<Value> = render::base(&BaseSpec {
        version: version.clone(),
        namespace: cp.namespace.clone(),
        default_revision: revision.clone(),
    });
    // The default validator is shared: keep the one a previous install made.
    let validators: kube::Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        kube::Api::all(client.clone());
    let existing: Vec<String> =
        validators.list(&Default::default()).await?.items.into_iter().filter_map(|v| v.metadata.name).collect();
    docs.retain(|d| {
        !(d["kind"] == "ValidatingWebhookConfiguration"
            && d["metadata"]["name"].as_str().is_some_and(|n| existing.iter().any(|e| e == n)))
    });
    let control_plane = render::control_plane(&cp);
    // A gateway that is not injected reads the revision's mesh ConfigMap from its own namespace.
    let mesh_config = control_plane
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap" && d["metadata"]["name"].as_str().is_some_and(|n| !n.contains("sidecar-injector"))
        })
        .cloned();
    docs.extend(control_plane);
    let bar = spinner(&format!("installing istiod {version} as revision {revision}"));
    apply_and_wait(&client, &cp.namespace, docs, ROLLOUT_TIMEOUT, |m| bar.set_message(m.to_owned())).await?;

    let mut gateway_docs = Vec::new();
    let mut selectors = Vec::new();
    for g in &args.gateway {
        let (ns, name) = split_ref(g, "istio-ingress");
        let mut spec = GatewaySpec::new(&ns, revision.clone(), version.clone());
        spec.name = name;
        // 1.9's revision injector selects namespaces only (no `rev.object` webhook), so a gateway of a
        // 1.9 revision in an unlabelled gateway namespace would never be injected: deploy it legacy-style.
        spec.injected = !args.legacy_gateway && render::has_split_injector(&version);
        gateway_docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        if let Some(mut copy) = mesh_config.clone().filter(|_| !spec.injected && ns != cp.namespace) {
            copy["metadata"]["namespace"] = json!(ns);
            gateway_docs.push(copy);
        }
        gateway_docs.extend(render::gateway(&spec));
        selectors.push((ns, spec.selector()));
    }
    if let Some(lb) = &args.load_balancer {
        let (ns, name) = split_ref(lb, "istio-ingress");
        let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(client.clone(), &ns);
        if services.get_opt(&name).await?.is_none() {
            let selector = selectors.iter().find(|(n, _)| *n == ns).map(|(_, s)| s.clone()).ok_or_else(|| {
                anyhow::anyhow!("--load-balancer {lb}: no --gateway of this revision in namespace {ns} to select")
            })?;
            gateway_docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
            gateway_docs.push(render::load_balancer(&LoadBalancerSpec {
                name,
                namespace: ns,
                selector,
                external_traffic_policy: "Cluster".into(),
            }));
        }
    }
    if !gateway_docs.is_empty() {
        bar.set_message("installing gateways");
        apply_and_wait(&client, "istio-ingress", gateway_docs, ROLLOUT_TIMEOUT, |m| bar.set_message(m.to_owned()))
            .await?;
    }
    bar.finish_and_clear();
    eprintln!("istiod {version} (revision {revision}) ready");
    Ok(Code::Ok)
}

pub async fn bookinfo(args: &InstallBookinfoArgs) -> anyhow::Result<Code> {
    let client = super::client(&args.dir).await?;
    let labels = match args.revision.as_deref() {
        None => json!({}),
        Some("default") => json!({"istio-injection": "enabled"}),
        Some(r) => json!({"istio.io/rev": Revision::parse(r)?.as_str()}),
    };
    let mut docs =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args.namespace, "labels": labels}})];
    docs.extend(render::bookinfo(&BookinfoSpec::new(&args.namespace, args.replicas)));
    docs.extend(render::bookinfo_gateway(&args.namespace));
    let bar = spinner(&format!("installing bookinfo in {}", args.namespace));
    apply_and_wait(&client, &args.namespace, docs, ROLLOUT_TIMEOUT, |m| bar.set_message(m.to_owned())).await?;
    bar.finish_and_clear();
    eprintln!("bookinfo ready in namespace {}", args.namespace);
    Ok(Code::Ok)
}
