//! Two sessions in one process, talking over loopback: a seeder and a leecher of a torrent made
//! here; the leecher's bytes must equal the seeder's. A third connection that only idles must not
//! stop it, and a peer that sends garbage is banned by address.

use ccbt_core::create::{create_torrent, CreateOptions};
use ccbt_core::extension::Registry;
use ccbt_core::session::{Session, SessionConfig, TorrentConfig};
use std::io::Write;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_and_a_leecher_in_one_process() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("seed/payload");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.bin"), data(3_000_001, 1)).unwrap();
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/b.txt"), data(12_345, 2)).unwrap();
    let meta = create_torrent(&src, &CreateOptions::default(), &AtomicU64::new(0)).unwrap();

    let a = Session::start(SessionConfig::default(), Registry::default())
        .await
        .unwrap();
    let seeding = a
        .add_torrent(
            meta.clone(),
            TorrentConfig {
                out_dir: t.path().join("seed"),
                seed: true,
                use_trackers: false,
                data_dir: None,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(seeding.stats().complete, "the seeder rechecks its data");

    // A peer that handshakes and then sends garbage, from its own address (bans are by IP).
    let ih = seeding.info_hash();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.9:0".parse().unwrap()).unwrap();
    let mut junk = sock
        .connect(a.listen_addr())
        .await
        .unwrap()
        .into_std()
        .unwrap();
    junk.set_nonblocking(false).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&ih);
    hs.extend_from_slice(b"-JK0001-junkjunkjunk");
    junk.write_all(&hs).unwrap();
    junk.write_all(&[0, 0, 0, 5, 6, 0, 0, 0, 1]).unwrap(); // a request cut short: malformed

    let b = Session::start(SessionConfig::default(), Registry::default())
        .await
        .unwrap();
    let leech = b
        .add_torrent(
            meta,
            TorrentConfig {
                out_dir: t.path().join("leech"),
                peers: vec![a.listen_addr()],
                use_trackers: false,
                data_dir: None,
                ..Default::default()
            },
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), leech.finished())
        .await
        .expect("the leecher finishes within 60 s");
    let st = leech.stats();
    assert!(st.complete, "{st:?}");
    for f in ["a.bin", "sub/b.txt"] {
        assert_eq!(
            std::fs::read(t.path().join("leech/payload").join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(seeding.stats().uploaded >= 3_000_001);
    assert_eq!(seeding.stats().banned, 1, "the garbage peer is banned");
    seeding.stop();
    tokio::time::timeout(Duration::from_secs(10), seeding.finished())
        .await
        .expect("the seeder stops");
}
