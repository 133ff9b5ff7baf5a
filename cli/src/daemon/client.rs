//! Commands that drive a running daemon through its API: `add`, `list`, `pause`, `resume`,
//! `remove`, `limits`, `stop`, `magnet`, `metrics`. The daemon is found through
//! `<data dir>/daemon.json` and the token in `<data dir>/api-token`.

use super::{info_path, token_path, ItemView};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_core::encoding::printable;
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args)]
pub struct AddArgs {
    /// A .torrent file, a magnet link, or a share id
    pub target: String,
    /// Where a torrent downloads to (default: the current directory)
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Mount a share here (kept across restarts)
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Add it paused
    #[arg(long)]
    pub paused: bool,
    /// A peer to dial (repeatable)
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<std::net::SocketAddr>,
}

#[derive(Args)]
pub struct IdArgs {
    /// The item's id (from `ccbt list`; a unique prefix is enough)
    pub id: String,
}

#[derive(Args)]
pub struct RemoveArgs {
    pub id: String,
    /// Also delete the downloaded files
    #[arg(long)]
    pub delete_data: bool,
}

#[derive(Args)]
pub struct LimitsArgs {
    /// Download limit in KiB/s (0 = unlimited)
    #[arg(long, value_name = "KIB")]
    pub down: Option<u64>,
    /// Upload limit in KiB/s (0 = unlimited)
    #[arg(long, value_name = "KIB")]
    pub up: Option<u64>,
    /// One item's limits instead of the session's
    pub id: Option<String>,
}

/// A connection to the daemon of this data dir.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// The running daemon, or an error that says how to start one.
    pub fn connect(ctx: &Ctx) -> Result<Client> {
        let none = || {
            format!(
                "no daemon runs on {}: start one with `ccbt daemon` (same --data-dir)",
                ctx.data_dir.display()
            )
        };
        let info = std::fs::read(info_path(&ctx.data_dir)).with_context(none)?;
        let info: Value = serde_json::from_slice(&info).with_context(none)?;
        let api = info["api"].as_str().with_context(none)?.to_string();
        let token = std::fs::read_to_string(token_path(&ctx.data_dir))
            .with_context(|| {
                format!(
                    "cannot read the API token {}",
                    token_path(&ctx.data_dir).display()
                )
            })?
            .trim()
            .to_string();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Client {
            base: format!("http://{api}"),
            token,
            http,
        })
    }

    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let rt = crate::runtime()?;
        rt.block_on(async {
            let mut r = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(&self.token);
            if let Some(b) = body {
                r = r
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&b)?);
            }
            let resp = r.send().await.with_context(|| {
                format!(
                    "the daemon at {} does not answer (did it stop? start it with `ccbt daemon`)",
                    self.base
                )
            })?;
            let status = resp.status();
            let text = resp.text().await?;
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if !status.is_success() {
                bail!(
                    "{}",
                    v["error"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("HTTP {status}"))
                );
            }
            Ok(v)
        })
    }

    pub fn text(&self, path: &str) -> Result<String> {
        let rt = crate::runtime()?;
        rt.block_on(async {
            let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
            Ok(resp.error_for_status()?.text().await?)
        })
    }

    pub fn items(&self) -> Result<Vec<ItemView>> {
        Ok(serde_json::from_value(self.call(
            reqwest::Method::GET,
            "/api/items",
            None,
        )?)?)
    }

    /// A full id from a unique prefix.
    fn resolve(&self, prefix: &str) -> Result<String> {
        let p = prefix.to_lowercase();
        let all = self.items()?;
        let hits: Vec<_> = all.iter().filter(|i| i.item.id.starts_with(&p)).collect();
        match hits.as_slice() {
            [one] => Ok(one.item.id.clone()),
            [] => bail!("nothing with id {prefix} here (`ccbt list` shows what is)"),
            _ => bail!("{prefix} matches {} items: give more of the id", hits.len()),
        }
    }
}

/// The daemon item `prefix` names, when a daemon runs here and holds one.
pub fn daemon_item(ctx: &Ctx, prefix: &str) -> Option<String> {
    Client::connect(ctx).ok()?.resolve(prefix).ok()
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}

pub fn add(ctx: &Ctx, a: AddArgs) -> Result<()> {
    let c = Client::connect(ctx)?;
    let mut body = json!({ "paused": a.paused, "peers": a.peers });
    let path = std::path::Path::new(&a.target);
    if path.is_file() {
        // Sent as bytes: the daemon may not see this path the same way.
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", a.target))?;
        body["torrent_hex"] = json!(ccbt_core::encoding::to_hex(&bytes));
    } else {
        body["source"] = json!(a.target);
    }
    let is_share = ccbt_xet::head::parse_share_id(&a.target).is_some() && !path.is_file();
    if !is_share {
        body["out_dir"] = json!(absolute(a.out.unwrap_or_else(|| PathBuf::from(".")))?);
    }
    if let Some(m) = a.mount {
        body["mount"] = json!(absolute(m)?);
    }
    let v = c.call(reqwest::Method::POST, "/api/items", Some(body))?;
    if ctx.json {
        outln!("{v}");
    } else {
        outln!("added {}", v["id"].as_str().unwrap_or(""));
    }
    Ok(())
}

pub fn list(ctx: &Ctx) -> Result<()> {
    let c = Client::connect(ctx)?;
    let items = c.items()?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if items.is_empty() {
        outln!("nothing added yet (`ccbt add <torrent | magnet | share id>`)");
    }
    for i in items {
        outln!(
            "{}  {:<7} {:>5.1}%  {:<17} down {}/s  up {}/s  peers {}  {}{}",
            &i.item.id[..12.min(i.item.id.len())],
            format!("{:?}", i.item.kind).to_lowercase(),
            i.progress * 100.0,
            i.state,
            crate::progress::human_bytes(i.download_rate as u64),
            crate::progress::human_bytes(i.upload_rate as u64),
            i.peers,
            printable(&i.item.name),
            i.error
                .map(|e| format!("  ({})", printable(&e)))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub fn pause(ctx: &Ctx, a: IdArgs, resume: bool) -> Result<()> {
    let c = Client::connect(ctx)?;
    let id = c.resolve(&a.id)?;
    let what = if resume { "resume" } else { "pause" };
    c.call(
        reqwest::Method::POST,
        &format!("/api/items/{id}/{what}"),
        None,
    )?;
    if !ctx.quiet {
        outln!("{}d {id}", what);
    }
    Ok(())
}

pub fn remove(ctx: &Ctx, a: RemoveArgs) -> Result<()> {
    let c = Client::connect(ctx)?;
    let id = c.resolve(&a.id)?;
    c.call(
        reqwest::Method::DELETE,
        &format!("/api/items/{id}?delete_data={}", a.delete_data),
        None,
    )?;
    if !ctx.quiet {
        outln!(
            "removed {id}{}",
            if a.delete_data { " and its data" } else { "" }
        );
    }
    Ok(())
}

pub fn limits(ctx: &Ctx, a: LimitsArgs) -> Result<()> {
    let c = Client::connect(ctx)?;
    let v = match (&a.id, a.down.is_some() || a.up.is_some()) {
        (None, false) => c.call(reqwest::Method::GET, "/api/limits", None)?,
        (None, true) => c.call(
            reqwest::Method::PUT,
            "/api/limits",
            Some(json!({"down_kib": a.down, "up_kib": a.up})),
        )?,
        (Some(id), _) => {
            let id = c.resolve(id)?;
            c.call(
                reqwest::Method::PUT,
                &format!("/api/items/{id}/limits"),
                Some(json!({"down_kib": a.down, "up_kib": a.up})),
            )?
        }
    };
    if ctx.json {
        outln!("{v}");
    } else {
        let show = |k: &str| match v[k].as_u64() {
            Some(0) | None => "unlimited".to_string(),
            Some(n) => format!("{n} KiB/s"),
        };
        outln!("down {}, up {}", show("down_kib"), show("up_kib"));
    }
    Ok(())
}

pub fn stop(ctx: &Ctx) -> Result<()> {
    let c = Client::connect(ctx)?;
    c.call(reqwest::Method::POST, "/api/stop", None)?;
    // Wait (bounded) until it has written its checkpoints and unmounted.
    for _ in 0..300 {
        if !info_path(&ctx.data_dir).exists() {
            if !ctx.quiet {
                outln!("daemon stopped");
            }
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("the daemon did not stop within 30 s")
}

pub fn metrics(ctx: &Ctx) -> Result<()> {
    let c = Client::connect(ctx)?;
    let t = c.text("/metrics")?;
    outln!("{}", t.trim_end());
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum AlertsCmd {
    /// Add a rule: NAME METRIC OP THRESHOLD (for example: slow ccbt_download_rate_bytes_per_second
    /// '<' 1000 --for 60), or every rule of a JSON file (--file)
    Add {
        name: Option<String>,
        metric: Option<String>,
        op: Option<String>,
        threshold: Option<f64>,
        /// Seconds the condition must hold before it fires
        #[arg(long = "for", default_value_t = 0)]
        for_secs: u64,
        /// info, warning or critical
        #[arg(long, default_value = "warning")]
        severity: String,
        /// Rules in JSON (one object or a list)
        #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "metric", "op", "threshold"])]
        file: Option<PathBuf>,
    },
    /// Rules and their state (ok, pending, firing)
    List,
    /// Remove a rule
    Remove { name: String },
    /// Evaluate a rule now: the metric's value and whether the condition holds
    Test { name: String },
}

/// Rules from a JSON file: one object or a list.
pub fn rules_from_file(p: &std::path::Path) -> Result<Vec<Value>> {
    let v: Value = serde_json::from_slice(
        &std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
    )
    .with_context(|| format!("{} is not JSON", p.display()))?;
    Ok(match v {
        Value::Array(a) => a,
        o => vec![o],
    })
}

pub fn alerts(ctx: &Ctx, cmd: AlertsCmd) -> Result<()> {
    let c = Client::connect(ctx)?;
    match cmd {
        AlertsCmd::Add {
            name,
            metric,
            op,
            threshold,
            for_secs,
            severity,
            file,
        } => {
            let rules = match file {
                Some(f) => rules_from_file(&f)?,
                None => {
                    let (Some(name), Some(metric), Some(op), Some(threshold)) =
                        (name, metric, op, threshold)
                    else {
                        bail!("give NAME METRIC OP THRESHOLD, or --file RULES.json");
                    };
                    vec![
                        json!({"name": name, "metric": metric, "op": op, "threshold": threshold,
                                "for_secs": for_secs, "severity": severity}),
                    ]
                }
            };
            for r in rules {
                let v = c.call(reqwest::Method::POST, "/api/alerts", Some(r))?;
                if !ctx.quiet {
                    outln!("added alert {}", v["added"].as_str().unwrap_or(""));
                }
            }
        }
        AlertsCmd::List => {
            let v = c.call(reqwest::Method::GET, "/api/alerts", None)?;
            if ctx.json {
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for a in v.as_array().into_iter().flatten() {
                    outln!(
                        "{:<20} {:<8} {} {} {} for {}s  [{}]  now {}",
                        printable(a["name"].as_str().unwrap_or("")),
                        a["state"].as_str().unwrap_or(""),
                        a["metric"].as_str().unwrap_or(""),
                        a["op"].as_str().unwrap_or(""),
                        a["threshold"],
                        a["for_secs"],
                        a["severity"].as_str().unwrap_or(""),
                        a["value"]
                    );
                }
            }
        }
        AlertsCmd::Remove { name } => {
            c.call(
                reqwest::Method::DELETE,
                &format!("/api/alerts/{name}"),
                None,
            )?;
            if !ctx.quiet {
                outln!("removed alert {name}");
            }
        }
        AlertsCmd::Test { name } => {
            let v = c.call(
                reqwest::Method::POST,
                &format!("/api/alerts/{name}/test"),
                None,
            )?;
            if ctx.json {
                outln!("{v}");
            } else {
                outln!(
                    "{}: {} = {} -> {} (state {})",
                    name,
                    v["rule"]["metric"].as_str().unwrap_or(""),
                    v["value"],
                    match v["holds"].as_bool() {
                        Some(true) => "the condition holds",
                        Some(false) => "the condition does not hold",
                        None => "no data",
                    },
                    v["state"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// The running daemon on this data dir, if one answers (a stale `daemon.json` does not count).
pub fn running_daemon(ctx: &Ctx) -> Option<Client> {
    let c = Client::connect(ctx).ok()?;
    c.call(reqwest::Method::GET, "/api/limits", None).ok()?;
    Some(c)
}

/// Adds an item to the daemon (`POST /api/items`); `already` is the error when it holds it.
fn add_item(
    c: &Client,
    body: serde_json::Value,
    already: impl FnOnce() -> String,
) -> Result<String> {
    match c.call(reqwest::Method::POST, "/api/items", Some(body)) {
        Ok(v) => Ok(v["id"].as_str().unwrap_or("").to_string()),
        Err(e) if format!("{e:#}").contains("already added") => bail!("{}", already()),
        Err(e) => Err(e),
    }
}

/// Polls item `id` until its state is `want` (its error if it turns to `error`; `late` after
/// `secs`).
fn wait_for_state(
    c: &Client,
    id: &str,
    want: &str,
    secs: u64,
    failed: &str,
    late: impl FnOnce() -> String,
) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let v = c.call(reqwest::Method::GET, &format!("/api/items/{id}"), None)?;
        if v["state"] == want {
            return Ok(());
        }
        if v["state"] == "error" {
            bail!("{}", v["error"].as_str().unwrap_or(failed));
        }
        if std::time::Instant::now() > deadline {
            bail!("{}", late());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The running daemon, the mount point made absolute and the add request's common part; `None`
/// when no daemon runs.
fn mount_request(
    ctx: &Ctx,
    dir: &std::path::Path,
    peers: &[std::net::SocketAddr],
) -> Result<Option<(Client, std::path::PathBuf, Value)>> {
    let Some(c) = running_daemon(ctx) else {
        return Ok(None);
    };
    let dir = absolute(dir.to_path_buf())?;
    let body = json!({"mount": dir, "peers": peers});
    Ok(Some((c, dir, body)))
}

/// `ccbt mount <share id> DIR` while a daemon runs on this data dir: the daemon mounts it (it
/// holds the store and the listen port) and keeps it mounted after this command ends. Returns
/// false when no daemon runs.
pub fn mount_via_daemon(
    ctx: &Ctx,
    share: &str,
    dir: &std::path::Path,
    peers: &[std::net::SocketAddr],
) -> Result<bool> {
    let Some((c, dir, mut body)) = mount_request(ctx, dir, peers)? else {
        return Ok(false);
    };
    body["source"] = json!(share);
    let id = add_item(&c, body, || {
        format!(
            "the daemon on {} already holds share {share}; `ccbt remove {share}` first, or mount \
             it from another --data-dir",
            ctx.data_dir.display()
        )
    })?;
    wait_for_state(&c, &id, "mounted", 60, "the mount failed", || {
        format!(
            "the daemon did not mount {} within 60 s (see its log)",
            dir.display()
        )
    })?;
    if !ctx.quiet {
        eprintln!(
            "the daemon on {} mounted share {share} on {}; it stays mounted after this command ends (`ccbt remove {}` unmounts it)",
            ctx.data_dir.display(),
            dir.display(),
            &id[..12.min(id.len())]
        );
    }
    Ok(true)
}

/// `ccbt mount <torrent | magnet> DIR` while a daemon runs on this data dir: the daemon adds the
/// torrent with `--mount DIR` (data in the data dir, pieces streamed on demand) and keeps it
/// mounted after this command ends. Returns false when no daemon runs.
pub fn mount_torrent_via_daemon(
    ctx: &Ctx,
    target: &str,
    dir: &std::path::Path,
    peers: &[std::net::SocketAddr],
) -> Result<bool> {
    let Some((c, dir, mut body)) = mount_request(ctx, dir, peers)? else {
        return Ok(false);
    };
    let path = std::path::Path::new(target);
    if path.is_file() {
        body["torrent_hex"] = json!(ccbt_core::encoding::to_hex(&std::fs::read(path)?));
    } else if target.starts_with("magnet:") {
        body["source"] = json!(target);
    } else {
        bail!(
            "a daemon runs on {}: mount a torrent through it by its .torrent file or magnet link, \
             or stop it (`ccbt stop`)",
            ctx.data_dir.display()
        );
    }
    let id = add_item(&c, body, || {
        format!(
            "the daemon on {} already holds this torrent; `ccbt remove` it first, or mount it \
             from another --data-dir",
            ctx.data_dir.display()
        )
    })?;
    // Mounted once the torrent runs (after a magnet's metadata) and the mount point is one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let v = c.call(reqwest::Method::GET, &format!("/api/items/{id}"), None)?;
        if v["state"] == "error" {
            bail!("{}", v["error"].as_str().unwrap_or("the mount failed"));
        }
        if v["state"] != "fetching metadata" && ccbt_node::mount::is_mounted_now(&dir) {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the daemon did not mount {} within 120 s (see its log)",
                dir.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if !ctx.quiet {
        eprintln!(
            "the daemon on {} mounted torrent {id} read-only on {}; reads stream pieces as they \
             arrive, and it stays mounted after this command ends (`ccbt remove {}` unmounts it)",
            ctx.data_dir.display(),
            dir.display(),
            &id[..12.min(id.len())]
        );
    }
    Ok(true)
}

/// `ccbt download` while a daemon runs on this data dir: the daemon takes the torrent (it holds
/// the listen port and keeps seeding), and this command shows progress until it is complete.
/// Returns false when no daemon runs (the caller runs its own session).
pub fn download_via_daemon(ctx: &Ctx, a: &crate::bt_cmds::DownloadArgs) -> Result<bool> {
    let Ok(c) = Client::connect(ctx) else {
        return Ok(false);
    };
    if c.call(reqwest::Method::GET, "/api/limits", None).is_err() {
        return Ok(false); // a stale daemon.json
    }
    if a.sequential || !a.only.is_empty() || !a.skip.is_empty() || a.no_resume || a.no_trackers {
        bail!("a daemon runs on {}: it takes downloads without --sequential, --only, --skip, --no-resume or --no-trackers; stop it (`ccbt stop`) or use another --data-dir", ctx.data_dir.display());
    }
    let mut body = json!({ "peers": a.peers, "out_dir": absolute(a.out.clone())? });
    let path = std::path::Path::new(&a.torrent);
    if path.is_file() {
        body["torrent_hex"] = json!(ccbt_core::encoding::to_hex(&std::fs::read(path)?));
    } else {
        body["source"] = json!(a.torrent);
    }
    let id = match c.call(reqwest::Method::POST, "/api/items", Some(body)) {
        Ok(v) => v["id"].as_str().unwrap_or("").to_string(),
        Err(e) if format!("{e:#}").contains("already added") => {
            let msg = format!("{e:#}");
            msg.split_whitespace().next().unwrap_or("").to_string()
        }
        Err(e) => return Err(e),
    };
    if !ctx.quiet {
        eprintln!(
            "the daemon on {} downloads it ({id}); it keeps seeding after this command ends",
            ctx.data_dir.display()
        );
    }
    loop {
        let v = c.call(reqwest::Method::GET, &format!("/api/items/{id}"), None)?;
        let state = v["state"].as_str().unwrap_or("");
        if state == "seeding" {
            if ctx.json {
                outln!(
                    "{}",
                    json!({"info_hash": id, "complete": true, "pieces_total": v["pieces_total"], "downloaded": v["downloaded"], "via_daemon": true})
                );
            } else if !ctx.quiet {
                outln!("complete: {} pieces", v["pieces_total"]);
            }
            return Ok(true);
        }
        if state == "error" {
            bail!("{}", v["error"].as_str().unwrap_or("the download failed"));
        }
        if !ctx.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!(
                "\r\x1b[2K{} {:5.1}%  down {}/s  peers {}  {}",
                printable(v["name"].as_str().unwrap_or("")),
                v["progress"].as_f64().unwrap_or(0.0) * 100.0,
                crate::progress::human_bytes(v["download_rate"].as_f64().unwrap_or(0.0) as u64),
                v["peers"],
                state
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `ccbt sync SHARE DIR [--follow]` through the daemon on this data dir, if one runs: it syncs
/// the share into DIR (and, with `--follow`, keeps doing so after this command ends); without
/// `--follow` the item is removed (the files stay) once the newest version is written.
pub fn sync_via_daemon(
    ctx: &Ctx,
    share: &str,
    dir: &std::path::Path,
    follow: bool,
    peers: &[std::net::SocketAddr],
    timeout_secs: u64,
) -> Result<bool> {
    let Some(c) = running_daemon(ctx) else {
        return Ok(false);
    };
    let dir = absolute(dir.to_path_buf())?;
    let body = json!({"source": share, "out_dir": dir, "peers": peers});
    let id = add_item(&c, body, || {
        format!(
            "the daemon on {} already holds share {share}; `ccbt remove {share}` first",
            ctx.data_dir.display()
        )
    })?;
    let short = &id[..12.min(id.len())];
    let outcome = wait_for_state(&c, &id, "synced", timeout_secs, "the sync failed", || {
        format!(
            "no version of share {share} was synced within {timeout_secs}s (see the daemon's log)"
        )
    });
    if !follow || outcome.is_err() {
        // One-shot (or failed): the daemon stops holding it; what was written stays.
        let path = format!("/api/items/{id}?delete_data=false");
        c.call(reqwest::Method::DELETE, &path, None)?;
    }
    outcome?;
    if !ctx.quiet {
        if follow {
            eprintln!(
                "the daemon on {} synced share {share} into {} and keeps it in step after this \
                 command ends (`ccbt remove {short}` stops)",
                ctx.data_dir.display(),
                dir.display()
            );
        } else {
            eprintln!(
                "the daemon on {} synced share {share} into {}",
                ctx.data_dir.display(),
                dir.display()
            );
        }
    }
    Ok(true)
}

/// `ccbt seed` while a daemon runs on this data dir. Without a torrent: the daemon already serves
/// every share of the data dir, so say so. With one: the daemon takes it (its data in `dir`,
/// checked), seeds it after this command ends, and this command returns once it seeds.
pub fn seed_via_daemon(ctx: &Ctx, a: &crate::bt_cmds::SeedArgs) -> Result<bool> {
    let Some(c) = running_daemon(ctx) else {
        return Ok(false);
    };
    if a.listen.is_some() || a.up_limit.is_some() || a.no_trackers || !a.trackers.is_empty() {
        bail!(
            "a daemon runs on {}: it seeds with its own listen address, trackers and limits \
             (`ccbt limits`), so --listen, --up-limit, --no-trackers and --tracker do not apply; \
             stop it (`ccbt stop`) or use another --data-dir",
            ctx.data_dir.display()
        );
    }
    let (Some(torrent), Some(dir)) = (&a.torrent, &a.dir) else {
        if a.torrent.is_some() {
            bail!("give the data directory too: ccbt seed FILE.torrent DIR");
        }
        if !ctx.quiet {
            eprintln!(
                "the daemon on {} already serves every share in the data dir",
                ctx.data_dir.display()
            );
        }
        return Ok(true);
    };
    let bytes =
        std::fs::read(torrent).with_context(|| format!("cannot read {}", torrent.display()))?;
    let body = json!({
        "torrent_hex": ccbt_core::encoding::to_hex(&bytes),
        "out_dir": absolute(dir.clone())?,
        "peers": a.peers,
    });
    let id = add_item(&c, body, || {
        format!(
            "the daemon on {} already holds this torrent",
            ctx.data_dir.display()
        )
    })?;
    // The data is checked first; a seed of incomplete data would quietly become a download.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let v = c.call(reqwest::Method::GET, &format!("/api/items/{id}"), None)?;
        match v["state"].as_str().unwrap_or("") {
            "seeding" => break,
            "error" => bail!(
                "{}",
                v["error"].as_str().unwrap_or("the daemon cannot seed it")
            ),
            "downloading" if v["pieces_have"] != v["pieces_total"] && v["pieces_total"] != 0 => {
                eprintln!(
                    "warning: {} holds {} of {} pieces of it: the daemon downloads the rest \
                     (`ccbt remove {}` to stop)",
                    dir.display(),
                    v["pieces_have"],
                    v["pieces_total"],
                    &id[..12.min(id.len())]
                );
                return Ok(true);
            }
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            bail!("the daemon did not finish checking the data within 600 s (see its log)");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if !ctx.quiet {
        eprintln!(
            "the daemon on {} seeds it ({}); it keeps seeding after this command ends \
             (`ccbt remove` stops)",
            ctx.data_dir.display(),
            &id[..12.min(id.len())]
        );
    }
    Ok(true)
}
