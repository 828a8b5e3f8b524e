//! `meshshift_prom::query` against a real HTTP/1 server on 127.0.0.1 that answers like Prometheus' query
//! API: the PromQL arrives intact, answers are parsed, errors are typed, hung servers time out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use meshshift_prom::{PromError, PromGate, query, query_with_timeout};
use tokio::net::TcpListener;

/// Percent-decoding of a query parameter value.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex digit"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// A fake Prometheus: `/api/v1/query` answers a vector with one sample whose `query` label is the decoded
/// PromQL; the PromQL `bad(` gets a bad_data error; `slow` never gets an answer; other paths 404.
async fn fake_prometheus() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(answer(&request).await)
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

async fn answer(request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let respond = |status: u16, body: String| {
        Response::builder().status(status).body(Full::new(Bytes::from(body))).expect("response")
    };
    let path = request.uri().path();
    if !path.ends_with("/api/v1/query") {
        return respond(404, "404 page not found\n".into());
    }
    let raw = request.uri().query().and_then(|q| q.strip_prefix("query=")).unwrap_or_default();
    let promql = decode(raw);
    match promql.as_str() {
        "bad(" => respond(
            400,
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#.into(),
        ),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            respond(200, String::new())
        }
        _ => {
            let label = serde_json::to_string(&promql).expect("json");
            let prefix = serde_json::to_string(path).expect("json");
            respond(
                200,
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"query":{label},"path":{prefix}}},"value":[1700000000.25,"7"]}}]}}}}"#
                ),
            )
        }
    }
}

#[tokio::test]
async fn promql_arrives_intact_and_the_answer_is_parsed() {
    let addr = fake_prometheus().await;
    let gate = PromGate::new(0.01, 1.0, Duration::from_secs(30));
    for promql in [gate.queries().by_code, gate.queries().error_ratio, "up == 1 and on() vector(1) + 0".to_owned()] {
        let samples = query(&format!("http://{addr}"), &promql).await.expect("query");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].label("query"), Some(promql.as_str()));
        assert_eq!(samples[0].value, 7.0);
        assert_eq!(samples[0].timestamp, 1_700_000_000.25);
    }
    // A route prefix is kept.
    let samples = query(&format!("http://localhost:{}/prom/", addr.port()), "up").await.expect("query");
    assert_eq!(samples[0].label("path"), Some("/prom/api/v1/query"));
}

#[tokio::test]
async fn errors_are_typed() {
    let addr = fake_prometheus().await;
    let base = format!("http://{addr}");
    match query(&base, "bad(").await {
        Err(PromError::Api { status: 400, error_type, message }) => {
            assert_eq!(error_type, "bad_data");
            assert!(message.contains("unclosed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match query_with_timeout(&base, "slow", Duration::from_millis(300)).await {
        Err(PromError::Timeout { url, timeout }) => {
            assert_eq!(url, base);
            assert_eq!(timeout, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    match query(&format!("{base}/prom?a=b"), "up").await {
        Err(PromError::InvalidUrl { .. }) => {}
        other => panic!("a base URL with a query string: {other:?}"),
    }
    // Nothing listens on the port of a dropped listener.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    assert!(matches!(query(&format!("http://{closed}"), "up").await, Err(PromError::Connect { .. })));
}

#[tokio::test]
async fn only_loopback_and_lab_addresses_are_queried() {
    for url in ["http://192.0.2.10:9090", "http://prometheus.monitoring.svc:9090", "http://10.1.2.3:9090"] {
        match query(url, "up").await {
            Err(err @ PromError::NotAllowed { .. }) => {
                assert!(err.to_string().starts_with("refusing to query Prometheus at"), "{err}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}
