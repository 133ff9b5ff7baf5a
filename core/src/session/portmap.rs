//! Port mapping with NAT-PMP (RFC 6886) on the default gateway: the listen port is mapped for TCP
//! and UDP (uTP and the DHT), renewed at half its lifetime, and removed at exit
//! ([`remove_all`]). The gateway is the IPv4 default route's; with no default route (a
//! loopback-only namespace) nothing is sent.

use crate::natpmp::{self, Proto};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

/// Asked lifetime (the RFC's recommendation); renewed at half.
const LIFETIME: u32 = 7200;

/// Mappings made by this process: (gateway, protocol, internal port).
static ACTIVE: Mutex<Vec<(Ipv4Addr, Proto, u16)>> = Mutex::new(Vec::new());

/// The IPv4 default gateway from /proc/net/route.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let t = std::fs::read_to_string("/proc/net/route").ok()?;
    t.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Destination 0.0.0.0 with the gateway flag (0x2).
        if f.len() > 3 && f[1] == "00000000" && u16::from_str_radix(f[3], 16).ok()? & 2 != 0 {
            let g = u32::from_str_radix(f[2], 16).ok()?;
            Some(Ipv4Addr::from(g.swap_bytes()))
        } else {
            None
        }
    })
}

/// One request with the RFC's retries (250 ms, doubling; 4 tries here: about 4 s).
fn ask(sock: &UdpSocket, req: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 64];
    let mut wait = Duration::from_millis(250);
    for _ in 0..4 {
        sock.send(req)?;
        sock.set_read_timeout(Some(wait))?;
        match sock.recv(&mut buf) {
            Ok(n) => return Ok(buf[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                wait *= 2
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::ErrorKind::TimedOut.into())
}

fn socket(gw: Ipv4Addr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(SocketAddrV4::new(gw, natpmp::PORT))?;
    Ok(s)
}

/// Maps `port` for TCP and UDP on `gw`; returns the external address (external IP, TCP port).
/// Blocking (a few seconds at most): run it off the runtime.
pub fn map(gw: Ipv4Addr, port: u16) -> Result<SocketAddr, String> {
    let sock = socket(gw).map_err(|e| e.to_string())?;
    let ip = ask(&sock, &natpmp::external_address_request())
        .map_err(|e| format!("no NAT-PMP answer from {gw}: {e}"))?;
    let ip = natpmp::parse_external_address(&ip).map_err(|e| e.to_string())?;
    let mut external = port;
    for proto in [Proto::Tcp, Proto::Udp] {
        let r = ask(&sock, &natpmp::map_request(proto, port, port, LIFETIME))
            .map_err(|e| format!("no NAT-PMP answer from {gw}: {e}"))?;
        let (_, ext, _) = natpmp::parse_map(&r, proto).map_err(|e| e.to_string())?;
        if proto == Proto::Tcp {
            external = ext;
        }
        let mut a = ACTIVE.lock().unwrap();
        if !a.contains(&(gw, proto, port)) {
            a.push((gw, proto, port));
        }
    }
    Ok(SocketAddr::from((ip, external)))
}

/// Removes every mapping this process made (at exit; blocking, bounded).
pub fn remove_all() {
    let all: Vec<_> = std::mem::take(&mut *ACTIVE.lock().unwrap());
    for (gw, proto, port) in all {
        if let Ok(s) = socket(gw) {
            let _ = s.send(&natpmp::map_request(proto, port, 0, 0));
            let mut buf = [0u8; 64];
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = s.recv(&mut buf);
        }
    }
}

/// Keeps `port` mapped while the process runs: maps at once, renews at half the lifetime,
/// retries a failed gateway every few minutes. The external address goes to `report`.
pub(crate) async fn keep_mapped(port: u16, report: impl Fn(SocketAddr) + Send + 'static) {
    let Some(gw) = default_gateway() else {
        tracing::debug!("port mapping: no IPv4 default route");
        return;
    };
    loop {
        let r = tokio::task::spawn_blocking(move || map(gw, port))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let wait = match r {
            Ok(ext) => {
                tracing::info!("port mapping: reachable at {ext} (NAT-PMP on {gw})");
                report(ext);
                Duration::from_secs(LIFETIME as u64 / 2)
            }
            Err(e) => {
                tracing::info!("port mapping: {e}");
                Duration::from_secs(300)
            }
        };
        tokio::time::sleep(wait).await;
    }
}
