//! Handler actions shared by probes and lifecycle hooks: `httpGet` and `tcpSocket`, sent for real to the
//! pod's address, the way the kubelet does it (a fresh connection per attempt, `Connection: close`,
//! `User-Agent: kube-probe/1.20`, status 200..399 counts as success).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Why an action could not even be attempted or did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ActionError {
    /// The spec cannot be used (unknown named port, a host name the lab cannot resolve).
    #[error("invalid handler: {0}")]
    Invalid(String),
    /// The connection failed.
    #[error("connect to {addr}: {detail}")]
    Connect {
        /// Where.
        addr: SocketAddrV4,
        /// The OS error.
        detail: String,
    },
    /// No answer within the timeout.
    #[error("no answer from {0} within the timeout")]
    Timeout(SocketAddrV4),
    /// The HTTP exchange failed.
    #[error("HTTP request to {addr}: {detail}")]
    Http {
        /// Where.
        addr: SocketAddrV4,
        /// What went wrong.
        detail: String,
    },
    /// An answer outside 200..399.
    #[error("HTTP probe failed with statuscode: {0}")]
    Status(u16),
}

/// A resolved `httpGet` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpTarget {
    pub addr: SocketAddrV4,
    /// The `Host` header (the kubelet sends the probe's host or the pod IP, with the port).
    pub host_header: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The spec asked for HTTPS: the lab only checks the TCP connect then (no TLS client here).
    pub https: bool,
}

/// A port given by number or by the name of one of the container's ports.
pub(crate) fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, ActionError> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ActionError::Invalid(format!("port {n} out of range"))),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| ActionError::Invalid(format!("container {} has no port named {s:?}", container.name)))
        }
    }
}

/// The host address: the spec's (an IPv4 literal: the lab has no DNS) or the pod IP.
fn resolve_host(host: Option<&str>, pod_ip: Ipv4Addr) -> Result<Ipv4Addr, ActionError> {
    match host.filter(|h| !h.is_empty()) {
        None => Ok(pod_ip),
        Some(h) => h.parse().map_err(|_| ActionError::Invalid(format!("host {h:?} is not an IPv4 address"))),
    }
}

/// Resolves an `httpGet` spec against a container and its pod's IP.
pub(crate) fn http_target(
    action: &HTTPGetAction,
    container: &Container,
    pod_ip: Ipv4Addr,
) -> Result<HttpTarget, ActionError> {
    let port = resolve_port(&action.port, container)?;
    let ip = resolve_host(action.host.as_deref(), pod_ip)?;
    let path = match action.path.as_deref() {
        None | Some("") => "/".to_owned(),
        Some(p) if p.starts_with('/') => p.to_owned(),
        Some(p) => format!("/{p}"),
    };
    let headers = action.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
    Ok(HttpTarget {
        addr: SocketAddrV4::new(ip, port),
        host_header: format!("{ip}:{port}"),
        path,
        headers,
        https: action.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")),
    })
}

/// Resolves a `tcpSocket` spec.
pub(crate) fn tcp_target(
    action: &TCPSocketAction,
    container: &Container,
    pod_ip: Ipv4Addr,
) -> Result<SocketAddrV4, ActionError> {
    let port = resolve_port(&action.port, container)?;
    Ok(SocketAddrV4::new(resolve_host(action.host.as_deref(), pod_ip)?, port))
}

/// Whether an HTTP status counts as success for a probe.
pub(crate) fn status_ok(code: u16) -> bool {
    (200..400).contains(&code)
}

/// Opens (and closes) a TCP connection within `timeout`.
pub(crate) async fn tcp_connect(addr: SocketAddrV4, timeout: Duration) -> Result<(), ActionError> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(SocketAddr::V4(addr))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(ActionError::Connect { addr, detail: err.to_string() }),
        Err(_) => Err(ActionError::Timeout(addr)),
    }
}

/// Sends the GET within `timeout` (connect + answer) and checks the status.
pub(crate) async fn http_get(target: &HttpTarget, timeout: Duration) -> Result<u16, ActionError> {
    if target.https {
        return tcp_connect(target.addr, timeout).await.map(|()| 200);
    }
    match tokio::time::timeout(timeout, http_get_inner(target)).await {
        Ok(Ok(code)) if status_ok(code) => Ok(code),
        Ok(Ok(code)) => Err(ActionError::Status(code)),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ActionError::Timeout(target.addr)),
    }
}

async fn http_get_inner(target: &HttpTarget) -> Result<u16, ActionError> {
    let addr = target.addr;
    let http_err = |e: &dyn std::fmt::Display| ActionError::Http { addr, detail: e.to_string() };
    let stream = tokio::net::TcpStream::connect(SocketAddr::V4(addr))
        .await
        .map_err(|e| ActionError::Connect { addr, detail: e.to_string() })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| http_err(&e))?;
    // The connection future drives the socket; it ends with the exchange (Connection: close).
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = hyper::Request::get(target.path.as_str())
        .header(hyper::header::HOST, target.host_header.as_str())
        .header(hyper::header::USER_AGENT, "kube-probe/1.20")
        .header(hyper::header::ACCEPT, "*/*")
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in &target.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(Empty::new()).map_err(|e| http_err(&e))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| http_err(&e))?;
        let code = response.status().as_u16();
        // Read the body like the kubelet does (it keeps the first 10 KiB for the event message).
        let _ = response.into_body().collect().await;
        Ok(code)
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "app",
            "ports": [{ "name": "http", "containerPort": 8080 }, { "name": "admin", "containerPort": 15000 }]
        }))
        .expect("container")
    }

    #[test]
    fn ports_by_number_or_name() {
        let c = container();
        assert_eq!(resolve_port(&IntOrString::Int(9080), &c), Ok(9080));
        assert_eq!(resolve_port(&IntOrString::String("admin".into()), &c), Ok(15000));
        assert_eq!(resolve_port(&IntOrString::String("8081".into()), &c), Ok(8081));
        assert!(matches!(resolve_port(&IntOrString::String("nope".into()), &c), Err(ActionError::Invalid(_))));
        assert!(matches!(resolve_port(&IntOrString::Int(70000), &c), Err(ActionError::Invalid(_))));
        assert!(matches!(resolve_port(&IntOrString::Int(0), &c), Err(ActionError::Invalid(_))));
    }

    #[test]
    fn http_targets_default_to_the_pod_ip_and_root_path() {
        let c = container();
        let pod_ip = Ipv4Addr::new(10, 244, 1, 5);
        let action: HTTPGetAction = serde_json::from_value(serde_json::json!({ "port": "http" })).expect("action");
        let t = http_target(&action, &c, pod_ip).expect("target");
        assert_eq!(t.addr, SocketAddrV4::new(pod_ip, 8080));
        assert_eq!((t.path.as_str(), t.host_header.as_str(), t.https), ("/", "10.244.1.5:8080", false));

        let action: HTTPGetAction = serde_json::from_value(serde_json::json!({
            "port": 15021, "path": "healthz/ready", "host": "10.244.2.9", "scheme": "HTTPS",
            "httpHeaders": [{ "name": "X-Probe", "value": "1" }]
        }))
        .expect("action");
        let t = http_target(&action, &c, pod_ip).expect("target");
        assert_eq!(t.addr, SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 9), 15021));
        assert_eq!(t.path, "/healthz/ready");
        assert!(t.https);
        assert_eq!(t.headers, vec![("X-Probe".to_owned(), "1".to_owned())]);

        let action: HTTPGetAction =
            serde_json::from_value(serde_json::json!({ "port": 80, "host": "example.com" })).expect("action");
        assert!(matches!(http_target(&action, &c, pod_ip), Err(ActionError::Invalid(_))));
    }

    #[test]
    fn success_is_200_to_399() {
        assert!(status_ok(200) && status_ok(302) && status_ok(399));
        assert!(!status_ok(199) && !status_ok(404) && !status_ok(503));
    }

    #[tokio::test]
    async fn real_requests_against_a_local_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let SocketAddr::V4(addr) = listener.local_addr().expect("addr") else { panic!("v4") };
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok ") && req.contains("kube-probe/1.20") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        let target = |path: &str| HttpTarget {
            addr,
            host_header: addr.to_string(),
            path: path.into(),
            headers: Vec::new(),
            https: false,
        };
        let timeout = Duration::from_secs(2);
        assert_eq!(http_get(&target("/ok"), timeout).await, Ok(200));
        assert_eq!(http_get(&target("/missing"), timeout).await, Err(ActionError::Status(404)));
        assert_eq!(tcp_connect(addr, timeout).await, Ok(()));
        // A port nobody listens on: refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let SocketAddr::V4(a) = l.local_addr().expect("addr") else { panic!("v4") };
            a
        };
        assert!(matches!(tcp_connect(closed, timeout).await, Err(ActionError::Connect { .. })));
    }
}
