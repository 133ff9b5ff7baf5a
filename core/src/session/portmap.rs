//! Port mapping on the home router: the listen port is mapped for TCP and UDP (uTP and the DHT)
//! with the first protocol the gateway answers, in the configured order (default PCP, NAT-PMP,
//! UPnP IGD), renewed at half its lifetime, and removed at exit ([`remove_all`]). PCP and NAT-PMP
//! go to the IPv4 default route's gateway; UPnP finds its gateway with SSDP. With no default
//! route (a loopback-only namespace) nothing is sent at all.

use crate::natpmp::{self, Proto};
use crate::pcp;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

/// Asked lifetime (the RFCs' recommendation); renewed at half.
const LIFETIME: u32 = 7200;

/// A port mapping protocol, in the order `[network] port_mapping_protocols` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pcp,
    NatPmp,
    Upnp,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Pcp, Method::NatPmp, Method::Upnp];

    pub fn name(self) -> &'static str {
        match self {
            Method::Pcp => "PCP",
            Method::NatPmp => "NAT-PMP",
            Method::Upnp => "UPnP",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        match s.to_ascii_lowercase().as_str() {
            "pcp" => Ok(Method::Pcp),
            "natpmp" | "nat-pmp" => Ok(Method::NatPmp),
            "upnp" | "igd" => Ok(Method::Upnp),
            _ => Err(format!(
                "unknown port mapping protocol {s:?} (use pcp, natpmp or upnp)"
            )),
        }
    }
}

/// A mapping this process holds, with what it takes to remove it.
#[derive(Debug, Clone)]
enum Active {
    Pcp {
        gw: Ipv4Addr,
        client: Ipv4Addr,
        proto: Proto,
        port: u16,
    },
    NatPmp {
        gw: Ipv4Addr,
        proto: Proto,
        port: u16,
    },
    Upnp {
        gw: Box<igd_next::Gateway>,
        proto: Proto,
        external: u16,
    },
}

impl Active {
    fn key(&self) -> (Method, Proto, u16) {
        match self {
            Active::Pcp { proto, port, .. } => (Method::Pcp, *proto, *port),
            Active::NatPmp { proto, port, .. } => (Method::NatPmp, *proto, *port),
            Active::Upnp {
                proto, external, ..
            } => (Method::Upnp, *proto, *external),
        }
    }
}

/// Mappings made by this process (only added to and drained; no lock is held across I/O).
static ACTIVE: Mutex<Vec<Active>> = Mutex::new(Vec::new());

fn remember(a: Active) {
    let mut all = ACTIVE.lock().unwrap();
    all.retain(|x| x.key() != a.key());
    all.push(a);
}

/// The PCP nonce of this process: renewals and deletes must repeat it.
fn nonce() -> [u8; 12] {
    static N: std::sync::OnceLock<[u8; 12]> = std::sync::OnceLock::new();
    *N.get_or_init(rand::random)
}

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

/// One request with the RFC's retries (250 ms, doubling; `tries` of them), skipping replies
/// `accept` rejects (stray or late answers to earlier requests).
fn ask(
    sock: &UdpSocket,
    req: &[u8],
    tries: u32,
    accept: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 1100];
    let mut wait = Duration::from_millis(250);
    for _ in 0..tries {
        sock.send(req)?;
        let until = std::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            match sock.recv(&mut buf) {
                Ok(n) if accept(&buf[..n]) => return Ok(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        wait *= 2;
    }
    Err(std::io::ErrorKind::TimedOut.into())
}

fn socket(gw: Ipv4Addr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(SocketAddrV4::new(gw, natpmp::PORT))?;
    Ok(s)
}

/// Our address on the link towards `to` (what the gateway sees as the internal client).
fn local_ip_towards(to: IpAddr) -> std::io::Result<IpAddr> {
    let s = UdpSocket::bind((IpAddr::from(Ipv4Addr::UNSPECIFIED), 0))?;
    s.connect((to, 9))?;
    Ok(s.local_addr()?.ip())
}

fn map_pcp(gw: Ipv4Addr, port: u16) -> Result<SocketAddr, String> {
    let sock = socket(gw).map_err(|e| e.to_string())?;
    let client = match sock.local_addr().map_err(|e| e.to_string())?.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => return Err("no IPv4 address towards the gateway".into()),
    };
    let mut external = None;
    for proto in [Proto::Tcp, Proto::Udp] {
        let req = pcp::map_request(nonce(), proto, client, port, LIFETIME);
        // A reply to the other protocol's request (a retry crossing) is not ours.
        let r = ask(&sock, &req, 3, |b| {
            !matches!(
                pcp::parse_map(b, nonce(), proto, port),
                Err(pcp::PcpError::NotOurs)
            )
        })
        .map_err(|e| format!("no answer from {gw}: {e}"))?;
        let m = pcp::parse_map(&r, nonce(), proto, port).map_err(|e| e.to_string())?;
        remember(Active::Pcp {
            gw,
            client,
            proto,
            port,
        });
        if proto == Proto::Tcp {
            external = Some(SocketAddr::from((m.external_ip, m.external_port)));
        }
    }
    Ok(external.expect("TCP mapped"))
}

fn map_natpmp(gw: Ipv4Addr, port: u16) -> Result<SocketAddr, String> {
    let sock = socket(gw).map_err(|e| e.to_string())?;
    let ip = ask(&sock, &natpmp::external_address_request(), 4, |b| {
        b.len() >= 2 && b[1] == 128
    })
    .map_err(|e| format!("no answer from {gw}: {e}"))?;
    let ip = natpmp::parse_external_address(&ip).map_err(|e| e.to_string())?;
    let mut external = port;
    for proto in [Proto::Tcp, Proto::Udp] {
        let r = ask(
            &sock,
            &natpmp::map_request(proto, port, port, LIFETIME),
            4,
            |b| b.len() >= 2 && b[1] == 128 + proto as u8,
        )
        .map_err(|e| format!("no answer from {gw}: {e}"))?;
        let (_, ext, _) = natpmp::parse_map(&r, proto).map_err(|e| e.to_string())?;
        if proto == Proto::Tcp {
            external = ext;
        }
        remember(Active::NatPmp { gw, proto, port });
    }
    Ok(SocketAddr::from((ip, external)))
}

fn igd_proto(p: Proto) -> igd_next::PortMappingProtocol {
    match p {
        Proto::Tcp => igd_next::PortMappingProtocol::TCP,
        Proto::Udp => igd_next::PortMappingProtocol::UDP,
    }
}

fn map_upnp(port: u16) -> Result<SocketAddr, String> {
    let mut opts = igd_next::SearchOptions::default();
    opts.timeout = Some(Duration::from_secs(3));
    opts.single_search_timeout = Some(Duration::from_secs(2));
    let gw =
        igd_next::search_gateway(opts).map_err(|e| format!("no gateway answered SSDP: {e}"))?;
    let local = local_ip_towards(gw.addr.ip()).map_err(|e| e.to_string())?;
    let ip = gw
        .get_external_ip()
        .map_err(|e| format!("{}: {e}", gw.addr))?;
    for proto in [Proto::Tcp, Proto::Udp] {
        let to = SocketAddr::new(local, port);
        let r = match gw.add_port(igd_proto(proto), port, to, LIFETIME, "ccbt") {
            Err(igd_next::AddPortError::OnlyPermanentLeasesSupported) => {
                gw.add_port(igd_proto(proto), port, to, 0, "ccbt")
            }
            r => r,
        };
        r.map_err(|e| format!("{}: {e}", gw.addr))?;
        remember(Active::Upnp {
            gw: Box::new(gw.clone()),
            proto,
            external: port,
        });
    }
    Ok(SocketAddr::new(ip, port))
}

/// Maps `port` for TCP and UDP with the first of `methods` that works; returns the external
/// address (external IP, TCP port) and the protocol used. Blocking (seconds at most per
/// protocol): run it off the runtime.
pub fn map(gw: Ipv4Addr, port: u16, methods: &[Method]) -> Result<(SocketAddr, Method), String> {
    let mut errors = Vec::new();
    for &m in methods {
        let r = match m {
            Method::Pcp => map_pcp(gw, port),
            Method::NatPmp => map_natpmp(gw, port),
            Method::Upnp => map_upnp(port),
        };
        match r {
            Ok(ext) => return Ok((ext, m)),
            Err(e) => errors.push(format!("{}: {e}", m.name())),
        }
    }
    Err(errors.join("; "))
}

/// Removes every mapping this process made (at exit; blocking, bounded to about a second per
/// gateway).
pub fn remove_all() {
    let all: Vec<_> = std::mem::take(&mut *ACTIVE.lock().unwrap());
    for a in all {
        match a {
            Active::Pcp {
                gw,
                client,
                proto,
                port,
            } => {
                if let Ok(s) = socket(gw) {
                    let req = pcp::map_request(nonce(), proto, client, port, 0);
                    let _ = ask(&s, &req, 2, |_| true);
                }
            }
            Active::NatPmp { gw, proto, port } => {
                if let Ok(s) = socket(gw) {
                    let _ = ask(&s, &natpmp::map_request(proto, port, 0, 0), 2, |_| true);
                }
            }
            Active::Upnp {
                gw,
                proto,
                external,
            } => {
                let _ = gw.remove_port(igd_proto(proto), external);
            }
        }
    }
}

/// Keeps `port` mapped while the process runs: maps at once, renews at half the lifetime,
/// retries a failed gateway every few minutes. The external address goes to `report`.
pub(crate) async fn keep_mapped(
    port: u16,
    methods: Vec<Method>,
    report: impl Fn(SocketAddr) + Send + 'static,
) {
    let Some(gw) = default_gateway() else {
        tracing::debug!("port mapping: no IPv4 default route");
        return;
    };
    let mut failures = 0u32;
    loop {
        let m = methods.clone();
        let r = tokio::task::spawn_blocking(move || map(gw, port, &m))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let wait = match r {
            Ok((ext, how)) => {
                failures = 0;
                tracing::info!("port mapping: reachable at {ext} ({} on {gw})", how.name());
                report(ext);
                Duration::from_secs(LIFETIME as u64 / 2)
            }
            Err(e) => {
                // Soon at first (a router still starting), then every 5 minutes.
                failures += 1;
                let wait = Duration::from_secs((10u64 << failures.min(5)).min(300));
                tracing::info!("port mapping failed: {e} (again in {}s)", wait.as_secs());
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
