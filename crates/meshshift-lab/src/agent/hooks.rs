//! preStop hooks: what runs between a pod's deletion and the "SIGTERM" ([`Lifecycle::Terminating`]) of a
//! container. The classic zero-downtime trick is a `sleep` here (the app keeps serving, unaware, while
//! endpoint removals propagate), so the lab honours it: an `exec` hook whose command is a `sleep N` (or a
//! shell running `sleep N` first) waits N seconds; an `httpGet` hook sends its request for real; any other
//! `exec` command is skipped (no processes to exec into). Hooks are bounded by the grace period.
//!
//! [`Lifecycle::Terminating`]: crate::containers::Lifecycle::Terminating

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;

use super::actions::{self, HttpTarget};

/// What a container's preStop hook does in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PreStop {
    /// No hook.
    None,
    /// Wait (an exec `sleep N`, or the `sleep` handler).
    Sleep(Duration),
    /// Send this request.
    Http(HttpTarget),
    /// Open a connection (the deprecated `tcpSocket` handler).
    Tcp(std::net::SocketAddrV4),
    /// Not emulated (an exec command other than sleep, an unusable spec): why.
    Skip(String),
}

/// The preStop hook of `container` in a pod with IP `pod_ip`.
pub(crate) fn pre_stop(container: &Container, pod_ip: Ipv4Addr) -> PreStop {
    let Some(handler) = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return PreStop::None;
    };
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match sleep_of_command(&command) {
            Some(d) => PreStop::Sleep(d),
            None => PreStop::Skip(format!("exec {command:?} is not emulated")),
        };
    }
    if let Some(http) = &handler.http_get {
        return actions::http_target(http, container, pod_ip)
            .map_or_else(|e| PreStop::Skip(e.to_string()), PreStop::Http);
    }
    if let Some(tcp) = &handler.tcp_socket {
        return actions::tcp_target(tcp, container, pod_ip).map_or_else(|e| PreStop::Skip(e.to_string()), PreStop::Tcp);
    }
    if let Some(sleep) = &handler.sleep {
        return PreStop::Sleep(Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0)));
    }
    PreStop::Skip("the handler has no action".into())
}

/// The duration of a `sleep` command: `["sleep", "5"]`, `["/bin/sleep", "5s"]`, or a shell
/// (`sh`/`bash`/... `-c`) whose script starts with `sleep N` (`"sleep 15 && kill 1"` sleeps 15 s, the rest is
/// not emulated).
pub(crate) fn sleep_of_command(command: &[String]) -> Option<Duration> {
    let program = command.first()?;
    let base = program.rsplit('/').next().unwrap_or(program);
    match base {
        "sleep" => sum_durations(command.get(1..)?.iter().map(String::as_str)),
        "sh" | "bash" | "ash" | "dash" | "zsh" | "busybox" => {
            let rest = &command[1..];
            // busybox sh -c ...
            let rest = if base == "busybox" { rest.strip_prefix(&["sh".to_owned()])? } else { rest };
            let script = match rest {
                [flag, script, ..] if flag == "-c" || flag == "-ec" || flag == "-ce" => script,
                _ => return None,
            };
            let first = script.split(['\n', ';', '&', '|']).next()?.trim();
            let mut words = first.split_whitespace();
            let sleep = words.next()?;
            (sleep == "sleep" || sleep.ends_with("/sleep")).then_some(())?;
            sum_durations(words)
        }
        _ => None,
    }
}

/// `sleep`'s arguments: numbers with an optional `s`, `m`, `h` or `d` suffix, summed (as GNU sleep does).
fn sum_durations<'a>(args: impl Iterator<Item = &'a str>) -> Option<Duration> {
    let mut total = 0f64;
    let mut any = false;
    for arg in args {
        let (number, unit) = match arg.char_indices().last()? {
            (i, 's') => (&arg[..i], 1.0),
            (i, 'm') => (&arg[..i], 60.0),
            (i, 'h') => (&arg[..i], 3600.0),
            (i, 'd') => (&arg[..i], 86_400.0),
            _ => (arg, 1.0),
        };
        let value: f64 = number.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
        total += value * unit;
        any = true;
    }
    (any && total < 1e9).then(|| Duration::from_secs_f64(total))
}

/// Runs a hook, giving up at `deadline` (the end of the grace period).
pub(crate) async fn run(hook: &PreStop, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let work = async {
        match hook {
            PreStop::None => Ok(()),
            PreStop::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            PreStop::Http(target) => actions::http_get(target, left).await.map(|_| ()).map_err(|e| e.to_string()),
            PreStop::Tcp(addr) => actions::tcp_connect(*addr, left).await.map_err(|e| e.to_string()),
            PreStop::Skip(why) => {
                tracing::debug!(why, "preStop hook skipped");
                Ok(())
            }
        }
    };
    match tokio::time::timeout(left, work).await {
        Ok(result) => result,
        Err(_) => Err("the grace period ended before the preStop hook finished".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn recognises_sleep_commands() {
        let secs = |w: &[&str]| sleep_of_command(&cmd(w));
        assert_eq!(secs(&["sleep", "5"]), Some(Duration::from_secs(5)));
        assert_eq!(secs(&["/bin/sleep", "1.5s"]), Some(Duration::from_millis(1500)));
        assert_eq!(secs(&["sleep", "1m", "30"]), Some(Duration::from_secs(90)));
        assert_eq!(secs(&["/bin/sh", "-c", "sleep 15"]), Some(Duration::from_secs(15)));
        assert_eq!(secs(&["sh", "-c", "  sleep 20 && kill -TERM 1"]), Some(Duration::from_secs(20)));
        assert_eq!(secs(&["bash", "-c", "sleep 3; nginx -s quit"]), Some(Duration::from_secs(3)));
        assert_eq!(secs(&["busybox", "sh", "-c", "/bin/sleep 2"]), Some(Duration::from_secs(2)));
        assert_eq!(secs(&["sh", "-c", "nginx -s quit; sleep 5"]), None, "sleep is not first");
        assert_eq!(secs(&["sleep"]), None);
        assert_eq!(secs(&["sleep", "forever"]), None);
        assert_eq!(secs(&["sleep", "-1"]), None);
        assert_eq!(secs(&["pilot-agent", "wait"]), None);
        assert_eq!(secs(&["sh", "sleep 5"]), None, "no -c");
        assert_eq!(secs(&[]), None);
    }

    #[test]
    fn reads_the_pre_stop_handler() {
        let container = |lifecycle: serde_json::Value| -> Container {
            serde_json::from_value(serde_json::json!({ "name": "app", "lifecycle": lifecycle })).expect("container")
        };
        let ip = Ipv4Addr::new(10, 244, 1, 9);
        let none: Container = serde_json::from_value(serde_json::json!({ "name": "app" })).expect("container");
        assert_eq!(pre_stop(&none, ip), PreStop::None);
        let sleep =
            container(serde_json::json!({ "preStop": { "exec": { "command": ["/bin/sh", "-c", "sleep 7"] } } }));
        assert_eq!(pre_stop(&sleep, ip), PreStop::Sleep(Duration::from_secs(7)));
        let other = container(serde_json::json!({ "preStop": { "exec": { "command": ["/usr/local/bin/drain"] } } }));
        assert!(matches!(pre_stop(&other, ip), PreStop::Skip(_)));
        let http = container(serde_json::json!({ "preStop": { "httpGet": { "port": 15000, "path": "/drain" } } }));
        assert!(matches!(pre_stop(&http, ip), PreStop::Http(t) if t.path == "/drain" && t.addr.ip() == &ip));
        let handler = container(serde_json::json!({ "preStop": { "sleep": { "seconds": 4 } } }));
        assert_eq!(pre_stop(&handler, ip), PreStop::Sleep(Duration::from_secs(4)));
    }

    #[tokio::test]
    async fn hooks_are_cut_at_the_deadline() {
        let begin = Instant::now();
        let result = run(&PreStop::Sleep(Duration::from_secs(60)), begin + Duration::from_millis(100)).await;
        assert!(result.is_err());
        assert!(begin.elapsed() < Duration::from_secs(1));
        let short = run(&PreStop::Sleep(Duration::from_millis(10)), Instant::now() + Duration::from_secs(5)).await;
        assert!(short.is_ok());
    }
}
