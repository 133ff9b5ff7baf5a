//! The Mainline DHT against libtorrent's, on loopback: bare magnets, seeders found only through
//! the DHT in both directions, share heads as BEP 44 items read by libtorrent, libtorrent's items
//! read by ccbt, a mount by share id alone, and hostile DHT traffic.

use ccbt_tests::*;
use serde_json::{json, Value};
use std::net::UdpSocket;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// Runs ccbt, killing it after `secs` (a test never hangs on a lookup).
fn ccbt_bounded(args: &[&str], secs: u64) -> Output {
    let mut c = ccbt_cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ccbt");
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = c.kill();
            let o = c.wait_with_output().unwrap();
            panic!(
                "ccbt {args:?} did not finish within {secs}s: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_with_output().unwrap()
}

fn ok_json(args: &[&str], secs: u64) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = ccbt_bounded(&a, secs);
    assert!(
        o.status.success(),
        "ccbt {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

fn torrent_of(dir: &Path, kind: &str) -> (std::path::PathBuf, Value) {
    let t = dir.join(format!("{kind}.torrent"));
    ccbt_ok(&[
        "create",
        s(&dir.join("data")),
        &format!("--{kind}"),
        "--piece-length",
        "64K",
        "-o",
        s(&t),
        "-q",
    ]);
    let info = ccbt_json(&["info", s(&t)]);
    (t, info)
}

/// A libtorrent seeder that announces only on the DHT; `ccbt download 'magnet:?xt=...'` with
/// nothing but a bootstrap node finds it and completes byte-exact (v1 and hybrid).
#[test]
fn bare_magnets_download_from_a_libtorrent_seeder_found_on_the_dht() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(
        &root.join("seed/data"),
        &[("a.bin", 3 << 20), ("sub/b.txt", 70_000), ("c.bin", 1)],
    );
    let mut dht = LtDht::start(4, None);
    let boot = dht.nodes[0].clone();
    for kind in ["v1", "hybrid"] {
        let (t, info) = torrent_of(&root.join("seed"), kind);
        let r = dht
            .cmd(json!({"cmd": "seed", "n": 1, "torrent": s(&t), "save": s(&root.join("seed"))}));
        assert_eq!(r["ok"], true, "{r}");
        let ih = info["info_hash_v1"].as_str().unwrap().to_string();
        let out = root.join(format!("dl-{kind}"));
        let listen = format!("127.0.0.1:{}", free_port());
        let data = root.join(format!("ccbt-{kind}"));
        let t0 = Instant::now();
        let o = ccbt_bounded(
            &[
                "--data-dir",
                s(&data),
                "--dht-bootstrap",
                &boot,
                "download",
                &format!("magnet:?xt=urn:btih:{ih}"),
                "-o",
                s(&out),
                "--listen",
                &listen,
            ],
            150,
        );
        assert!(
            o.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("{kind}: bare magnet via the DHT in {:?}", t0.elapsed());
        assert_same_tree(&root.join("seed/data"), &out.join("data"));
    }
}

/// BEP 32: an IPv6-only DHT of libtorrent nodes on [::1]. A bare magnet finds a libtorrent seeder
/// there (ccbt's IPv6 node, beside its IPv4 one, bootstraps from an IPv6 address and dials the
/// IPv6 peer), and libtorrent finds a ccbt seeder's IPv6 announce.
#[test]
fn bep32_an_ipv6_dht_finds_peers_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(
        &root.join("seed/data"),
        &[("v6.bin", 1 << 20), ("n.txt", 999)],
    );
    let (t, info) = torrent_of(&root.join("seed"), "v1");
    let ih = info["info_hash_v1"].as_str().unwrap().to_string();
    let mut dht = LtDht::start_v6(3);
    let boot = dht.nodes[0].clone();
    assert!(boot.starts_with("[::1]:"), "{boot}");
    let r =
        dht.cmd(json!({"cmd": "seed", "n": 1, "torrent": s(&t), "save": s(&root.join("seed"))}));
    assert_eq!(r["ok"], true, "{r}");
    let out = root.join("dl");
    let o = ccbt_bounded(
        &[
            "--data-dir",
            s(&root.join("ccbt-dl")),
            "--dht-bootstrap",
            &boot,
            "download",
            &format!("magnet:?xt=urn:btih:{ih}"),
            "-o",
            s(&out),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        150,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_tree(&root.join("seed/data"), &out.join("data"));

    // The other way: ccbt seeds on 127.0.0.1 and [::1] (its IPv6 DHT node announces the port);
    // libtorrent on the IPv6 DHT finds it.
    let port = free_port();
    let _seed = spawn_ccbt(
        &[
            "--data-dir",
            s(&root.join("ccbt-seed")),
            "--dht-bootstrap",
            &boot,
            "seed",
            s(&t),
            s(&root.join("seed")),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &root.join("seed.log"),
    );
    // (lt_dht.py prints IPv6 peers as `::1:PORT`.)
    let want = format!("::1:{port}");
    let r = dht.cmd(json!({"cmd": "get_peers", "n": 2, "ih": ih, "want": want}));
    assert!(
        r["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &json!(want)),
        "{r}: {}",
        std::fs::read_to_string(root.join("seed.log")).unwrap_or_default()
    );
}

/// The other direction: ccbt seeds and announces on the DHT; a libtorrent leecher with a bare
/// magnet finds it there and downloads.
#[test]
fn libtorrent_finds_a_ccbt_seeder_only_through_the_dht() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(
        &root.join("seed/data"),
        &[("x.bin", 2 << 20), ("y.txt", 5000)],
    );
    let (t, info) = torrent_of(&root.join("seed"), "v1");
    let mut dht = LtDht::start(3, None);
    let listen = format!("127.0.0.1:{}", free_port());
    let _seed = spawn_ccbt(
        &[
            "--data-dir",
            s(&root.join("ccbt")),
            "--dht-bootstrap",
            &dht.nodes[0],
            "seed",
            s(&t),
            s(&root.join("seed")),
            "--listen",
            &listen,
        ],
        &root.join("seed.log"),
    );
    wait_listening(&listen, 20);
    let ih = info["info_hash_v1"].as_str().unwrap();
    // libtorrent sees ccbt's announce in its get_peers replies...
    let r = dht.cmd(json!({"cmd": "get_peers", "n": 2, "ih": ih, "want": listen}));
    assert!(
        r["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &json!(listen)),
        "{r}: {}",
        std::fs::read_to_string(root.join("seed.log")).unwrap_or_default()
    );
    // ... and downloads from a bare magnet.
    let save = root.join("lt");
    let r = dht.cmd(json!({"cmd": "magnet", "n": 2, "uri": format!("magnet:?xt=urn:btih:{ih}"), "save": s(&save), "timeout": 90}));
    assert_eq!(r["done"], true, "{r}");
    assert_same_tree(&root.join("seed/data"), &save.join("data"));
}

/// A share's head is a BEP 44 mutable item libtorrent reads (it checks the signature itself),
/// with the same seq and value; a second publish raises the seq it sees. And ccbt reads the
/// items libtorrent puts, immutable and mutable (salted), verified.
#[test]
fn bep44_items_both_ways_with_libtorrent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(&root.join("src"), &[("f.bin", 300_000)]);
    let mut dht = LtDht::start(3, None);
    let boot = dht.nodes[0].clone();
    let data = root.join("A");
    let id = publish(&data, &root.join("src"));
    let listen = format!("127.0.0.1:{}", free_port());
    let _a = spawn_ccbt(
        &[
            "--data-dir",
            s(&data),
            "--dht-bootstrap",
            &boot,
            "seed",
            "--listen",
            &listen,
        ],
        &root.join("A.log"),
    );
    wait_listening(&listen, 20);
    // ccbt's own view of the item, from a fresh node.
    let get = |seq: i64| -> Value {
        let mut last = Value::Null;
        for _ in 0..30 {
            let o = ccbt_bounded(
                &[
                    "--data-dir",
                    s(&root.join("probe")),
                    "--dht-bootstrap",
                    &boot,
                    "dht",
                    "get",
                    &id,
                    "--json",
                ],
                60,
            );
            if o.status.success() {
                last = serde_json::from_slice(&o.stdout).unwrap();
                if last["seq"].as_i64() >= Some(seq) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("ccbt dht get never saw seq {seq}: {last}");
    };
    let mine = get(1);
    assert_eq!(mine["head"]["version"], 1);
    let key = mine["public_key"].as_str().unwrap().to_string();
    let lt1 = dht.cmd(json!({"cmd": "get_mutable", "n": 2, "key": key, "salt": "", "min_seq": 1}));
    assert_eq!(lt1["found"], true, "{lt1}");
    // libtorrent reports only items whose signature it verified; the signature covers seq and
    // value, so the same signature is the same head (its Python binding cannot hand over a value
    // with binary strings).
    assert_eq!(lt1["seq"], 1);
    assert_eq!(lt1["signature"], mine["signature"]);
    // A second version, published through the running node.
    std::fs::write(root.join("src/g.txt"), "second version\n").unwrap();
    publish(&data, &root.join("src"));
    let mine2 = get(2);
    let lt2 = dht.cmd(json!({"cmd": "get_mutable", "n": 1, "key": key, "salt": "", "min_seq": 2}));
    assert_eq!(lt2["seq"], 2, "{lt2}");
    assert_eq!(lt2["signature"], mine2["signature"]);
    assert_ne!(mine2["signature"], mine["signature"]);

    // libtorrent's items, read by ccbt.
    let imm = dht.cmd(json!({"cmd": "put_immutable", "n": 1, "value": "hello from libtorrent"}));
    assert!(imm["put_nodes"].as_u64().unwrap() > 0, "{imm}");
    let target = imm["target"].as_str().unwrap();
    let got = ok_json(
        &[
            "--data-dir",
            s(&root.join("probe")),
            "--dht-bootstrap",
            &boot,
            "dht",
            "get",
            target,
        ],
        60,
    );
    assert_eq!(got["mutable"], false);
    assert_eq!(got["value"], "hello from libtorrent");
    let seed = "11".repeat(32);
    let m = dht.cmd(json!({"cmd": "put_mutable", "n": 2, "seed": seed, "value": "mutable from libtorrent", "salt": "ccbt"}));
    assert!(m["put_nodes"].as_u64().unwrap() > 0, "{m}");
    let got = ok_json(
        &[
            "--data-dir",
            s(&root.join("probe")),
            "--dht-bootstrap",
            &boot,
            "dht",
            "get",
            m["key"].as_str().unwrap(),
            "--salt",
            "ccbt",
        ],
        60,
    );
    assert_eq!(got["mutable"], true);
    assert_eq!(got["value"], "mutable from libtorrent");
    assert!(got["seq"].as_i64().unwrap() >= 1);
    // ccbt's immutable put, read back by libtorrent's target computation (SHA-1 of the bencoded
    // value): the same target libtorrent gives for the same string.
    let put = ok_json(
        &[
            "--data-dir",
            s(&root.join("probe")),
            "--dht-bootstrap",
            &boot,
            "dht",
            "put",
            "hello from libtorrent",
        ],
        60,
    );
    assert_eq!(put["target"].as_str(), Some(target));
}

/// A share id is all a mount needs: a fresh node, bootstrapped from the DHT, mounts and reads
/// exact bytes; a version published while it is connected arrives within a second; one put on
/// the DHT while it has no connection arrives within its poll interval.
#[test]
fn a_share_id_is_all_a_mount_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(
        &root.join("src"),
        &[("movie.bin", 4 << 20), ("notes.txt", 100)],
    );
    let dht = LtDht::start(3, None);
    let boot = dht.nodes[0].clone();
    let adata = root.join("A");
    let id = publish(&adata, &root.join("src"));
    let alisten = format!("127.0.0.1:{}", free_port());
    let seed_args = [
        "--data-dir",
        s(&adata),
        "--dht-bootstrap",
        &boot,
        "seed",
        "--listen",
        &alisten,
    ];
    let a = spawn_ccbt(&seed_args, &root.join("A.log"));
    wait_listening(&alisten, 20);
    let mnt = root.join("mnt");
    let log = root.join("B.log");
    std::env::set_var("CCBT_DHT_HEAD_POLL_SECS", "2");
    let t0 = Instant::now();
    let (mut g, _) = mount(
        &root.join("B"),
        &id,
        &mnt,
        &["--dht-bootstrap", &boot],
        &log,
    );
    let first = wait_until(60.0, "the mount to show the share", || {
        same_file(&mnt.join("movie.bin"), &root.join("src/movie.bin"))
    });
    eprintln!(
        "cold mount by share id: {:?} to mounted, {:?} to the whole 4 MiB file read",
        t0.elapsed() - first,
        t0.elapsed()
    );
    assert_eq!(
        std::fs::read(mnt.join("notes.txt")).unwrap(),
        std::fs::read(root.join("src/notes.txt")).unwrap()
    );
    // Connected: the push arrives at once.
    std::fs::write(root.join("src/notes.txt"), "version two\n").unwrap();
    publish(&adata, &root.join("src"));
    let d = wait_until(10.0, "version 2 on the mount", || {
        std::fs::read(mnt.join("notes.txt")).is_ok_and(|b| b == b"version two\n")
    });
    eprintln!("version 2 reached the connected follower in {d:?}");
    // The figure is the point (benches measure it); the bound only catches a push that never
    // came and a poll that did the work instead.
    assert!(d < Duration::from_secs(3), "version 2 took {d:?}");
    // No connection: the owner's node is gone; a version published from its data dir goes onto
    // the DHT only, and the follower's poll finds it.
    drop(a);
    std::fs::write(root.join("src/notes.txt"), "version three\n").unwrap();
    let r = ok_json(
        &[
            "--data-dir",
            s(&adata),
            "--dht-bootstrap",
            &boot,
            "publish",
            s(&root.join("src")),
        ],
        60,
    );
    assert_eq!(r["version"], 3);
    assert!(r["dht_nodes"].as_u64().unwrap() > 0, "{r}");
    let d = wait_until(30.0, "the follower to learn version 3 from the DHT", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("version 3 from the DHT")
    });
    eprintln!("version 3 reached the unconnected follower through the DHT in {d:?} (poll 2 s)");
    // Poll 2 s + one lookup (a dead owner in the table costs SLOW_AFTER, not the timeout); a
    // loaded 2-core CI box adds seconds, so the bound is loose and the figure is printed.
    assert!(d < Duration::from_secs(12), "{d:?}");
    // The owner comes back: the follower finds it again and reads the new bytes (its redial of
    // a peer that failed backs off up to 40 s: issue 15 shortens that).
    let _a = spawn_ccbt(&seed_args, &root.join("A2.log"));
    wait_until(150.0, "version 3 on the mount", || {
        std::fs::read(mnt.join("notes.txt")).is_ok_and(|b| b == b"version three\n")
    });
    unmount(&mut g);
    drop(dht);
}

fn krpc_query(tid: &[u8], method: &str, args: &[u8]) -> Vec<u8> {
    let mut v = format!("d1:ad2:id20:{}", "x".repeat(20)).into_bytes();
    v.extend_from_slice(args);
    v.extend_from_slice(format!("e1:q{}:{method}1:t{}:", method.len(), tid.len()).as_bytes());
    v.extend_from_slice(tid);
    v.extend_from_slice(b"1:y1:qe");
    v
}

fn ask(sock: &UdpSocket, to: &str, pkt: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(pkt, to).unwrap();
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Hostile DHT traffic against a serving node: garbage, oversized datagrams, a query flood,
/// wrong tokens, forged and replayed (older) share heads. No crash, bounded memory and replies,
/// and the head on the DHT stays the newest genuine one.
#[test]
fn hostile_dht_traffic_is_bounded_and_bad_heads_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(&root.join("src"), &[("f.bin", 100_000)]);
    let data = root.join("A");
    let id = publish(&data, &root.join("src"));
    let listen = format!("127.0.0.1:{}", free_port());
    let child = ccbt_cmd()
        .args([
            "--data-dir",
            s(&data),
            "--dht-bootstrap",
            "none",
            "seed",
            "--listen",
            &listen,
        ])
        .env("CCBT_DHT_QUERIES_PER_IP_PER_SEC", "20")
        .stderr(std::fs::File::create(root.join("A.log")).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut child = ChildGuard(child);
    wait_listening(&listen, 20);
    let sock = UdpSocket::bind("127.0.0.9:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // The genuine seq-1 head, as the DHT holds it (for the replay below).
    let probe_dir = root.join("probe");
    let probe = |args: &[&str]| {
        let mut a = vec!["--data-dir", s(&probe_dir), "--dht-bootstrap", &listen];
        a.extend_from_slice(args);
        a.push("--json");
        // The node may not have put its head yet: a few tries.
        for _ in 0..20 {
            let o = ccbt_bounded(&a, 60);
            if o.status.success() {
                return serde_json::from_slice::<Value>(&o.stdout).unwrap();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("ccbt {a:?} kept failing");
    };
    let v1 = probe(&["dht", "get", &id]);
    assert_eq!(v1["seq"], 1);
    std::fs::write(root.join("src/g.txt"), "two").unwrap();
    publish(&data, &root.join("src"));
    wait_until(20.0, "seq 2 on the DHT", || {
        probe(&["dht", "get", &id])["seq"] == 2
    });
    let rss0 = rss_kib(pid);

    // Garbage and oversized datagrams get no answer.
    for pkt in [
        b"d1:ad2:id".to_vec(),
        vec![b'd'; 3000],
        b"garbage".to_vec(),
        vec![0u8; 1400],
    ] {
        sock.send_to(&pkt, &listen).unwrap();
    }
    let mut buf = [0u8; 2048];
    assert!(sock.recv_from(&mut buf).is_err(), "an answer to garbage");
    std::thread::sleep(Duration::from_millis(2100)); // the rate limiter refills
                                                     // A wrong token: error 203.
    let r = ask(
        &sock,
        &listen,
        &krpc_query(
            b"aa",
            "announce_peer",
            format!("9:info_hash20:{}4:porti6881e5:token4:nope", "h".repeat(20)).as_bytes(),
        ),
    )
    .expect("an answer");
    assert!(contains(&r, b"i203e"), "{}", String::from_utf8_lossy(&r));
    // A token from get, then a forged head (bad signature): 206; the genuine but older head
    // replayed: 302.
    let mut args = b"6:target20:".to_vec();
    args.extend_from_slice(&hex(&id));
    let r = ask(&sock, &listen, &krpc_query(b"bb", "get", &args)).expect("get answer");
    let token = extract_bytes(&r, b"5:token").expect("a token");
    let k = hex(v1["public_key"].as_str().unwrap());
    let sig = hex(v1["signature"].as_str().unwrap());
    let v = hex(v1["value_hex"].as_str().unwrap());
    let put = |seq: i64, sig: &[u8], tid: &[u8]| {
        let mut a = b"1:k32:".to_vec();
        a.extend_from_slice(&k);
        a.extend_from_slice(format!("3:seqi{seq}e3:sig64:").as_bytes());
        a.extend_from_slice(sig);
        a.extend_from_slice(format!("5:token{}:", token.len()).as_bytes());
        a.extend_from_slice(&token);
        a.extend_from_slice(b"1:v");
        a.extend_from_slice(&v);
        let mut q = format!("d1:ad2:id20:{}", "x".repeat(20)).into_bytes();
        q.extend_from_slice(&a);
        q.extend_from_slice(format!("e1:q3:put1:t{}:", tid.len()).as_bytes());
        q.extend_from_slice(tid);
        q.extend_from_slice(b"1:y1:qe");
        ask(&sock, &listen, &q).expect("put answer")
    };
    let r = put(5, &[0x55; 64], b"cc");
    assert!(
        contains(&r, b"i206e"),
        "forged: {}",
        String::from_utf8_lossy(&r)
    );
    let r = put(1, &sig, b"dd");
    assert!(
        contains(&r, b"i302e"),
        "replayed: {}",
        String::from_utf8_lossy(&r)
    );
    // A flood: 5,000 queries in about a second get at most the burst and the rate back.
    sock.set_nonblocking(true).unwrap();
    let q = krpc_query(
        b"ee",
        "find_node",
        format!("6:target20:{}", "t".repeat(20)).as_bytes(),
    );
    let mut answers = 0;
    let t0 = Instant::now();
    for i in 0..5000 {
        let _ = sock.send_to(&q, &listen);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        while sock.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    while sock.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("flood: 5000 queries in {secs:.2}s, {answers} answers");
    assert!(
        (answers as f64) <= 45.0 + 20.0 * secs,
        "{answers} answers in {secs:.2}s"
    );
    assert!(child.0.try_wait().unwrap().is_none(), "the node died");
    let rss1 = rss_kib(pid);
    assert!(rss1 < rss0 + 20_000, "RSS grew from {rss0} to {rss1} KiB");
    // Still the genuine newest head, and the node still answers.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(probe(&["dht", "get", &id])["seq"], 2);
    // The probe's routing table was saved in its data dir: with no bootstrap node at all, a
    // new run finds the item through the saved nodes.
    assert!(probe_dir.join("dht.dat").is_file());
    // (A few tries: on a loaded 2-core CI box the node just flooded can answer late.)
    let again_args = [
        "--data-dir",
        s(&probe_dir),
        "--dht-bootstrap",
        "none",
        "dht",
        "get",
        &id,
        "--json",
    ];
    let again = (0..3)
        .find_map(|_| {
            let o = ccbt_bounded(&again_args, 60);
            o.status
                .success()
                .then(|| serde_json::from_slice::<Value>(&o.stdout).unwrap())
        })
        .expect("the item through the saved routing table");
    assert_eq!(again["seq"], 2);
    let st = ok_json(&["--data-dir", s(&data), "dht", "status"], 30);
    assert!(st["malformed"].as_u64().unwrap() >= 2, "{st}");
    assert!(st["rate_limited"].as_u64().unwrap() > 4000, "{st}");
    drop(child);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The byte string after `key` in a bencoded packet.
fn extract_bytes(pkt: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    let at = pkt.windows(key.len()).position(|w| w == key)? + key.len();
    let colon = pkt[at..].iter().position(|b| *b == b':')? + at;
    let n: usize = std::str::from_utf8(&pkt[at..colon]).ok()?.parse().ok()?;
    Some(pkt[colon + 1..colon + 1 + n].to_vec())
}

/// BEP 46 both ways: a version published with `--torrent` names its hybrid torrent in the head;
/// libtorrent downloads that torrent from its info-hash (peers from the DHT), and
/// `ccbt download 'magnet:?xs=urn:btpk:<key>'` resolves the key to it and downloads it.
#[test]
fn bep46_a_version_published_as_a_torrent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let src = root.join("album");
    make_tree(&src, &[("one.flac", 1 << 20), ("two.flac", 700_000)]);
    let mut dht = LtDht::start(3, None);
    let boot = dht.nodes[0].clone();
    let data = root.join("A");
    let r = ok_json(
        &[
            "--data-dir",
            s(&data),
            "--dht-bootstrap",
            &boot,
            "publish",
            s(&src),
            "--torrent",
        ],
        120,
    );
    let ih = r["torrent_info_hash"]
        .as_str()
        .expect("an info-hash")
        .to_string();
    let id = r["share"].as_str().unwrap().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let _a = spawn_ccbt(
        &[
            "--data-dir",
            s(&data),
            "--dht-bootstrap",
            &boot,
            "seed",
            "--listen",
            &listen,
        ],
        &root.join("A.log"),
    );
    wait_listening(&listen, 20);
    // The head names the torrent (ccbt's own reading of the DHT item).
    let item = ok_json(
        &[
            "--data-dir",
            s(&root.join("probe")),
            "--dht-bootstrap",
            &boot,
            "dht",
            "get",
            &id,
        ],
        60,
    );
    assert!(
        item["value_hex"]
            .as_str()
            .unwrap()
            .contains(&format!("696832303a{ih}")),
        "{item}"
    );
    let key = item["public_key"].as_str().unwrap().to_string();
    // libtorrent: a classic torrent from its info-hash alone.
    let save = root.join("lt");
    let r = dht.cmd(json!({"cmd": "magnet", "n": 2, "uri": format!("magnet:?xt=urn:btih:{ih}"), "save": s(&save), "timeout": 90}));
    assert_eq!(
        r["done"],
        true,
        "{r}: {}",
        std::fs::read_to_string(root.join("A.log")).unwrap_or_default()
    );
    assert_same_tree(&src, &save.join("album"));
    // ccbt: the BEP 46 magnet.
    let out = root.join("c");
    let o = ccbt_bounded(
        &[
            "--data-dir",
            s(&root.join("C")),
            "--dht-bootstrap",
            &boot,
            "download",
            &format!("magnet:?xs=urn:btpk:{key}"),
            "-o",
            s(&out),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        150,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("names torrent {ih}")));
    assert_same_tree(&src, &out.join("album"));
}

/// P2P CAS: a large file held whole in one share is found through the DHT by a node that needs
/// it for another share. A serves share 1 (with `big.bin`); D owns share 2 (the same `big.bin`
/// and a note) but uploads at 256 KiB/s; C mounts share 2 by its id and reads `big.bin`: most of
/// it comes from A, which C found in the file's CAS swarm (info-hash = the first 20 bytes of the
/// file's root) and which is not in share 2's swarm at all.
#[test]
fn a_large_file_comes_from_a_holder_in_another_share() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_tree(&root.join("s1"), &[("big.bin", 20 << 20), ("a.txt", 10)]);
    std::fs::create_dir_all(root.join("s2")).unwrap();
    std::fs::copy(root.join("s1/big.bin"), root.join("s2/big.bin")).unwrap();
    std::fs::write(root.join("s2/note.txt"), "share two\n").unwrap();
    let dht = LtDht::start(3, None);
    let boot = dht.nodes[0].clone();
    let adata = root.join("A");
    publish(&adata, &root.join("s1"));
    let ddata = root.join("D");
    let id2 = publish(&ddata, &root.join("s2"));
    let alisten = format!("127.0.0.1:{}", free_port());
    let _a = spawn_ccbt(
        &[
            "--data-dir",
            s(&adata),
            "--dht-bootstrap",
            &boot,
            "--log-level",
            "debug",
            "seed",
            "--listen",
            &alisten,
        ],
        &root.join("A.log"),
    );
    let dlisten = format!("127.0.0.1:{}", free_port());
    let _d = spawn_ccbt_env(
        &[
            "--data-dir",
            s(&ddata),
            "--dht-bootstrap",
            &boot,
            "seed",
            "--listen",
            &dlisten,
        ],
        &root.join("D.log"),
        &[("CCBT_UP_LIMIT", "256")],
    );
    wait_listening(&alisten, 20);
    wait_listening(&dlisten, 20);
    wait_until(30.0, "A to announce big.bin on the DHT", || {
        std::fs::read_to_string(root.join("A.log"))
            .unwrap_or_default()
            .contains("P2P CAS: announcing file")
    });
    std::thread::sleep(Duration::from_secs(2));
    let mnt = root.join("mnt");
    let cdata = root.join("C");
    let (mut g, _) = mount(
        &cdata,
        &id2,
        &mnt,
        &["--dht-bootstrap", &boot],
        &root.join("C.log"),
    );
    let t0 = Instant::now();
    wait_until(90.0, "big.bin read through C's mount", || {
        same_file(&mnt.join("big.bin"), &root.join("s1/big.bin"))
    });
    eprintln!("20 MiB read in {:?} (D alone: 256 KiB/s)", t0.elapsed());
    let st = ok_json(&["--data-dir", s(&cdata), "status"], 20);
    let share = st["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["share"] == id2.as_str())
        .unwrap_or_else(|| panic!("share 2 not in C's status: {st}"))
        .clone();
    let from = &share["fetched_from"];
    eprintln!("fetched from: {from}");
    let from_a = from[alisten.as_str()].as_u64().unwrap_or(0);
    let from_d = from[dlisten.as_str()].as_u64().unwrap_or(0);
    assert!(
        from_a > from_d && from_a > 10 << 20,
        "A (another share's node, found by the file's root) served {from_a} bytes, D {from_d}"
    );
    unmount(&mut g);
    // `ccbt sync` of share 2 on a fresh node finds A the same way.
    let t0 = Instant::now();
    let r = ok_json(
        &[
            "--data-dir",
            s(&root.join("E")),
            "--dht-bootstrap",
            &boot,
            "sync",
            &id2,
            s(&root.join("synced")),
        ],
        120,
    );
    assert!(same_file(
        &root.join("synced/big.bin"),
        &root.join("s1/big.bin")
    ));
    let from = &r["fetched_from"];
    eprintln!("sync in {:?}, fetched from: {from}", t0.elapsed());
    let from_a = from[alisten.as_str()].as_u64().unwrap_or(0);
    let from_d = from[dlisten.as_str()].as_u64().unwrap_or(0);
    assert!(from_a > from_d, "sync: A served {from_a} bytes, D {from_d}");
}
