//! A peer's extension messages served by the session itself: PEX (BEP 11) and ut_metadata
//! (BEP 9).

use super::*;

impl Conn {
    /// Our local id for `ut_pex` (after ut_metadata's), unless PEX is off or the torrent private.
    pub(super) fn ut_pex_id(&self) -> Option<u8> {
        (self.t.session.pex && !self.t.meta.private)
            .then(|| self.t.session.registry.handlers().len() as u8 + 2)
    }

    /// BEP 11: tell the peer which peers joined and left since our last message (at most 50
    /// each), a few seconds after the handshake and then once a minute.
    pub(super) async fn maybe_send_pex(&mut self, now: Instant) -> Result<(), Reason> {
        let (Some(pid), Some(_), Some(at)) = (
            self.peer_ext_id(crate::pex::NAME),
            self.ut_pex_id(),
            self.ext_at,
        ) else {
            return Ok(());
        };
        let due = match self.pex_last_sent {
            None => now.duration_since(at) >= PEX_FIRST,
            Some(t) => now.duration_since(t) >= PEX_EVERY,
        };
        if !due {
            return Ok(());
        }
        self.pex_last_sent = Some(now);
        let current: std::collections::HashMap<SocketAddr, u8> = {
            let s = self.t.state.lock().unwrap();
            let n = self.t.expected.len();
            s.peers
                .iter()
                .filter(|(k, p)| **k != self.key && !p.evicted)
                .filter_map(|(_, p)| {
                    let a = p.reachable?;
                    let mut f = 0;
                    if n > 0 && p.bitfield.count() == n {
                        f |= crate::pex::FLAG_SEED;
                    }
                    if p.outgoing {
                        f |= crate::pex::FLAG_REACHABLE;
                    }
                    Some((a, f))
                })
                .collect()
        };
        let added: Vec<(SocketAddr, u8)> = current
            .iter()
            .filter(|(a, _)| !self.pex_sent.contains(*a) && **a != self.ctx.addr)
            .take(crate::pex::MAX_SEND)
            .map(|(a, f)| (*a, *f))
            .collect();
        let dropped: Vec<SocketAddr> = self
            .pex_sent
            .iter()
            .filter(|a| !current.contains_key(a))
            .take(crate::pex::MAX_SEND)
            .copied()
            .collect();
        if added.is_empty() && dropped.is_empty() {
            return Ok(());
        }
        for (a, _) in &added {
            self.pex_sent.insert(*a);
        }
        for a in &dropped {
            self.pex_sent.remove(a);
        }
        let payload = crate::pex::PexMsg { added, dropped }.encode();
        self.send(Message::Extended {
            id: pid,
            payload: Bytes::from(payload),
        })
        .await
    }

    /// Peers a peer told us about: candidates like any other, through the same limits and
    /// bans. A message before `PEX_MIN_GAP` is ignored; a malformed one too (PEX is a hint).
    pub(super) fn on_pex(&mut self, payload: &[u8]) {
        let now = Instant::now();
        if self
            .pex_last_recv
            .is_some_and(|t| now.duration_since(t) < PEX_MIN_GAP)
        {
            return;
        }
        self.pex_last_recv = Some(now);
        let Ok(m) = crate::pex::PexMsg::decode(payload) else {
            return;
        };
        let me = self.t.session.listen_addr;
        let mut s = self.t.state.lock().unwrap();
        let mut n = 0;
        for (a, _) in m.added {
            let own = a.port() == me.port() && (a.ip() == me.ip() || me.ip().is_unspecified());
            if !own && !s.banned.contains(&a.ip()) && !a.ip().is_unspecified() {
                s.add_known(a);
                n += 1;
            }
        }
        drop(s);
        if n > 0 {
            tracing::debug!("{} told us of {n} peers (PEX)", self.ctx.addr);
            self.t.wake.notify_one();
        }
    }

    /// Our local id for `ut_metadata` (after the registry's), when we have metadata to give:
    /// torrents do, share swarms have none.
    pub(super) fn ut_metadata_id(&self) -> Option<u8> {
        (!self.t.cfg.swarm && !self.t.meta.info_bytes.is_empty())
            .then(|| self.t.session.registry.handlers().len() as u8 + 1)
    }

    /// BEP 9: serve pieces of our info dictionary; a peer asking far more often than the metadata
    /// has pieces gets rejects (flood protection).
    pub(super) async fn on_ut_metadata(&mut self, payload: Bytes) -> Result<(), Reason> {
        use crate::metadata::{self, MetaMsg};
        let msg = MetaMsg::decode(payload).map_err(|e| Reason::Protocol(e.to_string()))?;
        let Some(MetaMsg::Request { piece }) = msg else {
            return Ok(()); // data/reject to a peer that has the metadata: ignore
        };
        let info = &self.t.meta.info_bytes;
        self.meta_requests += 1;
        let allowed = 4 * metadata::piece_count(info.len() as u64) + 8;
        let reply = if self.meta_requests > allowed {
            MetaMsg::Reject { piece }
        } else {
            metadata::serve(info, piece)
        };
        if let Some(pid) = self.peer_ext_id(metadata::NAME) {
            self.send(Message::Extended {
                id: pid,
                payload: reply.encode(),
            })
            .await?;
        }
        Ok(())
    }
}
