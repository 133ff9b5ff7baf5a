//! Shared harness for ccbt's end-to-end tests: locating the built binary, running it, making
//! deterministic test data, and requiring the independent tools (libtorrent, mktorrent) the interop
//! tests compare against. A missing tool fails the test loudly; nothing is skipped silently.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `ccbt` binary of this build (target/<profile>/ccbt, next to the test's deps/ folder).
pub fn ccbt_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("ccbt");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo build -p ccbt` (make test does this)",
        bin.display()
    );
    bin
}

/// A `ccbt` command for tests: the DHT off unless the test turns it on with `--dht-bootstrap`,
/// never a public bootstrap router even then (an empty default list), and the per-IP DHT limits
/// off, because every node of a loopback network shares 127.0.0.0/8.
pub fn ccbt_cmd() -> Command {
    let mut c = Command::new(ccbt_bin());
    c.env_remove("CCBT_DATA_DIR")
        .env("CCBT_ENABLE_DHT", "false")
        .env("CCBT_DHT_BOOTSTRAP", "")
        .env("CCBT_DHT_MAX_NODES_PER_IP", "0")
        .env("CCBT_DHT_QUERIES_PER_IP_PER_SEC", "0")
        // Never a router off the box (the suite's namespace has no default route anyway).
        .env("CCBT_PORT_MAPPING", "false");
    c
}

/// Runs ccbt with `args`, returning its output.
pub fn ccbt(args: &[&str]) -> Output {
    ccbt_cmd().args(args).output().expect("run ccbt")
}

/// Runs ccbt and requires success; returns stdout.
pub fn ccbt_ok(args: &[&str]) -> String {
    let o = ccbt(args);
    assert!(
        o.status.success(),
        "ccbt {:?} failed: {}",
        args,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

pub fn ccbt_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ccbt_ok(&a)).expect("ccbt --json output")
}

/// Fails the test (never skips) when an external tool is missing.
pub fn require(cmd: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{cmd} is missing: install Debian package {package} (`make deps` does)"
    );
}

/// Debian's python3-libtorrent only works with /usr/bin/python3.
pub fn require_libtorrent() {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3-libtorrent is missing: apt-get install python3-libtorrent (`make deps` does)"
    );
}

/// Runs tests/scripts/lt_tool.py and parses its JSON line.
pub fn lt_tool(args: &[&str]) -> Value {
    lt_tool_env(args, &[])
}

/// As [`lt_tool`] with environment settings (`LT_SETTINGS`: libtorrent settings as JSON).
pub fn lt_tool_env(args: &[&str], env: &[(&str, &str)]) -> Value {
    require_libtorrent();
    let o = Command::new("/usr/bin/python3")
        .envs(env.iter().copied())
        .arg(root().join("tests/scripts/lt_tool.py"))
        .args(args)
        .output()
        .expect("run lt_tool.py");
    assert!(
        o.status.success(),
        "lt_tool {:?} failed: {}",
        args,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("lt_tool JSON")
}

/// Deterministic pseudo-random bytes (xorshift64*), fast enough for hundreds of MiB.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `files` (relative path, size) of pseudo-random data under `dir`.
pub fn make_tree(dir: &Path, files: &[(&str, usize)]) {
    for (i, (p, n)) in files.iter().enumerate() {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pseudo_random(*n, i as u64 + 1)).unwrap();
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A child process killed (SIGKILL) and reaped when dropped, so no test leaves one behind.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP+UDP port on 127.0.0.1 (bound then released; tests use distinct ranges to avoid races).
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Waits (bounded) until `addr` accepts TCP connections.
pub fn wait_listening(addr: &str, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listening on {addr} after {secs}s");
}

/// opentracker on 127.0.0.1:`port` (HTTP and UDP) with `hashes` (40 hex) whitelisted.
pub fn start_opentracker(dir: &Path, port: u16, hashes: &[String]) -> ChildGuard {
    require("opentracker", "opentracker");
    std::fs::create_dir_all(dir).unwrap();
    // It chroots into its rootdir and drops to nobody: the whitelist path is relative.
    std::fs::write(
        dir.join("opentracker.conf"),
        format!(
            "listen.tcp 127.0.0.1:{port}\nlisten.udp 127.0.0.1:{port}\naccess.whitelist whitelist.txt\ntracker.rootdir {}\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("whitelist.txt"), hashes.join("\n") + "\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.join("whitelist.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let child = Command::new("opentracker")
        .arg("-f")
        .arg(dir.join("opentracker.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start opentracker");
    let g = ChildGuard(child);
    wait_listening(&format!("127.0.0.1:{port}"), 10);
    g
}

/// Spawns ccbt with `args` (stdout/stderr to files in `log_dir`).
pub fn spawn_ccbt(args: &[&str], log: &Path) -> ChildGuard {
    spawn_ccbt_env(args, log, &[])
}

/// As [`spawn_ccbt`] with environment settings (`CCBT_*`).
pub fn spawn_ccbt_env(args: &[&str], log: &Path, env: &[(&str, &str)]) -> ChildGuard {
    let f = std::fs::File::create(log).unwrap();
    ChildGuard(
        ccbt_cmd()
            .envs(env.iter().copied())
            .args(args)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn ccbt"),
    )
}

/// Spawns `lt_tool.py seed` and waits for it to report ready.
pub fn spawn_lt_seed(torrent: &Path, save: &Path, port: u16, peers: &[String]) -> ChildGuard {
    spawn_lt_seed_limited(torrent, save, port, peers, 0)
}

/// As [`spawn_lt_seed`] with an upload limit in bytes/s (0 = none).
pub fn spawn_lt_seed_limited(
    torrent: &Path,
    save: &Path,
    port: u16,
    peers: &[String],
    up: u64,
) -> ChildGuard {
    let up = up.to_string();
    spawn_lt_seed_env(torrent, save, port, peers, &[("LT_UPLOAD_LIMIT", &up)])
}

/// As [`spawn_lt_seed`] with environment settings (`LT_SETTINGS`, `LT_UPLOAD_LIMIT`).
pub fn spawn_lt_seed_env(
    torrent: &Path,
    save: &Path,
    port: u16,
    peers: &[String],
    env: &[(&str, &str)],
) -> ChildGuard {
    require_libtorrent();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.envs(env.iter().copied());
    cmd.arg(root().join("tests/scripts/lt_tool.py"))
        .args(["seed", s(torrent), s(save), &port.to_string()])
        .args(peers)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn libtorrent seeder");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    assert!(
        line.contains("\"ready\": true"),
        "libtorrent seeder not ready: {line}"
    );
    ChildGuard(child)
}

/// Byte-compares two files.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(x), Ok(y)) = (std::fs::read(a), std::fs::read(b)) else {
        return false;
    };
    x == y
}

/// Polls `f` every 20 ms until it holds, failing the test after `secs`; returns how long it took.
pub fn wait_until(secs: f64, what: &str, mut f: impl FnMut() -> bool) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs_f64(secs) {
        if f() {
            return t0.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out after {secs}s waiting for {what}");
}

/// [`wait_until`], printing the tail of each log before failing (a flake in CI leaves nothing
/// else to read).
pub fn wait_until_logs(
    secs: f64,
    what: &str,
    logs: &[&Path],
    mut f: impl FnMut() -> bool,
) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs_f64(secs) {
        if f() {
            return t0.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    print_log_tails(logs, 40);
    panic!("timed out after {secs}s waiting for {what}");
}

/// Prints the last `n` lines of each log, before a test fails (a flake in CI leaves nothing else
/// to read).
pub fn print_log_tails(logs: &[&Path], n: usize) {
    for l in logs {
        let text = std::fs::read_to_string(l).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- last lines of {}:", l.display());
        for x in &lines[lines.len().saturating_sub(n)..] {
            eprintln!("{x}");
        }
    }
}

/// A tmpfs of `size` (mount's syntax: "8m") on `dir` (made if missing), for a disk that fills
/// up; unmounted when the guard drops, so a failed test does not leave it behind.
pub fn mount_tmpfs(dir: &Path, size: &str) -> TmpfsGuard {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            s(dir),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "cannot mount a tmpfs (the tests run as root)");
    TmpfsGuard(dir.to_path_buf())
}

pub struct TmpfsGuard(PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A raw BitTorrent handshake (for scripted hostile peers); `extensions` sets the BEP 10 bit.
pub fn bt_handshake(info_hash: &[u8; 20], peer_id: &[u8], extensions: bool) -> Vec<u8> {
    let mut out = vec![19u8];
    out.extend_from_slice(b"BitTorrent protocol");
    out.extend_from_slice(&[0, 0, 0, 0, 0, if extensions { 0x10 } else { 0 }, 0, 0]);
    out.extend_from_slice(info_hash);
    assert_eq!(peer_id.len(), 20, "a peer id is 20 bytes");
    out.extend_from_slice(peer_id);
    out
}

// ---- FUSE mounts ----

/// A mount process; unmounts (and kills) on drop so no test leaves a mount behind.
pub struct MountGuard {
    pub child: Option<ChildGuard>,
    pub dir: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        self.child.take();
    }
}

pub fn is_mounted(dir: &Path) -> bool {
    let canon = std::fs::canonicalize(dir).unwrap_or(dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == canon.to_str())
}

pub fn mount(
    data: &Path,
    id: &str,
    dir: &Path,
    extra: &[&str],
    log: &Path,
) -> (MountGuard, String) {
    std::fs::create_dir_all(dir).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--data-dir",
        s(data),
        "mount",
        id,
        s(dir),
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    let g = spawn_ccbt(&args, log);
    let mut guard = MountGuard {
        child: Some(g),
        dir: dir.to_path_buf(),
    };
    wait_until(30.0, "the mount", || {
        if let Some(c) = guard.child.as_mut() {
            if let Ok(Some(st)) = c.0.try_wait() {
                panic!(
                    "ccbt mount exited with {st}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        is_mounted(dir)
    });
    (guard, listen)
}

/// Unmounts the way a user does (`ccbt unmount`) and waits for the mount process to publish and exit.
pub fn unmount(g: &mut MountGuard) {
    ccbt_ok(&["unmount", s(&g.dir)]);
    if let Some(mut c) = g.child.take() {
        wait_until(30.0, "the mount process to exit", || {
            c.0.try_wait().unwrap().is_some()
        });
    }
}

/// `ccbt publish SRC` into the data dir `data`; returns the share id.
pub fn publish(data: &Path, src: &Path) -> String {
    ccbt_ok(&["-q", "--data-dir", s(data), "publish", s(src)])
        .trim()
        .to_string()
}

/// Publishes `src` from node A (`<dir>/A`) and seeds it: the share id, A's listen address and the
/// seeding process.
pub fn publish_and_seed(dir: &Path, src: &Path) -> (String, String, ChildGuard) {
    let adata = dir.join("A");
    let id = publish(&adata, src);
    let alisten = format!("127.0.0.1:{}", free_port());
    let a = spawn_ccbt(
        &["--data-dir", s(&adata), "seed", "--listen", &alisten],
        &dir.join("A.log"),
    );
    wait_listening(&alisten, 20);
    (id, alisten, a)
}

// ---- a private libtorrent DHT ----

/// libtorrent DHT nodes on loopback (tests/scripts/lt_dht.py), driven one JSON line at a time.
/// Node 0 starts the network; the others join through it. Killed on drop.
pub struct LtDht {
    _child: ChildGuard,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    pub nodes: Vec<String>,
}

impl LtDht {
    /// `n` nodes; `bootstrap`: join an existing network (a ccbt node) instead of starting one.
    pub fn start(n: usize, bootstrap: Option<&str>) -> LtDht {
        LtDht::start_with(n, bootstrap, false)
    }

    /// An IPv6 network (BEP 32): `n` nodes on `[::1]` only.
    pub fn start_v6(n: usize) -> LtDht {
        LtDht::start_with(n, None, true)
    }

    fn start_with(n: usize, bootstrap: Option<&str>, v6: bool) -> LtDht {
        require_libtorrent();
        let ports: Vec<String> = (0..n).map(|_| free_port().to_string()).collect();
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(root().join("tests/scripts/lt_dht.py"))
            .arg("--ports")
            .arg(ports.join(","));
        if let Some(b) = bootstrap {
            cmd.arg("--bootstrap").arg(b);
        }
        if v6 {
            cmd.arg("--v6");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start lt_dht.py");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut d = LtDht {
            _child: ChildGuard(child),
            stdin,
            lines,
            nodes: Vec::new(),
        };
        let ready = d.read(90);
        assert_eq!(ready["ready"], true, "lt_dht.py: {ready}");
        d.nodes = ready["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        d
    }

    fn read(&mut self, secs: u64) -> Value {
        let l = self
            .lines
            .recv_timeout(std::time::Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("lt_dht.py did not answer within {secs}s"));
        serde_json::from_str(&l).unwrap_or_else(|_| panic!("lt_dht.py said {l:?}"))
    }

    /// Runs one command (see lt_dht.py) and returns its answer (bounded at 120 s).
    pub fn cmd(&mut self, c: Value) -> Value {
        use std::io::Write;
        writeln!(self.stdin, "{c}").expect("write to lt_dht.py");
        let v = self.read(120);
        assert!(v.get("error").is_none(), "lt_dht.py {c}: {v}");
        v
    }
}

/// Fails the test unless the two trees are equal (`diff -r`, symlinks compared as links).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .args(["-r", "--no-dereference", s(a), s(b)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "trees differ: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}
