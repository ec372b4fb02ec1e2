//! The local index: a RocksDB cache of blob id → pack location.
//!
//! **Invariant:** the index is a cache. Everything in it can be derived from
//! the repository's `index/` segments, or, when those are lost, from pack
//! trailers (`cairn index rebuild`). A missing or unreadable index directory
//! is rebuilt, never trusted blindly and never reported as data loss.
//!
//! Writers (backups, rebuilds) hold RocksDB's lock for the whole job;
//! another writer waits up to a timeout and then fails with
//! [`Error::IndexBusy`]. Readers open the database read-only and keep the
//! index segments they have not yet seen in an in-memory overlay, so a
//! restore never waits for a backup.

mod sync;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_formats::repo::{BlobEntry, IndexSegment, BLOB_ENTRY_LEN};
use rocksdb::{Options, WriteBatch, DB};

use crate::ids::{BlobId, Id, PackId};
use crate::{Error, Result};

pub use sync::{rebuild_from_packs, RebuildSummary};

const BLOB_PREFIX: u8 = b'b';
const SEEN_PREFIX: u8 = b's';
const META_REPO: &[u8] = b"m:repo";
const META_GC_EPOCH: &[u8] = b"m:gc_epoch";

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Its entry in that pack.
    pub entry: BlobEntry,
}

impl BlobLocation {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + BLOB_ENTRY_LEN);
        v.extend_from_slice(&self.pack.0 .0);
        self.entry.encode(&mut v);
        v
    }

    fn decode(path: &Path, v: &[u8]) -> Result<Self> {
        let bad = || Error::Index { path: path.into(), detail: "malformed entry (run `cairn index rebuild`)".into() };
        if v.len() != 32 + BLOB_ENTRY_LEN {
            return Err(bad());
        }
        let mut pack = [0u8; 32];
        pack.copy_from_slice(&v[..32]);
        let entry = BlobEntry::decode_exact(&v[32..]).map_err(|_| bad())?;
        Ok(BlobLocation { pack: PackId(Id(pack)), entry })
    }
}

fn blob_key(id: &BlobId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = BLOB_PREFIX;
    k[1..].copy_from_slice(&id.0 .0);
    k
}

fn seen_key(seg: &Id) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = SEEN_PREFIX;
    k[1..].copy_from_slice(&seg.0);
    k
}

/// How the index was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exclusive: may be written, holds RocksDB's lock.
    Writer,
    /// Shared read-only view plus an overlay of unseen segments.
    Reader,
}

/// An open local index.
pub struct LocalIndex {
    db: DB,
    path: PathBuf,
    mode: Mode,
    overlay: HashMap<BlobId, BlobLocation>,
    overlay_seen: HashSet<Id>,
    /// Packs garbage collection condemned: never returned by a lookup, so
    /// nothing deduplicates against them (see `gc`).
    excluded: HashSet<PackId>,
    /// The lease a writer index holds for its backups (see `gc::lease`).
    lease: Option<crate::gc::Lease>,
}

impl std::fmt::Debug for LocalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalIndex({}, {:?})", self.path.display(), self.mode)
    }
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_write_buffer_size(16 << 20);
    o.set_max_open_files(256);
    o.set_keep_log_file_num(2);
    o.set_max_total_wal_size(64 << 20);
    o
}

fn is_lock_error(e: &rocksdb::Error) -> bool {
    let s = e.to_string();
    s.contains("LOCK") || s.contains("lock hold")
}

/// The index directory for a repository under a cache directory.
pub fn index_dir(cache_dir: &Path, repo_id: &str) -> PathBuf {
    cache_dir.join(repo_id).join("index")
}

impl LocalIndex {
    /// Opens (creating if needed) the index exclusively, waiting up to
    /// `lock_timeout` for another writer. An unreadable index is moved aside
    /// and rebuilt empty; the caller then syncs it.
    pub fn open_writer(path: &Path, repo_id: &str, lock_timeout: Duration) -> Result<LocalIndex> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let started = Instant::now();
        let mut wait = Duration::from_millis(50);
        let db = loop {
            match DB::open(&db_options(), path) {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) => {
                    if started.elapsed() >= lock_timeout {
                        return Err(Error::IndexBusy { path: path.into(), waited_s: started.elapsed().as_secs() });
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::warn!(index = %path.display(), error = %e, "local index unreadable; rebuilding it");
                    discard(path)?;
                    break DB::open(&db_options(), path)
                        .map_err(|e| Error::Index { path: path.into(), detail: e.to_string() })?;
                }
            }
        };
        let idx = LocalIndex {
            db,
            path: path.into(),
            mode: Mode::Writer,
            overlay: HashMap::new(),
            overlay_seen: HashSet::new(),
            excluded: HashSet::new(),
            lease: None,
        };
        match idx.db.get(META_REPO).map_err(|e| idx.err(e))? {
            Some(v) if v == repo_id.as_bytes() => Ok(idx),
            Some(_) => {
                // A cache of another repository: it must not be used for dedup.
                drop(idx);
                discard(path)?;
                Self::open_writer(path, repo_id, lock_timeout)
            }
            None => {
                idx.db.put(META_REPO, repo_id.as_bytes()).map_err(|e| idx.err(e))?;
                Ok(idx)
            }
        }
    }

    /// Opens the index read-only. `Ok(None)` when it does not exist yet or
    /// cannot be read: the caller builds it with a writer first.
    pub fn open_reader(path: &Path, repo_id: &str) -> Result<Option<LocalIndex>> {
        if !path.join("CURRENT").exists() {
            return Ok(None);
        }
        let db = match DB::open_for_read_only(&db_options(), path, false) {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!(index = %path.display(), error = %e, "local index unreadable");
                return Ok(None);
            }
        };
        let idx = LocalIndex {
            db,
            path: path.into(),
            mode: Mode::Reader,
            overlay: HashMap::new(),
            overlay_seen: HashSet::new(),
            excluded: HashSet::new(),
            lease: None,
        };
        match idx.db.get(META_REPO).map_err(|e| idx.err(e))? {
            Some(v) if v == repo_id.as_bytes() => Ok(Some(idx)),
            _ => Ok(None),
        }
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Index { path: self.path.clone(), detail: e.to_string() }
    }

    /// The index directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writer or reader.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Looks up many blobs at once (one RocksDB multi-get).
    pub fn lookup_many(&self, ids: &[BlobId]) -> Result<Vec<Option<BlobLocation>>> {
        let keys: Vec<[u8; 33]> = ids.iter().map(blob_key).collect();
        let mut out = Vec::with_capacity(ids.len());
        for (id, r) in ids.iter().zip(self.db.multi_get(keys.iter())) {
            let v = r.map_err(|e| self.err(e))?;
            // A location in a condemned pack is hidden; the overlay may
            // know a copy elsewhere (a repacked blob).
            let stored = match v {
                Some(v) => Some(BlobLocation::decode(&self.path, &v)?),
                None => None,
            };
            let usable = |l: &BlobLocation| !self.excluded.contains(&l.pack);
            let overlay = self.overlay.get(id).copied();
            let found = stored.filter(usable).or_else(|| overlay.filter(usable));
            // A reader may still read a condemned pack (it exists until
            // swept, and nothing committed needs a swept one); a writer
            // must never deduplicate against it.
            out.push(match self.mode {
                Mode::Reader => found.or(stored).or(overlay),
                Mode::Writer => found,
            });
        }
        Ok(out)
    }

    /// Looks up one blob.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        Ok(self.lookup_many(std::slice::from_ref(id))?.pop().flatten())
    }

    /// True when segment `seg` has been applied.
    pub fn has_seen(&self, seg: &Id) -> Result<bool> {
        if self.overlay_seen.contains(seg) {
            return Ok(true);
        }
        Ok(self.db.get(seen_key(seg)).map_err(|e| self.err(e))?.is_some())
    }

    /// Applies a segment: to RocksDB for a writer, to the overlay for a reader.
    pub fn apply_segment(&mut self, seg: &Id, segment: &IndexSegment) -> Result<()> {
        match self.mode {
            Mode::Writer => self.record_segment(seg, segment),
            Mode::Reader => {
                for p in &segment.packs {
                    let pack = PackId(Id(p.pack_id));
                    let condemned = self.excluded.contains(&pack);
                    for e in &p.blobs {
                        let id = BlobId(Id(e.id));
                        // A condemned pack's copy never displaces another.
                        if condemned && self.overlay.contains_key(&id) {
                            continue;
                        }
                        self.overlay.insert(id, BlobLocation { pack, entry: *e });
                    }
                }
                self.overlay_seen.insert(*seg);
                Ok(())
            }
        }
    }

    /// Records a segment this process just wrote (writers only; readers
    /// never write).
    pub fn record_segment(&self, seg: &Id, segment: &IndexSegment) -> Result<()> {
        if self.mode != Mode::Writer {
            return Err(Error::Index { path: self.path.clone(), detail: "opened read-only".into() });
        }
        let mut batch = WriteBatch::default();
        for p in &segment.packs {
            let pack = PackId(Id(p.pack_id));
            if self.excluded.contains(&pack) {
                // Its blobs are recorded only where no other copy is known,
                // so a repacked blob keeps pointing at its new pack.
                let keys: Vec<[u8; 33]> = p.blobs.iter().map(|e| blob_key(&BlobId(Id(e.id)))).collect();
                let have = self.db.multi_get(keys.iter());
                let fresh: Vec<BlobEntry> =
                    p.blobs.iter().zip(have).filter(|(_, h)| matches!(h, Ok(None))).map(|(e, _)| *e).collect();
                add_pack(&mut batch, &pack, &fresh);
            } else {
                add_pack(&mut batch, &pack, &p.blobs);
            }
        }
        batch.put(seen_key(seg), []);
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Records pack entries found without a segment (rebuild from packs).
    pub(crate) fn put_pack(&self, pack: &PackId, entries: &[BlobEntry]) -> Result<()> {
        let mut batch = WriteBatch::default();
        add_pack(&mut batch, pack, entries);
        self.db.write(batch).map_err(|e| self.err(e))
    }

    pub(crate) fn mark_seen(&self, seg: &Id) -> Result<()> {
        self.db.put(seen_key(seg), []).map_err(|e| self.err(e))
    }

    /// The garbage-collection epoch this cache was built at.
    pub(crate) fn gc_epoch(&self) -> Result<u64> {
        let v = self.db.get(META_GC_EPOCH).map_err(|e| self.err(e))?;
        Ok(v.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map(u64::from_le_bytes).unwrap_or(0))
    }

    pub(crate) fn set_gc_epoch(&self, epoch: u64) -> Result<()> {
        self.db.put(META_GC_EPOCH, epoch.to_le_bytes()).map_err(|e| self.err(e))
    }

    /// Packs lookups must not return. Entries are still stored, only
    /// hidden: garbage collection clears the set to see every copy.
    pub(crate) fn exclude(&mut self, packs: HashSet<PackId>) {
        self.excluded = packs;
    }

    /// Packs a pending garbage collection condemned (hidden from lookups).
    pub(crate) fn excluded(&self) -> &HashSet<PackId> {
        &self.excluded
    }

    /// The lease this writer index holds, if any.
    pub fn lease(&self) -> Option<&crate::gc::Lease> {
        self.lease.as_ref()
    }

    /// Releases the lease of a writer index: call once every snapshot
    /// written through it is durable. Dropping the index without this
    /// leaves the lease to expire, which makes garbage collection wait.
    pub async fn release(mut self) -> Result<()> {
        match self.lease.take() {
            Some(l) => l.release().await,
            None => Ok(()),
        }
    }

    /// [`LocalIndex::release`] through the last `Arc`: once a backup has
    /// returned, its index is held here alone. Still shared, the lease is
    /// left to expire (GC then waits for it) and a warning says so, as it
    /// does when deleting the lease fails: neither loses anything.
    pub async fn release_shared(this: std::sync::Arc<LocalIndex>) {
        match std::sync::Arc::try_unwrap(this) {
            Ok(idx) => {
                if let Err(e) = idx.release().await {
                    tracing::warn!(error = %e, "could not delete the lease; it will expire");
                }
            }
            Err(_) => tracing::warn!("local index still shared; its lease is left to expire"),
        }
    }

    /// Number of blob entries (an estimate from RocksDB for large indexes).
    pub fn approximate_len(&self) -> u64 {
        self.db.property_int_value("rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0)
    }
}

fn add_pack(batch: &mut WriteBatch, pack: &PackId, entries: &[BlobEntry]) {
    for e in entries {
        batch.put(blob_key(&BlobId(Id(e.id))), BlobLocation { pack: *pack, entry: *e }.encode());
    }
}

/// Removes an index directory (it is only a cache).
pub(crate) fn discard(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}
