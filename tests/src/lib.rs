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

/// Runs ccbt with `args`, returning its output.
pub fn ccbt(args: &[&str]) -> Output {
    Command::new(ccbt_bin())
        .args(args)
        .env_remove("CCBT_DATA_DIR")
        .output()
        .expect("run ccbt")
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
    require_libtorrent();
    let o = Command::new("/usr/bin/python3")
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
