//! `ccbt daemon` driven as a user would: `ccbt add` of a torrent (libtorrent seeds it, slowly), a
//! magnet and a share with a mount; `kill -9` of the daemon in the middle; a restart brings all
//! of it back (the downloads finish byte-exact, the mount is there again and reads). The API
//! refuses requests without the token, serves a valid OpenAPI document, and its metrics pass
//! `promtool check metrics` and follow a download.

use ccbt_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Daemon {
    guard: Option<ChildGuard>,
    data: std::path::PathBuf,
    api: String,
    /// The peer listen address.
    listen: String,
}

impl Daemon {
    fn start(root: &Path, data: &Path, api: Option<String>, log: &str) -> Daemon {
        Daemon::start_with(root, data, api, log, &[])
    }

    fn start_with(
        root: &Path,
        data: &Path,
        api: Option<String>,
        log: &str,
        extra: &[&str],
    ) -> Daemon {
        let api = api.unwrap_or_else(|| format!("127.0.0.1:{}", free_port()));
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--data-dir", s(data)];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["daemon", "--api", &api, "--listen", &listen]);
        let g = spawn_ccbt(&args, &root.join(log));
        wait_listening(&api, 30);
        Daemon {
            guard: Some(g),
            data: data.to_path_buf(),
            api,
            listen,
        }
    }

    fn ccbt(&self, args: &[&str]) -> String {
        let mut a = vec!["--data-dir", s(&self.data)];
        a.extend_from_slice(args);
        ccbt_ok(&a)
    }

    fn list(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.ccbt(&["--json", "list"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn item(&self, id: &str) -> Value {
        self.list()
            .into_iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in the daemon's list"))
    }

    fn kill9(&mut self) {
        if let Some(mut g) = self.guard.take() {
            let _ = g.0.kill();
            let _ = g.0.wait();
        }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("api-token"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// (status, body) of an HTTP request to the API, with curl.
fn http(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let o = c.output().expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn umount_lazy(dir: &Path) {
    let _ = Command::new("umount").arg("-l").arg(dir).status();
}

/// A v1 torrent of `files` made in `root/<parent>/<name>`: returns its path (`root/<torrent>`).
fn torrent(
    root: &Path,
    parent: &str,
    name: &str,
    files: &[(&str, usize)],
    torrent: &str,
) -> std::path::PathBuf {
    let data = root.join(parent).join(name);
    make_tree(&data, files);
    let t = root.join(torrent);
    ccbt_ok(&["create", s(&data), "--v1", "-o", s(&t), "-q"]);
    t
}

/// `ccbt seed` of `t` from `root/<parent>` (data dir `root/<dd>`); returns it and its address.
fn ccbt_seed(root: &Path, t: &Path, parent: &str, dd: &str) -> (ChildGuard, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let g = spawn_ccbt(
        &[
            "--data-dir",
            s(&root.join(dd)),
            "seed",
            s(t),
            s(&root.join(parent)),
            "--listen",
            &addr,
            "--no-trackers",
        ],
        &root.join(format!("{dd}.log")),
    );
    wait_listening(&addr, 20);
    (g, addr)
}

#[test]
fn life_cycle_torrent_magnet_and_mounted_share_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A torrent libtorrent seeds at 1 MiB/s (so the daemon is killed mid-download).
    let t = torrent(root, "seed", "data", &[("big.bin", 6_000_007)], "t.torrent");
    let lport = free_port();
    let _lt = spawn_lt_seed_limited(&t, &root.join("seed"), lport, &[], 1 << 20);
    // A second torrent, added as a bare magnet with a peer.
    let t2 = torrent(root, "seed2", "data2", &[("m.bin", 700_001)], "t2.torrent");
    let ih2 = ccbt_json(&["info", s(&t2)])["info_hash_v1"]
        .as_str()
        .unwrap()
        .to_string();
    let (_seed2, s2) = ccbt_seed(root, &t2, "seed2", "sd2");
    // A share served by its owner.
    make_tree(
        &root.join("share"),
        &[("doc.txt", 12_345), ("sub/x.bin", 300_000)],
    );
    let (share, owner, _owner) = publish_and_seed(root, &root.join("share"));

    let data = root.join("dd");
    let mut d = Daemon::start(root, &data, None, "daemon1.log");
    let dl = root.join("dl");
    let mnt = root.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let id1 = d
        .ccbt(&[
            "add",
            s(&t),
            "-o",
            s(&dl),
            "--peer",
            &format!("127.0.0.1:{lport}"),
        ])
        .trim()
        .trim_start_matches("added ")
        .to_string();
    d.ccbt(&[
        "add",
        &format!("magnet:?xt=urn:btih:{ih2}"),
        "-o",
        s(&dl),
        "--peer",
        &s2,
    ]);
    d.ccbt(&["add", &share, "--mount", s(&mnt), "--peer", &owner]);
    // Duplicates and bad input get one clear line.
    let dup = ccbt(&["--data-dir", s(&data), "add", s(&t), "-o", s(&dl)]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already added"));
    wait_until(60.0, "the magnet's download and the mount", || {
        let done = d.item(&ih2)["state"] == "seeding";
        done && std::fs::read(mnt.join("doc.txt")).is_ok()
    });
    assert!(same_file(
        &root.join("seed2/data2/m.bin"),
        &dl.join("data2/m.bin")
    ));
    assert!(same_file(&root.join("share/doc.txt"), &mnt.join("doc.txt")));
    // Mount reads and the store show in the metrics (chunks read are indexed within seconds).
    let value = |m: &str, name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{m}"))
    };
    wait_until(20.0, "mount reads and chunks in the metrics", || {
        let m = d.ccbt(&["metrics"]);
        assert!(
            m.contains("ccbt_mount_read_seconds_bucket{le=\"+Inf\"}"),
            "{m}"
        );
        value(&m, "ccbt_mount_read_seconds_count") >= 1.0 && value(&m, "ccbt_cas_chunks") >= 1.0
    });
    let p = wait_until(60.0, "part of the slow torrent", || {
        let v = d.item(&id1);
        v["pieces_have"].as_u64().unwrap() > 0 && v["progress"].as_f64().unwrap() < 0.9
    });
    eprintln!("slow torrent started after {p:?}: {}", d.item(&id1));
    // Pause and resume through the CLI; the API agrees.
    d.ccbt(&["pause", &id1[..10]]);
    assert_eq!(d.item(&id1)["state"], "paused");
    assert_eq!(d.item(&id1)["paused"], true);
    d.ccbt(&["resume", &id1[..10]]);
    wait_until(10.0, "the torrent running again", || {
        d.item(&id1)["state"] == "downloading"
    });

    // kill -9 in the middle; the mount is left stale.
    d.kill9();
    std::thread::sleep(Duration::from_millis(300));
    let d2 = Daemon::start(root, &data, None, "daemon2.log");
    let log = std::fs::read_to_string(root.join("daemon2.log")).unwrap();
    assert!(log.contains("3 item(s) restored"), "{log}");
    wait_until(90.0, "the slow torrent to finish after the restart", || {
        d2.item(&id1)["state"] == "seeding"
    });
    assert!(same_file(
        &root.join("seed/data/big.bin"),
        &dl.join("data/big.bin")
    ));
    assert_eq!(d2.item(&ih2)["state"], "seeding");
    wait_until(30.0, "the share mounted again", || {
        same_file(&root.join("share/sub/x.bin"), &mnt.join("sub/x.bin"))
    });
    // remove --delete-data deletes the torrent's files only.
    d2.ccbt(&["remove", &ih2, "--delete-data"]);
    assert!(!dl.join("data2/m.bin").exists());
    assert!(dl.join("data/big.bin").exists());
    assert!(d2.list().iter().all(|i| i["id"] != ih2.as_str()));
    // A clean stop unmounts.
    d2.ccbt(&["stop"]);
    wait_until(20.0, "the mount to go", || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .all(|l| !l.contains(s(&mnt)))
    });
    umount_lazy(&mnt);
}

#[test]
fn api_needs_the_token_serves_openapi_and_metrics_that_pass_promtool() {
    require("promtool", "prometheus");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = torrent(root, "seed", "data", &[("a.bin", 4_000_003)], "t.torrent");
    let pieces = ccbt_json(&["info", s(&t)])["pieces"].as_u64();
    let lport = free_port();
    let _lt = spawn_lt_seed_limited(&t, &root.join("seed"), lport, &[], 1 << 20);
    let d = Daemon::start(root, &root.join("dd"), None, "daemon.log");
    let base = format!("http://{}", d.api);
    // The token file is private; requests without it or with a wrong one get 401.
    let mode = std::fs::metadata(d.data.join("api-token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    assert_eq!(http("GET", &format!("{base}/api/items"), None).0, 401);
    assert_eq!(
        http("GET", &format!("{base}/api/items"), Some("wrong")).0,
        401
    );
    assert_eq!(http("POST", &format!("{base}/api/stop"), None).0, 401);
    let tok = d.token();
    assert_eq!(http("GET", &format!("{base}/api/items"), Some(&tok)).0, 200);
    assert_eq!(
        http("DELETE", &format!("{base}/api/items/abc"), Some(&tok)).0,
        404
    );
    // The OpenAPI document.
    let (c, doc) = http("GET", &format!("{base}/api/openapi.json"), None);
    assert_eq!(c, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/items"]["post"].is_object());
    // No CORS.
    let o = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Origin: http://evil.example",
        ])
        .arg(format!("{base}/metrics"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stdout)
        .to_lowercase()
        .contains("access-control-allow-origin"));

    d.ccbt(&[
        "add",
        s(&t),
        "-o",
        s(&root.join("dl")),
        "--peer",
        &format!("127.0.0.1:{lport}"),
    ]);
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    let mut saw_rate = false;
    wait_until(60.0, "the download to finish", || {
        let m = d.ccbt(&["metrics"]);
        saw_rate |= metric(&m, "ccbt_download_rate_bytes_per_second") > 0.0;
        d.list()[0]["state"] == "seeding"
    });
    assert!(saw_rate, "the download rate never showed above zero");
    assert!(same_file(
        &root.join("seed/data/a.bin"),
        &root.join("dl/data/a.bin")
    ));
    let m = d.ccbt(&["metrics"]);
    let total = d.list()[0]["pieces_total"].as_u64().unwrap();
    if let Some(p) = pieces {
        assert_eq!(p, total);
    }
    assert_eq!(metric(&m, "ccbt_pieces_completed") as u64, total);
    for name in [
        "ccbt_upload_rate_bytes_per_second",
        "ccbt_connected_peers",
        "ccbt_disk_queue_depth",
        "ccbt_hash_queue_depth",
    ] {
        metric(&m, name);
    }
    assert!(metric(&m, "ccbt_downloaded_bytes_total") >= 4_000_003.0);
    // Details: the file complete, the trackers (none), peers listed with a client name.
    let id = d.list()[0]["id"].as_str().unwrap().to_string();
    let (c, det) = http("GET", &format!("{base}/api/items/{id}/details"), Some(&tok));
    assert_eq!(c, 200, "{det}");
    let det: Value = serde_json::from_str(&det).unwrap();
    assert_eq!(det["files"][0]["path"], "a.bin", "{det}");
    assert_eq!(det["files"][0]["progress"], 1.0, "{det}");
    assert!(
        det["peers"].is_array() && det["trackers"].is_array(),
        "{det}"
    );
    assert_eq!(
        http("GET", &format!("{base}/api/items/nope/details"), Some(&tok)).0,
        404
    );
    // promtool reads the exposition format from stdin.
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        p.stdin.as_mut().unwrap(),
        http("GET", &format!("{base}/metrics"), None).1.as_bytes(),
    )
    .unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // Server-sent events: the item list as an `items` event.
    let o = Command::new("curl")
        .args(["-s", "-N", "--max-time", "3", "-H"])
        .arg(format!("Authorization: Bearer {tok}"))
        .arg(format!("{base}/api/events"))
        .output()
        .unwrap();
    let ev = String::from_utf8_lossy(&o.stdout);
    assert!(ev.contains("event: items"), "{ev}");
    let data = ev
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("an items event");
    let items: Value = serde_json::from_str(data).unwrap();
    assert_eq!(items[0]["state"], "seeding");
    // Limits through the CLI show in the API.
    d.ccbt(&["limits", "--down", "300"]);
    let (_, l) = http("GET", &format!("{base}/api/limits"), Some(&tok));
    assert_eq!(serde_json::from_str::<Value>(&l).unwrap()["down_kib"], 300);
}

/// Hot reload: `ccbt config set limits.global_down_kib 1024` on the watched config file brings the
/// measured download rate to 1 MiB/s (within 15 %) without a restart; an invalid edit is rejected
/// with one log line and the running values stay.
#[test]
fn config_edits_reload_limits_while_running() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = torrent(
        root,
        "seed",
        "data",
        &[("big.bin", 48_000_000)],
        "t.torrent",
    );
    let lport = free_port();
    let _lt = spawn_lt_seed(&t, &root.join("seed"), lport, &[]);
    let conf = root.join("ccbt.toml");
    std::fs::write(
        &conf,
        "# limits for the test\n[limits]\nglobal_down_kib = 256\n",
    )
    .unwrap();
    let d = Daemon::start_with(
        root,
        &root.join("dd"),
        None,
        "daemon.log",
        &["--config", s(&conf)],
    );
    d.ccbt(&[
        "add",
        s(&t),
        "-o",
        s(&root.join("dl")),
        "--peer",
        &format!("127.0.0.1:{lport}"),
    ]);
    let rate = |secs: f64| -> f64 {
        let got = || d.list()[0]["downloaded"].as_u64().unwrap();
        let (b0, t0) = (got(), std::time::Instant::now());
        std::thread::sleep(Duration::from_secs_f64(secs));
        (got() - b0) as f64 / t0.elapsed().as_secs_f64()
    };
    wait_until(30.0, "the download to start", || {
        d.list()[0]["downloaded"].as_u64().unwrap() > 0
    });
    std::thread::sleep(Duration::from_secs(1));
    let slow = rate(4.0);
    eprintln!("at 256 KiB/s: {:.0} KiB/s", slow / 1024.0);
    assert!(
        slow < 400.0 * 1024.0,
        "the configured limit does not hold: {slow}"
    );
    let out = ccbt_ok(&[
        "--config",
        s(&conf),
        "config",
        "set",
        "limits.global_down_kib",
        "1024",
    ]);
    assert!(out.contains("limits.global_down_kib = 1024"), "{out}");
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("# limits for the test"));
    wait_until(10.0, "the daemon to reload", || {
        std::fs::read_to_string(root.join("daemon.log"))
            .unwrap()
            .contains("config reloaded: limits.global_down_kib")
    });
    std::thread::sleep(Duration::from_secs(1));
    let fast = rate(6.0);
    eprintln!("at 1024 KiB/s: {:.0} KiB/s", fast / 1024.0);
    let mib = 1024.0 * 1024.0;
    assert!(
        (fast - mib).abs() <= 0.15 * mib,
        "measured {:.0} KiB/s after setting 1024",
        fast / 1024.0
    );
    // An invalid edit: rejected, the running values kept.
    std::fs::write(&conf, "[limits]\nglobal_down_kib = \"fast\"\n").unwrap();
    wait_until(10.0, "the rejection in the log", || {
        std::fs::read_to_string(root.join("daemon.log"))
            .unwrap()
            .contains("edit rejected, the running values are kept")
    });
    let l: Value = serde_json::from_str(&d.ccbt(&["--json", "limits"])).unwrap();
    assert_eq!(l["down_kib"], 1024);
    // The log level and the peer limit change too.
    let before = std::fs::read_to_string(root.join("daemon.log"))
        .unwrap()
        .len();
    std::fs::write(
        &conf,
        "[limits]\nglobal_down_kib = 1024\n[observability]\nlog_level = \"debug\"\n[network]\nmax_peers_per_torrent = 7\n",
    )
    .unwrap();
    wait_until(10.0, "the log level and peer limit to reload", || {
        let l = std::fs::read_to_string(root.join("daemon.log")).unwrap();
        l[before..].contains("network.max_peers_per_torrent")
            && l[before..].contains("observability.log_level")
    });
    wait_until(20.0, "debug lines in the log", || {
        std::fs::read_to_string(root.join("daemon.log")).unwrap()[before..].contains("DEBUG")
    });
    // `config get` reads the effective value (here from a valid file again).
    std::fs::write(&conf, "[limits]\nglobal_down_kib = 2048\n").unwrap();
    assert_eq!(
        ccbt_ok(&[
            "--config",
            s(&conf),
            "config",
            "get",
            "limits.global_down_kib"
        ])
        .trim(),
        "2048"
    );
}

/// An alert rule fires once its condition has held for its duration, shows in the API and the
/// log, clears when the condition stops holding, and survives a restart.
#[test]
fn an_alert_fires_and_clears() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = torrent(root, "seed", "data", &[("a.bin", 100_000)], "t.torrent");
    let data = root.join("dd");
    let mut d = Daemon::start(root, &data, None, "daemon.log");
    let rules = root.join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"name": "holding", "metric": "ccbt_torrents", "op": ">", "threshold": 0, "for_secs": 1, "severity": "critical"}]"#,
    )
    .unwrap();
    d.ccbt(&["alerts", "add", "--file", s(&rules)]);
    let bad = ccbt(&["--data-dir", s(&data), "alerts", "add", "x", "up", ">", "1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not one of the daemon's metrics"));
    let state = |d: &Daemon| -> String {
        let v: Value = serde_json::from_str(&d.ccbt(&["--json", "alerts", "list"])).unwrap();
        v[0]["state"].as_str().unwrap().to_string()
    };
    wait_until(10.0, "the rule to be evaluated", || state(&d) == "ok");
    let id = d
        .ccbt(&["add", s(&t), "-o", s(&root.join("dl")), "--paused"])
        .trim()
        .trim_start_matches("added ")
        .to_string();
    wait_until(10.0, "the alert to fire", || state(&d) == "firing");
    let log = || std::fs::read_to_string(root.join("daemon.log")).unwrap();
    assert!(log().contains("alert holding firing (critical): ccbt_torrents = 1 > 0"));
    assert!(d
        .ccbt(&["alerts", "test", "holding"])
        .contains("the condition holds"));
    d.ccbt(&["remove", &id]);
    wait_until(10.0, "the alert to clear", || state(&d) == "ok");
    assert!(log().contains("alert holding resolved"));
    // Rules persist.
    d.kill9();
    let d2 = Daemon::start(root, &data, None, "daemon2.log");
    assert_eq!(state(&d2), "ok");
    d2.ccbt(&["alerts", "remove", "holding"]);
    assert_eq!(d2.ccbt(&["--json", "alerts", "list"]).trim(), "[]");
}

/// The dashboard in tmux: on a data dir with no daemon it starts one and says so; it shows the
/// torrent's name and a progress bar; `p` pauses the selected torrent (the API confirms); `q`
/// quits.
#[test]
fn dashboard_in_tmux_starts_the_daemon_shows_progress_pauses_and_quits() {
    require("tmux", "tmux");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = torrent(
        root,
        "seed",
        "holiday-films",
        &[("a.bin", 8_000_000)],
        "t.torrent",
    );
    let lport = free_port();
    let _lt = spawn_lt_seed_limited(&t, &root.join("seed"), lport, &[], 512 << 10);
    let data = root.join("dd");
    // A tmux server of the test's own, killed at the end.
    let sock = format!("ccbt{}", std::process::id());
    struct Tmux(String);
    impl Drop for Tmux {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", &self.0, "kill-server"])
                .status();
        }
    }
    let _tmux = Tmux(sock.clone());
    // The daemon the dashboard starts is not our child: stop it whatever happens.
    struct StopDaemon(std::path::PathBuf);
    impl Drop for StopDaemon {
        fn drop(&mut self) {
            let _ = ccbt(&["--data-dir", s(&self.0), "stop"]);
        }
    }
    let _stop = StopDaemon(data.clone());
    let tmux = |args: &[&str]| -> String {
        let o = Command::new("tmux")
            .args(["-L", &sock])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let cmd = format!(
        "env CCBT_ENABLE_DHT=false CCBT_DHT_BOOTSTRAP= CCBT_PORT_MAPPING=false {} --data-dir {} dashboard --refresh 0.3",
        s(&ccbt_bin()),
        s(&data)
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "dash",
        "-x",
        "150",
        "-y",
        "45",
        &cmd,
    ]);
    let screen = || tmux(&["capture-pane", "-p", "-t", "dash"]);
    wait_until(30.0, "the dashboard to start a daemon and say so", || {
        screen().contains("started a daemon on")
    });
    let d = Daemon {
        guard: None,
        api: String::new(),
        data: data.clone(),
        listen: String::new(),
    };
    let id = d
        .ccbt(&[
            "add",
            s(&t),
            "-o",
            s(&root.join("dl")),
            "--peer",
            &format!("127.0.0.1:{lport}"),
        ])
        .trim()
        .trim_start_matches("added ")
        .to_string();
    wait_until(30.0, "the name and a progress bar on the screen", || {
        let sc = screen();
        sc.contains("holiday-films") && sc.contains('█')
    });
    eprintln!("{}", screen());
    // Details (Enter): the peer with its client name, the file with its progress.
    tmux(&["send-keys", "-t", "dash", "Enter"]);
    wait_until(20.0, "the details with peers and files", || {
        let sc = screen();
        sc.contains("peers (1):") && sc.contains("libtorrent") && sc.contains("files (1):")
    });
    eprintln!("{}", screen());
    tmux(&["send-keys", "-t", "dash", "Enter"]);
    tmux(&["send-keys", "-t", "dash", "p"]);
    wait_until(10.0, "the API to say paused", || {
        d.item(&id)["paused"] == true
    });
    wait_until(10.0, "the screen to say paused", || {
        screen().contains("paused")
    });
    tmux(&["send-keys", "-t", "dash", "q"]);
    wait_until(10.0, "the dashboard to quit", || {
        !Command::new("tmux")
            .args(["-L", &sock, "has-session", "-t", "dash"])
            .status()
            .unwrap()
            .success()
    });
    // The daemon it started keeps running until told to stop.
    assert_eq!(d.list().len(), 1);
    d.ccbt(&["stop"]);
}

/// schemathesis (installed by `make deps` from PyPI) fuzzes every operation of the API from its
/// OpenAPI document: no 5xx answer, and the daemon still runs afterwards.
#[test]
fn schemathesis_finds_no_server_error_and_the_daemon_survives() {
    let tools = std::env::var("CCBT_TOOLS_DIR")
        .unwrap_or_else(|_| format!("{}/.cache/ccbt-tools", std::env::var("HOME").unwrap()));
    let st = Path::new(&tools).join("schemathesis/bin/schemathesis");
    assert!(
        st.exists(),
        "schemathesis is missing at {}: run `make deps` (scripts/deps.sh installs it)",
        st.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut d = Daemon::start(root, &root.join("dd"), None, "daemon.log");
    let tok = d.token();
    let o = Command::new(&st)
        .args([
            "run",
            &format!("http://{}/api/openapi.json", d.api),
            "-H",
            &format!("Authorization: Bearer {tok}"),
            "--checks",
            "not_a_server_error",
            "-n",
            "30",
            "--seed",
            "1",
            "--request-timeout",
            "20",
            // Stopping the daemon and the endless event stream are not fuzzed.
            "--exclude-path",
            "/api/stop",
            "--exclude-path",
            "/api/events",
        ])
        // Its example database stays in the test's directory: failures of an earlier run
        // must not replay into this one.
        .args(["--generation-database", "none"])
        .current_dir(root)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let summary: String = out.lines().rev().take(25).collect::<Vec<_>>().join("\n");
    assert!(
        o.status.success(),
        "schemathesis found failures:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("passed"), "{summary}");
    eprintln!("{summary}");
    // Still alive and answering.
    assert!(d.guard.as_mut().unwrap().0.try_wait().unwrap().is_none());
    assert_eq!(
        http("GET", &format!("http://{}/api/items", d.api), Some(&tok)).0,
        200
    );
}

/// `[daemon] watch_dir`: a dropped .torrent and .magnet are added (downloading into
/// `download_dir`) and renamed `.added`; a broken one is renamed `.invalid`.
#[test]
fn watch_folder_adds_dropped_torrents_and_magnets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = torrent(root, "seed", "data", &[("a.bin", 300_000)], "t.torrent");
    let (watch, dl) = (root.join("watch"), root.join("downloads"));
    std::fs::create_dir_all(&watch).unwrap();
    // One is there before the daemon starts.
    std::fs::copy(&t, watch.join("early.torrent")).unwrap();
    let conf = root.join("ccbt.toml");
    std::fs::write(
        &conf,
        format!(
            "[daemon]\nwatch_dir = \"{}\"\ndownload_dir = \"{}\"\n",
            s(&watch),
            s(&dl)
        ),
    )
    .unwrap();
    let d = Daemon::start_with(
        root,
        &root.join("dd"),
        None,
        "daemon.log",
        &["--config", s(&conf)],
    );
    wait_until(10.0, "the early torrent to be added", || {
        watch.join("early.torrent.added").exists()
    });
    let ih = ccbt_json(&["info", s(&t)])["info_hash_v1"]
        .as_str()
        .unwrap()
        .to_string();
    let item = d.item(&ih);
    assert_eq!(item["out_dir"], s(&dl));
    std::fs::write(
        watch.join("m.magnet"),
        "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=x\n",
    )
    .unwrap();
    std::fs::write(watch.join("broken.torrent"), b"d4:infoi1ee").unwrap();
    wait_until(10.0, "the magnet and the broken file to be taken", || {
        watch.join("m.magnet.added").exists() && watch.join("broken.torrent.invalid").exists()
    });
    assert_eq!(
        d.item("0123456789abcdef0123456789abcdef01234567")["state"],
        "fetching metadata"
    );
    assert_eq!(d.list().len(), 2);
}

/// `ccbt download` on a data dir whose daemon runs hands the torrent to the daemon (which holds
/// the port and keeps seeding) and returns once it is complete.
#[test]
fn download_while_the_daemon_runs_goes_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = torrent(root, "seed", "data", &[("a.bin", 1_500_001)], "t.torrent");
    let (_seed, sa) = ccbt_seed(root, &t, "seed", "sd");
    let d = Daemon::start(root, &root.join("dd"), None, "daemon.log");
    let out = d.ccbt(&[
        "--json",
        "download",
        s(&t),
        "-o",
        s(&root.join("dl")),
        "--peer",
        &sa,
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["via_daemon"], true, "{out}");
    assert!(same_file(
        &root.join("seed/data/a.bin"),
        &root.join("dl/data/a.bin")
    ));
    assert_eq!(d.list()[0]["state"], "seeding");
}

#[test]
fn mounts_of_shares_and_torrents_go_through_a_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(&root.join("share"), &[("doc.txt", 54_321)]);
    let (share, owner, _owner) = publish_and_seed(root, &root.join("share"));
    let d = Daemon::start(root, &root.join("dd"), None, "daemon.log");
    let mnt = root.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    // `ccbt mount` hands the mount to the daemon and returns; the daemon keeps it.
    let o = ccbt(&[
        "--data-dir",
        s(&d.data),
        "mount",
        &share,
        s(&mnt),
        "--peer",
        &owner,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the daemon on"));
    assert!(same_file(&root.join("share/doc.txt"), &mnt.join("doc.txt")));
    assert_eq!(d.list()[0]["state"], "mounted");
    // `ccbt pin` goes to the daemon; the share's details (what the dashboard's pane shows) carry
    // the pinned bytes and the background fetch's progress.
    d.ccbt(&["pin", &share]);
    let base = format!("http://{}", d.api);
    let tok = d.token();
    let item = d.list()[0]["id"].as_str().unwrap().to_string();
    let mut det = Value::Null;
    wait_until(30.0, "the pinned share's details", || {
        let (c, b) = http(
            "GET",
            &format!("{base}/api/items/{item}/details"),
            Some(&tok),
        );
        det = serde_json::from_str(&b).unwrap_or(Value::Null);
        c == 200
            && det["pinned_bytes"] == 54_321
            && det["local_bytes"] == 54_321
            && det["pin_fetch"]["done"] == true
    });
    assert_eq!(det["total_bytes"], 54_321, "{det}");
    // ... and where it is mounted.
    assert_eq!(det["mount"]["mounted"], true, "{det}");
    assert!(det["versions"].is_array(), "{det}");
    // A torrent mount goes through the daemon too: it streams from a libtorrent seeder (1 MiB/s)
    // and stays mounted after the command ends, until `ccbt remove`.
    let t = torrent(
        root,
        "tseed",
        "tdata",
        &[("v.bin", 4_000_037), ("s.txt", 777)],
        "t.torrent",
    );
    let lport = free_port();
    let _lt = spawn_lt_seed_limited(&t, &root.join("tseed"), lport, &[], 1 << 20);
    let tm = root.join("tm");
    std::fs::create_dir_all(&tm).unwrap();
    let peer = format!("127.0.0.1:{lport}");
    let o = ccbt(&[
        "--data-dir",
        s(&d.data),
        "mount",
        s(&t),
        s(&tm),
        "--peer",
        &peer,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("mounted torrent"),
        "{err}"
    );
    for f in ["s.txt", "v.bin"] {
        assert!(
            same_file(&root.join("tseed/tdata").join(f), &tm.join(f)),
            "{f}"
        );
    }
    let tid = d
        .list()
        .iter()
        .find(|i| i["kind"] == "torrent")
        .expect("the torrent is a daemon item")["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.ccbt(&["remove", &tid]);
    wait_until(20.0, "the torrent's mount to go", || {
        !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(s(&tm))
    });
    // `ccbt mount ID@SEQ` too: the daemon mounts that one version, read-only, beside the live
    // mount, and `ccbt remove ID@SEQ` unmounts it.
    let y = root.join("y");
    std::fs::create_dir_all(&y).unwrap();
    let frozen = format!("{share}@1");
    let o = ccbt(&["--data-dir", s(&d.data), "mount", &frozen, s(&y)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("the daemon on"), "{err}");
    assert!(same_file(&root.join("share/doc.txt"), &y.join("doc.txt")));
    assert!(std::fs::write(y.join("new.txt"), b"x").is_err());
    d.ccbt(&["remove", &frozen]);
    wait_until(20.0, "the old version's mount to go", || {
        !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(s(&y))
    });
    // A bare v2 info-hash cannot be handed to the daemon (it needs the metadata): one line.
    let o = ccbt(&["--data-dir", s(&d.data), "mount", &"ab".repeat(32), s(&y)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("a daemon runs on"),
        "{err}"
    );
    d.ccbt(&["stop"]);
    wait_until(20.0, "the daemon's mount to go", || {
        !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(s(&mnt))
    });
}

/// `ccbt seed` with a daemon running goes through it: the daemon checks the data and seeds the
/// torrent (libtorrent downloads it from the daemon after the command ended); without a torrent
/// it says the daemon already serves the shares; flags it cannot honour are refused in one line.
#[test]
fn seed_while_the_daemon_runs_goes_through_it() {
    require_libtorrent();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = torrent(
        root,
        "data",
        "album",
        &[("a.bin", 3 << 20), ("b.txt", 1234)],
        "t.torrent",
    );
    let d = Daemon::start(root, &root.join("dd"), None, "daemon.log");
    let o = ccbt(&[
        "--data-dir",
        s(&d.data),
        "seed",
        s(&t),
        s(&root.join("data")),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("the daemon on"), "{err}");
    let item = d.list()[0].clone();
    assert_eq!(item["state"], "seeding", "{item}");
    let r = lt_tool(&[
        "leech",
        s(&t),
        s(&root.join("lt")),
        &free_port().to_string(),
        "60",
        &d.listen,
    ]);
    assert_eq!(r["done"], true, "{r}");
    assert!(same_file(
        &root.join("data/album/a.bin"),
        &root.join("lt/album/a.bin")
    ));
    // Share mode: nothing to hand over.
    let o = ccbt(&["--data-dir", s(&d.data), "seed"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already serves every share"));
    let o = ccbt(&[
        "--data-dir",
        s(&d.data),
        "seed",
        s(&t),
        s(&root.join("data")),
        "--up-limit",
        "5",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("do not apply"));
    d.ccbt(&["stop"]);
}

/// `ccbt sync` with a daemon running goes through it: a one-shot sync writes the share and
/// leaves nothing held; `--follow` returns once the first version is written and the daemon
/// keeps the directory in step with the owner's next versions.
#[test]
fn sync_while_the_daemon_runs_goes_through_it_and_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(
        &root.join("share"),
        &[("doc.txt", 54_321), ("sub/b.bin", 200_000)],
    );
    let (share, owner, _owner) = publish_and_seed(root, &root.join("share"));
    let d = Daemon::start(root, &root.join("dd"), None, "daemon.log");
    let sync = |dir: &Path, follow: bool| {
        let mut a = vec![
            "--data-dir",
            s(&d.data),
            "sync",
            &share,
            s(dir),
            "--peer",
            &owner,
        ];
        if follow {
            a.push("--follow");
        }
        let o = ccbt(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("the daemon on"));
    };
    // The synced tree, less sync's own directory (`.ccbt-sync`: the version held, spares).
    let same = |dir: &Path| {
        let o = Command::new("diff")
            .args(["-r", "-x", ".ccbt-sync", s(&root.join("share")), s(dir)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    };
    let once = root.join("once");
    sync(&once, false);
    same(&once);
    assert!(d.list().is_empty(), "{:?}", d.list());
    let kept = root.join("kept");
    sync(&kept, true);
    same(&kept);
    let item = d.list()[0].clone();
    assert_eq!(item["state"], "synced", "{item}");
    // The owner edits and publishes: the daemon writes the new version, with no command running.
    std::fs::write(root.join("share/doc.txt"), "version two\n").unwrap();
    std::fs::remove_file(root.join("share/sub/b.bin")).unwrap();
    publish(&root.join("A"), &root.join("share"));
    wait_until(20.0, "version 2 in the followed directory", || {
        std::fs::read(kept.join("doc.txt")).is_ok_and(|b| b == b"version two\n")
            && !kept.join("sub/b.bin").exists()
    });
    // Removing the item stops the following and keeps the files.
    d.ccbt(&["remove", item["id"].as_str().unwrap()]);
    assert!(d.list().is_empty());
    assert_eq!(
        std::fs::read(kept.join("doc.txt")).unwrap(),
        b"version two\n"
    );
    d.ccbt(&["stop"]);
}

/// Per-tracker state in a torrent's details (and the dashboard's pane): a working opentracker
/// with the seeder it lists, and a dead tracker with its error.
#[test]
fn details_show_each_trackers_last_announce() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tport = free_port();
    let dead = free_port();
    let data = root.join("seed").join("data");
    make_tree(&data, &[("a.bin", 300_000)]);
    let t = root.join("t.torrent");
    let good = format!("http://127.0.0.1:{tport}/announce");
    let bad = format!("http://127.0.0.1:{dead}/announce");
    ccbt_ok(&[
        "create",
        s(&data),
        "--v1",
        "-o",
        s(&t),
        "-q",
        "-t",
        &good,
        "-t",
        &bad,
    ]);
    let ih = ccbt_json(&["info", s(&t)])["info_hash_v1"]
        .as_str()
        .unwrap()
        .to_string();
    let _tr = start_opentracker(&root.join("tracker"), tport, &[ih]);
    let addr = format!("127.0.0.1:{}", free_port());
    let _seed = spawn_ccbt(
        &[
            "--data-dir",
            s(&root.join("sd")),
            "seed",
            s(&t),
            s(&root.join("seed")),
            "--listen",
            &addr,
        ],
        &root.join("seed.log"),
    );
    wait_listening(&addr, 20);
    let d = Daemon::start(root, &root.join("dd"), None, "daemon.log");
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    d.ccbt(&["add", s(&t), "-o", s(&out)]);
    let (base, tok) = (format!("http://{}", d.api), d.token());
    let id = d.list()[0]["id"].as_str().unwrap().to_string();
    let mut det = Value::Null;
    wait_until(60.0, "both trackers' state in the details", || {
        let (_, b) = http("GET", &format!("{base}/api/items/{id}/details"), Some(&tok));
        det = serde_json::from_str(&b).unwrap_or(Value::Null);
        let tr = det["trackers"].as_array().cloned().unwrap_or_default();
        tr.len() == 2
            && tr[0]["status"] == "working"
            && tr[0]["peers"].as_u64().is_some_and(|p| p >= 1)
            && tr[1]["status"] == "error"
    });
    let tr = det["trackers"].as_array().unwrap();
    assert_eq!(tr[0]["url"], good, "{det}");
    assert_eq!(tr[0]["kind"], "tracker");
    assert!(tr[0]["next_announce_secs"].as_u64().is_some(), "{det}");
    assert!(tr[1]["failures"].as_u64().unwrap() >= 1, "{det}");
    assert!(!tr[1]["message"].as_str().unwrap_or("").is_empty(), "{det}");
}
