//! Differences between two snapshots' files.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::layout::{FileInfo, Layout, Location};
use crate::ids::Id;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::Result;

/// One difference between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Path.
    pub path: String,
    /// `added`, `removed`, `changed` (content) or `metadata` (mode, mtime,
    /// owner or link target only).
    pub change: &'static str,
    /// Size in the first snapshot.
    pub size_a: Option<u64>,
    /// Size in the second snapshot.
    pub size_b: Option<u64>,
    /// Bytes of the second snapshot's content that are in no chunk of the
    /// first snapshot (what storing the change cost before compression).
    pub new_bytes: u64,
}

/// Differences between two snapshots' files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// Each difference, by path.
    pub changes: Vec<Change>,
    /// Counts.
    pub added: u64,
    /// Files only in the first snapshot.
    pub removed: u64,
    /// Files whose content differs.
    pub changed: u64,
    /// Files whose metadata alone differs.
    pub metadata: u64,
    /// Sum of `new_bytes`.
    pub new_bytes: u64,
}

/// Compares two snapshots file by file. Content is compared by chunk ids
/// (tar members smaller than the minimum chunk, which share chunks with
/// their neighbours, are read and compared byte for byte).
pub async fn diff(repo: &Repository, index: &LocalIndex, a: &Layout, b: &Layout) -> Result<DiffReport> {
    let old: HashMap<&str, &FileInfo> = a.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let new_paths: HashSet<&str> = b.files.iter().map(|f| f.path.as_str()).collect();
    let mut known: HashSet<Id> = HashSet::new();
    for f in &a.files {
        known.extend(a.chunk_ids(repo, index, f).await?.into_iter().map(|(id, _)| id));
    }
    let mut r = DiffReport::default();
    for f in &b.files {
        // Bytes of the file's chunks that the first snapshot lacks (at most
        // the file's size: a chunk shared with a neighbour counts once).
        let new_bytes = |ids: &[(Id, u32)], size: u64| {
            ids.iter().filter(|(i, _)| !known.contains(i)).map(|(_, l)| u64::from(*l)).sum::<u64>().min(size)
        };
        match old.get(f.path.as_str()) {
            None => {
                let ids = b.chunk_ids(repo, index, f).await?;
                let nb = new_bytes(&ids, f.size);
                r.changes.push(Change {
                    path: f.path.clone(),
                    change: "added",
                    size_a: None,
                    size_b: Some(f.size),
                    new_bytes: nb,
                });
            }
            Some(o) => {
                let same_content = o.kind == f.kind
                    && o.size == f.size
                    && o.target == f.target
                    && same_bytes(repo, index, a, o, b, f).await?;
                if !same_content {
                    let ids = b.chunk_ids(repo, index, f).await?;
                    let nb = new_bytes(&ids, f.size);
                    r.changes.push(Change {
                        path: f.path.clone(),
                        change: "changed",
                        size_a: Some(o.size),
                        size_b: Some(f.size),
                        new_bytes: nb,
                    });
                } else if o.mode != f.mode || o.mtime != f.mtime || o.owner != f.owner {
                    r.changes.push(Change {
                        path: f.path.clone(),
                        change: "metadata",
                        size_a: Some(o.size),
                        size_b: Some(f.size),
                        new_bytes: 0,
                    });
                }
            }
        }
    }
    for f in &a.files {
        if !new_paths.contains(f.path.as_str()) {
            r.changes.push(Change {
                path: f.path.clone(),
                change: "removed",
                size_a: Some(f.size),
                size_b: None,
                new_bytes: 0,
            });
        }
    }
    r.changes.sort_by(|x, y| x.path.cmp(&y.path));
    for c in &r.changes {
        match c.change {
            "added" => r.added += 1,
            "removed" => r.removed += 1,
            "changed" => r.changed += 1,
            _ => r.metadata += 1,
        }
        r.new_bytes += c.new_bytes;
    }
    Ok(r)
}

async fn same_bytes(
    repo: &Repository,
    index: &LocalIndex,
    a: &Layout,
    fa: &FileInfo,
    b: &Layout,
    fb: &FileInfo,
) -> Result<bool> {
    if fa.at == Location::None || fb.at == Location::None {
        return Ok(fa.at == fb.at);
    }
    if let (Location::Entry(i), Location::Entry(j)) = (&fa.at, &fb.at) {
        return Ok(a.snapshot.entries[*i].blake3 == b.snapshot.entries[*j].blake3);
    }
    // A member of at least the minimum chunk size has chunks of its own
    // (forced cuts), so equal chunk lists mean equal bytes. A smaller one
    // may share chunks with its neighbours, which can change while it does
    // not: compare its bytes.
    if fa.size >= u64::from(repo.config().chunker.min_size) {
        let (ia, ib) = (a.chunk_ids(repo, index, fa).await?, b.chunk_ids(repo, index, fb).await?);
        return Ok(ia == ib);
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    a.read_file(repo, index, fa, &mut x).await?;
    b.read_file(repo, index, fb, &mut y).await?;
    Ok(x == y)
}
