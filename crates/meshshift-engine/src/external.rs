//! External installers (helm, istioctl), run as the user would run them: the same kubeconfig and
//! context meshshift uses, output captured, a failure reported with the command and its stderr.

use std::path::PathBuf;

use tokio::process::Command;

use crate::context::Ctx;
use crate::error::EngineError;

/// The binary for `tool` (`helm`, `istioctl`): `$MESHSHIFT_HELM` / `$MESHSHIFT_ISTIOCTL`, else on PATH.
pub fn binary(tool: &str) -> PathBuf {
    let var = format!("MESHSHIFT_{}", tool.to_uppercase());
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(tool))
}

/// The kubeconfig flags of `tool` for the run's cluster.
fn cluster_flags(ctx: &Ctx, tool: &str) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(k) = &ctx.options.kubeconfig {
        flags.extend(["--kubeconfig".to_owned(), k.display().to_string()]);
    }
    if let Some(c) = &ctx.options.context {
        let flag = if tool == "helm" { "--kube-context" } else { "--context" };
        flags.extend([flag.to_owned(), c.clone()]);
    }
    flags
}

/// Runs `tool args...` against the run's cluster; its stdout on success.
pub async fn run(ctx: &Ctx, tool: &str, args: &[String]) -> Result<String, EngineError> {
    let bin = binary(tool);
    let mut all: Vec<String> = args.to_vec();
    all.extend(cluster_flags(ctx, tool));
    let shown = format!("{} {}", bin.display(), all.join(" "));
    ctx.detail(format!("running {shown}"));
    let out = Command::new(&bin).args(&all).output().await.map_err(|e| EngineError::Tool {
        command: shown.clone(),
        detail: format!("cannot run it ({e}); install {tool} or point $MESHSHIFT_{} at it", tool.to_uppercase()),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(EngineError::Tool {
            command: shown,
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        })
    }
}

/// Whether `tool args...` succeeds (e.g. `helm status`, to tell whether a release exists).
pub async fn succeeds(ctx: &Ctx, tool: &str, args: &[String]) -> Result<bool, EngineError> {
    match run(ctx, tool, args).await {
        Ok(_) => Ok(true),
        Err(EngineError::Tool { detail, .. }) if !detail.starts_with("cannot run") => Ok(false),
        Err(e) => Err(e),
    }
}
