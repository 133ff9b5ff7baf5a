//! A userspace netem for a kernel without sch_netem: a TUN device that holds every IP packet
//! routed into it for DELAY ms, drops a LOSS fraction of them (at random, seeded), and writes
//! the rest back into the kernel, which routes them on. `scripts/delaynet.sh` and the benches
//! build the namespaces around it. It replaced a Python version (`scripts/delayline.py`, same
//! interface) whose loop per packet took most of a core in the 24-leecher swarm bench.
//!
//! usage: delayline NAME DELAY_MS LOSS [HOSTS]   (prints "ready" once the device exists)
//! HOSTS: a file of "IPv4 MS" lines, each host's own link delay: a packet from S to D is held
//! DELAY_MS + MS(S) + MS(D) (hosts not listed add nothing), so each host sits at the end of a
//! link of its own length and no flow is reordered.
//! Stops on SIGTERM or when stdin closes. Prints packet counts at exit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

const TUNSETIFF: libc::c_ulong = 0x400454CA;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

fn open_tun(name: &str) -> io::Result<OwnedFd> {
    // SAFETY: a plain open; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    let n = name.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: TUNSETIFF takes a struct ifreq, which IfReq lays out (40 bytes).
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Per-host link delays from a HOSTS file.
fn read_hosts(path: &str) -> io::Result<HashMap<[u8; 4], Duration>> {
    let mut hosts = HashMap::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let mut f = line.split_whitespace();
        let (Some(ip), Some(ms)) = (f.next(), f.next()) else {
            continue;
        };
        let ip: std::net::Ipv4Addr = ip
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad IPv4 {ip:?}")))?;
        let ms: f64 = ms
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad delay {ms:?}")))?;
        hosts.insert(ip.octets(), Duration::from_secs_f64(ms / 1000.0));
    }
    Ok(hosts)
}

/// How long a packet is held: the base delay plus both ends' own links (IPv4 only).
fn hold(pkt: &[u8], base: Duration, hosts: &HashMap<[u8; 4], Duration>) -> Duration {
    if hosts.is_empty() || pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return base;
    }
    let at = |i: usize| -> [u8; 4] { pkt[i..i + 4].try_into().unwrap() };
    base + hosts.get(&at(12)).copied().unwrap_or_default()
        + hosts.get(&at(16)).copied().unwrap_or_default()
}

/// xorshift64*: seeded, so a run's losses repeat.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: delayline NAME DELAY_MS LOSS [HOSTS]");
        std::process::exit(2);
    }
    let parse = |s: &str, what: &str| -> f64 {
        s.parse().unwrap_or_else(|_| {
            eprintln!("delayline: bad {what} {s:?}");
            std::process::exit(2)
        })
    };
    let base = Duration::from_secs_f64(parse(&args[2], "delay") / 1000.0);
    let loss = parse(&args[3], "loss");
    let hosts = match args.get(4).map(|p| read_hosts(p)).transpose() {
        Ok(h) => h.unwrap_or_default(),
        Err(e) => {
            eprintln!("delayline: {}: {e}", args[4]);
            std::process::exit(1)
        }
    };
    let tun = match open_tun(&args[1]) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("delayline: cannot create TUN device {}: {e}", args[1]);
            std::process::exit(1)
        }
    };
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
    println!("ready");
    let _ = io::stdout().flush();
    let fd = tun.as_raw_fd();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Due time, arrival order, packet: a min-heap on (due, seq) keeps each flow in order.
    let mut held: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let (mut seq, mut packets, mut dropped, mut sent) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65536];
    while !STOP.load(Ordering::Relaxed) {
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse((due, _, _))| *due <= now) {
            let Reverse((_, _, pkt)) = held.pop().unwrap();
            // SAFETY: writing our buffer to our fd.
            let n = unsafe { libc::write(fd, pkt.as_ptr().cast(), pkt.len()) };
            if n < 0 {
                dropped += 1;
            } else {
                sent += 1;
            }
        }
        let wait = held
            .peek()
            .map_or(Duration::from_millis(500), |Reverse((due, _, _))| {
                due.saturating_duration_since(now)
            });
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two pollfds of ours, a valid timeout, no signal mask change.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if r <= 0 {
            continue; // timeout or a signal
        }
        if fds[1].revents != 0 {
            let mut b = [0u8; 4096];
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
            if n <= 0 {
                break; // stdin closed: stop
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let now = Instant::now();
            loop {
                // SAFETY: reading into our buffer.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break; // EAGAIN: drained
                }
                packets += 1;
                if loss > 0.0 && rng.unit() < loss {
                    dropped += 1;
                    continue;
                }
                let pkt = buf[..n as usize].to_vec();
                let due = now + hold(&pkt, base, &hosts);
                seq += 1;
                held.push(Reverse((due, seq, pkt)));
            }
        }
    }
    eprintln!("{{'packets': {packets}, 'dropped': {dropped}, 'sent': {sent}}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_held_for_both_links_and_the_base() {
        let mut hosts = HashMap::new();
        hosts.insert([10, 0, 0, 1], Duration::from_millis(10));
        hosts.insert([10, 0, 0, 2], Duration::from_millis(25));
        let mut pkt = vec![0u8; 40];
        pkt[0] = 0x45;
        pkt[12..16].copy_from_slice(&[10, 0, 0, 1]);
        pkt[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let base = Duration::from_millis(5);
        assert_eq!(hold(&pkt, base, &hosts), Duration::from_millis(40));
        pkt[16..20].copy_from_slice(&[10, 0, 0, 9]); // not listed: adds nothing
        assert_eq!(hold(&pkt, base, &hosts), Duration::from_millis(15));
        pkt[0] = 0x60; // IPv6: the base only
        assert_eq!(hold(&pkt, base, &hosts), base);
    }

    #[test]
    fn losses_come_at_the_rate_asked() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let lost = (0..1_000_000).filter(|_| r.unit() < 0.001).count();
        assert!((800..1200).contains(&lost), "{lost}");
    }
}
