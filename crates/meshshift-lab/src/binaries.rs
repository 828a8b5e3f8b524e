//! Finding the control-plane executables.
//!
//! kube-apiserver, kube-controller-manager and kube-scheduler 1.20.2 are not shipped by any registry; they are
//! built and cached by `scripts/install-deps.sh`, which records their directory in
//! `$MESHSHIFT_CACHE/k8s-bin.path`. This module follows the same cache rules as the script so the test
//! handle and the supervisor always agree on which binaries run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::LabError;

/// The Kubernetes version the lab runs (what `scripts/install-deps.sh` builds).
pub const K8S_VERSION: &str = "1.20.2";

/// Overrides the directory of the Kubernetes binaries.
pub const K8S_BIN_ENV: &str = "MESHSHIFT_K8S_BIN";

const INSTALL_HINT: &str = "run scripts/install-deps.sh";
const ETCD_HINT: &str = "install it with `apt-get install etcd-server` or run scripts/install-deps.sh";

/// The executables of one control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// etcd (Debian's etcd-server).
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kube-scheduler.
    pub kube_scheduler: PathBuf,
}

impl Binaries {
    /// Locates and checks every executable. `bin_dir` is the directory of the Kubernetes binaries;
    /// `None` means [`find_k8s_bin_dir`]. etcd is taken from `bin_dir` if present there, else from `PATH`,
    /// else `/usr/bin/etcd`.
    pub fn locate(bin_dir: Option<&Path>) -> Result<Binaries, LabError> {
        let bin_dir = match bin_dir {
            Some(dir) => dir.to_path_buf(),
            None => find_k8s_bin_dir()?,
        };
        let k8s = |name: &'static str| -> Result<PathBuf, LabError> {
            let path = bin_dir.join(name);
            if is_executable(&path) {
                Ok(path)
            } else {
                Err(LabError::BinaryMissing { name, path, hint: INSTALL_HINT })
            }
        };
        Ok(Binaries {
            etcd: find_etcd(&bin_dir)?,
            kube_apiserver: k8s("kube-apiserver")?,
            kube_controller_manager: k8s("kube-controller-manager")?,
            kube_scheduler: k8s("kube-scheduler")?,
        })
    }
}

/// meshshift's cache directory, computed exactly like `scripts/install-deps.sh`:
/// `$MESHSHIFT_CACHE`, else `$XDG_CACHE_HOME/meshshift`, else `$HOME/.cache/meshshift`
/// (empty variables count as unset, as with the shell's `${VAR:-default}`).
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(|name| std::env::var_os(name))
}

/// [`cache_dir`] over an arbitrary environment (testable without touching the process environment).
fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("MESHSHIFT_CACHE") {
        return Some(dir);
    }
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|home| home.join(".cache")))?;
    Some(base.join("meshshift"))
}

/// The directory holding kube-apiserver, kube-controller-manager and kube-scheduler:
/// `$MESHSHIFT_K8S_BIN` if set, else the path recorded in `<cache>/k8s-bin.path` by the install script.
pub fn find_k8s_bin_dir() -> Result<PathBuf, LabError> {
    if let Some(dir) = std::env::var_os(K8S_BIN_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let Some(cache) = cache_dir() else {
        return Err(LabError::BinariesNotInstalled {
            version: K8S_VERSION,
            detail: format!("{K8S_BIN_ENV} is unset and neither MESHSHIFT_CACHE, XDG_CACHE_HOME nor HOME is set"),
        });
    };
    let record = cache.join("k8s-bin.path");
    match std::fs::read_to_string(&record) {
        Ok(text) if !text.trim().is_empty() => Ok(PathBuf::from(text.trim())),
        Ok(_) => Err(LabError::BinariesNotInstalled {
            version: K8S_VERSION,
            detail: format!("{} is empty", record.display()),
        }),
        Err(err) => Err(LabError::BinariesNotInstalled {
            version: K8S_VERSION,
            detail: format!("{K8S_BIN_ENV} is unset and {} cannot be read ({err})", record.display()),
        }),
    }
}

/// Finds an executable named `name` on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn find_etcd(bin_dir: &Path) -> Result<PathBuf, LabError> {
    let candidates = [Some(bin_dir.join("etcd")), which("etcd"), Some(PathBuf::from("/usr/bin/etcd"))];
    candidates.into_iter().flatten().find(|p| is_executable(p)).ok_or(LabError::BinaryMissing {
        name: "etcd",
        path: PathBuf::from("/usr/bin/etcd"),
        hint: ETCD_HINT,
    })
}

pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn cache_dir_follows_the_install_script() {
        let all = [("MESHSHIFT_CACHE", "/c"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_dir_from(env(&all)), Some(PathBuf::from("/c")));
        assert_eq!(cache_dir_from(env(&all[1..])), Some(PathBuf::from("/x/meshshift")));
        assert_eq!(cache_dir_from(env(&all[2..])), Some(PathBuf::from("/h/.cache/meshshift")));
        // Empty counts as unset, like ${VAR:-default}.
        let empty = [("MESHSHIFT_CACHE", ""), ("XDG_CACHE_HOME", ""), ("HOME", "/h")];
        assert_eq!(cache_dir_from(env(&empty)), Some(PathBuf::from("/h/.cache/meshshift")));
        assert_eq!(cache_dir_from(env(&[])), None);
    }

    #[test]
    fn a_missing_binary_names_the_install_script() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Binaries::locate(Some(dir.path())).expect_err("empty dir");
        assert!(err.to_string().contains("install-deps.sh"), "{err}");
    }
}
