//! Connecting to a cluster like kubectl: `--kubeconfig`, `KUBECONFIG`, `~/.kube/config`, `--context`.
//!
//! Every way this can fail gets its own variant, because the CLI maps them to distinct exit codes and
//! to messages that say what to do (a typo in a context name and an unreachable cluster need different
//! fixes).

use std::path::PathBuf;
use std::time::Duration;

use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use tower::buffer::BufferLayer;
use tower::retry::RetryLayer;

use crate::retry::{ApiRetry, RetryConfig};

/// The User-Agent of meshshift's API requests (`meshshift/<version>`), as audit logs record it.
pub const USER_AGENT: &str = concat!("meshshift/", env!("CARGO_PKG_VERSION"));

/// How to reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Kubeconfig file; else `KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Context name; else the kubeconfig's current context.
    pub context: Option<String>,
}

/// Why no usable client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file could not be found, read or parsed.
    #[error("cannot load kubeconfig{}: {source}; pass --kubeconfig FILE or set KUBECONFIG", path_hint(.path))]
    Kubeconfig {
        /// The file, when one was named.
        path: Option<PathBuf>,
        /// The loader's error.
        #[source]
        source: KubeconfigError,
    },
    /// The named (or current) context does not exist in the kubeconfig.
    #[error("context {context:?} is not in the kubeconfig; known contexts: {}", if .known.is_empty() { "none".to_owned() } else { .known.join(", ") })]
    UnknownContext {
        /// The context asked for.
        context: String,
        /// The contexts the kubeconfig has.
        known: Vec<String>,
    },
    /// The kubeconfig names a context but its cluster or credentials are unusable.
    #[error("kubeconfig context is not usable: {0}; check its cluster and user entries")]
    InvalidContext(#[source] KubeconfigError),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API at {url}: {source}; is the cluster running and the context right?")]
    Unreachable {
        /// The server URL.
        url: String,
        /// The transport error.
        #[source]
        source: kube::Error,
    },
    /// The API server rejected the credentials.
    #[error("the Kubernetes API at {url} rejected the credentials ({code}): {message}; refresh the kubeconfig's user")]
    Unauthorized {
        /// The server URL.
        url: String,
        /// HTTP status.
        code: u16,
        /// The server's message.
        message: String,
    },
}

fn path_hint(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default()
}

/// Loads the kubeconfig and checks that the API server answers `/version` with these credentials.
pub async fn connect(opts: &ConnectOptions) -> Result<Client, ConnectError> {
    let kubeconfig = match &opts.kubeconfig {
        Some(p) => Kubeconfig::read_from(p),
        None => Kubeconfig::read(),
    }
    .map_err(|source| ConnectError::Kubeconfig { path: opts.kubeconfig.clone(), source })?;
    let context = opts.context.clone().or_else(|| kubeconfig.current_context.clone());
    let known: Vec<String> = kubeconfig.contexts.iter().map(|c| c.name.clone()).collect();
    if let Some(ctx) = context.as_ref().filter(|c| !known.contains(c)) {
        return Err(ConnectError::UnknownContext { context: ctx.clone(), known });
    }
    let options = KubeConfigOptions { context, ..KubeConfigOptions::default() };
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(ConnectError::InvalidContext)?;
    // A CLI must fail fast on a dead endpoint rather than hang on kube's defaults.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(60));
    // kube-rs sends no User-Agent; name meshshift so that audit logs can tell its requests apart.
    config.headers.push((hyper::header::USER_AGENT, hyper::header::HeaderValue::from_static(USER_AGENT)));
    let url = config.cluster_url.to_string();
    // Until this first contact succeeds, a refused connection is not retried: a wrong address fails at
    // once, while a throttled or briefly unavailable apiserver is still ridden out.
    let client = with_retries(config, RetryConfig::default())
        .map_err(|source| ConnectError::Unreachable { url: url.clone(), source })?;
    match client.apiserver_version().await {
        Ok(_) => Ok(client),
        Err(kube::Error::Api(status)) if status.code == 401 || status.code == 403 => {
            Err(ConnectError::Unauthorized { url, code: status.code, message: status.message })
        }
        Err(source) => Err(ConnectError::Unreachable { url, source }),
    }
}

/// Requests that may wait for the retry layer at once; more wait for a slot (the buffer makes kube's
/// boxed stack cloneable, which retrying needs).
const IN_FLIGHT: usize = 1024;

/// kube's client stack for `config`, with meshshift's bounded retries of transient failures
/// ([`crate::retry`]) in place of kube's own (which retries 429/503/504 up to 15 times, for up to 1000 s
/// a wait, whatever the request).
pub fn with_retries(mut config: Config, retry: RetryConfig) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&BufferLayer::new(IN_FLIGHT))
        .with_layer(&RetryLayer::new(ApiRetry::new(retry)))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How long `client`'s GET /version takes to fail.
    async fn fails_after(client: &Client) -> Duration {
        let began = Instant::now();
        assert!(client.apiserver_version().await.is_err());
        began.elapsed()
    }

    #[tokio::test]
    async fn refused_connections_fail_fast_until_the_apiserver_answered_then_are_retried_with_backoff() {
        let slow = Duration::from_millis(400);
        let retry = RetryConfig { attempts: 3, min_delay: slow, max_delay: slow };
        // Never answered: a wrong address fails at once.
        let nowhere = with_retries(Config::new("http://127.0.0.1:1".parse().expect("url")), retry).expect("client");
        assert!(fails_after(&nowhere).await < slow);
        // Answered once, then gone (an apiserver restarting): retried, two waits of at least half the backoff.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let body = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await.expect("answer");
        });
        let client = with_retries(Config::new(url.parse().expect("url")), retry).expect("client");
        client.apiserver_version().await.expect("the first answer");
        server.await.expect("server");
        assert!(fails_after(&client).await >= slow);
    }
}
