//! The marked set: every blob a snapshot needs. On disk (a scratch
//! RocksDB under the cache directory, removed afterwards), so a prune's
//! memory does not grow with the repository; a sweep's second mark, which
//! covers only what was committed meanwhile, uses a hash set.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rocksdb::{Options, WriteBatch, DB};

use crate::ids::BlobId;
use crate::{Error, Result};

/// What condemning and repacking read: which blobs something needs.
pub(super) trait Live: Send + Sync {
    /// Which of `ids` are live.
    fn has(&self, ids: &[BlobId]) -> Result<Vec<bool>>;
}

/// A set of blob ids, as marking fills it.
pub(super) trait Marks: Live {
    /// Adds `id`; true when it was not there.
    fn add(&mut self, id: &BlobId) -> Result<bool>;
    /// Adds all of `ids`.
    fn add_all(&mut self, ids: &[BlobId]) -> Result<()>;
}

impl Live for HashSet<BlobId> {
    fn has(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        Ok(ids.iter().map(|i| self.contains(i)).collect())
    }
}

impl Marks for HashSet<BlobId> {
    fn add(&mut self, id: &BlobId) -> Result<bool> {
        Ok(self.insert(*id))
    }
    fn add_all(&mut self, ids: &[BlobId]) -> Result<()> {
        self.extend(ids.iter().copied());
        Ok(())
    }
}

/// The on-disk marked set.
pub(super) struct LiveSet {
    db: Option<DB>,
    dir: PathBuf,
}

impl LiveSet {
    /// A fresh, empty set in a directory of its own under `cache_dir`.
    pub(super) fn create(cache_dir: &Path) -> Result<LiveSet> {
        let mut raw = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let dir = cache_dir.join(format!("gc-marks-{}-{}", std::process::id(), hex::encode(raw)));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_write_buffer_size(8 << 20);
        o.set_max_open_files(64);
        o.set_keep_log_file_num(1);
        let db = DB::open(&o, &dir).map_err(|e| Error::Index { path: dir.clone(), detail: e.to_string() })?;
        Ok(LiveSet { db: Some(db), dir })
    }

    fn db(&self) -> &DB {
        self.db.as_ref().expect("open until dropped")
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Index { path: self.dir.clone(), detail: e.to_string() }
    }

    /// Every id in the set, in pages of `page`.
    pub(super) fn for_each(&self, page: usize, f: impl FnMut(&[BlobId]) -> Result<()>) -> Result<()> {
        let ids = self.db().iterator(rocksdb::IteratorMode::Start).map(|kv| {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            let id: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| Error::Index { path: self.dir.clone(), detail: "malformed marked id".into() })?;
            Ok(BlobId(crate::ids::Id(id)))
        });
        in_pages(ids, page, f)
    }
}

/// Hands `ids` to `f` in pages of `page`, stopping at the first error.
pub(super) fn in_pages(
    ids: impl Iterator<Item = Result<BlobId>>,
    page: usize,
    mut f: impl FnMut(&[BlobId]) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(page);
    for id in ids {
        buf.push(id?);
        if buf.len() == page {
            f(&buf)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        f(&buf)?;
    }
    Ok(())
}

impl Marks for LiveSet {
    fn add(&mut self, id: &BlobId) -> Result<bool> {
        let db = self.db();
        if db.get_pinned(id.0 .0).map_err(|e| self.err(e))?.is_some() {
            return Ok(false);
        }
        db.put(id.0 .0, []).map_err(|e| self.err(e))?;
        Ok(true)
    }

    fn add_all(&mut self, ids: &[BlobId]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.put(id.0 .0, []);
        }
        self.db().write(batch).map_err(|e| self.err(e))
    }
}

impl Live for LiveSet {
    fn has(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        self.db()
            .multi_get(ids.iter().map(|i| i.0 .0))
            .into_iter()
            .map(|r| r.map(|v| v.is_some()).map_err(|e| self.err(e)))
            .collect()
    }
}

impl Drop for LiveSet {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
