//! Web seeds: a torrent's `url-list` servers (BEP 19, GetRight style: plain files fetched with
//! range requests, one per file a range touches) and `httpseeds` scripts (BEP 17, Hoffman style:
//! `?info_hash=..&piece=N&ranges=a-b`, answering 503 with a wait in seconds when busy) act as one
//! more source of pieces. Each URL gets a task that takes blocks from the picker like a peer and
//! hands them to the disk pool, which hashes them as it does a peer's. A web seed whose piece
//! fails its hash check, or that keeps failing, is dropped.

use super::tracker_client::http_get;
use super::{Cmd, TorrentShared};
use crate::metainfo::{FileEntry, Metainfo};
use crate::picker::Block;
use crate::wire::{Bitfield, BLOCK_SIZE};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Bytes asked of a web seed at once (a few pieces: fewer round trips, bounded memory).
const BATCH: u64 = 4 << 20;
/// Failed fetches in a row before a web seed is dropped.
const MAX_FAILURES: u32 = 5;

/// A web seed the torrent's state knows (hash failures are charged to it by key).
pub(crate) struct WebSeed {
    /// Set when a piece mostly from it failed its hash check.
    pub corrupt: Option<u32>,
}

/// The URL of `file` on the web seed `base` (BEP 19): a single-file torrent's URL names the file
/// unless it ends in `/`; a multi-file torrent's files are `<base>/<name>/<path>`.
pub fn file_url(base: &str, meta: &Metainfo, file: &FileEntry) -> String {
    let esc = |s: &str| {
        let mut o = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                o.push(b as char);
            } else {
                o.push_str(&format!("%{b:02X}"));
            }
        }
        o
    };
    if !meta.multi_file {
        return if base.ends_with('/') {
            format!("{base}{}", esc(&meta.name))
        } else {
            base.to_string()
        };
    }
    let mut u = base.to_string();
    if !u.ends_with('/') {
        u.push('/');
    }
    u.push_str(&esc(&meta.name));
    for c in &file.path {
        u.push('/');
        u.push_str(&esc(c));
    }
    u
}

/// The parts of the torrent byte range `[start, end)`: (file index, offset in file, length) for
/// real files; gaps and pad files are zeros and are not fetched.
fn segments(meta: &Metainfo, start: u64, end: u64) -> Vec<(usize, u64, u64)> {
    meta.files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.pad && f.length > 0)
        .filter_map(|(i, f)| {
            let (a, b) = (start.max(f.offset), end.min(f.offset + f.length));
            (a < b).then(|| (i, a - f.offset, b - a))
        })
        .collect()
}

/// Fetches the torrent bytes `[start, end)` from `base`.
async fn fetch(base: &str, meta: &Metainfo, start: u64, end: u64) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; (end - start) as usize];
    for (i, off, len) in segments(meta, start, end) {
        let f = &meta.files[i];
        let url = file_url(base, meta, f);
        // A server that ignores ranges sends the whole file: accepted when the file is small.
        let limit = len.max(f.length.min(BATCH)) as usize + 1;
        let (status, body) = http_get(&url, Some((off, off + len - 1)), limit).await?;
        let part = match status {
            206 if body.len() as u64 == len => &body[..],
            200 if body.len() as u64 == f.length => &body[off as usize..(off + len) as usize],
            404 => return Err(format!("{} is not on the server (404)", f.path_string())),
            206 | 200 => {
                return Err(format!(
                    "{}: {} bytes for a range of {len}",
                    f.path_string(),
                    body.len()
                ))
            }
            s => return Err(format!("{}: HTTP {s}", f.path_string())),
        };
        let at = (f.offset + off - start) as usize;
        out[at..at + len as usize].copy_from_slice(part);
    }
    Ok(out)
}

/// How a web seed is asked for bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// BEP 19 `url-list`.
    GetRight,
    /// BEP 17 `httpseeds`.
    Hoffman,
}

/// A failed fetch: why, and how long the server asked us to wait (BEP 17's 503).
type FetchFailure = (String, Option<Duration>);

/// The BEP 17 request for `piece`, bytes `[a, b)` of it.
pub fn hoffman_url(base: &str, info_hash: &[u8; 20], piece: u32, ranges: &[(u64, u64)]) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut u = format!(
        "{base}{sep}info_hash={}&piece={piece}",
        crate::encoding::percent_encode(info_hash)
    );
    if !ranges.is_empty() {
        let r: Vec<String> = ranges
            .iter()
            .map(|(a, b)| format!("{a}-{}", b - 1))
            .collect();
        u.push_str("&ranges=");
        u.push_str(&r.join(","));
    }
    u
}

/// Fetches the torrent bytes `[start, end)` from a BEP 17 script, one request per piece.
async fn fetch_hoffman(
    base: &str,
    meta: &Metainfo,
    start: u64,
    end: u64,
) -> Result<Vec<u8>, FetchFailure> {
    let ih = meta
        .v1_hash
        .ok_or(("BEP 17 seeds serve v1 torrents only".to_string(), None))?;
    let pl = meta.piece_length;
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut at = start;
    while at < end {
        let piece = (at / pl) as u32;
        let piece_start = piece as u64 * pl;
        let stop = end.min(piece_start + pl);
        let len = stop - at;
        let url = hoffman_url(base, &ih, piece, &[(at - piece_start, stop - piece_start)]);
        let (status, body) = http_get(&url, None, len as usize + 1)
            .await
            .map_err(|e| (e, None))?;
        match status {
            200 if body.len() as u64 == len => out.extend_from_slice(&body),
            200 => {
                return Err((
                    format!("piece {piece}: {} bytes for {len}", body.len()),
                    None,
                ))
            }
            503 => {
                // The body is the wait in seconds; bounded, so a hostile server cannot park us.
                let secs = std::str::from_utf8(&body)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(30)
                    .clamp(1, 600);
                return Err((
                    format!("busy (503), asks to wait {secs}s"),
                    Some(Duration::from_secs(secs)),
                ));
            }
            s => return Err((format!("piece {piece}: HTTP {s}"), None)),
        }
        at = stop;
    }
    Ok(out)
}

/// A contiguous run of blocks in torrent byte space: start, end, the blocks and their lengths.
type Run = (u64, u64, Vec<(Block, u32)>);

/// BEP 17 asks by piece: its runs end at piece boundaries (so a busy answer costs one piece).
fn runs(t: &TorrentShared, blocks: &[Block], style: Style) -> Vec<Run> {
    let s = t.state.lock().unwrap();
    let mut out: Vec<Run> = Vec::new();
    for &b in blocks {
        let len = s.picker.block_len(b);
        let at = b.piece as u64 * t.meta.piece_length + (b.block * BLOCK_SIZE) as u64;
        let same_piece = |end: u64| {
            style == Style::GetRight || !at.is_multiple_of(t.meta.piece_length) || end != at
        };
        match out.last_mut() {
            Some((_, end, v)) if *end == at && same_piece(*end) => {
                *end = at + len as u64;
                v.push((b, len));
            }
            _ => out.push((at, at + len as u64, vec![(b, len)])),
        }
    }
    out
}

/// One web seed's task, until the torrent completes or stops, or the seed is dropped.
pub(crate) async fn web_seed_loop(
    t: Arc<TorrentShared>,
    url: String,
    style: Style,
    mut quit: watch::Receiver<bool>,
) {
    let key = t.session.key();
    let shown = crate::encoding::printable(&url).into_owned();
    t.state
        .lock()
        .unwrap()
        .web_seeds
        .insert(key, WebSeed { corrupt: None });
    let n = t.state.lock().unwrap().picker.num_pieces() as usize;
    let all = Bitfield::full(n);
    let want = (BATCH / BLOCK_SIZE as u64) as usize;
    let mut failures = 0u32;
    let mut fetched = 0u64;
    loop {
        if *quit.borrow() || t.stopping.load(Ordering::Relaxed) {
            break;
        }
        let blocks = {
            let mut s = t.state.lock().unwrap();
            if let Some(p) = s.web_seeds.get(&key).and_then(|w| w.corrupt) {
                tracing::warn!("web seed {shown}: piece {p} failed its hash check; dropped");
                break;
            }
            if s.picker.complete() {
                break;
            }
            s.picker.pick(&all, want, &|_| false)
        };
        if blocks.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = quit.changed() => {}
            }
            continue;
        }
        let mut failed = None;
        let mut todo = runs(&t, &blocks, style).into_iter();
        for (start, end, bl) in todo.by_ref() {
            let got = tokio::select! {
                r = async {
                    match style {
                        Style::GetRight => fetch(&url, &t.meta, start, end).await.map_err(|e| (e, None)),
                        Style::Hoffman => fetch_hoffman(&url, &t.meta, start, end).await,
                    }
                } => r,
                _ = quit.changed() => Err(("stopping".into(), None)),
            };
            match got {
                Ok(data) => {
                    failures = 0;
                    fetched += data.len() as u64;
                    let data = Bytes::from(data);
                    for (b, len) in bl {
                        let at = (b.piece as u64 * t.meta.piece_length
                            + (b.block * BLOCK_SIZE) as u64
                            - start) as usize;
                        {
                            let mut s = t.state.lock().unwrap();
                            if !s.picker.block_received(b) {
                                continue; // a peer's copy won
                            }
                            s.downloaded += len as u64;
                            for p in s.peers.values() {
                                let _ = p.cmd.send(Cmd::Cancel(b));
                            }
                        }
                        let d = t
                            .down
                            .take(len as usize)
                            .max(t.session.down.take(len as usize));
                        if !d.is_zero() {
                            tokio::time::sleep(d).await;
                        }
                        let part = data.slice(at..at + len as usize);
                        t.session
                            .disk
                            .write_block(t.clone(), b.piece, b.block * BLOCK_SIZE, part, key)
                            .await;
                    }
                }
                Err(e) => {
                    let mut s = t.state.lock().unwrap();
                    for (b, _) in bl {
                        s.picker.unrequest(b);
                    }
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some((e, busy)) = failed {
            {
                let mut s = t.state.lock().unwrap();
                for (_, _, bl) in todo {
                    for (b, _) in bl {
                        s.picker.unrequest(b);
                    }
                }
            }
            if *quit.borrow() {
                break;
            }
            if let Some(wait) = busy {
                // Busy is not broken: wait as asked, without counting a failure.
                tracing::info!("web seed {shown}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = quit.changed() => {}
                }
                continue;
            }
            failures += 1;
            if failures >= MAX_FAILURES {
                tracing::warn!("web seed {shown}: {e}; dropped after {failures} failures");
                break;
            }
            let wait = Duration::from_secs(1 << failures);
            tracing::warn!("web seed {shown}: {e} (retrying in {}s)", wait.as_secs());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = quit.changed() => {}
            }
        }
    }
    tracing::info!(
        "web seed {shown}: {:.1} MiB fetched",
        fetched as f64 / (1 << 20) as f64
    );
    t.state.lock().unwrap().web_seeds.remove(&key);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(multi: bool) -> Metainfo {
        let mut m = Metainfo {
            name: "my stuff".into(),
            info_bytes: Vec::new(),
            v1_hash: None,
            v2_hash: None,
            piece_length: 16,
            multi_file: multi,
            files: Vec::new(),
            pieces: Vec::new(),
            piece_layers: Default::default(),
            trackers: Vec::new(),
            url_list: Vec::new(),
            http_seeds: Vec::new(),
            private: false,
            comment: None,
            created_by: None,
            creation_date: None,
        };
        let f = |path: &[&str], offset, length, pad| FileEntry {
            path: path.iter().map(|s| s.to_string()).collect(),
            length,
            offset,
            pad,
            executable: false,
            pieces_root: None,
        };
        m.files = if multi {
            vec![
                f(&["a.bin"], 0, 10, false),
                f(&[".pad", "6"], 10, 6, true),
                f(&["dir", "b c.txt"], 16, 20, false),
            ]
        } else {
            vec![f(&["my stuff"], 0, 40, false)]
        };
        m
    }

    #[test]
    fn urls_follow_bep_19() {
        let single = meta(false);
        let f = &single.files[0];
        assert_eq!(file_url("http://h/x.iso", &single, f), "http://h/x.iso");
        assert_eq!(file_url("http://h/d/", &single, f), "http://h/d/my%20stuff");
        let multi = meta(true);
        assert_eq!(
            file_url("http://h/d", &multi, &multi.files[2]),
            "http://h/d/my%20stuff/dir/b%20c.txt"
        );
        assert_eq!(
            file_url("http://h/d/", &multi, &multi.files[0]),
            "http://h/d/my%20stuff/a.bin"
        );
    }

    #[test]
    fn hoffman_urls_follow_bep_17() {
        let ih = [
            0x9c, 0xd9, b'i', 0x8a, 0xf5, b'U', b'u', 0x1a, 0x91, 0x86, 0xae, 0x06, b'l', b'W',
            0xea, b'!', b'W', b'#', b'5', 0xe0,
        ];
        // The BEP's own example (ranges are inclusive there, half-open here).
        assert_eq!(
            hoffman_url(
                "http://www.whatever.com/seed.php",
                &ih,
                8,
                &[(49152, 131072), (180224, 262144)]
            ),
            "http://www.whatever.com/seed.php?info_hash=%9C%D9i%8A%F5Uu%1A%91%86%AE%06lW%EA%21W%235%E0&piece=8&ranges=49152-131071,180224-262143"
        );
        assert_eq!(
            hoffman_url("http://h/s.php?k=1", &ih, 3, &[]),
            format!(
                "http://h/s.php?k=1&info_hash={}&piece=3",
                crate::encoding::percent_encode(&ih)
            )
        );
    }

    #[test]
    fn ranges_split_at_files_and_skip_pads() {
        let m = meta(true);
        assert_eq!(segments(&m, 4, 20), vec![(0, 4, 6), (2, 0, 4)]);
        assert_eq!(segments(&m, 10, 16), vec![]);
        assert_eq!(segments(&m, 30, 36), vec![(2, 14, 6)]);
    }
}
