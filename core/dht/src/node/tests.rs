//! Many nodes on a simulated network: a virtual clock, per-packet delay, loss and reordering, and
//! no sockets.

use super::*;
use crate::items::signing_bytes;
use ed25519_dalek::{Signer, SigningKey};
use std::collections::BinaryHeap;

/// A packet in flight: (deliver at, sequence, from, to, bytes).
type InFlight = std::cmp::Reverse<(Instant, u64, SocketAddr, SocketAddr, Vec<u8>)>;

struct Net {
    nodes: BTreeMap<SocketAddr, Node>,
    queue: BinaryHeap<InFlight>,
    now: Instant,
    seq: u64,
    rng: StdRng,
    loss: f64,
    done: Vec<(SocketAddr, Done)>,
    /// Peers handed out early by running lookups: (node, op, peers, when).
    found: Vec<(SocketAddr, OpId, Vec<SocketAddr>, Instant)>,
}

fn addr(i: usize) -> SocketAddr {
    crate::sa4(
        Ipv4Addr::new(127, 0, (i / 250) as u8, (i % 250 + 1) as u8),
        6881,
    )
}

fn loopback() -> Settings {
    Settings {
        max_nodes_per_ip: 0,
        queries_per_ip_per_sec: 0,
        read_only: false,
    }
}

impl Net {
    fn new(n: usize, loss: f64, seed: u64) -> Net {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = BTreeMap::new();
        for i in 0..n {
            let id = Node::random_id(&mut rng, None);
            let mut node = Node::new(id, loopback(), seed * 1000 + i as u64, now);
            node.local_ip = Some(addr(i).ip());
            if i > 0 {
                node.set_bootstrap(vec![addr(0)]);
            }
            nodes.insert(addr(i), node);
        }
        Net {
            nodes,
            queue: BinaryHeap::new(),
            now,
            seq: 0,
            rng,
            loss,
            done: Vec::new(),
            found: Vec::new(),
        }
    }

    fn flush(&mut self) {
        let addrs: Vec<SocketAddr> = self.nodes.keys().copied().collect();
        for a in addrs {
            let node = self.nodes.get_mut(&a).unwrap();
            while let Some((to, pkt)) = node.poll_transmit() {
                if self.rng.gen_bool(self.loss) {
                    continue;
                }
                // 10-40 ms one way: packets overtake each other.
                let delay = Duration::from_millis(self.rng.gen_range(10..40));
                self.seq += 1;
                self.queue
                    .push(std::cmp::Reverse((self.now + delay, self.seq, a, to, pkt)));
            }
            while let Some(d) = node.poll_event() {
                self.done.push((a, d));
            }
            while let Some((op, peers)) = node.poll_found() {
                self.found.push((a, op, peers, self.now));
            }
        }
    }

    /// Runs the network for `d` of virtual time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let mut next_tick = self.now;
        while self.now < end {
            self.flush();
            while let Some(std::cmp::Reverse((t, ..))) = self.queue.peek() {
                if *t > self.now {
                    break;
                }
                let std::cmp::Reverse((_, _, from, to, pkt)) = self.queue.pop().unwrap();
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.handle(from, &pkt, self.now);
                }
            }
            if self.now >= next_tick {
                for n in self.nodes.values_mut() {
                    n.tick(self.now);
                }
                next_tick = self.now + Duration::from_millis(100);
            }
            self.flush();
            self.now += Duration::from_millis(5);
        }
    }

    /// Starts `req` on node `i` and runs until it finishes (at most 60 s).
    fn op(&mut self, i: usize, req: Request) -> Done {
        let a = addr(i);
        let now = self.now;
        let op = self.nodes.get_mut(&a).unwrap().start(req, now);
        for _ in 0..600 {
            self.flush();
            if let Some(pos) = self.done.iter().position(|(x, d)| *x == a && d.op == op) {
                return self.done.remove(pos).1;
            }
            self.run(Duration::from_millis(100));
        }
        panic!("operation did not finish within 60 s of virtual time");
    }
}

fn signed(key: &SigningKey, seq: i64, v: &[u8]) -> PutItem {
    let sig = key.sign(&signing_bytes(b"", seq, v)).to_bytes();
    PutItem::Mutable {
        v: v.to_vec(),
        m: MutablePut {
            k: key.verifying_key().to_bytes(),
            salt: Vec::new(),
            seq,
            sig,
            cas: None,
        },
    }
}

#[test]
fn a_network_bootstraps_announces_and_finds_peers_despite_loss() {
    let mut net = Net::new(60, 0.05, 1);
    net.run(Duration::from_secs(30));
    for (a, n) in &net.nodes {
        assert!(n.table.len() >= 5, "{a} has {} nodes", n.table.len());
    }
    let ih = [0x42; 20];
    let d = net.op(
        7,
        Request::GetPeers {
            info_hash: ih,
            announce: Some(7007),
        },
    );
    let Outcome::Peers { announced, .. } = d.outcome else {
        panic!("{d:?}")
    };
    assert!(announced >= 4, "announced to {announced}");
    let d = net.op(
        50,
        Request::GetPeers {
            info_hash: ih,
            announce: None,
        },
    );
    let Outcome::Peers { peers, .. } = d.outcome else {
        panic!()
    };
    assert!(
        peers.contains(&SocketAddr::new(addr(7).ip(), 7007)),
        "{peers:?}"
    );
    // A lookup in a 60-node network costs a few dozen queries, not the network.
    assert!(d.queries < 40, "{} queries", d.queries);
    // The peers were handed out as they came, before the lookup ended, and `first` says when.
    let early: Vec<SocketAddr> = net
        .found
        .iter()
        .filter(|(a, op, ..)| *a == addr(50) && *op == d.op)
        .flat_map(|(_, _, p, _)| p.clone())
        .collect();
    assert_eq!(early.len(), peers.len(), "each peer once: {early:?}");
    assert!(early.iter().all(|p| peers.contains(p)));
    let first = d.first.expect("a time to the first peers");
    assert!(
        first < d.elapsed,
        "{first:?} is not before the end, {:?}",
        d.elapsed
    );
}

#[test]
fn mutable_items_newest_verified_seq_wins() {
    let mut net = Net::new(40, 0.02, 2);
    net.run(Duration::from_secs(20));
    let key = SigningKey::from_bytes(&[9; 32]);
    let k = key.verifying_key().to_bytes();
    let target = mutable_target(&k, b"");
    for seq in [1, 2] {
        let d = net.op(
            3,
            Request::Put(signed(&key, seq, format!("5:head{seq}").as_bytes())),
        );
        let Outcome::Put { stored, error, .. } = d.outcome else {
            panic!()
        };
        assert!(
            stored >= 4 && error.is_none(),
            "seq {seq}: {stored} {error:?}"
        );
    }
    // A lower seq is refused by the nodes holding seq 2 (error 302).
    let d = net.op(3, Request::Put(signed(&key, 1, b"5:head1")));
    let Outcome::Put { error, .. } = d.outcome else {
        panic!()
    };
    assert_eq!(error.map(|e| e.0), Some(302));
    let kind = ItemKind::Mutable {
        k: None,
        salt: Vec::new(),
        min_seq: None,
    };
    let d = net.op(
        30,
        Request::Get {
            target,
            kind: kind.clone(),
        },
    );
    let Outcome::Item(Some(found)) = d.outcome else {
        panic!("{d:?}")
    };
    assert_eq!(found.v, b"5:head2");
    assert_eq!(found.mutable.unwrap().seq, 2);
    // A hostile node stores a forged value under the target: it never comes out of a get.
    let bad = net.nodes.keys().nth(31).copied().unwrap();
    let now = net.now;
    let forged = crate::items::Item::forged_for_test(b"4:evil".to_vec(), k, 99);
    net.nodes
        .get_mut(&bad)
        .unwrap()
        .server
        .items
        .insert_for_test(target, forged, now);
    let d = net.op(20, Request::Get { target, kind });
    let Outcome::Item(Some(found)) = d.outcome else {
        panic!()
    };
    assert_eq!(found.mutable.unwrap().seq, 2);
    // Immutable: put, then get from another node; the target is the value's SHA-1.
    let d = net.op(
        5,
        Request::Put(PutItem::Immutable(b"12:hello, world".to_vec())),
    );
    let Outcome::Put { target, stored, .. } = d.outcome else {
        panic!()
    };
    assert!(stored >= 4);
    let d = net.op(
        25,
        Request::Get {
            target,
            kind: ItemKind::Immutable,
        },
    );
    assert_eq!(
        d.outcome,
        Outcome::Item(Some(FoundItem {
            v: b"12:hello, world".to_vec(),
            mutable: None,
            seen: match &d.outcome {
                Outcome::Item(Some(f)) => f.seen,
                _ => 0,
            },
        }))
    );
}

/// Two nodes only: the owner announces and puts with nobody else around; the second node,
/// bootstrapped from it, still finds both (we answer with our own announces and items).
#[test]
fn two_nodes_find_each_other() {
    let mut net = Net::new(1, 0.0, 3);
    let key = SigningKey::from_bytes(&[5; 32]);
    net.op(
        0,
        Request::GetPeers {
            info_hash: [7; 20],
            announce: Some(9000),
        },
    );
    net.op(0, Request::Put(signed(&key, 4, b"1:x")));
    let now = net.now;
    let mut b = Node::new([0xee; 20], loopback(), 77, now);
    b.set_bootstrap(vec![addr(0)]);
    net.nodes.insert(addr(1), b);
    net.run(Duration::from_secs(2));
    let d = net.op(
        1,
        Request::GetPeers {
            info_hash: [7; 20],
            announce: None,
        },
    );
    assert_eq!(
        d.outcome,
        Outcome::Peers {
            peers: vec![SocketAddr::new(addr(0).ip(), 9000)],
            announced: 0
        }
    );
    let k = key.verifying_key().to_bytes();
    let d = net.op(
        1,
        Request::Get {
            target: mutable_target(&k, b""),
            kind: ItemKind::Mutable {
                k: Some(k),
                salt: Vec::new(),
                min_seq: None,
            },
        },
    );
    let Outcome::Item(Some(f)) = d.outcome else {
        panic!()
    };
    assert_eq!(f.mutable.unwrap().seq, 4);
}

#[test]
fn floods_unsolicited_replies_and_garbage_are_bounded() {
    let now = Instant::now();
    let mut n = Node::new([1; 20], Settings::default(), 5, now);
    let attacker = crate::sa4(Ipv4Addr::new(10, 0, 0, 9), 1234);
    let ping = Message {
        tid: b"aa".to_vec(),
        id: Some([2; 20]),
        read_only: false,
        your_ip: None,
        body: Body::Query(Query::FindNode { target: [3; 20] }),
    }
    .encode();
    let mut bytes_in = 0;
    for i in 0..10_000u32 {
        n.handle(attacker, &ping, now + Duration::from_millis(i as u64 / 10));
        bytes_in += ping.len();
    }
    let mut out = 0;
    let mut answered = 0;
    while let Some((_, p)) = n.poll_transmit() {
        out += p.len();
        answered += 1;
    }
    // 1 s of flood: the burst (40) plus 20/s, not 10,000 answers.
    assert!(answered <= 61, "{answered} answers");
    assert!(out < bytes_in / 50, "{out} bytes out for {bytes_in} in");
    assert!(n.stats.rate_limited > 9_000);
    // Unsolicited replies, garbage and oversized packets change nothing.
    let reply = Message {
        tid: b"zz".to_vec(),
        id: Some([4; 20]),
        read_only: false,
        your_ip: None,
        body: Body::Response(Response {
            nodes: vec![
                NodeInfo {
                    id: [5; 20],
                    addr: attacker
                };
                8
            ],
            ..Default::default()
        }),
    }
    .encode();
    let before = n.table.len();
    n.handle(attacker, &reply, now);
    n.handle(attacker, b"d1:ad2:id", now);
    n.handle(attacker, &vec![b'd'; 5000], now);
    assert_eq!(n.table.len(), before);
    assert_eq!(n.stats.unsolicited, 1);
    assert_eq!(n.stats.malformed, 2);
    assert!(n.poll_transmit().is_none());
}

#[test]
fn a_reply_from_the_wrong_address_is_not_accepted() {
    let now = Instant::now();
    let mut n = Node::new([1; 20], loopback(), 6, now);
    let real = crate::sa4(Ipv4Addr::new(127, 0, 0, 2), 5000);
    let op = n.start(Request::Ping(real), now);
    let (to, pkt) = n.poll_transmit().unwrap();
    assert_eq!(to, real);
    let q = Message::decode(&pkt).unwrap();
    let forged = Message {
        tid: q.tid.clone(),
        id: Some([8; 20]),
        read_only: false,
        your_ip: None,
        body: Body::Response(Response::default()),
    }
    .encode();
    n.handle(crate::sa4(Ipv4Addr::new(127, 0, 0, 3), 5000), &forged, now);
    assert!(n.poll_event().is_none());
    n.handle(real, &forged, now);
    let d = n.poll_event().unwrap();
    assert_eq!((d.op, d.outcome), (op, Outcome::Pong(Some([8; 20]))));
    // A ping nobody answers times out.
    let op = n.start(Request::Ping(real), now);
    n.tick(now + QUERY_TIMEOUT);
    let d = n.poll_event().unwrap();
    assert_eq!((d.op, d.outcome), (op, Outcome::Pong(None)));
}

#[test]
fn saved_state_round_trips() {
    let mut net = Net::new(12, 0.0, 4);
    net.run(Duration::from_secs(10));
    let n = &net.nodes[&addr(3)];
    let saved = n.save_state(net.now);
    let (id, nodes) = load_state(&saved).unwrap();
    assert_eq!(id, n.id());
    assert_eq!(nodes.len(), n.table.len());
    assert!(load_state(b"garbage").is_none());
}

/// An operation started before the node has bootstrapped waits for the first nodes and then
/// runs at once (not at the next bootstrap retry).
#[test]
fn an_early_operation_runs_as_soon_as_the_table_has_a_node() {
    let mut net = Net::new(1, 0.0, 8);
    let key = SigningKey::from_bytes(&[6; 32]);
    net.op(0, Request::Put(signed(&key, 1, b"1:y")));
    let now = net.now;
    let mut b = Node::new([0xab; 20], loopback(), 78, now);
    b.set_bootstrap(vec![addr(0)]);
    net.nodes.insert(addr(1), b);
    let k = key.verifying_key().to_bytes();
    let d = net.op(
        1,
        Request::Get {
            target: mutable_target(&k, b""),
            kind: ItemKind::Any,
        },
    );
    assert!(matches!(d.outcome, Outcome::Item(Some(_))), "{d:?}");
    assert!(d.elapsed < Duration::from_secs(1), "{:?}", d.elapsed);
}

/// BEP 42: once three nodes agree on a public address, our id conforms to it; a conforming
/// newcomer displaces a non-conforming node from a full bucket.
#[test]
fn bep42_id_follows_the_voted_external_address() {
    let now = Instant::now();
    let mut n = Node::new([0x11; 20], Settings::default(), 9, now);
    let public = IpAddr::V4(Ipv4Addr::new(124, 31, 75, 21));
    assert!(!bep42::conforms(public, &n.id()));
    for i in 0..3u8 {
        let from = crate::sa4(Ipv4Addr::new(10, 0, 0, i + 1), 6881);
        n.start(Request::Ping(from), now);
        let (_, pkt) = n.poll_transmit().unwrap();
        let q = Message::decode(&pkt).unwrap();
        let reply = Message {
            tid: q.tid,
            id: Some([i + 1; 20]),
            read_only: false,
            your_ip: Some(SocketAddr::new(public, 6881)),
            body: Body::Response(Response::default()),
        };
        n.handle(from, &reply.encode(), now);
    }
    assert_eq!(n.external_ip, Some(public));
    assert!(bep42::conforms(public, &n.id()));
    assert_eq!(n.table.len(), 3, "the nodes stay, re-bucketed");
}

/// The port mapping's external address is taken at once (no votes needed) and the id conforms.
#[test]
fn external_address_from_port_mapping_sets_a_conforming_id() {
    let now = Instant::now();
    let mut n = Node::new([0x11; 20], Settings::default(), 9, now);
    let public = IpAddr::V4(Ipv4Addr::new(124, 31, 75, 21));
    n.set_external_ip(public, now);
    assert_eq!(n.external_ip, Some(public));
    assert!(bep42::conforms(public, &n.id()));
    let id = n.id();
    n.set_external_ip(public, now);
    assert_eq!(n.id(), id, "an id that conforms is kept");
}
