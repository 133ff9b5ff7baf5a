//! Hot reload: the daemon watches its config file (inotify through `notify`; editors that
//! replace the file by a rename are seen too, as the directory is watched) and applies limits,
//! the log level and peer limits at once; other changed keys are named as taking effect at the
//! next start. An edit that does not parse or validate is rejected with one log line and the
//! running values stay. `POST /api/config/reload` does the same on demand.

use super::Daemon;
use ccbt_node::config::Config;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Starts watching; the watcher lives as long as the returned value.
pub fn watch(d: Arc<Daemon>, path: PathBuf) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path.file_name()?.to_os_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut w = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
            {
                let _ = tx.send(());
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("config reload is off: cannot watch {}: {e}", dir.display());
            return None;
        }
    };
    if let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!("config reload is off: cannot watch {}: {e}", dir.display());
        return None;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // An editor writes in several steps: settle first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            while rx.try_recv().is_ok() {}
            if let Err(e) = reload(&d).await {
                tracing::warn!("{e}");
            }
        }
    });
    tracing::info!("watching {} for configuration changes", path.display());
    Some(w)
}

/// Reads the config file again and applies what can change while running; returns what changed.
pub async fn reload(d: &Arc<Daemon>) -> Result<Vec<String>, String> {
    let path = d.config_path.clone();
    let new = tokio::task::spawn_blocking(move || Config::load(Some(&path)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            format!(
                "config {}: edit rejected, the running values are kept: {e:#}",
                d.config_path.display()
            )
        })?;
    let old = d.config.lock().unwrap().clone();
    let (a, b) = (
        serde_json::to_value(&old).unwrap_or_default(),
        serde_json::to_value(&new).unwrap_or_default(),
    );
    let mut changed = Vec::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (sec, bv) in b {
            let Some(bv) = bv.as_object() else { continue };
            for (k, v) in bv {
                if a.get(sec).and_then(|s| s.get(k)) != Some(v) {
                    changed.push(format!("{sec}.{k}"));
                }
            }
        }
    }
    let mut later = Vec::new();
    for key in &changed {
        match key.as_str() {
            "limits.global_down_kib" | "limits.global_up_kib" => {}
            "observability.log_level" => match crate::set_log_level(&new.observability.log_level) {
                Ok(()) => tracing::debug!(
                    "log level now {} (this line shows at debug)",
                    new.observability.log_level
                ),
                Err(e) => tracing::warn!("config: {e:#}; log level kept"),
            },
            "network.max_peers_per_torrent" => {
                d.set_max_peers(new.network.max_peers_per_torrent.max(1) as usize)
            }
            k => later.push(k.to_string()),
        }
    }
    if changed.iter().any(|k| k.starts_with("limits.global_")) {
        let _ = d.set_limits(
            None,
            Some(new.limits.global_down_kib),
            Some(new.limits.global_up_kib),
        );
    }
    *d.config.lock().unwrap() = new;
    if changed.is_empty() {
        tracing::info!("config reloaded: nothing changed");
    } else {
        tracing::info!("config reloaded: {}", changed.join(", "));
    }
    if !later.is_empty() {
        tracing::info!("takes effect at the next start: {}", later.join(", "));
    }
    Ok(changed)
}
