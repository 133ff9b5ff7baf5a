//! `[daemon] watch_dir`: a `.torrent` or `.magnet` file (a magnet link inside) dropped there is
//! added, as in Transmission and rqbit, downloading into `[daemon] download_dir`. The file is then
//! renamed to `<name>.added` (or `<name>.invalid`, with the reason in the log), so it is taken
//! once. Files present at start are taken too.

use super::{AddRequest, Daemon};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn wanted(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("torrent") | Some("magnet")
    ) && p.is_file()
}

/// Adds one dropped file; blocking.
fn take(d: &Arc<Daemon>, p: &Path, out: &Path) {
    let req = if p.extension().and_then(|e| e.to_str()) == Some("magnet") {
        std::fs::read_to_string(p).ok().map(|t| AddRequest {
            source: Some(t.trim().to_string()),
            out_dir: Some(out.to_path_buf()),
            ..Default::default()
        })
    } else {
        std::fs::read(p).ok().map(|b| AddRequest {
            torrent_hex: Some(ccbt_core::encoding::to_hex(&b)),
            out_dir: Some(out.to_path_buf()),
            ..Default::default()
        })
    };
    let Some(req) = req else { return };
    let shown = p.display();
    let suffix = match d.add(req) {
        Ok(id) => {
            tracing::info!("watch folder: added {shown} as {id}");
            "added"
        }
        Err(ccbt_node::Error::Conflict(_)) => {
            tracing::info!("watch folder: {shown} is already added");
            "added"
        }
        Err(e) => {
            tracing::warn!("watch folder: cannot add {shown}: {e:#}");
            "invalid"
        }
    };
    let mut to = p.as_os_str().to_owned();
    to.push(format!(".{suffix}"));
    if let Err(e) = std::fs::rename(p, &to) {
        tracing::warn!("watch folder: cannot rename {shown}: {e}");
    }
}

/// Watches `dir`; the watcher lives as long as the returned value.
pub fn watch(d: Arc<Daemon>, dir: PathBuf, out: PathBuf) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| std::fs::create_dir_all(&out)) {
        tracing::warn!("watch folder {} is off: {e}", dir.display());
        return None;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let tx2 = tx.clone();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            for p in ev.paths {
                let _ = tx2.send(p);
            }
        }
    })
    .ok()?;
    if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!("watch folder {} is off: {e}", dir.display());
        return None;
    }
    // What is there already.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let _ = tx.send(e.path());
    }
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            // A file being copied in: let the writer finish.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut batch = vec![p];
            while let Ok(p) = rx.try_recv() {
                batch.push(p);
            }
            batch.sort();
            batch.dedup();
            let (d, out) = (d.clone(), out.clone());
            let _ = tokio::task::spawn_blocking(move || {
                for p in batch.iter().filter(|p| wanted(p)) {
                    take(&d, p, &out);
                }
            })
            .await;
        }
    });
    tracing::info!("watching {} for .torrent and .magnet files", dir.display());
    Some(w)
}
