//! Host-side listeners: `127.0.0.1:<ephemeral>` sockets in the host's network namespace, opened long after
//! the supervisor moved into the lab's namespace.
//!
//! How: a socket belongs to the namespace of the thread that created it, forever. So a short-lived thread
//! enters the host namespace (`setns` on the `/proc/self/ns/net` descriptor the supervisor kept from before
//! its unshare), binds, hands the socket back and exits. Only that thread ever changes namespace; the
//! runtime's threads stay in the lab. Entering the host namespace needs CAP_SYS_ADMIN over it (root); an
//! unprivileged lab (user namespace) cannot, and then serves load balancers inside the namespace only.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};
use tokio::net::TcpListener;

use super::NetsvcError;

/// Opens host-side listeners, or knows that it cannot.
#[derive(Debug)]
pub(crate) struct HostNet {
    netns: Option<Arc<OwnedFd>>,
}

/// Why a host-side listener could not be opened.
#[derive(Debug)]
pub(crate) enum HostListenError {
    /// Host listeners are impossible in this lab (no descriptor, or `setns` refused): stop trying.
    Unavailable,
    /// This attempt failed; a later one may work.
    Failed(NetsvcError),
}

impl HostNet {
    /// Host listeners through `netns` (the supervisor's descriptor of the host namespace, if it has one).
    pub(crate) fn new(netns: Option<Arc<OwnedFd>>) -> Self {
        if netns.is_none() {
            tracing::warn!(
                "no descriptor of the host network namespace: load balancers are served inside the lab's \
                 namespace only (no 127.0.0.1 ports on the host)"
            );
        }
        HostNet { netns }
    }

    /// Binds `127.0.0.1:0` in the host namespace.
    pub(crate) async fn listen(&mut self) -> Result<TcpListener, HostListenError> {
        let Some(netns) = self.netns.clone() else {
            return Err(HostListenError::Unavailable);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new().name("netsvc-host-bind".into()).spawn(move || {
            let _ = tx.send(bind_in(&netns));
        });
        if let Err(err) = spawned {
            return Err(HostListenError::Failed(listen_error(err)));
        }
        let outcome = rx.await.map_err(|_| {
            HostListenError::Failed(listen_error(std::io::Error::other("the host-bind thread panicked")))
        })?;
        match outcome {
            Ok(listener) => TcpListener::from_std(listener).map_err(|e| HostListenError::Failed(listen_error(e))),
            Err(BindError::Setns(errno)) => {
                tracing::warn!(
                    %errno,
                    "cannot enter the host network namespace (an unprivileged lab cannot): load balancers are \
                     served inside the lab's namespace only (no 127.0.0.1 ports on the host)"
                );
                self.netns = None;
                Err(HostListenError::Unavailable)
            }
            Err(BindError::Io(err)) => Err(HostListenError::Failed(listen_error(err))),
        }
    }
}

enum BindError {
    Setns(nix::Error),
    Io(std::io::Error),
}

/// Runs on a throwaway thread: after `setns` this thread is in the host namespace and must not be reused.
fn bind_in(netns: &OwnedFd) -> Result<std::net::TcpListener, BindError> {
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(BindError::Setns)?;
    let listener = std::net::TcpListener::bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)))
        .map_err(BindError::Io)?;
    listener.set_nonblocking(true).map_err(BindError::Io)?;
    Ok(listener)
}

fn listen_error(source: std::io::Error) -> NetsvcError {
    NetsvcError::Listen { addr: "127.0.0.1:0 (host)".into(), source }
}
