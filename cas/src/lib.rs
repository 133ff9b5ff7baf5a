//! `ccbt-cas`: the content-addressed store, on RocksDB. It knows nothing of networks or of how
//! hashes are computed; the share layer hands it bytes under 32-byte hashes and small records.
//!
//! Column families:
//! - `chunks`: chunk hash → bytes (BlobDB: big values live in blob files, out of compaction's way)
//! - `chunk_index`: chunk hash → length (u32 LE); existence checks and stats never touch the bytes
//! - `nodes`: Merkle node hash → node text
//! - `shares`: share id → share record (opaque to the store)
//! - `heads`: share id ‖ seq (u64 BE) → head record (every version kept until gc)
//! - `bindings`: folder path → share id (which share `publish DIR` continues)
//! - `pins`: share id ‖ seq → empty (versions gc must keep)
//! - `resume`: info-hash → resume data
//! - `meta`: counters
//!
//! Crash safety: chunk bytes go in with the WAL off (written once, at flush). Their `chunk_index`
//! entries are not written then: [`Store::commit_version`] first flushes the chunk bytes to disk,
//! then writes the index entries, nodes, head and share record in one synced batch. So an indexed
//! chunk always has its bytes, and a crash at any point leaves the old version or the new one plus,
//! at worst, unindexed orphan chunks that `verify` reports and `sweep` (gc) removes.

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, IteratorMode, Options,
    WriteBatch, WriteOptions, DB,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub type Hash = [u8; 32];
pub type ShareId = [u8; 20];
/// A file pin as stored: share, path, follows newer versions, the signed head pinned.
pub type FilePin = (ShareId, String, bool, Vec<u8>);

const CF_CHUNKS: &str = "chunks";
const CF_CHUNK_INDEX: &str = "chunk_index";
const CF_NODES: &str = "nodes";
const CF_SHARES: &str = "shares";
const CF_HEADS: &str = "heads";
const CF_BINDINGS: &str = "bindings";
const CF_PINS: &str = "pins";
const CF_RESUME: &str = "resume";
const CF_META: &str = "meta";
/// What `ccbt daemon` holds (torrents, shares, mounts, alert rules): small records by key.
const CF_DAEMON: &str = "daemon";
/// Per-version change summaries for `ccbt log` (derived data: recomputed when absent).
const CF_SUMMARIES: &str = "summaries";
/// Files kept local (`ccbt pin ID PATH`): share id + path -> a flag byte (1: follow the
/// newest version) and the signed head of the version pinned.
const CF_FILE_PINS: &str = "file_pins";
const ALL_CFS: [&str; 12] = [
    CF_CHUNKS,
    CF_CHUNK_INDEX,
    CF_NODES,
    CF_SHARES,
    CF_HEADS,
    CF_BINDINGS,
    CF_PINS,
    CF_RESUME,
    CF_META,
    CF_DAEMON,
    CF_SUMMARIES,
    CF_FILE_PINS,
];

#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error(
        "the store at {0} is in use by another ccbt process; stop it or use another --data-dir"
    )]
    Locked(PathBuf),
    #[error("{}", db_message(.0))]
    Db(#[from] rocksdb::Error),
    #[error("store is damaged: {0}; run `ccbt cas verify`")]
    Corrupt(String),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, CasError>;

/// A RocksDB error for users: a full disk says so (it is not damage: what was committed before
/// stays, and the write that failed was never committed).
fn db_message(e: &rocksdb::Error) -> String {
    let s = e.to_string();
    if s.contains("No space left on device") {
        format!(
            "the disk holding the data dir is full: free some space and run the command again \
             (what was stored before is intact) [{s}]"
        )
    } else {
        format!("store error: {s}")
    }
}

/// Store-wide statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub chunk_count: u64,
    pub chunk_bytes: u64,
    pub node_count: u64,
    pub node_bytes: u64,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub damage: Vec<String>,
    /// Chunks written by a publish that never committed (harmless; gc removes them).
    pub orphans: u64,
}

/// What `gc` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub heads_removed: u64,
    pub chunks_removed: u64,
    pub chunk_bytes_removed: u64,
    pub nodes_removed: u64,
}

/// Chunk batches up to this size are written through the WAL (see [`Store::write_chunks`]).
const WAL_MAX_BYTES: u64 = 4 << 20;

/// Chunks waiting to be written; the store keeps stats consistent when they land.
#[derive(Default)]
pub struct ChunkBatch {
    batch: WriteBatch,
    new_bytes: u64,
    pending: HashMap<Hash, u32>,
}

impl ChunkBatch {
    pub fn len_bytes(&self) -> u64 {
        self.new_bytes
    }
}

/// A version's reachable records: nodes plus the head and share record, committed atomically.
#[derive(Default)]
pub struct VersionBatch {
    nodes: Vec<(Hash, Vec<u8>)>,
    heads: Vec<(ShareId, u64, Vec<u8>)>,
    shares: Vec<(ShareId, Vec<u8>)>,
    bindings: Vec<(Vec<u8>, ShareId)>,
}

impl VersionBatch {
    pub fn node(&mut self, hash: Hash, text: Vec<u8>) {
        self.nodes.push((hash, text));
    }
    pub fn head(&mut self, share: ShareId, seq: u64, record: Vec<u8>) {
        self.heads.push((share, seq, record));
    }
    pub fn share(&mut self, share: ShareId, record: Vec<u8>) {
        self.shares.push((share, record));
    }
    pub fn binding(&mut self, folder: Vec<u8>, share: ShareId) {
        self.bindings.push((folder, share));
    }
}

pub struct Store {
    db: DB,
    path: PathBuf,
    /// Serialises counter read-modify-write (one process owns the DB; threads share it).
    counters: Mutex<()>,
    /// Chunks written but not yet indexed: they become indexed at the next commit.
    unindexed: Mutex<HashMap<Hash, u32>>,
    /// Some unindexed chunk bytes were written without the WAL: a commit must flush first.
    needs_flush: std::sync::atomic::AtomicBool,
    /// Node and chunk reads since open (what `ccbt diff` reports as its cost).
    reads: std::sync::atomic::AtomicU64,
}

fn cf_descriptor(name: &str) -> ColumnFamilyDescriptor {
    let mut o = Options::default();
    match name {
        CF_CHUNKS => {
            // Chunk bytes are mostly incompressible and large: keep them in blob files.
            o.set_enable_blob_files(true);
            o.set_min_blob_size(2048);
            o.set_blob_compression_type(DBCompressionType::None);
            o.set_enable_blob_gc(true);
            o.set_compression_type(DBCompressionType::None);
            // Three 64 MiB memtables: one filling while one flushes, bounded memory.
            o.set_write_buffer_size(64 << 20);
            o.set_max_write_buffer_number(3);
        }
        CF_CHUNK_INDEX | CF_NODES => {
            let mut b = BlockBasedOptions::default();
            b.set_bloom_filter(10.0, false);
            o.set_block_based_table_factory(&b);
        }
        _ => {}
    }
    ColumnFamilyDescriptor::new(name, o)
}

fn open_error(path: &Path, e: rocksdb::Error) -> CasError {
    if e.to_string().contains("lock") {
        CasError::Locked(path.to_path_buf())
    } else {
        CasError::Db(e)
    }
}

fn head_key(share: &ShareId, seq: u64) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..20].copy_from_slice(share);
    k[20..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        std::fs::create_dir_all(path).map_err(|source| CasError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(3);
        // Memory at rest (docs/performance.md, "Daemon idle cost"): twelve column families each
        // build a table cache of 64 shards by default (96 KiB written at open); 16 serve a store
        // with few table files. RocksDB's info log (every option at open, statistics every 10
        // min) grew a 135 KiB write buffer for a file nobody reads; warnings and errors stay.
        opts.set_table_cache_num_shard_bits(4);
        opts.set_log_level(rocksdb::LogLevel::Warn);
        opts.set_stats_dump_period_sec(0);
        let db = DB::open_cf_descriptors(&opts, path, ALL_CFS.iter().map(|n| cf_descriptor(n)))
            .map_err(|e| open_error(path, e))?;
        Ok(Store::with_db(db, path))
    }

    /// Opens the store read-only, also while another process (a mount, the daemon) holds it: a
    /// view as of now, for `ccbt log` and `ccbt diff`. Writes through it fail; derived data
    /// (summaries) is then simply not cached.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let opts = Options::default();
        // A store made by an older version may lack newer column families.
        let have = DB::list_cf(&opts, path).map_err(|e| open_error(path, e))?;
        let cfs = ALL_CFS
            .iter()
            .filter(|n| have.iter().any(|h| h == *n))
            .map(|n| cf_descriptor(n));
        let db = DB::open_cf_descriptors_read_only(&opts, path, cfs, false)
            .map_err(|e| open_error(path, e))?;
        Ok(Store::with_db(db, path))
    }

    fn with_db(db: DB, path: &Path) -> Store {
        Store {
            db,
            path: path.to_path_buf(),
            counters: Mutex::new(()),
            unindexed: Mutex::new(HashMap::new()),
            needs_flush: std::sync::atomic::AtomicBool::new(false),
            reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Merkle node and chunk reads made through this handle so far.
    pub fn read_count(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_read(&self) {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    // ---- chunks ----

    pub fn has_chunk(&self, hash: &Hash) -> Result<bool> {
        Ok(self.chunk_len(hash)?.is_some())
    }

    pub fn chunk_len(&self, hash: &Hash) -> Result<Option<u32>> {
        if let Some(n) = self.unindexed.lock().unwrap().get(hash) {
            return Ok(Some(*n));
        }
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_CHUNK_INDEX), hash)?
            .map(|v| u32::from_le_bytes(v[..4].try_into().unwrap_or([0; 4]))))
    }

    /// A chunk's bytes. RocksDB's own block checksum is skipped: every reader re-hashes the
    /// chunk against its content hash (a stronger check), and the CRC pass cost a quarter of a
    /// mount's read time.
    pub fn get_chunk(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.count_read();
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_verify_checksums(false);
        Ok(self.db.get_cf_opt(self.cf(CF_CHUNKS), hash, &ro)?)
    }

    /// Runs `f` over a chunk's bytes in place (no copy out of RocksDB), with the same checksum
    /// rule as [`Store::get_chunk`].
    pub fn with_chunk<R>(&self, hash: &Hash, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.count_read();
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_verify_checksums(false);
        Ok(self
            .db
            .get_pinned_cf_opt(self.cf(CF_CHUNKS), hash, &ro)?
            .map(|v| f(&v)))
    }

    /// Adds a chunk to `batch` unless the store (or the batch) already has it. Returns whether it
    /// was new. The caller guarantees `hash` is the chunk's hash.
    pub fn stage_chunk(&self, batch: &mut ChunkBatch, hash: &Hash, data: &[u8]) -> Result<bool> {
        if batch.pending.contains_key(hash) || self.has_chunk(hash)? {
            return Ok(false);
        }
        batch.batch.put_cf(self.cf(CF_CHUNKS), hash, data);
        batch.pending.insert(*hash, data.len() as u32);
        batch.new_bytes += data.len() as u64;
        Ok(true)
    }

    /// Writes staged chunk bytes (WAL off: they become durable at the flush in `commit_version`,
    /// which also indexes them).
    pub fn write_chunks(&self, batch: ChunkBatch) -> Result<()> {
        if batch.pending.is_empty() {
            return Ok(());
        }
        // Bulk bytes skip the WAL (written once, flushed at commit). A small batch goes through
        // the WAL instead: the commit's synced write then makes it durable without a memtable
        // flush, which is what keeps a small update fast.
        let mut wo = WriteOptions::default();
        let bulk = batch.new_bytes > WAL_MAX_BYTES;
        wo.disable_wal(bulk);
        self.db.write_opt(batch.batch, &wo)?;
        if bulk {
            self.needs_flush
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.unindexed.lock().unwrap().extend(batch.pending);
        Ok(())
    }

    /// Stores one verified chunk fetched for a read cache (a mount). Like bulk chunk bytes it goes
    /// in without the WAL (the WAL pass was a fifth of a mount's first-read CPU) and is visible at
    /// once; its index entry waits for [`Store::commit_cached`] (or the next version commit),
    /// which flushes the bytes to disk first, so an indexed chunk always has its bytes. A crash
    /// before that loses only cache entries. Unreachable cached chunks are removed by gc.
    pub fn put_chunk_cached(&self, hash: &Hash, data: &[u8]) -> Result<bool> {
        if self.has_chunk(hash)? {
            return Ok(false);
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.put_cf_opt(self.cf(CF_CHUNKS), hash, data, &wo)?;
        self.needs_flush
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.unindexed
            .lock()
            .unwrap()
            .insert(*hash, data.len() as u32);
        Ok(true)
    }

    /// Makes cached chunks durable: flushes their bytes, then writes their index entries.
    pub fn commit_cached(&self) -> Result<()> {
        if self.unindexed.lock().unwrap().is_empty() {
            return Ok(());
        }
        self.commit_version(VersionBatch::default())
    }

    // ---- nodes ----

    /// Stores one verified Merkle node (fetched on demand by a mount).
    pub fn put_node(&self, hash: &Hash, text: &[u8]) -> Result<()> {
        if self.has_node(hash)? {
            return Ok(());
        }
        let _g = self.counters.lock().unwrap();
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_NODES), hash, text);
        self.add_counter(&mut b, b"node_count", 1)?;
        self.add_counter(&mut b, b"node_bytes", text.len() as i64)?;
        self.db.write(b)?;
        Ok(())
    }

    pub fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.count_read();
        Ok(self.db.get_cf(self.cf(CF_NODES), hash)?)
    }

    pub fn has_node(&self, hash: &Hash) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_NODES), hash)?.is_some())
    }

    // ---- versions ----

    /// Makes a version reachable: flushes chunk data to disk, then writes nodes, head, share
    /// record and binding in one synced batch.
    pub fn commit_version(&self, v: VersionBatch) -> Result<()> {
        let _g = self.counters.lock().unwrap();
        let fresh: Vec<(Hash, u32)> = self.unindexed.lock().unwrap().drain().collect();
        let mut b = WriteBatch::default();
        if !fresh.is_empty() {
            // The bytes must be on disk before anything can point at them (bytes that went
            // through the WAL are synced by this commit's own write).
            if self
                .needs_flush
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                self.db.flush_cf(self.cf(CF_CHUNKS))?;
            }
            let mut total = 0i64;
            for (h, n) in &fresh {
                b.put_cf(self.cf(CF_CHUNK_INDEX), h, n.to_le_bytes());
                total += *n as i64;
            }
            self.add_counter(&mut b, b"chunk_count", fresh.len() as i64)?;
            self.add_counter(&mut b, b"chunk_bytes", total)?;
        }
        let (mut n, mut bytes) = (0i64, 0i64);
        let mut seen = HashSet::new();
        for (h, text) in &v.nodes {
            if seen.insert(*h) && !self.has_node(h)? {
                b.put_cf(self.cf(CF_NODES), h, text);
                n += 1;
                bytes += text.len() as i64;
            }
        }
        self.add_counter(&mut b, b"node_count", n)?;
        self.add_counter(&mut b, b"node_bytes", bytes)?;
        for (s, seq, rec) in &v.heads {
            b.put_cf(self.cf(CF_HEADS), head_key(s, *seq), rec);
        }
        for (s, rec) in &v.shares {
            b.put_cf(self.cf(CF_SHARES), s, rec);
        }
        for (f, s) in &v.bindings {
            b.put_cf(self.cf(CF_BINDINGS), f, s);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b, &wo)?;
        Ok(())
    }

    pub fn get_share(&self, id: &ShareId) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_SHARES), id)?)
    }

    pub fn shares(&self) -> Result<Vec<(ShareId, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SHARES), IteratorMode::Start) {
            let (k, v) = item?;
            let id: ShareId = k[..]
                .try_into()
                .map_err(|_| CasError::Corrupt("share key is not 20 bytes".into()))?;
            out.push((id, v.to_vec()));
        }
        Ok(out)
    }

    pub fn get_head(&self, id: &ShareId, seq: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_HEADS), head_key(id, seq))?)
    }

    /// Every stored head of a share, oldest first.
    pub fn heads(&self, id: &ShareId) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let it = self.db.iterator_cf(
            self.cf(CF_HEADS),
            IteratorMode::From(&head_key(id, 0), rocksdb::Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            if k.len() != 28 || &k[..20] != id {
                break;
            }
            out.push((u64::from_be_bytes(k[20..].try_into().unwrap()), v.to_vec()));
        }
        Ok(out)
    }

    pub fn binding(&self, folder: &[u8]) -> Result<Option<ShareId>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_BINDINGS), folder)?
            .and_then(|v| v.try_into().ok()))
    }

    // ---- pins ----

    pub fn pin(&self, id: &ShareId, seq: u64) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(self.cf(CF_PINS), head_key(id, seq), [], &wo)?;
        Ok(())
    }

    pub fn unpin(&self, id: &ShareId, seq: u64) -> Result<bool> {
        let k = head_key(id, seq);
        let had = self.db.get_pinned_cf(self.cf(CF_PINS), k)?.is_some();
        self.db.delete_cf(self.cf(CF_PINS), k)?;
        Ok(had)
    }

    pub fn pins(&self) -> Result<Vec<(ShareId, u64)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_PINS), IteratorMode::Start) {
            let (k, _) = item?;
            if k.len() == 28 {
                out.push((
                    k[..20].try_into().unwrap(),
                    u64::from_be_bytes(k[20..].try_into().unwrap()),
                ));
            }
        }
        Ok(out)
    }

    // ---- resume data ----

    pub fn put_resume(&self, key: &[u8], data: &[u8]) -> Result<()> {
        self.db.put_cf(self.cf(CF_RESUME), key, data)?;
        Ok(())
    }

    pub fn get_resume(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_RESUME), key)?)
    }

    pub fn delete_resume(&self, key: &[u8]) -> Result<()> {
        self.db.delete_cf(self.cf(CF_RESUME), key)?;
        Ok(())
    }

    pub fn resume_keys(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_RESUME), IteratorMode::Start) {
            out.push(item?.0.to_vec());
        }
        Ok(out)
    }

    // ---- files on demand ----

    /// Chunk bytes stored but not indexed yet (cached reads awaiting [`Store::commit_cached`]).
    pub fn unindexed_bytes(&self) -> u64 {
        self.unindexed
            .lock()
            .unwrap()
            .values()
            .map(|n| *n as u64)
            .sum()
    }

    /// Every indexed chunk with its length (what eviction chooses from).
    pub fn chunk_list(&self) -> Result<Vec<(Hash, u32)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_CHUNK_INDEX), IteratorMode::Start)
        {
            let (k, v) = item?;
            if let Ok(h) = <Hash>::try_from(&k[..]) {
                out.push((h, u32::from_le_bytes(v[..4].try_into().unwrap_or([0; 4]))));
            }
        }
        Ok(out)
    }

    /// Drops chunks (the caller decided nothing needs them locally: they fetch again on read).
    /// Returns how many were dropped and their bytes.
    pub fn delete_chunks(&self, hashes: &[Hash]) -> Result<(u64, u64)> {
        let _g = self.counters.lock().unwrap();
        let mut b = WriteBatch::default();
        let (mut n, mut bytes) = (0u64, 0u64);
        let mut unindexed = self.unindexed.lock().unwrap();
        for h in hashes {
            if unindexed.remove(h).is_some() {
                // Not indexed yet (a cached read): no counter holds it.
                b.delete_cf(self.cf(CF_CHUNKS), h);
                continue;
            }
            if let Some(v) = self.db.get_pinned_cf(self.cf(CF_CHUNK_INDEX), h)? {
                bytes += u32::from_le_bytes(v[..4].try_into().unwrap_or([0; 4])) as u64;
                n += 1;
                b.delete_cf(self.cf(CF_CHUNK_INDEX), h);
                b.delete_cf(self.cf(CF_CHUNKS), h);
            }
        }
        drop(unindexed);
        self.add_counter(&mut b, b"chunk_count", -(n as i64))?;
        self.add_counter(&mut b, b"chunk_bytes", -(bytes as i64))?;
        self.db.write(b)?;
        Ok((n, bytes))
    }

    fn file_pin_key(id: &ShareId, path: &str) -> Vec<u8> {
        let mut k = id.to_vec();
        k.extend_from_slice(path.as_bytes());
        k
    }

    /// Keeps `path` of a share local: the version of `head` (`follow`: and each newer one).
    pub fn put_file_pin(&self, id: &ShareId, path: &str, follow: bool, head: &[u8]) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let mut v = vec![follow as u8];
        v.extend_from_slice(head);
        self.db
            .put_cf_opt(self.cf(CF_FILE_PINS), Self::file_pin_key(id, path), v, &wo)?;
        Ok(())
    }

    pub fn delete_file_pin(&self, id: &ShareId, path: &str) -> Result<bool> {
        let k = Self::file_pin_key(id, path);
        let had = self.db.get_pinned_cf(self.cf(CF_FILE_PINS), &k)?.is_some();
        self.db.delete_cf(self.cf(CF_FILE_PINS), k)?;
        Ok(had)
    }

    /// Every file pin: (share, path, follow, head).
    pub fn file_pins(&self) -> Result<Vec<FilePin>> {
        let Some(cf) = self.db.cf_handle(CF_FILE_PINS) else {
            return Ok(Vec::new()); // a read-only open of an older store
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            if k.len() < 20 || v.is_empty() {
                continue;
            }
            out.push((
                k[..20].try_into().unwrap(),
                String::from_utf8_lossy(&k[20..]).into_owned(),
                v[0] == 1,
                v[1..].to_vec(),
            ));
        }
        Ok(out)
    }

    // ---- version summaries (derived, for `ccbt log`) ----

    pub fn put_summary(&self, id: &ShareId, seq: u64, data: &[u8]) -> Result<()> {
        if let Some(cf) = self.db.cf_handle(CF_SUMMARIES) {
            self.db.put_cf(cf, head_key(id, seq), data)?;
        }
        Ok(())
    }

    /// (A read-only open of an older store may lack the column family: nothing cached then.)
    pub fn get_summary(&self, id: &ShareId, seq: u64) -> Result<Option<Vec<u8>>> {
        match self.db.cf_handle(CF_SUMMARIES) {
            Some(cf) => Ok(self.db.get_cf(cf, head_key(id, seq))?),
            None => Ok(None),
        }
    }

    // ---- the daemon's records ----

    /// Written synced: a record the daemon acknowledged survives a crash.
    pub fn put_daemon(&self, key: &[u8], data: &[u8]) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(self.cf(CF_DAEMON), key, data, &wo)?;
        Ok(())
    }

    pub fn delete_daemon(&self, key: &[u8]) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.delete_cf_opt(self.cf(CF_DAEMON), key, &wo)?;
        Ok(())
    }

    /// Every record whose key starts with `prefix`.
    pub fn daemon_records(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_DAEMON), mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    // ---- stats, verify, gc ----

    fn counter(&self, name: &[u8]) -> Result<i64> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_META), name)?
            .and_then(|v| v[..].try_into().ok())
            .map(i64::from_le_bytes)
            .unwrap_or(0))
    }

    /// Adds `delta` to a counter inside `b`; call with `self.counters` held.
    fn add_counter(&self, b: &mut WriteBatch, name: &[u8], delta: i64) -> Result<()> {
        if delta != 0 {
            let v = self.counter(name)? + delta;
            b.put_cf(self.cf(CF_META), name, v.to_le_bytes());
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<Stats> {
        Ok(Stats {
            chunk_count: self.counter(b"chunk_count")?.max(0) as u64,
            chunk_bytes: self.counter(b"chunk_bytes")?.max(0) as u64,
            node_count: self.counter(b"node_count")?.max(0) as u64,
            node_bytes: self.counter(b"node_bytes")?.max(0) as u64,
        })
    }

    /// Re-hashes every chunk and node with `chunk_hash` / `node_hash`; returns what is damaged.
    pub fn verify(
        &self,
        chunk_hash: &(dyn Fn(&[u8]) -> Hash + Sync),
        node_hash: &(dyn Fn(&[u8]) -> Hash + Sync),
        progress: &dyn Fn(u64),
    ) -> Result<VerifyReport> {
        let mut damage = Vec::new();
        let mut orphans = 0;
        let mut index: HashSet<Hash> = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_CHUNK_INDEX), IteratorMode::Start)
        {
            let (k, _) = item?;
            if let Ok(h) = k[..].try_into() {
                index.insert(h);
            }
        }
        let mut seen = 0usize;
        for item in self.db.iterator_cf(self.cf(CF_CHUNKS), IteratorMode::Start) {
            let (k, v) = item?;
            progress(v.len() as u64);
            let key: Hash = match k[..].try_into() {
                Ok(h) => h,
                Err(_) => {
                    damage.push(format!("chunk key of {} bytes", k.len()));
                    continue;
                }
            };
            if chunk_hash(&v) != key {
                damage.push(format!("chunk {} does not match its hash", hex(&key)));
            }
            if index.contains(&key) {
                seen += 1;
            } else {
                orphans += 1;
            }
        }
        if seen != index.len() {
            damage.push(format!(
                "{} indexed chunks have no bytes",
                index.len() - seen
            ));
        }
        for item in self.db.iterator_cf(self.cf(CF_NODES), IteratorMode::Start) {
            let (k, v) = item?;
            if node_hash(&v)[..] != k[..] {
                damage.push(format!("node {} does not match its hash", hex(&k)));
            }
        }
        Ok(VerifyReport { damage, orphans })
    }

    /// Removes heads not in `keep` (share id, seq) and every chunk and node outside `reachable`.
    pub fn sweep(
        &self,
        keep: &HashSet<(ShareId, u64)>,
        reachable: &HashSet<Hash>,
    ) -> Result<GcReport> {
        let mut r = GcReport::default();
        let mut b = WriteBatch::default();
        for item in self.db.iterator_cf(self.cf(CF_HEADS), IteratorMode::Start) {
            let (k, _) = item?;
            if k.len() == 28 {
                let id: ShareId = k[..20].try_into().unwrap();
                let seq = u64::from_be_bytes(k[20..].try_into().unwrap());
                if !keep.contains(&(id, seq)) {
                    b.delete_cf(self.cf(CF_HEADS), &k);
                    b.delete_cf(self.cf(CF_SUMMARIES), &k);
                    r.heads_removed += 1;
                }
            }
        }
        for item in self
            .db
            .iterator_cf(self.cf(CF_CHUNK_INDEX), IteratorMode::Start)
        {
            let (k, v) = item?;
            if let Ok(h) = <Hash>::try_from(&k[..]) {
                if !reachable.contains(&h) {
                    b.delete_cf(self.cf(CF_CHUNK_INDEX), h);
                    b.delete_cf(self.cf(CF_CHUNKS), h);
                    r.chunks_removed += 1;
                    r.chunk_bytes_removed +=
                        u32::from_le_bytes(v[..4].try_into().unwrap_or([0; 4])) as u64;
                }
            }
        }
        // Orphans: bytes without an index entry (a publish that never committed).
        let unindexed = self.unindexed.lock().unwrap();
        for item in self.db.iterator_cf(self.cf(CF_CHUNKS), IteratorMode::Start) {
            let (k, _) = item?;
            if let Ok(h) = <Hash>::try_from(&k[..]) {
                if self.db.get_pinned_cf(self.cf(CF_CHUNK_INDEX), h)?.is_none()
                    && !unindexed.contains_key(&h)
                {
                    b.delete_cf(self.cf(CF_CHUNKS), h);
                }
            }
        }
        drop(unindexed);
        let mut node_bytes = 0i64;
        for item in self.db.iterator_cf(self.cf(CF_NODES), IteratorMode::Start) {
            let (k, v) = item?;
            if let Ok(h) = <Hash>::try_from(&k[..]) {
                if !reachable.contains(&h) {
                    b.delete_cf(self.cf(CF_NODES), h);
                    r.nodes_removed += 1;
                    node_bytes += v.len() as i64;
                }
            }
        }
        {
            let _g = self.counters.lock().unwrap();
            self.add_counter(&mut b, b"chunk_count", -(r.chunks_removed as i64))?;
            self.add_counter(&mut b, b"chunk_bytes", -(r.chunk_bytes_removed as i64))?;
            self.add_counter(&mut b, b"node_count", -(r.nodes_removed as i64))?;
            self.add_counter(&mut b, b"node_bytes", -node_bytes)?;
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            self.db.write_opt(b, &wo)?;
        }
        // Reclaim the space now rather than at some later compaction.
        for cf in [CF_CHUNKS, CF_CHUNK_INDEX, CF_NODES, CF_HEADS] {
            self.db
                .compact_range_cf(self.cf(cf), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(r)
    }

    /// Bytes the store occupies on disk.
    pub fn disk_usage(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| match e.metadata() {
                            Ok(m) if m.is_dir() => walk(&e.path()),
                            Ok(m) => m.len(),
                            Err(_) => 0,
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.path)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
