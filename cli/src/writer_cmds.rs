//! Several writers per share: `ccbt keygen` and `ccbt share add-writer | remove-writer | writers`.

use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_core::encoding::{hex_array, to_hex};
use ccbt_xet::head::{parse_share_id, share_id_hex, ShareId};
use ccbt_xet::shares::Shares;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ShareCmd {
    /// Authorize a writer key (from `ccbt keygen` on the writer's node); owner only
    AddWriter(WriterArgs),
    /// Stop accepting a writer's new versions (what it wrote so far stays); owner only
    RemoveWriter(WriterArgs),
    /// The writers a share authorizes, and their newest versions held here
    Writers { share: String },
}

#[derive(Args)]
pub struct WriterArgs {
    /// Share id
    pub share: String,
    /// The writer's public key (64 hex characters)
    pub key: String,
}

fn open_owner(ctx: &Ctx) -> Result<Shares> {
    match Shares::open(&ctx.data_dir) {
        Err(ccbt_xet::shares::ShareError::Cas(ccbt_cas::CasError::Locked(_))) => bail!(
            "the data dir {} is in use by a running node: stop the owner's mount (or the daemon \
             or seeder) and run the command again",
            ctx.data_dir.display()
        ),
        r => r.with_context(|| format!("cannot open the data dir {}", ctx.data_dir.display())),
    }
}

fn share_arg(s: &str) -> Result<ShareId> {
    parse_share_id(s).with_context(|| format!("{s:?} is not a share id"))
}

fn key_arg(s: &str) -> Result<[u8; 32]> {
    hex_array(s.trim()).with_context(|| {
        format!("{s:?} is not a writer key (64 hex characters, as `ccbt keygen` prints)")
    })
}

/// `ccbt keygen`: this data dir's writer key (made on first use); prints the public half.
pub fn keygen(ctx: &Ctx) -> Result<()> {
    std::fs::create_dir_all(ctx.data_dir.join("keys"))?;
    // The key file only: works while a node holds the store.
    let shares = Shares::open_read_only(&ctx.data_dir).or_else(|_| Shares::open(&ctx.data_dir));
    let key = match shares {
        Ok(s) => s.writer_key(true)?,
        Err(e) => bail!("cannot open the data dir {}: {e}", ctx.data_dir.display()),
    }
    .expect("created");
    println!("{}", to_hex(&key.verifying_key().to_bytes()));
    if !ctx.quiet {
        eprintln!(
            "this node's writer key (kept in {}); give it to a share's owner: \
             ccbt share add-writer <share> <key>",
            ctx.data_dir.join("keys/writer.key").display()
        );
    }
    Ok(())
}

pub fn share_cmd(ctx: &Ctx, c: ShareCmd) -> Result<()> {
    match c {
        ShareCmd::AddWriter(a) => set(ctx, &a, true),
        ShareCmd::RemoveWriter(a) => set(ctx, &a, false),
        ShareCmd::Writers { share } => list(ctx, &share),
    }
}

fn set(ctx: &Ctx, a: &WriterArgs, add: bool) -> Result<()> {
    let id = share_arg(&a.share)?;
    let key = key_arg(&a.key)?;
    let shares = open_owner(ctx)?;
    let head = shares
        .head(&id, None)
        .with_context(|| format!("share {} is not in this data dir", share_id_hex(&id)))?;
    let mut w = head.value.writers.clone();
    if add {
        if w.contains(&key) {
            bail!("{} is already a writer of the share", to_hex(&key));
        }
        if key == head.public_key {
            bail!("that is the owner's own key; the owner always writes");
        }
        w.push(key);
    } else {
        if !w.contains(&key) {
            bail!("{} is not a writer of the share", to_hex(&key));
        }
        w.retain(|k| k != &key);
    }
    let h = shares.set_writers(&id, w)?;
    println!(
        "share {} version {}: {} writer(s) besides the owner",
        share_id_hex(&id),
        h.seq,
        h.value.writers.len()
    );
    Ok(())
}

fn list(ctx: &Ctx, share: &str) -> Result<()> {
    let id = share_arg(share)?;
    let shares = Shares::open_read_only(&ctx.data_dir)
        .with_context(|| format!("cannot open the data dir {}", ctx.data_dir.display()))?;
    let head = shares
        .head(&id, None)
        .with_context(|| format!("share {} is not in this data dir", share_id_hex(&id)))?;
    let held = shares.writer_heads(&head)?;
    println!("owner  {}  version {}", to_hex(&head.public_key), head.seq);
    for k in &head.value.writers {
        match held.iter().find(|h| &h.public_key == k) {
            Some(h) => println!("writer {}  version {}", to_hex(k), h.seq),
            None => println!("writer {}  (no version held here)", to_hex(k)),
        }
    }
    Ok(())
}
