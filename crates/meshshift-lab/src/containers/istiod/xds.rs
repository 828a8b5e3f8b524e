//! The config stream (the lab's xDS, see [`crate::containers::protocol`]) on port 15012.
//!
//! A proxy is admitted when it belongs to this istiod (its revision, or a tag pointing at it) and Istio
//! supports its version with this control plane (`meshshift_core::path::proxy_supported`: same minor or
//! one behind). An admitted proxy gets the current config at once, every new one, and a ping a second.
//! When istiod terminates it closes every stream: proxies keep their last config but go unready, which
//! is exactly what a too-early control-plane removal does to a real mesh.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use meshshift_core::path::proxy_supported;
use meshshift_core::version::IstioVersion;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::identity::Istiod;
use super::patcher::KnownTags;
use super::ready::Stats;
use crate::containers::protocol::{ClientMessage, ConfigSnapshot, ServerMessage};

/// How long a proxy may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Ping period.
const PING_EVERY: Duration = Duration::from_secs(1);
/// A proxy that does not take a message within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a stream needs from the rest of istiod.
#[derive(Clone)]
pub struct XdsContext {
    /// Who we are.
    pub istiod: Arc<Istiod>,
    /// Tags pointing at this revision (`None` until known).
    pub tags: watch::Receiver<KnownTags>,
    /// The current config (`None` until the watches synced).
    pub config: watch::Receiver<Option<Arc<ConfigSnapshot>>>,
    /// Counters.
    pub stats: Arc<Stats>,
}

/// Whether a proxy of `revision` and `version` may use this istiod; `Err` holds the reason.
pub fn admit(istiod: &Istiod, tags: &BTreeSet<String>, revision: &str, version: &str) -> Result<(), String> {
    if !istiod.serves_revision(revision, tags) {
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(" (tags: {})", tags.iter().cloned().collect::<Vec<_>>().join(", "))
        };
        return Err(format!(
            "proxy revision {revision:?} is not served by istiod revision {:?}{tags}",
            istiod.revision
        ));
    }
    let proxy = IstioVersion::parse(version).map_err(|e| format!("proxy version {version:?} is not a version: {e}"))?;
    let skew = proxy_supported(&istiod.version, &proxy);
    if !skew.is_supported() {
        return Err(format!("proxy {proxy} is not supported by istiod {}: {skew}", istiod.version));
    }
    Ok(())
}

/// Serves streams until `stop`, then closes them all.
pub async fn serve(listener: TcpListener, ctx: XdsContext, stop: CancellationToken) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    sessions.spawn(session(stream, ctx.clone(), stop.clone()));
                }
                Err(err) => {
                    tracing::warn!(%err, "config stream accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(revision = %ctx.istiod.revision, streams = sessions.len(), "closing config streams");
    while sessions.join_next().await.is_some() {}
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, message: &ServerMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&line)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "proxy does not read")),
    }
}

async fn session(stream: TcpStream, mut ctx: XdsContext, stop: CancellationToken) {
    let peer = stream.peer_addr().ok();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) => serde_json::from_str::<ClientMessage>(&line).map_err(|e| e.to_string()),
        Ok(Ok(None)) => return,
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no hello".to_owned()),
    };
    let (revision, version, pod, kind) = match hello {
        Ok(ClientMessage::Hello { revision, version, pod, kind }) => (revision, version, pod, kind),
        Err(reason) => {
            tracing::info!(?peer, reason, "bad config stream opening");
            let _ = send(&mut write, &ServerMessage::Rejected { reason: format!("expected a hello: {reason}") }).await;
            return;
        }
    };
    // A proxy of a tag may connect before istiod has listed the tag webhooks: give it that long.
    let waited = tokio::time::timeout(HELLO_TIMEOUT, ctx.tags.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|tags| tags.clone());
    let tags = waited.unwrap_or_default();
    let verdict = admit(&ctx.istiod, &tags, &revision, &version);
    ctx.stats.count_hello(verdict.is_ok());
    if let Err(reason) = verdict {
        tracing::warn!(pod, revision, version, reason, "rejected proxy");
        let _ = send(&mut write, &ServerMessage::Rejected { reason }).await;
        let _ = write.shutdown().await;
        return;
    }
    tracing::info!(pod, ?kind, revision, version, istiod = %ctx.istiod.revision, "proxy connected");
    let accepted =
        ServerMessage::Accepted { revision: ctx.istiod.revision.clone(), version: ctx.istiod.version.to_string() };
    let outcome = stream_config(&mut write, &mut lines, &mut ctx, &stop, accepted).await;
    ctx.stats.count_disconnect();
    let _ = write.shutdown().await;
    tracing::info!(pod, reason = outcome, "proxy disconnected");
}

/// Sends `accepted`, then config and pings until the proxy leaves or istiod stops; says why it ended.
async fn stream_config<W, R>(
    write: &mut W,
    lines: &mut tokio::io::Lines<R>,
    ctx: &mut XdsContext,
    stop: &CancellationToken,
    accepted: ServerMessage,
) -> &'static str
where
    W: AsyncWrite + Unpin,
    R: tokio::io::AsyncBufRead + Unpin,
{
    if send(write, &accepted).await.is_err() {
        return "write failed";
    }
    let current = ctx.config.borrow_and_update().clone();
    if let Some(snapshot) = current {
        if send(write, &ServerMessage::Config((*snapshot).clone())).await.is_err() {
            return "write failed";
        }
        ctx.stats.count_push();
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return "istiod is terminating",
            changed = ctx.config.changed() => {
                if changed.is_err() {
                    return "istiod stopped";
                }
                let current = ctx.config.borrow_and_update().clone();
                if let Some(snapshot) = current {
                    if send(write, &ServerMessage::Config((*snapshot).clone())).await.is_err() {
                        return "write failed";
                    }
                    ctx.stats.count_push();
                }
            }
            _ = ping.tick() => {
                if send(write, &ServerMessage::Ping).await.is_err() {
                    return "write failed";
                }
            }
            line = lines.next_line() => match line {
                Ok(Some(_)) => {} // nothing else is defined from proxies yet
                Ok(None) => return "proxy closed the stream",
                Err(_) => return "read failed",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn istiod(version: &str, revision: &str) -> Istiod {
        Istiod {
            version: IstioVersion::parse(version).expect("v"),
            revision: revision.into(),
            namespace: "istio-system".into(),
        }
    }

    #[test]
    fn admission_follows_revision_tags_and_skew() {
        let id = istiod("1.10.6", "1-10-6");
        let tags = BTreeSet::from(["prod".to_owned()]);
        assert_eq!(admit(&id, &tags, "1-10-6", "1.10.6"), Ok(()));
        assert_eq!(admit(&id, &tags, "prod", "1.9.7"), Ok(()), "one minor behind is supported");
        let err = admit(&id, &tags, "1-9-7", "1.9.7").expect_err("other revision");
        assert!(err.contains("not served") && err.contains("prod"), "{err}");
        let err = admit(&id, &tags, "1-10-6", "1.8.6").expect_err("too old");
        assert!(err.contains("2 minors behind"), "{err}");
        let err = admit(&istiod("1.9.7", "1-9-7"), &tags, "1-9-7", "1.10.6").expect_err("newer proxy");
        assert!(err.contains("ahead"), "{err}");
        assert!(admit(&id, &tags, "1-10-6", "latest").is_err());
    }

    #[tokio::test]
    async fn a_stream_gets_accepted_config_pings_and_is_closed_on_stop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_tags_tx, tags) = watch::channel(Some(BTreeSet::new()));
        let first = ConfigSnapshot { generation: 1, ..Default::default() };
        let (config_tx, config) = watch::channel(Some(Arc::new(first)));
        let stats = Arc::new(Stats::default());
        let ctx = XdsContext { istiod: Arc::new(istiod("1.9.7", "1-9-7")), tags, config, stats: stats.clone() };
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, ctx, stop.clone()));

        let hello = |revision: &str, version: &str| {
            let msg = ClientMessage::Hello {
                revision: revision.into(),
                version: version.into(),
                pod: "apps/web-1".into(),
                kind: crate::containers::protocol::ProxyKind::Sidecar,
            };
            format!("{}\n", serde_json::to_string(&msg).expect("json"))
        };
        async fn next(
            lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
        ) -> Option<ServerMessage> {
            let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
                .await
                .expect("timely")
                .expect("read")?;
            Some(serde_json::from_str(&line).expect("message"))
        }

        // Rejected: too old.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(hello("1-9-7", "1.7.0").as_bytes()).await.expect("hello");
        let (read, _write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        assert!(matches!(next(&mut lines).await, Some(ServerMessage::Rejected { .. })));
        assert!(next(&mut lines).await.is_none(), "closed after rejecting");

        // Accepted.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(hello("1-9-7", "1.9.7").as_bytes()).await.expect("hello");
        let (read, _write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        assert_eq!(
            next(&mut lines).await,
            Some(ServerMessage::Accepted { revision: "1-9-7".into(), version: "1.9.7".into() })
        );
        assert!(matches!(next(&mut lines).await, Some(ServerMessage::Config(c)) if c.generation == 1));
        config_tx.send_replace(Some(Arc::new(ConfigSnapshot { generation: 2, ..Default::default() })));
        let mut saw = (false, false);
        while saw != (true, true) {
            match next(&mut lines).await {
                Some(ServerMessage::Config(c)) => {
                    assert_eq!(c.generation, 2);
                    saw.0 = true;
                }
                Some(ServerMessage::Ping) => saw.1 = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(stats.connected(), 1);
        stop.cancel();
        loop {
            match next(&mut lines).await {
                Some(ServerMessage::Ping | ServerMessage::Config(_)) => continue,
                None => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("server stops").expect("join");
        assert_eq!(stats.connected(), 0);
        assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
    }
}
