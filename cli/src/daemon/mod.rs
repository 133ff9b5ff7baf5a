//! `ccbt daemon`: the engine ([`ccbt_node::daemon`]) served over an HTTP API ([`api`]) on
//! loopback, with the config file and a watch folder followed ([`reload`], [`watchdir`]);
//! [`client`] holds the commands that talk to it and [`dashboard`] the terminal UI.

pub mod api;
pub mod client;
pub mod dashboard;
pub mod reload;
pub mod watchdir;

use crate::Ctx;
use anyhow::{Context, Result};
use ccbt_core::encoding::to_hex;
pub use ccbt_node::daemon::{alerts, metrics, AddRequest, Daemon, ItemView};
use ccbt_node::Node;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args)]
pub struct DaemonArgs {
    /// The HTTP API's address (default: [daemon] api_listen, 127.0.0.1:7881)
    #[arg(long, value_name = "ADDR")]
    pub api: Option<SocketAddr>,
    /// Address to listen on for peers (default 0.0.0.0:[network] listen_port)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// `<data dir>/daemon.json`: where a running daemon's API is (written at start, removed at a
/// clean exit; a stale one is noticed by the failed connection).
pub fn info_path(data_dir: &Path) -> PathBuf {
    data_dir.join("daemon.json")
}

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api-token")
}

/// The API token: made once (32 random bytes, hex) with mode 0600.
fn load_or_make_token(data_dir: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = token_path(data_dir);
    if let Ok(t) = std::fs::read_to_string(&p) {
        let t = t.trim().to_string();
        if t.len() >= 32 {
            return Ok(t);
        }
    }
    let t = to_hex(&rand::random::<[u8; 32]>());
    let tmp = p.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, t.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &p)?;
    Ok(t)
}

/// When to hand the heap freed during a busy spell back to the kernel: glibc keeps freed pages
/// in its arenas (0.35 MiB of an idle daemon's 4.7 MiB heap). Fed the process's CPU time every
/// 30 s; "at rest" is under 100 ms of it since the last look, and a rest is trimmed once, not
/// every 30 s.
#[derive(Default)]
struct RestTrim {
    last: Duration,
    trimmed: bool,
}

impl RestTrim {
    const BUSY: Duration = Duration::from_millis(100);

    /// The CPU time used so far; true when the heap should be trimmed now.
    fn tick(&mut self, cpu: Duration) -> bool {
        let busy = cpu.saturating_sub(self.last) > Self::BUSY;
        self.last = cpu;
        if busy {
            self.trimmed = false;
            false
        } else {
            !std::mem::replace(&mut self.trimmed, true)
        }
    }
}

async fn trim_at_rest() {
    fn cpu() -> Duration {
        // SAFETY: getrusage writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
        t(u.ru_utime) + t(u.ru_stime)
    }
    let mut rest = RestTrim {
        last: cpu(),
        trimmed: false,
    };
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        if rest.tick(cpu()) {
            // SAFETY: malloc_trim only releases free pages; it walks the arenas under their locks.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}

/// `ccbt daemon`.
pub fn run(ctx: &Ctx, a: DaemonArgs) -> Result<()> {
    // Two malloc arenas, not one per thread that ever allocated (up to 16 here): freed memory in
    // a thread's own arena serves no other thread, and an idle daemon kept 1.6 MiB in five.
    // Set before the runtime starts its threads.
    // SAFETY: mallopt only changes allocator settings; no allocation is in flight in this call.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let rt = crate::runtime()?;
    let _in = rt.enter();
    let api: SocketAddr = match a.api {
        Some(x) => x,
        None => ctx.config.daemon.api_listen.parse().with_context(|| {
            format!(
                "[daemon] api_listen = {:?} is not an address",
                ctx.config.daemon.api_listen
            )
        })?,
    };
    std::fs::create_dir_all(&ctx.data_dir)
        .with_context(|| format!("cannot create {}", ctx.data_dir.display()))?;
    let listen = ctx.listen(a.listen);
    rt.block_on(async {
        let node = Node::start(ctx, listen, Vec::new(), Vec::new()).await?;
        let served = node.join_all()?;
        let token = load_or_make_token(&ctx.data_dir)?;
        let listener = tokio::net::TcpListener::bind(api)
            .await
            .with_context(|| format!("cannot listen for the API on {api} (another daemon? set --api or [daemon] api_listen)"))?;
        let api_addr = listener.local_addr()?;
        let d = Daemon::new(ctx, node.clone(), listen)?;
        let mut stopped = d.stop.subscribe();
        let _watcher = reload::watch(d.clone(), d.config_path.clone());
        tokio::spawn(alerts::run(d.clone()));
        let dc = &ctx.config.daemon;
        let _watch_dir = (!dc.watch_dir.as_os_str().is_empty()).then(|| {
            let out = if dc.download_dir.as_os_str().is_empty() {
                ctx.data_dir.join("downloads")
            } else {
                dc.download_dir.clone()
            };
            watchdir::watch(d.clone(), dc.watch_dir.clone(), out)
        });
        // `[observability] metrics_port`: /metrics alone on a port of its own (loopback).
        if ctx.config.observability.enable_metrics {
            let addr = SocketAddr::from(([127, 0, 0, 1], ctx.config.observability.metrics_port));
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!("metrics on http://{addr}/metrics");
                    let d2 = d.clone();
                    tokio::spawn(async move { axum::serve(l, api::metrics_router(d2)).await });
                }
                Err(e) => tracing::warn!("metrics port {addr}: {e}; /metrics stays on the API address"),
            }
        }
        let restored = d.restore()?;
        std::fs::write(
            info_path(&ctx.data_dir),
            serde_json::to_vec(&serde_json::json!({"api": api_addr.to_string(), "pid": std::process::id()}))?,
        )?;
        if !ctx.quiet {
            eprintln!(
                "ccbt daemon: API on http://{api_addr} (token in {}), peers on {}, {restored} item(s) restored, {served} share(s) served",
                token_path(&ctx.data_dir).display(),
                node.session.listen_addr()
            );
        }
        tokio::spawn(trim_at_rest());
        let app = api::router(d.clone(), token);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        });
        server.await.context("the API server failed")?;
        if !ctx.quiet {
            eprintln!("ccbt daemon: stopping (checkpoints, mounts)...");
        }
        d.shutdown().await;
        let _ = std::fs::remove_file(info_path(&ctx.data_dir));
        let _ = std::fs::remove_file(ccbt_node::socket::socket_path(&ctx.data_dir));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::RestTrim;
    use std::time::Duration;

    #[test]
    fn the_heap_is_trimmed_once_per_rest() {
        let ms = Duration::from_millis;
        let mut r = RestTrim::default();
        assert!(!r.tick(ms(900)), "busy: loading");
        assert!(r.tick(ms(950)), "at rest: trim");
        assert!(!r.tick(ms(960)), "still at rest: once is enough");
        assert!(!r.tick(ms(2_000)), "busy again");
        assert!(r.tick(ms(2_050)), "a new rest: trim again");
    }
}
