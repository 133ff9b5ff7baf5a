//! The pure pieces of an operation: its target, the queries it sends, and how a get reply is
//! checked and the best one kept.

use super::*;

pub(super) fn empty_outcome(req: &Request) -> Outcome {
    match req {
        Request::Bootstrap | Request::FindNode(_) => Outcome::Nodes(Vec::new()),
        Request::GetPeers { .. } => Outcome::Peers {
            peers: Vec::new(),
            announced: 0,
        },
        Request::Get { .. } => Outcome::Item(None),
        Request::Put(p) => Outcome::Put {
            target: put_target(p),
            stored: 0,
            error: None,
        },
        Request::Ping(_) => Outcome::Pong(None),
    }
}

pub(super) fn target_of(req: &Request, own: Id) -> Id {
    match req {
        Request::Bootstrap | Request::Ping(_) => own,
        Request::FindNode(t) => *t,
        Request::GetPeers { info_hash, .. } => *info_hash,
        Request::Get { target, .. } => *target,
        Request::Put(p) => put_target(p),
    }
}

/// The query a lookup sends for `req`.
pub(super) fn lookup_query(req: &Request, target: Id) -> Query {
    match req {
        Request::GetPeers { .. } => Query::GetPeers { info_hash: target },
        Request::Get {
            kind: ItemKind::Mutable { min_seq, .. },
            ..
        } => Query::Get {
            target,
            seq: *min_seq,
        },
        Request::Get { .. } | Request::Put(_) => Query::Get { target, seq: None },
        _ => Query::FindNode { target },
    }
}

/// The store query after a lookup: announce_peer or put, with the node's token.
pub(super) fn store_query(req: &Request, token: Vec<u8>) -> Query {
    match req {
        Request::GetPeers {
            info_hash,
            announce,
        } => {
            let port = announce.unwrap_or(0);
            Query::AnnouncePeer {
                info_hash: *info_hash,
                port,
                implied_port: port == 0,
                token,
            }
        }
        Request::Put(PutItem::Immutable(v)) => Query::Put {
            token,
            v: v.clone(),
            mutable: None,
        },
        Request::Put(PutItem::Mutable { v, m }) => Query::Put {
            token,
            v: v.clone(),
            mutable: Some(m.clone()),
        },
        _ => Query::Ping,
    }
}

pub(super) fn put_target(p: &PutItem) -> Id {
    match p {
        PutItem::Immutable(v) => immutable_target(v),
        PutItem::Mutable { m, .. } => mutable_target(&m.k, &m.salt),
    }
}

/// A get reply's item if it is what we asked for and verifies.
pub(super) fn checked_item(
    target: &Id,
    kind: &ItemKind,
    item: &crate::krpc::ItemReply,
) -> Option<FoundItem> {
    if item.v.is_empty() {
        return None;
    }
    let kind = match (kind, item.k) {
        (ItemKind::Any, Some(_)) => &ItemKind::Mutable {
            k: None,
            salt: Vec::new(),
            min_seq: None,
        },
        (ItemKind::Any, None) => &ItemKind::Immutable,
        _ => kind,
    };
    match kind {
        ItemKind::Any => None,
        ItemKind::Immutable => (immutable_target(&item.v) == *target).then(|| FoundItem {
            v: item.v.clone(),
            mutable: None,
            seen: 1,
        }),
        ItemKind::Mutable { k, salt, .. } => {
            let m = MutablePut {
                k: item.k?,
                salt: salt.clone(),
                seq: item.seq?,
                sig: item.sig?,
                cas: None,
            };
            let key_ok = k.is_none_or(|k| k == m.k);
            (key_ok && mutable_target(&m.k, salt) == *target && items::verify(&m, &item.v)).then(
                || FoundItem {
                    v: item.v.clone(),
                    mutable: Some(m),
                    seen: 1,
                },
            )
        }
    }
}

/// Keeps the highest `seq` (counting the nodes that agree).
pub(super) fn keep_best(best: &mut Option<FoundItem>, found: FoundItem) {
    match best {
        None => *best = Some(found),
        Some(b) => {
            let seq = |f: &FoundItem| f.mutable.as_ref().map_or(0, |m| m.seq);
            if seq(&found) > seq(b) {
                *best = Some(found);
            } else if seq(&found) == seq(b) {
                b.seen += 1;
            }
        }
    }
}
