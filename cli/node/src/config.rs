//! The one place configuration is resolved: defaults, then `ccbt.toml` (working directory, else
//! `~/.config/ccbt/ccbt.toml`, or `--config FILE`), then `CCBT_*` environment variables; command-line
//! flags are applied last by the commands themselves. Key names follow the project's seed documents.

use crate::error::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub network: Network,
    pub disk: Disk,
    pub strategy: Strategy,
    pub discovery: Discovery,
    pub limits: Limits,
    pub observability: Observability,
    pub xet: Xet,
    pub fs: Fs,
    pub daemon: Daemon,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Daemon {
    /// The HTTP API's address (loopback; every request but /metrics carries the bearer token in
    /// `<data dir>/api-token`).
    pub api_listen: String,
    /// A folder where dropped `.torrent` and `.magnet` files are added (empty: off).
    pub watch_dir: PathBuf,
    /// Where torrents added from the watch folder download (empty: `<data dir>/downloads`).
    pub download_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    pub max_global_peers: u32,
    pub max_peers_per_torrent: u32,
    pub pipeline_depth: u32,
    pub block_size_kib: u32,
    pub listen_port: u16,
    /// MSE/PE: "prefer" (dial encrypted, accept both), "require" (RC4 only), "disable".
    pub encryption: String,
    /// Peer transports; uTP shares the listen port's UDP socket with the DHT.
    pub enable_tcp: bool,
    pub enable_utp: bool,
    /// Dial uTP first (else TCP first; the other is the fallback).
    pub prefer_utp: bool,
    /// Map the listen port on the home router, renew it, remove it at exit.
    pub port_mapping: bool,
    /// Which protocols to try, in order: "pcp", "natpmp", "upnp".
    pub port_mapping_protocols: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Disk {
    pub preallocate: String,
    pub write_batch_kib: u32,
    pub use_mmap: bool,
    /// 0 = one per core.
    pub hash_workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Strategy {
    pub piece_selection: String,
    pub endgame_duplicates: u32,
    pub streaming_mode: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Discovery {
    pub enable_dht: bool,
    pub enable_pex: bool,
    pub enable_udp_trackers: bool,
    /// `host:port` of DHT nodes to join through (default: the public routers).
    pub dht_bootstrap: Vec<String>,
    /// DHT routing-table entries from one IP address (0 = no limit, for loopback test networks).
    pub dht_max_nodes_per_ip: usize,
    /// DHT queries answered per source IP per second (0 = no limit).
    pub dht_queries_per_ip_per_sec: u32,
    /// How often a share's follower with no connected peer asks the DHT for a newer head.
    pub dht_head_poll_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// KiB/s, 0 = unlimited.
    pub global_down_kib: u64,
    pub global_up_kib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Observability {
    pub log_level: String,
    pub enable_metrics: bool,
    pub metrics_port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Xet {
    /// Versions of each share kept by `ccbt cas gc`.
    pub keep_versions: u32,
    /// Disk `ccbt sync` may spend on spare copies of large synced files, so the next change to
    /// one costs only its changed chunks instead of a full copy (MiB; 0 = off).
    pub sync_spare_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fs {
    /// Delay after the last close/fsync before a dirty file is published.
    pub publish_debounce_ms: u64,
    /// How long a read waits for missing chunks before failing with EIO.
    pub read_timeout_secs: u64,
    /// Kernel read-ahead of a mount in KiB (set through sysfs when running as root; 0 = the
    /// kernel's 128 KiB).
    pub read_ahead_kb: u32,
    /// Disk for local copies of large, fully local files that mounts hand to the kernel (FUSE
    /// passthrough) so reads run at native speed; 0 turns it off.
    pub file_cache_mib: u64,
    /// Every share mount has a read-only `.ccbt/history/<seq>/` of each version.
    pub history: bool,
    /// Chunk bytes the store may hold before mounts evict chunks that are not pinned, least
    /// recently read first, across all shares (0: no limit).
    pub cache_limit_mib: u64,
    /// `.ccbt` is listed in the mount's root (by default it resolves by name only, so `find`
    /// and `du` of the mount see the live tree alone).
    pub show_history: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            network: Network {
                max_global_peers: 200,
                max_peers_per_torrent: 50,
                pipeline_depth: 16,
                block_size_kib: 16,
                listen_port: 6881,
                encryption: "prefer".into(),
                enable_tcp: true,
                enable_utp: true,
                prefer_utp: false,
                port_mapping: true,
                port_mapping_protocols: vec!["pcp".into(), "natpmp".into(), "upnp".into()],
            },
            disk: Disk {
                preallocate: "sparse".into(),
                write_batch_kib: 64,
                use_mmap: false,
                hash_workers: 0,
            },
            strategy: Strategy {
                piece_selection: "rarest_first".into(),
                endgame_duplicates: 2,
                streaming_mode: false,
            },
            discovery: Discovery {
                enable_dht: true,
                enable_pex: true,
                enable_udp_trackers: true,
                dht_bootstrap: ccbt_dht::PUBLIC_ROUTERS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                dht_max_nodes_per_ip: 1,
                dht_queries_per_ip_per_sec: 20,
                dht_head_poll_secs: 60,
            },
            limits: Limits {
                global_down_kib: 0,
                global_up_kib: 0,
            },
            observability: Observability {
                log_level: "INFO".into(),
                enable_metrics: false,
                metrics_port: 9090,
            },
            xet: Xet {
                keep_versions: 10,
                sync_spare_mib: 4096,
            },
            daemon: Daemon {
                api_listen: "127.0.0.1:7881".into(),
                watch_dir: PathBuf::new(),
                download_dir: PathBuf::new(),
            },
            fs: Fs {
                publish_debounce_ms: 200,
                read_timeout_secs: 30,
                read_ahead_kb: 1024,
                file_cache_mib: 4096,
                history: true,
                show_history: false,
                cache_limit_mib: 0,
            },
        }
    }
}

macro_rules! defaults_from_config {
    ($($t:ident => $field:ident),*) => {
        $(impl Default for $t {
            fn default() -> Self {
                Config::default().$field
            }
        })*
    };
}
defaults_from_config!(Network => network, Disk => disk, Strategy => strategy,
    Discovery => discovery, Limits => limits, Observability => observability, Xet => xet, Fs => fs, Daemon => daemon);

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Default data directory: `~/.local/share/ccbt`.
pub fn default_data_dir() -> PathBuf {
    home()
        .map(|h| h.join(".local/share/ccbt"))
        .unwrap_or_else(|| PathBuf::from(".ccbt"))
}

impl Config {
    /// The file the configuration comes from, or where one would be read from: `--config`,
    /// else `./ccbt.toml` when it exists, else `~/.config/ccbt/ccbt.toml`.
    pub fn file_path(explicit: Option<&Path>) -> PathBuf {
        if let Some(p) = explicit {
            return p.to_path_buf();
        }
        let local = PathBuf::from("ccbt.toml");
        if local.is_file() {
            return std::fs::canonicalize(&local).unwrap_or(local);
        }
        home()
            .map(|h| h.join(".config/ccbt/ccbt.toml"))
            .unwrap_or(local)
    }

    /// Loads the configuration. An explicit `--config` file must exist; the implicit ones are optional.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => [
                Some(PathBuf::from("ccbt.toml")),
                home().map(|h| h.join(".config/ccbt/ccbt.toml")),
            ]
            .into_iter()
            .flatten()
            .find(|p| p.is_file()),
        };
        let mut cfg = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", p.display()))?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.encryption()?;
        cfg.port_mapping()?;
        if !cfg.network.enable_tcp && !cfg.network.enable_utp {
            crate::bail!("[network] enable_tcp and enable_utp are both false: turn one on");
        }
        Ok(cfg)
    }

    /// `[network] encryption` as a policy.
    pub fn encryption(&self) -> Result<ccbt_core::mse::Policy> {
        ccbt_core::mse::Policy::parse(&self.network.encryption).with_context(|| {
            format!(
                "[network] encryption = {:?}: use \"prefer\", \"require\" or \"disable\"",
                self.network.encryption
            )
        })
    }

    /// The port mapping protocols to try, in order (empty when mapping is off).
    pub fn port_mapping(&self) -> Result<Vec<ccbt_core::session::portmap::Method>> {
        if !self.network.port_mapping {
            return Ok(Vec::new());
        }
        self.network
            .port_mapping_protocols
            .iter()
            .map(|p| {
                p.parse().map_err(|e: String| {
                    crate::Error::msg(format!("[network] port_mapping_protocols: {e}"))
                })
            })
            .collect()
    }

    /// `CCBT_*` environment overrides (the names the seed documents use).
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn parse_bool(k: &str, v: &str) -> Result<bool> {
            match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => crate::bail!("environment variable {k}={v:?} is not true or false"),
            }
        }
        fn parse<T: std::str::FromStr>(k: &str, v: String) -> Result<T> {
            v.parse().map_err(|_| {
                crate::Error::msg(format!(
                    "environment variable {k}={v:?} is not a valid value"
                ))
            })
        }
        if let Some(v) = get("CCBT_MAX_PEERS") {
            self.network.max_global_peers = parse("CCBT_MAX_PEERS", v)?;
        }
        if let Some(v) = get("CCBT_LISTEN_PORT") {
            self.network.listen_port = parse("CCBT_LISTEN_PORT", v)?;
        }
        if let Some(v) = get("CCBT_PIECE_SELECTION") {
            self.strategy.piece_selection = v;
        }
        if let Some(v) = get("CCBT_DOWN_LIMIT") {
            self.limits.global_down_kib = parse("CCBT_DOWN_LIMIT", v)?;
        }
        if let Some(v) = get("CCBT_UP_LIMIT") {
            self.limits.global_up_kib = parse("CCBT_UP_LIMIT", v)?;
        }
        if let Some(v) = get("CCBT_LOG_LEVEL") {
            self.observability.log_level = v;
        }
        if let Some(v) = get("CCBT_KEEP_VERSIONS") {
            self.xet.keep_versions = parse("CCBT_KEEP_VERSIONS", v)?;
        }
        if let Some(v) = get("CCBT_FILE_CACHE_MIB") {
            self.fs.file_cache_mib = parse("CCBT_FILE_CACHE_MIB", v)?;
        }
        if let Some(v) = get("CCBT_CACHE_LIMIT_MIB") {
            self.fs.cache_limit_mib = parse("CCBT_CACHE_LIMIT_MIB", v)?;
        }
        if let Some(v) = get("CCBT_ENABLE_DHT") {
            self.discovery.enable_dht = parse_bool("CCBT_ENABLE_DHT", &v)?;
        }
        if let Some(v) = get("CCBT_ENCRYPTION") {
            self.network.encryption = v;
        }
        if let Some(v) = get("CCBT_ENABLE_TCP") {
            self.network.enable_tcp = parse_bool("CCBT_ENABLE_TCP", &v)?;
        }
        if let Some(v) = get("CCBT_ENABLE_UTP") {
            self.network.enable_utp = parse_bool("CCBT_ENABLE_UTP", &v)?;
        }
        if let Some(v) = get("CCBT_PORT_MAPPING") {
            self.network.port_mapping = parse_bool("CCBT_PORT_MAPPING", &v)?;
        }
        if let Some(v) = get("CCBT_PORT_MAPPING_PROTOCOLS") {
            self.network.port_mapping_protocols = v
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
        }
        if let Some(v) = get("CCBT_PREFER_UTP") {
            self.network.prefer_utp = parse_bool("CCBT_PREFER_UTP", &v)?;
        }
        if let Some(v) = get("CCBT_ENABLE_PEX") {
            self.discovery.enable_pex = parse_bool("CCBT_ENABLE_PEX", &v)?;
        }
        if let Some(v) = get("CCBT_DHT_BOOTSTRAP") {
            self.discovery.dht_bootstrap = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = get("CCBT_DHT_MAX_NODES_PER_IP") {
            self.discovery.dht_max_nodes_per_ip = parse("CCBT_DHT_MAX_NODES_PER_IP", v)?;
        }
        if let Some(v) = get("CCBT_DHT_QUERIES_PER_IP_PER_SEC") {
            self.discovery.dht_queries_per_ip_per_sec =
                parse("CCBT_DHT_QUERIES_PER_IP_PER_SEC", v)?;
        }
        if let Some(v) = get("CCBT_DHT_HEAD_POLL_SECS") {
            self.discovery.dht_head_poll_secs = parse("CCBT_DHT_HEAD_POLL_SECS", v)?;
        }
        if let Some(v) = get("CCBT_SYNC_SPARE_MIB") {
            self.xet.sync_spare_mib = parse("CCBT_SYNC_SPARE_MIB", v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env() {
        let mut c: Config =
            toml::from_str("[limits]\nglobal_down_kib = 5\n[network]\nlisten_port = 7000\n")
                .unwrap();
        assert_eq!(c.limits.global_down_kib, 5);
        assert_eq!(c.network.pipeline_depth, 16);
        c.apply_env(|k| (k == "CCBT_LISTEN_PORT").then(|| "7001".to_string()))
            .unwrap();
        assert_eq!(c.network.listen_port, 7001);
        assert!(c
            .apply_env(|k| (k == "CCBT_UP_LIMIT").then(|| "fast".to_string()))
            .is_err());
    }

    #[test]
    fn unknown_keys_rejected() {
        assert!(toml::from_str::<Config>("[network]\nlisten_prot = 1\n").is_err());
    }
}
