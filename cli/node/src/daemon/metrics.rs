//! Prometheus metrics (text exposition format, `prometheus-client`), with the seed's names.
//! Values are read from the session, the shares and the DHT when scraped; counters advance by
//! what each item moved since the last scrape (so removing an item never makes one go back).

use super::{Daemon, Kind};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

type GaugeF = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    download_rate: GaugeF,
    upload_rate: GaugeF,
    peers: Gauge,
    pieces: Gauge,
    disk_queue: Gauge,
    hash_queue: Gauge,
    torrents: Gauge,
    shares: Gauge,
    versions: Gauge,
    downloaded: Counter,
    uploaded: Counter,
    chunks_fetched: Counter,
    chunks_served: Counter,
    dht_nodes: Gauge,
    dht_queries_in: Counter,
    dht_queries_out: Counter,
    latency_p99: GaugeF,
    cas_chunks: Gauge,
    cas_chunk_bytes: Gauge,
    cas_node_bytes: Gauge,
    cas_files_held: Gauge,
    dedup_bytes: Counter,
    /// Per item: the totals seen at the last scrape (downloaded, uploaded).
    seen: Mutex<HashMap<String, (u64, u64)>>,
    /// Share and DHT totals seen at the last scrape.
    seen_global: Mutex<[u64; 5]>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("ccbt"),
            download_rate: GaugeF::default(),
            upload_rate: GaugeF::default(),
            peers: Gauge::default(),
            pieces: Gauge::default(),
            disk_queue: Gauge::default(),
            hash_queue: Gauge::default(),
            torrents: Gauge::default(),
            shares: Gauge::default(),
            versions: Gauge::default(),
            downloaded: Counter::default(),
            uploaded: Counter::default(),
            chunks_fetched: Counter::default(),
            chunks_served: Counter::default(),
            dht_nodes: Gauge::default(),
            dht_queries_in: Counter::default(),
            dht_queries_out: Counter::default(),
            latency_p99: GaugeF::default(),
            cas_chunks: Gauge::default(),
            cas_chunk_bytes: Gauge::default(),
            cas_node_bytes: Gauge::default(),
            cas_files_held: Gauge::default(),
            dedup_bytes: Counter::default(),
            seen: Mutex::new(HashMap::new()),
            seen_global: Mutex::new([0; 5]),
        };
        // Names without the prefix (the registry adds `ccbt_`; counters get `_total`).
        let r = &mut m.registry;
        r.register(
            "download_rate_bytes_per_second",
            "Payload download rate over all torrents",
            m.download_rate.clone(),
        );
        r.register(
            "upload_rate_bytes_per_second",
            "Payload upload rate over all torrents",
            m.upload_rate.clone(),
        );
        r.register(
            "connected_peers",
            "Peers connected to torrents and share swarms",
            m.peers.clone(),
        );
        r.register(
            "pieces_completed",
            "Verified pieces over all torrents",
            m.pieces.clone(),
        );
        r.register(
            "disk_queue_depth",
            "Blocks queued for the disk workers",
            m.disk_queue.clone(),
        );
        r.register(
            "hash_queue_depth",
            "Blocks queued for hashing (hashed as they are written: the disk queue)",
            m.hash_queue.clone(),
        );
        r.register("torrents", "Torrents the daemon holds", m.torrents.clone());
        r.register("shares", "Shares in the data dir", m.shares.clone());
        r.register(
            "share_versions",
            "Sum of the newest version numbers of the shares",
            m.versions.clone(),
        );
        r.register(
            "downloaded_bytes",
            "Payload bytes downloaded",
            m.downloaded.clone(),
        );
        r.register(
            "uploaded_bytes",
            "Payload bytes uploaded",
            m.uploaded.clone(),
        );
        r.register(
            "chunks_fetched",
            "Share chunks fetched from peers",
            m.chunks_fetched.clone(),
        );
        r.register(
            "chunks_served",
            "Share chunks served to peers",
            m.chunks_served.clone(),
        );
        r.register(
            "dht_nodes",
            "Nodes in the DHT routing table",
            m.dht_nodes.clone(),
        );
        r.register(
            "dht_queries_received",
            "DHT queries received",
            m.dht_queries_in.clone(),
        );
        r.register(
            "dht_queries_sent",
            "DHT queries sent",
            m.dht_queries_out.clone(),
        );
        r.register(
            "runtime_latency_p99_seconds",
            "99th percentile of the async runtime's scheduling lateness",
            m.latency_p99.clone(),
        );
        r.register(
            "cas_chunks",
            "Chunks in the content-addressed store",
            m.cas_chunks.clone(),
        );
        r.register(
            "cas_chunk_bytes",
            "Chunk bytes in the content-addressed store",
            m.cas_chunk_bytes.clone(),
        );
        r.register(
            "cas_node_bytes",
            "Merkle node bytes in the content-addressed store",
            m.cas_node_bytes.clone(),
        );
        r.register(
            "cas_files_held",
            "Large files served in P2P CAS swarms of their own",
            m.cas_files_held.clone(),
        );
        r.register(
            "dedup_bytes",
            "Share bytes found already in the store instead of fetched",
            m.dedup_bytes.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Reads everything now and encodes the text format.
pub async fn render(d: &Daemon) -> String {
    let m = &d.metrics;
    let items = d.list();
    let (mut down, mut up, mut pieces, mut peers, mut torrents) = (0.0, 0.0, 0i64, 0i64, 0i64);
    {
        let mut seen = m.seen.lock().unwrap();
        let mut live = std::collections::HashSet::new();
        for v in &items {
            peers += v.peers as i64;
            if v.item.kind == Kind::Torrent {
                torrents += 1;
                down += v.download_rate;
                up += v.upload_rate;
                pieces += v.pieces_have as i64;
                let e = seen.entry(v.item.id.clone()).or_insert((0, 0));
                m.downloaded.inc_by(v.downloaded.saturating_sub(e.0));
                m.uploaded.inc_by(v.uploaded.saturating_sub(e.1));
                *e = (v.downloaded.max(e.0), v.uploaded.max(e.1));
                live.insert(v.item.id.clone());
            }
        }
        seen.retain(|k, _| live.contains(k));
    }
    m.download_rate.set(down);
    m.upload_rate.set(up);
    m.pieces.set(pieces);
    m.peers.set(peers);
    m.torrents.set(torrents);
    let q = d.node.session.disk_queue_depth() as i64;
    m.disk_queue.set(q);
    m.hash_queue.set(q);
    let shares = d.node.shares.list().unwrap_or_default();
    m.shares.set(shares.len() as i64);
    m.versions
        .set(shares.iter().map(|(_, r)| r.seq as i64).sum());
    let (mut fetched, mut served, mut dedup) = (0u64, 0u64, 0u64);
    for (id, _) in &shares {
        let c = d.node.xet.counters(id);
        fetched += c.fetched_chunks;
        served += c.served_chunks;
        dedup += c.dedup_bytes;
    }
    {
        let mut g = m.seen_global.lock().unwrap();
        m.chunks_fetched.inc_by(fetched.saturating_sub(g[0]));
        m.chunks_served.inc_by(served.saturating_sub(g[1]));
        m.dedup_bytes.inc_by(dedup.saturating_sub(g[4]));
        g[0] = g[0].max(fetched);
        g[1] = g[1].max(served);
        g[4] = g[4].max(dedup);
    }
    if let Ok(st) = d.node.shares.store.stats() {
        m.cas_chunks.set(st.chunk_count as i64);
        m.cas_chunk_bytes.set(st.chunk_bytes as i64);
        m.cas_node_bytes.set(st.node_bytes as i64);
    }
    m.cas_files_held.set(d.node.xet.held_files().len() as i64);
    if let Some(dht) = &d.node.dht {
        if let Ok(Ok(s)) =
            tokio::time::timeout(std::time::Duration::from_secs(1), dht.status()).await
        {
            m.dht_nodes.set(s.nodes as i64);
            let (qi, qo) = (s.stats.queries_in, s.stats.queries_out);
            let mut g = m.seen_global.lock().unwrap();
            m.dht_queries_in.inc_by(qi.saturating_sub(g[2]));
            m.dht_queries_out.inc_by(qo.saturating_sub(g[3]));
            g[2] = g[2].max(qi);
            g[3] = g[3].max(qo);
        }
    }
    m.latency_p99
        .set(d.node.session.runtime_latency().p99_ms / 1000.0);
    let mut out = String::new();
    let _ = encode(&mut out, &m.registry);
    let mut text = to_text_format(&out);
    text.push_str(&mount_read_histogram());
    text
}

/// `ccbt_mount_read_seconds`: the latency of mount reads served by the daemon (passthrough reads
/// bypass it), written by hand in the text format (the observations are made in `ccbt-fs`, which
/// keeps lock-free counters rather than depend on a metrics crate).
fn mount_read_histogram() -> String {
    let (buckets, sum, count) = ccbt_fs::stats::snapshot();
    let mut s = String::from(
        "# HELP ccbt_mount_read_seconds Latency of share-mount reads served by the daemon\n\
         # TYPE ccbt_mount_read_seconds histogram\n",
    );
    for (le, n) in buckets {
        let le = if le.is_infinite() {
            "+Inf".to_string()
        } else {
            le.to_string()
        };
        s.push_str(&format!(
            "ccbt_mount_read_seconds_bucket{{le=\"{le}\"}} {n}\n"
        ));
    }
    s.push_str(&format!(
        "ccbt_mount_read_seconds_sum {sum}\nccbt_mount_read_seconds_count {count}\n"
    ));
    s
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4), which every scraper and
/// `promtool check metrics` read: a counter family's HELP and TYPE name its `_total` sample,
/// and there is no `# EOF`.
fn to_text_format(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for l in om.lines() {
        if l == "# EOF" {
            continue;
        }
        let fixed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(fixed.as_deref().unwrap_or(l));
        out.push('\n');
    }
    out
}
