//! One uTP connection: handshake, sequencing, selective ACKs, retransmission, LEDBAT congestion
//! control and close/reset, with time passed in.
//!
//! Sequence rules (as libutp and libtorrent): SYN, DATA and FIN take a sequence number; STATE
//! packets carry the next one without taking it, so the dialler sets `ack = seq - 1` from the
//! first STATE. `ack` is the last packet received in order.

use crate::packet::{Packet, Type};
use crate::seq_lt;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Payload bytes per packet: a 1400-byte datagram with the header and a SACK.
pub const MSS: usize = 1350;
/// LEDBAT's target queueing delay: 60 ms, as LEDBAT++ (RFC 6817 allows up to 100 ms; with a
/// 1 MiB window on a 100 Mbit/s link our own queue stays near 80 ms, so 100 ms would never yield).
const TARGET_US: f64 = 60_000.0;
/// The lowest target a shallow queue can bring it to (below it, delay noise is not a queue).
const MIN_TARGET_US: f64 = 8_000.0;
/// A loss with less queueing than this is taken for a lossy link, not congestion.
const RANDOM_LOSS_QUEUE_US: f64 = 2_000.0;
/// ... unless more than one packet in this many of the window is lost in the same round trip:
/// a link dropping at random loses a few, a full buffer (a receiver's socket buffer on a busy
/// host overflows in microseconds, before any queueing delay shows) drops a run of them.
const RANDOM_LOSS_SHARE: usize = 50;
const GAIN: f64 = 1.0;
const MIN_CWND: f64 = (2 * MSS) as f64;
const MAX_CWND: f64 = (8 << 20) as f64;
/// Bytes the app may queue for sending, and bytes we buffer received (the window we advertise).
pub const SEND_BUF: usize = 4 << 20;
pub const RECV_BUF: usize = 4 << 20;
const MIN_RTO: Duration = Duration::from_millis(500);
const MAX_RTO: Duration = Duration::from_secs(30);
/// A packet sent this often without an ACK fails the connection.
const MAX_TRANSMISSIONS: u32 = 8;
const SYN_TRIES: u32 = 4;
/// An idle connection sends a STATE this often (NAT bindings).
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Nothing heard for this long while we wait for ACKs: the peer is gone.
const DEAD_AFTER: Duration = Duration::from_secs(60);
/// Out-of-order packets kept (beyond this the window is closed anyway).
const MAX_REORDER: usize = 4096;
/// Packets past the cumulative ACK that a selective ACK covers: as many as the extension's one
/// length byte allows (252 bytes). With 32 bytes (256 packets), a sender with thousands of
/// packets in flight learnt nothing of those past the first 256 after a loss and stalled with its
/// window and send credit full until the repair.
const SACK_BITS: usize = 252 * 8;
/// Packets a paced sender may send back to back.
const PACE_BURST: u32 = 10;
/// Paths shorter than this are not paced (loopback and LANs, even loaded: a window's burst
/// does not outrun their buffers).
const PACE_MIN_RTT: Duration = Duration::from_millis(10);
/// The shortest tail-loss probe timeout (two smoothed RTTs otherwise; see [`Conn::probe_at`]).
const MIN_PTO: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    SynSent,
    Connected,
    /// Both FINs done, or reset, or timed out: nothing more will move.
    Closed,
    Reset,
    TimedOut,
}

#[derive(Debug)]
struct Sent {
    seq: u16,
    ty: Type,
    data: Vec<u8>,
    sent_at: Option<Instant>,
    transmissions: u32,
    acked: bool,
    resend: bool,
}

#[derive(Debug)]
pub struct Conn {
    pub state: State,
    /// What we put in `conn_id` when sending / expect when receiving.
    pub send_id: u16,
    pub recv_id: u16,
    seq: u16,
    ack: u16,
    epoch: Instant,
    inflight: VecDeque<Sent>,
    send_buf: VecDeque<u8>,
    recv_buf: VecDeque<u8>,
    reorder: BTreeMap<u16, (Type, Vec<u8>)>,
    reorder_bytes: usize,
    /// Bytes delivered to the app that it has not consumed yet (counted against our window by
    /// the socket layer, which reads through `read` at once).
    pub unread: usize,
    peer_wnd: usize,
    cwnd: f64,
    ssthresh: f64,
    srtt: Option<Duration>,
    /// Pacing: the earliest time the next data packet may leave (see [`Conn::paced`]).
    pace_at: Option<Instant>,
    /// The window before the last loss cut: regrown quickly while the path is empty.
    w_max: f64,
    rttvar: Duration,
    /// The smallest RTT seen: half of it stands for the path's base one-way delay (LEDBAT++'s
    /// gain; one-way timestamps carry the hosts' clock offset).
    min_rtt: Option<Duration>,
    rto: Duration,
    /// Their delay measurement of our packets, the lowest in this and the previous minute.
    base_delay: [u32; 2],
    base_minute: Instant,
    reply_micro: u32,
    ack_needed: bool,
    last_recv: Instant,
    last_send: Instant,
    dup_acks: u32,
    /// LEDBAT's target, lowered below a shallow queue's depth: a loss seen with a queue of q
    /// means the path's buffer holds about q, and a target above it can never be passed, so
    /// a competing TCP flow would get no delay signal from us, only losses.
    target_us: f64,
    /// When a hole past which 3 packets were acked becomes lost ([`Conn::detect_losses`]).
    loss_timer: Option<Instant>,
    last_ack_seen: u16,
    /// After a loss the window is cut once per round trip: until this seq is acked.
    recovery_until: Option<u16>,
    /// Packets lost in this round trip of recovery, the window (in packets) when it began, and
    /// whether the cut was the light one for a lossy link (see [`Conn::on_loss`]).
    recovery_lost: usize,
    recovery_window: usize,
    recovery_light: bool,
    /// The last time data left for the first time or an ACK acknowledged something: a tail
    /// loss probe goes out when neither happens for a probe timeout.
    last_progress: Instant,
    /// The packet resent as a tail loss probe, until an ACK makes progress. When the probe is
    /// acknowledged, the packets before it that it overtook are lost ([`Conn::detect_losses`]).
    probe_seq: Option<u16>,
    close_requested: bool,
    /// The responder sends no data until the dialler has spoken after its SYN: the dialler
    /// takes its `ack` from the first STATE, which must not skip data of ours it never saw.
    peer_confirmed: bool,
    fin_sent: bool,
    fin_acked: bool,
    eof: Option<u16>,
    pub eof_delivered: bool,
    /// Bytes the app gave us that are now acknowledged (the socket layer frees send credit).
    pub acked_bytes: usize,
    pub stats: ConnStats,
}

#[derive(Debug, Clone, Default)]
pub struct ConnStats {
    /// The last queueing delay LEDBAT saw (µs) and the congestion window (bytes).
    pub queueing_us: u32,
    pub cwnd: u32,
    pub packets_sent: u64,
    pub retransmits: u64,
    pub timeouts: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Conn {
    fn new(send_id: u16, recv_id: u16, seq: u16, now: Instant) -> Conn {
        Conn {
            state: State::SynSent,
            send_id,
            recv_id,
            seq,
            ack: 0,
            epoch: now,
            inflight: VecDeque::new(),
            send_buf: VecDeque::new(),
            recv_buf: VecDeque::new(),
            reorder: BTreeMap::new(),
            reorder_bytes: 0,
            unread: 0,
            peer_wnd: RECV_BUF,
            cwnd: MIN_CWND * 2.0,
            ssthresh: MAX_CWND,
            srtt: None,
            pace_at: None,
            w_max: 0.0,
            rttvar: Duration::ZERO,
            min_rtt: None,
            rto: Duration::from_secs(1),
            base_delay: [u32::MAX; 2],
            base_minute: now,
            reply_micro: 0,
            ack_needed: false,
            last_recv: now,
            last_send: now,
            dup_acks: 0,
            target_us: TARGET_US,
            loss_timer: None,
            last_ack_seen: 0,
            recovery_until: None,
            recovery_lost: 0,
            recovery_window: 0,
            recovery_light: false,
            last_progress: now,
            probe_seq: None,
            close_requested: false,
            peer_confirmed: false,
            fin_sent: false,
            fin_acked: false,
            eof: None,
            eof_delivered: false,
            acked_bytes: 0,
            stats: ConnStats::default(),
        }
    }

    /// Dials: `recv_id` is ours (random); the SYN goes out at the first `poll_transmit`.
    pub fn connect(recv_id: u16, now: Instant) -> Conn {
        let mut c = Conn::new(recv_id.wrapping_add(1), recv_id, 1, now);
        c.push_packet(Type::Syn, Vec::new());
        c
    }

    /// Answers a SYN (`seq` is our random initial sequence number).
    pub fn accept(syn: &Packet, seq: u16, now: Instant) -> Conn {
        let mut c = Conn::new(syn.conn_id, syn.conn_id.wrapping_add(1), seq, now);
        c.state = State::Connected;
        c.ack = syn.seq;
        c.reply_micro = c.now_us(now).wrapping_sub(syn.ts);
        c.peer_wnd = syn.wnd as usize;
        c.ack_needed = true;
        c
    }

    fn now_us(&self, now: Instant) -> u32 {
        now.duration_since(self.epoch).as_micros() as u32
    }

    fn push_packet(&mut self, ty: Type, data: Vec<u8>) {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.inflight.push_back(Sent {
            seq,
            ty,
            data,
            sent_at: None,
            transmissions: 0,
            acked: false,
            resend: true,
        });
    }

    /// Queues app bytes to send; returns how many fit in the send buffer.
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.close_requested || !self.is_open() {
            return 0;
        }
        let n = data.len().min(SEND_BUF.saturating_sub(self.send_buf.len()));
        self.send_buf.extend(&data[..n]);
        n
    }

    /// Bytes the send buffer can still take.
    pub fn send_room(&self) -> usize {
        SEND_BUF.saturating_sub(self.send_buf.len())
    }

    /// Takes the bytes received in order so far.
    pub fn read(&mut self) -> Vec<u8> {
        let n = self.recv_buf.len();
        let v = take_front(&mut self.recv_buf, n);
        if self.eof.is_some() && self.reorder.is_empty() && self.eof_reached() {
            self.eof_delivered = true;
        }
        v
    }

    fn eof_reached(&self) -> bool {
        self.eof.is_some_and(|e| e == self.ack)
    }

    /// The app consumed `n` delivered bytes: the window opens (told at once when it was
    /// nearly shut, so a peer waiting on a closed window resumes).
    pub fn consumed(&mut self, n: usize) {
        let before = self.window() as usize;
        self.unread = self.unread.saturating_sub(n);
        if before < RECV_BUF / 4 && self.window() as usize >= RECV_BUF / 4 {
            self.ack_needed = true;
        }
    }

    /// Data was delivered: `n` bytes are now the app's to read.
    pub fn delivered(&mut self, n: usize) {
        self.unread += n;
    }

    /// Finishes sending what is queued, then FIN.
    pub fn close(&mut self) {
        self.close_requested = true;
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::SynSent | State::Connected)
    }

    fn window(&self) -> u32 {
        RECV_BUF.saturating_sub(self.recv_buf.len() + self.reorder_bytes + self.unread) as u32
    }

    /// Bytes sent and neither acknowledged nor taken for lost (RFC 6675's pipe): packets marked
    /// for resending have left the path.
    fn bytes_in_flight(&self) -> usize {
        self.inflight
            .iter()
            .filter(|s| !s.acked && !s.resend && s.sent_at.is_some())
            .map(|s| s.data.len().max(1))
            .sum()
    }

    fn sack(&self) -> Option<Vec<u8>> {
        if self.reorder.is_empty() {
            return None;
        }
        let mut bits = vec![0u8; 4];
        for &s in self.reorder.keys() {
            let i = s.wrapping_sub(self.ack).wrapping_sub(2) as usize;
            if i < SACK_BITS {
                if i / 8 >= bits.len() {
                    bits.resize((i / 8 / 4 + 1) * 4, 0);
                }
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        Some(bits)
    }

    fn packet(&self, ty: Type, seq: u16, payload: Vec<u8>, now: Instant) -> Packet {
        Packet {
            ty,
            conn_id: if ty == Type::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            ts: self.now_us(now),
            ts_diff: self.reply_micro,
            wnd: self.window(),
            seq,
            ack: self.ack,
            sack: self.sack(),
            payload,
        }
    }

    /// Datagrams to send now.
    pub fn poll_transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self.state == State::Closed && self.ack_needed {
            // Closed, but the peer repeated something: it lacks our last ACK (TIME_WAIT).
            self.ack_needed = false;
            out.push(self.packet(Type::State, self.seq, Vec::new(), now).encode());
            return out;
        }
        if matches!(self.state, State::Closed | State::TimedOut | State::Reset) {
            return out;
        }
        let limit = (self.cwnd as usize).min(self.peer_wnd);
        // New data into packets, as the windows allow (at least one packet when nothing flies).
        // What flies or waits to go is summed once, not per packet: a window holds thousands.
        if self.state == State::Connected && self.peer_confirmed {
            let mut flying = self.bytes_in_flight()
                + self
                    .inflight
                    .iter()
                    .filter(|s| s.resend && !s.acked)
                    .map(|s| s.data.len())
                    .sum::<usize>();
            while !self.send_buf.is_empty() && (flying == 0 || flying + MSS <= limit) {
                let n = self.send_buf.len().min(MSS);
                let data = take_front(&mut self.send_buf, n);
                self.push_packet(Type::Data, data);
                flying += n;
            }
            if self.close_requested && self.send_buf.is_empty() && !self.fin_sent {
                self.fin_sent = true;
                self.push_packet(Type::Fin, Vec::new());
            }
        }
        let mut sent_any = false;
        let mut to_send = Vec::new();
        for (i, s) in self.inflight.iter().enumerate() {
            if s.resend && !s.acked {
                to_send.push(i);
            }
        }
        // Repairs and new data alike fit the window, lowest sequence first: after a timeout or
        // a large loss, resending every hole at once overflowed the receiver's socket buffer
        // again (a libtorrent peer on a busy machine), and every repair was lost with it. A
        // tail loss probe goes regardless.
        let mut flight = self.bytes_in_flight();
        let mut full = false;
        for i in to_send {
            if self.pace_at.is_some_and(|t| t > now) {
                break; // paced: the rest leaves at `pace_at` (poll_timeout)
            }
            let (ty, seq, data) = {
                let s = &self.inflight[i];
                (s.ty, s.seq, s.data.clone())
            };
            let len = data.len().max(1);
            full |= flight > 0 && flight + len > limit;
            if full && self.probe_seq != Some(seq) {
                continue;
            }
            flight += len;
            self.paced(data.len(), now);
            let p = self.packet(ty, seq, data, now);
            let s = &mut self.inflight[i];
            if s.transmissions > 0 {
                self.stats.retransmits += 1;
            } else {
                self.last_progress = now;
            }
            s.transmissions += 1;
            s.sent_at = Some(now);
            s.resend = false;
            self.stats.bytes_sent += p.payload.len() as u64;
            out.push(p.encode());
            sent_any = true;
        }
        if (self.ack_needed && !sent_any)
            || (self.state == State::Connected && now.duration_since(self.last_send) >= KEEPALIVE)
        {
            out.push(self.packet(Type::State, self.seq, Vec::new(), now).encode());
            sent_any = true;
        }
        if sent_any {
            self.ack_needed = false;
            self.last_send = now;
            self.stats.packets_sent += out.len() as u64;
        }
        out
    }

    /// Spreads a window's packets over the round trip instead of sending them back to back: a
    /// burst of a whole window overflows the receiver's socket buffer and the queues on the path
    /// (and LEDBAT reads the queue it built itself as congestion). Rate: twice the window per
    /// smoothed RTT (room for slow start), bursts of up to [`PACE_BURST`] packets; no pacing
    /// before an RTT sample or on paths under [`PACE_MIN_RTT`].
    fn paced(&mut self, len: usize, now: Instant) {
        let Some(srtt) = self.srtt.filter(|r| *r >= PACE_MIN_RTT) else {
            self.pace_at = None;
            return;
        };
        let rate = 2.0 * self.cwnd.max(MIN_CWND) / srtt.as_secs_f64();
        let iv = Duration::from_secs_f64((len + crate::packet::HEADER) as f64 / rate);
        let floor = now.checked_sub(iv * PACE_BURST).unwrap_or(now);
        self.pace_at = Some(self.pace_at.map_or(floor, |p| p.max(floor)) + iv);
    }

    /// A RESET for the peer (our connection went away).
    pub fn reset_packet(&self, now: Instant) -> Vec<u8> {
        self.packet(Type::Reset, self.seq, Vec::new(), now).encode()
    }

    /// When `handle_timeout` should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.is_open() {
            return None;
        }
        // Packets already taken for lost wait for the window, not for a timer.
        let rto = self
            .inflight
            .iter()
            .filter(|s| !s.acked && !s.resend)
            .filter_map(|s| s.sent_at)
            .min()
            .map(|t| t + self.rto);
        let keep = (self.state == State::Connected).then(|| self.last_send + KEEPALIVE);
        // Packets held back by pacing leave at `pace_at`.
        let paced = self
            .pace_at
            .filter(|_| self.inflight.iter().any(|s| s.resend && !s.acked));
        [rto, keep, paced, self.loss_timer, self.probe_at()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.is_open() {
            return;
        }
        let waiting = self
            .inflight
            .iter()
            .any(|s| !s.acked && s.sent_at.is_some());
        if waiting && now.duration_since(self.last_recv) >= DEAD_AFTER {
            self.state = State::TimedOut;
            return;
        }
        if self.loss_timer.is_some_and(|t| t <= now) {
            let lost = self.detect_losses(now);
            if lost > 0 {
                self.on_loss(lost);
            }
        }
        if self.probe_at().is_some_and(|t| t <= now) {
            self.send_probe();
        }
        let rto = self.rto;
        let Some(s) = self.inflight.iter_mut().find(|s| {
            !s.acked && !s.resend && s.sent_at.is_some_and(|t| now.duration_since(t) >= rto)
        }) else {
            return;
        };
        let limit = if s.ty == Type::Syn {
            SYN_TRIES
        } else {
            MAX_TRANSMISSIONS
        };
        if s.transmissions >= limit {
            self.state = State::TimedOut;
            return;
        }
        // Everything unacked is presumed lost; the window restarts from one packet.
        for s in self.inflight.iter_mut().filter(|s| !s.acked) {
            s.resend = true;
        }
        self.stats.timeouts += 1;
        // The timeout supersedes a probe that went unanswered; the next one waits a probe
        // timeout after the repairs.
        self.probe_seq = None;
        self.last_progress = now;
        self.ssthresh = (self.cwnd / 2.0).max(MIN_CWND);
        self.cwnd = MIN_CWND;
        self.rto = (self.rto * 2).min(MAX_RTO);
    }

    /// When a tail loss probe is due (RFC 8985's TLP): two smoothed RTTs without progress while
    /// packets are unacknowledged. A burst lost whole at the end of a flight (a receiver's full
    /// socket buffer) leaves no later packet to be acknowledged past it, so nothing shows the
    /// loss but the retransmission timeout, at least 500 ms; a probe shows it in about a round
    /// trip, at no cost to the window.
    fn probe_at(&self) -> Option<Instant> {
        if self.probe_seq.is_some() || self.state != State::Connected {
            return None;
        }
        let srtt = self.srtt?;
        let waiting = self
            .inflight
            .iter()
            .any(|s| !s.acked && !s.resend && s.sent_at.is_some());
        waiting.then(|| self.last_progress + (srtt * 2).max(MIN_PTO))
    }

    /// Resends the newest unacknowledged packet: its ACK carries a selective ACK of it, and the
    /// holes before it are then repaired at once.
    fn send_probe(&mut self) {
        if let Some(s) = self
            .inflight
            .iter_mut()
            .rev()
            .find(|s| !s.acked && s.sent_at.is_some())
        {
            s.resend = true;
            self.probe_seq = Some(s.seq);
        }
    }

    fn rtt_sample(&mut self, r: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(r, |m| m.min(r)));
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let d = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + d) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
        self.rto = (self.srtt.unwrap() + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO);
    }

    /// `lost` packets were found lost.
    fn on_loss(&mut self, lost: usize) {
        if self.recovery_until.is_some() {
            self.recovery_lost += lost;
            self.escalate_light_cut();
            return;
        }
        self.recovery_until = Some(self.seq.wrapping_sub(1));
        self.recovery_lost = lost;
        self.recovery_window = self.inflight.len();
        // CUBIC's 0.7, not Reno's half: on a long path a random loss every thousand packets
        // would otherwise hold the window near a few dozen packets. Congestion itself shows
        // first as queueing delay, which LEDBAT answers before any loss.
        let q = self.stats.queueing_us as f64;
        if q >= MIN_TARGET_US {
            self.target_us = self.target_us.min((q / 2.0).max(MIN_TARGET_US));
        }
        self.w_max = self.cwnd;
        // A loss while the path shows no queue at all is noise (a lossy link), not a full
        // buffer: cut a little (as TCP Veno does), or random losses every few round trips
        // hold a long path's window far below what it carries.
        // Slow start goes on after such a loss: it ends when the queue shows.
        self.recovery_light = q < RANDOM_LOSS_QUEUE_US;
        if self.recovery_light {
            self.cwnd = (self.cwnd * 0.85).max(MIN_CWND);
            self.escalate_light_cut();
        } else {
            self.cwnd = (self.cwnd * 0.7).max(MIN_CWND);
            self.ssthresh = self.cwnd;
        }
    }

    /// A light cut turns out to be for a full buffer, not a lossy link: more than one packet
    /// in [`RANDOM_LOSS_SHARE`] of the window lost in one round trip. Halve the window from where
    /// it was and leave slow start, once per round trip. (Seen against libtorrent on a busy
    /// host: its socket buffer overflowed on every burst, a fifth of all packets were resent,
    /// and the window never came down because no queueing delay showed.)
    fn escalate_light_cut(&mut self) {
        if self.recovery_light
            && self.recovery_lost > 2
            && self.recovery_lost * RANDOM_LOSS_SHARE > self.recovery_window
        {
            self.recovery_light = false;
            self.cwnd = (self.w_max * 0.5).max(MIN_CWND);
            self.ssthresh = self.cwnd;
        }
    }

    /// A datagram for this connection.
    pub fn handle(&mut self, p: &Packet, now: Instant) {
        if self.state == State::Closed && matches!(p.ty, Type::Data | Type::Fin) {
            self.ack_needed = true; // re-ACK (the socket keeps closed connections a while)
            return;
        }
        if !self.is_open() {
            return;
        }
        if p.ty == Type::Reset {
            self.state = State::Reset;
            return;
        }
        if p.ty == Type::Syn {
            // A repeated SYN: our STATE was lost.
            self.ack_needed = true;
            return;
        }
        self.last_recv = now;
        self.reply_micro = self.now_us(now).wrapping_sub(p.ts);
        self.peer_wnd = p.wnd as usize;
        if self.state == State::SynSent {
            if p.ty != Type::State {
                return;
            }
            self.state = State::Connected;
            self.ack = p.seq.wrapping_sub(1);
            // Tell the responder we are here (it waits for us before sending data).
            self.ack_needed = true;
        }
        self.peer_confirmed = true;
        self.on_ack(p, now);
        if matches!(p.ty, Type::Data | Type::Fin) {
            self.on_data(p);
        }
        if self.fin_acked && self.eof.is_some() && self.eof_reached() {
            self.state = State::Closed;
        }
    }

    /// BEP 29: a packet with 3 packets after it acked is lost, once it has had a round trip and
    /// a quarter to be acked (RACK's reordering window: jitter reorders without losing, and
    /// the packets past a retransmission were sent before it). Every such hole goes again now,
    /// not one per round trip: a burst lost at a shallow queue in slow start otherwise takes
    /// hundreds of round trips to repair while the window sits full. Holes not yet due set
    /// `loss_timer`, since the ACKs that would bring us back here may have stopped.
    fn detect_losses(&mut self, now: Instant) -> usize {
        let srtt = self.srtt.unwrap_or(self.rto);
        let reorder = srtt + srtt / 4;
        let (mut acked_after, mut lost, mut next) = (0, 0, None::<Instant>);
        let mut probe_after = false;
        for s in self.inflight.iter_mut().rev() {
            if s.acked {
                acked_after += 1;
                probe_after |= self.probe_seq == Some(s.seq);
                continue;
            }
            let Some(t) = s
                .sent_at
                .filter(|_| (acked_after >= 3 || probe_after) && !s.resend)
            else {
                continue;
            };
            if now.duration_since(t) >= reorder {
                s.resend = true;
                lost += 1;
            } else {
                next = Some(next.map_or(t + reorder, |n| n.min(t + reorder)));
            }
        }
        self.loss_timer = next;
        lost
    }

    fn on_ack(&mut self, p: &Packet, now: Instant) {
        let mut acked_bytes = 0usize;
        let mut newest_sample = None;
        // Cumulative.
        while let Some(front) = self.inflight.front() {
            if front.sent_at.is_none() || seq_lt(p.ack, front.seq) {
                break;
            }
            let s = self.inflight.pop_front().unwrap();
            if s.ty == Type::Fin {
                self.fin_acked = true; // (selectively acked or not)
            }
            if !s.acked {
                acked_bytes += s.data.len();
                if s.transmissions == 1 {
                    newest_sample = s.sent_at.map(|t| now.duration_since(t));
                }
                if s.ty == Type::Data {
                    self.acked_bytes += s.data.len();
                }
            }
        }
        // Selective.
        let mut sacked_after_hole = 0;
        if let Some(bits) = &p.sack {
            for s in self.inflight.iter_mut() {
                let i = s.seq.wrapping_sub(p.ack).wrapping_sub(2) as usize;
                if i < bits.len() * 8 && bits[i / 8] & (1 << (i % 8)) != 0 && !s.acked {
                    s.acked = true;
                    acked_bytes += s.data.len();
                    if s.ty == Type::Data {
                        self.acked_bytes += s.data.len();
                    }
                    if s.transmissions == 1 {
                        newest_sample = s.sent_at.map(|t| now.duration_since(t));
                    }
                }
                if s.acked {
                    sacked_after_hole += 1;
                }
            }
        }
        if let Some(r) = self.recovery_until {
            if !seq_lt(p.ack, r) {
                self.recovery_until = None;
            }
        }
        // Duplicate ACKs and SACKs past a hole: the first unacked packet was lost.
        let dup = p.ty == Type::State
            && p.ack == self.last_ack_seen
            && acked_bytes == 0
            && self
                .inflight
                .iter()
                .any(|s| !s.acked && s.sent_at.is_some());
        self.dup_acks = if dup { self.dup_acks + 1 } else { 0 };
        self.last_ack_seen = p.ack;
        let mut lost = 0;
        if self.dup_acks >= 3 {
            let srtt = self.srtt.unwrap_or(self.rto);
            if let Some(s) = self.inflight.iter_mut().find(|s| !s.acked) {
                if !s.resend && s.sent_at.is_some_and(|t| now.duration_since(t) >= srtt) {
                    s.resend = true;
                    lost += 1;
                }
            }
        }
        if sacked_after_hole >= 3 || (self.probe_seq.is_some() && sacked_after_hole > 0) {
            lost += self.detect_losses(now);
        }
        if lost > 0 {
            self.dup_acks = 0;
            self.on_loss(lost);
        }
        if acked_bytes > 0 {
            self.last_progress = now;
            self.probe_seq = None;
        }
        if let Some(r) = newest_sample {
            self.rtt_sample(r);
        }
        if acked_bytes > 0 {
            self.ledbat(p.ts_diff, acked_bytes, now);
        }
    }

    fn ledbat(&mut self, their_delay: u32, acked: usize, now: Instant) {
        // Grow only a window we fill (RFC 7661): a window far above what flies would take
        // many round trips to bring down when a queue builds.
        let limited = (self.bytes_in_flight() + acked) as f64 >= self.cwnd * 0.8;
        if now.duration_since(self.base_minute) >= Duration::from_secs(60) {
            self.base_minute = now;
            self.base_delay = [self.base_delay[1], u32::MAX];
            // The path may have changed: let the target climb back (losses lower it again).
            self.target_us = (self.target_us * 2.0).min(TARGET_US);
        }
        let mut queueing = 0.0;
        if their_delay != 0 {
            self.base_delay[1] = self.base_delay[1].min(their_delay);
            let base = self.base_delay[0].min(self.base_delay[1]);
            queueing = their_delay.wrapping_sub(base) as f64;
            if queueing > 100.0 * TARGET_US {
                queueing = 0.0; // a clock jump, not a queue
            }
        }
        let target = self.target_us;
        if self.cwnd < self.ssthresh && queueing < target / 2.0 {
            if limited {
                self.cwnd += acked as f64;
            }
        } else {
            if self.cwnd < self.ssthresh {
                self.ssthresh = self.cwnd; // the queue is building: leave slow start
            }
            let off_target = (target - queueing) / target;
            if off_target >= 0.0 {
                if limited {
                    // A window cut by a loss while the path stays empty (a random loss on a
                    // long path): regrow to where it was by an eighth per round trip, not one
                    // packet, so it comes back in a few round trips, not hundreds; past it, while
                    // the path still shows no queue at all, probe by a sixteenth per round
                    // trip (else random losses every few round trips ratchet the window down:
                    // each cut sets the mark the regrowth stops at). Otherwise LEDBAT's one
                    // packet per round trip: a latecomer whose base delay includes another
                    // flow's queue must not grab the link.
                    let step = if queueing < target / 4.0 && self.cwnd < self.w_max {
                        (self.cwnd / 8.0).max(MSS as f64)
                    } else if queueing < target / 8.0 {
                        (self.cwnd / 16.0).max(MSS as f64)
                    } else {
                        MSS as f64
                    };
                    // LEDBAT++'s gain: 1 / min(16, ceil(2 target / base delay)), slower than
                    // Reno's one packet per round trip on short paths, so a TCP flow sharing a
                    // queue below our target still gets most of the link. The regrowth after a
                    // random loss is not slowed.
                    let gain = if step > MSS as f64 {
                        GAIN
                    } else {
                        let base_us = self
                            .min_rtt
                            .map_or(TARGET_US, |r| r.as_micros() as f64 / 2.0);
                        GAIN / (2.0 * TARGET_US / base_us.max(1.0)).ceil().clamp(1.0, 16.0)
                    };
                    self.cwnd += gain * off_target * acked as f64 * step / self.cwnd;
                }
            } else {
                // Over target: give way within a round trip or two (at most halving per round
                // trip), not one packet per round trip, so a competing TCP flow gets its link.
                self.cwnd += off_target.max(-1.0) * acked as f64 * 0.5;
            }
        }
        self.cwnd = self.cwnd.clamp(MIN_CWND, MAX_CWND);
        self.stats.queueing_us = queueing as u32;
        self.stats.cwnd = self.cwnd as u32;
    }

    fn on_data(&mut self, p: &Packet) {
        self.ack_needed = true;
        if p.ty == Type::Fin && self.eof.is_none() {
            self.eof = Some(p.seq);
        }
        let next = self.ack.wrapping_add(1);
        if p.seq == next {
            self.deliver(p.ty, &p.payload);
            while let Some((ty, data)) = self.reorder.remove(&self.ack.wrapping_add(1)) {
                self.reorder_bytes -= data.len();
                self.deliver(ty, &data);
            }
        } else if seq_lt(next, p.seq)
            && p.seq.wrapping_sub(next) < MAX_REORDER as u16
            && !self.reorder.contains_key(&p.seq)
            && (self.window() as usize) >= p.payload.len()
        {
            self.reorder_bytes += p.payload.len();
            self.reorder.insert(p.seq, (p.ty, p.payload.clone()));
        }
    }

    fn deliver(&mut self, _ty: Type, data: &[u8]) {
        self.ack = self.ack.wrapping_add(1);
        self.stats.bytes_received += data.len() as u64;
        self.recv_buf.extend(data);
    }

    /// True once the peer's FIN and everything before it have been read.
    pub fn at_eof(&self) -> bool {
        self.eof_reached() && self.recv_buf.is_empty()
    }

    /// Everything we were asked to send is acknowledged.
    pub fn all_acked(&self) -> bool {
        self.send_buf.is_empty() && self.inflight.iter().all(|s| s.acked)
    }

    #[cfg(test)]
    pub(crate) fn debug_inflight(&self) -> Vec<(u16, Type, bool, bool)> {
        self.inflight
            .iter()
            .map(|s| (s.seq, s.ty, s.acked, s.sent_at.is_some()))
            .collect()
    }

    pub fn cwnd(&self) -> usize {
        self.cwnd as usize
    }
}

#[cfg(test)]
mod tests;

/// The first `n` bytes of `q`, removed, copied as slices (draining byte by byte cost a tenth of
/// a bulk transfer's CPU).
fn take_front(q: &mut VecDeque<u8>, n: usize) -> Vec<u8> {
    let (a, b) = q.as_slices();
    let from_a = n.min(a.len());
    let mut v = Vec::with_capacity(n);
    v.extend_from_slice(&a[..from_a]);
    v.extend_from_slice(&b[..n - from_a]);
    q.drain(..n);
    v
}
