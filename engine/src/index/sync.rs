//! Bringing the local index up to date with the repository.

use crate::repofile::ObjectKey;
use crate::store::Backend as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_formats::repo::IndexSegment;
use futures::StreamExt;

use super::{discard, LocalIndex};
use crate::ids::{Id, PackId};
use crate::pack::read_trailer;
use crate::repo::{ObjectKind, Repository};
use crate::{Error, Result};

/// Concurrent object reads while syncing or rebuilding.
const FETCH_CONCURRENCY: usize = 16;

impl LocalIndex {
    /// Applies every `index/` segment not seen yet; returns how many.
    ///
    /// Garbage collection replaces a segment by writing its successor and
    /// then deleting it: a listed segment that is gone when read means the
    /// listing is stale, so the sync lists again until it reads everything
    /// it listed.
    pub async fn sync(&mut self, repo: &Repository) -> Result<usize> {
        let mut n = 0;
        for _ in 0..8 {
            let mut unseen = Vec::new();
            for (id, _) in repo.list_ids(ObjectKind::Index).await? {
                if !self.has_seen(&id)? {
                    unseen.push(id);
                }
            }
            let mut fetched = futures::stream::iter(unseen.iter().copied())
                .map(|id| async move {
                    match repo.load_segment(&id).await {
                        Ok(seg) => Ok(Some((id, seg))),
                        Err(Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .buffer_unordered(FETCH_CONCURRENCY);
            let mut vanished = false;
            while let Some(r) = fetched.next().await {
                match r? {
                    Some((id, seg)) => {
                        self.apply_segment(&id, &seg)?;
                        n += 1;
                    }
                    None => vanished = true,
                }
            }
            if !vanished {
                return Ok(n);
            }
        }
        Err(Error::Precondition { what: "index/ (segments kept vanishing while being read; retry)".into() })
    }

    /// Opens the index for a job that writes snapshots (backup), synced.
    ///
    /// It first takes a garbage-collection lease (kept by the index until
    /// [`LocalIndex::release`]), then reads `gc/state`: a cache built at
    /// another GC epoch is rebuilt, and packs condemned by a pending
    /// generation are never returned by lookups. That order is what makes
    /// deduplication safe beside a concurrent prune (docs/FORMAT.md,
    /// "Garbage collection").
    pub async fn for_writing(repo: &Arc<Repository>, cache_dir: &Path, lock_timeout: Duration) -> Result<LocalIndex> {
        let lease = if crate::gc::fencing_disabled() {
            None
        } else {
            Some(crate::gc::Lease::acquire(repo.clone(), "backup").await?)
        };
        let view = crate::gc::GcView::read(repo).await?;
        let mut idx = Self::build(repo, cache_dir, lock_timeout, view).await?;
        idx.lease = lease;
        Ok(idx)
    }

    /// Opens the writer index, rebuilt if GC retired segments since, with
    /// condemned packs excluded, and synced.
    async fn build(
        repo: &Repository,
        cache_dir: &Path,
        lock_timeout: Duration,
        view: crate::gc::GcView,
    ) -> Result<LocalIndex> {
        let path = super::index_dir(cache_dir, &repo.config().id);
        let id = repo.config().id.clone();
        let p = path.clone();
        let mut idx = tokio::task::spawn_blocking(move || LocalIndex::open_writer(&p, &id, lock_timeout))
            .await
            .expect("index open panicked")?;
        if idx.gc_epoch()? != view.epoch {
            tracing::info!(index = %path.display(), epoch = view.epoch, "garbage collection retired index segments; rebuilding the local index");
            drop(idx);
            let (p, id) = (path.clone(), repo.config().id.clone());
            idx = tokio::task::spawn_blocking(move || -> Result<LocalIndex> {
                discard(&p)?;
                LocalIndex::open_writer(&p, &id, lock_timeout)
            })
            .await
            .expect("index open panicked")?;
        }
        idx.exclude(view.excluded);
        let n = idx.sync(repo).await?;
        idx.set_gc_epoch(view.epoch)?;
        tracing::debug!(segments = n, "local index synced");
        Ok(idx)
    }

    /// Opens the index for a job that only reads (restore, check). Builds it
    /// first (taking the writer lock briefly) if it is missing or unreadable.
    pub async fn for_reading(repo: &Repository, cache_dir: &Path, lock_timeout: Duration) -> Result<LocalIndex> {
        let path = super::index_dir(cache_dir, &repo.config().id);
        let id = repo.config().id.clone();
        let view = crate::gc::GcView::read(repo).await?;
        let current = match LocalIndex::open_reader(&path, &id)? {
            Some(r) => r.gc_epoch()? == view.epoch,
            None => false,
        };
        if !current {
            tracing::info!(index = %path.display(), "building the local index from the repository");
            drop(Self::build(repo, cache_dir, lock_timeout, view.clone()).await?);
        }
        let mut idx = LocalIndex::open_reader(&path, &id)?
            .ok_or_else(|| Error::Index { path: path.clone(), detail: "unreadable right after a rebuild".into() })?;
        idx.exclude(view.excluded);
        idx.sync(repo).await?;
        Ok(idx)
    }
}

/// What `cairn index rebuild` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RebuildSummary {
    /// Packs whose trailers were read.
    pub packs: u64,
    /// Blob entries recorded.
    pub blobs: u64,
    /// Packs no readable index segment named; a new segment now names them,
    /// so other hosts and garbage collection see what this cache may
    /// deduplicate against.
    pub registered_packs: u64,
    /// Packs or segments that could not be read, with the reason.
    pub unreadable: Vec<String>,
}

/// Discards the local index and rebuilds it from pack trailers alone (the
/// path of last resort: it works even when `index/` segments are lost).
///
/// It registers packs no segment names in a new segment, which makes them
/// deduplication candidates again: so it holds a garbage-collection lease
/// from before it reads `gc/state` until that segment is durable, like a
/// backup, and withdraws the segment if the lease was broken meanwhile.
pub async fn rebuild_from_packs(
    repo: &Arc<Repository>,
    cache_dir: &Path,
    lock_timeout: Duration,
) -> Result<RebuildSummary> {
    let lease = if crate::gc::fencing_disabled() {
        None
    } else {
        Some(crate::gc::Lease::acquire(repo.clone(), "index rebuild").await?)
    };
    let (summary, written) = rebuild_inner(repo, cache_dir, lock_timeout).await?;
    if let Some(lease) = lease {
        if let Err(e) = lease.renew().await {
            if let Some(seg) = written {
                repo.store().delete(&ObjectKey::Index(seg).to_string()).await?;
            }
            return Err(e);
        }
        lease.release().await?;
    }
    Ok(summary)
}

async fn rebuild_inner(
    repo: &Repository,
    cache_dir: &Path,
    lock_timeout: Duration,
) -> Result<(RebuildSummary, Option<Id>)> {
    let path = super::index_dir(cache_dir, &repo.config().id);
    let id = repo.config().id.clone();
    let p = path.clone();
    let idx = tokio::task::spawn_blocking(move || -> Result<LocalIndex> {
        // Take the lock before discarding, so a running backup is not pulled
        // out from under.
        drop(LocalIndex::open_writer(&p, &id, lock_timeout)?);
        discard(&p)?;
        LocalIndex::open_writer(&p, &id, lock_timeout)
    })
    .await
    .expect("index open panicked")?;
    // Packs a pending garbage collection condemned are neither indexed nor
    // registered again: that would hand them back to deduplication.
    let view = crate::gc::GcView::read(repo).await?;
    let packs: Vec<_> = repo
        .store()
        .list("packs")
        .await?
        .into_iter()
        .filter(|o| {
            let name = o.key.rsplit('/').next().unwrap_or_default();
            !PackId::from_hex(name).is_some_and(|id| view.excluded.contains(&id))
        })
        .collect();
    let mut summary = RebuildSummary::default();
    // Which packs the repository's own segments already name.
    let segments = repo.list_ids(ObjectKind::Index).await?;
    let mut covered = std::collections::HashSet::new();
    let mut segs = futures::stream::iter(segments.iter().map(|(id, _)| *id))
        .map(|id| async move { (id, repo.load_segment(&id).await) })
        .buffer_unordered(FETCH_CONCURRENCY);
    while let Some((id, r)) = segs.next().await {
        match r {
            Ok(seg) => covered.extend(seg.packs.iter().map(|p| PackId(Id(p.pack_id)))),
            Err(e) => summary.unreadable.push(format!("{}: {e}", ObjectKey::Index(id))),
        }
    }
    // WAL packs belong to WAL manifests, not to the dedup index: a backup
    // must never reference a blob that WAL retention may delete.
    // A WAL manifest that cannot be read could hide WAL packs: stop rather
    // than register them as orphans.
    let (wal_packs, _, wal_problems) = crate::wal::referenced_packs(repo).await?;
    if let Some((object, message)) = wal_problems.into_iter().next() {
        return Err(Error::corrupt(object, None, format!("{message} (index rebuild needs every WAL manifest)")));
    }
    let mut orphans = Vec::new();
    let mut trailers = futures::stream::iter(packs.iter().filter(|o| {
        let name = o.key.rsplit('/').next().unwrap_or_default();
        !PackId::from_hex(name).is_some_and(|id| wal_packs.contains(&id))
    }))
    .map(|o| async move {
        let name = o.key.rsplit('/').next().unwrap_or_default();
        let Some(pid) = PackId::from_hex(name) else {
            return (o.key.clone(), Err(Error::corrupt(&o.key, None, "malformed pack name")));
        };
        (o.key.clone(), read_trailer(repo.store(), repo.keys(), &pid, o.size).await.map(|e| (pid, e)))
    })
    .buffer_unordered(FETCH_CONCURRENCY);
    while let Some((key, r)) = trailers.next().await {
        match r {
            Ok((pid, entries)) => {
                idx.put_pack(&pid, &entries)?;
                if !covered.contains(&pid) {
                    let size = packs.iter().find(|o| o.key == key).map(|o| o.size).unwrap_or_default();
                    orphans.push(cairn_formats::repo::PackEntries {
                        pack_id: pid.0 .0,
                        pack_len: size,
                        blobs: entries.clone(),
                    });
                }
                summary.packs += 1;
                summary.blobs += entries.len() as u64;
            }
            Err(e) => summary.unreadable.push(format!("{key}: {e}")),
        }
    }
    // Every segment's packs were just read directly.
    for (seg, _) in &segments {
        idx.mark_seen(seg)?;
    }
    idx.set_gc_epoch(view.epoch)?;
    let mut written = None;
    if !orphans.is_empty() {
        summary.registered_packs = orphans.len() as u64;
        let seg = IndexSegment { packs: orphans };
        let id = repo.put_object(ObjectKind::Index, &seg.encode()).await?;
        idx.mark_seen(&id)?;
        written = Some(id);
    }
    Ok((summary, written))
}
