//! Classic BitTorrent against independent clients on loopback: libtorrent, aria2, Transmission,
//! opentracker (HTTP and UDP); hostile peers and trackers; kill -9 and resume; rate limits.

use ccbt_tests::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FILES: &[(&str, usize)] = &[
    ("movie.bin", 5_000_001),
    ("extras/notes.txt", 777),
    ("extras/deep/clip.bin", 3_333_333),
];

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    src_parent: PathBuf,
    torrent: PathBuf,
    info: Value,
}

/// Data under `root/seed/data` and a torrent of it.
fn fixture(kind: &str, trackers: &[String], files: &[(&str, usize)], piece: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let src_parent = root.join("seed");
    make_tree(&src_parent.join("data"), files);
    let torrent = root.join("t.torrent");
    let mut args = vec![
        "create".to_string(),
        s(&src_parent.join("data")).to_string(),
        format!("--{kind}"),
        "--piece-length".into(),
        piece.into(),
        "-o".into(),
        s(&torrent).to_string(),
        "-q".into(),
    ];
    for t in trackers {
        args.push("-t".into());
        args.push(t.clone());
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ccbt_ok(&a);
    let info = ccbt_json(&["info", s(&torrent)]);
    Fixture {
        _tmp: tmp,
        root,
        src_parent,
        torrent,
        info,
    }
}

impl Fixture {
    fn tracker_hashes(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(h) = self.info["info_hash_v1"].as_str() {
            v.push(h.to_string());
        }
        if let Some(h) = self.info["info_hash_v2"].as_str() {
            v.push(h[..40].to_string());
        }
        v
    }

    fn v1(&self) -> String {
        self.info["info_hash_v1"]
            .as_str()
            .or(self.info["info_hash_v2"].as_str().map(|h| &h[..40]))
            .unwrap()
            .to_string()
    }

    /// True when `dl/data` equals the source.
    fn same_as_source(&self, dl: &Path, files: &[(&str, usize)]) -> bool {
        files.iter().all(|(p, _)| {
            same_file(
                &self.src_parent.join("data").join(p),
                &dl.join("data").join(p),
            )
        })
    }

    /// Starts `ccbt seed` on this fixture's data (data dir `root/<data_dir>`, log `root/seed.log`)
    /// and waits (bounded) until it listens; returns the guard and its address.
    fn ccbt_seed(&self, data_dir: &str, extra: &[&str], wait_secs: u64) -> (ChildGuard, String) {
        self.ccbt_seed_env(data_dir, extra, wait_secs, &[])
    }

    fn ccbt_seed_env(
        &self,
        data_dir: &str,
        extra: &[&str],
        wait_secs: u64,
        env: &[(&str, &str)],
    ) -> (ChildGuard, String) {
        let listen = format!("127.0.0.1:{}", free_port());
        let dd = self.root.join(data_dir);
        let mut args = vec![
            "--data-dir",
            s(&dd),
            "seed",
            s(&self.torrent),
            s(&self.src_parent),
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        let g = spawn_ccbt_env(&args, &self.root.join("seed.log"), env);
        wait_listening(&listen, wait_secs);
        (g, listen)
    }

    fn assert_same(&self, dl: &Path, files: &[(&str, usize)]) {
        for (p, _) in files {
            assert!(
                same_file(
                    &self.src_parent.join("data").join(p),
                    &dl.join("data").join(p)
                ),
                "{p} differs from the source"
            );
        }
    }
}

/// Runs a ccbt download to completion (bounded) and returns its --json summary.
fn ccbt_download(args: &[&str], secs: u64) -> Value {
    ccbt_download_env(args, secs, &[])
}

fn ccbt_download_env(args: &[&str], secs: u64, env: &[(&str, &str)]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let mut child = ccbt_cmd()
        .envs(env.iter().copied())
        .args(&a)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "ccbt {args:?} did not finish in {secs}s: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "ccbt {args:?} failed: {err}");
    let mut v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("no JSON from ccbt: {}", String::from_utf8_lossy(&o.stdout)));
    v["stderr"] = Value::String(err);
    v
}

fn lt_leech(torrent: &Path, save: &Path, peers: &[String], secs: u64) -> Value {
    let port = free_port().to_string();
    let secs = secs.to_string();
    let mut args = vec!["leech", s(torrent), s(save), &port, &secs];
    for p in peers {
        args.push(p);
    }
    lt_tool(&args)
}

#[test]
fn libtorrent_seeder_to_ccbt_over_http_tracker() {
    let tport = free_port();
    let fx = fixture(
        "hybrid",
        &[format!("http://127.0.0.1:{tport}/announce")],
        FILES,
        "64K",
    );
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());
    let _seed = spawn_lt_seed(&fx.torrent, &fx.src_parent, free_port(), &[]);
    let dl = fx.root.join("dl");
    let listen = format!("127.0.0.1:{}", free_port());
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &listen,
        ],
        90,
    );
    assert_eq!(r["complete"], true, "{r}");
    assert!(r["tracker_ok"].as_u64().unwrap() >= 1);
    fx.assert_same(&dl, FILES);
}

#[test]
fn ccbt_seeder_to_libtorrent_over_udp_tracker() {
    let tport = free_port();
    let fx = fixture(
        "v1",
        &[format!("udp://127.0.0.1:{tport}/announce")],
        FILES,
        "32K",
    );
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());
    let (_seed, _) = fx.ccbt_seed("d", &[], 20);
    let dl = fx.root.join("lt");
    let r = lt_leech(&fx.torrent, &dl, &[], 90);
    assert_eq!(r["done"], true, "libtorrent did not finish: {r}");
    fx.assert_same(&dl, FILES);
}

fn aria2_common(port: u16) -> Vec<String> {
    [
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--interface=127.0.0.1",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--bt-stop-timeout=120",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--listen-port={port}")])
    .collect()
}

#[test]
fn aria2_seeds_to_ccbt_and_leeches_from_ccbt() {
    require("aria2c", "aria2");
    let tport = free_port();
    // aria2 1.36 mis-hashes hybrid torrents; v1 is what it speaks.
    let fx = fixture(
        "v1",
        &[format!("http://127.0.0.1:{tport}/announce")],
        FILES,
        "64K",
    );
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());

    // aria2 seeds, ccbt downloads.
    let seeder = ChildGuard(
        Command::new("aria2c")
            .args(aria2_common(free_port()))
            .args([
                "-V",
                "--seed-ratio=0.0",
                &format!("--dir={}", s(&fx.src_parent)),
                s(&fx.torrent),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dl = fx.root.join("dl");
    let listen = format!("127.0.0.1:{}", free_port());
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &listen,
        ],
        120,
    );
    assert_eq!(r["complete"], true);
    fx.assert_same(&dl, FILES);
    drop(seeder);

    // ccbt seeds, aria2 downloads.
    let (_seed, _) = fx.ccbt_seed("d2", &[], 20);
    let adl = fx.root.join("aria");
    let mut child = ChildGuard(
        Command::new("aria2c")
            .args(aria2_common(free_port()))
            .args([
                "--seed-time=0",
                &format!("--dir={}", s(&adl)),
                s(&fx.torrent),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(120.0, "aria2 to finish", || {
        child.0.try_wait().unwrap().is_some()
    });
    fx.assert_same(&adl, FILES);
}

/// transmission-daemon with its own config dir, `encryption` (0 allow, 1 prefer, 2 require) and
/// uTP on or off; returns (guard, peer port, rpc port).
fn transmission(dir: &Path, download: &Path, encryption: u8, utp: bool) -> (ChildGuard, u16, u16) {
    require("transmission-daemon", "transmission-daemon");
    require("transmission-remote", "transmission-cli");
    let (pport, rport) = (free_port(), free_port());
    let cfg = dir.join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::create_dir_all(download).unwrap();
    std::fs::write(
        cfg.join("settings.json"),
        format!(
            r#"{{"bind-address-ipv4": "127.0.0.1", "peer-port": {pport}, "peer-port-random-on-start": false,
 "port-forwarding-enabled": false, "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false,
 "utp-enabled": {utp}, "blocklist-enabled": false, "encryption": {encryption}, "rpc-enabled": true,
 "rpc-bind-address": "127.0.0.1", "rpc-port": {rport}, "rpc-authentication-required": false,
 "rpc-whitelist-enabled": false, "rpc-host-whitelist-enabled": false, "download-dir": "{}",
 "incomplete-dir-enabled": false, "start-added-torrents": true, "ratio-limit-enabled": false,
 "speed-limit-down-enabled": false, "speed-limit-up-enabled": false, "message-level": 2}}"#,
            s(download)
        ),
    )
    .unwrap();
    let g = ChildGuard(
        Command::new("transmission-daemon")
            .args(["-f", "-g", s(&cfg)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rpc = format!("127.0.0.1:{rport}");
    wait_until(20.0, "transmission RPC", || {
        Command::new("transmission-remote")
            .args([&rpc, "-l"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    (g, pport, rport)
}

fn tr_remote(rport: u16, args: &[&str]) -> String {
    let o = Command::new("transmission-remote")
        .arg(format!("127.0.0.1:{rport}"))
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn transmission_seeds_to_ccbt_and_leeches_from_ccbt() {
    transmission_both_ways(1, false);
}

/// MSE/PE: Transmission with `encryption required` talks to ccbt only over RC4.
#[test]
fn transmission_with_encryption_required_both_ways() {
    transmission_both_ways(2, false);
}

/// uTP with Transmission's libutp: ccbt, with TCP off, dials it both ways (Transmission 3.00 has
/// no switch to turn its own TCP off, so this is how its uTP is forced).
#[test]
fn transmission_over_utp_both_ways() {
    transmission_both_ways(1, true);
}

fn transmission_both_ways(encryption: u8, utp: bool) {
    let env: &[(&str, &str)] = if utp {
        &[("CCBT_ENABLE_TCP", "false")]
    } else {
        &[]
    };
    // Transmission 3.00 cannot parse hybrid torrents and ignores 127/8 peers from trackers, so
    // the ccbt side dials it (--peer) and the torrent is v1 with no tracker.
    let fx = fixture("v1", &[], FILES, "64K");

    // ccbt seeds, Transmission downloads.
    let tdl = fx.root.join("trdl");
    let (_t, pport, rport) = transmission(&fx.root.join("tr1"), &tdl, encryption, utp);
    tr_remote(rport, &["-a", s(&fx.torrent)]);
    let (_seed, _) = fx.ccbt_seed_env(
        "d",
        &["--peer", &format!("127.0.0.1:{pport}"), "--no-trackers"],
        20,
        env,
    );
    wait_until(
        120.0,
        "Transmission to finish downloading from ccbt",
        || fx.same_as_source(&tdl, FILES),
    );
    drop(_seed);
    drop(_t);

    // Transmission seeds, ccbt downloads.
    let (_t2, pport2, rport2) = transmission(&fx.root.join("tr2"), &fx.src_parent, encryption, utp);
    tr_remote(rport2, &["-a", s(&fx.torrent)]);
    wait_until(60.0, "Transmission to verify its data", || {
        tr_remote(rport2, &["-l"]).contains("100%")
    });
    let dl = fx.root.join("dl");
    let listen = format!("127.0.0.1:{}", free_port());
    let r = ccbt_download_env(
        &[
            "--data-dir",
            s(&fx.root.join("d2")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &listen,
            "--peer",
            &format!("127.0.0.1:{pport2}"),
            "--no-trackers",
        ],
        120,
        env,
    );
    assert_eq!(r["complete"], true);
    fx.assert_same(&dl, FILES);
}

#[test]
fn swarm_of_libtorrent_ccbt_and_aria2() {
    require("aria2c", "aria2");
    let tport = free_port();
    let files: &[(&str, usize)] = &[("big.bin", 24 << 20), ("small.bin", 100_001)];
    let fx = fixture(
        "v1",
        &[format!("http://127.0.0.1:{tport}/announce")],
        files,
        "64K",
    );
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());
    // A slow seeder (2 MiB/s) makes the leechers trade pieces among themselves.
    let _seed = spawn_lt_seed_limited(&fx.torrent, &fx.src_parent, free_port(), &[], 2 << 20);
    let mut leechers = Vec::new();
    for i in 0..3 {
        let dl = fx.root.join(format!("ccbt{i}"));
        let listen = format!("127.0.0.1:{}", free_port());
        // Each leecher writes and hashes with a different number of disk workers (0 = per core).
        let conf = fx.root.join(format!("ccbt{i}.toml"));
        std::fs::write(&conf, format!("[disk]\nhash_workers = {}\n", [0, 1, 3][i])).unwrap();
        let g = spawn_ccbt(
            &[
                "--json",
                "--config",
                s(&conf),
                "--data-dir",
                s(&fx.root.join(format!("d{i}"))),
                "download",
                s(&fx.torrent),
                "-o",
                s(&dl),
                "--listen",
                &listen,
                "--seed",
            ],
            &fx.root.join(format!("ccbt{i}.log")),
        );
        leechers.push((g, dl));
    }
    let adl = fx.root.join("aria");
    let _aria = ChildGuard(
        Command::new("aria2c")
            .args(aria2_common(free_port()))
            .args([
                "--seed-time=0",
                &format!("--dir={}", s(&adl)),
                s(&fx.torrent),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(180.0, "every leecher to finish", || {
        leechers.iter().all(|(_, dl)| fx.same_as_source(dl, files))
            && fx.same_as_source(&adl, files)
    });
    // Stop the ccbt leechers cleanly and read how much each uploaded.
    let mut uploaded = Vec::new();
    for (i, (g, _)) in leechers.iter_mut().enumerate() {
        let _ = Command::new("kill")
            .args(["-TERM", &g.0.id().to_string()])
            .status();
        wait_until(20.0, "ccbt to stop", || g.0.try_wait().unwrap().is_some());
        let log = std::fs::read_to_string(fx.root.join(format!("ccbt{i}.log"))).unwrap();
        let line = log
            .lines()
            .find(|l| l.starts_with('{'))
            .expect("json summary");
        let v: Value = serde_json::from_str(line).unwrap();
        uploaded.push(v["uploaded"].as_u64().unwrap());
    }
    eprintln!("ccbt leechers uploaded {uploaded:?}");
    assert!(
        uploaded.iter().filter(|&&u| u > 0).count() >= 2,
        "ccbt leechers did not upload to each other: {uploaded:?}"
    );
}

/// A hostile seeder: claims every piece and answers every request with garbage.
fn hostile_seeder(info_hash: [u8; 20], pieces: usize) -> (u16, std::thread::JoinHandle<()>) {
    // Each hostile peer has its own address: bans are by IP.
    let l = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        for conn in l.incoming().take(3) {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
            let mut hs = [0u8; 68];
            if c.read_exact(&mut hs).is_err() {
                continue;
            }
            let mut out = bt_handshake(&info_hash, b"-EV0001-hostilepeer!", false);
            let nbytes = pieces.div_ceil(8);
            out.extend_from_slice(&((1 + nbytes) as u32).to_be_bytes());
            out.push(5);
            let mut bits = vec![0xffu8; nbytes];
            if !pieces.is_multiple_of(8) {
                bits[nbytes - 1] = 0xff << (8 - pieces % 8);
            }
            out.extend_from_slice(&bits);
            out.extend_from_slice(&[0, 0, 0, 1, 1]); // unchoke
            if c.write_all(&out).is_err() {
                continue;
            }
            let mut hdr = [0u8; 4];
            while c.read_exact(&mut hdr).is_ok() {
                let len = u32::from_be_bytes(hdr) as usize;
                let mut body = vec![0u8; len];
                if c.read_exact(&mut body).is_err() {
                    break;
                }
                if len == 13 && body[0] == 6 {
                    let length = u32::from_be_bytes(body[9..13].try_into().unwrap()) as usize;
                    let mut m = ((9 + length) as u32).to_be_bytes().to_vec();
                    m.push(7);
                    m.extend_from_slice(&body[1..9]);
                    m.extend(std::iter::repeat_n(0xEEu8, length));
                    if c.write_all(&m).is_err() {
                        break;
                    }
                }
            }
        }
    });
    (port, h)
}

/// A peer that completes the handshake and then sends a 2 GiB message length.
fn oversized_peer(info_hash: [u8; 20]) -> u16 {
    let l = TcpListener::bind("127.0.0.3:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Some(Ok(mut c)) = l.incoming().next() {
            let mut hs = [0u8; 68];
            let _ = c.read_exact(&mut hs);
            let mut out = bt_handshake(&info_hash, b"-EV0001-oversizedmsg", false);
            out.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
            let _ = c.write_all(&out);
            let mut sink = [0u8; 1024];
            let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
            while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
        }
    });
    port
}

fn hex20(s: &str) -> [u8; 20] {
    let v: Vec<u8> = (0..20)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

#[test]
fn hostile_peers_are_banned_and_the_file_is_exact() {
    let fx = fixture("v1", &[], FILES, "64K");
    let ih = hex20(&fx.v1());
    let pieces = fx.info["piece_count"].as_u64().unwrap() as usize;
    let (hostile, _h) = hostile_seeder(ih, pieces);
    let big = oversized_peer(ih);
    // The honest seeder is slow so the hostile one gets plenty of requests.
    let (_seed, listen) = fx.ccbt_seed("d", &["--no-trackers", "--up-limit", "2048"], 20);
    let dl = fx.root.join("dl");
    // The fake peers speak plaintext only and accept few connections: no encrypted first try.
    let r = ccbt_download_env(
        &[
            "--data-dir",
            s(&fx.root.join("d2")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
            "--peer",
            &format!("127.0.0.2:{hostile}"),
            "--peer",
            &format!("127.0.0.3:{big}"),
            "--peer",
            &listen,
        ],
        120,
        &[("CCBT_ENCRYPTION", "disable")],
    );
    assert_eq!(r["complete"], true);
    fx.assert_same(&dl, FILES);
    assert!(r["hash_failures"].as_u64().unwrap() >= 2, "{r}");
    assert!(
        r["banned_peers"].as_u64().unwrap() >= 2,
        "hostile and oversized peers not banned: {r}"
    );
    let err = r["stderr"].as_str().unwrap();
    assert!(err.contains("corrupt data"), "{err}");
    assert!(
        err.contains("message") && err.contains("limit"),
        "oversized message not reported: {err}"
    );
}

/// An HTTP "tracker" that answers every announce with a truncated, garbled reply.
fn garbage_tracker() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten().take(50) {
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nd8:intervali1800e5:peers12:\x7f\x00");
        }
    });
    port
}

#[test]
fn garbage_tracker_is_reported_and_the_other_tracker_works() {
    let tport = free_port();
    let bad = garbage_tracker();
    let fx = fixture(
        "hybrid",
        &[
            format!("http://127.0.0.1:{bad}/announce"),
            format!("http://127.0.0.1:{tport}/announce"),
        ],
        FILES,
        "64K",
    );
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());
    let _seed = spawn_lt_seed(&fx.torrent, &fx.src_parent, free_port(), &[]);
    let dl = fx.root.join("dl");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        90,
    );
    assert_eq!(r["complete"], true);
    fx.assert_same(&dl, FILES);
    assert!(r["tracker_errors"].as_u64().unwrap() >= 1, "{r}");
    let err = r["stderr"].as_str().unwrap();
    assert!(
        err.contains("malformed") && err.contains("retrying"),
        "{err}"
    );
}

#[test]
fn kill_9_mid_download_then_resume() {
    let files: &[(&str, usize)] = &[("big.bin", 256 << 20)];
    let fx = fixture("v1", &[], files, "256K");
    // 48 MiB/s: the download takes ~5 s, long enough to interrupt.
    let (_seed, listen) = fx.ccbt_seed("seed-d", &["--no-trackers", "--up-limit", "49152"], 60);
    let data = fx.root.join("d");
    let dl = fx.root.join("dl");
    let mut child = spawn_ccbt(
        &[
            "--data-dir",
            s(&data),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
            "--peer",
            &listen,
        ],
        &fx.root.join("dl.log"),
    );
    let ih = fx.v1();
    // Wait until a checkpoint shows real progress, then kill -9.
    wait_until(60.0, "download progress", || {
        let v = ccbt_json(&["--data-dir", s(&data), "checkpoints", "list"]);
        v.as_array()
            .and_then(|a| a.first())
            .map(|c| c["pieces_have"].as_u64().unwrap() > 200)
            .unwrap_or(false)
    });
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // What is on disk and valid now (libtorrent's independent count).
    let check = lt_tool(&["check", s(&fx.torrent), s(&dl)]);
    let valid = check["pieces_have"].as_u64().unwrap();
    let total = check["num_pieces"].as_u64().unwrap();
    assert!(
        valid > 0 && valid < total,
        "kill came too late or too early: {valid}/{total}"
    );
    let list = ccbt_ok(&["--data-dir", s(&data), "checkpoints", "list"]);
    assert!(list.contains(&ih), "{list}");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&data),
            "resume",
            &ih,
            "--peer",
            &listen,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        120,
    );
    assert_eq!(r["complete"], true);
    fx.assert_same(&dl, files);
    // Every piece that was valid on disk was kept: only the rest (in flight at the kill) moved.
    assert_eq!(r["resumed_pieces"].as_u64().unwrap(), valid, "{r}");
    let moved = r["downloaded"].as_u64().unwrap();
    assert!(
        moved <= (total - valid) * 256 * 1024,
        "re-downloaded {moved} bytes for {} missing pieces",
        total - valid
    );
    ccbt_ok(&["--data-dir", s(&data), "checkpoints", "delete", &ih]);
    assert!(!ccbt_ok(&["--data-dir", s(&data), "checkpoints", "list"]).contains(&ih));
}

#[test]
fn download_rate_limit_holds() {
    let files: &[(&str, usize)] = &[("f.bin", 24 << 20)];
    let fx = fixture("v1", &[], files, "256K");
    let (_seed, listen) = fx.ccbt_seed("sd", &["--no-trackers"], 30);
    let dl = fx.root.join("dl");
    let t0 = Instant::now();
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
            "--peer",
            &listen,
            "--down-limit",
            "2048",
        ],
        60,
    );
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(r["complete"], true);
    fx.assert_same(&dl, files);
    let rate = (24u64 << 20) as f64 / secs / (1 << 20) as f64;
    eprintln!("24 MiB in {secs:.2}s = {rate:.3} MiB/s at a 2 MiB/s limit");
    assert!(secs >= 10.0, "{secs}s is too short a measurement");
    assert!(
        (rate - 2.0).abs() <= 0.3,
        "rate {rate:.3} MiB/s is not within 15% of 2 MiB/s"
    );
}

#[test]
fn only_skip_scrape_and_seed_serving_checkpoints() {
    let tport = free_port();
    let fx = fixture(
        "hybrid",
        &[format!("http://127.0.0.1:{tport}/announce")],
        FILES,
        "64K",
    );
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());
    let seed = spawn_lt_seed(&fx.torrent, &fx.src_parent, free_port(), &[]);
    // --only: just the extras.
    let part = fx.root.join("part");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d1")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&part),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--only",
            "extras/*",
        ],
        90,
    );
    assert_eq!(r["complete"], true, "{r}");
    for p in ["extras/notes.txt", "extras/deep/clip.bin"] {
        assert!(
            same_file(
                &fx.src_parent.join("data").join(p),
                &part.join("data").join(p)
            ),
            "{p}"
        );
    }
    assert!(
        r["downloaded"].as_u64().unwrap() < 5_000_001,
        "--only downloaded the skipped movie too: {r}"
    );
    // Scrape: the tracker knows the libtorrent seed.
    let sc = ccbt_json(&["scrape", s(&fx.torrent)]);
    assert!(sc[0]["complete"].as_u64().unwrap() >= 1, "{sc}");
    // A full download, then `ccbt seed` with no torrent serves it from its checkpoint.
    let full = fx.root.join("full");
    let d2 = fx.root.join("d2");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&d2),
            "download",
            s(&fx.torrent),
            "-o",
            s(&full),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        90,
    );
    assert_eq!(r["complete"], true);
    drop(seed);
    let listen = format!("127.0.0.1:{}", free_port());
    let _node = spawn_ccbt(
        &["--data-dir", s(&d2), "seed", "--listen", &listen],
        &fx.root.join("node.log"),
    );
    wait_listening(&listen, 30);
    let lt = fx.root.join("lt");
    let res = lt_leech(&fx.torrent, &lt, std::slice::from_ref(&listen), 90);
    assert_eq!(
        res["done"], true,
        "libtorrent could not fetch from `ccbt seed`: {res}"
    );
    fx.assert_same(&lt, FILES);
}

// ---- magnets (BEP 9 metadata exchange) ----

/// A magnet for the fixture: btih, and btmh when the torrent has a v2 hash.
fn magnet_of(fx: &Fixture, extra: &str) -> String {
    let mut m = String::from("magnet:?");
    let mut xt = Vec::new();
    if let Some(h) = fx.info["info_hash_v1"].as_str() {
        xt.push(format!("xt=urn:btih:{h}"));
    }
    if let Some(h) = fx.info["info_hash_v2"].as_str() {
        xt.push(format!("xt=urn:btmh:1220{h}"));
    }
    m.push_str(&xt.join("&"));
    m.push_str("&dn=data");
    m.push_str(extra);
    m
}

/// `ccbt download WHAT -o DL` with data dir `root/d` and a free loopback listen address.
fn ccbt_get(root: &Path, what: &str, dl: &Path, extra: &[&str], secs: u64) -> Value {
    let listen = format!("127.0.0.1:{}", free_port());
    let dd = root.join("d");
    let mut args = vec![
        "--data-dir",
        s(&dd),
        "download",
        what,
        "-o",
        s(dl),
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    ccbt_download(&args, secs)
}

#[test]
fn magnets_between_ccbt_and_libtorrent_both_ways() {
    let fx = fixture("hybrid", &[], FILES, "64K");
    // libtorrent seeds; ccbt has only the magnet (x.pe names the seeder).
    let lt_port = free_port();
    let _seed = spawn_lt_seed(&fx.torrent, &fx.src_parent, lt_port, &[]);
    let dl = fx.root.join("dl");
    let uri = magnet_of(&fx, &format!("&x.pe=127.0.0.1:{lt_port}"));
    let r = ccbt_get(&fx.root, &uri, &dl, &["--no-trackers"], 90);
    assert_eq!(r["complete"], true, "{r}");
    assert!(
        r["stderr"].as_str().unwrap().contains("got the metadata"),
        "{r}"
    );
    fx.assert_same(&dl, FILES);

    // A ccbt seeder serves the metadata to libtorrent, which knows only the magnet.
    let (_ccbt, addr) = fx.ccbt_seed("seeder", &["--no-trackers"], 30);
    let save = fx.root.join("lt-dl");
    let port = free_port().to_string();
    let uri = magnet_of(&fx, "");
    let r = lt_tool(&["magnet", &uri, s(&save), &port, "90", &addr]);
    assert_eq!(
        r["has_metadata"], true,
        "libtorrent got no metadata from ccbt: {r}"
    );
    assert_eq!(r["done"], true, "{r}");
    fx.assert_same(&save, FILES);
}

#[test]
fn btmh_magnets_hybrid_over_a_tracker_and_v2_only_with_hash_requests() {
    let tport = free_port();
    let announce = format!("http://127.0.0.1:{tport}/announce");
    let fx = fixture("hybrid", std::slice::from_ref(&announce), FILES, "64K");
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());
    let _seed = spawn_lt_seed(&fx.torrent, &fx.src_parent, free_port(), &[]);
    // Only the v2 hash and the tracker: the metadata is checked with SHA-256.
    let v2 = fx.info["info_hash_v2"].as_str().unwrap();
    let enc = announce.replace(':', "%3A").replace('/', "%2F");
    let uri = format!("magnet:?xt=urn:btmh:1220{v2}&tr={enc}");
    let dl = fx.root.join("dl");
    let r = ccbt_get(&fx.root, &uri, &dl, &[], 120);
    assert_eq!(r["complete"], true, "{r}");
    fx.assert_same(&dl, FILES);

    // A v2-only torrent: its piece layers are not in the metadata, so they come over BEP 52 hash
    // requests (checked against each file's pieces root) before the download starts.
    // 550 pieces of 16 KiB: the layer comes in two requests (512 + the truncated rest).
    let files2: &[(&str, usize)] = &[("big.bin", 9_000_000), ("small.txt", 100)];
    let fx2 = fixture("v2", &[], files2, "16K");
    let lt_port = free_port();
    let _seed2 = spawn_lt_seed(&fx2.torrent, &fx2.src_parent, lt_port, &[]);
    let v2 = fx2.info["info_hash_v2"].as_str().unwrap();
    let dl2 = fx2.root.join("dl");
    let uri2 = format!("magnet:?xt=urn:btmh:1220{v2}&x.pe=127.0.0.1:{lt_port}");
    let r = ccbt_get(&fx2.root, &uri2, &dl2, &["--no-trackers"], 120);
    assert_eq!(r["complete"], true, "{r}");
    fx2.assert_same(&dl2, files2);
    // And the other way: libtorrent, knowing only the v2 magnet, gets metadata and piece layers
    // from a ccbt seeder.
    let (_ccbt, addr) = fx2.ccbt_seed("seeder", &["--no-trackers"], 30);
    let save = fx2.root.join("lt-dl");
    let port = free_port().to_string();
    let uri = format!("magnet:?xt=urn:btmh:1220{v2}");
    let r = lt_tool(&["magnet", &uri, s(&save), &port, "60", &addr]);
    assert_eq!(
        r["done"], true,
        "libtorrent could not finish a v2 magnet from ccbt: {r}"
    );
    fx2.assert_same(&save, files2);
}

/// A peer that offers ut_metadata and answers every request with bytes of the right length that
/// do not hash to the info-hash.
fn lying_metadata_peer(info_hash: [u8; 20], size: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.4:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().take(4) {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
            let mut hs = [0u8; 68];
            if c.read_exact(&mut hs).is_err() {
                continue;
            }
            let mut out = bt_handshake(&info_hash, b"-EV0001-lyingmetadat", true);
            let h = format!("d1:md11:ut_metadatai3ee13:metadata_sizei{size}ee");
            out.extend_from_slice(&((2 + h.len()) as u32).to_be_bytes());
            out.extend_from_slice(&[20, 0]);
            out.extend_from_slice(h.as_bytes());
            if c.write_all(&out).is_err() {
                continue;
            }
            let mut hdr = [0u8; 4];
            while c.read_exact(&mut hdr).is_ok() {
                let len = u32::from_be_bytes(hdr) as usize;
                let mut body = vec![0u8; len];
                if c.read_exact(&mut body).is_err() {
                    break;
                }
                // Extended message to our id 3 with a request: answer with junk.
                if len > 2 && body[0] == 20 && body[1] == 3 {
                    let text = String::from_utf8_lossy(&body[2..]).to_string();
                    let piece: usize = text
                        .split("5:piecei")
                        .nth(1)
                        .and_then(|r| r.split('e').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let n = (size - piece * 16384).min(16384);
                    let d = format!("d8:msg_typei1e5:piecei{piece}e10:total_sizei{size}ee");
                    let mut m = ((2 + d.len() + n) as u32).to_be_bytes().to_vec();
                    m.extend_from_slice(&[20, 1]); // their id for ut_metadata: ours was 1
                    m.extend_from_slice(d.as_bytes());
                    m.extend(std::iter::repeat_n(b'x', n));
                    if c.write_all(&m).is_err() {
                        break;
                    }
                }
            }
        }
    });
    port
}

#[test]
fn lying_metadata_peer_is_ignored_and_honest_metadata_wins() {
    let fx = fixture("v1", &[], FILES, "64K");
    let ih = hex20(&fx.v1());
    let info_len = {
        let t = std::fs::read(&fx.torrent).unwrap();
        // The info dictionary runs from after "4:info" to the final "e" of the torrent.
        let at = t.windows(6).position(|w| w == b"4:info").unwrap() + 6;
        t.len() - 1 - at
    };
    let liar = lying_metadata_peer(ih, info_len);
    let lt_port = free_port();
    let _seed = spawn_lt_seed(&fx.torrent, &fx.src_parent, lt_port, &[]);
    let dl = fx.root.join("dl");
    // Only the liar: a clear error, nothing written.
    let out = ccbt(&[
        "--data-dir",
        s(&fx.root.join("d0")),
        "download",
        &fx.v1(),
        "-o",
        s(&fx.root.join("dl0")),
        "--peer",
        &format!("127.0.0.4:{liar}"),
        "--no-trackers",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the info-hash"), "{err}");
    assert!(!fx.root.join("dl0").join("data").exists());
    // The liar and an honest libtorrent: the verified copy wins.
    let (liar, honest) = (format!("127.0.0.4:{liar}"), format!("127.0.0.1:{lt_port}"));
    let r = ccbt_get(
        &fx.root,
        &fx.v1(),
        &dl,
        &["--peer", &liar, "--peer", &honest, "--no-trackers"],
        90,
    );
    assert_eq!(r["complete"], true, "{r}");
    fx.assert_same(&dl, FILES);
}

/// A download onto a disk that fills up stops with a clear error instead of fetching the same
/// pieces forever; the pieces already verified stay valid, and once there is room `ccbt resume`
/// finishes the download byte-exact.
#[test]
fn full_disk_stops_with_a_clear_error_and_resume_finishes() {
    let files: &[(&str, usize)] = &[("big.bin", 24 << 20)];
    let fx = fixture("v1", &[], files, "256K");
    let (_seed, listen) = fx.ccbt_seed("seed-f", &["--no-trackers"], 60);
    let small = fx.root.join("small-disk");
    let _g = mount_tmpfs(&small, "8m");
    let data = fx.root.join("d");
    let mut child = ccbt_cmd()
        .args([
            "--json",
            "--data-dir",
            s(&data),
            "download",
            s(&fx.torrent),
            "-o",
            s(&small),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
            "--peer",
            &listen,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the download onto a full disk did not stop within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a download onto a full disk must fail");
    assert!(
        err.contains("No space left on device") && err.contains("ccbt resume"),
        "unclear error: {err}"
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let have = v["pieces_have"].as_u64().unwrap();
    assert!(have > 0 && have < 96, "{v}");
    // Room again (libtorrent's mmap reads of the file's holes fault on a full tmpfs). The pieces
    // ccbt counted are on disk and valid (libtorrent's own count), and resume finishes.
    assert!(Command::new("mount")
        .args(["-o", "remount,size=64m", s(&small)])
        .status()
        .unwrap()
        .success());
    let check = lt_tool(&["check", s(&fx.torrent), s(&small)]);
    assert!(
        check["pieces_have"].as_u64().unwrap() >= have,
        "{check} vs {v}"
    );
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&data),
            "resume",
            &fx.v1(),
            "--peer",
            &listen,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        120,
    );
    assert_eq!(r["complete"], true, "{r}");
    assert!(r["resumed_pieces"].as_u64().unwrap() >= have, "{r}");
    fx.assert_same(&small, files);
}

#[test]
fn idle_connections_cannot_hold_every_peer_slot() {
    let fx = fixture("v1", &[], FILES, "64K");
    let ih = hex20(&fx.v1());
    let (_seed, listen) = fx.ccbt_seed("d", &["--no-trackers"], 20);
    // 60 connections (more than the 50 slots) that handshake, then only send keep-alives.
    let mut idle = Vec::new();
    for i in 0..60 {
        let Ok(mut c) = std::net::TcpStream::connect(&listen) else {
            continue;
        };
        let id = format!("-ID0001-idle{i:08}");
        if c.write_all(&bt_handshake(&ih, id.as_bytes(), false))
            .is_ok()
        {
            idle.push(c);
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keepalive = {
        let stop = stop.clone();
        let conns: Vec<_> = idle.iter().map(|c| c.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for mut c in &conns {
                    let _ = c.write_all(&[0, 0, 0, 0]);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    // Past the grace a new connection gets before it may be dropped as idle.
    std::thread::sleep(Duration::from_secs(11));
    let dl = fx.root.join("dl");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d2")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
            "--peer",
            &listen,
        ],
        60,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    keepalive.join().unwrap();
    assert_eq!(r["complete"], true, "{r}");
    fx.assert_same(&dl, FILES);
    drop(idle);
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn peers_that_never_read_cannot_grow_a_seeds_memory() {
    let fx = fixture("v1", &[], &[("big.bin", 48 << 20)], "256K");
    let ih = hex20(&fx.v1());
    let (seed, listen) = fx.ccbt_seed("d", &["--no-trackers"], 30);
    let pid = seed.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(pid);
    let pieces = fx.info["piece_count"].as_u64().unwrap() as u32;
    let mut conns = Vec::new();
    for i in 0..20u32 {
        let mut c = std::net::TcpStream::connect(&listen).unwrap();
        // A small receive buffer and no reads: everything queues on the seed's side.
        c.write_all(&bt_handshake(
            &ih,
            format!("-NR0001-noread{i:06}").as_bytes(),
            false,
        ))
        .unwrap();
        let mut m = vec![0, 0, 0, 1, 2]; // interested
        for k in 0..512u32 {
            let piece = (i * 7 + k / 2) % pieces;
            m.extend_from_slice(&13u32.to_be_bytes());
            m.push(6);
            m.extend_from_slice(&piece.to_be_bytes());
            m.extend_from_slice(&((k % 2) * (128 << 10)).to_be_bytes());
            m.extend_from_slice(&(128u32 << 10).to_be_bytes());
        }
        let _ = c.write_all(&m);
        conns.push(c);
    }
    // Unchoke rounds come every few seconds; requests repeat so unchoked peers have some queued.
    let mut peak = before;
    for round in 0..12 {
        std::thread::sleep(Duration::from_secs(1));
        if round % 3 == 2 {
            for (i, c) in conns.iter_mut().enumerate() {
                let mut m = Vec::new();
                for k in 0..256u32 {
                    let piece = (i as u32 * 11 + k) % pieces;
                    m.extend_from_slice(&13u32.to_be_bytes());
                    m.push(6);
                    m.extend_from_slice(&piece.to_be_bytes());
                    m.extend_from_slice(&0u32.to_be_bytes());
                    m.extend_from_slice(&(128u32 << 10).to_be_bytes());
                }
                let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = c.write_all(&m);
            }
        }
        peak = peak.max(rss_kib(pid));
    }
    eprintln!("seed RSS: {before} KiB before, {peak} KiB peak with 20 peers that never read");
    assert!(
        peak < before + 64 * 1024,
        "the seed grew from {before} KiB to {peak} KiB for peers that never read"
    );
    drop(conns);
}

/// A seeder of `data` (one torrent's bytes, pieces of `piece` bytes) that silently drops every
/// `drop_every`-th request (0: none), as a peer overrun past its request queue does.
fn dropping_seeder(
    ip: &str,
    info_hash: [u8; 20],
    data: Arc<Vec<u8>>,
    piece: usize,
    drop_every: usize,
) -> u16 {
    let l = TcpListener::bind(format!("{ip}:0")).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().take(4) {
            let Ok(mut c) = conn else { continue };
            let data = data.clone();
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
                let mut hs = [0u8; 68];
                if c.read_exact(&mut hs).is_err() {
                    return;
                }
                let mut out = bt_handshake(&info_hash, b"-EV0001-droppingpeer", false);
                let pieces = data.len().div_ceil(piece);
                let nbytes = pieces.div_ceil(8);
                out.extend_from_slice(&((1 + nbytes) as u32).to_be_bytes());
                out.push(5);
                let mut bits = vec![0xffu8; nbytes];
                if !pieces.is_multiple_of(8) {
                    bits[nbytes - 1] = 0xff << (8 - pieces % 8);
                }
                out.extend_from_slice(&bits);
                out.extend_from_slice(&[0, 0, 0, 1, 1]); // unchoke
                if c.write_all(&out).is_err() {
                    return;
                }
                let mut n = 0usize;
                let mut hdr = [0u8; 4];
                while c.read_exact(&mut hdr).is_ok() {
                    let len = u32::from_be_bytes(hdr) as usize;
                    let mut body = vec![0u8; len];
                    if c.read_exact(&mut body).is_err() {
                        break;
                    }
                    if len != 13 || body[0] != 6 {
                        continue;
                    }
                    n += 1;
                    if drop_every > 0 && n.is_multiple_of(drop_every) {
                        continue; // silently dropped
                    }
                    let word = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().unwrap());
                    let (index, begin, length) = (word(1) as usize, word(5) as usize, word(9));
                    let off = index * piece + begin;
                    let Some(block) = data.get(off..off + length as usize) else {
                        break;
                    };
                    let mut m = (9 + length).to_be_bytes().to_vec();
                    m.push(7);
                    m.extend_from_slice(&body[1..9]);
                    m.extend_from_slice(block);
                    if c.write_all(&m).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// A peer that silently drops every 100th request (Transmission past its reqq did) costs a
/// few seconds, not a stall: the block is asked again once the peer's own rate says it is late.
/// Measured against the same peer dropping nothing, in the same run.
#[test]
fn a_peer_dropping_every_100th_request_does_not_stall_the_download() {
    const BIG: &[(&str, usize)] = &[("big.bin", 24 << 20)];
    let fx = fixture("v1", &[], BIG, "256K");
    let ih = hex20(&fx.v1());
    let data = Arc::new(std::fs::read(fx.src_parent.join("data/big.bin")).unwrap());
    let mut times = Vec::new();
    for (ip, drop_every) in [("127.0.0.5", 0), ("127.0.0.4", 100)] {
        let port = dropping_seeder(ip, ih, data.clone(), 256 << 10, drop_every);
        let dl = fx.root.join(format!("dl{drop_every}"));
        let t0 = Instant::now();
        let r = ccbt_download(
            &[
                "--data-dir",
                s(&fx.root.join(format!("d{drop_every}"))),
                "download",
                s(&fx.torrent),
                "-o",
                s(&dl),
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--no-trackers",
                "--peer",
                &format!("{ip}:{port}"),
            ],
            120,
        );
        assert_eq!(r["complete"], true);
        fx.assert_same(&dl, BIG);
        times.push(t0.elapsed());
    }
    eprintln!(
        "24 MiB from one peer: honest {:?}, dropping every 100th request {:?}",
        times[0], times[1]
    );
    // Before the fix the dropped blocks waited out a request timeout (10 s here).
    assert!(
        times[1] < times[0] + Duration::from_secs(6),
        "honest {:?}, dropping {:?}",
        times[0],
        times[1]
    );
}

/// A test CA and a server certificate it signed for 127.0.0.1: (ca.pem, server.pem, server.key).
fn test_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    require("openssl", "openssl");
    std::fs::create_dir_all(dir).unwrap();
    let f = |x: &str| dir.join(format!("{name}-{x}"));
    let run = |args: &[&str]| {
        let o = Command::new("openssl").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let [ca_key, ca_pem, srv_key, srv_csr, srv_pem, ext] =
        ["ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem", "ext"].map(|x| s(&f(x)).to_string());
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509", "-days", "2", "-subj", "/CN=ccbt test CA"];
    a.extend(ec);
    a.extend(["-keyout", &ca_key, "-out", &ca_pem]);
    run(&a);
    let mut a = vec!["req", "-subj", "/CN=127.0.0.1"];
    a.extend(ec);
    a.extend(["-keyout", &srv_key, "-out", &srv_csr]);
    run(&a);
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &srv_csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &srv_pem,
        "-extfile",
        &ext,
    ]);
    (f("ca.pem"), f("srv.pem"), f("srv.key"))
}

/// stunnel4 terminating TLS on `accept` for the plain TCP service on `connect`.
fn stunnel(dir: &Path, accept: u16, connect: u16, cert: &Path, key: &Path) -> ChildGuard {
    require("stunnel4", "stunnel4");
    let conf = dir.join("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\noutput = {}\n[tracker]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\ncert = {}\nkey = {}\n",
            s(&dir.join("stunnel.log")),
            s(cert),
            s(key)
        ),
    )
    .unwrap();
    let g = ChildGuard(
        Command::new("stunnel4")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&format!("127.0.0.1:{accept}"), 10);
    g
}

/// An HTTPS tracker (opentracker behind stunnel4, a CA the test makes): a ccbt seeder and a
/// ccbt leecher find each other through it alone; with the wrong CA the error says so in one line.
#[test]
fn https_tracker_with_a_test_ca() {
    let (tport, sport) = (free_port(), free_port());
    let fx = fixture(
        "v1",
        &[format!("https://127.0.0.1:{sport}/announce")],
        FILES,
        "64K",
    );
    let (ca, cert, key) = test_ca(&fx.root.join("pki"), "good");
    let (wrong_ca, _, _) = test_ca(&fx.root.join("pki"), "wrong");
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());
    let _tls = stunnel(&fx.root.join("pki"), sport, tport, &cert, &key);
    // The seeder trusts the test CA too (its only way to the tracker is TLS).
    let listen = format!("127.0.0.1:{}", free_port());
    let dd = fx.root.join("seed-dd");
    let mut seed = ccbt_cmd();
    seed.env("SSL_CERT_FILE", &ca).args([
        "--data-dir",
        s(&dd),
        "seed",
        s(&fx.torrent),
        s(&fx.src_parent),
        "--listen",
        &listen,
    ]);
    let log = std::fs::File::create(fx.root.join("seed.log")).unwrap();
    let _seed = ChildGuard(
        seed.stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_listening(&listen, 20);
    let dl = fx.root.join("dl");
    let r = ccbt_download_env(
        &[
            "--data-dir",
            s(&fx.root.join("d")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        90,
        &[("SSL_CERT_FILE", s(&ca))],
    );
    assert_eq!(r["complete"], true, "{r}");
    assert!(r["tracker_ok"].as_u64().unwrap() >= 1, "{r}");
    fx.assert_same(&dl, FILES);
    // The wrong CA: the tracker is refused with a clear error (the download still completes
    // from the seeder given directly).
    let dl2 = fx.root.join("dl2");
    let r = ccbt_download_env(
        &[
            "--data-dir",
            s(&fx.root.join("d2")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl2),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--peer",
            &listen,
        ],
        90,
        &[("SSL_CERT_FILE", s(&wrong_ca))],
    );
    assert_eq!(r["complete"], true, "{r}");
    assert!(r["tracker_errors"].as_u64().unwrap() >= 1, "{r}");
    let err = r["stderr"].as_str().unwrap();
    let line = err
        .lines()
        .find(|l| l.contains("certificate"))
        .unwrap_or_else(|| panic!("no certificate error: {err}"));
    eprintln!("wrong CA: {line}");
    assert!(line.contains("SSL_CERT_FILE"), "{line}");
}

/// nginx-light on `port` with the given `location` blocks; logs the gzip ratio of each request.
fn nginx(dir: &Path, port: u16, locations: &str) -> ChildGuard {
    require("nginx", "nginx-light");
    std::fs::create_dir_all(dir).unwrap();
    let d = s(dir);
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; user root; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{}}
http {{
  log_format g '$request_uri $status $gzip_ratio';
  access_log {d}/access.log g;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  gzip on; gzip_types text/plain application/octet-stream; gzip_min_length 0;
  server {{ listen 127.0.0.1:{port}; {locations} }}
}}
"
        ),
    )
    .unwrap();
    let g = ChildGuard(
        Command::new("nginx")
            .args(["-c", s(&dir.join("nginx.conf")), "-p", d])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&format!("127.0.0.1:{port}"), 10);
    g
}

/// A tracker behind nginx that redirects the announce, then proxies it with gzip and chunked
/// transfer on a keep-alive connection: ccbt announces through all of it and downloads.
#[test]
fn tracker_behind_a_redirecting_compressing_proxy() {
    let (tport, nport) = (free_port(), free_port());
    let fx = fixture(
        "v1",
        &[format!("http://127.0.0.1:{nport}/redir/announce")],
        FILES,
        "64K",
    );
    let _tr = start_opentracker(&fx.root.join("tracker"), tport, &fx.tracker_hashes());
    let ng = fx.root.join("nginx");
    let _ng = nginx(
        &ng,
        nport,
        &format!(
            "location /redir/ {{ rewrite ^/redir/(.*)$ /tracker/$1 redirect; }}
             location /tracker/ {{ proxy_pass http://127.0.0.1:{tport}/; proxy_http_version 1.1; }}"
        ),
    );
    let (_seed, _) = fx.ccbt_seed("seed-dd", &[], 20);
    let dl = fx.root.join("dl");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d")),
            "download",
            s(&fx.torrent),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        90,
    );
    assert_eq!(r["complete"], true, "{r}");
    assert!(r["tracker_ok"].as_u64().unwrap() >= 1, "{r}");
    fx.assert_same(&dl, FILES);
    let log = std::fs::read_to_string(ng.join("access.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.starts_with("/redir/announce") && l.contains(" 302 ")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with("/tracker/announce")
            && l.contains(" 200 ")
            && !l.ends_with(" -")),
        "the tracker's reply was not gzipped: {log}"
    );
}

/// BEP 19 web seeds served by nginx: with no peer at all the download is byte-exact; a web seed
/// serving corrupt bytes beside one honest (slow) peer is dropped and the download completes.
#[test]
fn web_seeds_alone_and_a_corrupt_one_beside_an_honest_peer() {
    let nport = free_port();
    let base = format!("http://127.0.0.1:{nport}");
    let fx = fixture("v1", &[], FILES, "64K");
    // Two more torrents of the same data, differing only in their url-list.
    let good_t = fx.root.join("good.torrent");
    let bad_t = fx.root.join("bad.torrent");
    for (t, url) in [
        (&good_t, format!("{base}/ws/")),
        (&bad_t, format!("{base}/bad")),
    ] {
        ccbt_ok(&[
            "create",
            s(&fx.src_parent.join("data")),
            "--v1",
            "--piece-length",
            "64K",
            "-w",
            &url,
            "-o",
            s(t),
            "-q",
        ]);
    }
    // The corrupt copy: every byte of the big file flipped past its first MiB.
    let bad = fx.root.join("badroot/data");
    std::fs::create_dir_all(fx.root.join("badroot")).unwrap();
    std::process::Command::new("cp")
        .args([
            "-r",
            s(&fx.src_parent.join("data")),
            s(&fx.root.join("badroot")),
        ])
        .status()
        .unwrap();
    let mut b = std::fs::read(bad.join("movie.bin")).unwrap();
    for x in &mut b[1 << 20..] {
        *x ^= 0x5a;
    }
    std::fs::write(bad.join("movie.bin"), b).unwrap();
    let _ng = nginx(
        &fx.root.join("nginx"),
        nport,
        &format!(
            "location /ws/ {{ alias {}/; }} location /bad/ {{ alias {}/; }}",
            s(&fx.src_parent),
            s(&fx.root.join("badroot"))
        ),
    );
    let dl = fx.root.join("dl");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d")),
            "download",
            s(&good_t),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
        ],
        90,
    );
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["hash_failures"], 0, "{r}");
    fx.assert_same(&dl, FILES);
    // Corrupt web seed + a slow honest peer.
    let listen = format!("127.0.0.1:{}", free_port());
    let _seed = ChildGuard(
        ccbt_cmd()
            .args([
                "--data-dir",
                s(&fx.root.join("sd")),
                "seed",
                s(&bad_t),
                s(&fx.src_parent),
                "--listen",
                &listen,
                "--no-trackers",
                "--up-limit",
                "1024",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&listen, 20);
    let dl2 = fx.root.join("dl2");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d2")),
            "download",
            s(&bad_t),
            "-o",
            s(&dl2),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
            "--peer",
            &listen,
        ],
        120,
    );
    assert_eq!(r["complete"], true, "{r}");
    fx.assert_same(&dl2, FILES);
    assert!(r["hash_failures"].as_u64().unwrap() >= 1, "{r}");
    let err = r["stderr"].as_str().unwrap();
    let line = err
        .lines()
        .find(|l| l.contains("web seed") && l.contains("dropped"))
        .unwrap_or_else(|| panic!("the corrupt web seed was not dropped: {err}"));
    eprintln!("{line}");
}

/// BEP 17 (`httpseeds`): a Hoffman-style seed script (answering 503 "wait 1 s" to the first
/// request of every piece) is the only source; ccbt honours the waits and completes byte-exact.
#[test]
fn bep17_http_seed_alone_with_busy_answers() {
    let fx = fixture("v1", &[], FILES, "64K");
    let port = free_port();
    let t = fx.root.join("hs.torrent");
    ccbt_ok(&[
        "create",
        s(&fx.src_parent.join("data")),
        "--v1",
        "--piece-length",
        "64K",
        "--http-seed",
        &format!("http://127.0.0.1:{port}/seed.php"),
        "-o",
        s(&t),
        "-q",
    ]);
    let info = ccbt_json(&["info", s(&t)]);
    assert_eq!(
        info["http_seeds"][0],
        format!("http://127.0.0.1:{port}/seed.php")
    );
    let files: Vec<(String, u64)> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["length"].as_u64().unwrap(),
            )
        })
        .collect();
    let _srv = ChildGuard(
        std::process::Command::new("/usr/bin/python3")
            .arg(root().join("tests/scripts/bep17_seed.py"))
            .args([
                &port.to_string(),
                info["info_hash_v1"].as_str().unwrap(),
                "65536",
                s(&fx.src_parent.join("data")),
                &serde_json::to_string(&files).unwrap(),
            ])
            .spawn()
            .unwrap(),
    );
    wait_listening(&format!("127.0.0.1:{port}"), 10);
    let dl = fx.root.join("dl");
    let r = ccbt_download(
        &[
            "--data-dir",
            s(&fx.root.join("d")),
            "download",
            s(&t),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
        ],
        90,
    );
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["hash_failures"], 0, "{r}");
    fx.assert_same(&dl, FILES);
    let err = r["stderr"].as_str().unwrap();
    assert!(err.contains("busy (503)"), "the waits were not seen: {err}");
}
