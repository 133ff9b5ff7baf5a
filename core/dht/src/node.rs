//! The whole DHT node as one sans-IO state machine: it answers queries ([`Server`]), keeps the
//! routing table, runs operations (lookups, announces, BEP 44 get and put, pings) and its own
//! maintenance (bootstrap, bucket refresh, token rotation). The socket task feeds it datagrams and
//! the time ([`Node::handle`], [`Node::tick`]) and sends what [`Node::poll_transmit`] returns;
//! finished operations come out of [`Node::poll_event`]. Tests run many nodes on a simulated
//! network with no socket and no clock.
//!
//! Bounds (a hostile node can grow neither our memory nor our traffic): queries per source IP are
//! rate-limited (a setting: loopback test networks run every node on one address); replies are
//! matched to the transaction *and* the address we asked, so unsolicited or spoofed replies are
//! dropped; transactions in flight, operations and lookup candidates are capped; every answer is
//! bounded by the [`Server`].

use crate::bep42;
use crate::items::{self, immutable_target, mutable_target};
use crate::krpc::{Body, Message, MutablePut, NodeInfo, Query, Response};
use crate::lookup::{Lookup, QUERY_TIMEOUT};
use crate::routing::{Insert, RoutingTable, K};
use crate::server::Server;
use crate::Id;
use ccbt_core::bencode::{self, OwnedValue as V};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Settings a deployment may change (loopback test networks relax the per-IP limits).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Routing-table entries from one IP (0 = no limit).
    pub max_nodes_per_ip: usize,
    /// Queries answered per source IP per second, with a burst of twice that (0 = no limit).
    pub queries_per_ip_per_sec: u32,
    /// BEP 43: ask others not to add us to their tables (we answer nothing).
    pub read_only: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_nodes_per_ip: 1,
            queries_per_ip_per_sec: 20,
            read_only: false,
        }
    }
}

/// Counters for `ccbt dht status`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub queries_in: u64,
    pub queries_out: u64,
    pub replies_in: u64,
    pub errors_in: u64,
    pub timeouts: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub malformed: u64,
    pub rate_limited: u64,
    /// Replies with a transaction id we did not issue, or from another address.
    pub unsolicited: u64,
    /// BEP 44 values that failed verification (wrong hash, key or signature).
    pub bad_items: u64,
}

pub type OpId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    Immutable,
    /// Either kind (a 40-hex target typed by a user): a value with a key is checked as mutable
    /// with an empty salt, one without as immutable.
    Any,
    /// `k`: the public key if known (a share id is only the target, SHA-1 of key and salt; the
    /// key then comes with the value and must hash to the target). `min_seq`: only values newer
    /// than this are wanted (nodes at or below it send no value).
    Mutable {
        k: Option<[u8; 32]>,
        salt: Vec<u8>,
        min_seq: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutItem {
    /// A bencoded value.
    Immutable(Vec<u8>),
    /// A bencoded value, signed.
    Mutable { v: Vec<u8>, m: MutablePut },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A lookup of our own id from the bootstrap nodes: fills the routing table.
    Bootstrap,
    FindNode(Id),
    /// Peers for an info-hash; with `announce`, then announce_peer to the closest nodes that gave
    /// a token (`port` 0: implied port, the source port of the packet).
    GetPeers {
        info_hash: Id,
        announce: Option<u16>,
    },
    Get {
        target: Id,
        kind: ItemKind,
    },
    Put(PutItem),
    Ping(SocketAddr),
}

/// A verified BEP 44 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundItem {
    pub v: Vec<u8>,
    /// Mutable items: key, salt, seq and signature (verified).
    pub mutable: Option<MutablePut>,
    /// Nodes that returned this value (or, for mutable items, this seq).
    pub seen: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Nodes(Vec<NodeInfo>),
    Peers {
        peers: Vec<SocketAddr>,
        announced: usize,
    },
    Item(Option<FoundItem>),
    Put {
        target: Id,
        /// Nodes that stored it (our own store not counted).
        stored: usize,
        /// The last refusal, if any (for example BEP 44 error 302).
        error: Option<(i64, String)>,
    },
    Pong(Option<Id>),
}

/// A finished operation: its result and what it cost.
#[derive(Debug, Clone)]
pub struct Done {
    pub op: OpId,
    pub outcome: Outcome,
    pub queries: usize,
    pub elapsed: Duration,
    /// When the first result came: the first peers (get_peers, also handed out then through
    /// [`Node::poll_found`]) or the first verified item (get). A caller can act on it before
    /// the lookup ends, so it is the latency users feel.
    pub first: Option<Duration>,
}

/// An operation waits this long for the routing table to get its first node.
const WAIT_FOR_NODES: Duration = Duration::from_secs(15);
/// A lookup ends after this long even if some of the closest nodes never answered.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(30);
/// Operations running at once; more are refused (finished empty).
const MAX_OPS: usize = 256;
/// Transactions in flight at once (beyond it, maintenance queries are skipped).
const MAX_PENDING: usize = 2048;
/// Source IPs tracked by the rate limiter.
const MAX_LIMITER_IPS: usize = 4096;
/// Bootstrap again this often while the table is nearly empty, and this often while it is empty.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(10);
const BOOTSTRAP_RETRY_EMPTY: Duration = Duration::from_secs(1);
/// How often one stale bucket is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Votes from distinct nodes before we believe an external address (BEP 42).
const IP_VOTES: usize = 3;

#[derive(Debug, Clone, Copy)]
enum Why {
    Op(OpId),
    Bootstrap,
    Maintenance,
}

#[derive(Debug)]
struct Pending {
    addr: SocketAddr,
    id: Option<Id>,
    sent: Instant,
    why: Why,
}

#[derive(Debug)]
enum Phase {
    Waiting,
    Lookup(Box<Lookup>),
    Store {
        outstanding: usize,
        acks: usize,
        peers: Vec<SocketAddr>,
        error: Option<(i64, String)>,
    },
    Ping,
}

#[derive(Debug)]
struct Op {
    req: Request,
    started: Instant,
    phase: Phase,
    best: Option<FoundItem>,
    queries: usize,
    first: Option<Instant>,
}

/// Per-IP token bucket for incoming queries.
#[derive(Debug, Default)]
struct Limiter {
    ips: HashMap<IpAddr, (f64, Instant)>,
}

impl Limiter {
    fn allow(&mut self, ip: IpAddr, per_sec: u32, now: Instant) -> bool {
        if per_sec == 0 {
            return true;
        }
        let burst = 2.0 * per_sec as f64;
        if self.ips.len() >= MAX_LIMITER_IPS && !self.ips.contains_key(&ip) {
            // Forget buckets that have refilled (they carry no information).
            self.ips.retain(|_, (tokens, t)| {
                *tokens + now.duration_since(*t).as_secs_f64() * f64::from(per_sec) < burst
            });
            if self.ips.len() >= MAX_LIMITER_IPS {
                return false;
            }
        }
        let (tokens, t) = self.ips.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*t).as_secs_f64() * per_sec as f64).min(burst);
        *t = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Node {
    pub table: RoutingTable,
    pub server: Server,
    pub settings: Settings,
    pub stats: Stats,
    rng: StdRng,
    next_tid: u16,
    pending: HashMap<[u8; 2], Pending>,
    ops: BTreeMap<OpId, Op>,
    next_op: OpId,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    done: VecDeque<Done>,
    /// Peers found by running get_peers lookups, before they end (bounded by the lookups').
    found: VecDeque<(OpId, Vec<SocketAddr>)>,
    limiter: Limiter,
    bootstrap: Vec<SocketAddr>,
    last_bootstrap: Option<Instant>,
    last_refresh: Instant,
    /// Info-hashes we announced ourselves for, with our port: we answer get_peers with ourselves
    /// too, so a network of two nodes works.
    self_peers: HashMap<Id, u16>,
    /// Our address as we bind it, if specific; else learnt from votes.
    pub local_ip: Option<IpAddr>,
    ip_votes: HashMap<IpAddr, Vec<Id>>,
    pub external_ip: Option<IpAddr>,
}

impl Node {
    /// A node with id `id` (see [`bep42::id_for`]); `seed` seeds its randomness.
    pub fn new(id: Id, settings: Settings, seed: u64, now: Instant) -> Node {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut secret = [0u8; 16];
        rng.fill_bytes(&mut secret);
        let mut table = RoutingTable::new(id);
        table.max_per_ip = settings.max_nodes_per_ip;
        Node {
            table,
            server: Server::new(secret, now),
            settings,
            stats: Stats::default(),
            rng,
            next_tid: 0,
            pending: HashMap::new(),
            ops: BTreeMap::new(),
            next_op: 1,
            outbox: VecDeque::new(),
            done: VecDeque::new(),
            found: VecDeque::new(),
            limiter: Limiter::default(),
            bootstrap: Vec::new(),
            last_bootstrap: None,
            last_refresh: now,
            self_peers: HashMap::new(),
            local_ip: None,
            ip_votes: HashMap::new(),
            external_ip: None,
        }
    }

    pub fn id(&self) -> Id {
        self.table.own_id()
    }

    /// Where to bootstrap from (known routers, saved nodes); the next tick starts.
    pub fn set_bootstrap(&mut self, addrs: Vec<SocketAddr>) {
        self.bootstrap = addrs;
        self.last_bootstrap = None;
    }

    pub fn bootstrap_nodes(&self) -> &[SocketAddr] {
        &self.bootstrap
    }

    /// Nodes saved from an earlier run: offered to the table as questionable (a failed query
    /// evicts them) and asked first.
    pub fn add_saved(&mut self, nodes: &[NodeInfo], now: Instant) {
        for n in nodes {
            self.table.insert(*n, false, now);
        }
    }

    /// Operations running.
    pub fn ops_running(&self) -> usize {
        self.ops.len()
    }

    /// Starts an operation; its result comes out of [`Node::poll_event`].
    pub fn start(&mut self, req: Request, now: Instant) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        if self.ops.len() >= MAX_OPS {
            let outcome = empty_outcome(&req);
            self.done.push_back(Done {
                op,
                outcome,
                queries: 0,
                elapsed: Duration::ZERO,
                first: None,
            });
            return op;
        }
        // Our own announces and puts are also kept here: we are a node like any other.
        match &req {
            Request::GetPeers {
                info_hash,
                announce: Some(port),
            } => {
                self.self_peers.insert(*info_hash, *port);
            }
            Request::Put(p) => {
                let (v, m) = match p {
                    PutItem::Immutable(v) => (v.clone(), None),
                    PutItem::Mutable { v, m } => (v.clone(), Some(m.clone())),
                };
                let _ = self.server.items.put(v, m, now);
            }
            _ => {}
        }
        let phase = if let Request::Ping(addr) = req {
            self.query(addr, None, Query::Ping, Why::Op(op), now);
            Phase::Ping
        } else {
            Phase::Waiting
        };
        self.ops.insert(
            op,
            Op {
                req,
                started: now,
                phase,
                best: None,
                queries: 0,
                first: None,
            },
        );
        self.advance(op, now);
        op
    }

    /// Stops announcing ourselves for `info_hash` in get_peers answers.
    pub fn forget_self_peer(&mut self, info_hash: &Id) {
        self.self_peers.remove(info_hash);
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let p = self.outbox.pop_front()?;
        self.stats.packets_out += 1;
        self.stats.bytes_out += p.1.len() as u64;
        Some(p)
    }

    pub fn poll_event(&mut self) -> Option<Done> {
        self.done.pop_front()
    }

    /// Peers a running get_peers lookup has just found (they are in its final outcome too).
    pub fn poll_found(&mut self) -> Option<(OpId, Vec<SocketAddr>)> {
        self.found.pop_front()
    }

    fn send(&mut self, to: SocketAddr, msg: &Message) {
        self.outbox.push_back((to, msg.encode()));
    }

    fn query(&mut self, to: SocketAddr, id: Option<Id>, q: Query, why: Why, now: Instant) {
        if self.pending.len() >= MAX_PENDING {
            if let Why::Op(op) = why {
                // Treated as a timeout at once, so the operation does not wait for nothing.
                self.route_failure(op, id, now);
            }
            return;
        }
        let mut tid;
        loop {
            self.next_tid = self.next_tid.wrapping_add(1);
            tid = self.next_tid.to_be_bytes();
            if !self.pending.contains_key(&tid) {
                break;
            }
        }
        self.pending.insert(
            tid,
            Pending {
                addr: to,
                id,
                sent: now,
                why,
            },
        );
        self.stats.queries_out += 1;
        if let Why::Op(op) = why {
            if let Some(o) = self.ops.get_mut(&op) {
                o.queries += 1;
            }
        }
        let msg = Message {
            tid: tid.to_vec(),
            id: Some(self.id()),
            read_only: self.settings.read_only,
            your_ip: None,
            body: Body::Query(q),
        };
        self.send(to, &msg);
    }

    /// A datagram from `from` (already known to start with `d`).
    pub fn handle(&mut self, from: SocketAddr, pkt: &[u8], now: Instant) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += pkt.len() as u64;
        let msg = match Message::decode(pkt) {
            Ok(m) => m,
            Err(_) => {
                // Never answered: an error reply would let a spoofed source use us to reflect.
                self.stats.malformed += 1;
                return;
            }
        };
        match &msg.body {
            Body::Query(_) => self.on_query(from, msg, now),
            Body::Response(_) | Body::Error { .. } => self.on_reply(from, msg, now),
        }
    }

    fn on_query(&mut self, from: SocketAddr, msg: Message, now: Instant) {
        self.stats.queries_in += 1;
        if self.settings.read_only {
            return;
        }
        if !self
            .limiter
            .allow(from.ip(), self.settings.queries_per_ip_per_sec, now)
        {
            self.stats.rate_limited += 1;
            return;
        }
        if let (Some(id), false) = (msg.id, msg.read_only) {
            if from.port() != 0 {
                let ins = self.table.insert(NodeInfo { id, addr: from }, false, now);
                self.on_insert(ins, now);
            }
        }
        let Some(mut reply) = self.server.answer(&self.table, from, &msg, now) else {
            return;
        };
        if let (Body::Query(Query::GetPeers { info_hash }), Body::Response(r)) =
            (&msg.body, &mut reply.body)
        {
            if let Some(port) = self.self_peers.get(info_hash) {
                if let Some(ip) = self.own_ip_for(from) {
                    let me = SocketAddr::new(ip, *port);
                    if !r.values.contains(&me) {
                        r.values.push(me);
                    }
                }
            }
        }
        self.send(from, &reply);
    }

    /// The address a peer at `to` reaches us at.
    fn own_ip_for(&self, to: SocketAddr) -> Option<IpAddr> {
        self.local_ip
            .filter(|ip| !ip.is_unspecified())
            .or(self.external_ip)
            .filter(|ip| ip.is_ipv4() == to.is_ipv4())
            .or_else(|| {
                to.ip().is_loopback().then_some(match to {
                    SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                })
            })
    }

    fn on_insert(&mut self, ins: Insert, now: Instant) {
        if let Insert::Full { ping: Some(n) } = ins {
            if !self
                .pending
                .values()
                .any(|p| p.id == Some(n.id) && matches!(p.why, Why::Maintenance))
            {
                self.query(n.addr, Some(n.id), Query::Ping, Why::Maintenance, now);
            }
        }
    }

    fn on_reply(&mut self, from: SocketAddr, msg: Message, now: Instant) {
        let Ok(tid) = <[u8; 2]>::try_from(msg.tid.as_slice()) else {
            self.stats.unsolicited += 1;
            return;
        };
        match self.pending.get(&tid) {
            Some(p) if p.addr == from => {}
            _ => {
                self.stats.unsolicited += 1;
                return;
            }
        }
        let p = self.pending.remove(&tid).expect("checked");
        let (resp, error) = match msg.body {
            Body::Response(r) => {
                self.stats.replies_in += 1;
                (Some(r), None)
            }
            Body::Error { code, message } => {
                self.stats.errors_in += 1;
                (None, Some((code, message)))
            }
            Body::Query(_) => return,
        };
        // A reply from another id than the one we asked is not the node we meant.
        let id = match (msg.id, p.id) {
            (Some(got), Some(want)) if got != want => {
                if let Why::Op(op) = p.why {
                    self.route_failure(op, p.id, now);
                }
                return;
            }
            (got, want) => got.or(want),
        };
        if let (Some(id), Some(_), false) = (id, &resp, msg.read_only) {
            let ins = self.table.insert(NodeInfo { id, addr: from }, true, now);
            self.on_insert(ins, now);
        }
        if let (Some(ip), Some(id)) = (msg.your_ip, id) {
            self.vote_ip(ip.ip(), id, now);
        }
        match p.why {
            Why::Maintenance => {}
            Why::Bootstrap => {
                if let Some(r) = &resp {
                    // Start (or feed) the lookup of our own id with what the router knows.
                    let running = self
                        .ops
                        .iter()
                        .find(|(_, o)| o.req == Request::Bootstrap)
                        .map(|(k, _)| *k);
                    let op = running.unwrap_or_else(|| self.start(Request::Bootstrap, now));
                    if let Some(Op {
                        phase: Phase::Lookup(l),
                        ..
                    }) = self.ops.get_mut(&op)
                    {
                        let own = self.table.own_id();
                        l.add_nodes(r.nodes.iter().filter(|n| n.id != own).copied());
                    }
                    self.advance(op, now);
                }
            }
            Why::Op(op) => {
                let Some(id) = id else {
                    self.route_failure(op, None, now);
                    return;
                };
                self.route_reply(op, id, resp, error, now);
            }
        }
    }

    /// BEP 42: what nodes say our address is; once enough distinct nodes agree on a public
    /// address our id does not conform to, we take a conforming id (same table, re-bucketed).
    fn vote_ip(&mut self, ip: IpAddr, voter: Id, now: Instant) {
        if self.ip_votes.len() > 16 && !self.ip_votes.contains_key(&ip) {
            return;
        }
        let v = self.ip_votes.entry(ip).or_default();
        if !v.contains(&voter) && v.len() < 64 {
            v.push(voter);
        }
        if let Some((best, _)) = self
            .ip_votes
            .iter()
            .filter(|(_, v)| v.len() >= IP_VOTES)
            .max_by_key(|(_, v)| v.len())
        {
            self.external_ip = Some(*best);
        }
        self.conform_id(now);
    }

    /// Our external address as the port mapping on our router reports it: more certain than
    /// votes, so it is taken at once (BEP 42: the id must derive from it).
    pub fn set_external_ip(&mut self, ip: IpAddr, now: Instant) {
        // An IPv6 node has no use for the IPv4 address (and the other way round).
        if self.local_ip.is_some_and(|l| l.is_ipv4() != ip.is_ipv4()) {
            return;
        }
        self.external_ip = Some(ip);
        self.conform_id(now);
    }

    fn conform_id(&mut self, now: Instant) {
        if let Some(ip) = self.external_ip {
            if !bep42::exempt(ip) && !bep42::conforms(ip, &self.id()) {
                let id = Node::random_id(&mut self.rng, Some(ip));
                self.table = self.table.with_new_id(id, now);
            }
        }
    }

    fn route_reply(
        &mut self,
        op: OpId,
        id: Id,
        resp: Option<Response>,
        error: Option<(i64, String)>,
        now: Instant,
    ) {
        let own = self.id();
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        match &mut o.phase {
            Phase::Ping => {
                let outcome = Outcome::Pong(resp.is_some().then_some(id));
                self.finish(op, outcome, now);
                return;
            }
            Phase::Lookup(l) => match resp {
                Some(r) => {
                    if let (Request::Get { target, kind }, Some(item)) = (&o.req, &r.item) {
                        match checked_item(target, kind, item) {
                            Some(found) => {
                                o.first.get_or_insert(now);
                                keep_best(&mut o.best, found)
                            }
                            None if !item.v.is_empty() => self.stats.bad_items += 1,
                            None => {}
                        }
                    }
                    // Never a candidate: ourselves (the nodes we asked know us by now).
                    let nodes: Vec<NodeInfo> =
                        r.nodes.iter().filter(|n| n.id != own).copied().collect();
                    let new = l.on_reply(&id, &nodes, &r.values, r.token.clone());
                    if !new.is_empty() {
                        o.first.get_or_insert(now);
                        self.found.push_back((op, new));
                    }
                }
                None => l.on_timeout(&id),
            },
            Phase::Store {
                outstanding,
                acks,
                error: err,
                ..
            } => {
                *outstanding = outstanding.saturating_sub(1);
                if resp.is_some() {
                    *acks += 1;
                } else if error.is_some() {
                    *err = error;
                }
            }
            Phase::Waiting => {}
        }
        self.advance(op, now);
    }

    /// A query of `op` to `id` failed (timeout, or a reply that did not match).
    fn route_failure(&mut self, op: OpId, id: Option<Id>, now: Instant) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        match &mut o.phase {
            Phase::Ping => {
                self.finish(op, Outcome::Pong(None), now);
                return;
            }
            Phase::Lookup(l) => {
                if let Some(id) = id {
                    l.on_timeout(&id);
                }
            }
            Phase::Store { outstanding, .. } => *outstanding = outstanding.saturating_sub(1),
            Phase::Waiting => {}
        }
        self.advance(op, now);
    }

    fn finish(&mut self, op: OpId, outcome: Outcome, now: Instant) {
        if let Some(o) = self.ops.remove(&op) {
            self.done.push_back(Done {
                op,
                outcome,
                queries: o.queries,
                elapsed: now.duration_since(o.started),
                first: o.first.map(|f| f.duration_since(o.started)),
            });
        }
    }

    /// Moves an operation on: starts its lookup, sends its next queries, or ends it.
    fn advance(&mut self, op: OpId, now: Instant) {
        let own = self.id();
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let target = target_of(&o.req, own);
        if let Phase::Waiting = o.phase {
            let seeds = self.table.closest(&target, 2 * K, now);
            if seeds.is_empty() && o.req != Request::Bootstrap {
                if now.duration_since(o.started) >= WAIT_FOR_NODES {
                    let outcome = empty_outcome(&o.req);
                    self.finish(op, outcome, now);
                }
                return;
            }
            o.phase = Phase::Lookup(Box::new(Lookup::new(target, seeds)));
        }
        let mut sends = Vec::new();
        let mut finish = None;
        let mut store = None;
        let expired = now.duration_since(o.started) >= LOOKUP_DEADLINE;
        // An immutable value verifies by its hash alone: the first one found is the answer, no
        // need to walk on (a mutable one may have a higher seq closer to the target).
        let found_immutable = o.best.as_ref().is_some_and(|b| b.mutable.is_none());
        match &mut o.phase {
            Phase::Lookup(l) if !l.done(now) && !expired && !found_immutable => {
                let q = lookup_query(&o.req, target);
                sends = l.next(now).into_iter().map(|n| (n, q.clone())).collect();
            }
            Phase::Lookup(l) => match &o.req {
                Request::Bootstrap | Request::FindNode(_) => {
                    let nodes = l.closest_answered(K).into_iter().map(|(n, _)| n);
                    finish = Some(Outcome::Nodes(nodes.collect()));
                }
                Request::Get { .. } => finish = Some(Outcome::Item(o.best.take())),
                Request::GetPeers { announce: None, .. } => {
                    finish = Some(Outcome::Peers {
                        peers: std::mem::take(&mut l.peers),
                        announced: 0,
                    })
                }
                Request::GetPeers { .. } | Request::Put(_) => {
                    // The K closest nodes that gave a write token.
                    let targets: Vec<(NodeInfo, Vec<u8>)> = l
                        .closest_answered(usize::MAX)
                        .into_iter()
                        .filter_map(|(n, t)| Some((n, t?)))
                        .take(K)
                        .collect();
                    store = Some((targets, std::mem::take(&mut l.peers)));
                }
                Request::Ping(_) => {}
            },
            Phase::Store {
                outstanding: 0,
                acks,
                peers,
                error,
            } => {
                finish = Some(match &o.req {
                    Request::Put(p) => Outcome::Put {
                        target: put_target(p),
                        stored: *acks,
                        error: error.take(),
                    },
                    _ => Outcome::Peers {
                        peers: std::mem::take(peers),
                        announced: *acks,
                    },
                });
            }
            Phase::Store { .. } | Phase::Waiting | Phase::Ping => {}
        }
        let req = o.req.clone();
        if let Some((targets, peers)) = store {
            o.phase = Phase::Store {
                outstanding: targets.len(),
                acks: 0,
                peers,
                error: None,
            };
            let empty = targets.is_empty();
            for (n, token) in targets {
                self.query(
                    n.addr,
                    Some(n.id),
                    store_query(&req, token),
                    Why::Op(op),
                    now,
                );
            }
            if empty {
                self.advance(op, now);
            }
            return;
        }
        for (n, q) in sends {
            self.query(n.addr, Some(n.id), q, Why::Op(op), now);
        }
        if let Some(outcome) = finish {
            self.finish(op, outcome, now);
        }
    }

    /// Timeouts, operations waiting for nodes, bootstrap, refresh, token rotation. Call it often
    /// (every 100 ms or so) with the time.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<[u8; 2]> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent) >= QUERY_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            let p = self.pending.remove(&t).expect("listed");
            self.stats.timeouts += 1;
            if let Some(id) = p.id {
                self.table.failed(&id, now);
            }
            if let Why::Op(op) = p.why {
                self.route_failure(op, p.id, now);
            }
        }
        let ops: Vec<OpId> = self.ops.keys().copied().collect();
        for op in ops {
            self.advance(op, now);
        }
        let mut fresh = [0u8; 16];
        self.rng.fill_bytes(&mut fresh);
        self.server.maybe_rotate(fresh, now);
        // Bootstrap while the table is small: ask the routers for nodes near us.
        if self.table.len() < K
            && !self.bootstrap.is_empty()
            && self.last_bootstrap.is_none_or(|t| {
                // An empty table is retried soon (a lost reply must not stall every
                // operation waiting for nodes); a small one every BOOTSTRAP_RETRY.
                let every = if self.table.is_empty() {
                    BOOTSTRAP_RETRY_EMPTY
                } else {
                    BOOTSTRAP_RETRY
                };
                now.duration_since(t) >= every
            })
        {
            self.last_bootstrap = Some(now);
            let own = self.id();
            for a in self.bootstrap.clone() {
                self.query(
                    a,
                    None,
                    Query::FindNode { target: own },
                    Why::Bootstrap,
                    now,
                );
            }
            if !self.table.is_empty() && !self.ops.values().any(|o| o.req == Request::Bootstrap) {
                self.start(Request::Bootstrap, now);
            }
        }
        // Refresh one stale bucket at a time (a lookup of a random id in its range).
        if now.duration_since(self.last_refresh) >= REFRESH_EVERY && !self.table.is_empty() {
            self.last_refresh = now;
            if let Some(&i) = self.table.stale_buckets(now).first() {
                let mut r = [0u8; 20];
                self.rng.fill_bytes(&mut r);
                let target = self.table.id_in_bucket(i, &r);
                self.start(Request::FindNode(target), now);
            }
        }
    }

    /// A random id (BEP 42 shaped for `ip` when it is known and public).
    pub fn random_id(rng: &mut impl Rng, ip: Option<IpAddr>) -> Id {
        let mut r = [0u8; 20];
        rng.fill_bytes(&mut r);
        match ip {
            Some(ip) if !bep42::exempt(ip) => bep42::id_for(ip, &r),
            _ => r,
        }
    }

    /// The routing table to save in the data dir: our id and the nodes that are not bad.
    pub fn save_state(&self, now: Instant) -> Vec<u8> {
        let nodes: Vec<NodeInfo> = self
            .table
            .nodes()
            .filter(|e| e.state(now) != crate::routing::State::Bad)
            .map(|e| e.info)
            .collect();
        V::dict([
            ("id", V::bytes(self.id().to_vec())),
            ("nodes", V::bytes(crate::krpc::encode_nodes(&nodes))),
            (
                "nodes6",
                V::bytes(crate::krpc::encode_nodes_of(&nodes, true)),
            ),
        ])
        .encode()
    }
}

/// A saved routing table: our id and nodes. `None` if the bytes are not one.
pub fn load_state(b: &[u8]) -> Option<(Id, Vec<NodeInfo>)> {
    let v = bencode::decode(b).ok()?;
    let d = v.as_dict()?;
    let id: Id = d.get(b"id")?.as_bytes()?.try_into().ok()?;
    let mut nodes = crate::krpc::decode_nodes(d.get(b"nodes")?.as_bytes()?).ok()?;
    if let Some(n6) = d.get(b"nodes6").and_then(|n| n.as_bytes()) {
        nodes.extend(crate::krpc::decode_nodes6(n6).ok()?);
    }
    Some((id, nodes))
}

mod helpers;
use helpers::*;

#[cfg(test)]
mod tests;
