//! Link settings that keep an idle daemon's resident code small (docs/performance.md, "Daemon
//! idle cost"). The kernel maps a binary's code 64 KiB around each page it faults in, so what
//! counts is how close together the code a daemon runs lies, not how much of it there is.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=CC");
    // rust-lld is this target's default linker since Rust 1.90; the flags below are lld's.
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return;
    }
    // The functions an idle daemon ran (`scripts/link-order.sh`, under callgrind) go first, in
    // one block: about 4,500 functions spread over 17 MB of text kept 13 MiB of it resident.
    // Names this build no longer has are skipped.
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("link-order.txt");
    if order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    // Relative relocations packed (DT_RELR, glibc 2.36): the loader reads a few KiB at start
    // instead of 760 KiB of `.rela.dyn`, which stayed resident.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // The C++ runtime RocksDB needs, linked statically: the shared libstdc++ kept 1.4 MiB
    // resident (its symbol tables, read when the loader binds every symbol at start), where the
    // few functions RocksDB calls take a few pages. librocksdb-sys asks for `-lstdc++`; a file of
    // that name in a search directory of ours, which the linker reads before the compiler's own,
    // is the static archive (lld tells an archive by its contents, not its name).
    if let Some(archive) = static_libstdcxx() {
        let dir = PathBuf::from(env::var("OUT_DIR").unwrap()).join("static-cxx");
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("libstdc++.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&archive, &link).unwrap();
        println!("cargo:rustc-link-search=native={}", dir.display());
    } else {
        println!(
            "cargo:warning=libstdc++.a not found (Debian: libstdc++-12-dev); linking the shared C++ runtime"
        );
    }
}

/// The compiler's static C++ runtime, if installed.
fn static_libstdcxx() -> Option<PathBuf> {
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .arg("-print-file-name=libstdc++.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Not found, the compiler prints the bare name back.
    (path.is_absolute() && path.exists()).then_some(path)
}
