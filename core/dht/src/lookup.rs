//! Iterative lookups (BEP 5's find_node / get_peers walk): ask the α closest unasked nodes, merge
//! the closer nodes they return, and stop when the K closest known nodes have all answered or
//! failed. Pure: the caller sends the queries [`Lookup::next`] returns and feeds back replies and
//! timeouts with the time.

use crate::krpc::NodeInfo;
use crate::routing::K;
use crate::{distance, Id};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Queries in flight at once.
pub const ALPHA: usize = 3;
/// A query unanswered for this long has failed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(4);
/// A query unanswered for this long stops holding a slot: the next candidate is asked meanwhile
/// (a late answer still counts), so one lost packet does not stall the lookup for the timeout.
pub const SLOW_AFTER: Duration = Duration::from_millis(1000);
/// Candidates kept (the closest ones): bounds memory whatever replies say.
const MAX_CANDIDATES: usize = 8 * K;
/// Peers collected by one get_peers lookup.
const MAX_PEERS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    New,
    Asked(Instant),
    /// Answered, with the write token it gave (get_peers, BEP 44 get).
    Answered(Option<Vec<u8>>),
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    info: NodeInfo,
    dist: Id,
    status: Status,
}

#[derive(Debug, Clone)]
pub struct Lookup {
    pub target: Id,
    cands: Vec<Candidate>,
    seen: HashSet<Id>,
    pub peers: Vec<SocketAddr>,
    peer_set: HashSet<SocketAddr>,
    pub queries_sent: usize,
}

impl Lookup {
    pub fn new(target: Id, seeds: impl IntoIterator<Item = NodeInfo>) -> Lookup {
        let mut l = Lookup {
            target,
            cands: Vec::new(),
            seen: HashSet::new(),
            peers: Vec::new(),
            peer_set: HashSet::new(),
            queries_sent: 0,
        };
        l.add_nodes(seeds);
        l
    }

    /// Offers nodes heard of elsewhere (a bootstrap router's reply).
    pub fn add_nodes(&mut self, nodes: impl IntoIterator<Item = NodeInfo>) {
        for n in nodes {
            if self.seen.insert(n.id) {
                self.cands.push(Candidate {
                    info: n,
                    dist: distance(&n.id, &self.target),
                    status: Status::New,
                });
            }
        }
        self.cands.sort_by_key(|c| c.dist);
        // Far candidates we will never ask go; ones asked stay so replies still match.
        let mut kept = 0;
        self.cands.retain(|c| {
            kept += 1;
            kept <= MAX_CANDIDATES || c.status != Status::New
        });
    }

    /// The K closest candidates that have neither failed nor (once someone has answered) gone
    /// slow: the ones the lookup waits for and asks next.
    fn frontier(&self, now: Instant) -> impl Iterator<Item = &Candidate> {
        let any_answered = self
            .cands
            .iter()
            .any(|c| matches!(c.status, Status::Answered(_)));
        self.cands
            .iter()
            .filter(move |c| match c.status {
                Status::Failed => false,
                Status::Asked(t) => !any_answered || now.duration_since(t) < SLOW_AFTER,
                _ => true,
            })
            .take(K)
    }

    /// Nodes to query now (marks them asked).
    pub fn next(&mut self, now: Instant) -> Vec<NodeInfo> {
        for c in &mut self.cands {
            if matches!(c.status, Status::Asked(t) if now.duration_since(t) >= QUERY_TIMEOUT) {
                c.status = Status::Failed;
            }
        }
        let in_flight = self
            .cands
            .iter()
            .filter(|c| matches!(c.status, Status::Asked(t) if now.duration_since(t) < SLOW_AFTER))
            .count();
        let want: Vec<Id> = self
            .frontier(now)
            .filter(|c| c.status == Status::New)
            .take(ALPHA.saturating_sub(in_flight))
            .map(|c| c.info.id)
            .collect();
        let mut out = Vec::new();
        for c in &mut self.cands {
            if want.contains(&c.info.id) {
                c.status = Status::Asked(now);
                out.push(c.info);
            }
        }
        self.queries_sent += out.len();
        out
    }

    /// A reply from `id`: the nodes it knows nearer the target, peers, and its token. Returns
    /// the peers not seen before (callers hand them out before the lookup ends).
    pub fn on_reply(
        &mut self,
        id: &Id,
        nodes: &[NodeInfo],
        peers: &[SocketAddr],
        token: Option<Vec<u8>>,
    ) -> Vec<SocketAddr> {
        let Some(c) = self.cands.iter_mut().find(|c| c.info.id == *id) else {
            return Vec::new(); // not ours to ask: ignore (a forged or late reply)
        };
        if !matches!(c.status, Status::Asked(_)) {
            return Vec::new();
        }
        c.status = Status::Answered(token);
        let mut new = Vec::new();
        for p in peers {
            if self.peers.len() < MAX_PEERS && self.peer_set.insert(*p) {
                self.peers.push(*p);
                new.push(*p);
            }
        }
        self.add_nodes(nodes.iter().copied());
        new
    }

    pub fn on_timeout(&mut self, id: &Id) {
        if let Some(c) = self.cands.iter_mut().find(|c| c.info.id == *id) {
            if matches!(c.status, Status::Asked(_)) {
                c.status = Status::Failed;
            }
        }
    }

    /// Done when every one of the K closest candidates that neither failed nor went slow has
    /// answered. A slow node (silent for [`SLOW_AFTER`]) does not hold the lookup for the full
    /// timeout, as in libtorrent: a dead node in the table costs 1 s, not 4. Until someone has
    /// answered, slow queries still count (a lossy start must not end the lookup empty).
    pub fn done(&self, now: Instant) -> bool {
        self.frontier(now)
            .all(|c| matches!(c.status, Status::Answered(_)))
    }

    /// The closest nodes that answered, with their tokens (where announce_peer or put go).
    pub fn closest_answered(&self, n: usize) -> Vec<(NodeInfo, Option<Vec<u8>>)> {
        self.cands
            .iter()
            .filter_map(|c| match &c.status {
                Status::Answered(t) => Some((c.info, t.clone())),
                _ => None,
            })
            .take(n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RoutingTable;
    use std::net::Ipv4Addr;

    /// A deterministic pseudo-random id.
    fn rid(seed: u64) -> Id {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut id = [0u8; 20];
        for b in &mut id {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        id
    }

    /// A simulated network of 300 nodes, each with a Kademlia routing table offered every other
    /// node in a scrambled order (K per bucket: dense near itself, sparse far away); 10 % never
    /// answer. A lookup from a few bootstrap nodes must find the true closest live nodes.
    #[test]
    fn finds_the_closest_nodes_in_a_simulated_network() {
        let now = Instant::now();
        let n = 300usize;
        let infos: Vec<NodeInfo> = (0..n)
            .map(|i| NodeInfo {
                id: rid(i as u64 + 1),
                addr: crate::sa4(
                    Ipv4Addr::new(127, 0, (i / 250) as u8, (i % 250) as u8),
                    6881,
                ),
            })
            .collect();
        let dead: HashSet<Id> = infos.iter().step_by(10).map(|i| i.id).collect();
        let tables: Vec<RoutingTable> = (0..n)
            .map(|i| {
                let mut t = RoutingTable::new(infos[i].id);
                t.max_per_ip = 0;
                for j in 0..n {
                    let other = (i * 7 + j * 13 + 1) % n;
                    t.insert(infos[other], true, now);
                }
                t
            })
            .collect();
        let by_id = |id: &Id| infos.iter().position(|x| x.id == *id).unwrap();
        for probe in 0..5u64 {
            let target = rid(1000 + probe);
            let mut l = Lookup::new(target, infos[..3].iter().copied());
            let mut rounds = 0;
            let mut t = now;
            while !l.done(t) {
                rounds += 1;
                assert!(rounds < 200, "the lookup does not converge");
                let ask = l.next(t);
                for node in ask {
                    if dead.contains(&node.id) {
                        continue; // times out
                    }
                    let reply = tables[by_id(&node.id)].closest(&target, K, t);
                    l.on_reply(&node.id, &reply, &[], Some(vec![1]));
                }
                t += QUERY_TIMEOUT; // whatever is still asked has now failed
            }
            let mut truth: Vec<&NodeInfo> =
                infos.iter().filter(|i| !dead.contains(&i.id)).collect();
            truth.sort_by_key(|i| distance(&i.id, &target));
            let found: Vec<Id> = l.closest_answered(K).iter().map(|(n, _)| n.id).collect();
            assert_eq!(
                found[0], truth[0].id,
                "probe {probe}: the closest live node"
            );
            let hits = truth[..K].iter().filter(|t| found.contains(&t.id)).count();
            assert!(
                hits >= K - 1,
                "probe {probe}: {hits} of the {K} closest found"
            );
            assert!(
                l.queries_sent < 80,
                "probe {probe}: {} queries",
                l.queries_sent
            );
        }
    }

    #[test]
    fn replies_from_strangers_and_repeats_are_ignored() {
        let now = Instant::now();
        let a = NodeInfo {
            id: rid(1),
            addr: crate::sa4(Ipv4Addr::LOCALHOST, 1),
        };
        let mut l = Lookup::new(rid(9), [a]);
        // Unasked: ignored.
        l.on_reply(&a.id, &[], &[crate::sa4(Ipv4Addr::LOCALHOST, 2)], None);
        assert!(l.peers.is_empty());
        assert_eq!(l.next(now), vec![a]);
        let stranger = rid(77);
        l.on_reply(&stranger, &[], &[crate::sa4(Ipv4Addr::LOCALHOST, 3)], None);
        assert!(l.peers.is_empty());
        l.on_reply(
            &a.id,
            &[],
            &[crate::sa4(Ipv4Addr::LOCALHOST, 4)],
            Some(vec![9]),
        );
        l.on_reply(&a.id, &[], &[crate::sa4(Ipv4Addr::LOCALHOST, 5)], None);
        assert_eq!(l.peers, vec![crate::sa4(Ipv4Addr::LOCALHOST, 4)]);
        assert!(l.done(now));
        assert_eq!(l.closest_answered(8), vec![(a, Some(vec![9]))]);
    }

    #[test]
    fn a_silent_node_delays_the_end_by_slow_after_not_the_timeout() {
        let t0 = Instant::now();
        let node = |i: u64| NodeInfo {
            id: rid(i),
            addr: crate::sa4(Ipv4Addr::LOCALHOST, i as u16),
        };
        let target = rid(50);
        let mut l = Lookup::new(target, (1..=3).map(node));
        let asked = l.next(t0);
        assert_eq!(asked.len(), 3);
        // Two answer with nothing closer; one stays silent.
        for n in &asked[..2] {
            l.on_reply(&n.id, &[], &[], None);
        }
        assert!(!l.done(t0), "the silent node is still young");
        let later = t0 + SLOW_AFTER;
        assert!(l.done(later), "a slow node does not hold the lookup");
        // Before anyone answers, slow nodes still count.
        let mut quiet = Lookup::new(target, (1..=3).map(node));
        quiet.next(t0);
        assert!(!quiet.done(later));
        quiet.next(t0 + QUERY_TIMEOUT); // marks them failed
        assert!(quiet.done(t0 + QUERY_TIMEOUT));
    }
}
