//! The piece picker: which blocks to request from which peer. A pure state machine.
//!
//! Strategies: rarest-first (default), sequential, round-robin, and a streaming mode (a priority window
//! ahead of a reader plus the first and last pieces of a file, then rarest-first). Partially
//! downloaded pieces are always finished first (fewer pieces in flight, sooner verified). When every
//! missing block is already requested, endgame mode lets a block be requested from up to
//! `endgame_duplicates` peers; the first copy wins and the others are cancelled.

use crate::wire::{Bitfield, BLOCK_SIZE};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    RarestFirst,
    Sequential,
    RoundRobin,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rarest_first" | "rarest-first" => Ok(Strategy::RarestFirst),
            "sequential" => Ok(Strategy::Sequential),
            "round_robin" | "round-robin" => Ok(Strategy::RoundRobin),
            _ => Err(format!(
                "unknown piece selection {s:?}: use rarest_first, sequential or round_robin"
            )),
        }
    }
}

/// A block: piece index and block index within the piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    pub piece: u32,
    pub block: u32,
}

#[derive(Debug, Clone)]
struct Partial {
    /// Peers a block is requested from (0 = missing); `u8::MAX` = received.
    requested: Vec<u8>,
    received: u32,
}

const RECEIVED: u8 = u8::MAX;

/// Pieces on their way past which a seed is asked only for the rarest pieces (`Picker::pick`).
const BUSY_PIECES: usize = 4;

/// Peers are identified by a small key the session chooses.
pub type PeerKey = u64;

#[derive(Debug, Clone)]
pub struct Picker {
    piece_length: u64,
    total: u64,
    have: Bitfield,
    availability: Vec<u16>,
    /// 0 = do not download; higher first.
    priority: Vec<u8>,
    /// Pieces not had with priority > 0 (kept in step so a peer's interest and a new piece are
    /// found a byte of pieces at a time, not by probing every piece).
    want: Bitfield,
    /// Wanted pieces not started yet (no partial).
    open: Bitfield,
    partial: BTreeMap<u32, Partial>,
    strategy: Strategy,
    endgame_duplicates: u8,
    rr_cursor: u32,
    /// Streaming: pieces from here on within the window get top priority.
    stream_from: Option<(u32, u32)>,
    seed: u64,
}

impl Picker {
    pub fn new(piece_length: u64, total: u64, have: Bitfield) -> Self {
        let n = have.len();
        let mut p = Picker {
            piece_length,
            total,
            have,
            availability: vec![0; n],
            priority: vec![1; n],
            want: Bitfield::new(n),
            open: Bitfield::new(n),
            partial: BTreeMap::new(),
            strategy: Strategy::RarestFirst,
            endgame_duplicates: 2,
            rr_cursor: 0,
            stream_from: None,
            // Each picker breaks rarest-first's ties in its own order. With one fixed seed every
            // ccbt leecher of a swarm asked a seed for the same pieces in the same order: in the
            // first seconds of a 24-leecher swarm each block the seed sent was a copy of one it
            // had sent to another leecher (5.6 copies on average).
            seed: rand::random::<u64>() | 1,
        };
        for i in 0..n as u32 {
            p.refresh(i);
        }
        p
    }

    pub fn set_strategy(&mut self, s: Strategy) {
        self.strategy = s;
    }

    pub fn set_endgame_duplicates(&mut self, n: u8) {
        self.endgame_duplicates = n.clamp(1, 8);
    }

    /// Piece priorities (0 = skip), e.g. from file selection.
    pub fn set_priority(&mut self, piece: u32, p: u8) {
        if let Some(x) = self.priority.get_mut(piece as usize) {
            *x = p;
            self.refresh(piece);
        }
    }

    /// Brings `want` and `open` in step with `have`, `priority` and `partial` for one piece.
    fn refresh(&mut self, piece: u32) {
        let i = piece as usize;
        let w = !self.have.get(i) && self.priority[i] > 0;
        let o = w && !self.partial.contains_key(&piece);
        if w {
            self.want.set(i);
        } else {
            self.want.clear(i);
        }
        if o {
            self.open.set(i);
        } else {
            self.open.clear(i);
        }
    }

    /// Streaming: raise the priority of `count` pieces from `from` (a reader's position).
    pub fn set_stream_window(&mut self, from: u32, count: u32) {
        self.stream_from = Some((from, count));
    }

    pub fn num_pieces(&self) -> u32 {
        self.have.len() as u32
    }

    pub fn piece_size(&self, piece: u32) -> u32 {
        let start = piece as u64 * self.piece_length;
        (self.total - start).min(self.piece_length) as u32
    }

    pub fn blocks_in(&self, piece: u32) -> u32 {
        self.piece_size(piece).div_ceil(BLOCK_SIZE)
    }

    pub fn block_len(&self, b: Block) -> u32 {
        let size = self.piece_size(b.piece);
        (size - b.block * BLOCK_SIZE).min(BLOCK_SIZE)
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// All wanted pieces are verified.
    pub fn complete(&self) -> bool {
        self.want.as_bytes().iter().all(|&b| b == 0)
    }

    pub fn wanted_left_bytes(&self) -> u64 {
        self.want
            .ones()
            .map(|i| self.piece_size(i as u32) as u64)
            .sum()
    }

    /// Whether a peer with `bf` has anything we want.
    pub fn interesting(&self, bf: &Bitfield) -> bool {
        self.want.intersects(bf)
    }

    pub fn peer_has(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a = a.saturating_add(1);
        }
    }

    pub fn peer_bitfield(&mut self, bf: &Bitfield) {
        for i in bf.ones() {
            self.availability[i] = self.availability[i].saturating_add(1);
        }
    }

    /// A peer left: forget its pieces and return its outstanding requests.
    pub fn peer_gone(&mut self, bf: &Bitfield, outstanding: &[Block]) {
        for i in bf.ones() {
            self.availability[i] = self.availability[i].saturating_sub(1);
        }
        for b in outstanding {
            self.unrequest(*b);
        }
    }

    /// A request was cancelled, rejected or timed out.
    pub fn unrequest(&mut self, b: Block) {
        if let Some(p) = self.partial.get_mut(&b.piece) {
            if let Some(r) = p.requested.get_mut(b.block as usize) {
                if *r != RECEIVED && *r > 0 {
                    *r -= 1;
                }
            }
        }
    }

    fn wanted(&self, i: usize, bf: &Bitfield) -> bool {
        bf.get(i) && self.open.get(i)
    }

    /// Chooses a new piece for a peer with `bf`.
    fn new_piece(&mut self, bf: &Bitfield) -> Option<u32> {
        let n = self.num_pieces() as usize;
        if let Some((from, count)) = self.stream_from {
            let end = (from as usize + count as usize).min(n);
            if let Some(i) = (from as usize..end).find(|&i| self.wanted(i, bf)) {
                return Some(i as u32);
            }
        }
        // One pass over the pieces both open here and held by the peer: the highest priority
        // wins, then the strategy's order (rarest-first breaks ties at random).
        let start = self.rr_cursor as usize % n.max(1);
        let mut seed = self.seed;
        let mut best: Option<(u8, u64, usize)> = None;
        for i in self.open.ones_and(bf) {
            let order = match self.strategy {
                Strategy::Sequential => u64::MAX - i as u64,
                Strategy::RoundRobin => u64::MAX - ((i + n - start) % n) as u64,
                Strategy::RarestFirst => {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((u16::MAX - self.availability[i]) as u64) << 32 | (seed & 0xFFFF_FFFF)
                }
            };
            let key = (self.priority[i], order, i);
            if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
                best = Some(key);
            }
        }
        self.seed = seed;
        let pick = best?.2;
        if self.strategy == Strategy::RoundRobin {
            self.rr_cursor = (pick + 1) as u32;
        }
        Some(pick as u32)
    }

    /// Picks up to `max` blocks to request from a peer with `bf`. `already` lists blocks this peer
    /// has outstanding (never requested twice from the same peer).
    pub fn pick(
        &mut self,
        bf: &Bitfield,
        max: usize,
        already: &dyn Fn(Block) -> bool,
    ) -> Vec<Block> {
        self.pick_with(bf, max, 0, already)
    }

    /// [`Picker::pick`] for a peer that has `outstanding` blocks requested already.
    pub fn pick_with(
        &mut self,
        bf: &Bitfield,
        max: usize,
        outstanding: usize,
        already: &dyn Fn(Block) -> bool,
    ) -> Vec<Block> {
        let mut out = Vec::new();
        // 1. Finish partial pieces this peer has. A seed's upload is the swarm's scarcest
        //    resource: it only finishes partials no more common than the rarest piece not yet
        //    started, and leaves the rest (other peers hold them) until nothing new is left. A
        //    piece a reader waits for (the streaming window) is never put off.
        let partials: Vec<u32> = self.partial.keys().copied().collect();
        let from_seed = bf.all();
        // For a seed: the availability of the rarest piece not yet started, and of the rarest
        // wanted at all (`open` is a subset of `want`: one walk finds both).
        let (mut rarest_open, mut rarest_wanted) = (None, u16::MAX);
        if from_seed {
            for i in self.want.ones() {
                let a = self.availability[i];
                rarest_wanted = rarest_wanted.min(a);
                if self.open.get(i) {
                    rarest_open = Some(rarest_open.map_or(a, |r: u16| r.min(a)));
                }
            }
        }
        let window = self.stream_from; // (a copy: `take_from` borrows self mutably below)
        let streamed =
            |piece: u32| window.is_some_and(|(from, count)| piece >= from && piece - from < count);
        let mut deferred = Vec::new();
        for &piece in &partials {
            if out.len() >= max {
                return out;
            }
            if rarest_open.is_some_and(|r| self.availability[piece as usize] > r)
                && !streamed(piece)
            {
                deferred.push(piece);
            } else if bf.get(piece as usize) {
                self.take_from(piece, max, 0, &mut out, already);
            }
        }
        // 2. Start new pieces. A seed is not asked to start a piece other peers hold while
        //    rarer pieces are on their way and this leecher has `BUSY_PIECES` pieces coming:
        //    its share of the seed is left to leechers asking for pieces nobody else has yet.
        while out.len() < max {
            let Some(piece) = self.new_piece(bf) else {
                break;
            };
            // A seed is never left idle for this leecher, though: its other pieces may be
            // coming from slow peers.
            if self.availability[piece as usize] > rarest_wanted
                && self.partial.len() >= BUSY_PIECES
                && outstanding + out.len() > 0
                && !streamed(piece)
            {
                break;
            }
            let blocks = self.blocks_in(piece) as usize;
            self.partial.insert(
                piece,
                Partial {
                    requested: vec![0; blocks],
                    received: 0,
                },
            );
            self.refresh(piece);
            self.take_from(piece, max, 0, &mut out, already);
        }
        // 2b. Nothing new: a seed finishes the partials it passed over.
        for &piece in &deferred {
            if out.len() >= max {
                return out;
            }
            self.take_from(piece, max, 0, &mut out, already);
        }
        // 3. Endgame: nothing left unrequested; duplicate requests, rarest-requested first.
        if out.len() < max && self.all_requested() {
            for dup in 1..self.endgame_duplicates {
                for &piece in &partials {
                    if out.len() >= max {
                        return out;
                    }
                    if bf.get(piece as usize) {
                        self.take_from(piece, max, dup, &mut out, already);
                    }
                }
            }
        }
        out
    }

    fn take_from(
        &mut self,
        piece: u32,
        max: usize,
        level: u8,
        out: &mut Vec<Block>,
        already: &dyn Fn(Block) -> bool,
    ) {
        let Some(p) = self.partial.get_mut(&piece) else {
            return;
        };
        for (bi, r) in p.requested.iter_mut().enumerate() {
            if out.len() >= max {
                return;
            }
            let b = Block {
                piece,
                block: bi as u32,
            };
            if *r == level && !already(b) {
                *r += 1;
                out.push(b);
            }
        }
    }

    fn all_requested(&self) -> bool {
        let no_new = self.open.as_bytes().iter().all(|&b| b == 0);
        no_new
            && self
                .partial
                .values()
                .all(|p| p.requested.iter().all(|&r| r > 0))
    }

    /// A block arrived. Returns false for a duplicate or unexpected block.
    pub fn block_received(&mut self, b: Block) -> bool {
        let Some(p) = self.partial.get_mut(&b.piece) else {
            return false;
        };
        match p.requested.get_mut(b.block as usize) {
            Some(r) if *r != RECEIVED => {
                *r = RECEIVED;
                p.received += 1;
                true
            }
            _ => false,
        }
    }

    /// Every block of the piece has arrived.
    pub fn piece_complete(&self, piece: u32) -> bool {
        self.partial
            .get(&piece)
            .is_some_and(|p| p.received as usize == p.requested.len())
    }

    /// The piece verified.
    pub fn piece_done(&mut self, piece: u32) {
        self.partial.remove(&piece);
        self.have.set(piece as usize);
        self.refresh(piece);
    }

    /// The piece failed its hash check: everything must be fetched again.
    pub fn piece_failed(&mut self, piece: u32) {
        self.partial.remove(&piece);
        self.refresh(piece);
    }

    /// Marks a piece as had (resume, recheck) without downloading it.
    pub fn mark_have(&mut self, piece: u32) {
        self.partial.remove(&piece);
        self.have.set(piece as usize);
        self.refresh(piece);
    }

    pub fn in_flight(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `want` and `open` equal their definitions after any sequence of operations.
    #[test]
    fn want_and_open_stay_in_step() {
        let n = 37;
        let mut p = Picker::new(P, n as u64 * P - 5, Bitfield::new(n));
        let all = Bitfield::full(n);
        let mut x = 12345u64;
        for step in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let piece = (x % n as u64) as u32;
            match (x >> 32) % 6 {
                0 => p.set_priority(piece, ((x >> 40) % 3) as u8),
                1 => {
                    p.pick(&all, 3, &|_| false);
                }
                2 => p.piece_done(piece),
                3 => p.piece_failed(piece),
                4 => p.mark_have(piece),
                _ => p.set_strategy(
                    [
                        Strategy::RarestFirst,
                        Strategy::Sequential,
                        Strategy::RoundRobin,
                    ][(x % 3) as usize],
                ),
            }
            for i in 0..n {
                let w = !p.have.get(i) && p.priority[i] > 0;
                assert_eq!(p.want.get(i), w, "want {i} at step {step}");
                assert_eq!(
                    p.open.get(i),
                    w && !p.partial.contains_key(&(i as u32)),
                    "open {i} at step {step}"
                );
            }
            assert_eq!(
                p.complete(),
                (0..n).all(|i| p.have.get(i) || p.priority[i] == 0)
            );
        }
    }

    const P: u64 = 4 * BLOCK_SIZE as u64;

    fn bf(n: usize, ones: &[usize]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in ones {
            b.set(i);
        }
        b
    }

    #[test]
    fn rarest_first_and_partials_first() {
        let mut p = Picker::new(P, 4 * P, Bitfield::new(4));
        p.peer_bitfield(&bf(4, &[0, 1, 2, 3]));
        p.peer_bitfield(&bf(4, &[0, 1, 3]));
        p.peer_bitfield(&bf(4, &[0, 3]));
        // Piece 2 is rarest (1 peer).
        let got = p.pick(&bf(4, &[0, 1, 2, 3]), 2, &|_| false);
        assert!(got.iter().all(|b| b.piece == 2));
        // The partial piece is finished before a new one starts.
        let got = p.pick(&bf(4, &[0, 1, 2, 3]), 3, &|_| false);
        assert_eq!(got[0].piece, 2);
        assert_eq!(got[1].piece, 2);
        assert_eq!(got[2].piece, 1, "then the next rarest");
    }

    /// Four pieces, a seed, and a leecher holding piece 0, from which piece 0 is started.
    fn partial_from_a_leecher() -> (Picker, Bitfield) {
        let mut p = Picker::new(P, 4 * P, Bitfield::new(4));
        let seed = bf(4, &[0, 1, 2, 3]);
        let leecher = bf(4, &[0]);
        p.peer_bitfield(&seed);
        p.peer_bitfield(&leecher);
        let got = p.pick(&leecher, 1, &|_| false);
        assert_eq!(got[0].piece, 0);
        (p, seed)
    }

    #[test]
    fn a_seed_is_asked_for_rare_pieces_before_partials_others_hold() {
        let (mut p, seed) = partial_from_a_leecher();
        // The seed is asked for pieces only it has, not the rest of piece 0.
        let first = p.pick(&seed, 12, &|_| false);
        assert_eq!(first.len(), 12);
        assert!(first.iter().all(|b| b.piece != 0), "{first:?}");
        // Nothing new is left: the seed finishes piece 0 too, before any endgame duplicate.
        let got = p.pick(&seed, 3, &|b| first.contains(&b));
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|b| b.piece == 0), "{got:?}");
        // A peer that is not a seed finishes partials first, as before.
        let (mut p, _) = partial_from_a_leecher();
        let most = bf(4, &[0, 1, 2]);
        let got = p.pick(&most, 3, &|_| false);
        assert!(got.iter().all(|b| b.piece == 0), "{got:?}");
    }

    #[test]
    fn two_pickers_break_ties_in_different_orders() {
        // Two leechers in the same state must not ask a seed for the same pieces in the same
        // order (a fixed tie-break seed made every ccbt leecher of a swarm do so).
        let order = || {
            let mut p = Picker::new(
                BLOCK_SIZE as u64,
                256 * BLOCK_SIZE as u64,
                Bitfield::new(256),
            );
            let seed = Bitfield::full(256);
            p.peer_bitfield(&seed);
            p.pick(&seed, 16, &|_| false)
        };
        assert_ne!(order(), order());
    }

    #[test]
    fn a_busy_leecher_asks_a_seed_only_for_pieces_nobody_else_has() {
        let mut p = Picker::new(P, 8 * P, Bitfield::new(8));
        let seed = Bitfield::full(8);
        p.peer_bitfield(&seed);
        p.peer_bitfield(&bf(8, &[4, 5, 6, 7]));
        // Pieces 0-3 only the seed has: asked for. 4-7 another peer holds: not from the seed
        // while four pieces are on their way.
        let got = p.pick(&seed, 32, &|_| false);
        assert_eq!(got.len(), 16);
        assert!(got.iter().all(|b| b.piece < 4), "{got:?}");
        // With fewer on their way, the seed is asked for common pieces too, up to four pieces
        // (a leecher with little else coming is never held back).
        let mut p = Picker::new(P, 8 * P, Bitfield::new(8));
        p.peer_bitfield(&seed);
        p.peer_bitfield(&bf(8, &[2, 3, 4, 5, 6, 7]));
        let got = p.pick(&seed, 32, &|_| false);
        assert_eq!(got.len(), 16, "{got:?}");
        assert!(got.iter().filter(|b| b.piece >= 2).count() == 8, "{got:?}");
        // A seed with nothing outstanding for this leecher gets a common piece (the pieces on
        // their way may be coming slowly from elsewhere), one with requests out does not.
        let mut p = Picker::new(P, 8 * P, Bitfield::new(8));
        p.peer_bitfield(&seed);
        let others = bf(8, &[0, 1, 2, 3, 4, 5, 6]);
        p.peer_bitfield(&others);
        let elsewhere = p.pick(&others, 16, &|_| false);
        assert_eq!(elsewhere.len(), 16);
        let got = p.pick_with(&seed, 8, 0, &|_| false);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            got.iter().all(|b| b.piece == 7),
            "the rare piece first: {got:?}"
        );
        assert!(p.pick_with(&seed, 8, 4, &|_| false).is_empty());
        let got = p.pick_with(&seed, 8, 0, &|b| b.piece == 7);
        assert_eq!(got.len(), 4, "an idle seed gets a common piece: {got:?}");
        // One seed alone: every piece is as rare as the rarest.
        let mut p = Picker::new(P, 8 * P, Bitfield::new(8));
        p.peer_bitfield(&seed);
        assert_eq!(p.pick(&seed, 32, &|_| false).len(), 32);
    }

    #[test]
    fn a_partial_in_the_streaming_window_is_finished_by_a_seed() {
        let (mut p, seed) = partial_from_a_leecher();
        p.set_stream_window(0, 1);
        let got = p.pick(&seed, 3, &|_| false);
        assert!(got.iter().all(|b| b.piece == 0), "{got:?}");
    }

    #[test]
    fn sequential_and_priorities() {
        let mut p = Picker::new(P, 4 * P, Bitfield::new(4));
        p.set_strategy(Strategy::Sequential);
        p.set_priority(0, 0);
        let all = bf(4, &[0, 1, 2, 3]);
        let got = p.pick(&all, 8, &|_| false);
        assert_eq!(
            got.iter().map(|b| b.piece).collect::<Vec<_>>(),
            vec![1, 1, 1, 1, 2, 2, 2, 2]
        );
        p.set_stream_window(3, 1);
        let got = p.pick(&all, 1, &|_| false);
        assert_eq!(got[0].piece, 3, "streaming window first");
    }

    #[test]
    fn receive_verify_fail_and_endgame() {
        let mut p = Picker::new(P, P + 100, Bitfield::new(2));
        assert_eq!(p.blocks_in(1), 1);
        assert_eq!(p.block_len(Block { piece: 1, block: 0 }), 100);
        let all = bf(2, &[0, 1]);
        let got = p.pick(&all, 10, &|_| false);
        assert_eq!(got.len(), 5);
        // Everything is requested: a second peer gets endgame duplicates.
        let dup = p.pick(&all, 10, &|_| false);
        assert_eq!(dup.len(), 5);
        // The same peer never gets a block twice.
        let none = p.pick(&all, 10, &|b| got.contains(&b));
        assert!(none.is_empty());
        for b in &got {
            assert!(p.block_received(*b));
            assert!(!p.block_received(*b), "duplicate");
        }
        assert!(p.piece_complete(0) && p.piece_complete(1));
        p.piece_failed(1);
        p.piece_done(0);
        assert!(!p.complete());
        let again = p.pick(&all, 10, &|_| false);
        assert_eq!(again, vec![Block { piece: 1, block: 0 }]);
        p.block_received(again[0]);
        p.piece_done(1);
        assert!(p.complete());
    }

    #[test]
    fn peer_gone_returns_requests() {
        let mut p = Picker::new(P, P, Bitfield::new(1));
        let all = bf(1, &[0]);
        p.peer_bitfield(&all);
        let got = p.pick(&all, 2, &|_| false);
        p.peer_gone(&all, &got);
        let again = p.pick(&all, 4, &|_| false);
        assert_eq!(again.len(), 4, "returned blocks are picked again");
    }
}
