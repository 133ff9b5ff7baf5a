//! How peers reach each other. MSE/PE against libtorrent: with its encryption forced to RC4 both
//! ways, libtorrent downloads from ccbt (ccbt answers the encrypted handshake) and seeds to it
//! (ccbt starts one); with ccbt set to `require`, a plaintext-only libtorrent gets nothing.
//! IPv6: peers from a tracker's `peers6` (BEP 7), a listener on both stacks, libtorrent over ::1.
//! uTP: both ways with libtorrent running with TCP off, a magnet's metadata included.

use ccbt_tests::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

const FILES: &[(&str, usize)] = &[("a.bin", 3_000_001), ("sub/b.bin", 1_234_567)];
/// libtorrent's enc_policy (forced 0, enabled 1, disabled 2) and enc_level (plaintext 1, rc4 2).
const LT_RC4_ONLY: &str =
    r#"{"out_enc_policy": 0, "in_enc_policy": 0, "allowed_enc_level": 2, "prefer_rc4": true}"#;
const LT_PLAINTEXT_ONLY: &str = r#"{"out_enc_policy": 2, "in_enc_policy": 2}"#;

fn fixture(root: &Path) -> PathBuf {
    make_tree(&root.join("seed/data"), FILES);
    let t = root.join("t.torrent");
    ccbt_ok(&[
        "create",
        s(&root.join("seed/data")),
        "--v1",
        "--piece-length",
        "64K",
        "-o",
        s(&t),
        "-q",
    ]);
    t
}

fn same(a: &Path, b: &Path) -> bool {
    FILES
        .iter()
        .all(|(p, _)| same_file(&a.join("data").join(p), &b.join("data").join(p)))
}

fn seed(root: &Path, torrent: &Path, name: &str, encryption: &str) -> (ChildGuard, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(root.join(format!("{name}.log"))).unwrap();
    let g = ChildGuard(
        ccbt_cmd()
            .env("CCBT_ENCRYPTION", encryption)
            .env("CCBT_LOG_LEVEL", "debug")
            .args([
                "--data-dir",
                s(&root.join(name)),
                "seed",
                s(torrent),
                s(&root.join("seed")),
                "--listen",
                &listen,
                "--no-trackers",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_listening(&listen, 20);
    (g, listen)
}

/// A libtorrent leecher finished; if not, the end of the ccbt seeder's debug log goes with the
/// failure (a stall cannot be diagnosed from libtorrent's summary alone).
fn assert_lt_done(r: &serde_json::Value, root: &Path, seed_name: &str) {
    if r["done"] != true {
        print_log_tails(&[&root.join(format!("{seed_name}.log"))], 60);
        panic!("libtorrent did not finish: {r}");
    }
}

#[test]
fn libtorrent_forced_to_rc4_downloads_from_ccbt_and_seeds_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = fixture(root);
    // libtorrent (RC4 only) dials ccbt: ccbt answers the encrypted handshake.
    let (_seed, listen) = seed(root, &t, "s1", "prefer");
    let port = free_port().to_string();
    let r = lt_tool_env(
        &["leech", s(&t), s(&root.join("lt")), &port, "60", &listen],
        &[("LT_SETTINGS", LT_RC4_ONLY)],
    );
    assert_lt_done(&r, root, "s1");
    assert!(same(&root.join("seed"), &root.join("lt")));
    let log = std::fs::read_to_string(root.join("s1.log")).unwrap();
    assert!(log.contains("MSE, RC4"), "no encrypted peer in the log");
    // ccbt dials a libtorrent seeder that takes RC4 only.
    let lport = free_port();
    let _lt = spawn_lt_seed_env(
        &t,
        &root.join("seed"),
        lport,
        &[],
        &[("LT_SETTINGS", LT_RC4_ONLY)],
    );
    let dl = root.join("dl");
    download(root, "d", &t, &dl, &format!("127.0.0.1:{lport}"), &[]);
    assert!(same(&root.join("seed"), &dl));
}

#[test]
fn require_refuses_plaintext_peers_and_serves_encrypted_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = fixture(root);
    let (_seed, listen) = seed(root, &t, "s1", "require");
    let port = free_port().to_string();
    let r = lt_tool_env(
        &["leech", s(&t), s(&root.join("plain")), &port, "12", &listen],
        &[("LT_SETTINGS", LT_PLAINTEXT_ONLY)],
    );
    assert_eq!(r["done"], false, "a plaintext peer got the data: {r}");
    assert_eq!(r["total_download"], 0, "{r}");
    let log = std::fs::read_to_string(root.join("s1.log")).unwrap();
    assert!(
        log.contains("plaintext peer refused"),
        "no refusal in the log"
    );
    let port = free_port().to_string();
    let r = lt_tool_env(
        &["leech", s(&t), s(&root.join("rc4")), &port, "60", &listen],
        &[("LT_SETTINGS", LT_RC4_ONLY)],
    );
    assert_lt_done(&r, root, "s1");
    assert!(same(&root.join("seed"), &root.join("rc4")));
}

/// An HTTP tracker that answers every announce with one IPv6 peer in `peers6` (BEP 7).
fn v6_tracker(peer_port: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten().take(100) {
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = c.read(&mut buf);
            let mut body = b"d8:intervali60e5:peers0:6:peers618:".to_vec();
            body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            body.extend_from_slice(&peer_port.to_be_bytes());
            body.push(b'e');
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            let _ = c.write_all(&r);
        }
    });
    port
}

#[test]
fn ipv6_peers_from_peers6_and_a_dual_stack_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = fixture(root);
    // The seeder listens on 0.0.0.0, i.e. both stacks.
    let port = free_port();
    let log = std::fs::File::create(root.join("seed.log")).unwrap();
    let _seed = ChildGuard(
        ccbt_cmd()
            .args([
                "--data-dir",
                s(&root.join("s")),
                "seed",
                s(&t),
                s(&root.join("seed")),
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--no-trackers",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_listening(&format!("[::1]:{port}"), 20);
    wait_listening(&format!("127.0.0.1:{port}"), 5);
    // A tracker that knows the seeder only by its IPv6 address.
    let tport = v6_tracker(port);
    let t2 = root.join("t6.torrent");
    ccbt_ok(&[
        "create",
        s(&root.join("seed/data")),
        "--v1",
        "--piece-length",
        "64K",
        "-t",
        &format!("http://127.0.0.1:{tport}/announce"),
        "-o",
        s(&t2),
        "-q",
    ]);
    let dl = root.join("dl");
    let o = ccbt_cmd()
        .args([
            "--json",
            "--data-dir",
            s(&root.join("d")),
            "download",
            s(&t2),
            "-o",
            s(&dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(same(&root.join("seed"), &dl));
    // libtorrent dials the seeder over ::1.
    let lport = free_port().to_string();
    let settings =
        format!(r#"{{"listen_interfaces": "[::1]:{lport}", "outgoing_interfaces": ""}}"#);
    let r = lt_tool_env(
        &[
            "leech",
            s(&t),
            s(&root.join("lt")),
            &lport,
            "60",
            &format!("[::1]:{port}"),
        ],
        &[("LT_SETTINGS", &settings)],
    );
    assert_eq!(r["done"], true, "{r}");
    assert!(same(&root.join("seed"), &root.join("lt")));
}

/// libtorrent with TCP switched off, both ways.
const LT_UTP_ONLY: &str = r#"{"enable_outgoing_tcp": false, "enable_incoming_tcp": false, "enable_outgoing_utp": true, "enable_incoming_utp": true}"#;

#[test]
fn utp_both_ways_with_libtorrent_that_has_tcp_off() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = fixture(root);
    // ccbt (uTP only) downloads from a uTP-only libtorrent seeder.
    let lport = free_port();
    let _lt = spawn_lt_seed_env(
        &t,
        &root.join("seed"),
        lport,
        &[],
        &[("LT_SETTINGS", LT_UTP_ONLY)],
    );
    let dl = root.join("dl");
    let t0 = std::time::Instant::now();
    download(
        root,
        "d",
        &t,
        &dl,
        &format!("127.0.0.1:{lport}"),
        &[("CCBT_ENABLE_TCP", "false")],
    );
    assert!(same(&root.join("seed"), &dl));
    eprintln!("ccbt over uTP from libtorrent: {:?}", t0.elapsed());
    // A magnet's metadata over uTP too (from the fetch's own UDP socket).
    let ih = ccbt_json(&["info", s(&t)])["info_hash_v1"]
        .as_str()
        .unwrap()
        .to_string();
    let magnet = format!("magnet:?xt=urn:btih:{ih}");
    let dlm = root.join("dlm");
    download(
        root,
        "dm",
        Path::new(&magnet),
        &dlm,
        &format!("127.0.0.1:{lport}"),
        &[("CCBT_ENABLE_TCP", "false")],
    );
    assert!(same(&root.join("seed"), &dlm));
    // A uTP-only libtorrent leecher dials ccbt (which listens on TCP and uTP).
    let (_seed, listen) = seed(root, &t, "s1", "prefer");
    let port = free_port().to_string();
    let r = lt_tool_env(
        &["leech", s(&t), s(&root.join("lt")), &port, "60", &listen],
        &[("LT_SETTINGS", LT_UTP_ONLY)],
    );
    assert_lt_done(&r, root, "s1");
    assert!(same(&root.join("seed"), &root.join("lt")));
    // ccbt to ccbt over uTP only.
    let dl2 = root.join("dl2");
    download(
        root,
        "d2",
        &t,
        &dl2,
        &listen,
        &[("CCBT_ENABLE_TCP", "false")],
    );
    assert!(same(&root.join("seed"), &dl2));
}

/// `ccbt download` of `t` into `dl` from `peer` only (data dir `root/dd`), with `env`; panics with
/// its stderr unless it succeeds.
fn download(root: &Path, dd: &str, t: &Path, dl: &Path, peer: &str, env: &[(&str, &str)]) {
    let o = ccbt_cmd()
        .envs(env.iter().copied())
        .args([
            "--json",
            "--data-dir",
            s(&root.join(dd)),
            "download",
            s(t),
            "-o",
            s(dl),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--no-trackers",
            "--peer",
            peer,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
