//! The one way a peer connection starts, for torrents, share swarms and metadata fetches alike:
//! dial or accept a [`PeerStream`], then the BEP 3 handshake. A peer stream is TCP today; uTP and
//! MSE/PE encryption wrap here, so everything above sees the same stream.

use crate::wire::{Handshake, HANDSHAKE_LEN};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connection to a peer, before or after its handshake.
pub(crate) type PeerStream = TcpStream;

/// How long a peer has to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Dials a peer.
pub(crate) async fn connect(addr: SocketAddr, within: Duration) -> Result<PeerStream, String> {
    let s = tokio::time::timeout(within, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Accepts the next incoming peer (transient accept errors, such as too many open files, wait a
/// moment instead of ending the listener).
pub(crate) async fn accept(l: &TcpListener) -> (PeerStream, SocketAddr) {
    loop {
        match l.accept().await {
            Ok((s, a)) => {
                let _ = s.set_nodelay(true);
                return (s, a);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads the peer's handshake (bounded in time).
pub(crate) async fn read_handshake(s: &mut PeerStream) -> Result<Handshake, String> {
    let mut hs = [0u8; HANDSHAKE_LEN];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, s.read_exact(&mut hs))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Handshake::decode(&hs).map_err(|e| e.to_string())
}

/// Our side of the handshake: sends ours and, for a connection we dialed (`theirs` unknown),
/// reads the peer's and checks it answered for the same torrent.
pub(crate) async fn handshake(
    s: &mut PeerStream,
    ours: &Handshake,
    theirs: Option<Handshake>,
) -> Result<Handshake, String> {
    s.write_all(&ours.encode())
        .await
        .map_err(|e| e.to_string())?;
    let h = match theirs {
        Some(h) => h,
        None => read_handshake(s).await?,
    };
    if h.info_hash != ours.info_hash {
        return Err("peer answered for another torrent".into());
    }
    Ok(h)
}
