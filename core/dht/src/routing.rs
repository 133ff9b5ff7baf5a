//! The Kademlia routing table (BEP 5): one bucket per distance prefix length (bucket `i` holds
//! nodes whose XOR distance from us starts with `i` zero bits), at most K = 8 nodes each, with a
//! small replacement cache. Pure: callers pass the time in and act on what it returns (ping a
//! questionable node before replacing it, refresh stale buckets).
//!
//! Node states: *good* if it answered us within 15 minutes (or sent us a query and has answered
//! before), *bad* after two queries in a row went unanswered, *questionable* otherwise. A full
//! bucket admits a newcomer only in place of a bad node; a questionable node is pinged first.

use crate::krpc::NodeInfo;
use crate::{distance, Id};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const K: usize = 8;
/// A node that answered within this long is good (BEP 5).
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// Unanswered queries in a row that make a node bad.
pub const BAD_AFTER: u32 = 2;
/// Replacement candidates kept per bucket.
const REPLACEMENTS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Good,
    Questionable,
    Bad,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub info: NodeInfo,
    /// When it last answered one of our queries.
    pub last_answer: Option<Instant>,
    /// When we last heard anything from it.
    pub last_seen: Instant,
    pub fails: u32,
}

impl Entry {
    pub fn state(&self, now: Instant) -> State {
        if self.fails >= BAD_AFTER {
            State::Bad
        } else if self
            .last_answer
            .is_some_and(|t| now.duration_since(t) < GOOD_FOR)
        {
            State::Good
        } else {
            State::Questionable
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    nodes: Vec<Entry>,
    replacements: Vec<Entry>,
    last_changed: Option<Instant>,
}

/// What happened to a node offered to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    Added,
    Updated,
    /// The bucket is full of live nodes: kept as a replacement. If `ping` is set, that
    /// questionable node should be pinged; when it fails twice the newcomer takes its place.
    Full {
        ping: Option<NodeInfo>,
    },
    /// Refused: our own id, or the per-IP limit.
    Refused,
}

#[derive(Debug, Clone)]
pub struct RoutingTable {
    own: Id,
    buckets: Vec<Bucket>,
    /// Most table entries from one IP address (0 = no limit: loopback test networks run every
    /// node on 127.0.0.1).
    pub max_per_ip: usize,
}

fn bucket_index(own: &Id, id: &Id) -> usize {
    let d = distance(own, id);
    let zeros = d
        .iter()
        .position(|b| *b != 0)
        .map_or(160, |i| i * 8 + d[i].leading_zeros() as usize);
    zeros.min(159)
}

impl RoutingTable {
    pub fn new(own: Id) -> RoutingTable {
        RoutingTable {
            own,
            buckets: vec![Bucket::default(); 160],
            max_per_ip: 1,
        }
    }

    pub fn own_id(&self) -> Id {
        self.own
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn per_ip(&self, ip: &IpAddr) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| &b.nodes)
            .filter(|e| &e.info.addr.ip() == ip)
            .count()
    }

    /// Offers a node we heard from; `answered`: it answered a query of ours (else it queried us).
    pub fn insert(&mut self, info: NodeInfo, answered: bool, now: Instant) -> Insert {
        if info.id == self.own {
            return Insert::Refused;
        }
        let i = bucket_index(&self.own, &info.id);
        if let Some(e) = self.buckets[i]
            .nodes
            .iter_mut()
            .find(|e| e.info.id == info.id)
        {
            if e.info.addr != info.addr {
                // Same id from another address: keep the one we know (BEP 42 spirit).
                return Insert::Refused;
            }
            e.last_seen = now;
            if answered {
                e.last_answer = Some(now);
                e.fails = 0;
            }
            return Insert::Updated;
        }
        if self.max_per_ip > 0 && self.per_ip(&info.addr.ip()) >= self.max_per_ip {
            return Insert::Refused;
        }
        let entry = Entry {
            info,
            last_answer: answered.then_some(now),
            last_seen: now,
            fails: 0,
        };
        let b = &mut self.buckets[i];
        if b.nodes.len() < K {
            b.nodes.push(entry);
            b.last_changed = Some(now);
            return Insert::Added;
        }
        if let Some(pos) = b.nodes.iter().position(|e| e.state(now) == State::Bad) {
            b.nodes[pos] = entry;
            b.last_changed = Some(now);
            return Insert::Added;
        }
        // BEP 42: prefer nodes whose id matches their address, without requiring it: a
        // conforming newcomer takes the place of a non-conforming node.
        if crate::bep42::conforms(info.addr.ip(), &info.id) {
            if let Some(pos) = b
                .nodes
                .iter()
                .position(|e| !crate::bep42::conforms(e.info.addr.ip(), &e.info.id))
            {
                b.nodes[pos] = entry;
                b.last_changed = Some(now);
                return Insert::Added;
            }
        }
        let ping = b
            .nodes
            .iter()
            .filter(|e| e.state(now) == State::Questionable)
            .min_by_key(|e| e.last_seen)
            .map(|e| e.info);
        b.replacements.retain(|e| e.info.id != info.id);
        if b.replacements.len() == REPLACEMENTS {
            b.replacements.remove(0);
        }
        b.replacements.push(entry);
        Insert::Full { ping }
    }

    /// A query to `id` went unanswered. A node that turns bad gives its place to the freshest
    /// replacement, if any.
    pub fn failed(&mut self, id: &Id, now: Instant) {
        let i = bucket_index(&self.own, id);
        let b = &mut self.buckets[i];
        let Some(pos) = b.nodes.iter().position(|e| e.info.id == *id) else {
            return;
        };
        b.nodes[pos].fails += 1;
        if b.nodes[pos].state(now) == State::Bad {
            if let Some(r) = b.replacements.pop() {
                b.nodes[pos] = r;
                b.last_changed = Some(now);
            }
        }
    }

    /// Up to `n` non-bad nodes closest to `target`, closest first.
    pub fn closest(&self, target: &Id, n: usize, now: Instant) -> Vec<NodeInfo> {
        let mut all: Vec<&Entry> = self
            .buckets
            .iter()
            .flat_map(|b| &b.nodes)
            .filter(|e| e.state(now) != State::Bad)
            .collect();
        all.sort_by_key(|e| distance(&e.info.id, target));
        all.into_iter().take(n).map(|e| e.info).collect()
    }

    /// Buckets with nodes, or nearer ours than any, untouched for `GOOD_FOR`: each wants a
    /// lookup of a random id in its range (see [`RoutingTable::id_in_bucket`]).
    pub fn stale_buckets(&self, now: Instant) -> Vec<usize> {
        let deepest = self
            .buckets
            .iter()
            .rposition(|b| !b.nodes.is_empty())
            .unwrap_or(0);
        (0..=deepest)
            .filter(|&i| {
                self.buckets[i]
                    .last_changed
                    .is_none_or(|t| now.duration_since(t) >= GOOD_FOR)
            })
            .collect()
    }

    /// An id in bucket `i`: our id with bit `i` flipped and the bits after it from `random`.
    pub fn id_in_bucket(&self, i: usize, random: &Id) -> Id {
        let mut id = self.own;
        for bit in i..160 {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let v = if bit == i {
                self.own[byte] & mask == 0
            } else {
                random[byte] & mask != 0
            };
            if v {
                id[byte] |= mask;
            } else {
                id[byte] &= !mask;
            }
        }
        id
    }

    /// The same nodes under a new own id (after BEP 42 asks for one): re-bucketed.
    pub fn with_new_id(&self, own: Id, now: Instant) -> RoutingTable {
        let mut t = RoutingTable::new(own);
        t.max_per_ip = self.max_per_ip;
        for e in self.nodes() {
            t.insert(e.info, e.last_answer.is_some(), now);
        }
        t
    }

    /// Every node in the table (for saving it in the data dir).
    pub fn nodes(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| &b.nodes)
    }

    /// Nodes and replacements per bucket that has any (for `ccbt dht status`).
    pub fn bucket_sizes(&self) -> Vec<(usize, usize, usize)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.nodes.is_empty() || !b.replacements.is_empty())
            .map(|(i, b)| (i, b.nodes.len(), b.replacements.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn node(id: Id, last: u8) -> NodeInfo {
        NodeInfo {
            id,
            addr: crate::sa4(Ipv4Addr::new(10, 0, 0, last), 6881),
        }
    }

    fn id_with_prefix(own: &Id, zeros: usize, tail: u8) -> Id {
        // Distance from `own` has exactly `zeros` leading zero bits.
        let mut d = [0u8; 20];
        d[zeros / 8] = 0x80 >> (zeros % 8);
        d[19] ^= tail;
        let mut id = *own;
        for i in 0..20 {
            id[i] ^= d[i];
        }
        id
    }

    #[test]
    fn buckets_fill_then_prefer_live_nodes() {
        let own = [0x55; 20];
        let mut t = RoutingTable::new(own);
        t.max_per_ip = 0;
        let now = Instant::now();
        assert_eq!(t.insert(node(own, 1), true, now), Insert::Refused);
        for j in 0..K as u8 {
            let id = id_with_prefix(&own, 3, j + 1);
            assert_eq!(bucket_index(&own, &id), 3);
            assert_eq!(t.insert(node(id, j + 1), true, now), Insert::Added);
        }
        let newcomer = node(id_with_prefix(&own, 3, 100), 100);
        // All good: the newcomer waits as a replacement, nothing to ping.
        assert_eq!(t.insert(newcomer, true, now), Insert::Full { ping: None });
        // Twenty minutes on, every node is questionable: ping the stalest.
        let later = now + Duration::from_secs(20 * 60);
        let first = id_with_prefix(&own, 3, 1);
        match t.insert(newcomer, true, later) {
            Insert::Full { ping: Some(p) } => assert_eq!(p.id, first),
            other => panic!("{other:?}"),
        }
        // It fails twice: the replacement takes its place.
        t.failed(&first, later);
        assert!(t.closest(&first, 1, later)[0].id == first);
        t.failed(&first, later);
        let near = t.closest(&newcomer.id, 1, later);
        assert_eq!(near[0].id, newcomer.id);
        assert_eq!(t.len(), K);
    }

    #[test]
    fn closest_orders_by_xor_distance_and_ip_limit_applies() {
        let own = [0; 20];
        let mut t = RoutingTable::new(own);
        let now = Instant::now();
        for j in 1..=40u8 {
            let mut id = [0u8; 20];
            id[0] = j;
            id[19] = j;
            // Buckets 3 (16..=31) and 2 (32..=40) get more than K: the rest wait as replacements.
            let r = t.insert(node(id, j), true, now);
            assert!(matches!(r, Insert::Added | Insert::Full { .. }), "{r:?}");
        }
        assert_eq!(t.len(), 1 + 2 + 4 + 8 + 8 + 8); // buckets 7 down to 2, K each at most
                                                    // A second node on an address already present is refused (limit 1).
        let mut other = [0u8; 20];
        other[0] = 200;
        assert_eq!(t.insert(node(other, 5), true, now), Insert::Refused);
        let mut target = [0u8; 20];
        target[0] = 7;
        let c = t.closest(&target, 3, now);
        let d: Vec<Id> = c.iter().map(|n| distance(&n.id, &target)).collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(c[0].id[0], 7);
    }

    #[test]
    fn refresh_targets_fall_in_their_bucket() {
        let own = [0xa5; 20];
        let t = RoutingTable::new(own);
        for i in [0, 1, 7, 8, 100, 159] {
            let id = t.id_in_bucket(i, &[0x3c; 20]);
            assert_eq!(bucket_index(&own, &id), i, "bucket {i}");
        }
        assert_eq!(t.stale_buckets(Instant::now()), vec![0]);
    }
}
