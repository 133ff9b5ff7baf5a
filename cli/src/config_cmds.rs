//! `ccbt config show | get KEY | set KEY VALUE`: the effective configuration, one key of it, and
//! edits of the config file that keep its comments and layout (a running daemon reloads it).
//! Keys are `section.key`, as in the file: `limits.global_down_kib`.

use crate::Ctx;
use anyhow::{Context, Result};
use ccbt_node::config::Config;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// The effective configuration (defaults, file, environment) as TOML
    Show,
    /// One key's effective value (`section.key`)
    Get { key: String },
    /// Set a key in the config file (created if missing); a running daemon picks it up
    Set { key: String, value: String },
}

fn effective(ctx: &Ctx) -> Result<toml::Table> {
    Ok(toml::Table::try_from(&ctx.config)?)
}

fn split(key: &str) -> Result<(&str, &str)> {
    key.split_once('.')
        .filter(|(s, k)| !s.is_empty() && !k.is_empty() && !k.contains('.'))
        .with_context(|| format!("{key:?}: give section.key, for example limits.global_down_kib"))
}

pub fn config(ctx: &Ctx, cmd: ConfigCmd, explicit: Option<&Path>) -> Result<()> {
    match cmd {
        ConfigCmd::Show => {
            if ctx.json {
                outln!("{}", serde_json::to_string_pretty(&ctx.config)?);
            } else {
                outln!("# from {}", Config::file_path(explicit).display());
                outln!("{}", toml::to_string_pretty(&ctx.config)?.trim_end());
            }
        }
        ConfigCmd::Get { key } => {
            let (sec, k) = split(&key)?;
            let t = effective(ctx)?;
            let v = t
                .get(sec)
                .and_then(|s| s.get(k))
                .with_context(|| format!("no key {key} (`ccbt config show` lists them)"))?;
            if ctx.json {
                outln!("{}", serde_json::to_string(v)?);
            } else {
                match v {
                    toml::Value::String(s) => outln!("{s}"),
                    v => outln!("{v}"),
                }
            }
        }
        ConfigCmd::Set { key, value } => {
            let (sec, k) = split(&key)?;
            let path = Config::file_path(explicit);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            let mut doc: toml_edit::DocumentMut = text
                .parse()
                .with_context(|| format!("{} is not valid TOML; fix it first", path.display()))?;
            // The value as TOML (number, bool, array), else as a string.
            let item: toml_edit::Value = value
                .parse()
                .unwrap_or_else(|_| toml_edit::Value::from(value.as_str()));
            if !doc.contains_key(sec) {
                doc[sec] = toml_edit::table();
            }
            doc[sec][k] = toml_edit::value(item);
            let new = doc.to_string();
            // Checked the way the daemon will read it: a bad key or type is refused here.
            let parsed: Config =
                toml::from_str(&new).with_context(|| format!("{key} = {value} is not accepted"))?;
            parsed.encryption()?;
            parsed.port_mapping()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("toml.tmp");
            std::fs::write(&tmp, &new)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)?;
            if !ctx.quiet {
                outln!(
                    "{key} = {} in {}",
                    doc[sec][k].to_string().trim(),
                    path.display()
                );
            }
        }
    }
    Ok(())
}
