//! uTP over the listen port's UDP socket: one task owns every connection's state machine
//! (`ccbt_utp::Conn`), feeds it datagrams and timeouts and sends what it asks; each connection is
//! a [`UtpStream`] for the peer tasks, talking to that task over channels.
//!
//! Flow control: a writer holds send credit (a semaphore of `SEND_BUF` bytes) that comes back as
//! the peer acknowledges; received bytes count against our advertised window until the reader
//! has taken them (`Cmd::Consumed`).

use super::udp::{Datagram, UdpMux};
use bytes::{Bytes, BytesMut};
use ccbt_utp::conn::SEND_BUF;
use ccbt_utp::{Conn, Packet, State, Type};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Connections at once (beyond it SYNs get a RESET).
const MAX_CONNS: usize = 1024;
/// A closed connection stays this long to re-ACK a repeated FIN.
const LINGER: Duration = Duration::from_secs(10);

type Key = (SocketAddr, u16);

enum Cmd {
    Connect(SocketAddr, oneshot::Sender<Result<UtpStream, String>>),
    Write(Key, Vec<u8>),
    Consumed(Key, usize),
    Close(Key),
}

/// The uTP endpoint of a session.
#[derive(Clone)]
pub(crate) struct UtpSocket {
    tx: mpsc::UnboundedSender<Cmd>,
}

struct Entry {
    conn: Conn,
    to_app: Option<mpsc::UnboundedSender<Bytes>>,
    credit: Arc<Semaphore>,
    reply: Option<oneshot::Sender<Result<UtpStream, String>>>,
    /// The stream, until it is handed over (dialled: on connect; accepted: at once).
    stream: Option<UtpStream>,
    closed_at: Option<Instant>,
    last_log: Instant,
}

impl UtpSocket {
    /// Starts uTP on `mux`; accepted connections go to `accepted`.
    pub(crate) fn start(
        mux: Arc<UdpMux>,
        accepted: mpsc::Sender<(UtpStream, SocketAddr)>,
    ) -> UtpSocket {
        let (tx, rx) = mpsc::unbounded_channel();
        let input = mux.subscribe_utp();
        tokio::spawn(run(mux, input, rx, tx.clone(), accepted));
        UtpSocket { tx }
    }

    pub(crate) async fn connect(&self, addr: SocketAddr) -> Result<UtpStream, String> {
        let (rt, rr) = oneshot::channel();
        self.tx
            .send(Cmd::Connect(addr, rt))
            .map_err(|_| "uTP is not running".to_string())?;
        rr.await.map_err(|_| "uTP is not running".to_string())?
    }
}

/// One uTP connection as a byte stream.
pub(crate) struct UtpStream {
    r: UtpReader,
    w: UtpWriter,
}

impl UtpStream {
    pub(crate) fn into_split(self) -> (UtpReader, UtpWriter) {
        (self.r, self.w)
    }

    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        self.r.read_buf(buf).await
    }

    pub(crate) async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.w.write_all(data).await
    }
}

pub(crate) struct UtpReader {
    key: Key,
    cmd: mpsc::UnboundedSender<Cmd>,
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl UtpReader {
    /// Appends what arrives; 0 at end of stream (FIN, reset or timeout). Cancel-safe.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self.rx.recv().await {
            Some(b) => {
                buf.extend_from_slice(&b);
                let _ = self.cmd.send(Cmd::Consumed(self.key, b.len()));
                Ok(b.len())
            }
            None => Ok(0),
        }
    }
}

pub(crate) struct UtpWriter {
    key: Key,
    cmd: mpsc::UnboundedSender<Cmd>,
    credit: Arc<Semaphore>,
    closed: bool,
}

impl UtpWriter {
    /// Queues all of `data` (waiting for send credit as the peer acknowledges).
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        let broken =
            || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "uTP connection closed");
        for chunk in data.chunks(SEND_BUF / 4) {
            let permit = self
                .credit
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| broken())?;
            permit.forget();
            self.cmd
                .send(Cmd::Write(self.key, chunk.to_vec()))
                .map_err(|_| broken())?;
        }
        Ok(())
    }

    pub(crate) fn shutdown(&mut self) {
        if !self.closed {
            self.closed = true;
            let _ = self.cmd.send(Cmd::Close(self.key));
        }
    }
}

impl Drop for UtpWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn new_entry(conn: Conn, key: Key, cmd: &mpsc::UnboundedSender<Cmd>) -> Entry {
    let (to_app, rx) = mpsc::unbounded_channel();
    let credit = Arc::new(Semaphore::new(SEND_BUF));
    let stream = UtpStream {
        r: UtpReader {
            key,
            cmd: cmd.clone(),
            rx,
        },
        w: UtpWriter {
            key,
            cmd: cmd.clone(),
            credit: credit.clone(),
            closed: false,
        },
    };
    Entry {
        conn,
        to_app: Some(to_app),
        credit,
        reply: None,
        stream: Some(stream),
        closed_at: None,
        last_log: Instant::now(),
    }
}

async fn run(
    mux: Arc<UdpMux>,
    mut input: mpsc::Receiver<Vec<Datagram>>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    cmd_tx: mpsc::UnboundedSender<Cmd>,
    accepted: mpsc::Sender<(UtpStream, SocketAddr)>,
) {
    let mut conns: HashMap<Key, Entry> = HashMap::new();
    loop {
        let next = conns
            .values()
            .filter_map(|e| e.conn.poll_timeout())
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let mut touched: Vec<Key> = Vec::new();
        tokio::select! {
            d = input.recv() => {
                let Some(batch) = d else { return };
                let now = Instant::now();
                for (pkt, from) in batch {
                    let Ok(p) = Packet::decode(&pkt) else { continue };
                    let key = if p.ty == Type::Syn {
                        let key = (from, p.conn_id.wrapping_add(1));
                        if let Some(e) = conns.get_mut(&key) {
                            e.conn.handle(&p, now);
                        } else if conns.len() < MAX_CONNS {
                            let conn = Conn::accept(&p, rand::random(), now);
                            let mut e = new_entry(conn, key, &cmd_tx);
                            let s = e.stream.take().expect("new");
                            if accepted.try_send((s, from)).is_err() {
                                continue;
                            }
                            conns.insert(key, e);
                        } else {
                            send_reset(&mux, &p, from).await;
                            continue;
                        }
                        key
                    } else if let Some(e) = conns.get_mut(&(from, p.conn_id)) {
                        e.conn.handle(&p, now);
                        (from, p.conn_id)
                    } else {
                        if p.ty != Type::Reset {
                            send_reset(&mux, &p, from).await;
                        }
                        continue;
                    };
                    // One flush per connection per batch: the ACKs of a batch go as one.
                    if !touched.contains(&key) {
                        touched.push(key);
                    }
                }
            }
            c = cmds.recv() => {
                let Some(c) = c else { return };
                let now = Instant::now();
                match c {
                    Cmd::Connect(addr, reply) => {
                        let mut id: u16 = rand::random();
                        while conns.contains_key(&(addr, id)) {
                            id = id.wrapping_add(2);
                        }
                        let key = (addr, id);
                        let mut e = new_entry(Conn::connect(id, now), key, &cmd_tx);
                        e.reply = Some(reply);
                        conns.insert(key, e);
                        touched.push(key);
                    }
                    Cmd::Write(key, data) => {
                        if let Some(e) = conns.get_mut(&key) {
                            // Credit bounds this to what the send buffer takes.
                            let n = e.conn.write(&data);
                            if n < data.len() {
                                e.credit.add_permits(data.len() - n);
                            }
                            touched.push(key);
                        }
                    }
                    Cmd::Consumed(key, n) => {
                        if let Some(e) = conns.get_mut(&key) {
                            e.conn.consumed(n);
                            touched.push(key);
                        }
                    }
                    Cmd::Close(key) => {
                        if let Some(e) = conns.get_mut(&key) {
                            e.conn.close();
                            touched.push(key);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {
                // A private socket (a metadata fetch's) ends once nobody holds it: no handle,
                // no stream, no connection, and no one taking incoming ones.
                if conns.is_empty() && accepted.is_closed() && cmd_tx.strong_count() == 1 {
                    return;
                }
                let now = Instant::now();
                for (k, e) in conns.iter_mut() {
                    if e.conn.poll_timeout().is_some_and(|t| t <= now) {
                        e.conn.handle_timeout(now);
                        touched.push(*k);
                    }
                }
            }
        }
        let now = Instant::now();
        for key in touched {
            let Some(e) = conns.get_mut(&key) else {
                continue;
            };
            flush(&mux, key, e, now).await;
        }
        conns.retain(|_, e| match e.conn.state {
            State::Closed => e.closed_at.is_some_and(|t| now.duration_since(t) < LINGER),
            State::Reset | State::TimedOut => false,
            _ => true,
        });
    }
}

/// After an event: deliver data, hand over a connected stream, send datagrams, free credit.
async fn flush(mux: &UdpMux, key: Key, e: &mut Entry, now: Instant) {
    let data = e.conn.read();
    if !data.is_empty() {
        e.conn.delivered(data.len());
        if let Some(tx) = &e.to_app {
            let _ = tx.send(Bytes::from(data));
        }
    }
    if e.conn.at_eof() || !e.conn.is_open() {
        e.to_app = None; // the reader sees the end
    }
    if let Some(reply) = e.reply.take() {
        match e.conn.state {
            State::Connected => {
                let _ = reply.send(e.stream.take().ok_or_else(|| "no stream".to_string()));
            }
            State::SynSent => e.reply = Some(reply),
            s => {
                let _ = reply.send(Err(format!("uTP connect failed ({s:?})")));
            }
        }
    }
    mux.send_all(key.0, &e.conn.poll_transmit(now)).await;
    if now.duration_since(e.last_log) >= Duration::from_secs(1) {
        e.last_log = now;
        tracing::debug!("uTP {}: {:?}", key.0, e.conn.stats);
    }
    let acked = std::mem::take(&mut e.conn.acked_bytes);
    if acked > 0 {
        e.credit.add_permits(acked);
    }
    match e.conn.state {
        State::Closed if e.closed_at.is_none() => e.closed_at = Some(now),
        State::Reset | State::TimedOut => e.credit.close(),
        _ => {}
    }
}

async fn send_reset(mux: &UdpMux, p: &Packet, to: SocketAddr) {
    let r = Packet {
        ty: Type::Reset,
        conn_id: p.conn_id,
        ts: 0,
        ts_diff: 0,
        wnd: 0,
        seq: rand::random(),
        ack: p.seq,
        sack: None,
        payload: Vec::new(),
    };
    mux.send_all(to, &[r.encode()]).await;
}
