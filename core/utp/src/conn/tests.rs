//! Two connections over a simulated link: delay, jitter (reordering), loss, virtual time.

use super::*;
use rand::{Rng, SeedableRng};

struct Link {
    rng: rand::rngs::StdRng,
    loss: f64,
    delay: Duration,
    jitter: Duration,
    /// (arrival, to_b, bytes)
    queue: Vec<(Instant, bool, Vec<u8>)>,
    /// Packets to B with these indexes are all dropped (a burst lost at a full queue).
    burst: std::ops::Range<usize>,
    sent_to_b: usize,
}

impl Link {
    fn send(&mut self, now: Instant, to_b: bool, pkts: Vec<Vec<u8>>) {
        for p in pkts {
            if to_b {
                self.sent_to_b += 1;
                if self.burst.contains(&(self.sent_to_b - 1)) {
                    continue;
                }
            }
            if self.rng.gen_bool(self.loss) {
                continue;
            }
            let j = self.rng.gen_range(0..=self.jitter.as_micros() as u64);
            self.queue
                .push((now + self.delay + Duration::from_micros(j), to_b, p));
        }
    }
}

struct Outcome {
    a: Conn,
    b: Conn,
    got_a: Vec<u8>,
    got_b: Vec<u8>,
    took: Duration,
}

/// A dials B; each writes its bytes and closes; runs until both are done (virtual time).
fn run(loss: f64, seed: u64, a_sends: &[u8], b_sends: &[u8]) -> Outcome {
    run_burst(loss, seed, 0..0, a_sends, b_sends)
}

/// [`run`], with the packets to B numbered `burst` dropped.
fn run_burst(
    loss: f64,
    seed: u64,
    burst: std::ops::Range<usize>,
    a_sends: &[u8],
    b_sends: &[u8],
) -> Outcome {
    let t0 = Instant::now();
    let mut now = t0;
    let mut link = Link {
        rng: rand::rngs::StdRng::seed_from_u64(seed),
        loss,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        queue: Vec::new(),
        burst,
        sent_to_b: 0,
    };
    let mut a = Conn::connect(1000, now);
    let mut b: Option<Conn> = None;
    let (mut a_off, mut b_off) = (0, 0);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let step = Duration::from_millis(1);
    while now.duration_since(t0) < Duration::from_secs(600) {
        a_off += a.write(&a_sends[a_off..]);
        if a_off == a_sends.len() {
            a.close();
        }
        if let Some(b) = b.as_mut() {
            b_off += b.write(&b_sends[b_off..]);
            if b_off == b_sends.len() {
                b.close();
            }
        }
        let out = a.poll_transmit(now);
        link.send(now, true, out);
        if let Some(bc) = b.as_mut() {
            let out = bc.poll_transmit(now);
            link.send(now, false, out);
        }
        let (due, rest): (Vec<_>, Vec<_>) = link.queue.drain(..).partition(|(t, _, _)| *t <= now);
        link.queue = rest;
        for (_, to_b, bytes) in due {
            let p = Packet::decode(&bytes).unwrap();
            if to_b {
                match b.as_mut() {
                    Some(bc) => bc.handle(&p, now),
                    None if p.ty == Type::Syn => b = Some(Conn::accept(&p, 30000, now)),
                    None => {}
                }
            } else {
                a.handle(&p, now);
            }
        }
        got_a.extend(a.read());
        if let Some(bc) = b.as_mut() {
            got_b.extend(bc.read());
        }
        for c in [Some(&mut a), b.as_mut()].into_iter().flatten() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        let b_done = b.as_ref().is_some_and(|b| !b.is_open());
        if !a.is_open() && b_done {
            break;
        }
        now += step;
    }
    Outcome {
        a,
        b: b.expect("B saw the SYN"),
        got_a,
        got_b,
        took: now.duration_since(t0),
    }
}

/// A dials (connection id `id`), B answers its SYN (initial sequence `seq`), both at `now`.
fn dial_and_accept(id: u16, seq: u16, now: Instant) -> (Conn, Conn) {
    let mut a = Conn::connect(id, now);
    let syn = Packet::decode(&a.poll_transmit(now)[0]).unwrap();
    let b = Conn::accept(&syn, seq, now);
    (a, b)
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn transfers_both_ways_and_closes_on_a_clean_link() {
    let (x, y) = (bytes(300_000, 1), bytes(100_000, 2));
    let o = run(0.0, 1, &x, &y);
    assert!(o.got_b == x, "B got {} of {} bytes", o.got_b.len(), x.len());
    assert!(o.got_a == y, "A got {} of {} bytes", o.got_a.len(), y.len());
    assert!(
        o.a.debug_inflight().is_empty(),
        "a {:?}",
        o.a.debug_inflight()
    );
    assert!(
        o.b.debug_inflight().is_empty(),
        "b {:?}",
        o.b.debug_inflight()
    );
    assert_eq!(o.a.state, State::Closed, "{:?}", o.took);
    assert_eq!(o.b.state, State::Closed);
    // Jitter reorders packets, so a few fast retransmits are expected; not many.
    assert!(
        o.a.stats.retransmits * 20 < o.a.stats.packets_sent,
        "{:?}",
        o.a.stats
    );
}

#[test]
fn survives_loss_and_reordering() {
    for seed in 0..4 {
        let (x, y) = (bytes(400_000, 3), bytes(50_000, 4));
        let o = run(0.05, seed, &x, &y);
        assert_eq!(
            o.got_b.len(),
            x.len(),
            "seed {seed}: {:?} {:?}",
            o.took,
            o.a.state
        );
        assert!(o.got_b == x, "seed {seed}: B's bytes differ");
        assert!(
            o.got_a == y,
            "seed {seed}: A got {} of {}",
            o.got_a.len(),
            y.len()
        );
        assert_eq!(o.a.state, State::Closed, "seed {seed}");
        assert_eq!(o.b.state, State::Closed, "seed {seed}");
        assert!(o.a.stats.retransmits > 0);
        // Selective ACKs and fast retransmit keep timeouts rarer than retransmissions.
        assert!(
            o.a.stats.timeouts < o.a.stats.retransmits,
            "seed {seed}: {:?}",
            o.a.stats
        );
    }
}

#[test]
fn a_syn_to_nobody_times_out_and_a_reset_ends_the_connection() {
    let mut now = Instant::now();
    let mut a = Conn::connect(7, now);
    let mut syns = 0;
    for _ in 0..200 {
        syns += a.poll_transmit(now).len();
        if let Some(t) = a.poll_timeout() {
            now = now.max(t);
            a.handle_timeout(now);
        }
        if a.state == State::TimedOut {
            break;
        }
    }
    assert_eq!(a.state, State::TimedOut);
    assert_eq!(syns, SYN_TRIES as usize);
    let now = Instant::now();
    let mut a = Conn::connect(9, now);
    let syn = Packet::decode(&a.poll_transmit(now)[0]).unwrap();
    let mut b = Conn::accept(&syn, 5, now);
    let state = Packet::decode(&b.poll_transmit(now)[0]).unwrap();
    a.handle(&state, now);
    assert_eq!(a.state, State::Connected);
    let rst = Packet::decode(&b.reset_packet(now)).unwrap();
    a.handle(&rst, now);
    assert_eq!(a.state, State::Reset);
    assert_eq!(a.write(b"x"), 0);
}

#[test]
fn loss_cuts_the_window_and_delay_holds_it() {
    let now = Instant::now();
    let mut c = Conn::connect(1, now);
    c.state = State::Connected;
    c.cwnd = 100_000.0;
    c.ssthresh = 50_000.0;
    c.stats.queueing_us = 20_000; // a queue: congestion
    c.on_loss(1);
    assert_eq!(c.cwnd as usize, 70_000);
    assert_eq!(c.ssthresh as usize, 70_000);
    c.on_loss(1); // the same round trip: once
    assert_eq!(c.cwnd as usize, 70_000);
    // No queue at all: a lossy link. A small cut, and slow start goes on.
    let mut r = Conn::connect(1, now);
    r.state = State::Connected;
    r.cwnd = 100_000.0;
    r.on_loss(1);
    assert_eq!(r.cwnd as usize, 85_000);
    assert_eq!(r.ssthresh, MAX_CWND);
    // Queueing delay above the target shrinks the window; below it, it grows.
    c.recovery_until = None;
    c.ledbat(10_000, MSS, now); // sets the base delay
    let before = c.cwnd;
    c.ledbat(10_000 + 300_000, 50 * MSS, now);
    assert!(c.cwnd < before, "{} vs {before}", c.cwnd);
    let low = c.cwnd;
    c.ledbat(10_000, 50 * MSS, now);
    assert!(c.cwnd > low);
}

#[test]
fn an_empty_path_regrows_a_window_faster_than_a_queued_one() {
    let now = Instant::now();
    let grow = |queue_us: u32| {
        let mut c = Conn::connect(1, now);
        c.state = State::Connected;
        c.cwnd = 160_000.0;
        c.w_max = 230_000.0; // cut by a loss from here
        c.ssthresh = 100_000.0; // out of slow start
        c.ledbat(10_000, MSS, now); // the base delay
        let w0 = c.cwnd;
        // One round trip's ACKs of a full window (`limited`: the window is in flight).
        c.ledbat(10_000 + queue_us, 160_000, now);
        c.cwnd - w0
    };
    let empty = grow(0);
    let queued = grow(40_000); // two thirds of the 60 ms target
                               // About an eighth of the window per round trip on an empty path, one packet near target.
    assert!(empty > 17_000.0 && empty < 21_000.0, "{empty}");
    assert!(queued < MSS as f64, "{queued}");
    // Past the window the loss cut: a sixteenth per round trip while the path shows no
    // queue (probing), one packet per round trip once a queue shows.
    let past = |queue_us: u32| {
        let mut c = Conn::connect(1, now);
        c.state = State::Connected;
        c.cwnd = 160_000.0;
        c.ssthresh = 100_000.0;
        c.ledbat(10_000, MSS, now);
        let w0 = c.cwnd;
        c.ledbat(10_000 + queue_us, 160_000, now);
        c.cwnd - w0
    };
    let probe = past(0);
    assert!(probe > 9_000.0 && probe < 11_000.0, "{probe}");
    let q = past(10_000); // a sixth of the target
    assert!(q <= MSS as f64 + 1.0, "{q}");
}

#[test]
fn a_burst_of_losses_is_repaired_in_a_round_trip_or_two() {
    // 150 packets in a row lost (a shallow queue overflowing in slow start): every hole the
    // SACKs show goes again at once, not one per round trip (that took 150 round trips).
    let x = bytes(3_000_000, 5);
    let clean = run(0.0, 3, &x, b"");
    let o = run_burst(0.0, 3, 400..550, &x, b"");
    assert!(o.got_b == x, "B got {} of {} bytes", o.got_b.len(), x.len());
    assert!(
        o.took < clean.took + Duration::from_millis(800),
        "with the burst {:?}, without {:?}",
        o.took,
        clean.took
    );
    assert!(
        o.a.stats.retransmits >= 150 && o.a.stats.retransmits < 300,
        "{:?}",
        o.a.stats
    );
}

#[test]
fn a_loss_at_a_shallow_queue_lowers_the_target_below_it() {
    let now = Instant::now();
    let mut c = Conn::connect(1, now);
    c.state = State::Connected;
    c.cwnd = 100_000.0;
    c.ssthresh = 50_000.0;
    // A random loss on an empty path says nothing about the buffer.
    c.stats.queueing_us = 2_000;
    c.on_loss(1);
    assert_eq!(c.target_us, TARGET_US);
    // A loss with a 20 ms queue: the buffer holds about 20 ms, so aim at half of it, where a
    // TCP flow filling it shows us delay above target.
    c.recovery_until = None;
    c.stats.queueing_us = 20_000;
    c.on_loss(1);
    assert_eq!(c.target_us, 10_000.0);
    c.ledbat(10_000, MSS, now); // the base delay
    let w = c.cwnd;
    c.ledbat(10_000 + 18_000, 20 * MSS, now); // 18 ms of queue: over the lowered target
    assert!(c.cwnd < w, "{} vs {w}", c.cwnd);
    // A minute on, the target climbs back (losses bring it down again if the path is the same).
    c.ledbat(10_000, MSS, now + Duration::from_secs(61));
    assert_eq!(c.target_us, 20_000.0);
}

#[test]
fn a_selective_ack_covers_a_large_window_past_a_hole() {
    // A hole, then 1500 packets: the SACK tells the sender about all it can hold (2016 past
    // the ACK), not only the first 256, or a sender with a large window stalls until the repair.
    let now = Instant::now();
    let (_a, mut b) = dial_and_accept(3, 100, now);
    let first = b.ack.wrapping_add(1);
    for k in 1..=1500u16 {
        let p = Packet {
            ty: Type::Data,
            conn_id: b.recv_id,
            ts: 0,
            ts_diff: 0,
            wnd: RECV_BUF as u32,
            seq: first.wrapping_add(k), // `first` itself is lost
            ack: 0,
            sack: None,
            payload: vec![7; 100],
        };
        b.handle(&p, now);
    }
    let ack = Packet::decode(&b.poll_transmit(now)[0]).unwrap();
    assert_eq!(ack.ack, first.wrapping_sub(1));
    let bits = ack.sack.expect("a SACK");
    assert!(bits.len() <= 252 && bits.len().is_multiple_of(4));
    let set = bits.iter().map(|b| b.count_ones()).sum::<u32>();
    assert_eq!(set, 1500, "every packet past the hole is acknowledged");
}

#[test]
fn a_one_byte_sack_as_libtorrent_sends_acks_what_it_names() {
    // libtorrent sizes its SACK mask by the byte. A sender must read such an ACK off the wire
    // and mark the packets it names, or it resends them and never sees its repairs acked.
    let t0 = Instant::now();
    let (mut a, mut b) = dial_and_accept(5, 500, t0);
    let state = Packet::decode(&b.poll_transmit(t0)[0]).unwrap();
    let now = t0 + Duration::from_millis(10);
    a.handle(&state, now);
    a.write(&bytes(6 * MSS, 1));
    let sent: Vec<Packet> = a
        .poll_transmit(now)
        .iter()
        .map(|d| Packet::decode(d).unwrap())
        .filter(|p| p.ty == Type::Data)
        .collect();
    assert!(sent.len() >= 4, "a window of data leaves");
    let first = sent[0].seq;
    // Packet `first` is lost; `first + 1` and `first + 3` arrive: cumulative ACK first - 1,
    // mask bit 0 = first + 1, bit 2 = first + 3. Built as bytes, as libtorrent sends it.
    let mut wire = Packet {
        ty: Type::State,
        conn_id: a.recv_id,
        ts: 1,
        ts_diff: 1,
        wnd: RECV_BUF as u32,
        seq: state.seq,
        ack: first.wrapping_sub(1),
        sack: None,
        payload: Vec::new(),
    }
    .encode();
    wire[1] = 1; // extension: SACK
    wire.extend_from_slice(&[0, 1, 0b101]);
    let ack = Packet::decode(&wire).expect("libtorrent's ACK decodes");
    a.handle(&ack, now + Duration::from_millis(10));
    let acked: Vec<u16> = a
        .debug_inflight()
        .into_iter()
        .filter(|&(_, ty, acked, _)| ty == Type::Data && acked)
        .map(|(seq, ..)| seq)
        .collect();
    assert_eq!(acked, vec![first.wrapping_add(1), first.wrapping_add(3)]);
}

#[test]
fn a_burst_lost_at_the_tail_is_repaired_by_a_probe_not_a_timeout() {
    // The last dozen packets of a flight lost together (a receiver's socket buffer full): no
    // later packet is acknowledged past them, so only a tail loss probe (two round trips)
    // finds them before the retransmission timeout (at least 500 ms).
    let x = bytes(60 * MSS, 6);
    let clean = run(0.0, 4, &x, b"");
    let n = clean.a.stats.packets_sent as usize;
    let o = run_burst(0.0, 4, n - 14..n - 2, &x, b"");
    assert!(o.got_b == x, "B got {} of {} bytes", o.got_b.len(), x.len());
    assert!(
        o.took < clean.took + Duration::from_millis(300),
        "with the tail lost {:?}, without {:?}",
        o.took,
        clean.took
    );
    assert_eq!(o.a.stats.timeouts, 0, "{:?}", o.a.stats);
}

#[test]
fn after_a_timeout_the_repairs_restart_from_a_small_window() {
    // A window's flight lost whole, then the retransmission timeout: the repairs leave as the
    // restarted window allows, not all at once (a burst of them overflowed the receiver again).
    let mut now = Instant::now();
    let (mut a, mut b) = dial_and_accept(9, 900, now);
    a.write(&bytes(2_000 * MSS, 3));
    // A clean path until a flight of 40 packets or more leaves at once.
    let mut flight = Vec::new();
    for _ in 0..200 {
        for d in b.poll_transmit(now) {
            a.handle(&Packet::decode(&d).unwrap(), now);
        }
        now += Duration::from_millis(2);
        flight = a.poll_transmit(now);
        if flight.len() >= 40 {
            break;
        }
        for d in &flight {
            b.handle(&Packet::decode(d).unwrap(), now);
        }
        b.read();
    }
    assert!(
        flight.len() >= 40,
        "the window grew ({} packets)",
        flight.len()
    );
    // That flight is lost, and the tail loss probe with it: nothing comes back.
    for _ in 0..10 {
        let t = a.poll_timeout().expect("a timer");
        now = now.max(t);
        a.handle_timeout(now);
        if a.stats.timeouts > 0 {
            break;
        }
        let probe = a.poll_transmit(now);
        assert!(probe.len() <= 1, "a probe is one packet");
    }
    assert_eq!(a.stats.timeouts, 1);
    let repairs = a.poll_transmit(now);
    assert!(
        (1..=2).contains(&repairs.len()),
        "{} packets resent at once after the timeout",
        repairs.len()
    );
}

#[test]
fn a_run_of_losses_without_a_queue_is_a_full_buffer_not_a_lossy_link() {
    // No queueing delay shows (a receiver's socket buffer overflows in microseconds): a loss
    // or two in a round trip is a lossy link (a light cut, slow start goes on), but more than
    // one packet in fifty of the window is a full buffer: the window halves.
    let now = Instant::now();
    let mut c = Conn::connect(1, now);
    c.state = State::Connected;
    c.peer_confirmed = true;
    c.cwnd = 400_000.0;
    c.write(&bytes(400 * MSS, 1));
    c.poll_transmit(now);
    let window = c.inflight.len();
    assert!(window > 250, "{window} packets in flight");
    c.stats.queueing_us = 0;
    c.on_loss(1);
    assert_eq!(c.cwnd, 340_000.0, "a light cut");
    assert_eq!(c.ssthresh, MAX_CWND, "slow start goes on");
    c.on_loss(2); // the same round trip: 3 of ~296
    assert_eq!(c.cwnd, 340_000.0);
    c.on_loss(window / RANDOM_LOSS_SHARE); // now past one in fifty
    assert_eq!(c.cwnd, 200_000.0, "half the window before the loss");
    assert_eq!(c.ssthresh, 200_000.0);
    c.on_loss(50); // once per round trip
    assert_eq!(c.cwnd, 200_000.0);
}
