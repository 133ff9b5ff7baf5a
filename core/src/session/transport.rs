//! The one way a peer connection starts, for torrents, share swarms and metadata fetches alike:
//! dial or accept a [`PeerStream`], optionally MSE/PE-encrypted, then the BEP 3 handshake. The
//! stream hides the encryption, so everything above sees the same bytes either way.

use super::utp::{UtpReader, UtpStream, UtpWriter};
use crate::mse::{self, Cipher, Dh, MseError, Policy, KEY_LEN, MAX_PAD};
use crate::wire::{Handshake, HANDSHAKE_LEN, PROTOCOL};
use bytes::{Buf, BytesMut};
use rand::{Rng, RngCore};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The connection under the encryption: TCP or uTP.
pub(crate) enum Raw {
    Tcp(TcpStream),
    Utp(UtpStream),
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Raw::Tcp(_) => "tcp",
            Raw::Utp(_) => "utp",
        })
    }
}

impl Raw {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Raw::Tcp(t) => t.read_buf(buf).await,
            Raw::Utp(u) => u.read_buf(buf).await,
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Raw::Tcp(t) => t.write_all(data).await,
            Raw::Utp(u) => u.write_all(data).await,
        }
    }

    /// Reads exactly `out.len()` bytes, keeping any extra in `extra`.
    async fn read_exact(&mut self, out: &mut [u8], extra: &mut BytesMut) -> std::io::Result<()> {
        match self {
            Raw::Tcp(t) => t.read_exact(out).await.map(|_| ()),
            Raw::Utp(u) => {
                while extra.len() < out.len() {
                    if u.read_buf(extra).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                out.copy_from_slice(&extra[..out.len()]);
                extra.advance(out.len());
                Ok(())
            }
        }
    }
}

enum RawReader {
    Tcp(OwnedReadHalf),
    Utp(UtpReader),
}

enum RawWriter {
    Tcp(OwnedWriteHalf),
    Utp(UtpWriter),
}

/// How long a peer has to send its handshake (the encrypted one included).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a peer, before or after its handshake: TCP, with RC4 on either direction once
/// MSE has negotiated it, and bytes already read (and decrypted) that come first.
#[derive(Debug)]
pub(crate) struct PeerStream {
    tcp: Raw,
    rx: Option<Cipher>,
    tx: Option<Cipher>,
    pending: BytesMut,
    /// True when MSE negotiated RC4.
    pub encrypted: bool,
}

impl PeerStream {
    fn plain(tcp: Raw) -> PeerStream {
        PeerStream {
            tcp,
            rx: None,
            tx: None,
            pending: BytesMut::new(),
            encrypted: false,
        }
    }

    pub(crate) async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.tx {
            Some(c) => {
                let mut v = data.to_vec();
                c.apply(&mut v);
                self.tcp.write_all(&v).await
            }
            None => self.tcp.write_all(data).await,
        }
    }

    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        if let Some(n) = take_pending(&mut self.pending, buf) {
            return Ok(n);
        }
        let start = buf.len();
        let n = self.tcp.read_buf(buf).await?;
        decrypt_new(&mut self.rx, buf, start, n);
        Ok(n)
    }

    pub(crate) async fn read_exact(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        let from_pending = self.pending.len().min(out.len());
        out[..from_pending].copy_from_slice(&self.pending[..from_pending]);
        self.pending.advance(from_pending);
        let rest = &mut out[from_pending..];
        self.tcp.read_exact(rest, &mut self.pending).await?;
        if let Some(c) = &mut self.rx {
            c.apply(rest);
        }
        Ok(())
    }

    /// Read and write halves for the peer's reader and writer tasks.
    pub(crate) fn into_split(self) -> (PeerReader, PeerWriter) {
        let (r, w) = match self.tcp {
            Raw::Tcp(t) => {
                let (r, w) = t.into_split();
                (RawReader::Tcp(r), RawWriter::Tcp(w))
            }
            Raw::Utp(u) => {
                let (r, w) = u.into_split();
                (RawReader::Utp(r), RawWriter::Utp(w))
            }
        };
        (
            PeerReader {
                r,
                rx: self.rx,
                pending: self.pending,
            },
            PeerWriter { w, tx: self.tx },
        )
    }
}

/// Bytes read (and decrypted) during the handshake come first: moved into `buf`.
fn take_pending(pending: &mut BytesMut, buf: &mut BytesMut) -> Option<usize> {
    if pending.is_empty() {
        return None;
    }
    let n = pending.len();
    buf.extend_from_slice(pending);
    pending.clear();
    Some(n)
}

/// Decrypts the `n` bytes just read at `start` of `buf`, if RC4 was negotiated.
fn decrypt_new(rx: &mut Option<Cipher>, buf: &mut BytesMut, start: usize, n: usize) {
    if let Some(c) = rx {
        c.apply(&mut buf[start..start + n]);
    }
}

pub(crate) struct PeerReader {
    r: RawReader,
    rx: Option<Cipher>,
    pending: BytesMut,
}

impl PeerReader {
    /// Appends what arrives to `buf` (decrypted); 0 at end of stream. Cancel-safe.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        if let Some(n) = take_pending(&mut self.pending, buf) {
            return Ok(n);
        }
        let start = buf.len();
        let n = match &mut self.r {
            RawReader::Tcp(r) => r.read_buf(buf).await?,
            RawReader::Utp(r) => r.read_buf(buf).await?,
        };
        decrypt_new(&mut self.rx, buf, start, n);
        Ok(n)
    }
}

pub(crate) struct PeerWriter {
    w: RawWriter,
    tx: Option<Cipher>,
}

impl PeerWriter {
    /// Writes `buf` whole (encrypting it in place first).
    pub(crate) async fn send(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        if let Some(c) = &mut self.tx {
            c.apply(buf);
        }
        match &mut self.w {
            RawWriter::Tcp(w) => w.write_all(buf).await,
            RawWriter::Utp(w) => w.write_all(buf).await,
        }
    }

    pub(crate) async fn shutdown(&mut self) -> std::io::Result<()> {
        match &mut self.w {
            RawWriter::Tcp(w) => w.shutdown().await,
            RawWriter::Utp(w) => {
                w.shutdown();
                Ok(())
            }
        }
    }
}

/// Transports to dial with, in order of preference (`[network] enable_tcp`, `enable_utp`,
/// `prefer_utp`).
#[derive(Clone, Default)]
pub(crate) struct Dialer {
    pub tcp: bool,
    pub utp: Option<super::utp::UtpSocket>,
    pub prefer_utp: bool,
    /// Outgoing TCP leaves from this address (the listen address, when it names one): a node
    /// listening on one address of several is one peer to the others, whichever side dials.
    pub bind_ip: Option<std::net::IpAddr>,
}

impl Dialer {
    async fn dial(&self, addr: SocketAddr, within: Duration) -> Result<Raw, String> {
        let tcp = || async {
            let connect = async {
                match self.bind_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
                    Some(ip) => {
                        let sock = if ip.is_ipv4() {
                            tokio::net::TcpSocket::new_v4()?
                        } else {
                            tokio::net::TcpSocket::new_v6()?
                        };
                        sock.bind(SocketAddr::new(ip, 0))?;
                        sock.connect(addr).await
                    }
                    None => TcpStream::connect(addr).await,
                }
            };
            let s = tokio::time::timeout(within, connect)
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let _ = s.set_nodelay(true);
            Ok::<_, String>(Raw::Tcp(s))
        };
        let utp = || async {
            let u = self.utp.as_ref().ok_or("uTP is off")?;
            tokio::time::timeout(within, u.connect(addr))
                .await
                .map_err(|_| "uTP connect timed out".to_string())?
                .map(Raw::Utp)
        };
        let (first_utp, second) = match (self.tcp, self.utp.is_some(), self.prefer_utp) {
            (true, true, true) => (true, true),
            (true, true, false) => (false, true),
            (true, false, _) => (false, false),
            (false, true, _) => (true, false),
            (false, false, _) => return Err("both TCP and uTP are off".into()),
        };
        let r = if first_utp { utp().await } else { tcp().await };
        match r {
            Err(e) if second => {
                tracing::debug!("peer {addr}: {e}; trying the other transport");
                if first_utp {
                    tcp().await
                } else {
                    utp().await
                }
            }
            r => r,
        }
    }
}

/// Dials a peer; with an encryption policy other than `Disable` and the torrent's info-hash,
/// the connection is MSE-encrypted (under `Prefer`, a peer that refuses it is dialled again in
/// plaintext).
pub(crate) async fn connect(
    addr: SocketAddr,
    within: Duration,
    mse: Option<(Policy, [u8; 20])>,
    dialer: &Dialer,
) -> Result<PeerStream, String> {
    match mse {
        Some((policy, skey)) if policy != Policy::Disable => {
            let raw = dialer.dial(addr, within).await?;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, initiate(raw, policy, skey)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) if policy == Policy::Require => Err(format!("encrypted handshake: {e}")),
                Err(_) if policy == Policy::Require => Err("encrypted handshake timed out".into()),
                _ => {
                    tracing::debug!("peer {addr}: no encrypted handshake; dialling in plaintext");
                    Ok(PeerStream::plain(dialer.dial(addr, within).await?))
                }
            }
        }
        _ => Ok(PeerStream::plain(dialer.dial(addr, within).await?)),
    }
}

/// Accepts the next incoming TCP connection (transient accept errors, such as too many open
/// files, wait a moment instead of ending the listener).
pub(crate) async fn accept(l: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match l.accept().await {
            Ok((s, a)) => {
                let _ = s.set_nodelay(true);
                return (s, a);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// An incoming connection: plaintext if it starts with the BitTorrent handshake, else MSE (the
/// info-hash found by trying `skeys`, every torrent and share we serve). Returns the stream and
/// the peer's BitTorrent handshake.
pub(crate) async fn accept_stream(
    raw: Raw,
    policy: Policy,
    skeys: impl Fn() -> Vec<[u8; 20]>,
) -> Result<(PeerStream, Handshake), String> {
    let work = async {
        let mut s = PeerStream::plain(raw);
        let mut first = [0u8; 20];
        s.tcp
            .read_exact(&mut first, &mut s.pending)
            .await
            .map_err(|e| e.to_string())?;
        // What came with the first 20 bytes follows them.
        let mut head = BytesMut::from(&first[..]);
        head.extend_from_slice(&s.pending);
        s.pending = head;
        let plain = first[0] == 19 && &first[1..] == PROTOCOL;
        if plain {
            if policy == Policy::Require {
                return Err("plaintext peer refused (encryption is required)".to_string());
            }
        } else {
            if policy == Policy::Disable {
                return Err("encrypted handshake refused (encryption is disabled)".to_string());
            }
            let head = std::mem::take(&mut s.pending);
            s = respond(s.tcp, &head, policy, skeys()).await?;
        }
        let h = read_handshake_now(&mut s).await?;
        Ok((s, h))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

fn mse_err(e: MseError) -> String {
    e.to_string()
}

/// Reads into `buf` until `needle` appears within `limit` bytes; returns where it ends.
async fn sync_on(
    tcp: &mut Raw,
    buf: &mut BytesMut,
    needle: &[u8],
    limit: usize,
) -> Result<usize, String> {
    loop {
        if let Some(i) = mse::find(buf, needle) {
            return Ok(i + needle.len());
        }
        if buf.len() >= limit {
            return Err(mse_err(MseError::BadPad));
        }
        if tcp.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("peer closed during the encrypted handshake".into());
        }
    }
}

async fn fill(tcp: &mut Raw, buf: &mut BytesMut, n: usize) -> Result<(), String> {
    while buf.len() < n {
        if tcp.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("peer closed during the encrypted handshake".into());
        }
    }
    Ok(())
}

fn keypair_and_pad() -> (Dh, Vec<u8>) {
    let mut rng = rand::thread_rng();
    let mut secret = [0u8; 20];
    rng.fill_bytes(&mut secret);
    let dh = Dh::new(secret);
    let mut pad = vec![0u8; rng.gen_range(0..=MAX_PAD / 4)];
    rng.fill_bytes(&mut pad);
    (dh, pad)
}

/// The dialler's side (A).
async fn initiate(mut tcp: Raw, policy: Policy, skey: [u8; 20]) -> Result<PeerStream, String> {
    let io = |e: std::io::Error| e.to_string();
    let (dh, pad) = keypair_and_pad();
    let mut out = dh.public.to_vec();
    out.extend_from_slice(&pad);
    tcp.write_all(&out).await.map_err(io)?;
    let mut buf = BytesMut::with_capacity(1024);
    fill(&mut tcp, &mut buf, KEY_LEN).await?;
    if buf[0] == 19 && &buf[1..20] == PROTOCOL {
        // A plaintext peer answering our key as if it were a handshake.
        return Err("peer answered in plaintext".into());
    }
    let yb: [u8; KEY_LEN] = buf[..KEY_LEN].try_into().unwrap();
    buf.advance(KEY_LEN);
    let s = dh.shared(&yb).map_err(mse_err)?;
    let (mut tx, mut rx) = mse::ciphers(&s, &skey, true);
    let mut out = mse::req1(&s).to_vec();
    out.extend_from_slice(&mse::req23(&s, &skey));
    out.extend_from_slice(&mse::initiator_header(policy.provide(), &mut tx));
    tcp.write_all(&out).await.map_err(io)?;
    // B's reply starts after its padding with RC4(VC): find it.
    let mut vc = mse::VC;
    rx.apply(&mut vc);
    let end = sync_on(&mut tcp, &mut buf, &vc, MAX_PAD + vc.len()).await?;
    buf.advance(end);
    fill(&mut tcp, &mut buf, 6).await?;
    let mut head = [0u8; 6];
    head.copy_from_slice(&buf[..6]);
    rx.apply(&mut head);
    buf.advance(6);
    let select = u32::from_be_bytes(head[..4].try_into().unwrap());
    let pad_d = u16::from_be_bytes([head[4], head[5]]) as usize;
    if pad_d > MAX_PAD {
        return Err(mse_err(MseError::BadPad));
    }
    fill(&mut tcp, &mut buf, pad_d).await?;
    let mut padding = buf.split_to(pad_d);
    rx.apply(&mut padding);
    let rc4 = select == mse::CRYPTO_RC4 && policy.provide() & mse::CRYPTO_RC4 != 0;
    let plain = select == mse::CRYPTO_PLAIN && policy.provide() & mse::CRYPTO_PLAIN != 0;
    if !(rc4 || plain) {
        return Err(mse_err(MseError::NoCommonMethod(select)));
    }
    let mut pending = buf;
    if rc4 {
        rx.apply(&mut pending);
    }
    Ok(PeerStream {
        tcp,
        rx: rc4.then_some(rx),
        tx: rc4.then_some(tx),
        pending,
        encrypted: rc4,
    })
}

/// The receiving side (B), given the first bytes already read.
async fn respond(
    mut tcp: Raw,
    first: &[u8],
    policy: Policy,
    skeys: Vec<[u8; 20]>,
) -> Result<PeerStream, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut buf = BytesMut::from(first);
    fill(&mut tcp, &mut buf, KEY_LEN).await?;
    let ya: [u8; KEY_LEN] = buf[..KEY_LEN].try_into().unwrap();
    buf.advance(KEY_LEN);
    let (dh, pad) = keypair_and_pad();
    let s = dh.shared(&ya).map_err(mse_err)?;
    let mut out = dh.public.to_vec();
    out.extend_from_slice(&pad);
    tcp.write_all(&out).await.map_err(io)?;
    let end = sync_on(&mut tcp, &mut buf, &mse::req1(&s), MAX_PAD + 20).await?;
    buf.advance(end);
    fill(&mut tcp, &mut buf, 20 + 14).await?;
    let req2 = mse::req2_of(&s, &buf[..20].try_into().unwrap());
    buf.advance(20);
    let skey = skeys
        .into_iter()
        .find(|k| mse::req2(k) == req2)
        .ok_or_else(|| mse_err(MseError::UnknownTorrent))?;
    let (mut tx, mut rx) = mse::ciphers(&s, &skey, false);
    let mut head = [0u8; 14];
    head.copy_from_slice(&buf[..14]);
    rx.apply(&mut head);
    buf.advance(14);
    if head[..8] != mse::VC {
        return Err(mse_err(MseError::BadVc));
    }
    let provide = u32::from_be_bytes(head[8..12].try_into().unwrap());
    let pad_c = u16::from_be_bytes([head[12], head[13]]) as usize;
    if pad_c > MAX_PAD {
        return Err(mse_err(MseError::BadPad));
    }
    fill(&mut tcp, &mut buf, pad_c + 2).await?;
    let mut rest = buf.split_to(pad_c + 2);
    rx.apply(&mut rest);
    let ia_len = u16::from_be_bytes([rest[pad_c], rest[pad_c + 1]]) as usize;
    if ia_len > HANDSHAKE_LEN * 4 {
        return Err("peer's initial payload is too long".into());
    }
    fill(&mut tcp, &mut buf, ia_len).await?;
    let mut ia = buf.split_to(ia_len);
    rx.apply(&mut ia);
    let select = policy.select(provide).map_err(mse_err)?;
    tcp.write_all(&mse::responder_header(select, &mut tx))
        .await
        .map_err(io)?;
    let rc4 = select == mse::CRYPTO_RC4;
    let mut pending = ia;
    let mut tail = buf;
    if rc4 {
        rx.apply(&mut tail);
    }
    pending.extend_from_slice(&tail);
    Ok(PeerStream {
        tcp,
        rx: rc4.then_some(rx),
        tx: rc4.then_some(tx),
        pending,
        encrypted: rc4,
    })
}

async fn read_handshake_now(s: &mut PeerStream) -> Result<Handshake, String> {
    let mut hs = [0u8; HANDSHAKE_LEN];
    s.read_exact(&mut hs).await.map_err(|e| e.to_string())?;
    Handshake::decode(&hs).map_err(|e| e.to_string())
}

/// Reads the peer's handshake (bounded in time).
pub(crate) async fn read_handshake(s: &mut PeerStream) -> Result<Handshake, String> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, read_handshake_now(s))
        .await
        .map_err(|_| "handshake timed out".to_string())?
}

/// Our side of the handshake: sends ours and, for a connection we dialed (`theirs` unknown),
/// reads the peer's and checks it answered for the same torrent.
pub(crate) async fn handshake(
    s: &mut PeerStream,
    ours: &Handshake,
    theirs: Option<Handshake>,
) -> Result<Handshake, String> {
    s.write_all(&ours.encode())
        .await
        .map_err(|e| e.to_string())?;
    let h = match theirs {
        Some(h) => h,
        None => read_handshake(s).await?,
    };
    if h.info_hash != ours.info_hash {
        return Err("peer answered for another torrent".into());
    }
    Ok(h)
}
