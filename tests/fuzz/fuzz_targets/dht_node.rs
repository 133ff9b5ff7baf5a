#![no_main]
//! Fuzz target: a whole DHT node (BEP 5/44) fed a stream of datagrams from a few addresses while
//! a bootstrap, a get and an announce run: no panic, and it never sends more than a bounded
//! number of packets per packet received.
use ccbt_dht::node::{ItemKind, Node, Request, Settings};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let settings = Settings {
        max_nodes_per_ip: 0,
        queries_per_ip_per_sec: 0,
        read_only: false,
    };
    let mut n = Node::new([7; 20], settings, 1, now);
    // Mostly IPv4 senders, one IPv6 (BEP 32): a node meets both in a dual-stack world.
    let peer = |i: u8| match i & 7 {
        7 => SocketAddr::from((Ipv6Addr::LOCALHOST, 6881)),
        _ => SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2 + (i & 3)), 6881)),
    };
    n.set_bootstrap(vec![peer(0)]);
    n.tick(now);
    n.start(
        Request::Get {
            target: [1; 20],
            kind: ItemKind::Any,
        },
        now,
    );
    n.start(
        Request::GetPeers {
            info_hash: [2; 20],
            announce: Some(6881),
        },
        now,
    );
    let mut t = now;
    let mut rest = data;
    let mut sent = 0usize;
    let mut received = 0usize;
    while rest.len() >= 2 {
        let from = peer(rest[0]);
        let len = (rest[1] as usize).min(rest.len() - 2);
        n.handle(from, &rest[2..2 + len], t);
        received += 1;
        rest = &rest[2 + len..];
        t += Duration::from_millis(300);
        n.tick(t);
        while n.poll_transmit().is_some() {
            sent += 1;
        }
        while n.poll_event().is_some() {}
    }
    // Bootstrap, lookups and their store phase: a few dozen queries at most, plus one answer
    // per packet received.
    assert!(sent <= 64 + 8 * received, "{sent} packets sent for {received} received");
});
