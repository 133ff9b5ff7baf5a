//! What every node and command shares: the resolved configuration, the data dir, the DHT
//! choice, the process's async runtime and its one DHT node.

use crate::config::Config;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The async runtime every networked command runs on: one per process, so the DHT node started
/// to resolve a magnet keeps running for the download that follows.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::msg(format!("cannot start the async runtime: {e}")))?;
    Ok(RT.get_or_init(|| rt))
}

/// Settings every node sees.
pub struct Env {
    pub config: Config,
    pub data_dir: PathBuf,
    /// `--dht-bootstrap` nodes (`None`: the config's).
    pub dht_bootstrap: Option<Vec<String>>,
    pub no_dht: bool,
    /// `--config` as given.
    pub config_file: Option<PathBuf>,
    /// Progress notes for a person at a terminal go to stderr ([`Env::note`]); off for `--quiet`
    /// and in the daemon, where they go to the log.
    pub notes: bool,
    /// The process's DHT node, started on first use ([`Env::dht`]).
    dht: std::sync::OnceLock<Option<ccbt_dht::Dht>>,
}

impl Env {
    pub fn new(
        config: Config,
        data_dir: PathBuf,
        dht_bootstrap: Option<Vec<String>>,
        no_dht: bool,
        config_file: Option<PathBuf>,
        notes: bool,
    ) -> Env {
        Env {
            config,
            data_dir,
            dht_bootstrap,
            no_dht,
            config_file,
            notes,
            dht: std::sync::OnceLock::new(),
        }
    }

    /// A progress note: on stderr for a person, else in the log.
    pub fn note(&self, msg: &str) {
        if self.notes {
            eprintln!("{msg}");
        } else {
            tracing::info!("{msg}");
        }
    }

    /// `--listen` if given, else every interface on `[network] listen_port`.
    pub fn listen(&self, flag: Option<SocketAddr>) -> SocketAddr {
        flag.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.config.network.listen_port)))
    }

    /// The BitTorrent session's settings from the config (limits, disk workers) on `listen`.
    pub fn session_config(&self, listen: SocketAddr) -> ccbt_core::session::SessionConfig {
        ccbt_core::session::SessionConfig {
            listen,
            global_down: self.config.limits.global_down_kib * 1024,
            global_up: self.config.limits.global_up_kib * 1024,
            hash_workers: self.config.disk.hash_workers,
            pex: self.config.discovery.enable_pex,
            encryption: self.config.encryption().unwrap_or_default(),
            enable_tcp: self.config.network.enable_tcp,
            enable_utp: self.config.network.enable_utp,
            prefer_utp: self.config.network.prefer_utp,
            port_mapping: self.config.port_mapping().unwrap_or_default(),
        }
    }

    /// Whether the DHT is on: `--no-dht` and `enable_dht = false` turn it off, `--dht-bootstrap`
    /// turns it on.
    pub fn dht_enabled(&self) -> bool {
        !self.no_dht && (self.config.discovery.enable_dht || self.dht_bootstrap.is_some())
    }

    /// The process's DHT node, started on first use with its UDP socket on `listen` (the peer
    /// port). `None` when the DHT is off, or when its socket cannot be opened (said once).
    pub fn dht(&self, listen: SocketAddr) -> Option<ccbt_dht::Dht> {
        self.dht
            .get_or_init(|| {
                if !self.dht_enabled() {
                    return None;
                }
                let d = &self.config.discovery;
                let bootstrap = self.bootstrap_list();
                let _ = std::fs::create_dir_all(&self.data_dir);
                let cfg = ccbt_dht::DhtConfig {
                    bind: listen,
                    bootstrap,
                    state_file: Some(self.data_dir.join("dht.dat")),
                    settings: ccbt_dht::node::Settings {
                        max_nodes_per_ip: d.dht_max_nodes_per_ip,
                        queries_per_ip_per_sec: d.dht_queries_per_ip_per_sec,
                        read_only: false,
                    },
                };
                let rt = runtime().ok()?;
                let _in = rt.enter();
                match ccbt_dht::Dht::start(cfg) {
                    Ok(dht) => Some(dht),
                    Err(e) => {
                        eprintln!("warning: the DHT is off: {e}");
                        None
                    }
                }
            })
            .clone()
    }

    /// Where the DHT bootstraps from.
    pub fn bootstrap_list(&self) -> Vec<String> {
        self.dht_bootstrap
            .clone()
            .unwrap_or_else(|| self.config.discovery.dht_bootstrap.clone())
    }

    /// The DHT node if one was started (without starting one).
    pub fn dht_started(&self) -> Option<ccbt_dht::Dht> {
        self.dht.get().cloned().flatten()
    }

    /// The DHT as the session's peer source.
    pub fn discovery(
        &self,
        listen: SocketAddr,
    ) -> Option<ccbt_core::session::discovery::DiscoveryHandle> {
        self.dht(listen)
            .map(|d| ccbt_core::session::discovery::DiscoveryHandle(std::sync::Arc::new(d)))
    }

    /// What to tell a user whose share was not found: where we looked and what else to try.
    pub fn no_source_hint(&self) -> String {
        match self.dht_started() {
            Some(_) => " on the DHT or from peers (is the owner's node running? --peer ADDR or --tracker URL help too)".into(),
            None => " (the DHT is off: give --peer ADDR or --tracker URL, or turn the DHT on)".into(),
        }
    }

    /// Before exit: port mappings removed, the DHT's routing table saved for the next run
    /// (bounded).
    pub fn finish(&self) {
        // Port mappings go with the process (bounded: half a second per mapping).
        ccbt_core::session::portmap::remove_all();
        if let (Some(d), Ok(rt)) = (self.dht_started(), runtime()) {
            let _ = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(2), d.save()).await
            });
        }
    }
}
