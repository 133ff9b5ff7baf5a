//! The listen port's UDP socket, shared by the DHT and uTP: one socket per address in the
//! process (whichever starts first binds it), one task reading it and handing each datagram to
//! its protocol by the first byte (`d`: a KRPC dictionary; version-1 uTP headers otherwise).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Datagrams queued per protocol; beyond it they are dropped, as a full socket buffer would.
const QUEUE: usize = 8192;

pub type Datagram = (Vec<u8>, SocketAddr);

/// A bound UDP port and its subscribers.
pub struct UdpMux {
    pub socket: Arc<UdpSocket>,
    pub local: SocketAddr,
    krpc: Mutex<Option<mpsc::Sender<Datagram>>>,
    utp: Mutex<Option<mpsc::Sender<Datagram>>>,
    /// Datagrams nobody takes (neither KRPC nor uTP, or no subscriber).
    pub other: AtomicU64,
}

fn registry() -> &'static Mutex<HashMap<SocketAddr, Arc<UdpMux>>> {
    static R: OnceLock<Mutex<HashMap<SocketAddr, Arc<UdpMux>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

impl UdpMux {
    /// The socket bound to `addr` (bound now, on the current runtime, if no one has yet). A
    /// port-0 address always binds a new socket.
    pub fn get_or_bind(addr: SocketAddr) -> std::io::Result<Arc<UdpMux>> {
        let mut r = registry().lock().unwrap();
        if addr.port() != 0 {
            if let Some(m) = r.get(&addr) {
                return Ok(m.clone());
            }
        }
        let m = UdpMux::bind_unshared(addr)?;
        r.insert(addr, m.clone());
        if m.local != addr {
            r.insert(m.local, m.clone());
        }
        Ok(m)
    }

    /// A socket of its own, not in the registry: gone when the last holder drops it.
    pub fn bind_unshared(addr: SocketAddr) -> std::io::Result<Arc<UdpMux>> {
        let domain = if addr.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if addr.is_ipv6() {
            // IPv6 only: `[::]:port` beside the IPv4 socket on `0.0.0.0:port`, not over it.
            s.set_only_v6(true)?;
        }
        // uTP bursts (a window's worth after one ACK) overflow the default receive buffer on a
        // long path; ask for more (the kernel caps it at net.core.rmem_max).
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&addr.into())?;
        let std_sock = std::net::UdpSocket::from(s);
        std_sock.set_nonblocking(true)?;
        let sock = Arc::new(UdpSocket::from_std(std_sock)?);
        let local = sock.local_addr()?;
        let m = Arc::new(UdpMux {
            socket: sock,
            local,
            krpc: Mutex::new(None),
            utp: Mutex::new(None),
            other: AtomicU64::new(0),
        });
        tokio::spawn(read_loop(Arc::downgrade(&m)));
        Ok(m)
    }

    /// KRPC datagrams from now on (the DHT).
    pub fn subscribe_krpc(&self) -> mpsc::Receiver<Datagram> {
        let (tx, rx) = mpsc::channel(QUEUE);
        *self.krpc.lock().unwrap() = Some(tx);
        rx
    }

    /// uTP datagrams from now on.
    pub fn subscribe_utp(&self) -> mpsc::Receiver<Datagram> {
        let (tx, rx) = mpsc::channel(QUEUE);
        *self.utp.lock().unwrap() = Some(tx);
        rx
    }
}

async fn read_loop(m: std::sync::Weak<UdpMux>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Some(mux) = m.upgrade() else { return };
        let sock = mux.socket.clone();
        drop(mux);
        let r = sock.recv_from(&mut buf).await;
        let Some(mux) = m.upgrade() else { return };
        let (n, from) = match r {
            Ok(x) => x,
            // ICMP port-unreachable from an earlier send surfaces here on Linux: not ours.
            Err(_) => continue,
        };
        let pkt = &buf[..n];
        let to = if n > 0 && pkt[0] == b'd' {
            mux.krpc.lock().unwrap().clone()
        } else if ccbt_utp::Packet::is_utp(pkt) {
            mux.utp.lock().unwrap().clone()
        } else {
            None
        };
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        match to {
            Some(tx) if tx.try_send((pkt.to_vec(), from)).is_ok() => {}
            _ => {
                mux.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
