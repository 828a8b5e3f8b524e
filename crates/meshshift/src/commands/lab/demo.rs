//! `meshshift lab demo`: the seed's demo, done right. A lab; Istio A with its gateway behind the user-owned
//! LoadBalancer; bookinfo with 2 replicas each; steady traffic through the LoadBalancer; the full blue/green
//! upgrade to B by the engine with its traffic gates; the report. Prints "N requests, M failed" and the
//! report's path, and fails if any request failed.

use std::path::PathBuf;

use meshshift_core::version::IstioVersion;
use meshshift_lab::netsvc::LoadBalancers;

use super::{install, lifecycle};
use crate::cli::{
    ApplyArgs, ClusterArgs, InstallBookinfoArgs, InstallIstioArgs, InstallerArg, LabDemoArgs, LabDirArgs, LabUpArgs,
    OnBreach, PlanOptions, RunArgs, Strategy,
};
use crate::exit::Code;

/// Stops the lab when the demo ends, however it ends (unless `--keep`).
struct Teardown {
    dir: LabDirArgs,
    keep: bool,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "the lab keeps running; stop it with `meshshift lab down --dir {}`",
                super::dir(&self.dir).display()
            );
        } else if let Err(e) = lifecycle::down(&self.dir) {
            eprintln!("warning: stopping the lab: {e:#}");
        }
    }
}

/// Waits until 20 requests in a row succeed (at most 60 s).
async fn wait_serving(url: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut config = meshshift_probe::ProbeConfig::new(vec![url.to_owned()], 100.0);
        config.duration = Some(std::time::Duration::from_millis(200));
        let result = meshshift_probe::Prober::start(config)?.wait().await?;
        if result.summary.total > 0 && result.summary.failed == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the ingress never served {url}: {} of {} failed",
                result.summary.failed,
                result.summary.total
            );
        }
    }
}

/// The demo's versions, refused before any lab starts when they cannot make a one-hop upgrade in the lab.
fn versions(args: &LabDemoArgs) -> Result<(IstioVersion, IstioVersion), String> {
    let from: IstioVersion = args.from.parse().map_err(|e| format!("--from: {e}"))?;
    let to: IstioVersion = args.to.parse().map_err(|e| format!("--to: {e}"))?;
    if from.minor_line() < (1, 9) {
        return Err(format!("--from {from}: the lab emulates Istio 1.9 and later"));
    }
    let mode = meshshift_core::path::UpgradeMode::Revision;
    match meshshift_core::path::upgrade_path(&from, &to, mode, false) {
        Err(e) => Err(e.to_string()),
        Ok(hops) if hops.is_empty() => Err(format!("--from and --to are both {from}: nothing to upgrade")),
        Ok(hops) if hops.len() > 1 => {
            Err(format!("{from} -> {to} needs {} hops; give a --to at most 2 minors ahead of --from", hops.len()))
        }
        Ok(_) => Ok((from, to)),
    }
}

pub async fn demo(args: &LabDemoArgs) -> anyhow::Result<Code> {
    let (from, to) = match versions(args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Code::Usage);
        }
    };
    let rev = from.revision();
    lifecycle::up(&LabUpArgs {
        dir: args.dir.clone(),
        nodes: args.nodes,
        propagation_delay_ms: 1000,
        prometheus: false,
    })
    .await?;
    let _teardown = Teardown { dir: args.dir.clone(), keep: args.keep };
    install::istio(&InstallIstioArgs {
        dir: args.dir.clone(),
        version: from.to_string(),
        revision: None,
        default: false,
        gateway: vec![format!("istio-ingress/istio-ingressgateway-{rev}")],
        legacy_gateway: false,
        load_balancer: Some("istio-ingress/ingress".into()),
    })
    .await?;
    install::bookinfo(&InstallBookinfoArgs {
        dir: args.dir.clone(),
        namespace: "bookinfo".into(),
        replicas: 2,
        revision: Some(rev.to_string()),
    })
    .await?;
    let lab_dir = super::dir(&args.dir);
    let addr = LoadBalancers::host_addr(&lab_dir, "istio-ingress", "ingress", 80)?
        .ok_or_else(|| anyhow::anyhow!("the ingress LoadBalancer got no host port"))?;
    let state = meshshift_lab::daemon::running(&lab_dir).ok_or_else(|| anyhow::anyhow!("the lab stopped"))?;
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        let t = k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        PathBuf::from("meshshift-runs").join(format!("{t}-demo-{from}-to-{to}"))
    });
    // Freshly installed, the gateway takes a moment to get its routes: the record starts once it serves.
    wait_serving(&format!("http://{addr}/productpage")).await?;
    eprintln!("upgrading {from} -> {to} under {} req/s through http://{addr}/productpage", args.rate);
    let code = super::super::apply::apply(ApplyArgs {
        cluster: ClusterArgs { kubeconfig: Some(state.kubeconfig.clone()), context: None },
        to: Some(to.to_string()),
        plan: None,
        options: PlanOptions {
            revision: None,
            from: None,
            gateway_service: Some("istio-ingress/ingress".into()),
            namespaces: None,
            namespace_selector: None,
            tags: None,
            strategy: Strategy::Switch,
            allow_skip: false,
            soak_seconds: args.soak_seconds,
            installer: InstallerArg::Manifests,
            helm_chart: "istio/istiod".into(),
        },
        run: RunArgs {
            state_namespace: "meshshift".into(),
            parallelism: 2,
            rollout_timeout: 300,
            health_check_wait: 10,
            until: None,
            probe: vec![format!("http://{addr}/productpage")],
            probe_rate: args.rate,
            error_budget: 0.0,
            p99_ceiling_ms: None,
            min_requests: 20,
            on_breach: OnBreach::Rollback,
            prometheus: None,
            prometheus_error_ratio: 0.0,
            prometheus_window: 10,
            run_dir: Some(run_dir.clone()),
            lock_seconds: 30,
        },
        dry_run: false,
    })
    .await;
    let probe: serde_json::Value = std::fs::read_to_string(run_dir.join("probe.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| anyhow::anyhow!("no traffic record in {}", run_dir.display()))?;
    let total = probe["summary"]["total"].as_u64().unwrap_or(0);
    let failed = probe["summary"]["failed"].as_u64().unwrap_or(0);
    println!("{total} requests, {failed} failed");
    println!("report: {}", run_dir.join("report.html").display());
    Ok(if code == Code::Ok && failed == 0 && total > 0 { Code::Ok } else { Code::RunFailed })
}
