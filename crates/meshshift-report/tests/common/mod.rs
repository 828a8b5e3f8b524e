//! A synthetic run directory: a 7-step plan, its timeline, 20 s of requests at 100/s with a 500 ms failure
//! burst during the LoadBalancer switch, and the answering revision moving from 1-9-7 to 1-10-6 there.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use meshshift_core::plan::{Action, Installer, Plan, Step, SwitchStrategy};
use meshshift_probe::{ErrorKind, Record};
use meshshift_report::{GateResult, OutcomeFile, OutcomeKind, Phase, ProbeFile, TimelineEvent};

/// When the prober started (unix ms); the run started 500 ms earlier.
pub const T0: u64 = 1_700_000_000_000;
/// Requests (20 s at 100/s).
pub const TOTAL: u64 = 2_000;
/// Failed requests: scheduled in 7.0..7.5 s.
pub const FAILED: u64 = 50;
/// When the gateway that answers moves from 1-9-7 to 1-10-6, ms after `T0`.
pub const SWITCH_MS: u64 = 7_500;

/// The steps: id, action, and when each ran (ms after `T0`).
pub fn steps() -> Vec<(&'static str, Action, u64, u64)> {
    vec![
        (
            "01-install-control-plane",
            Action::InstallControlPlane {
                revision: "1-10-6".into(),
                version: "1.10.6".into(),
                installer: Installer::Manifests,
                chart: None,
            },
            0,
            3_000,
        ),
        (
            "02-deploy-gateway",
            Action::DeployGateway {
                namespace: "istio-ingress".into(),
                name: "istio-ingressgateway-1-10-6".into(),
                blue: "istio-ingressgateway".into(),
            },
            3_100,
            6_000,
        ),
        (
            "03-switch-load-balancer",
            Action::SwitchLoadBalancer { service: "istio-ingress/ingress-lb".into(), strategy: SwitchStrategy::Switch },
            6_100,
            9_000,
        ),
        (
            "04-retire-blue-gateway",
            Action::RetireBlueGateway { deployment: "istio-ingress/istio-ingressgateway".into(), soak_seconds: 4 },
            9_100,
            14_000,
        ),
        ("05-migrate-namespace-bookinfo", Action::MigrateNamespace { namespace: "bookinfo".into() }, 14_100, 15_000),
        ("06-restart-workloads-bookinfo", Action::RestartWorkloads { namespace: "bookinfo".into() }, 15_100, 18_500),
        ("07-retire-revision", Action::RetireRevision { revision: "1-9-7".into() }, 18_600, 19_800),
    ]
}

/// The plan.
pub fn plan() -> Plan {
    Plan {
        from_revision: "1-9-7".into(),
        from_version: "1.9.7".into(),
        to_revision: "1-10-6".into(),
        to_version: "1.10.6".into(),
        control_plane_namespace: "istio-system".into(),
        hops: vec![],
        steps: steps()
            .into_iter()
            .map(|(id, action, _, _)| Step {
                id: id.into(),
                action,
                changes: vec![],
                preconditions: vec![],
                gates: vec!["a gate".into()],
                undo: "undo it".into(),
            })
            .collect(),
        assumptions: vec![],
    }
}

/// The timeline: starting, applying, verifying with a gate, done, for every step.
pub fn timeline() -> Vec<TimelineEvent> {
    let mut out = Vec::new();
    for (index, (id, _, start, end)) in steps().into_iter().enumerate() {
        let ev = |t: u64, phase: Phase| TimelineEvent {
            t_ms: T0 + t,
            step: id.into(),
            index,
            phase,
            detail: None,
            gate: None,
        };
        out.push(ev(start, Phase::Starting));
        out.push(ev(start + 100, Phase::Applying));
        out.push(TimelineEvent {
            detail: Some("waiting for gates".into()),
            ..ev(start + (end - start) / 2, Phase::Verifying)
        });
        out.push(TimelineEvent {
            gate: Some(GateResult {
                name: format!("gate-of-{id}"),
                ok: true,
                detail: "green answers 3/3 routes like blue (<= 5 ms apart)".into(),
            }),
            ..ev(end - 50, Phase::Verifying)
        });
        out.push(ev(end, Phase::Done));
    }
    out
}

/// The records: one every 10 ms for 20 s.
pub fn records() -> Vec<Record> {
    (0..TOTAL)
        .map(|i| {
            let ms = i * 10;
            let burst = (7_000..7_500).contains(&ms);
            let revision = if ms < SWITCH_MS { "1-9-7" } else { "1-10-6" };
            let mut r = Record {
                seq: i,
                url: "http://10.0.0.10/productpage".into(),
                scheduled_us: ms * 1000,
                sent_us: Some(ms * 1000 + 300),
                latency_us: 2_000 + (i % 7) * 400 + if burst { 900_000 } else { 0 },
                service_us: Some(1_700 + (i % 7) * 400),
                reused: true,
                ..Record::default()
            };
            if burst && ms < 7_250 {
                r.error = Some(ErrorKind::ConnectRefused);
            } else if burst {
                r.status = Some(503);
                r.revision = Some(revision.into());
            } else {
                r.status = Some(200);
                r.ok = true;
                r.revision = Some(revision.into());
                r.proxy = Some("gateway".into());
            }
            r
        })
        .collect()
}

/// Writes the whole run directory into `dir`.
pub fn write_run(dir: &Path) {
    std::fs::write(dir.join("plan.json"), serde_json::to_string_pretty(&plan()).unwrap()).unwrap();
    write_timeline(dir, &timeline());
    let records = records();
    let summary = meshshift_probe::summarize(&records, 100.0, Duration::from_secs(20), Duration::from_millis(100));
    let probe =
        ProbeFile { started_unix_ms: T0, urls: vec!["http://10.0.0.10/productpage".into()], rate: 100.0, summary };
    std::fs::write(dir.join("probe.json"), serde_json::to_string(&probe).unwrap()).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("requests.jsonl")).unwrap());
    for r in &records {
        serde_json::to_writer(&mut out, r).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
    let outcome = OutcomeFile {
        outcome: OutcomeKind::Finished,
        error: None,
        started_unix_ms: T0 - 500,
        ended_unix_ms: T0 + 20_500,
    };
    std::fs::write(dir.join("outcome.json"), serde_json::to_string(&outcome).unwrap()).unwrap();
}

/// Writes `events` as `timeline.jsonl`.
pub fn write_timeline(dir: &Path, events: &[TimelineEvent]) {
    let text: String = events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    std::fs::write(dir.join("timeline.jsonl"), text).unwrap();
}
