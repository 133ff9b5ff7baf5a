//! `ccbt`: the command-line binary. Parses flags, resolves configuration ([`config`]) and runs one
//! command; library crates do the work. Errors reach the user as one line on stderr and exit code 1.

/// `println!` for the command's output: a reader that went away (`ccbt info X | head -1`) ends
/// the command quietly instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

mod bt_cmds;
mod config_cmds;
mod daemon;
mod demo;
mod dht_cmds;
mod history_cmds;
mod mount_cmds;
mod pin_cmds;
mod progress;
mod share_cmds;
mod sync_cmds;
mod torrent_cmds;
mod writer_cmds;
mod xet_cmds;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ccbt",
    version,
    about = "An updatable peer-to-peer filesystem and a BitTorrent client",
    propagate_version = true
)]
pub struct Cli {
    /// Where ccbt keeps its store, keys and resume data
    #[arg(long, global = true, env = "CCBT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configuration file (default: ./ccbt.toml, then ~/.config/ccbt/ccbt.toml)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Print only errors and the requested data
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print machine-readable JSON (commands that print data)
    #[arg(long, global = true)]
    pub json: bool,
    /// Bootstrap the DHT from this node (repeatable; replaces [discovery] dht_bootstrap and
    /// turns the DHT on; `none`: start a new network with no bootstrap node)
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
    /// Do not use the DHT
    #[arg(long, global = true)]
    pub no_dht: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a .torrent file (hybrid v1+v2 by default)
    Create(torrent_cmds::CreateArgs),
    /// Show what a .torrent file or magnet link contains
    Info(torrent_cmds::InfoArgs),
    /// Print Xet file hashes (like sha256sum), optionally with every chunk
    Hash(xet_cmds::HashArgs),
    /// Publish a folder as a new version of a share (prints the share id)
    Publish(share_cmds::PublishArgs),
    /// List the versions of a share
    Versions(share_cmds::VersionsArgs),
    /// Write a version of a share (ID or ID@VERSION) into a new directory
    Export(share_cmds::ExportArgs),
    /// Each version of a share: time, author, files added, removed, changed, bytes changed
    Log(history_cmds::LogArgs),
    /// What changed between two versions: ccbt diff ID@A [ID@B | @B] (default B: the newest)
    Diff(history_cmds::DiffArgs),
    /// Make a new version whose content (or PATH's) equals an old version's (owner only)
    Restore(history_cmds::RestoreArgs),
    /// List the shares in the data dir
    Shares,
    /// Several writers: authorize or remove writer keys of a share, list them
    #[command(subcommand)]
    Share(writer_cmds::ShareCmd),
    /// This node's writer key (made on first use): give it to a share's owner
    Keygen,
    /// Keep files of a share local (fetched in the background); ID@SEQ also keeps that version
    /// through `ccbt cas gc`
    Pin(pin_cmds::PinArgs),
    /// Undo `ccbt pin`
    Unpin(pin_cmds::PinArgs),
    /// Drop the local chunks of a share's files that are not pinned (they fetch again on read)
    Evict(pin_cmds::EvictArgs),
    /// The content-addressed store: stats, verify, gc
    #[command(subcommand)]
    Cas(share_cmds::CasCmd),
    /// Show the whole idea on this machine, in a temporary directory
    Demo,
    /// Download a .torrent from its swarm (and optionally keep seeding)
    Download(bt_cmds::DownloadArgs),
    /// Seed a .torrent from data on disk; without a torrent, serve every share in the data dir
    Seed(bt_cmds::SeedArgs),
    /// Keep a directory in step with a share (fetching only missing chunks); --follow keeps going
    Sync(sync_cmds::SyncArgs),
    /// Shares, peers and counters of the node running on this data dir
    Status,
    /// Mount a share (a live directory, writable on the owner's node) or a torrent (read-only, streaming)
    Mount(mount_cmds::MountArgs),
    /// Unmount a ccbt mount (also clears one left by a crash)
    Unmount { dir: PathBuf },
    /// Resume a paused item of the running daemon, or continue a checkpointed download by info-hash
    Resume(bt_cmds::ResumeArgs),
    /// Ask a torrent's trackers for seeders, leechers and completed downloads
    Scrape(bt_cmds::ScrapeArgs),
    /// Checkpointed downloads: list, clean, delete
    #[command(subcommand)]
    Checkpoints(bt_cmds::CheckpointCmd),
    /// The Mainline DHT: status, peers, get, put, ping
    #[command(subcommand)]
    Dht(dht_cmds::DhtCmd),
    /// Run one long-lived session for torrents, shares and mounts, driven by an HTTP API
    Daemon(daemon::DaemonArgs),
    /// Add a torrent, magnet or share to the running daemon
    Add(daemon::client::AddArgs),
    /// What the running daemon holds
    List,
    /// Pause an item of the running daemon
    Pause(daemon::client::IdArgs),
    /// Remove an item from the running daemon
    Remove(daemon::client::RemoveArgs),
    /// Show or set rate limits of the running daemon (session-wide, or one item's)
    Limits(daemon::client::LimitsArgs),
    /// Stop the running daemon cleanly
    Stop,
    /// Download a magnet link (the same as `download` of a magnet)
    Magnet(bt_cmds::DownloadArgs),
    /// Print the running daemon's Prometheus metrics
    Metrics,
    /// The terminal dashboard on the daemon (starts one if none runs)
    Dashboard(daemon::dashboard::DashboardArgs),
    /// The terminal dashboard (the same as `dashboard`)
    Interactive(daemon::dashboard::DashboardArgs),
    /// Alert rules of the running daemon: add, list, remove, test
    #[command(subcommand)]
    Alerts(daemon::client::AlertsCmd),
    /// The configuration: show, get KEY, set KEY VALUE
    #[command(subcommand)]
    Config(config_cmds::ConfigCmd),
}

/// The process's async runtime (see [`ccbt_node::runtime`]).
pub(crate) fn runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    Ok(ccbt_node::runtime()?)
}

/// Settings every command sees: the node library's [`ccbt_node::Env`] (through `Deref`) and how
/// to print.
pub struct Ctx {
    pub env: ccbt_node::Env,
    pub quiet: bool,
    pub json: bool,
}

impl std::ops::Deref for Ctx {
    type Target = ccbt_node::Env;
    fn deref(&self) -> &ccbt_node::Env {
        &self.env
    }
}

/// Standard output failed: a closed pipe ends the command quietly, anything else is an error.
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    // What a command left to undo at exit (the demo's mounts and temporary directory).
    if let Some(f) = AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()).take() {
        f();
    }
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
}

type FilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The log filter, changeable while running (`[observability] log_level` reloads).
static LOG_FILTER: std::sync::OnceLock<FilterHandle> = std::sync::OnceLock::new();

/// Sets the log level while running.
pub(crate) fn set_log_level(level: &str) -> anyhow::Result<()> {
    let f = tracing_subscriber::EnvFilter::try_new(format!("{},fuser=error", level.to_lowercase()))
        .map_err(|_| {
            anyhow::anyhow!("invalid log level {level:?}: use error, warn, info, debug or trace")
        })?;
    if let Some(h) = LOG_FILTER.get() {
        h.reload(f)?;
    }
    Ok(())
}

/// Cleanup to run if the command has to exit early (see [`stdout_failed`]).
pub(crate) static AT_EXIT: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>> =
    std::sync::Mutex::new(None);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let broken_pipe = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            // One line, whatever a peer or a torrent put in the message.
            eprintln!(
                "error: {}",
                ccbt_core::encoding::printable(&format!("{e:#}"))
            );
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = ccbt_node::Config::load(cli.config.as_deref())?;
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| config.observability.log_level.clone());
    // fuser logs every request it does not implement (xattrs...) as a warning: noise for users.
    let filter = tracing_subscriber::EnvFilter::try_new(if cli.quiet {
        "error".to_string()
    } else {
        format!("{},fuser=error", level.to_lowercase())
    })
    .map_err(|_| {
        anyhow::anyhow!("invalid log level {level:?}: use error, warn, info, debug or trace")
    })?;
    {
        use tracing_subscriber::prelude::*;
        let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false),
            )
            .init();
        let _ = LOG_FILTER.set(handle);
    }
    let ctx = Ctx {
        env: ccbt_node::Env::new(
            config,
            cli.data_dir
                .clone()
                .unwrap_or_else(ccbt_node::config::default_data_dir),
            (!cli.dht_bootstrap.is_empty()).then(|| {
                cli.dht_bootstrap
                    .iter()
                    .filter(|s| !s.is_empty() && s.as_str() != "none")
                    .cloned()
                    .collect()
            }),
            cli.no_dht,
            cli.config.clone(),
            !cli.quiet,
        ),
        quiet: cli.quiet,
        json: cli.json,
    };
    let r = run_command(&ctx, cli.command);
    ctx.finish();
    r
}

fn run_command(ctx: &Ctx, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Create(a) => torrent_cmds::create(ctx, a),
        Command::Info(a) => torrent_cmds::info(ctx, a),
        Command::Hash(a) => xet_cmds::hash(ctx, a),
        Command::Publish(a) => share_cmds::publish(ctx, a),
        Command::Versions(a) => share_cmds::versions(ctx, a),
        Command::Export(a) => share_cmds::export(ctx, a),
        Command::Log(a) => history_cmds::log(ctx, a),
        Command::Diff(a) => history_cmds::diff(ctx, a),
        Command::Restore(a) => history_cmds::restore(ctx, a),
        Command::Shares => share_cmds::list(ctx),
        Command::Share(c) => writer_cmds::share_cmd(ctx, c),
        Command::Keygen => writer_cmds::keygen(ctx),
        Command::Pin(a) => pin_cmds::pin(ctx, a),
        Command::Unpin(a) => pin_cmds::unpin(ctx, a),
        Command::Evict(a) => pin_cmds::evict(ctx, a),
        Command::Cas(c) => share_cmds::cas(ctx, c),
        Command::Demo => demo::demo(ctx),
        Command::Download(a) => bt_cmds::download(ctx, a),
        Command::Seed(a) => bt_cmds::seed(ctx, a),
        Command::Sync(a) => sync_cmds::sync(ctx, a),
        Command::Status => sync_cmds::status(ctx),
        Command::Mount(a) => mount_cmds::mount_cmd(ctx, a),
        Command::Unmount { dir } => mount_cmds::unmount_cmd(ctx, dir),
        // A paused item of the running daemon, else a checkpointed download.
        Command::Resume(a) => match daemon::client::daemon_item(ctx, &a.info_hash) {
            Some(_) => daemon::client::pause(
                ctx,
                daemon::client::IdArgs {
                    id: a.info_hash.clone(),
                },
                true,
            ),
            None => bt_cmds::resume(ctx, a),
        },
        Command::Scrape(a) => bt_cmds::scrape(ctx, a),
        Command::Checkpoints(c) => bt_cmds::checkpoints(ctx, c),
        Command::Dht(c) => dht_cmds::dht(ctx, c),
        Command::Daemon(a) => daemon::run(ctx, a),
        Command::Add(a) => daemon::client::add(ctx, a),
        Command::List => daemon::client::list(ctx),
        Command::Pause(a) => daemon::client::pause(ctx, a, false),
        Command::Remove(a) => daemon::client::remove(ctx, a),
        Command::Limits(a) => daemon::client::limits(ctx, a),
        Command::Stop => daemon::client::stop(ctx),
        Command::Magnet(a) => bt_cmds::download(ctx, a),
        Command::Metrics => daemon::client::metrics(ctx),
        Command::Alerts(c) => daemon::client::alerts(ctx, c),
        Command::Dashboard(a) | Command::Interactive(a) => daemon::dashboard::run(ctx, a),
        Command::Config(c) => config_cmds::config(ctx, c, ctx.config_file.as_deref()),
    }
}
