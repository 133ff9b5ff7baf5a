//! `ccbt download`, `seed`, `resume` and `checkpoints`: classic BitTorrent from the command line.

use crate::progress::human_bytes;
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_core::encoding::printable;
use ccbt_core::encoding::to_hex;
use ccbt_core::resume::Checkpoint;
use ccbt_core::session::{Stats, TorrentConfig};
use ccbt_core::storage::Prealloc;
use ccbt_core::Metainfo;
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct DownloadArgs {
    /// A .torrent file, a magnet link (metadata fetched from peers, BEP 9), or a 40-hex info-hash
    /// (with --peer)
    pub torrent: String,
    /// Directory to download into
    #[arg(short = 'o', long = "output", default_value = ".")]
    pub out: PathBuf,
    /// Keep seeding after the download completes (until --seed-ratio, or Ctrl-C)
    #[arg(long)]
    pub seed: bool,
    /// Stop seeding at this upload/size ratio
    #[arg(long, value_name = "R")]
    pub seed_ratio: Option<f64>,
    /// Download pieces in order (for streaming); default: rarest first
    #[arg(long)]
    pub sequential: bool,
    /// Address to listen on for peers (default 0.0.0.0:[network] listen_port)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A peer to connect to directly (repeatable)
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<SocketAddr>,
    /// Only download files matching this glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub only: Vec<String>,
    /// Skip files matching this glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub skip: Vec<String>,
    /// Download limit in KiB/s (0 = unlimited)
    #[arg(long, value_name = "KIB")]
    pub down_limit: Option<u64>,
    /// Upload limit in KiB/s (0 = unlimited)
    #[arg(long, value_name = "KIB")]
    pub up_limit: Option<u64>,
    /// Continue from this torrent's checkpoint if there is one (the default; --no-resume starts over)
    #[arg(long, overrides_with = "no_resume")]
    pub resume: bool,
    #[arg(long)]
    pub no_resume: bool,
    /// Do not contact the torrent's trackers (use --peer)
    #[arg(long)]
    pub no_trackers: bool,
    /// Do not fetch from the torrent's web seeds (url-list, BEP 19)
    #[arg(long)]
    pub no_web_seeds: bool,
    /// Preallocate files fully instead of sparsely
    #[arg(long)]
    pub preallocate: bool,
}

#[derive(Args)]
pub struct SeedArgs {
    /// The .torrent to seed (omit to serve every share in the data dir)
    pub torrent: Option<PathBuf>,
    /// Directory holding the data (the torrent's name inside it)
    pub dir: Option<PathBuf>,
    /// Tracker for the shares' swarms (share mode; repeatable)
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<SocketAddr>,
    #[arg(long, value_name = "KIB")]
    pub up_limit: Option<u64>,
    #[arg(long)]
    pub no_trackers: bool,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// Info-hash (hex) of a checkpointed download
    pub info_hash: String,
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<SocketAddr>,
    #[arg(long)]
    pub seed: bool,
}

#[derive(Subcommand)]
pub enum CheckpointCmd {
    /// List checkpointed downloads
    List,
    /// Delete checkpoints older than N days
    Clean {
        #[arg(long, default_value_t = 7)]
        days: u64,
    },
    /// Delete one checkpoint
    Delete { info_hash: String },
}

struct Job {
    meta: Metainfo,
    cfg: TorrentConfig,
    listen: SocketAddr,
    seeding_only: bool,
}

use ccbt_node::torrent::{base_cfg, load_torrent, resolve_torrent, strategy, Sources};

pub fn download(ctx: &Ctx, a: DownloadArgs) -> Result<()> {
    if crate::daemon::client::download_via_daemon(ctx, &a)? {
        return Ok(());
    }
    let listen = ctx.listen(a.listen);
    let (meta, peers) = resolve_torrent(
        ctx,
        &a.torrent,
        &Sources {
            peers: &a.peers,
            trackers: &[],
            listen,
            timeout: Duration::from_secs(120),
        },
    )?;
    let mut cfg = base_cfg(ctx)?;
    cfg.out_dir = a.out.clone();
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    cfg.strategy = strategy(ctx, a.sequential)?;
    cfg.seed = a.seed || a.seed_ratio.is_some();
    cfg.seed_ratio = a.seed_ratio;
    cfg.only = a.only.clone();
    cfg.skip = a.skip.clone();
    if let Some(d) = a.down_limit {
        cfg.down_limit = d * 1024;
    }
    if let Some(u) = a.up_limit {
        cfg.up_limit = u * 1024;
    }
    if a.preallocate {
        cfg.prealloc = Prealloc::Full;
    }
    cfg.resume = !a.no_resume;
    cfg.peers = peers;
    cfg.use_trackers = !a.no_trackers;
    cfg.use_web_seeds = !a.no_web_seeds;
    run(
        ctx,
        Job {
            meta,
            cfg,
            listen,
            seeding_only: false,
        },
    )
}

pub fn seed(ctx: &Ctx, a: SeedArgs) -> Result<()> {
    if crate::daemon::client::seed_via_daemon(ctx, &a)? {
        return Ok(());
    }
    let (Some(torrent), Some(dir)) = (&a.torrent, &a.dir) else {
        if a.torrent.is_some() {
            bail!("give the data directory too: ccbt seed FILE.torrent DIR");
        }
        return crate::sync_cmds::serve(ctx, a.listen, a.trackers.clone(), a.peers.clone());
    };
    let (meta, _) = load_torrent(torrent)?;
    let mut cfg = base_cfg(ctx)?;
    cfg.out_dir = dir.clone();
    cfg.seed = true;
    cfg.resume = true;
    cfg.peers = a.peers.clone();
    cfg.use_trackers = !a.no_trackers;
    if let Some(u) = a.up_limit {
        cfg.up_limit = u * 1024;
    }
    let listen = ctx.listen(a.listen);
    run(
        ctx,
        Job {
            meta,
            cfg,
            listen,
            seeding_only: true,
        },
    )
}

pub fn resume(ctx: &Ctx, a: ResumeArgs) -> Result<()> {
    let hex = a.info_hash.to_lowercase();
    let c = Checkpoint::load(&ctx.data_dir, &hex)?.with_context(|| {
        format!(
            "no checkpoint for {hex} in {}; `ccbt checkpoints list` shows them",
            ctx.data_dir.display()
        )
    })?;
    let meta = Metainfo::from_bytes(&c.torrent).context("the checkpoint's torrent is damaged")?;
    let mut cfg = base_cfg(ctx)?;
    cfg.out_dir = c.out_dir.clone();
    cfg.only = c.only.clone();
    cfg.skip = c.skip.clone();
    cfg.resume = true;
    cfg.seed = a.seed;
    cfg.peers = a.peers.clone();
    let listen = ctx.listen(a.listen);
    run(
        ctx,
        Job {
            meta,
            cfg,
            listen,
            seeding_only: false,
        },
    )
}

fn progress_line(s: &Stats, started: Instant) -> String {
    let pct = if s.pieces_total > 0 {
        100.0 * s.pieces_have as f64 / s.pieces_total as f64
    } else {
        100.0
    };
    let eta = if s.download_rate > 1.0 && !s.complete {
        format!("{}s", (s.wanted_left as f64 / s.download_rate) as u64)
    } else {
        "-".into()
    };
    format!(
        "{} {:5.1}%  down {}/s  up {}/s  peers {}  ETA {}  [{}s]",
        printable(&s.name),
        pct,
        human_bytes(s.download_rate as u64),
        human_bytes(s.upload_rate as u64),
        s.peers,
        eta,
        started.elapsed().as_secs()
    )
}

fn run(ctx: &Ctx, job: Job) -> Result<()> {
    let rt = crate::runtime()?;
    let json = ctx.json;
    let quiet = ctx.quiet;
    rt.block_on(async move {
        let started = Instant::now();
        let name = job.meta.name.clone();
        let ccbt_node::torrent::Solo { session, handle } =
            ccbt_node::torrent::solo(ctx, job.listen, job.meta, job.cfg).await?;
        let ih = to_hex(&handle.info_hash());
        let st = handle.stats();
        if !quiet {
            eprintln!(
                "{} {name} ({ih}) listening on {}{}",
                if job.seeding_only {
                    "seeding"
                } else {
                    "downloading"
                },
                session.listen_addr(),
                if st.resumed_pieces > 0 {
                    format!(
                        ", {} of {} pieces already {}",
                        st.resumed_pieces,
                        st.pieces_total,
                        if st.rechecked {
                            "verified on disk"
                        } else {
                            "in the checkpoint"
                        }
                    )
                } else {
                    String::new()
                }
            );
            if job.seeding_only && !st.complete {
                eprintln!(
                    "warning: only {} of {} pieces of the data are present and valid",
                    st.pieces_have, st.pieces_total
                );
            }
        }
        // Ctrl-C / SIGTERM stop cleanly (checkpoint, tracker `stopped`).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let tty = std::io::stderr().is_terminal() && !quiet;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let wait = handle.finished();
        tokio::pin!(wait);
        let mut interrupted = false;
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = tokio::signal::ctrl_c() => { interrupted = true; handle.stop(); }
                _ = term.recv() => { interrupted = true; handle.stop(); }
                _ = tick.tick() => {
                    if tty {
                        eprint!("\r\x1b[2K{}", progress_line(&handle.stats(), started));
                    }
                }
            }
        }
        let s = handle.stats();
        if tty {
            eprintln!();
        }
        let secs = started.elapsed().as_secs_f64();
        if json {
            outln!(
                "{}",
                json!({
                    "info_hash": ih, "name": s.name, "complete": s.complete,
                    "pieces_have": s.pieces_have, "pieces_total": s.pieces_total,
                    "downloaded": s.downloaded, "uploaded": s.uploaded, "seconds": secs,
                    "hash_failures": s.hash_failures, "banned_peers": s.banned,
                    "resumed_pieces": s.resumed_pieces, "rechecked": s.rechecked,
                    "tracker_errors": s.tracker_errors, "tracker_ok": s.tracker_ok,
                    "error": s.error,
                })
            );
        } else if !quiet {
            outln!(
                "{}: {} of {} pieces, downloaded {} uploaded {} in {:.1}s ({}/s)",
                if s.complete { "complete" } else { "stopped" },
                s.pieces_have,
                s.pieces_total,
                human_bytes(s.downloaded),
                human_bytes(s.uploaded),
                secs,
                human_bytes((s.downloaded as f64 / secs.max(1e-3)) as u64)
            );
        }
        if let Some(e) = &s.error {
            bail!("{e}; the verified pieces are kept: free space (or fix the disk) and continue with `ccbt resume {ih}`");
        }
        if !s.complete && !job.seeding_only {
            if interrupted {
                bail!("interrupted; continue with `ccbt resume {ih}`");
            }
            bail!("download stopped before completing; continue with `ccbt resume {ih}`");
        }
        Ok(())
    })
}

pub fn checkpoints(ctx: &Ctx, cmd: CheckpointCmd) -> Result<()> {
    match cmd {
        CheckpointCmd::List => {
            let all = Checkpoint::list(&ctx.data_dir);
            if ctx.json {
                let v: Vec<_> = all.iter().filter_map(|c| c.as_ref().ok()).map(|c| json!({
                    "info_hash": c.info_hash_hex, "name": c.name, "out_dir": c.out_dir,
                    "pieces_have": c.pieces_have, "pieces_total": c.pieces_total, "saved": c.saved,
                })).collect();
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for c in all {
                    match c {
                        Ok(c) => outln!(
                            "{}  {:>5.1}%  {}  -> {}",
                            c.info_hash_hex,
                            100.0 * c.pieces_have as f64 / c.pieces_total.max(1) as f64,
                            printable(&c.name),
                            c.out_dir.display()
                        ),
                        Err(e) => eprintln!("warning: {e}"),
                    }
                }
            }
        }
        CheckpointCmd::Clean { days } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            let mut n = 0;
            for c in Checkpoint::list(&ctx.data_dir).into_iter().flatten() {
                if now - c.saved > (days * 86400) as i64 {
                    Checkpoint::delete(&ctx.data_dir, &c.info_hash_hex)?;
                    n += 1;
                }
            }
            if !ctx.quiet {
                outln!("removed {n} checkpoints older than {days} days");
            }
        }
        CheckpointCmd::Delete { info_hash } => {
            if !Checkpoint::delete(&ctx.data_dir, &info_hash.to_lowercase())? {
                bail!("no checkpoint for {info_hash}");
            }
            if !ctx.quiet {
                outln!("deleted checkpoint {info_hash}");
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ScrapeArgs {
    /// The .torrent whose trackers to ask
    pub torrent: PathBuf,
}

/// `ccbt scrape`: seeders, leechers and completed downloads from every tracker (BEP 48).
pub fn scrape(ctx: &Ctx, a: ScrapeArgs) -> Result<()> {
    let (meta, _) = load_torrent(&a.torrent)?;
    let ih = meta
        .v1_hash
        .or_else(|| meta.v2_hash.map(|h| h[..20].try_into().unwrap()))
        .expect("a torrent has an info-hash");
    let urls: Vec<String> = meta.trackers.iter().flatten().cloned().collect();
    if urls.is_empty() {
        bail!("{} names no tracker", a.torrent.display());
    }
    let rt = crate::runtime()?;
    let mut out = Vec::new();
    let mut ok = 0;
    for u in &urls {
        match rt.block_on(ccbt_core::session::tracker_client::scrape(u, &ih)) {
            Ok(c) => {
                ok += 1;
                out.push(json!({"tracker": u, "complete": c.complete, "incomplete": c.incomplete, "downloaded": c.downloaded}));
                if !ctx.json {
                    outln!(
                        "{u}: {} seeders, {} leechers, {} completed",
                        c.complete,
                        c.incomplete,
                        c.downloaded
                    );
                }
            }
            Err(e) => {
                out.push(json!({"tracker": u, "error": e.to_string()}));
                if !ctx.json {
                    outln!("{u}: {e}");
                }
            }
        }
    }
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&out)?);
    }
    if ok == 0 {
        bail!("no tracker answered the scrape");
    }
    Ok(())
}
