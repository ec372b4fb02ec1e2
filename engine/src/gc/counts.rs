//! Live-blob counts kept between prunes, so a prune costs in proportion to
//! what changed since the last one rather than to the repository.
//!
//! A RocksDB under `<cache>/<repo id>/gc-counts` holds, for every snapshot
//! it has counted, the snapshot's tree ids (`s<id>`), and for every blob
//! the number of counted snapshots that reference it (`c<id>`, a blob
//! counted once per snapshot however often it repeats there). A prune
//! lists the snapshots, counts those it has not seen (reading their trees)
//! and uncounts those that are gone (reading their trees again: a
//! forgotten snapshot's trees stay in the store until a sweep deletes
//! them). A blob is live when its count is above zero.
//!
//! Why it can be trusted: a snapshot's content never changes under its id,
//! so the counts are a function of the set of counted ids alone, and each
//! snapshot is counted or uncounted in one atomic write batch together with
//! its `s` record. RocksDB's lock keeps a second process out (it then
//! marks from scratch). Whatever cannot be done exactly — a tree of a gone
//! snapshot already deleted by another host's prune, a damaged database —
//! drops the counts, and the prune marks everything from the repository,
//! which is also what `prune --full` does, comparing the two.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rocksdb::{Options, WriteBatch, DB};

use super::live::{in_pages, Live};
use crate::ids::{BlobId, Id, SnapshotId, TreeId};
use crate::{Error, Result};

const SNAP: u8 = b's';
const COUNT: u8 = b'c';

/// The counts of one repository.
pub(super) struct Counts {
    db: DB,
    path: PathBuf,
}

fn key(prefix: u8, id: &Id) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.0);
    k
}

impl Counts {
    /// Where the counts of repository `repo_id` live.
    pub(super) fn dir(cache_dir: &Path, repo_id: &str) -> PathBuf {
        cache_dir.join(repo_id).join("gc-counts")
    }

    /// Opens (or creates) the counts; `None` when another process holds
    /// them or they cannot be opened (the caller marks from scratch).
    pub(super) fn open(dir: &Path) -> Option<Counts> {
        std::fs::create_dir_all(dir).ok()?;
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_write_buffer_size(8 << 20);
        o.set_max_open_files(64);
        o.set_keep_log_file_num(1);
        match DB::open(&o, dir) {
            Ok(db) => Some(Counts { db, path: dir.to_path_buf() }),
            Err(e) => {
                tracing::info!(dir = %dir.display(), error = %e, "gc counts not usable: marking from scratch");
                None
            }
        }
    }

    /// Deletes the counts at `dir` (the next prune counts from scratch).
    pub(super) fn destroy(self) {
        let path = self.path.clone();
        drop(self.db);
        let _ = DB::destroy(&Options::default(), &path);
        let _ = std::fs::remove_dir_all(&path);
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Index { path: self.path.clone(), detail: e.to_string() }
    }

    /// The snapshots counted.
    pub(super) fn snapshots(&self) -> Result<HashSet<SnapshotId>> {
        let mut out = HashSet::new();
        for kv in self.db.prefix_iterator([SNAP]) {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            if k.first() != Some(&SNAP) {
                break;
            }
            out.insert(SnapshotId(Id(k[1..].try_into().map_err(|_| self.malformed("snapshot key"))?)));
        }
        Ok(out)
    }

    fn malformed(&self, what: &str) -> Error {
        Error::Index { path: self.path.clone(), detail: format!("malformed {what}") }
    }

    /// The trees of counted snapshot `id`.
    pub(super) fn trees(&self, id: &SnapshotId) -> Result<Vec<TreeId>> {
        let v = self.db.get(key(SNAP, &id.0)).map_err(|e| self.err(e))?.ok_or_else(|| self.malformed("record"))?;
        if v.len() % 32 != 0 {
            return Err(self.malformed("tree list"));
        }
        Ok(v.chunks_exact(32).map(|c| TreeId(Id(c.try_into().expect("32 bytes")))).collect())
    }

    /// Counts snapshot `id`, whose trees are `trees` and whose distinct
    /// blobs (trees and chunks) are `blobs`.
    pub(super) fn add(&mut self, id: &SnapshotId, trees: &[TreeId], blobs: &HashSet<BlobId>) -> Result<()> {
        self.apply(id, blobs, 1, Some(trees))
    }

    /// Uncounts snapshot `id`, whose distinct blobs are `blobs`.
    pub(super) fn remove(&mut self, id: &SnapshotId, blobs: &HashSet<BlobId>) -> Result<()> {
        self.apply(id, blobs, -1, None)
    }

    fn apply(&mut self, id: &SnapshotId, blobs: &HashSet<BlobId>, delta: i64, trees: Option<&[TreeId]>) -> Result<()> {
        let keys: Vec<[u8; 33]> = blobs.iter().map(|b| key(COUNT, &b.0)).collect();
        let mut batch = WriteBatch::default();
        for (k, v) in keys.iter().zip(self.db.multi_get(keys.iter())) {
            let v = v.map_err(|e| self.err(e))?;
            let now = match v.as_deref() {
                None => 0,
                Some(b) => i64::from(u32::from_le_bytes(b.try_into().map_err(|_| self.malformed("count"))?)),
            };
            match now + delta {
                n if n < 0 => return Err(self.malformed("count (below zero)")),
                0 => batch.delete(k),
                n => batch.put(k, u32::try_from(n).map_err(|_| self.malformed("count (overflow)"))?.to_le_bytes()),
            }
        }
        match trees {
            Some(t) => batch.put(key(SNAP, &id.0), t.iter().flat_map(|t| t.0 .0).collect::<Vec<u8>>()),
            None => batch.delete(key(SNAP, &id.0)),
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Every blob with a count, in key order, in pages of `page` ids.
    pub(super) fn for_each_live(&self, page: usize, f: impl FnMut(&[BlobId]) -> Result<()>) -> Result<()> {
        let ids = self
            .db
            .prefix_iterator([COUNT])
            .map(|kv| kv.map_err(|e| self.err(e)))
            .take_while(|kv| !matches!(kv, Ok((k, _)) if k.first() != Some(&COUNT)))
            .map(|kv| {
                let (k, _) = kv?;
                Ok(BlobId(Id(k[1..].try_into().map_err(|_| self.malformed("count key"))?)))
            });
        in_pages(ids, page, f)
    }
}

impl Live for Counts {
    fn has(&self, ids: &[BlobId]) -> Result<Vec<bool>> {
        self.db
            .multi_get(ids.iter().map(|i| key(COUNT, &i.0)))
            .into_iter()
            .map(|r| r.map(|v| v.is_some()).map_err(|e| self.err(e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::backup::{Backup, BackupOptions};
    use crate::gc::{prune, PruneOptions};
    use crate::index::LocalIndex;
    use crate::repo::{GcParams, InitOptions, Repository};
    use std::sync::Arc;
    use std::time::Duration;

    fn live(c: &Counts) -> HashSet<BlobId> {
        let mut out = HashSet::new();
        c.for_each_live(1 << 10, |page| {
            out.extend(page.iter().copied());
            Ok(())
        })
        .unwrap();
        out
    }

    /// Counts that lost a snapshot's blobs while keeping its record (a
    /// damaged cache) would make a prune condemn what that snapshot needs:
    /// `--full` finds the disagreement, uses its own mark and drops the
    /// counts, and the next prune counts again from the repository.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_prune_finds_counts_that_disagree_and_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::keys::Secret::create_key_file(&dir.path().join("key")).unwrap();
        let opts = InitOptions::default().with_gc(GcParams { min_age_s: 0, lease_ttl_s: 30 });
        let repo = Arc::new(Repository::init(crate::store::Store::memory(), &secret, opts).await.unwrap());
        let cache = dir.path().join("cache");
        let counts_dir = Counts::dir(&cache, &repo.config().id);
        let run = |full: bool, dry_run: bool| {
            let (repo, cache) = (repo.clone(), cache.clone());
            async move {
                let o = PruneOptions::default()
                    .with_sweep_wait(Duration::from_secs(5))
                    .with_full(full)
                    .with_dry_run(dry_run);
                prune(&repo, &cache, Duration::from_secs(5), &o, &|_| {}).await.unwrap()
            }
        };
        let (mut snaps, mut first) = (Vec::new(), HashSet::new());
        for seed in 1..3u32 {
            let index = Arc::new(LocalIndex::for_writing(&repo, &cache, Duration::from_secs(5)).await.unwrap());
            let data: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761 ^ seed) >> 13) as u8).collect();
            let (id, _) =
                Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(data).await.unwrap();
            LocalIndex::release_shared(index).await;
            snaps.push(id);
            assert_eq!(run(false, false).await.snapshots_read, 1);
            if seed == 1 {
                first = live(&Counts::open(&counts_dir).expect("not held"));
            }
        }
        assert_eq!(run(true, false).await.counts_mismatch, Some(0));
        {
            let mut c = Counts::open(&counts_dir).expect("not held");
            let trees = c.trees(&snaps[0]).unwrap();
            c.remove(&snaps[0], &first).unwrap();
            c.add(&snaps[0], &trees, &HashSet::new()).unwrap();
        }
        let r = run(false, true).await;
        assert_eq!((r.marking.as_str(), r.snapshots_read), ("counts", 0), "the damage is silent to a normal prune");
        assert!(r.condemned_packs > 0, "which would condemn the first snapshot's packs: {r:?}");
        let r = run(true, false).await;
        assert!(r.counts_mismatch.is_some_and(|n| n > 0), "{:?}", r.counts_mismatch);
        assert_eq!(r.condemned_packs, 0, "the full mark is what the prune used");
        let r = run(false, false).await;
        assert_eq!((r.marking.as_str(), r.snapshots_read), ("counts", 2), "counted again from the repository");
        assert_eq!(r.condemned_packs, 0);
        assert_eq!(run(true, false).await.counts_mismatch, Some(0));
        let report = crate::check(&repo, crate::ReadData::All).await.unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}
