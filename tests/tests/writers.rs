//! Several writers per share, with real mounts on three nodes (each on its own 127.0.0.x): the
//! owner and two writers edit the same file and different files at once, also while one node is
//! partitioned away (its traffic dropped with nftables), then heal. Every mount ends with the same
//! tree, every write present as the winner or as a conflict copy, `ccbt log` naming each writer;
//! a writer the owner removed makes versions no other node takes.

use ccbt_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Drops all traffic to and from one loopback address while it lives (an nftables table of its
/// own, deleted on drop).
struct Partition(&'static str);

impl Partition {
    fn new(ip: &str) -> Partition {
        require("nft", "nftables");
        let table = "ccbt_test_partition";
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority -10; \
             policy accept;\n  ip saddr {ip} drop\n  ip daddr {ip} drop\n }}\n}}\n"
        );
        let o = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn();
        let mut c = o.expect("run nft");
        use std::io::Write;
        c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(
            c.wait().unwrap().success(),
            "nft could not add the partition"
        );
        Partition(table)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", self.0])
            .status();
    }
}

/// Every regular file under `dir` (relative path -> bytes), `.ccbt` aside.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if rel == ".ccbt" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.insert(rel, b);
            }
        }
    }
    out
}

struct Node {
    dir: PathBuf,
    addr: String,
    guard: Option<MountGuard>,
}

fn start(t: &Path, name: &str, ip: &str, id: &str, peers: &[&str]) -> Node {
    start_with(t, name, ip, id, peers, &[])
}

fn start_with(t: &Path, name: &str, ip: &str, id: &str, peers: &[&str], extra: &[&str]) -> Node {
    let data = t.join(name);
    let dir = t.join(format!("m{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = format!("{ip}:{}", free_port());
    let mut args = vec![
        "--data-dir",
        s(&data),
        "mount",
        id,
        s(&dir),
        "--listen",
        &addr,
    ];
    for p in peers {
        args.extend(["--peer", p]);
    }
    args.extend_from_slice(extra);
    let log = t.join(format!("{name}.log"));
    let g = spawn_ccbt_env(&args, &log, &[("RUST_LOG", "info")]);
    let mut guard = MountGuard {
        child: Some(g),
        dir: dir.clone(),
    };
    wait_until(60.0, "the mount", || {
        if let Some(c) = guard.child.as_mut() {
            if let Ok(Some(st)) = c.0.try_wait() {
                panic!(
                    "ccbt mount exited with {st}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        is_mounted(&dir)
    });
    Node {
        dir,
        addr,
        guard: Some(guard),
    }
}

fn write(n: &Node, path: &str, text: &str) {
    std::fs::write(n.dir.join(path), text).unwrap_or_else(|e| panic!("write {path}: {e}"));
}

/// On failure the mounts' logs say why.
struct Logs(PathBuf);

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in ["O", "A", "B"] {
                let l =
                    std::fs::read_to_string(self.0.join(format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = l.lines().rev().take(40).collect();
                let t: Vec<(String, String)> = tree(&self.0.join(format!("m{n}")))
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                eprintln!("=== m{n}: {t:?}");
                eprintln!("=== {n}.log (last lines)");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn same_everywhere(nodes: &[&Node]) -> bool {
    let t0 = tree(&nodes[0].dir);
    nodes.iter().all(|n| tree(&n.dir) == t0)
}

fn log(data: &Path, id: &str) -> Vec<Value> {
    let out = ccbt_ok(&["--json", "--data-dir", s(data), "log", id]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn three_writers_edit_concurrently_through_a_partition_and_converge() {
    let t = tempfile::tempdir().unwrap();
    let t = t.path();
    eprintln!("test dir {}", t.display());
    let src = t.join("src");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    for (p, c) in [
        ("shared.txt", "version 0\n"),
        ("a.txt", "a0\n"),
        ("b.txt", "b0\n"),
        ("docs/readme.md", "readme\n"),
    ] {
        std::fs::write(src.join(p), c).unwrap();
    }
    let (od, ad, bd) = (t.join("O"), t.join("A"), t.join("B"));
    let id = publish(&od, &src);
    let ka = ccbt_ok(&["--data-dir", s(&ad), "keygen"])
        .trim()
        .to_string();
    let kb = ccbt_ok(&["--data-dir", s(&bd), "keygen"])
        .trim()
        .to_string();
    assert_eq!(ka.len(), 64);
    // The same key again: it is the data dir's.
    assert_eq!(ccbt_ok(&["--data-dir", s(&ad), "keygen"]).trim(), ka);
    ccbt_ok(&["--data-dir", s(&od), "share", "add-writer", &id, &ka]);
    ccbt_ok(&["--data-dir", s(&od), "share", "add-writer", &id, &kb]);
    let listed = ccbt_ok(&["--data-dir", s(&od), "share", "writers", &id]);
    assert!(listed.contains(&ka) && listed.contains(&kb), "{listed}");
    // Bad input: one line each.
    let o = ccbt(&["--data-dir", s(&od), "share", "add-writer", &id, "xyz"]);
    assert!(!o.status.success());
    let o = ccbt(&["--data-dir", s(&ad), "share", "add-writer", &id, &kb]);
    assert!(!o.status.success(), "a non-owner authorized a writer");

    let o = start(t, "O", "127.0.0.2", &id, &[]);
    let a = start(t, "A", "127.0.0.3", &id, &[&o.addr]);
    let b = start(t, "B", "127.0.0.4", &id, &[&o.addr, &a.addr]);
    // (Dropped before the mounts: on failure it shows their trees and logs.)
    let _logs = Logs(t.to_path_buf());
    assert_eq!(tree(&a.dir), tree(&src));
    assert_eq!(tree(&b.dir), tree(&src));

    // 1. All connected: each writes its own file at once.
    write(&a, "a.txt", "a1 from A\n");
    write(&b, "b.txt", "b1 from B\n");
    write(&o, "o.txt", "new from the owner\n");
    let d = wait_until(60.0, "the three edits everywhere", || {
        let t = tree(&o.dir);
        t.get("a.txt").map(Vec::as_slice) == Some(b"a1 from A\n")
            && t.get("b.txt").map(Vec::as_slice) == Some(b"b1 from B\n")
            && t.contains_key("o.txt")
            && same_everywhere(&[&o, &a, &b])
    });
    eprintln!("three concurrent edits on every mount after {d:?} (publish debounce included)");

    // 2. B partitioned away; A and B edit the same file, everyone something else.
    let part = Partition::new("127.0.0.4");
    std::thread::sleep(std::time::Duration::from_millis(300));
    write(&a, "shared.txt", "edit by A\n");
    write(&b, "shared.txt", "edit by B\n");
    write(&b, "docs/b-only.md", "written while partitioned\n");
    write(&o, "o2.txt", "owner during the partition\n");
    std::fs::remove_file(o.dir.join("a.txt")).unwrap(); // races nothing: A is idle on it
                                                        // A delete that races an edit: the owner deletes b.txt while B edits it.
    std::fs::remove_file(o.dir.join("b.txt")).unwrap();
    write(&b, "b.txt", "b2 edited during the partition\n");
    wait_until(60.0, "A and the owner to agree without B", || {
        let t = tree(&o.dir);
        t.get("shared.txt").map(Vec::as_slice) == Some(b"edit by A\n")
            && t.contains_key("o2.txt")
            && !t.contains_key("a.txt")
            && !t.contains_key("b.txt")
            && same_everywhere(&[&o, &a])
    });
    assert!(
        !tree(&o.dir).contains_key("docs/b-only.md"),
        "the partition leaked"
    );
    // B's mount shows its own edit meanwhile.
    assert_eq!(tree(&b.dir)["shared.txt"], b"edit by B\n");

    // 3. Heal: the same tree everywhere, both edits of shared.txt present.
    drop(part);
    let d = wait_until(120.0, "the three mounts to converge after the heal", || {
        let t = tree(&o.dir);
        t.contains_key("docs/b-only.md")
            && t.keys().any(|k| k.starts_with("shared.conflict-"))
            && same_everywhere(&[&o, &a, &b])
    });
    eprintln!("converged {d:?} after the heal");
    let fin = tree(&o.dir);
    let shared: Vec<(&String, &Vec<u8>)> = fin
        .iter()
        .filter(|(k, _)| k.starts_with("shared"))
        .collect();
    assert_eq!(shared.len(), 2, "{shared:?}");
    let texts: Vec<&[u8]> = shared.iter().map(|(_, v)| v.as_slice()).collect();
    assert!(texts.contains(&&b"edit by A\n"[..]) && texts.contains(&&b"edit by B\n"[..]));
    // The conflict copy is named after the losing writer and its version.
    let copy = shared
        .iter()
        .find(|(k, _)| k.contains("conflict"))
        .unwrap()
        .0;
    let loser = if fin["shared.txt"] == b"edit by A\n" {
        &kb
    } else {
        &ka
    };
    assert!(
        copy.starts_with(&format!("shared.conflict-{}-", &loser[..8])),
        "{copy}"
    );
    assert!(copy.ends_with(".txt"), "{copy}");
    for (p, c) in [
        // The edit that raced the owner's delete is kept.
        ("b.txt", &b"b2 edited during the partition\n"[..]),
        ("o.txt", b"new from the owner\n"),
        ("o2.txt", b"owner during the partition\n"),
        ("docs/readme.md", b"readme\n"),
    ] {
        assert_eq!(fin[p], c, "{p}");
    }
    assert!(!fin.contains_key("a.txt"));

    // `ccbt sync` of the share into a plain directory on a fresh node: the same merged tree.
    let synced = t.join("synced");
    let listen = format!("127.0.0.5:{}", free_port());
    ccbt_ok(&[
        "--data-dir",
        s(&t.join("S")),
        "sync",
        &id,
        s(&synced),
        "--listen",
        &listen,
        "--peer",
        &o.addr,
    ]);
    let mut got = tree(&synced);
    got.retain(|k, _| !k.starts_with(".ccbt-sync"));
    assert_eq!(got, fin);

    // `ccbt log` (read-only beside the running mount) tells the writers apart.
    let l = log(&od, &id);
    let authors: std::collections::HashSet<String> = l
        .iter()
        .filter(|v| v["writer"] == true)
        .map(|v| v["author"].as_str().unwrap().to_string())
        .collect();
    assert!(authors.contains(&ka) && authors.contains(&kb), "{l:?}");

    // 4. The owner removes B; B's next version is taken by no one.
    let mut og = o.guard.unwrap();
    unmount(&mut og);
    ccbt_ok(&["--data-dir", s(&od), "share", "remove-writer", &id, &kb]);
    let o = start(t, "O", "127.0.0.2", &id, &[&a.addr, &b.addr]);
    wait_until(30.0, "the owner's mount", || tree(&o.dir) == fin);
    write(&a, "after.txt", "A is still a writer\n");
    write(&b, "evil.txt", "B is not any more\n");
    wait_until(60.0, "A's edit everywhere", || {
        tree(&o.dir).contains_key("after.txt")
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!tree(&o.dir).contains_key("evil.txt"));
    assert!(!tree(&a.dir).contains_key("evil.txt"));
    // What B wrote while authorized stays.
    assert_eq!(
        tree(&o.dir)["docs/b-only.md"],
        b"written while partitioned\n"
    );
    drop(a);
    drop(b);
    drop(o);
}

/// A writer's heads are BEP 44 items of their own (salt = the share id) on the DHT, like the
/// owner's: a node that only knows the DHT gets them with the writer's key and the share id.
#[test]
fn writer_heads_go_on_the_dht() {
    require_libtorrent();
    let t = tempfile::tempdir().unwrap();
    let t = t.path();
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.txt"), "zero\n").unwrap();
    let dht = LtDht::start(3, None);
    let boot = dht.nodes[0].clone();
    let (od, ad) = (t.join("O"), t.join("A"));
    let id = publish(&od, &src);
    let ka = ccbt_ok(&["--data-dir", s(&ad), "keygen"])
        .trim()
        .to_string();
    ccbt_ok(&["--data-dir", s(&od), "share", "add-writer", &id, &ka]);
    let dht_args = ["--dht-bootstrap", boot.as_str()];
    let o = start_with(t, "O", "127.0.0.2", &id, &[], &dht_args);
    let a = start_with(t, "A", "127.0.0.3", &id, &[&o.addr], &dht_args);
    write(&a, "f.txt", "one, by the writer\n");
    wait_until(60.0, "the writer's edit at the owner", || {
        tree(&o.dir).get("f.txt").map(Vec::as_slice) == Some(b"one, by the writer\n")
    });
    let probe = t.join("P");
    let args = [
        "--json",
        "--data-dir",
        s(&probe),
        "--dht-bootstrap",
        boot.as_str(),
        "dht",
        "get",
        &ka,
        "--salt-hex",
        &id,
    ];
    let mut got = Value::Null;
    wait_until(60.0, "the writer's head on the DHT", || {
        let o = ccbt(&args);
        if !o.status.success() {
            return false;
        }
        got = serde_json::from_slice(&o.stdout).unwrap();
        got["seq"].as_u64().is_some_and(|s| s >= 1)
    });
    assert_eq!(got["public_key"].as_str(), Some(ka.as_str()), "{got}");
    assert_eq!(got["head"]["share"].as_str(), Some(id.as_str()), "{got}");
    drop(a);
    drop(o);
}
