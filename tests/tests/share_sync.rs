//! Shares over the network: three or more nodes on loopback, each with its own data dir, opentracker
//! as tracker; pushes, convergence, cross-share dedup, hostile peers, kill -9 of a follower.

use ccbt_tests::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// JSON event lines a `ccbt --json sync` wrote to its log.
fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn event_for(log: &Path, seq: u64) -> Option<Value> {
    events(log).into_iter().find(|e| e["seq"] == seq)
}

fn trees_equal(a: &Path, b: &Path) -> bool {
    std::process::Command::new("diff")
        .args(["-r", "-x", ".ccbt-sync", s(a), s(b)])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct Net {
    tmp: tempfile::TempDir,
    tracker: String,
    _tr: ChildGuard,
}

/// Publishes `src` on node A (data dir `A`), starts the tracker whitelisting the share, and A's node.
fn setup(files: &[(&str, usize)]) -> (Net, PathBuf, String, String, ChildGuard) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, files);
    let id = ccbt_ok(&[
        "-q",
        "--data-dir",
        s(&tmp.path().join("A")),
        "publish",
        s(&src),
    ])
    .trim()
    .to_string();
    let tport = free_port();
    let tr = start_opentracker(
        &tmp.path().join("tracker"),
        tport,
        std::slice::from_ref(&id),
    );
    let tracker = format!("http://127.0.0.1:{tport}/announce");
    let alisten = format!("127.0.0.1:{}", free_port());
    let a = spawn_ccbt(
        &[
            "--data-dir",
            s(&tmp.path().join("A")),
            "seed",
            "--listen",
            &alisten,
            "--tracker",
            &tracker,
        ],
        &tmp.path().join("A.log"),
    );
    wait_listening(&alisten, 20);
    (
        Net {
            tmp,
            tracker,
            _tr: tr,
        },
        src,
        id,
        alisten,
        a,
    )
}

fn follower(net: &Net, name: &str, id: &str, extra: &[&str]) -> (ChildGuard, PathBuf, PathBuf) {
    let dir = net.tmp.path().join(format!("copy{name}"));
    let log = net.tmp.path().join(format!("{name}.log"));
    let listen = format!("127.0.0.1:{}", free_port());
    let data = net.tmp.path().join(name);
    let mut args = vec![
        "--json",
        "--data-dir",
        s(&data),
        "sync",
        id,
        s(&dir),
        "--follow",
        "--listen",
        &listen,
        "--tracker",
        &net.tracker,
    ];
    args.extend_from_slice(extra);
    let g = spawn_ccbt(&args, &log);
    (g, dir, log)
}

#[test]
fn three_nodes_sync_push_and_converge() {
    let (net, src, id, alisten, _a) = setup(&[
        ("big.bin", 256 << 20),
        ("docs/readme.txt", 3000),
        ("docs/b.bin", 5 << 20),
    ]);
    let (_b, bdir, blog) = follower(&net, "B", &id, &["--peer", &alisten]);
    wait_until(120.0, "B's first sync", || event_for(&blog, 1).is_some());
    assert!(trees_equal(&src, &bdir), "B's copy differs");
    // C keeps no spare copies (config file), so B and C cover both ways of patching big.bin.
    let cconf = net.tmp.path().join("c.toml");
    std::fs::write(&cconf, "[xet]\nsync_spare_mib = 0\n").unwrap();
    let (_c, cdir, clog) = follower(&net, "C", &id, &["--config", s(&cconf)]);
    wait_until(120.0, "C's first sync", || event_for(&clog, 1).is_some());
    assert!(trees_equal(&src, &cdir), "C's copy differs");
    let ev = event_for(&clog, 1).unwrap();
    let from = ev["fetched_from"].as_object().unwrap();
    let sources = from.values().filter(|v| v.as_u64().unwrap() > 0).count();
    assert!(
        sources >= 2,
        "C fetched from {from:?}, not from both A and B"
    );

    // B's spare copy of big.bin is made in the background after its first sync.
    let spare = bdir.join(".ccbt-sync/spare");
    wait_until(60.0, "B's spare copy of big.bin", || {
        std::fs::read_dir(&spare).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".ok"))
        })
    });
    assert!(!cdir.join(".ccbt-sync/spare").exists());

    // A overwrites 1 KiB in the middle of the big file and republishes through its node.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join("big.bin"))
            .unwrap();
        f.write_all_at(&[0x5a; 1024], 128 << 20).unwrap();
    }
    let r = ccbt_json(&[
        "--data-dir",
        s(&net.tmp.path().join("A")),
        "publish",
        s(&src),
    ]);
    assert_eq!(
        r["via_node"], true,
        "publish did not go through the running node: {r}"
    );
    assert_eq!(r["version"], 2);
    let t0 = Instant::now();
    wait_until(10.0, "B and C to apply version 2", || {
        event_for(&blog, 2).is_some() && event_for(&clog, 2).is_some()
    });
    let converged = t0.elapsed();
    eprintln!(
        "B and C converged {:.3}s after the republish",
        converged.as_secs_f64()
    );
    assert!(converged < Duration::from_secs(2), "took {converged:?}");
    for (dir, log) in [(&bdir, &blog), (&cdir, &clog)] {
        assert!(trees_equal(&src, dir));
        let e = event_for(log, 2).unwrap();
        eprintln!("version 2 at follower: {e}");
        assert!(e["fetched_chunks"].as_u64().unwrap() <= 4, "{e}");
        assert!(e["wire_in"].as_u64().unwrap() < 256 * 1024, "{e}");
    }
    assert_eq!(event_for(&blog, 2).unwrap()["spares_used"], 1);
    assert_eq!(event_for(&clog, 2).unwrap()["spares_used"], 0);
    // Status shows the counters.
    let st = ccbt_json(&["--data-dir", s(&net.tmp.path().join("A")), "status"]);
    assert!(
        st["shares"][0]["served_bytes"].as_u64().unwrap() > 0,
        "{st}"
    );
}

#[test]
fn cross_share_dedup_fetches_nothing_twice() {
    let (net, src, id_x, alisten, _a) = setup(&[("shared-large.bin", 40 << 20)]);
    let (mut b, _bdir, blog) = follower(&net, "B", &id_x, &["--peer", &alisten]);
    wait_until(60.0, "B to sync X", || event_for(&blog, 1).is_some());
    drop(b.0.kill());
    let _ = b.0.wait();
    // Share Y: the same large file plus a small one.
    let y = net.tmp.path().join("y");
    std::fs::create_dir_all(&y).unwrap();
    std::fs::copy(src.join("shared-large.bin"), y.join("same.bin")).unwrap();
    std::fs::write(y.join("new.txt"), b"only in Y").unwrap();
    let id_y = ccbt_json(&["--data-dir", s(&net.tmp.path().join("A")), "publish", s(&y)])["share"]
        .as_str()
        .unwrap()
        .to_string();
    let out = net.tmp.path().join("copyY");
    let o = ccbt_cmd()
        .args([
            "--json",
            "--data-dir",
            s(&net.tmp.path().join("B")),
            "sync",
            &id_y,
            s(&out),
            "--peer",
            &alisten,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    eprintln!("{e}");
    assert!(trees_equal(&y, &out));
    // Only the listing and the small file: no chunk of the large file moved.
    assert!(e["fetched_bytes"].as_u64().unwrap() < 16 * 1024, "{e}");
    assert!(e["dedup_chunks"].as_u64().unwrap() >= 600, "{e}");
}

/// A scripted hostile ccbt_xet peer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Evil {
    WrongBytes,
    ForeignHead,
    ForgedSeq,
    ReplayOldHead,
    Oversized,
    Truncated,
}

fn benc_bytes(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v
}

fn ext_msg(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = ((2 + payload.len()) as u32).to_be_bytes().to_vec();
    m.push(20);
    m.push(id);
    m.extend_from_slice(payload);
    m
}

/// Listens on its own address `127.0.0.<last>` (bans are by IP) and returns it.
fn hostile_xet_peer(share: [u8; 20], kind: Evil, old_head: Vec<u8>, last: u8) -> String {
    let l = TcpListener::bind(format!("127.0.0.{last}:0")).unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().take(4) {
            let Ok(mut c) = c else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
            let mut hs = [0u8; 68];
            if c.read_exact(&mut hs).is_err() {
                continue;
            }
            // A distinct peer id per hostile peer (ccbt keeps one connection per peer id).
            let mut out = bt_handshake(&share, format!("-EV0001-evil{:08}", port).as_bytes(), true);
            out.extend_from_slice(&ext_msg(0, b"d1:md8:ccbt_xeti1eee"));
            let _ = c.write_all(&out);
            let mut their_id = 0u8;
            let mut hdr = [0u8; 4];
            while c.read_exact(&mut hdr).is_ok() {
                let len = u32::from_be_bytes(hdr) as usize;
                let mut body = vec![0u8; len];
                if c.read_exact(&mut body).is_err() {
                    break;
                }
                if body.len() < 2 || body[0] != 20 {
                    continue;
                }
                let payload = &body[2..];
                if body[1] == 0 {
                    // Their handshake: find their id for ccbt_xet, then send our opening lie.
                    if let Some(p) = payload.windows(9).position(|w| w == b"ccbt_xeti") {
                        their_id = payload[p + 9] - b'0';
                    }
                    let head_msg = |h: &[u8]| {
                        let mut m = b"d1:h".to_vec();
                        m.extend_from_slice(&benc_bytes(h));
                        m.extend_from_slice(b"1:t4:heade");
                        m
                    };
                    let lie = match kind {
                        Evil::ForeignHead => {
                            // Another key's head: change the public key's first byte.
                            let mut h = old_head.clone();
                            let k = h.windows(5).position(|w| w == b"1:k32").unwrap() + 6;
                            h[k] ^= 0xff;
                            Some(head_msg(&h))
                        }
                        Evil::ForgedSeq => {
                            // A seq bump without a new signature.
                            let mut h = old_head.clone();
                            let p = h.windows(6).position(|w| w == b"3:seqi").unwrap() + 6;
                            h[p] = b'9';
                            Some(head_msg(&h))
                        }
                        Evil::ReplayOldHead => Some(head_msg(&old_head)),
                        _ => None,
                    };
                    if let Some(m) = lie {
                        let _ = c.write_all(&ext_msg(their_id, &m));
                    }
                    continue;
                }
                // A request: d1:h32:<hash>2:idi<N>e1:k1:x1:t3:reqe
                let Some(p) = payload.windows(4).position(|w| w == b"2:id") else {
                    continue;
                };
                let rest = &payload[p + 5..];
                let end = rest.iter().position(|&b| b == b'e').unwrap();
                let id = std::str::from_utf8(&rest[..end]).unwrap().to_string();
                let reply = match kind {
                    Evil::WrongBytes => {
                        let mut m = format!("d2:idi{id}e1:k1:c3:leni5e1:t4:datae").into_bytes();
                        m.extend_from_slice(b"wrong");
                        m
                    }
                    Evil::Oversized => {
                        let mut m =
                            format!("d2:idi{id}e1:k1:c3:leni{}e1:t4:datae", 200_000).into_bytes();
                        m.extend(std::iter::repeat_n(0u8, 200_000));
                        m
                    }
                    Evil::Truncated => {
                        let mut m = format!("d2:idi{id}e1:k1:c3:leni100e1:t4:datae").into_bytes();
                        m.extend_from_slice(&[1u8; 50]);
                        m
                    }
                    _ => format!("d2:idi{id}e1:t2:nfe").into_bytes(),
                };
                let _ = c.write_all(&ext_msg(their_id, &reply));
            }
        }
    });
    addr
}

#[test]
fn hostile_peers_are_rejected_and_sync_completes() {
    let (net, src, id, alisten, a) = setup(&[("f.bin", 6 << 20), ("g.txt", 1234)]);
    drop(a);
    // Version 2, so a version-1 head is a replay.
    std::fs::write(src.join("g.txt"), b"changed").unwrap();
    ccbt_ok(&[
        "--data-dir",
        s(&net.tmp.path().join("A")),
        "publish",
        s(&src),
    ]);
    let vs = ccbt_json(&["--data-dir", s(&net.tmp.path().join("A")), "versions", &id]);
    let hex = vs[0]["head"].as_str().unwrap();
    let old_head: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let _a = spawn_ccbt(
        &[
            "--data-dir",
            s(&net.tmp.path().join("A")),
            "seed",
            "--listen",
            &alisten,
            "--tracker",
            &net.tracker,
        ],
        &net.tmp.path().join("A2.log"),
    );
    wait_listening(&alisten, 20);
    let share: [u8; 20] = (0..20)
        .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let kinds = [
        Evil::WrongBytes,
        Evil::ForeignHead,
        Evil::ForgedSeq,
        Evil::ReplayOldHead,
        Evil::Oversized,
        Evil::Truncated,
    ];
    let mut args: Vec<String> = vec![];
    for (i, k) in kinds.into_iter().enumerate() {
        args.push("--peer".into());
        args.push(hostile_xet_peer(share, k, old_head.clone(), 10 + i as u8));
    }
    args.push("--peer".into());
    args.push(alisten.clone());
    let out = net.tmp.path().join("copy");
    let bdata = net.tmp.path().join("B");
    let mut cmd = vec!["--json", "--data-dir", s(&bdata), "sync", &id, s(&out)];
    let listen = format!("127.0.0.1:{}", free_port());
    cmd.extend(["--listen", &listen]);
    cmd.extend(args.iter().map(String::as_str));
    // The fake peers speak plaintext only: no encrypted first try (it would cost each its one
    // connection while the honest peer finishes the sync).
    let o = ccbt_cmd()
        .env("CCBT_ENCRYPTION", "disable")
        .args(&cmd)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let e: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(e["seq"], 2, "synced {e} instead of the newest version");
    assert!(trees_equal(&src, &out));
    for want in [
        "does not match",
        "another key",
        "signature",
        "exceeds",
        "truncated",
    ] {
        assert!(err.contains(want), "no ban for {want:?} in:\n{err}");
    }
}

#[test]
fn follower_killed_mid_sync_resumes_without_partial_files() {
    let (net, src, id, alisten, _a) = setup(&[("big.bin", 200 << 20), ("small.txt", 10)]);
    let dir = net.tmp.path().join("copy");
    let data = net.tmp.path().join("B");
    let run = |log: &str| {
        spawn_ccbt(
            &[
                "--json",
                "--data-dir",
                s(&data),
                "sync",
                &id,
                s(&dir),
                "--peer",
                &alisten,
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
            ],
            &net.tmp.path().join(log),
        )
    };
    let mut b = run("B1.log");
    // Kill once the node has stored a good part of the chunks (its store grows on disk).
    wait_until(60.0, "the follower to fetch some data", || {
        dir_size(&data) > 60 << 20
    });
    b.0.kill().unwrap();
    b.0.wait().unwrap();
    // No partial file is visible.
    if let Ok(m) = std::fs::metadata(dir.join("big.bin")) {
        assert_eq!(m.len(), 200 << 20, "a partial big.bin is visible");
    }
    let b2 = run("B2.log");
    let mut seen_partial = false;
    wait_until(120.0, "the restarted follower to finish", || {
        if let Ok(m) = std::fs::metadata(dir.join("big.bin")) {
            seen_partial |= m.len() != 200 << 20;
        }
        event_for(&net.tmp.path().join("B2.log"), 1).is_some()
    });
    drop(b2);
    assert!(!seen_partial, "a partial file was visible during the sync");
    assert!(trees_equal(&src, &dir));
    ccbt_ok(&["--data-dir", s(&data), "cas", "verify"]);
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Xet hex (four little-endian u64 words) to the hash's bytes.
fn xet_bytes(hex: &str) -> Vec<u8> {
    (0..4)
        .flat_map(|i| {
            u64::from_str_radix(&hex[i * 16..i * 16 + 16], 16)
                .unwrap()
                .to_le_bytes()
        })
        .collect()
}

/// Reads one peer-wire message (skipping keep-alives): (id, payload).
fn read_msg(c: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    loop {
        let mut hdr = [0u8; 4];
        c.read_exact(&mut hdr)
            .expect("the node closed the connection");
        let len = u32::from_be_bytes(hdr) as usize;
        if len == 0 {
            continue;
        }
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
        return (body[0], body[1..].to_vec());
    }
}

#[test]
fn a_share_swarm_serves_only_that_share_and_ignores_unknown_messages() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("A");
    let (s1, s2) = (t.path().join("s1"), t.path().join("s2"));
    make_tree(&s1, &[("public.txt", 5000)]);
    make_tree(&s2, &[("secret.txt", 7000)]);
    let id1 = ccbt_ok(&["-q", "--data-dir", s(&a), "publish", s(&s1)])
        .trim()
        .to_string();
    let id2 = ccbt_ok(&["-q", "--data-dir", s(&a), "publish", s(&s2)])
        .trim()
        .to_string();
    assert_ne!(id1, id2);
    let root_of = |id: &str| {
        let v = ccbt_json(&["--data-dir", s(&a), "versions", id]);
        xet_bytes(v[0]["root"].as_str().unwrap())
    };
    let (root1, root2) = (root_of(&id1), root_of(&id2));
    let secret = ccbt_json(&["hash", "--chunks", s(&s2.join("secret.txt"))]);
    let secret_chunk = xet_bytes(secret[0]["chunks"][0][2].as_str().unwrap());
    let listen = format!("127.0.0.1:{}", free_port());
    let _seed = spawn_ccbt(
        &["--data-dir", s(&a), "seed", "--listen", &listen],
        &t.path().join("A.log"),
    );
    wait_listening(&listen, 20);
    // Join share 1's swarm as a ccbt_xet peer.
    let share1: [u8; 20] = ccbt_core_hex(&id1);
    // The seed listens before it has joined every share's swarm: a connection in that moment
    // is reset, as a peer of an unknown swarm; try again (bounded), as a peer would.
    let mut hs = [0u8; 68];
    let mut tries = 0;
    let mut c = loop {
        let mut c = std::net::TcpStream::connect(&listen).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let ok = c
            .write_all(&bt_handshake(&share1, b"-XT0001-crossshare01", true))
            .and_then(|_| c.write_all(&ext_msg(0, b"d1:md8:ccbt_xeti3eee")))
            .and_then(|_| c.read_exact(&mut hs));
        match ok {
            Ok(()) => break c,
            Err(e) if tries < 40 => {
                tries += 1;
                eprintln!("handshake attempt {tries}: {e}");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("the seed never answered a share 1 handshake: {e}"),
        }
    };
    let their_id = loop {
        let (id, p) = read_msg(&mut c);
        if id == 20 && p[0] == 0 {
            let at = p
                .windows(9)
                .position(|w| w == b"ccbt_xeti")
                .expect("ccbt_xet");
            break p[at + 9] - b'0';
        }
    };
    // A message type from some later version: ignored, the connection stays.
    c.write_all(&ext_msg(their_id, b"d1:t9:from-2030e"))
        .unwrap();
    let ask = |c: &mut std::net::TcpStream, id: u32, h: &[u8]| {
        let mut m = b"d1:h32:".to_vec();
        m.extend_from_slice(h);
        m.extend_from_slice(format!("2:idi{id}e1:k1:x1:t3:reqe").as_bytes());
        c.write_all(&ext_msg(their_id, &m)).unwrap();
        loop {
            let (mid, p) = read_msg(c);
            if mid != 20 || p[0] != 3 {
                continue; // ours is id 3
            }
            let p = &p[1..];
            let tag = format!("idi{id}e");
            if p.windows(tag.len()).any(|w| w == tag.as_bytes()) {
                return String::from_utf8_lossy(&p[..p.len().min(60)]).into_owned();
            }
        }
    };
    let own = ask(&mut c, 1, &root1);
    assert!(
        own.contains("4:data"),
        "share 1's own listing is served: {own}"
    );
    for (i, h) in [(2, &root2), (3, &secret_chunk)] {
        let r = ask(&mut c, i, h);
        assert!(
            r.contains("2:nf"),
            "share 2's data must not be served in share 1's swarm: {r}"
        );
    }
    let st = ccbt_json(&["--data-dir", s(&a), "status"]);
    let sh = st["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["share"] == id1.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no share {id1} in {st}"));
    assert_eq!(sh["unknown_messages"], 1, "{sh}");
    assert_eq!(sh["refused_requests"], 2, "{sh}");
}

fn ccbt_core_hex(h: &str) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}
