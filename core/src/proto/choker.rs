//! The choker (BEP 3 tit-for-tat): a pure decision over peer statistics. The session calls
//! [`rechoke`] every 10 s and rotates the optimistic slot every 30 s.

/// What the choker knows of one peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerStat {
    pub key: u64,
    pub interested: bool,
    /// Bytes/s we receive from it (used while downloading).
    pub download_rate: f64,
    /// Bytes/s we send to it (used while seeding: favour peers that take data fastest).
    pub upload_rate: f64,
}

/// Returns the keys to unchoke: the best `slots` interested peers by rate (download rate while
/// leeching, upload rate while seeding) plus the optimistic peer.
pub fn rechoke(
    peers: &[PeerStat],
    slots: usize,
    seeding: bool,
    optimistic: Option<u64>,
) -> Vec<u64> {
    let mut cands: Vec<&PeerStat> = peers.iter().filter(|p| p.interested).collect();
    let rate = |p: &PeerStat| {
        if seeding {
            p.upload_rate
        } else {
            p.download_rate
        }
    };
    cands.sort_by(|a, b| rate(b).total_cmp(&rate(a)).then(a.key.cmp(&b.key)));
    let mut out: Vec<u64> = cands.iter().take(slots).map(|p| p.key).collect();
    if let Some(o) = optimistic {
        if !out.contains(&o) && peers.iter().any(|p| p.key == o && p.interested) {
            out.push(o);
        }
    }
    out
}

/// Picks the next optimistic unchoke among interested peers not in `unchoked`, rotating by `turn`.
pub fn next_optimistic(peers: &[PeerStat], unchoked: &[u64], turn: u64) -> Option<u64> {
    let cands: Vec<u64> = peers
        .iter()
        .filter(|p| p.interested && !unchoked.contains(&p.key))
        .map(|p| p.key)
        .collect();
    (!cands.is_empty()).then(|| cands[(turn as usize) % cands.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: u64, interested: bool, down: f64, up: f64) -> PeerStat {
        PeerStat {
            key,
            interested,
            download_rate: down,
            upload_rate: up,
        }
    }

    #[test]
    fn tit_for_tat() {
        let peers = [
            p(1, true, 10.0, 0.0),
            p(2, true, 30.0, 5.0),
            p(3, false, 99.0, 0.0),
            p(4, true, 20.0, 50.0),
        ];
        assert_eq!(rechoke(&peers, 2, false, None), vec![2, 4]);
        assert_eq!(
            rechoke(&peers, 2, true, None),
            vec![4, 2],
            "seeding ranks by upload"
        );
        assert_eq!(rechoke(&peers, 2, false, Some(1)), vec![2, 4, 1]);
        assert_eq!(
            rechoke(&peers, 2, false, Some(3)),
            vec![2, 4],
            "uninterested never"
        );
        assert_eq!(next_optimistic(&peers, &[2, 4], 0), Some(1));
        assert_eq!(next_optimistic(&peers, &[1, 2, 4], 0), None);
    }
}
