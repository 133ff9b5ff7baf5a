//! Tracker protocols as pure encode/decode: HTTP announce and scrape (BEP 3, compact peers BEP 23)
//! and UDP (BEP 15). The async client in [`crate::session`] does the I/O, retries and backoff.

use crate::bencode::{self, Value};
use crate::encoding::percent_encode;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker refused: {0}")]
    Failure(String),
    #[error("tracker reply is malformed: {0}")]
    Malformed(String),
    #[error("tracker URL {0:?} is not supported (use http:// or udp://)")]
    BadUrl(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    None,
    Started,
    Completed,
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Announce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    pub numwant: u32,
    pub key: u32,
    /// Our address as the internet sees it (a port mapping's), if known: sent as `ip` (BEP 3)
    /// and the announced port is the mapped one.
    pub external: Option<std::net::SocketAddrV4>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnounceReply {
    pub interval: u32,
    pub min_interval: Option<u32>,
    pub peers: Vec<SocketAddr>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub warning: Option<String>,
}

/// A parsed tracker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerUrl {
    Http {
        /// `https://`: TLS.
        tls: bool,
        host: String,
        port: u16,
        /// Path and any query, starting with `/`.
        path: String,
    },
    Udp {
        host: String,
        port: u16,
    },
}

impl TrackerUrl {
    /// The URL of `target` (a path and query from [`http_announce_target`]) on an HTTP tracker.
    pub fn http_url(&self, target: &str) -> Option<String> {
        match self {
            TrackerUrl::Http {
                tls, host, port, ..
            } => {
                let scheme = if *tls { "https" } else { "http" };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                Some(format!("{scheme}://{host}:{port}{target}"))
            }
            TrackerUrl::Udp { .. } => None,
        }
    }

    pub fn parse(url: &str) -> Result<TrackerUrl, TrackerError> {
        let bad = || TrackerError::BadUrl(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad());
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            // [v6] or [v6]:port
            let (h, rest) = v6.split_once(']').ok_or_else(bad)?;
            match rest.strip_prefix(':') {
                Some(p) => (h, Some(port_of(p)?)),
                None if rest.is_empty() => (h, None),
                None => return Err(bad()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(port_of(p)?)),
                None => (authority, None),
            }
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad());
        }
        match scheme {
            "http" | "https" => Ok(TrackerUrl::Http {
                tls: scheme == "https",
                host,
                port: port.unwrap_or(if scheme == "https" { 443 } else { 80 }),
                path: path.to_string(),
            }),
            "udp" => Ok(TrackerUrl::Udp {
                host,
                port: port.ok_or_else(bad)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// The request line target for an HTTP announce.
pub fn http_announce_target(path: &str, a: &Announce) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    let event = match a.event {
        Event::None => "",
        Event::Started => "&event=started",
        Event::Completed => "&event=completed",
        Event::Stopped => "&event=stopped",
    };
    let ip = a
        .external
        .map(|e| format!("&ip={}", e.ip()))
        .unwrap_or_default();
    format!(
        "{path}{sep}info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}{event}{ip}",
        percent_encode(&a.info_hash),
        percent_encode(&a.peer_id),
        a.external.map_or(a.port, |e| e.port()),
        a.uploaded,
        a.downloaded,
        a.left,
        a.numwant,
        a.key
    )
}

/// The scrape target for an announce path (BEP 48: replace the last `announce` with `scrape`).
pub fn http_scrape_target(path: &str, info_hash: &[u8; 20]) -> Option<String> {
    let (before_q, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let slash = before_q.rfind('/')?;
    let last = &before_q[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    let mut t = format!("{}/scrape{rest}", &before_q[..slash]);
    t.push('?');
    if let Some(q) = query {
        t.push_str(q);
        t.push('&');
    }
    t.push_str(&format!("info_hash={}", percent_encode(info_hash)));
    Some(t)
}

/// Splits an HTTP/1.x response into status and body (Content-Length, chunked, or to EOF).
pub fn http_response_body(resp: &[u8]) -> Result<(u16, Vec<u8>), TrackerError> {
    let bad = |m: &str| TrackerError::Malformed(m.to_string());
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("truncated HTTP headers"))?;
    let head = std::str::from_utf8(&resp[..end]).map_err(|_| bad("HTTP headers not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no HTTP status"))?;
    let mut content_length = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                content_length = v.trim().parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let body = &resp[end + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("truncated chunked body"))?;
            let size_s = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("bad chunk size"))?;
            let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size {
                return Err(bad("truncated chunked body"));
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        out
    } else if let Some(n) = content_length {
        if body.len() < n {
            return Err(bad("truncated HTTP body"));
        }
        body[..n].to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// Compact IPv4 peers (BEP 23): 6 bytes each.
pub fn parse_compact_v4(b: &[u8]) -> Vec<SocketAddr> {
    b.chunks_exact(6)
        .map(|c| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                u16::from_be_bytes([c[4], c[5]]),
            ))
        })
        .collect()
}

pub fn parse_compact_v6(b: &[u8]) -> Vec<SocketAddr> {
    b.chunks_exact(18)
        .map(|c| {
            let ip: [u8; 16] = c[..16].try_into().unwrap();
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                u16::from_be_bytes([c[16], c[17]]),
                0,
                0,
            ))
        })
        .collect()
}

/// A tracker reply's dictionary, or the tracker's own failure reason (escaped for terminals).
fn reply_dict<'a, 'b>(v: &'b Value<'a>) -> Result<&'b bencode::Dict<'a>, TrackerError> {
    let d = v
        .as_dict()
        .ok_or_else(|| TrackerError::Malformed("reply is not a dictionary".into()))?;
    if let Some(f) = d.get(b"failure reason") {
        return Err(TrackerError::Failure(
            crate::encoding::printable(f.as_str().unwrap_or("(unreadable reason)")).into_owned(),
        ));
    }
    Ok(d)
}

/// Parses a bencoded HTTP announce reply.
pub fn parse_announce_reply(body: &[u8]) -> Result<AnnounceReply, TrackerError> {
    let v =
        bencode::decode(body).map_err(|e| TrackerError::Malformed(format!("not bencode ({e})")))?;
    let d = reply_dict(&v)?;
    let int = |k: &[u8]| d.get(k).and_then(Value::as_int);
    let interval = int(b"interval")
        .filter(|i| *i >= 0)
        .ok_or_else(|| TrackerError::Malformed("no 'interval'".into()))?;
    let mut peers = Vec::new();
    match d.get(b"peers") {
        Some(Value::Bytes(b)) => {
            if !b.len().is_multiple_of(6) {
                return Err(TrackerError::Malformed(format!(
                    "compact peers of {} bytes (not a multiple of 6)",
                    b.len()
                )));
            }
            peers = parse_compact_v4(b);
        }
        Some(Value::List(l)) => {
            for p in l {
                let Some(pd) = p.as_dict() else { continue };
                let ip = pd.get(b"ip").and_then(Value::as_str);
                let port = pd.get(b"port").and_then(Value::as_int);
                if let (Some(ip), Some(port)) = (ip, port) {
                    if let (Ok(ip), Ok(port)) = (ip.parse(), u16::try_from(port)) {
                        peers.push(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        None => {}
        Some(_) => return Err(TrackerError::Malformed("'peers' has the wrong type".into())),
    }
    if let Some(b) = d.get(b"peers6").and_then(Value::as_bytes) {
        peers.extend(parse_compact_v6(b));
    }
    Ok(AnnounceReply {
        interval: interval.min(u32::MAX as i64) as u32,
        min_interval: int(b"min interval").map(|i| i.clamp(0, u32::MAX as i64) as u32),
        peers,
        seeders: int(b"complete").map(|i| i.clamp(0, u32::MAX as i64) as u32),
        leechers: int(b"incomplete").map(|i| i.clamp(0, u32::MAX as i64) as u32),
        warning: d
            .get(b"warning message")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// Scrape counts for one info-hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeCounts {
    pub complete: u32,
    pub downloaded: u32,
    pub incomplete: u32,
}

pub fn parse_scrape_reply(body: &[u8], info_hash: &[u8; 20]) -> Result<ScrapeCounts, TrackerError> {
    let v =
        bencode::decode(body).map_err(|e| TrackerError::Malformed(format!("not bencode ({e})")))?;
    let d = reply_dict(&v)?;
    let files = d
        .get(b"files")
        .and_then(Value::as_dict)
        .ok_or_else(|| TrackerError::Malformed("no 'files'".into()))?;
    let f = files
        .get(info_hash)
        .and_then(Value::as_dict)
        .ok_or_else(|| TrackerError::Malformed("torrent not in scrape reply".into()))?;
    let int = |k: &[u8]| {
        f.get(k)
            .and_then(Value::as_int)
            .map(|i| i.clamp(0, u32::MAX as i64) as u32)
            .unwrap_or(0)
    };
    Ok(ScrapeCounts {
        complete: int(b"complete"),
        downloaded: int(b"downloaded"),
        incomplete: int(b"incomplete"),
    })
}

// ---- UDP (BEP 15) ----

pub const UDP_MAGIC: u64 = 0x0417_2710_1980;

pub fn udp_connect_request(tid: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&UDP_MAGIC.to_be_bytes());
    b[8..12].copy_from_slice(&0u32.to_be_bytes());
    b[12..16].copy_from_slice(&tid.to_be_bytes());
    b
}

fn udp_check(b: &[u8], action: u32, tid: u32, min: usize) -> Result<(), TrackerError> {
    if b.len() >= 8 && u32::from_be_bytes(b[..4].try_into().unwrap()) == 3 {
        let msg = crate::encoding::printable(&String::from_utf8_lossy(&b[8..])).into_owned();
        return Err(TrackerError::Failure(msg));
    }
    if b.len() < min {
        return Err(TrackerError::Malformed(format!(
            "UDP reply of {} bytes (expected at least {min})",
            b.len()
        )));
    }
    let got_action = u32::from_be_bytes(b[..4].try_into().unwrap());
    let got_tid = u32::from_be_bytes(b[4..8].try_into().unwrap());
    if got_action != action || got_tid != tid {
        return Err(TrackerError::Malformed(
            "UDP reply for another request".into(),
        ));
    }
    Ok(())
}

/// Returns the connection id.
pub fn udp_parse_connect(b: &[u8], tid: u32) -> Result<u64, TrackerError> {
    udp_check(b, 0, tid, 16)?;
    Ok(u64::from_be_bytes(b[8..16].try_into().unwrap()))
}

pub fn udp_announce_request(conn: u64, tid: u32, a: &Announce) -> [u8; 98] {
    let mut b = [0u8; 98];
    b[..8].copy_from_slice(&conn.to_be_bytes());
    b[8..12].copy_from_slice(&1u32.to_be_bytes());
    b[12..16].copy_from_slice(&tid.to_be_bytes());
    b[16..36].copy_from_slice(&a.info_hash);
    b[36..56].copy_from_slice(&a.peer_id);
    b[56..64].copy_from_slice(&a.downloaded.to_be_bytes());
    b[64..72].copy_from_slice(&a.left.to_be_bytes());
    b[72..80].copy_from_slice(&a.uploaded.to_be_bytes());
    let ev: u32 = match a.event {
        Event::None => 0,
        Event::Completed => 1,
        Event::Started => 2,
        Event::Stopped => 3,
    };
    b[80..84].copy_from_slice(&ev.to_be_bytes());
    if let Some(e) = a.external {
        b[84..88].copy_from_slice(&e.ip().octets());
    }
    b[88..92].copy_from_slice(&a.key.to_be_bytes());
    b[92..96].copy_from_slice(&(a.numwant as i32).to_be_bytes());
    b[96..98].copy_from_slice(&a.external.map_or(a.port, |e| e.port()).to_be_bytes());
    b
}

/// A UDP announce reply; a tracker reached over IPv6 lists 18-byte IPv6 peers (BEP 15).
pub fn udp_parse_announce(b: &[u8], tid: u32, v6: bool) -> Result<AnnounceReply, TrackerError> {
    udp_check(b, 1, tid, 20)?;
    let be = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    let rest = &b[20..];
    let size = if v6 { 18 } else { 6 };
    if !rest.len().is_multiple_of(size) {
        return Err(TrackerError::Malformed(format!(
            "UDP peer list of {} bytes (not a multiple of {size})",
            rest.len()
        )));
    }
    Ok(AnnounceReply {
        interval: be(8),
        min_interval: None,
        leechers: Some(be(12)),
        seeders: Some(be(16)),
        peers: if v6 {
            parse_compact_v6(rest)
        } else {
            parse_compact_v4(rest)
        },
        warning: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann() -> Announce {
        Announce {
            info_hash: [0x12; 20],
            peer_id: *b"-CC0100-000000000000",
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Event::Started,
            numwant: 50,
            key: 0xdeadbeef,
            external: None,
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            TrackerUrl::parse("http://127.0.0.1:6969/announce").unwrap(),
            TrackerUrl::Http {
                tls: false,
                host: "127.0.0.1".into(),
                port: 6969,
                path: "/announce".into()
            }
        );
        let https = TrackerUrl::parse("https://[::1]/a?x=1").unwrap();
        assert_eq!(
            https.http_url("/a?x=1&info_hash=%00").unwrap(),
            "https://[::1]:443/a?x=1&info_hash=%00"
        );
        assert_eq!(
            TrackerUrl::parse("udp://[::1]:80").unwrap(),
            TrackerUrl::Udp {
                host: "::1".into(),
                port: 80
            }
        );
        assert!(TrackerUrl::parse("wss://x/announce").is_err());
        assert!(TrackerUrl::parse("udp://host").is_err());
        let t = http_announce_target("/announce", &ann());
        assert!(t.starts_with("/announce?info_hash=%12%12"));
        assert!(t.contains("&port=6881&") && t.ends_with("&event=started"));
        assert_eq!(
            http_scrape_target("/x/announce.php?k=1", &[0x41; 20]).unwrap(),
            format!("/x/scrape.php?k=1&info_hash={}", "A".repeat(20))
        );
        assert!(http_scrape_target("/x/track", &[0; 20]).is_none());
    }

    #[test]
    fn http_replies() {
        let body = b"d8:completei5e10:incompletei2e8:intervali1800e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x1a\xe2e";
        let r = parse_announce_reply(body).unwrap();
        assert_eq!(r.interval, 1800);
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:6882".parse().unwrap()
            ]
        );
        assert_eq!((r.seeders, r.leechers), (Some(5), Some(2)));
        let dict_peers = b"d8:intervali60e5:peersld2:ip9:127.0.0.14:porti80eeee";
        assert_eq!(parse_announce_reply(dict_peers).unwrap().peers.len(), 1);
        // A truncated reply is reported as such, never as a success.
        assert!(matches!(
            parse_announce_reply(b"d14:failure reason6:banned"),
            Err(TrackerError::Malformed(m)) if m.contains("truncated")
        ));
        assert_eq!(
            parse_announce_reply(b"d14:failure reason6:bannede").unwrap_err(),
            TrackerError::Failure("banned".into())
        );
        assert!(parse_announce_reply(b"d8:intervali60e5:peers5:abcdee").is_err());
        assert!(parse_announce_reply(b"<html>").is_err());
        let resp = b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nabcdEXTRA";
        assert_eq!(http_response_body(resp).unwrap(), (200, b"abcd".to_vec()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(http_response_body(chunked).unwrap().1, b"abcde");
        assert!(http_response_body(b"HTTP/1.0 200 OK\r\nContent-Length: 40\r\n\r\nabc").is_err());
        assert!(http_response_body(b"HTTP/1.0 200").is_err());
    }

    #[test]
    fn udp_packets() {
        let c = udp_connect_request(7);
        assert_eq!(&c[..8], &[0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80]);
        let mut reply = vec![0, 0, 0, 0, 0, 0, 0, 7];
        reply.extend_from_slice(&42u64.to_be_bytes());
        assert_eq!(udp_parse_connect(&reply, 7).unwrap(), 42);
        assert!(udp_parse_connect(&reply, 8).is_err());
        assert!(udp_parse_connect(&reply[..10], 7).is_err());
        let a = udp_announce_request(42, 9, &ann());
        assert_eq!(&a[8..12], &[0, 0, 0, 1]);
        assert_eq!(&a[96..98], &6881u16.to_be_bytes());
        let mut ar = vec![0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0, 2];
        ar.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        let r = udp_parse_announce(&ar, 9, false).unwrap();
        assert_eq!(r.interval, 60);
        assert_eq!(r.peers.len(), 1);
        ar.push(1);
        assert!(udp_parse_announce(&ar, 9, false).is_err());
        // The same 19 peer bytes read as IPv6: one 18-byte peer and a stray byte.
        assert!(udp_parse_announce(&ar, 9, true).is_err());
        ar.truncate(20);
        ar.extend_from_slice(&[0u8; 15]);
        ar.extend_from_slice(&[1, 0x1a, 0xe1]); // [::1]:6881
        let v6 = udp_parse_announce(&ar, 9, true).unwrap();
        assert_eq!(v6.peers, vec!["[::1]:6881".parse().unwrap()]);
        let mut err = vec![0, 0, 0, 3, 0, 0, 0, 9];
        err.extend_from_slice(b"not allowed");
        assert_eq!(
            udp_parse_announce(&err, 9, false).unwrap_err(),
            TrackerError::Failure("not allowed".into())
        );
    }
}
