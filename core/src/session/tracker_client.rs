//! Async tracker clients over the pure formats in [`crate::tracker`]: HTTP and HTTPS through
//! reqwest on rustls (redirects, compression, chunked and keep-alive replies; the system's CA
//! store, or the file `SSL_CERT_FILE` names) and BEP 15 UDP, each bounded by timeouts.

use crate::tracker::{self, Announce, AnnounceReply, TrackerError, TrackerUrl};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::{lookup_host, UdpSocket};
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

/// The one HTTP client (its connection pool keeps tracker and web seed connections alive).
pub(crate) fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .user_agent(concat!("ccbt/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("the HTTP client's settings are valid")
    })
}

/// One line for an HTTP failure: reqwest's message and its causes (a certificate error is deep
/// in the chain), without the URL (the caller names what failed; a query string is noise), with
/// a hint when it is the certificate.
pub(crate) fn http_error(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut msg = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(&e);
    while let Some(c) = cur {
        let t = c.to_string();
        if !msg.contains(&t) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&t);
        }
        cur = c.source();
    }
    let msg = crate::encoding::printable(&msg).into_owned();
    if msg.contains("certificate") || msg.contains("UnknownIssuer") {
        format!(
            "TLS certificate not accepted ({msg}); if the server uses a private CA, point SSL_CERT_FILE at the CA's certificate"
        )
    } else if timeout {
        "timed out".to_string()
    } else {
        msg
    }
}

/// One HTTP(S) GET: the status and body, at most `limit` bytes (decompressed); `range` asks for
/// those bytes (inclusive).
pub(crate) async fn http_get(
    url: &str,
    range: Option<(u64, u64)>,
    limit: usize,
) -> Result<(u16, Vec<u8>), String> {
    let mut req = http_client().get(url);
    if let Some((from, to)) = range {
        // Compression and ranges do not mix (nginx drops the range to gzip the whole file).
        req = req
            .header(reqwest::header::RANGE, format!("bytes={from}-{to}"))
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
    }
    let mut resp = req.send().await.map_err(http_error)?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http_error)? {
        if body.len() + chunk.len() > limit {
            return Err(format!("reply larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

async fn tracker_get(t: &TrackerUrl, target: &str) -> Result<Vec<u8>, AnnounceError> {
    let url = t.http_url(target).expect("an HTTP tracker");
    let (status, body) = http_get(&url, None, MAX_REPLY)
        .await
        .map_err(AnnounceError::Io)?;
    if status != 200 {
        return Err(AnnounceError::Io(format!("answered HTTP {status}")));
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
        t @ TrackerUrl::Http { .. } => {
            let TrackerUrl::Http { path, .. } = &t else {
                unreachable!()
            };
            let body = tracker_get(&t, &tracker::http_announce_target(path, a)).await?;
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
            Ok(tracker::udp_parse_announce(&r, tid, addr.is_ipv6())?)
        }
    }
}

/// HTTP scrape (BEP 48).
pub async fn scrape(
    url: &str,
    info_hash: &[u8; 20],
) -> Result<tracker::ScrapeCounts, AnnounceError> {
    match TrackerUrl::parse(url)? {
        t @ TrackerUrl::Http { .. } => {
            let TrackerUrl::Http { path, .. } = &t else {
                unreachable!()
            };
            let target = tracker::http_scrape_target(path, info_hash).ok_or_else(|| {
                AnnounceError::Io(format!(
                    "{url} does not support scrape (path has no 'announce')"
                ))
            })?;
            let body = tracker_get(&t, &target).await?;
            Ok(tracker::parse_scrape_reply(&body, info_hash)?)
        }
        TrackerUrl::Udp { .. } => Err(AnnounceError::Io("UDP scrape not implemented".into())),
    }
}
