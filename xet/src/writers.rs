//! Several writers per share (docs/formats.md, "Several writers"): the deterministic merge of
//! the writers' newest versions into the one tree every node shows, and the stamping of a
//! writer's changes. Pure functions; the mount and the CLI feed them listings.
//!
//! Each entry of a multi-writer listing carries a [`Stamp`]: the writer and version that last
//! changed it, and that version's time. Deletions are tombstones. Each writer's head names, in
//! `v.b`, the newest version of every other writer it had merged. The merge, per path:
//! 1. the candidates are the distinct stamped entries the writers' newest listings hold;
//! 2. a candidate is *superseded* when some writer has seen the version that made it and holds
//!    something else at that path (it changed it afterwards, or merged it away);
//! 3. what remains changed concurrently: a directory wins over files (its children need it),
//!    else the newest change by (time, writer key, seq); every other file or link is kept as
//!    `name.conflict-<writer8>-<seq>.ext` with its own stamp, so every node (and every writer
//!    adopting the view) names it the same; a deletion loses to any concurrent edit.
//!
//! Then every live entry's parent directories are made live directories (a file in their way
//! moves to its conflict name). The result depends only on the set of listings, so every node
//! shows the same tree.

use crate::head::{key8, Key8};
use crate::listing::{Entry, Kind, Stamp};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One writer's newest version, as the merge sees it.
#[derive(Debug, Clone)]
pub struct Feed {
    pub key: [u8; 32],
    pub seq: u64,
    /// The owner's feed: entries without a stamp are the share as it was before it had writers,
    /// and count as the owner's version 0.
    pub owner: bool,
    /// The other writers' versions merged into this one (`v.b`).
    pub base: Vec<(Key8, u64)>,
    /// Its listing, tombstones included.
    pub entries: Vec<Entry>,
}

impl Feed {
    /// The newest version of writer `w` this feed had merged (its own: its seq).
    fn seen(&self, w: &Key8) -> Option<u64> {
        if *w == key8(&self.key) {
            return Some(self.seq);
        }
        self.base.iter().find(|(k, _)| k == w).map(|x| x.1)
    }
}

/// The name a losing concurrent change of `path` is kept under.
pub fn conflict_path(path: &str, st: &Stamp) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), path),
    };
    let w = ccbt_core::encoding::to_hex(&st.w[..4]);
    match name.rfind('.') {
        Some(i) if i > 0 => format!(
            "{dir}{}.conflict-{w}-{}.{}",
            &name[..i],
            st.q,
            &name[i + 1..]
        ),
        _ => format!("{dir}{name}.conflict-{w}-{}", st.q),
    }
}

/// Merges the authorized writers' newest listings (owner's included) into one listing,
/// tombstones kept (a writer adopting the view carries them on). Sorted by path.
pub fn merge(feeds: &[Feed]) -> Vec<Entry> {
    let owner8 = feeds
        .iter()
        .find(|f| f.owner)
        .map_or([0; 8], |f| key8(&f.key));
    let eff = |e: &Entry| {
        e.stamp.unwrap_or(Stamp {
            c: 0,
            w: owner8,
            q: 0,
            gone: false,
        })
    };
    // The owner's feed first, then by key: ties between equal stamps resolve the same everywhere.
    let mut order: Vec<&Feed> = feeds.iter().collect();
    order.sort_by_key(|f| (!f.owner, f.key));
    let at: Vec<HashMap<&str, &Entry>> = order
        .iter()
        .map(|f| f.entries.iter().map(|e| (e.path.as_str(), e)).collect())
        .collect();
    let mut paths: Vec<&str> = at.iter().flat_map(|m| m.keys().copied()).collect();
    paths.sort_unstable();
    paths.dedup();

    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let mut copies: Vec<Entry> = Vec::new();
    for path in paths {
        let mut cands: Vec<&Entry> = Vec::new();
        for m in &at {
            if let Some(e) = m.get(path) {
                if !cands.iter().any(|c| eff(c) == eff(e)) {
                    cands.push(e);
                }
            }
        }
        let superseded = |y: &Entry| {
            let s = eff(y);
            order.iter().zip(&at).any(|(f, m)| {
                f.seen(&s.w).is_some_and(|q| q >= s.q) && m.get(path).map(|e| eff(e)) != Some(s)
            })
        };
        let mut heads: Vec<&Entry> = cands.iter().copied().filter(|y| !superseded(y)).collect();
        if heads.is_empty() {
            // Only writers that disagree about what they saw: keep every change.
            heads = cands;
        }
        let live: Vec<&Entry> = heads.iter().copied().filter(|e| !e.is_gone()).collect();
        let rank = |e: &&Entry| {
            let s = eff(e);
            (e.kind == Kind::Dir, s.c, s.w, s.q)
        };
        let Some(win) = live.iter().copied().max_by_key(rank) else {
            // Deleted everywhere it changed: the newest tombstone.
            let t = heads.into_iter().max_by_key(rank).expect("a candidate");
            out.insert(path.to_string(), t.clone());
            continue;
        };
        for l in live {
            if !std::ptr::eq(l, win) && l.kind != Kind::Dir {
                let mut c = l.clone();
                c.path = conflict_path(path, &eff(l));
                copies.push(c);
            }
        }
        out.insert(path.to_string(), win.clone());
    }
    for c in copies {
        place(&mut out, c, &eff);
    }
    // Every live entry's parents are live directories.
    let live: Vec<String> = out
        .values()
        .filter(|e| !e.is_gone())
        .map(|e| e.path.clone())
        .collect();
    for p in live {
        let Some(child) = out.get(&p).cloned() else {
            continue;
        };
        let mut parent = p.as_str();
        while let Some((d, _)) = parent.rsplit_once('/') {
            parent = d;
            match out.get(d) {
                Some(e) if !e.is_gone() && e.kind == Kind::Dir => {}
                other => {
                    if let Some(f) = other.filter(|e| !e.is_gone()).cloned() {
                        // A file where a directory must be: it moves aside.
                        let mut c = f.clone();
                        c.path = conflict_path(d, &eff(&f));
                        place(&mut out, c, &eff);
                    }
                    out.insert(
                        d.to_string(),
                        Entry {
                            path: d.to_string(),
                            kind: Kind::Dir,
                            size: 0,
                            root: [0; 32],
                            executable: true,
                            mtime: child.mtime,
                            target: None,
                            mode: None,
                            stamp: None,
                        },
                    );
                }
            }
        }
    }
    out.into_values().collect()
}

/// Puts a conflict copy at its name, unless that name already holds the same change (a writer
/// adopted it); a name taken by something else gets `~N`.
fn place(out: &mut BTreeMap<String, Entry>, mut c: Entry, eff: &dyn Fn(&Entry) -> Stamp) {
    let base = c.path.clone();
    for n in 1.. {
        match out.get(&c.path) {
            Some(e) if !e.is_gone() && eff(e) == eff(&c) => return,
            Some(e) if !e.is_gone() => c.path = format!("{base}~{n}"),
            _ => {
                out.insert(c.path.clone(), c);
                return;
            }
        }
    }
}

/// A writer's next listing: `live` (what its tree holds now) against `base` (the merged view
/// its tree was built from). Unchanged entries keep their stamps, changed and new ones get
/// `stamp`, removed ones become tombstones with it; tombstones in `base` are carried on.
pub fn stamp_changes(base: &[Entry], live: &[Entry], stamp: Stamp) -> Vec<Entry> {
    let by_path: HashMap<&str, &Entry> = base.iter().map(|e| (e.path.as_str(), e)).collect();
    let present: HashSet<&str> = live.iter().map(|e| e.path.as_str()).collect();
    let mut out: Vec<Entry> = live
        .iter()
        .map(|e| match by_path.get(e.path.as_str()) {
            Some(b) if !b.is_gone() && b.same_as(e) => (*b).clone(),
            _ => Entry {
                stamp: Some(Stamp {
                    gone: false,
                    ..stamp
                }),
                ..e.clone()
            },
        })
        .collect();
    for b in base {
        if !present.contains(b.path.as_str()) {
            out.push(if b.is_gone() {
                b.clone()
            } else {
                Entry::tombstone(b.path.clone(), stamp)
            });
        }
    }
    out.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    out
}

/// The entries a tree shows (tombstones left out).
pub fn live(entries: &[Entry]) -> Vec<Entry> {
    entries.iter().filter(|e| !e.is_gone()).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str, root: u8) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::File,
            size: 1,
            root: [root; 32],
            executable: false,
            mtime: 1,
            target: None,
            mode: None,
            stamp: None,
        }
    }

    fn dir(p: &str) -> Entry {
        Entry {
            kind: Kind::Dir,
            size: 0,
            root: [0; 32],
            ..file(p, 0)
        }
    }

    /// A test writer: its key, versions and the merge of what it has seen.
    struct W {
        key: [u8; 32],
        owner: bool,
        seq: u64,
        base: Vec<(Key8, u64)>,
        entries: Vec<Entry>,
        time: i64,
    }

    impl W {
        fn new(k: u8, owner: bool, entries: Vec<Entry>) -> W {
            W {
                key: [k; 32],
                owner,
                seq: 1,
                base: vec![],
                entries,
                time: 100,
            }
        }
        fn feed(&self) -> Feed {
            Feed {
                key: self.key,
                seq: self.seq,
                owner: self.owner,
                base: self.base.clone(),
                entries: self.entries.clone(),
            }
        }
        /// Adopts the merge of `others` (as its mount does when it sees their versions).
        fn see(&mut self, others: &[&W]) {
            let mut feeds = vec![self.feed()];
            feeds.extend(others.iter().map(|w| w.feed()));
            self.entries = merge(&feeds);
            for o in others {
                self.base.retain(|(k, _)| *k != key8(&o.key));
                self.base.push((key8(&o.key), o.seq));
            }
        }
        /// Makes its next version: `edit` changes its live tree.
        fn edit(&mut self, edit: impl FnOnce(&mut Vec<Entry>)) {
            let mut t = live(&self.entries);
            edit(&mut t);
            t.sort_by(|a, b| a.path.cmp(&b.path));
            self.seq += 1;
            self.time += 10;
            let s = Stamp {
                c: self.time,
                w: key8(&self.key),
                q: self.seq,
                gone: false,
            };
            self.entries = stamp_changes(&self.entries, &t, s);
        }
    }

    fn view(ws: &[&W]) -> Vec<(String, [u8; 32])> {
        let feeds: Vec<Feed> = ws.iter().map(|w| w.feed()).collect();
        // Every order of the feeds gives the same listing.
        let m = merge(&feeds);
        let mut rev = feeds.clone();
        rev.reverse();
        assert_eq!(merge(&rev), m);
        live(&m).into_iter().map(|e| (e.path, e.root)).collect()
    }

    fn set(t: &mut Vec<Entry>, p: &str, r: u8) {
        t.retain(|e| e.path != p);
        t.push(file(p, r));
    }

    fn start() -> (W, W, W) {
        let o = W::new(1, true, vec![dir("d"), file("d/a.txt", 1), file("b", 2)]);
        let mut a = W::new(2, false, vec![]);
        let mut b = W::new(3, false, vec![]);
        a.seq = 0;
        b.seq = 0;
        a.see(&[&o]);
        b.see(&[&o]);
        (o, a, b)
    }

    #[test]
    fn different_files_both_land() {
        let (o, mut a, mut b) = start();
        a.edit(|t| set(t, "d/a.txt", 10));
        b.edit(|t| set(t, "b", 20));
        let v = view(&[&o, &a, &b]);
        assert_eq!(
            v,
            vec![
                ("b".into(), [20; 32]),
                ("d".into(), [0; 32]),
                ("d/a.txt".into(), [10; 32])
            ]
        );
    }

    #[test]
    fn concurrent_edits_keep_the_loser_as_a_conflict_copy() {
        let (o, mut a, mut b) = start();
        a.edit(|t| set(t, "d/a.txt", 10)); // time 110
        b.edit(|t| set(t, "d/a.txt", 20)); // time 110, larger key: wins the tie
        let v = view(&[&o, &a, &b]);
        let copy = format!("d/a.conflict-{}-1.txt", "02020202");
        assert!(v.contains(&("d/a.txt".into(), [20; 32])), "{v:?}");
        assert!(v.contains(&(copy.clone(), [10; 32])), "{v:?}");
        // Everyone adopts the view and makes an unrelated change: nothing new appears, nothing
        // is lost, and the copy is not copied again.
        let (a0, b0) = (a.feed(), b.feed());
        a.see(&[&o, &clone_w(&b0)]);
        b.see(&[&o, &clone_w(&a0)]);
        a.edit(|t| set(t, "new1", 5));
        b.edit(|t| set(t, "new2", 6));
        let v2 = view(&[&o, &a, &b]);
        assert_eq!(v2.len(), v.len() + 2, "{v2:?}");
        assert!(v2.contains(&(copy, [10; 32])));
        assert!(v2.contains(&("d/a.txt".into(), [20; 32])));
    }

    fn clone_w(f: &Feed) -> W {
        W {
            key: f.key,
            owner: f.owner,
            seq: f.seq,
            base: f.base.clone(),
            entries: f.entries.clone(),
            time: 0,
        }
    }

    #[test]
    fn a_change_made_after_seeing_another_is_no_conflict() {
        let (o, mut a, mut b) = start();
        a.edit(|t| set(t, "b", 10));
        b.see(&[&o, &a]);
        b.edit(|t| set(t, "b", 20));
        let v = view(&[&o, &a, &b]);
        assert!(v.contains(&("b".into(), [20; 32])));
        assert!(!v.iter().any(|(p, _)| p.contains("conflict")), "{v:?}");
        // A edits twice while B is idle: still its own newest change, no conflict.
        let (o, mut a, b) = start();
        a.edit(|t| set(t, "b", 10));
        a.edit(|t| set(t, "b", 11));
        let v = view(&[&o, &a, &b]);
        assert_eq!(v.iter().filter(|(p, _)| p.starts_with('b')).count(), 1);
        assert!(v.contains(&("b".into(), [11; 32])));
    }

    #[test]
    fn a_delete_that_races_an_edit_keeps_the_edit() {
        let (o, mut a, mut b) = start();
        a.edit(|t| t.retain(|e| e.path != "b"));
        b.edit(|t| set(t, "b", 20));
        b.time += 1000; // whatever the clocks say
        assert!(view(&[&o, &a, &b]).contains(&("b".into(), [20; 32])));
        // A delete made after seeing the edit wins.
        a.see(&[&o, &b]);
        a.edit(|t| t.retain(|e| e.path != "b"));
        assert!(!view(&[&o, &a, &b]).iter().any(|(p, _)| p == "b"));
        // ... also on a node that sees only the deleter and the owner's unchanged listing.
        assert!(!view(&[&o, &a]).iter().any(|(p, _)| p == "b"));
    }

    #[test]
    fn a_rename_racing_an_edit_keeps_both() {
        let (o, mut a, mut b) = start();
        a.edit(|t| {
            let mut e = t.iter().find(|e| e.path == "b").unwrap().clone();
            t.retain(|e| e.path != "b");
            e.path = "c".into();
            t.push(e);
        });
        b.edit(|t| set(t, "b", 20));
        let v = view(&[&o, &a, &b]);
        assert!(v.contains(&("b".into(), [20; 32])), "{v:?}");
        assert!(v.contains(&("c".into(), [2; 32])), "{v:?}");
    }

    #[test]
    fn what_a_writer_saw_and_deleted_stays_deleted() {
        // A makes x; B edits it after seeing A; C edits after seeing B; B deletes it after seeing
        // C. A's and C's old entries are superseded though B's listing no longer names them.
        let (o, mut a, mut b) = start();
        let mut c = W::new(4, false, vec![]);
        c.seq = 0;
        c.see(&[&o]);
        a.edit(|t| set(t, "x", 1));
        b.see(&[&o, &a]);
        b.edit(|t| set(t, "x", 2));
        c.see(&[&o, &a, &b]);
        c.edit(|t| set(t, "x", 3));
        b.see(&[&o, &a, &c]);
        b.edit(|t| t.retain(|e| e.path != "x"));
        let v = view(&[&o, &a, &b, &c]);
        assert!(!v.iter().any(|(p, _)| p.starts_with('x')), "{v:?}");
    }

    #[test]
    fn parents_of_live_entries_are_directories() {
        let (o, mut a, mut b) = start();
        a.edit(|t| t.retain(|e| !e.path.starts_with('d')));
        b.edit(|t| set(t, "d/new", 9));
        let v = view(&[&o, &a, &b]);
        assert!(v.contains(&("d".into(), [0; 32])), "{v:?}");
        assert!(v.contains(&("d/new".into(), [9; 32])), "{v:?}");
        assert!(!v.iter().any(|(p, _)| p == "d/a.txt"), "{v:?}");
        // A file where another writer made a directory moves aside.
        let (o, mut a, mut b) = start();
        a.edit(|t| set(t, "e", 7));
        b.edit(|t| {
            t.push(dir("e"));
            set(t, "e/f", 8)
        });
        let v = view(&[&o, &a, &b]);
        assert!(v.contains(&("e".into(), [0; 32])), "{v:?}");
        assert!(v.contains(&("e/f".into(), [8; 32])), "{v:?}");
        assert!(v
            .iter()
            .any(|(p, r)| p.starts_with("e.conflict-02020202-") && *r == [7; 32]));
    }

    #[test]
    fn conflict_names() {
        let s = Stamp {
            c: 0,
            w: [0xab, 0xcd, 0xef, 0x01, 9, 9, 9, 9],
            q: 7,
            gone: false,
        };
        assert_eq!(conflict_path("a/b.txt", &s), "a/b.conflict-abcdef01-7.txt");
        assert_eq!(conflict_path(".bashrc", &s), ".bashrc.conflict-abcdef01-7");
        assert_eq!(
            conflict_path("x.tar.gz", &s),
            "x.tar.conflict-abcdef01-7.gz"
        );
        assert_eq!(
            conflict_path("d/Makefile", &s),
            "d/Makefile.conflict-abcdef01-7"
        );
    }
}
