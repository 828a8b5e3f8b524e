//! The request rate the lab sustains on this machine through gateway -> productpage -> (details,
//! reviews -> ratings), side by side in one run with the ingress path alone (gateway -> productpage's
//! static files, no fan-out) and with a plain local HTTP server (the load generator's own ceiling). Run: `cargo bench -p meshshift --bench lab_throughput`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meshshift_lab::netsvc::LoadBalancers;
use meshshift_lab::{LabOptions, TestCluster};
use support::install_mesh;

const CONNECTIONS: usize = 16;
const DURATION: Duration = Duration::from_secs(10);

struct Result {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u64>,
}

async fn load(addr: SocketAddr, path: &'static str) -> Result {
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(CONNECTIONS).build_http();
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + DURATION;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, failed) = (client.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let began = Instant::now();
                let ok = match client.get(format!("http://{addr}{path}").parse().expect("uri")).await {
                    Ok(r) => r.status().is_success() && r.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(began.elapsed().as_micros() as u64);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.expect("task"));
    }
    latencies_us.sort_unstable();
    Result { ok: latencies_us.len() as u64, failed: failed.load(Ordering::Relaxed), latencies_us }
}

fn row(what: &str, r: &Result) {
    let p = |q: f64| {
        r.latencies_us
            .get(((r.latencies_us.len() as f64 * q) as usize).min(r.latencies_us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "| {what} | {:.0} req/s | {:.1} ms | {:.1} ms | {} |",
        r.ok as f64 / DURATION.as_secs_f64(),
        p(0.5),
        p(0.99),
        r.failed
    );
}

async fn local_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn main() {
    let began = Instant::now();
    let lab = TestCluster::start_lab(std::path::Path::new(env!("CARGO_BIN_EXE_meshshift")), &LabOptions::full(3))
        .expect("lab");
    let up = began.elapsed();
    let dir = lab.dir().to_str().expect("utf-8").to_owned();
    install_mesh(&dir);
    let installed = began.elapsed();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ingress =
        LoadBalancers::host_addr(lab.dir(), "istio-ingress", "ingress", 80).expect("registry").expect("host port");
    println!(
        "lab up (3 nodes) in {:.1} s; Istio 1.9.7 + gateway + bookinfo ready after {:.1} s",
        up.as_secs_f64(),
        installed.as_secs_f64()
    );
    println!("| path ({CONNECTIONS} connections, {} s) | rate | p50 | p99 | failed |", DURATION.as_secs());
    println!("|---|---|---|---|---|");
    rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        row(
            "LB -> gateway -> productpage -> details + reviews -> ratings (sidecars on every hop)",
            &load(ingress, "/productpage").await,
        );
        row("LB -> gateway -> productpage `/static/x` (no fan-out)", &load(ingress, "/static/x").await);
        let local = local_server().await;
        row("plain local axum server (the load generator's ceiling)", &load(local, "/").await);
    });
}
