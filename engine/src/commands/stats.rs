//! `cairn stats`: what the repository holds and what deduplication saved.

use crate::store::Backend as _;
use serde::Serialize;

use crate::repo::{ObjectKind, Repository};
use crate::snapshot::Snapshot;
use crate::Result;

/// Repository statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Snapshots.
    pub snapshots: u64,
    /// Sum of the snapshots' logical sizes.
    pub logical_bytes: u64,
    /// Packs.
    pub packs: u64,
    /// Bytes in packs.
    pub pack_bytes: u64,
    /// Index segments.
    pub index_segments: u64,
    /// Bytes in index segments.
    pub index_bytes: u64,
    /// Bytes in snapshot manifests.
    pub snapshot_bytes: u64,
    /// logical_bytes / stored bytes (dedup and compression together).
    pub ratio: f64,
}

/// Computes statistics from the repository (not the cache).
pub async fn stats(repo: &Repository) -> Result<Stats> {
    let mut s = Stats::default();
    for o in repo.store().list("packs").await? {
        s.packs += 1;
        s.pack_bytes += o.size;
    }
    for (_, size) in repo.list_ids(ObjectKind::Index).await? {
        s.index_segments += 1;
        s.index_bytes += size;
    }
    for (_, size) in repo.list_ids(ObjectKind::Snapshot).await? {
        s.snapshot_bytes += size;
    }
    for (_, snap) in Snapshot::list(repo).await? {
        s.snapshots += 1;
        s.logical_bytes += snap.entries.iter().map(|e| e.size).sum::<u64>();
    }
    let stored = s.pack_bytes + s.index_bytes + s.snapshot_bytes;
    s.ratio = if stored == 0 { 0.0 } else { s.logical_bytes as f64 / stored as f64 };
    Ok(s)
}
