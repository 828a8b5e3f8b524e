//! Kubeconfig files for the lab.
//!
//! Written as JSON (a kubeconfig may be JSON: client-go and kube-rs both read it) with the CA, certificate
//! and key embedded as `*-data`, so a kubeconfig keeps working when copied elsewhere and needs no
//! YAML serializer.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::LabError;
use crate::pki::write_file;

/// The context (and cluster) name of every lab kubeconfig.
pub const CONTEXT: &str = "meshshift-lab";

/// A client-certificate kubeconfig with a single cluster, user and context.
#[derive(Debug, Clone)]
pub struct KubeconfigSpec<'a> {
    /// The apiserver URL (`https://127.0.0.1:<port>`).
    pub server: &'a str,
    /// The user entry's name.
    pub user: &'a str,
    /// PEM of the CA that signed the apiserver's certificate.
    pub ca_pem: &'a str,
    /// PEM of the client certificate.
    pub cert_pem: &'a str,
    /// PEM of the client key.
    pub key_pem: &'a str,
}

impl KubeconfigSpec<'_> {
    /// The kubeconfig document.
    pub fn render(&self) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": CONTEXT,
                "cluster": {
                    "server": self.server,
                    "certificate-authority-data": STANDARD.encode(self.ca_pem),
                }
            }],
            "users": [{
                "name": self.user,
                "user": {
                    "client-certificate-data": STANDARD.encode(self.cert_pem),
                    "client-key-data": STANDARD.encode(self.key_pem),
                }
            }],
            "contexts": [{
                "name": CONTEXT,
                "context": { "cluster": CONTEXT, "user": self.user }
            }],
            "current-context": CONTEXT,
        })
    }

    /// Writes the kubeconfig to `path` (mode 0600: it holds a private key).
    pub fn write(&self, path: &Path) -> Result<(), LabError> {
        let text = serde_json::to_string_pretty(&self.render())?;
        write_file(path, text.as_bytes(), 0o600)
    }

    /// Reads the PEM files and writes the kubeconfig to `path`.
    pub fn write_from_files(
        server: &str,
        user: &str,
        ca: &Path,
        cert: &Path,
        key: &Path,
        path: &Path,
    ) -> Result<(), LabError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| LabError::io("read", p, e));
        let (ca_pem, cert_pem, key_pem) = (read(ca)?, read(cert)?, read(key)?);
        KubeconfigSpec { server, user, ca_pem: &ca_pem, cert_pem: &cert_pem, key_pem: &key_pem }.write(path)
    }
}

/// Builds a kube client from a kubeconfig file (its current context). A new client each call: a client
/// holds connections bound to the tokio runtime that created it.
pub async fn client_from_file(path: &Path) -> Result<kube::Client, LabError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| LabError::Kubeconfig(format!("reading {}: {e}", path.display())))?;
    client_from(kubeconfig).await
}

/// Builds a kube client from a parsed kubeconfig (its current context).
pub async fn client_from(kubeconfig: kube::config::Kubeconfig) -> Result<kube::Client, LabError> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| LabError::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reads_what_we_write() {
        let spec = KubeconfigSpec {
            server: "https://127.0.0.1:1234",
            user: "meshshift-admin",
            ca_pem: "CA",
            cert_pem: "CERT",
            key_pem: "KEY",
        };
        let text = serde_json::to_string(&spec.render()).expect("json");
        let parsed = kube::config::Kubeconfig::from_yaml(&text).expect("kube parses JSON kubeconfigs");
        assert_eq!(parsed.current_context.as_deref(), Some(CONTEXT));
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:1234"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some(STANDARD.encode("CA").as_str()));
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(user.client_certificate_data.as_deref(), Some(STANDARD.encode("CERT").as_str()));
    }
}
