//! Port mapping behind a NAT router the test builds: three network namespaces (the client where
//! ccbt seeds, the router running miniupnpd with NAT-PMP and nftables, the "internet" outside),
//! joined by veth pairs. The mapping appears in the router's rules, a peer outside downloads
//! through the mapped port, and the mapping is gone after ccbt exits cleanly. Nothing here
//! touches a real network: the namespaces have only the links the test makes.

use ccbt_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Net {
    ns: [String; 3],
    router: Option<std::process::Child>,
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(mut r) = self.router.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn in_ns(ns: &str, cmd: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, cmd]);
    c
}

/// client 10.9.0.2 -- 10.9.0.1 router 11.9.0.1 -- 11.9.0.2 outside
fn build(dir: &std::path::Path, daemon_opts: &str) -> Net {
    require("miniupnpd", "miniupnpd-nftables");
    require("nft", "nftables");
    // Tests run in parallel: each builds its own namespaces and links.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let tag = format!(
        "{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let ns = ["c", "r", "o"].map(|n| format!("ccbt{tag}{n}"));
    let mut net = Net { ns, router: None };
    let [c, r, o] = net.ns.clone();
    for n in &net.ns {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    let (vc, vrc, vo, vro) = (
        format!("c{tag}"),
        format!("rc{tag}"),
        format!("o{tag}"),
        format!("ro{tag}"),
    );
    ip(&["link", "add", &vc, "type", "veth", "peer", "name", &vrc]);
    ip(&["link", "set", &vc, "netns", &c]);
    ip(&["link", "set", &vrc, "netns", &r]);
    ip(&["link", "add", &vo, "type", "veth", "peer", "name", &vro]);
    ip(&["link", "set", &vo, "netns", &o]);
    ip(&["link", "set", &vro, "netns", &r]);
    ip(&["-n", &r, "addr", "add", "10.9.0.1/24", "dev", &vrc]);
    ip(&["-n", &r, "addr", "add", "11.9.0.1/24", "dev", &vro]);
    ip(&["-n", &r, "link", "set", &vrc, "up"]);
    ip(&["-n", &r, "link", "set", &vro, "up"]);
    ip(&["-n", &c, "addr", "add", "10.9.0.2/24", "dev", &vc]);
    ip(&["-n", &c, "link", "set", &vc, "up"]);
    ip(&["-n", &c, "route", "add", "default", "via", "10.9.0.1"]);
    ip(&["-n", &o, "addr", "add", "11.9.0.2/24", "dev", &vo]);
    ip(&["-n", &o, "link", "set", &vo, "up"]);
    assert!(in_ns(&r, "sysctl")
        .args(["-q", "net.ipv4.ip_forward=1"])
        .status()
        .unwrap()
        .success());
    // The chains miniupnpd fills, and masquerading out of the router.
    let rules = dir.join("router.nft");
    std::fs::write(
        &rules,
        format!(
            "table inet filter {{
  chain forward {{ type filter hook forward priority 0; policy accept; jump miniupnpd; }}
  chain miniupnpd {{ }}
  chain prerouting {{ type nat hook prerouting priority -100; jump prerouting_miniupnpd; }}
  chain postrouting {{ type nat hook postrouting priority 100; oifname \"{vro}\" masquerade; jump postrouting_miniupnpd; }}
  chain prerouting_miniupnpd {{ }}
  chain postrouting_miniupnpd {{ }}
}}
"
        ),
    )
    .unwrap();
    assert!(in_ns(&r, "nft")
        .arg("-f")
        .arg(&rules)
        .status()
        .unwrap()
        .success());
    let conf = dir.join("miniupnpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ext_ifname={vro}\nlistening_ip={vrc}\n{daemon_opts}secure_mode=yes\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
             allow 1024-65535 10.9.0.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("miniupnpd.log")).unwrap();
    net.router = Some(
        in_ns(&r, "miniupnpd")
            .arg("-f")
            .arg(&conf)
            .arg("-d")
            // Its own pid file: the default one is shared by the tests running in parallel.
            .arg("-P")
            .arg(dir.join("miniupnpd.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // Ready once it says so (a loaded machine starts it slowly).
    let log = dir.join("miniupnpd.log");
    let t0 = std::time::Instant::now();
    loop {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        if l.contains("Listening for NAT-PMP/PCP") || l.contains("HTTP listening on port") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "miniupnpd did not start listening within 20 s:\n{l}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    net
}

fn router_rules(net: &Net) -> String {
    let o = in_ns(&net.ns[1], "nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// PCP first, as by default: miniupnpd speaks it.
#[test]
fn pcp_maps_the_port_a_peer_outside_connects_and_exit_removes_it() {
    mapping_case(
        "enable_natpmp=yes\nenable_upnp=no\n",
        "pcp,natpmp,upnp",
        "PCP",
    );
}

/// NAT-PMP alone (a router that speaks only it; miniupnpd answers both versions).
#[test]
fn nat_pmp_maps_the_port_a_peer_outside_connects_and_exit_removes_it() {
    mapping_case("enable_natpmp=yes\nenable_upnp=no\n", "natpmp", "NAT-PMP");
}

/// A router with UPnP IGD only: PCP and NAT-PMP get no answer, SSDP finds the gateway, and
/// SOAP maps and unmaps the port.
#[test]
fn upnp_igd_maps_the_port_after_pcp_and_nat_pmp_fail() {
    mapping_case(
        "enable_natpmp=no\nenable_upnp=yes\n",
        "pcp,natpmp,upnp",
        "UPnP",
    );
}

fn mapping_case(router: &str, protocols: &str, used: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let net = build(root, router);
    make_tree(&root.join("seed/data"), &[("a.bin", 2_000_003)]);
    let t = root.join("t.torrent");
    ccbt_ok(&[
        "create",
        s(&root.join("seed/data")),
        "--v1",
        "-o",
        s(&t),
        "-q",
    ]);
    let port = free_port();
    let log = root.join("seed.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut seed = in_ns(&net.ns[0], s(&ccbt_bin()))
        .env("CCBT_ENABLE_DHT", "false")
        .env("CCBT_DHT_BOOTSTRAP", "")
        .env("CCBT_PORT_MAPPING", "true")
        .env("CCBT_PORT_MAPPING_PROTOCOLS", protocols)
        .args([
            "--data-dir",
            s(&root.join("sd")),
            "seed",
            s(&t),
            s(&root.join("seed")),
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--no-trackers",
        ])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let dport = format!("dport {port} ");
    wait_until(30.0, "the mapping in the router's rules", || {
        router_rules(&net).contains(&dport)
    });
    wait_until(10.0, "ccbt to report its external address", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!(
                "reachable at 11.9.0.1:{port} ({used} on 10.9.0.1)"
            ))
    });
    // A peer on the outside reaches ccbt through the router's external address.
    let o = in_ns(&net.ns[2], s(&ccbt_bin()))
        .env("CCBT_ENABLE_DHT", "false")
        .env("CCBT_DHT_BOOTSTRAP", "")
        .env("CCBT_PORT_MAPPING", "false")
        .args([
            "--json",
            "--data-dir",
            s(&root.join("od")),
            "download",
            s(&t),
            "-o",
            s(&root.join("dl")),
            "--listen",
            "0.0.0.0:0",
            "--no-trackers",
            "--peer",
            &format!("11.9.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(same_file(
        &root.join("seed/data/a.bin"),
        &root.join("dl/data/a.bin")
    ));
    // A clean exit removes the mapping.
    Command::new("kill")
        .args(["-TERM", &seed.id().to_string()])
        .status()
        .unwrap();
    let _ = seed.wait();
    wait_until(10.0, "the mapping to be removed", || {
        !router_rules(&net).contains(&dport)
    });
}
