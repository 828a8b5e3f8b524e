//! The prober against real HTTP/1 servers on 127.0.0.1: counts, coordinated omission, failures that are
//! recorded rather than dropped, revision tallies, stop and drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meshshift_probe::{ErrorKind, ProbeConfig, ProbeError, ProbeResult, Prober};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A test server; aborting `task` closes its listener and every connection.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}/productpage", self.addr)
    }
}

/// Serves every request after `delay`, stamping `x-meshshift-revision: revision`.
async fn serve(delay: Duration, revision: &'static str) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-meshshift-revision", revision)
                            .header("x-meshshift-proxy", "gateway")
                            .header("server", "test")
                            .body(Full::new(Bytes::from_static(b"ok")))
                            .expect("response"),
                    )
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Server { addr, task }
}

fn config(urls: Vec<String>, rate: f64, duration_ms: u64, connections: usize) -> ProbeConfig {
    let mut c = ProbeConfig::new(urls, rate);
    c.duration = Some(Duration::from_millis(duration_ms));
    c.connections = connections;
    c
}

async fn probe(c: ProbeConfig) -> ProbeResult {
    Prober::start(c).expect("start").wait().await.expect("probe")
}

/// Every sequence number from 0 to `n` appears exactly once.
fn assert_complete(r: &ProbeResult, n: u64) {
    let seqs: Vec<u64> = r.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "records are missing or duplicated");
    assert_eq!(r.summary.total, n);
    assert_eq!(r.summary.ok + r.summary.failed, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_exactly_rate_times_duration_and_tallies_revisions() {
    let server = serve(Duration::ZERO, "1-9-7").await;
    let r = probe(config(vec![server.url()], 200.0, 1000, 4)).await;
    assert_complete(&r, 200);
    assert_eq!(r.summary.failed, 0, "{}", r.summary.to_text());
    assert!((r.summary.rate_achieved - 200.0).abs() < 1e-6, "{}", r.summary.rate_achieved);
    for rec in &r.records {
        assert_eq!(rec.scheduled_us, rec.seq * 5_000, "arrivals every 5 ms");
        assert!(rec.sent_us.expect("sent") >= rec.scheduled_us);
        assert_eq!(
            (rec.status, rec.revision.as_deref(), rec.server.as_deref()),
            (Some(200), Some("1-9-7"), Some("test"))
        );
    }
    assert_eq!(r.summary.revisions.len(), 1);
    assert_eq!(r.summary.revisions["1-9-7"].count, 200);
    assert!((r.summary.revisions["1-9-7"].share - 1.0).abs() < 1e-9);
    assert_eq!(r.buckets.len(), 10);
    for b in &r.buckets {
        assert_eq!((b.ok, b.failed, b.revisions["1-9-7"]), (20, 0, 20), "{b:?}");
        assert!(b.p50_us.is_some() && b.p99_us.is_some());
    }
    assert!(r.records.iter().filter(|r| r.reused).count() > 150, "connections are kept alive");
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_urls_shares_revisions() {
    let blue = serve(Duration::ZERO, "1-9-7").await;
    let green = serve(Duration::ZERO, "1-10-6").await;
    let r = probe(config(vec![blue.url(), green.url()], 100.0, 500, 2)).await;
    assert_complete(&r, 50);
    assert_eq!(r.summary.revisions["1-9-7"].count, 25);
    assert_eq!(r.summary.revisions["1-10-6"].count, 25);
    assert!((r.summary.revisions["1-10-6"].share - 0.5).abs() < 1e-9);
    assert!(r.records.iter().all(|rec| (rec.seq % 2 == 0) == (rec.url == blue.url())));
    blue.task.abort();
    green.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_counts_queueing_from_the_scheduled_time() {
    // One connection, 50 ms per request, 100 requests/s: the server can do 20/s, so requests queue. A
    // closed-loop client would report ~50 ms; from the scheduled time, the last ones waited seconds.
    let server = serve(Duration::from_millis(50), "1-9-7").await;
    let r = probe(config(vec![server.url()], 100.0, 1000, 1)).await;
    assert_complete(&r, 100);
    assert_eq!(r.summary.failed, 0, "{}", r.summary.to_text());
    let s = &r.summary;
    assert!(s.service.p50_us >= 50_000 && s.service.p50_us < 200_000, "service time ~50 ms: {:?}", s.service);
    assert!(s.latency.p99_us > 2_000_000, "p99 must include queueing (~4 s): {:?}", s.latency);
    assert!(s.latency.max_us > 40 * s.service.p50_us, "{:?} vs {:?}", s.latency, s.service);
    assert!(s.throughput < 30.0, "the server sustains ~20/s: {}", s.throughput);
    // Queueing grows along the run: the last bucket is much slower than the first.
    let first = r.buckets.first().and_then(|b| b.p99_us).expect("first");
    let last = r.buckets.last().and_then(|b| b.p99_us).expect("last");
    assert!(last > first + 2_000_000, "first {first} last {last}");
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closed_mid_run_gives_failed_records_with_an_error_kind() {
    let server = serve(Duration::ZERO, "1-9-7").await;
    let url = server.url();
    let mut c = config(vec![url], 100.0, 1500, 2);
    c.timeout = Duration::from_secs(1);
    let handle = Prober::start(c).expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.task.abort();
    let r = handle.wait().await.expect("probe");
    assert_complete(&r, 150);
    let s = &r.summary;
    assert!(s.ok >= 30 && s.failed >= 60, "{}", s.to_text());
    for rec in r.records.iter().filter(|r| r.failed()) {
        assert!(rec.error.is_some(), "a failed record has an error kind: {rec:?}");
        assert!(rec.error_detail.is_some());
        assert!(rec.status.is_none());
    }
    assert!(s.errors.get(&ErrorKind::ConnectRefused).copied().unwrap_or(0) >= 60, "{:?}", s.errors);
    assert_eq!(s.errors.values().sum::<u64>(), s.failed);
    // The outage is where it happened: from ~0.5 s to the end.
    let w = s.failure_windows.first().expect("a failure window");
    assert!((400..=800).contains(&w.from_ms) && w.to_ms == 1500, "{:?}", s.failure_windows);
    assert!(r.buckets.last().is_some_and(|b| b.ok == 0 && b.failed == 10 && b.revisions.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_drain_aborts_are_recorded() {
    let slow = serve(Duration::from_secs(30), "1-9-7").await;
    // Timeout: the request is given up after 100 ms.
    let mut c = config(vec![slow.url()], 10.0, 200, 2);
    c.timeout = Duration::from_millis(100);
    let r = probe(c).await;
    assert_complete(&r, 2);
    assert!(r.records.iter().all(|r| r.error == Some(ErrorKind::Timeout) && r.latency_us >= 100_000), "{r:?}");

    // Drain: 4 requests on 1 connection that never answers within the drain time: all recorded, aborted.
    let mut c = config(vec![slow.url()], 20.0, 200, 1);
    c.timeout = Duration::from_secs(60);
    c.drain = Duration::from_millis(300);
    let r = probe(c).await;
    assert_complete(&r, 4);
    assert_eq!(r.summary.errors, [(ErrorKind::Aborted, 4)].into_iter().collect(), "{r:?}");
    assert!(r.records[0].sent_us.is_some(), "the first was in flight");
    assert!(r.records[3].sent_us.is_none(), "the last was still queued");
    slow.task.abort();
}

/// `drained()` is how apply judges a whole run through a handle its gates share: once it returns, the
/// window counts every request the probe scheduled, those aborted at the end of the drain included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_through_a_shared_handle_counts_requests_aborted_at_the_drain() {
    let slow = serve(Duration::from_secs(30), "1-9-7").await;
    let mut c = ProbeConfig::new(vec![slow.url()], 20.0);
    c.connections = 1;
    c.timeout = Duration::from_secs(60);
    c.drain = Duration::from_millis(300);
    let handle = Prober::start(c).expect("start");
    tokio::time::sleep(Duration::from_millis(190)).await;
    handle.drained().await;
    let w = handle.window(handle.started_unix_ms());
    let r = handle.wait().await.expect("probe");
    assert!(r.summary.total >= 3, "{:?}", r.summary);
    assert_eq!((w.ok, w.failed), (0, r.summary.total), "every scheduled request judged, all aborted");
    assert_eq!(r.summary.errors, [(ErrorKind::Aborted, r.summary.total)].into_iter().collect());
    slow.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_ended_probe_runs_until_stopped_and_snapshots_on_the_way() {
    let server = serve(Duration::ZERO, "1-10-6").await;
    let mut c = ProbeConfig::new(vec![server.url()], 50.0);
    c.connections = 2;
    let handle = Prober::start(c).expect("start");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let snap = loop {
        let snap = handle.snapshot();
        if snap.summary.total >= 10 || tokio::time::Instant::now() > deadline {
            break snap;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(snap.summary.total >= 10 && snap.summary.failed == 0, "{:?}", snap.summary);
    assert!(snap.records.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(!handle.is_finished());
    let stopper = handle.stopper();
    stopper.stop();
    let r = handle.wait().await.expect("probe");
    let n = r.summary.total;
    assert!(n >= snap.summary.total, "{n}");
    assert_complete(&r, n);
    assert_eq!(r.summary.failed, 0);
    // The window is the time until stop: the rate achieved over it is the target's.
    assert!((r.summary.rate_achieved - 50.0).abs() < 10.0, "{} over {} s", r.summary.rate_achieved, r.summary.window_s);
    let mut jsonl = Vec::new();
    r.write_jsonl(&mut jsonl).expect("jsonl");
    let lines: Vec<serde_json::Value> =
        String::from_utf8(jsonl).expect("utf8").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len() as u64, n);
    assert_eq!(lines[0]["revision"], "1-10-6");
    server.task.abort();
}

#[tokio::test]
async fn foreign_urls_and_bad_settings_are_refused_before_sending() {
    for url in ["http://192.0.2.1/", "http://example.com/", "http://172.17.0.1:80/"] {
        let err = Prober::start(ProbeConfig::new(vec![url.to_owned()], 10.0)).expect_err(url);
        assert!(matches!(err, ProbeError::NotAllowed { .. }) && err.is_input(), "{err}");
        assert!(err.to_string().contains("only loopback"), "{err}");
    }
    let ok = vec!["http://127.0.0.1:1/".to_owned()];
    let mut c = ProbeConfig::new(ok.clone(), 10.0);
    c.connections = 0;
    assert!(matches!(Prober::start(c), Err(ProbeError::InvalidConfig(_))));
    assert!(matches!(Prober::start(ProbeConfig::new(ok, 0.0)), Err(ProbeError::InvalidConfig(_))));
    assert!(matches!(Prober::start(ProbeConfig::new(vec![], 1.0)), Err(ProbeError::InvalidConfig(_))));
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let err = Prober::start(ProbeConfig::new(vec!["http://127.0.0.1:1/".to_owned()], 1.0)).expect_err("no runtime");
    assert!(matches!(err, ProbeError::NoRuntime) && !err.is_input());
}
