//! `ccbt dashboard` (also `ccbt interactive`): a terminal UI (ratatui) on the daemon's API. It
//! starts a daemon on the data dir when none runs, and says so. Layout, top to bottom: speeds
//! with sparklines and peers; the torrents and shares with progress bars; details of the
//! selected one (Enter); firing alerts and the keys.

use super::client::Client;
use super::ItemView;
use crate::Ctx;
use anyhow::{Context, Result};
use ccbt_core::encoding::printable;
use crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState};
use serde_json::Value;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DashboardArgs {
    /// Seconds between updates
    #[arg(long, default_value_t = 1.0)]
    pub refresh: f64,
    /// Alert rules (JSON, one object or a list) to add to the daemon first
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

/// The running daemon, or one started now (detached, logging to `<data dir>/daemon.log`).
fn daemon_or_start(ctx: &Ctx) -> Result<(Client, Option<String>)> {
    if let Ok(c) = Client::connect(ctx) {
        if c.call(reqwest::Method::GET, "/api/limits", None).is_ok() {
            return Ok((c, None));
        }
    }
    std::fs::create_dir_all(&ctx.data_dir)?;
    let log = ctx.data_dir.join("daemon.log");
    let f = std::fs::File::create(&log)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--data-dir").arg(&ctx.data_dir);
    if let Some(c) = &ctx.config_file {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("daemon")
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f);
    // Its own session: it outlives this terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().context("cannot start the daemon")?;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(c) = Client::connect(ctx) {
            if c.call(reqwest::Method::GET, "/api/limits", None).is_ok() {
                return Ok((
                    c,
                    Some(format!(
                        "started a daemon on {} (log: {})",
                        ctx.data_dir.display(),
                        log.display()
                    )),
                ));
            }
        }
    }
    anyhow::bail!(
        "the daemon did not start within 20 s; see {}",
        log.display()
    )
}

struct App {
    items: Vec<ItemView>,
    alerts: Vec<Value>,
    limits: Value,
    down: VecDeque<u64>,
    up: VecDeque<u64>,
    table: TableState,
    details: bool,
    /// The selected item's peers, files and trackers (or a share's residency), when shown.
    extra: Value,
    help: bool,
    input: Option<String>,
    confirm_remove: bool,
    message: String,
}

fn bar(p: f64, width: usize) -> String {
    let full = ((p.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(full), "░".repeat(width - full))
}

fn rate(b: f64) -> String {
    format!("{}/s", crate::progress::human_bytes(b as u64))
}

impl App {
    fn refresh(&mut self, c: &Client) {
        match c.items() {
            Ok(items) => {
                self.items = items;
                let (d, u): (f64, f64) = self.items.iter().fold((0.0, 0.0), |(d, u), i| {
                    (d + i.download_rate, u + i.upload_rate)
                });
                for (q, v) in [(&mut self.down, d), (&mut self.up, u)] {
                    q.push_back(v as u64);
                    if q.len() > 200 {
                        q.pop_front();
                    }
                }
            }
            Err(e) => self.message = format!("{e:#}"),
        }
        if let Ok(Value::Array(a)) = c.call(reqwest::Method::GET, "/api/alerts", None) {
            self.alerts = a;
        }
        if let Ok(l) = c.call(reqwest::Method::GET, "/api/limits", None) {
            self.limits = l;
        }
        if self.table.selected().is_none() && !self.items.is_empty() {
            self.table.select(Some(0));
        }
        if let Some(s) = self.table.selected() {
            if s >= self.items.len() {
                self.table.select(self.items.len().checked_sub(1));
            }
        }
        self.extra = match (self.details, self.selected()) {
            (true, Some(i)) => c
                .call(
                    reqwest::Method::GET,
                    &format!("/api/items/{}/details", i.item.id),
                    None,
                )
                .unwrap_or(Value::Null),
            _ => Value::Null,
        };
    }

    /// Peers, files and trackers of a torrent; local, total and pinned bytes of a share.
    fn extra_lines(&self) -> Vec<Line<'static>> {
        let h = |v: &Value| crate::progress::human_bytes(v.as_u64().unwrap_or(0));
        let mut l = Vec::new();
        let x = &self.extra;
        if let Some(total) = x["total_bytes"].as_u64() {
            l.push(Line::from(format!(
                "local {} of {}   pinned {}{}",
                h(&x["local_bytes"]),
                crate::progress::human_bytes(total),
                h(&x["pinned_bytes"]),
                match x["pin_fetch"]["done"].as_bool() {
                    Some(false) =>
                        format!("   fetching pinned files ({})", h(&x["pin_fetch"]["bytes"])),
                    _ => String::new(),
                }
            )));
        }
        if let Some(m) = x["mount"]["dir"].as_str() {
            l.push(Line::from(format!(
                "mount {} ({})",
                printable(m),
                if x["mount"]["mounted"] == true {
                    "mounted"
                } else {
                    "not mounted"
                }
            )));
        }
        if let Some(vs) = x["versions"].as_array().filter(|v| !v.is_empty()) {
            let w = x["writers"].as_u64().unwrap_or(0);
            l.push(Line::from(format!(
                "versions held: {}{}",
                vs.iter()
                    .map(|v| format!(
                        "{} ({})",
                        v["seq"],
                        crate::progress::human_bytes(v["size"].as_u64().unwrap_or(0))
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                if w > 0 {
                    format!("   writers: {w} besides the owner")
                } else {
                    String::new()
                }
            )));
        }
        let peers = x["peers"].as_array().cloned().unwrap_or_default();
        if !peers.is_empty() {
            l.push(Line::from(format!("peers ({}):", peers.len())));
        }
        for p in peers.iter().take(6) {
            l.push(Line::from(format!(
                "  {:<22} {:<20} down {:>11} up {:>11} has {:>5.1}%{}",
                p["addr"].as_str().unwrap_or(""),
                printable(p["client"].as_str().unwrap_or("")),
                rate(p["down_rate"].as_f64().unwrap_or(0.0)),
                rate(p["up_rate"].as_f64().unwrap_or(0.0)),
                p["progress"].as_f64().unwrap_or(0.0) * 100.0,
                if p["outgoing"] == true {
                    ""
                } else {
                    "  (incoming)"
                }
            )));
        }
        let files = x["files"].as_array().cloned().unwrap_or_default();
        if !files.is_empty() {
            l.push(Line::from(format!("files ({}):", files.len())));
        }
        for f in files.iter().take(4) {
            l.push(Line::from(format!(
                "  {} {:>5.1}%  {:>10}  {}",
                bar(f["progress"].as_f64().unwrap_or(0.0), 10),
                f["progress"].as_f64().unwrap_or(0.0) * 100.0,
                h(&f["size"]),
                printable(f["path"].as_str().unwrap_or(""))
            )));
        }
        let trackers = x["trackers"].as_array().cloned().unwrap_or_default();
        if !trackers.is_empty() {
            l.push(Line::from("trackers and web seeds:"));
        }
        for t in trackers.iter().take(6) {
            let n = |k: &str| t[k].as_u64().map_or("-".to_string(), |v| v.to_string());
            l.push(Line::from(format!(
                "  {:<40} {:<13} peers {:>4} seeds {:>4} leech {:>4}  next {:>5}  {}",
                printable(t["url"].as_str().unwrap_or("")),
                t["status"].as_str().unwrap_or(""),
                n("peers"),
                n("seeders"),
                n("leechers"),
                t["next_announce_secs"]
                    .as_u64()
                    .map_or("-".to_string(), |s| format!("{s}s")),
                printable(t["message"].as_str().unwrap_or("")),
            )));
        }
        l
    }

    fn selected(&self) -> Option<&ItemView> {
        self.table.selected().and_then(|i| self.items.get(i))
    }

    fn act(&mut self, c: &Client, what: &str) {
        let Some(i) = self.selected() else { return };
        let id = i.item.id.clone();
        let r = match what {
            "remove" => c.call(reqwest::Method::DELETE, &format!("/api/items/{id}"), None),
            w => c.call(reqwest::Method::POST, &format!("/api/items/{id}/{w}"), None),
        };
        self.message = match r {
            Ok(_) => format!("{what}: {}", &id[..12.min(id.len())]),
            Err(e) => format!("{e:#}"),
        };
        self.refresh(c);
    }

    fn add(&mut self, c: &Client, target: &str) {
        let mut body = serde_json::json!({});
        let p = std::path::Path::new(target);
        if p.is_file() {
            match std::fs::read(p) {
                Ok(b) => body["torrent_hex"] = ccbt_core::encoding::to_hex(&b).into(),
                Err(e) => {
                    self.message = format!("cannot read {target}: {e}");
                    return;
                }
            }
        } else {
            body["source"] = target.into();
        }
        if ccbt_xet::head::parse_share_id(target).is_none() || p.is_file() {
            body["out_dir"] = std::env::current_dir()
                .unwrap_or_default()
                .display()
                .to_string()
                .into();
        }
        self.message = match c.call(reqwest::Method::POST, "/api/items", Some(body)) {
            Ok(v) => format!("added {}", v["id"].as_str().unwrap_or("")),
            Err(e) => format!("{e:#}"),
        };
        self.refresh(c);
    }

    fn draw(&mut self, f: &mut ratatui::Frame, started: &Option<String>) {
        let area = f.area();
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(6),
                Constraint::Min(5),
                Constraint::Length(if self.details { 20 } else { 0 }),
                Constraint::Length(3),
            ])
            .split(area);
        // Overview.
        let (d, u) = (
            self.down.back().copied().unwrap_or(0),
            self.up.back().copied().unwrap_or(0),
        );
        let peers: usize = self.items.iter().map(|i| i.peers).sum();
        let lim = |k: &str| match self.limits[k].as_u64() {
            Some(0) | None => "unlimited".to_string(),
            Some(n) => format!("{n} KiB/s"),
        };
        let top = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
            .split(rows[0]);
        let dv: Vec<u64> = self.down.iter().copied().collect();
        let uv: Vec<u64> = self.up.iter().copied().collect();
        f.render_widget(
            Sparkline::default()
                .block(Block::default().borders(Borders::ALL).title(format!(
                    " down {} (limit {}) · peers {peers} ",
                    rate(d as f64),
                    lim("down_kib")
                )))
                .data(&dv[dv.len().saturating_sub(top[0].width as usize)..]),
            top[0],
        );
        f.render_widget(
            Sparkline::default()
                .block(Block::default().borders(Borders::ALL).title(format!(
                    " up {} (limit {}) ",
                    rate(u as f64),
                    lim("up_kib")
                )))
                .data(&uv[uv.len().saturating_sub(top[1].width as usize)..]),
            top[1],
        );
        // Items.
        let body: Vec<Row> = self
            .items
            .iter()
            .map(|i| {
                Row::new(vec![
                    Cell::from(
                        printable(if i.item.name.is_empty() {
                            &i.item.id
                        } else {
                            &i.item.name
                        })
                        .into_owned(),
                    ),
                    Cell::from(format!("{:?}", i.item.kind).to_lowercase()),
                    Cell::from(format!(
                        "{} {:5.1}%",
                        bar(i.progress, 20),
                        i.progress * 100.0
                    )),
                    Cell::from(i.state.clone()),
                    Cell::from(rate(i.download_rate)),
                    Cell::from(rate(i.upload_rate)),
                    Cell::from(i.peers.to_string()),
                ])
            })
            .collect();
        let table = Table::new(
            body,
            [
                Constraint::Min(20),
                Constraint::Length(8),
                Constraint::Length(28),
                Constraint::Length(18),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(6),
            ],
        )
        .header(
            Row::new(["name", "kind", "progress", "state", "down", "up", "peers"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(Block::default().borders(Borders::ALL).title(format!(
            " ccbt · {} item(s){} ",
            self.items.len(),
            started.as_ref().map(|s| format!(" · {s}")).unwrap_or_default()
        )));
        f.render_stateful_widget(table, rows[1], &mut self.table);
        // Details.
        if self.details {
            let text: Vec<Line> = match self.selected() {
                None => vec![Line::from("nothing selected")],
                Some(i) => {
                    let mut l = vec![
                        Line::from(format!(
                            "id {}   {:?}   added {}",
                            i.item.id, i.item.kind, i.item.added
                        )),
                        Line::from(format!("source {}", printable(&i.item.source))),
                        Line::from(format!(
                            "pieces {}/{}   size {}   downloaded {}   uploaded {}",
                            i.pieces_have,
                            i.pieces_total,
                            crate::progress::human_bytes(i.size),
                            crate::progress::human_bytes(i.downloaded),
                            crate::progress::human_bytes(i.uploaded)
                        )),
                    ];
                    if let Some(o) = &i.item.out_dir {
                        l.push(Line::from(format!("files in {}", o.display())));
                    }
                    if let Some(m) = &i.item.mount {
                        l.push(Line::from(format!("mounted on {}", m.display())));
                    }
                    if let Some(v) = i.version {
                        l.push(Line::from(format!("share version {v}")));
                    }
                    l.push(Line::from(format!(
                        "limits down {} up {} KiB/s (0 = unlimited)   extra peers {:?}",
                        i.item.down_kib, i.item.up_kib, i.item.extra_peers
                    )));
                    if let Some(e) = &i.error {
                        l.push(Line::from(Span::styled(
                            format!("error: {}", printable(e)),
                            Style::default().add_modifier(Modifier::BOLD),
                        )));
                    }
                    l.extend(self.extra_lines());
                    l
                }
            };
            f.render_widget(
                Paragraph::new(text)
                    .block(Block::default().borders(Borders::ALL).title(" details ")),
                rows[2],
            );
        }
        // Alerts and keys.
        let firing: Vec<String> = self
            .alerts
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                format!(
                    "{} ({})",
                    a["name"].as_str().unwrap_or(""),
                    a["severity"].as_str().unwrap_or("")
                )
            })
            .collect();
        let status = if let Some(inp) = &self.input {
            format!("add (torrent file, magnet or share id), Enter to add, Esc to cancel: {inp}")
        } else if self.confirm_remove {
            "remove the selected item? y / n".to_string()
        } else if !firing.is_empty() {
            format!("ALERTS firing: {}   {}", firing.join(", "), self.message)
        } else {
            format!("no alerts firing   {}", printable(&self.message))
        };
        f.render_widget(
            Paragraph::new(vec![
                Line::from(status),
                Line::from("q quit  p pause  r resume  Space pause/resume  ↑/↓ select  Enter details  D remove  a add  H help"),
            ])
            .block(Block::default().borders(Borders::TOP)),
            rows[3],
        );
        if self.help {
            let w = 60.min(area.width);
            let h = 14.min(area.height);
            let r = ratatui::layout::Rect::new((area.width - w) / 2, (area.height - h) / 2, w, h);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(vec![
                    Line::from("q         quit (the daemon keeps running)"),
                    Line::from("↑ / ↓     select"),
                    Line::from("Enter     details of the selected item"),
                    Line::from("p / r     pause / resume it"),
                    Line::from("Space     pause or resume it"),
                    Line::from("D         remove it (files are kept)"),
                    Line::from("a         add a torrent file, magnet or share id"),
                    Line::from("H         this help"),
                    Line::from(""),
                    Line::from("`ccbt stop` stops the daemon."),
                ])
                .block(Block::default().borders(Borders::ALL).title(" help ")),
                r,
            );
        }
    }
}

pub fn run(ctx: &Ctx, a: DashboardArgs) -> Result<()> {
    let (c, started) = daemon_or_start(ctx)?;
    if let Some(s) = &started {
        eprintln!("{s}");
    }
    if let Some(f) = &a.rules {
        for r in super::client::rules_from_file(f)? {
            c.call(reqwest::Method::POST, "/api/alerts", Some(r))?;
        }
    }
    let refresh = Duration::from_secs_f64(a.refresh.clamp(0.1, 60.0));
    let mut term = ratatui::init();
    let mut app = App {
        items: Vec::new(),
        alerts: Vec::new(),
        limits: Value::Null,
        down: VecDeque::new(),
        up: VecDeque::new(),
        table: TableState::default(),
        details: false,
        extra: Value::Null,
        help: false,
        input: None,
        confirm_remove: false,
        message: String::new(),
    };
    app.refresh(&c);
    let mut last = Instant::now();
    let r = (|| -> Result<()> {
        loop {
            term.draw(|f| app.draw(f, &started))?;
            let wait = refresh.saturating_sub(last.elapsed());
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()? {
                    if k.kind != KeyEventKind::Press {
                        continue;
                    }
                    if let Some(inp) = &mut app.input {
                        match k.code {
                            KeyCode::Esc => app.input = None,
                            KeyCode::Enter => {
                                let t = inp.trim().to_string();
                                app.input = None;
                                if !t.is_empty() {
                                    app.add(&c, &t);
                                }
                            }
                            KeyCode::Backspace => {
                                inp.pop();
                            }
                            KeyCode::Char(ch) => inp.push(ch),
                            _ => {}
                        }
                        continue;
                    }
                    if app.confirm_remove {
                        app.confirm_remove = false;
                        if k.code == KeyCode::Char('y') {
                            app.act(&c, "remove");
                        }
                        continue;
                    }
                    match k.code {
                        KeyCode::Char('q') | KeyCode::Esc if !app.help => return Ok(()),
                        KeyCode::Char('q')
                        | KeyCode::Esc
                        | KeyCode::Char('H')
                        | KeyCode::Char('h')
                            if app.help =>
                        {
                            app.help = false
                        }
                        KeyCode::Char('H') | KeyCode::Char('h') => app.help = true,
                        KeyCode::Char('p') => app.act(&c, "pause"),
                        KeyCode::Char('r') => app.act(&c, "resume"),
                        KeyCode::Char(' ') => {
                            let paused = app.selected().is_some_and(|i| i.item.paused);
                            app.act(&c, if paused { "resume" } else { "pause" });
                        }
                        KeyCode::Char('D') => app.confirm_remove = app.selected().is_some(),
                        KeyCode::Char('a') => app.input = Some(String::new()),
                        KeyCode::Enter => {
                            app.details = !app.details;
                            app.refresh(&c);
                        }
                        KeyCode::Down => {
                            let n = app.items.len();
                            if n > 0 {
                                app.table.select(Some(
                                    app.table.selected().map_or(0, |s| (s + 1).min(n - 1)),
                                ));
                            }
                        }
                        KeyCode::Up => {
                            app.table.select(Some(
                                app.table.selected().map_or(0, |s| s.saturating_sub(1)),
                            ));
                        }
                        _ => {}
                    }
                }
            }
            if last.elapsed() >= refresh {
                app.refresh(&c);
                last = Instant::now();
            }
        }
    })();
    ratatui::restore();
    r
}
