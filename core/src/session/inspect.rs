//! What a running torrent is doing, for the daemon's details view: its peers (with their
//! client, speeds and progress), its files (with progress) and its trackers. Read under the
//! torrent's state lock, copied out; no I/O.

use super::TorrentHandle;
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// From the peer id (Azureus or Shadow style), escaped; "unknown" otherwise.
    pub client: String,
    pub down_rate: f64,
    pub up_rate: f64,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Share of the pieces it has.
    pub progress: f64,
    /// We dialled it.
    pub outgoing: bool,
}

/// One tracker or web seed of a torrent, with what its last announce said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrackerInfo {
    pub url: String,
    /// "tracker" or "web seed".
    pub kind: &'static str,
    /// "working", "error", "not contacted" (or "web seed").
    pub status: &'static str,
    pub announces: u64,
    pub failures: u64,
    /// Peers, seeders and leechers its last good reply gave.
    pub peers: Option<u32>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// The last error or warning, escaped.
    pub message: Option<String>,
    /// Seconds until the next announce (when one is scheduled).
    pub next_announce_secs: Option<u64>,
}

/// What the announce loop keeps per tracker URL (in the torrent's state).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrackerState {
    pub announces: u64,
    pub failures: u64,
    pub ok: bool,
    pub peers: Option<u32>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub message: Option<String>,
    pub next: Option<std::time::Instant>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    /// Share of the file's pieces we have.
    pub progress: f64,
}

/// A client's name from its peer id: `-LT2010-...` (Azureus style) or `M7-2-2--` (mainline).
pub fn client_name(peer_id: &[u8; 20]) -> String {
    let name = |code: &[u8]| -> Option<&'static str> {
        Some(match code {
            b"LT" => "libtorrent",
            b"lt" => "rtorrent",
            b"TR" => "Transmission",
            b"qB" => "qBittorrent",
            b"DE" => "Deluge",
            b"UT" => "µTorrent",
            b"BT" => "BitTorrent",
            b"AZ" => "Vuze",
            b"CC" => "ccbt",
            b"rq" => "rqbit",
            b"BI" => "BiglyBT",
            b"KT" => "KTorrent",
            _ => return None,
        })
    };
    if peer_id[0] == b'-' && peer_id[7] == b'-' {
        let ver: String = peer_id[3..7]
            .iter()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| *c as char)
            .collect();
        return match name(&peer_id[1..3]) {
            Some(n) => format!("{n} {ver}"),
            None => format!(
                "{} {ver}",
                crate::encoding::printable(&String::from_utf8_lossy(&peer_id[1..3]))
            ),
        };
    }
    if peer_id.starts_with(b"A2-") {
        return "aria2".into();
    }
    if peer_id[0] == b'M'
        && peer_id[1..]
            .iter()
            .take(6)
            .all(|c| c.is_ascii_digit() || *c == b'-')
    {
        return "BitTorrent (mainline)".into();
    }
    "unknown".into()
}

impl TorrentHandle {
    /// The connected peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let st = self.shared.state.lock().unwrap();
        let total = self.shared.meta.pieces.len().max(1) as f64;
        let mut v: Vec<PeerInfo> = st
            .peers
            .values()
            .filter(|p| !p.evicted)
            .map(|p| PeerInfo {
                addr: p.addr,
                client: client_name(&p.peer_id),
                down_rate: p.down_rate,
                up_rate: p.up_rate,
                downloaded: p.down_total,
                uploaded: p.up_total,
                progress: p.bitfield.count() as f64 / total,
                outgoing: p.outgoing,
            })
            .collect();
        v.sort_by(|a, b| {
            b.down_rate
                .total_cmp(&a.down_rate)
                .then(a.addr.cmp(&b.addr))
        });
        v
    }

    /// The torrent's files (pad files left out), with the share of their pieces we have.
    pub fn files(&self) -> Vec<FileInfo> {
        let meta = &self.shared.meta;
        let st = self.shared.state.lock().unwrap();
        let have = st.picker.have();
        let pl = meta.piece_length.max(1);
        meta.files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| {
                let progress = if f.length == 0 {
                    1.0
                } else {
                    let (a, b) = (f.offset / pl, (f.offset + f.length - 1) / pl);
                    let got = (a..=b).filter(|i| have.get(*i as usize)).count();
                    got as f64 / (b - a + 1) as f64
                };
                FileInfo {
                    path: f.path.join("/"),
                    size: f.length,
                    progress,
                }
            })
            .collect()
    }

    /// Its trackers, tier by tier, and web seeds.
    /// Trackers with their last announce's outcome, then web seeds.
    pub fn trackers(&self) -> Vec<TrackerInfo> {
        let m = &self.shared.meta;
        let st = self.shared.state.lock().unwrap();
        let now = std::time::Instant::now();
        let mut out: Vec<TrackerInfo> = m
            .trackers
            .iter()
            .flatten()
            .map(|url| {
                let t = st.trackers.get(url).cloned().unwrap_or_default();
                TrackerInfo {
                    url: crate::encoding::printable(url).into_owned(),
                    kind: "tracker",
                    status: match (t.announces, t.ok) {
                        (0, _) if t.failures == 0 => "not contacted",
                        (_, true) => "working",
                        _ => "error",
                    },
                    announces: t.announces,
                    failures: t.failures,
                    peers: t.peers,
                    seeders: t.seeders,
                    leechers: t.leechers,
                    message: t
                        .message
                        .map(|m| crate::encoding::printable(&m).into_owned()),
                    next_announce_secs: t.next.map(|n| n.saturating_duration_since(now).as_secs()),
                }
            })
            .collect();
        out.extend(
            m.url_list
                .iter()
                .chain(m.http_seeds.iter())
                .map(|u| TrackerInfo {
                    url: crate::encoding::printable(u).into_owned(),
                    kind: "web seed",
                    status: "web seed",
                    ..Default::default()
                }),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names() {
        let id = |s: &[u8]| {
            let mut a = [b'x'; 20];
            a[..s.len()].copy_from_slice(s);
            a
        };
        assert_eq!(client_name(&id(b"-LT2010-")), "libtorrent 2010");
        assert_eq!(client_name(&id(b"-TR4000-")), "Transmission 4000");
        assert_eq!(client_name(&id(b"-ZZ0001-")), "ZZ 0001");
        assert_eq!(client_name(&id(b"A2-1-37-0-")), "aria2");
        assert_eq!(client_name(&id(b"M7-2-2--")), "BitTorrent (mainline)");
        assert_eq!(client_name(&[0; 20]), "unknown");
        // Control characters from a peer never reach a terminal raw.
        assert!(!client_name(&id(b"-\x1b[0000-")).contains('\x1b'));
    }
}
