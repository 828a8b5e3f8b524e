//! Connecting to a cluster like kubectl: `--kubeconfig`, `KUBECONFIG`, `~/.kube/config`, `--context`.
//!
//! Every way this can fail gets its own variant, because the CLI maps them to distinct exit codes and
//! to messages that say what to do (a typo in a context name and an unreachable cluster need different
//! fixes).

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

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
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| ConnectError::Unreachable { url: url.clone(), source })?;
    match client.apiserver_version().await {
        Ok(_) => Ok(client),
        Err(kube::Error::Api(status)) if status.code == 401 || status.code == 403 => {
            Err(ConnectError::Unauthorized { url, code: status.code, message: status.message })
        }
        Err(source) => Err(ConnectError::Unreachable { url, source }),
    }
}
