//! Async tracker clients over the pure formats in [`crate::tracker`]: HTTP/1.0 GET (no TLS: HTTPS
//! trackers get a clear error) and BEP 15 UDP, each bounded by timeouts.

use crate::tracker::{self, Announce, AnnounceReply, TrackerError, TrackerUrl};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{lookup_host, TcpStream, UdpSocket};
use tokio::time::timeout;

/// Largest HTTP tracker reply read (a reply with 10 000 peers is ~60 KiB).
const MAX_REPLY: usize = 2 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error("{0}")]
    Io(String),
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, AnnounceError> {
    lookup_host((host, port))
        .await
        .map_err(|e| AnnounceError::Io(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| AnnounceError::Io(format!("{host} has no address")))
}

/// One HTTP GET; returns the body of a 200 reply.
async fn http_get(host: &str, port: u16, target: &str) -> Result<Vec<u8>, AnnounceError> {
    let addr = resolve(host, port).await?;
    let io = |e: std::io::Error| AnnounceError::Io(format!("tracker {host}:{port}: {e}"));
    let mut s = timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| AnnounceError::Io(format!("tracker {host}:{port}: connect timed out")))?
        .map_err(io)?;
    let req = format!(
        "GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: ccbt/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 16384];
        loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 || buf.len() + n > MAX_REPLY {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    timeout(Duration::from_secs(15), read)
        .await
        .map_err(|_| AnnounceError::Io(format!("tracker {host}:{port}: reply timed out")))?
        .map_err(io)?;
    let (status, body) = tracker::http_response_body(&buf)?;
    if status != 200 {
        return Err(AnnounceError::Io(format!(
            "tracker {host}:{port} answered HTTP {status}"
        )));
    }
    Ok(body)
}

async fn udp_exchange(sock: &UdpSocket, req: &[u8], tries: u32) -> Result<Vec<u8>, AnnounceError> {
    let mut buf = vec![0u8; 65536];
    for n in 0..tries {
        sock.send(req)
            .await
            .map_err(|e| AnnounceError::Io(format!("UDP tracker: {e}")))?;
        // BEP 15 says 15 * 2^n s; trackers on a LAN answer in milliseconds, so start lower.
        let wait = Duration::from_millis(1500 << n);
        if let Ok(r) = timeout(wait, sock.recv(&mut buf)).await {
            let len = r.map_err(|e| AnnounceError::Io(format!("UDP tracker: {e}")))?;
            return Ok(buf[..len].to_vec());
        }
    }
    Err(AnnounceError::Io("UDP tracker did not answer".into()))
}

pub async fn announce(url: &str, a: &Announce) -> Result<AnnounceReply, AnnounceError> {
    match TrackerUrl::parse(url)? {
        TrackerUrl::Http { host, port, path } => {
            let body = http_get(&host, port, &tracker::http_announce_target(&path, a)).await?;
            Ok(tracker::parse_announce_reply(&body)?)
        }
        TrackerUrl::Udp { host, port } => {
            let addr = resolve(&host, port).await?;
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let sock = UdpSocket::bind(bind)
                .await
                .map_err(|e| AnnounceError::Io(format!("UDP: {e}")))?;
            sock.connect(addr)
                .await
                .map_err(|e| AnnounceError::Io(format!("UDP tracker {addr}: {e}")))?;
            let tid: u32 = rand::random();
            let r = udp_exchange(&sock, &tracker::udp_connect_request(tid), 3).await?;
            let conn = tracker::udp_parse_connect(&r, tid)?;
            let tid: u32 = rand::random();
            let r = udp_exchange(&sock, &tracker::udp_announce_request(conn, tid, a), 3).await?;
            Ok(tracker::udp_parse_announce(&r, tid)?)
        }
    }
}

/// HTTP scrape (BEP 48).
pub async fn scrape(
    url: &str,
    info_hash: &[u8; 20],
) -> Result<tracker::ScrapeCounts, AnnounceError> {
    match TrackerUrl::parse(url)? {
        TrackerUrl::Http { host, port, path } => {
            let target = tracker::http_scrape_target(&path, info_hash).ok_or_else(|| {
                AnnounceError::Io(format!(
                    "{url} does not support scrape (path has no 'announce')"
                ))
            })?;
            let body = http_get(&host, port, &target).await?;
            Ok(tracker::parse_scrape_reply(&body, info_hash)?)
        }
        TrackerUrl::Udp { .. } => Err(AnnounceError::Io("UDP scrape not implemented".into())),
    }
}
