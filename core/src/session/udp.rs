//! The listen port's UDP socket, shared by the DHT and uTP: one socket per address in the
//! process (whichever starts first binds it), one task reading it and handing each datagram to
//! its protocol by the first byte (`d`: a KRPC dictionary; version-1 uTP headers otherwise).
//!
//! System calls are batched through `quinn-udp`: reads take many datagrams at once (recvmmsg,
//! and UDP GRO where the kernel coalesces a flow's datagrams), uTP gets them as one batch (one
//! wake-up of its task, one ACK per connection per batch), and uTP sends a window's
//! equal-sized packets in one call (UDP GSO). uTP over loopback cost four times TCP's CPU
//! with one system call per datagram.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Datagrams queued per protocol; beyond it they are dropped, as a full socket buffer would.
const QUEUE: usize = 8192;

/// Datagrams read per system call (each slot takes a GRO batch of up to 64 KiB).
const SLOTS: usize = 8;
/// The most one GSO send carries (the kernel's limit is 64 KiB of payload).
const GSO_MAX_BYTES: usize = 60_000;

pub type Datagram = (Vec<u8>, SocketAddr);

/// A bound UDP port and its subscribers.
pub struct UdpMux {
    pub socket: Arc<UdpSocket>,
    /// Batched I/O on `socket` (GSO and GRO where the kernel has them).
    state: Arc<quinn_udp::UdpSocketState>,
    pub local: SocketAddr,
    krpc: Mutex<Option<mpsc::Sender<Datagram>>>,
    utp: Mutex<Option<mpsc::Sender<Vec<Datagram>>>>,
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
        let state = quinn_udp::UdpSocketState::new((&s).into())?;
        // quinn-udp sets "don't fragment, ignore the path MTU" (QUIC probes the MTU itself);
        // uTP's 1400-byte packets and large KRPC replies rely on the kernel's default, which
        // fragments above a path MTU learnt from ICMP instead of losing the datagram.
        if addr.is_ipv6() {
            let _ = sockopt(
                &s,
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_WANT,
            );
        } else {
            let _ = sockopt(
                &s,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_WANT,
            );
        }
        let std_sock = std::net::UdpSocket::from(s);
        std_sock.set_nonblocking(true)?;
        let sock = Arc::new(UdpSocket::from_std(std_sock)?);
        let local = sock.local_addr()?;
        let m = Arc::new(UdpMux {
            socket: sock,
            state: Arc::new(state),
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

    /// uTP datagrams from now on, in the batches they were read in.
    pub fn subscribe_utp(&self) -> mpsc::Receiver<Vec<Datagram>> {
        let (tx, rx) = mpsc::channel(QUEUE / SLOTS);
        *self.utp.lock().unwrap() = Some(tx);
        rx
    }

    /// Sends `datagrams` to `to`, in order. Runs of equal-sized datagrams (the last of a run
    /// may be shorter) go in one system call where the kernel segments them (UDP GSO). Errors
    /// are dropped, as a lossy path would: the protocols above retransmit.
    pub async fn send_all(&self, to: SocketAddr, datagrams: &[Vec<u8>]) {
        let max = self.state.max_gso_segments().max(1);
        let mut joined = Vec::new();
        let mut rest = datagrams;
        while let Some(first) = rest.first() {
            // A run: datagrams of the first one's size, the last of it possibly shorter.
            let size = first.len();
            let (mut n, mut bytes) = (1, size);
            while size > 0 && n < max.min(rest.len()) {
                let len = rest[n].len();
                if len > size || bytes + len > GSO_MAX_BYTES {
                    break;
                }
                bytes += len;
                n += 1;
                if len < size {
                    break;
                }
            }
            let (run, tail) = rest.split_at(n);
            rest = tail;
            let (contents, segment_size) = if n == 1 {
                (&first[..], None)
            } else {
                joined.clear();
                run.iter().for_each(|d| joined.extend_from_slice(d));
                (&joined[..], Some(size))
            };
            let t = quinn_udp::Transmit {
                destination: to,
                ecn: None,
                contents,
                segment_size,
                src_ip: None,
            };
            let _ = self
                .socket
                .async_io(Interest::WRITABLE, || {
                    self.state.try_send((&*self.socket).into(), &t)
                })
                .await;
        }
    }
}

fn sockopt(s: &socket2::Socket, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a c_int option of the size given.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn read_loop(m: std::sync::Weak<UdpMux>) {
    // Zeroed by the allocator, not by us: pages are touched only as datagrams land.
    let mut bufs: Vec<Vec<u8>> = (0..SLOTS).map(|_| vec![0u8; 65536]).collect();
    let mut meta = [quinn_udp::RecvMeta::default(); SLOTS];
    loop {
        let Some(mux) = m.upgrade() else { return };
        let (sock, state) = (mux.socket.clone(), mux.state.clone());
        drop(mux);
        let r = sock
            .async_io(Interest::READABLE, || {
                let mut slices: [IoSliceMut; SLOTS] =
                    std::array::from_fn(|_| IoSliceMut::new(&mut []));
                for (s, b) in slices.iter_mut().zip(bufs.iter_mut()) {
                    *s = IoSliceMut::new(b);
                }
                state.recv((&*sock).into(), &mut slices, &mut meta)
            })
            .await;
        let Some(mux) = m.upgrade() else { return };
        let n = match r {
            Ok(n) => n,
            // ICMP port-unreachable from an earlier send surfaces here on Linux: not ours.
            Err(_) => continue,
        };
        let krpc = mux.krpc.lock().unwrap().clone();
        let mut utp = Vec::new();
        for (b, meta) in bufs.iter().zip(&meta).take(n) {
            let from = SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port());
            let stride = meta.stride.max(1);
            for pkt in b[..meta.len].chunks(stride) {
                if !pkt.is_empty() && pkt[0] == b'd' {
                    match &krpc {
                        Some(tx) if tx.try_send((pkt.to_vec(), from)).is_ok() => {}
                        _ => {
                            mux.other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else if ccbt_utp::Packet::is_utp(pkt) {
                    utp.push((pkt.to_vec(), from));
                } else {
                    mux.other.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !utp.is_empty() {
            let tx = mux.utp.lock().unwrap().clone();
            let count = utp.len() as u64;
            match tx {
                Some(tx) if tx.try_send(utp).is_ok() => {}
                _ => {
                    mux.other.fetch_add(count, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Datagrams of mixed sizes, sent in GSO runs and read back through recvmmsg and GRO,
    /// arrive whole, in order, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_sends_and_reads_keep_every_datagram() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = UdpMux::bind_unshared(lo).unwrap();
        let b = UdpMux::bind_unshared(lo).unwrap();
        let mut rx = b.subscribe_utp();
        // uTP-looking datagrams (version 1, type DATA), each numbered.
        let dgram = |i: u16, len: usize| {
            let mut d = vec![0x01u8; len];
            d[2..4].copy_from_slice(&i.to_be_bytes());
            d
        };
        let sizes = [
            1400, 1400, 1400, 1400, 700, 1400, 1400, 20, 20, 1400, 1500, 1400,
        ];
        let mut sent = Vec::new();
        for round in 0..40u16 {
            let batch: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| dgram(round * 100 + k as u16, n))
                .collect();
            a.send_all(b.local, &batch).await;
            sent.extend(batch);
            // Paced like a sender with a window: the receive buffer is not the test.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("datagrams arrive")
                .unwrap();
            for (d, from) in batch {
                assert_eq!(from, a.local);
                got.push(d);
            }
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "datagrams reordered, split or merged");
    }
}
