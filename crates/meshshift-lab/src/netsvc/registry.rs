//! `<lab dir>/loadbalancers.json`: where each load balancer is reachable from the host.
//!
//! Why a file and not an annotation: meshshift compares user objects exactly before and after an upgrade,
//! so the lab must not write anything into a user's Service besides its status; and the host-side port is
//! a fact of the lab process, not of the cluster. The file is rewritten atomically (temporary file +
//! rename), so a reader never sees half of it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NetsvcError;

/// The registry's file name in the lab directory.
pub const FILE_NAME: &str = "loadbalancers.json";

/// One port of one load balancer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerEntry {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port.
    pub port: u16,
    /// The Service port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// The ingress IP (`status.loadBalancer.ingress[0].ip`), reachable only inside the lab's namespace.
    pub ingress_ip: Ipv4Addr,
    /// `127.0.0.1:<port>` on the host; `None` when the lab could not open host-side listeners (it needs to
    /// enter the host's network namespace, which an unprivileged lab cannot).
    #[serde(default)]
    pub host: Option<SocketAddr>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryFile {
    load_balancers: Vec<LoadBalancerEntry>,
}

/// Reads the load balancer registry of a lab.
#[derive(Debug, Clone, Copy)]
pub struct LoadBalancers;

impl LoadBalancers {
    /// The registry file of lab directory `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Every load balancer port of the lab in `dir`, sorted by namespace, name and port. Empty when the
    /// file does not exist (no service networking, or not started yet).
    pub fn read(dir: &Path) -> Result<Vec<LoadBalancerEntry>, NetsvcError> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(NetsvcError::io("read", path, err)),
        };
        let file: RegistryFile =
            serde_json::from_str(&text).map_err(|source| NetsvcError::Registry { path, source })?;
        Ok(file.load_balancers)
    }

    /// The entry of `namespace/name:port` among `entries`.
    pub fn find<'a>(
        entries: &'a [LoadBalancerEntry],
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Option<&'a LoadBalancerEntry> {
        entries.iter().find(|e| e.namespace == namespace && e.name == name && e.port == port)
    }

    /// The host address (`127.0.0.1:<port>`) of `namespace/name:port` in the lab in `dir`, if it has one.
    pub fn host_addr(dir: &Path, namespace: &str, name: &str, port: u16) -> Result<Option<SocketAddr>, NetsvcError> {
        Ok(Self::find(&Self::read(dir)?, namespace, name, port).and_then(|e| e.host))
    }
}

/// Writes the registry when its contents change.
#[derive(Debug)]
pub(crate) struct RegistryWriter {
    path: PathBuf,
    last: Option<Vec<LoadBalancerEntry>>,
}

impl RegistryWriter {
    /// A writer for lab directory `dir` (nothing is written yet).
    pub(crate) fn new(dir: &Path) -> Self {
        RegistryWriter { path: LoadBalancers::path(dir), last: None }
    }

    /// Writes `entries` (sorted) unless the file already holds exactly them.
    pub(crate) fn write(&mut self, mut entries: Vec<LoadBalancerEntry>) -> Result<(), NetsvcError> {
        entries.sort();
        if self.last.as_ref() == Some(&entries) {
            return Ok(());
        }
        let file = RegistryFile { load_balancers: entries };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|source| NetsvcError::Registry { path: self.path.clone(), source })?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text.as_bytes()).map_err(|e| NetsvcError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| NetsvcError::io("rename into place", &self.path, e))?;
        let entries = file.load_balancers.len();
        tracing::debug!(path = %self.path.display(), entries, "load balancer registry written");
        self.last = Some(file.load_balancers);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, port: u16, host: Option<&str>) -> LoadBalancerEntry {
        LoadBalancerEntry {
            namespace: "istio-system".into(),
            name: name.into(),
            port,
            port_name: Some("http2".into()),
            ingress_ip: Ipv4Addr::new(10, 250, 0, 1),
            host: host.map(|h| h.parse().expect("addr")),
        }
    }

    #[test]
    fn written_entries_read_back_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(LoadBalancers::read(dir.path()).expect("missing file").is_empty());
        let mut writer = RegistryWriter::new(dir.path());
        writer
            .write(vec![
                entry("gw", 443, Some("127.0.0.1:4001")),
                entry("gw", 80, Some("127.0.0.1:4000")),
                entry("b", 80, None),
            ])
            .expect("write");
        let read = LoadBalancers::read(dir.path()).expect("read");
        assert_eq!(
            read.iter().map(|e| (e.name.as_str(), e.port)).collect::<Vec<_>>(),
            vec![("b", 80), ("gw", 80), ("gw", 443)]
        );
        assert_eq!(
            LoadBalancers::host_addr(dir.path(), "istio-system", "gw", 443).expect("read"),
            Some("127.0.0.1:4001".parse().expect("addr"))
        );
        assert_eq!(LoadBalancers::host_addr(dir.path(), "istio-system", "b", 80).expect("read"), None);
        assert_eq!(LoadBalancers::host_addr(dir.path(), "istio-system", "gw", 8080).expect("read"), None);
        assert!(!dir.path().join("loadbalancers.json.tmp").exists());
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), "{").expect("write");
        assert!(matches!(LoadBalancers::read(dir.path()), Err(NetsvcError::Registry { .. })));
    }
}
