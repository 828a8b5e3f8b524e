//! The host's door into the namespace.
//!
//! The listening socket is bound *before* the supervisor unshares its network namespace, so it stays in
//! the host namespace; connections accepted on it are relayed, byte for byte, to the apiserver inside.
//! TLS passes through untouched: clients verify the apiserver's own certificate (it has a `127.0.0.1` SAN).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::LabError;

/// Converts the host-side listener for use on the supervisor's runtime.
pub(crate) fn into_tokio(listener: std::net::TcpListener) -> Result<TcpListener, LabError> {
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|e| LabError::io("register the host listener of", "127.0.0.1", e))
}

/// Accepts forever, relaying every connection to `target` (inside the namespace).
pub(crate) async fn serve(listener: TcpListener, target: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((inbound, peer)) => {
                tokio::spawn(async move {
                    if let Err(err) = relay(inbound, target).await {
                        tracing::debug!(%peer, %err, "forwarded connection ended with an error");
                    }
                });
            }
            Err(err) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(%err, "accept failed on the host listener");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn relay(mut inbound: TcpStream, target: SocketAddr) -> std::io::Result<()> {
    let mut outbound = TcpStream::connect(target).await?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await?;
    Ok(())
}
