//! Marking: the blobs a set of snapshots needs.

use std::collections::HashSet;

use futures::StreamExt;

use super::counts::Counts;
use super::live::Marks;

use crate::commands::restore::load_tree;
use crate::ids::{BlobId, Id, SnapshotId, TreeId};
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::{Error, Result};

/// A snapshot that references blobs no index segment lists.
#[derive(Debug, Clone)]
pub(super) struct Dangling {
    pub id: SnapshotId,
    pub lease: Option<String>,
    pub missing: u64,
}

/// What marking found.
#[derive(Debug, Default)]
pub(super) struct Marked {
    /// Snapshots read (those forgotten meanwhile are left out).
    pub snapshots: Vec<SnapshotId>,
    /// Snapshots with missing blobs.
    pub dangling: Vec<Dangling>,
}

/// Adds every blob (trees and data) the snapshots `ids` need to `live`.
/// A snapshot deleted meanwhile (forgotten) is skipped; one that cannot be
/// read stops the mark: its references are unknown, so nothing may be
/// condemned.
pub(super) async fn mark(
    repo: &Repository,
    index: &LocalIndex,
    ids: &[SnapshotId],
    live: &mut dyn Marks,
) -> Result<Marked> {
    let mut out = Marked::default();
    let mut loaded = futures::stream::iter(ids.iter().copied())
        .map(|id| async move { (id, Snapshot::load(repo, &id).await) })
        .buffered(8);
    while let Some((id, r)) = loaded.next().await {
        let Some(snap) = present(r)? else { continue };
        out.snapshots.push(id);
        let mut missing = 0u64;
        for tree in trees_of(&snap) {
            missing += mark_tree(repo, index, tree, live).await?;
        }
        if missing > 0 {
            out.dangling.push(Dangling { id, lease: snap.lease.clone(), missing });
        }
    }
    Ok(out)
}

/// Marks one tree and its chunks; returns how many of them the index does
/// not know.
async fn mark_tree(repo: &Repository, index: &LocalIndex, tree: &TreeId, live: &mut dyn Marks) -> Result<u64> {
    if !live.add(&tree.blob())? {
        return Ok(0);
    }
    if index.lookup(&tree.blob())?.is_none() {
        return Ok(1);
    }
    let refs = load_tree(repo, index, tree).await?;
    let ids: Vec<BlobId> = refs.iter().map(|r| BlobId(Id(r.id))).collect();
    let found = index.lookup_many(&ids)?;
    let missing = found.iter().filter(|f| f.is_none()).count() as u64;
    live.add_all(&ids)?;
    Ok(missing)
}

/// Brings `counts` up to the snapshots `ids`: counts those it has not
/// seen and uncounts those that are gone, reading only their trees.
/// Returns what was marked and how many snapshots' trees were read, or
/// `None` when a gone snapshot's trees can no longer be read in full (a
/// sweep elsewhere deleted them): the counts must then be dropped.
///
/// Memory holds one snapshot's distinct blob ids at a time.
pub(super) async fn mark_counted(
    repo: &Repository,
    index: &LocalIndex,
    ids: &[SnapshotId],
    counts: &mut Counts,
) -> Result<Option<(Marked, u64)>> {
    let listed: HashSet<SnapshotId> = ids.iter().copied().collect();
    let counted = counts.snapshots()?;
    let mut read = 0u64;
    for gone in counted.difference(&listed) {
        let mut blobs = HashSet::new();
        for t in counts.trees(gone)? {
            match mark_tree(repo, index, &t, &mut blobs).await {
                Ok(0) => {}
                Ok(_) | Err(Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        counts.remove(gone, &blobs)?;
        read += 1;
    }
    let mut out =
        Marked { snapshots: ids.iter().filter(|i| counted.contains(i)).copied().collect(), ..Default::default() };
    let fresh = ids.iter().filter(|i| !counted.contains(i)).copied();
    let mut loaded =
        futures::stream::iter(fresh).map(|id| async move { (id, Snapshot::load(repo, &id).await) }).buffered(8);
    while let Some((id, r)) = loaded.next().await {
        let Some(snap) = present(r)? else { continue };
        out.snapshots.push(id);
        read += 1;
        let (mut blobs, mut trees, mut missing) = (HashSet::new(), Vec::new(), 0u64);
        for tree in trees_of(&snap) {
            trees.push(*tree);
            missing += mark_tree(repo, index, tree, &mut blobs).await?;
        }
        if missing > 0 {
            // Not counted: the prune withdraws it or refuses to run.
            out.dangling.push(Dangling { id, lease: snap.lease.clone(), missing });
        } else {
            counts.add(&id, &trees, &blobs)?;
        }
    }
    Ok(Some((out, read)))
}

/// A loaded snapshot; `None` when it was deleted (forgotten) since it was
/// listed.
fn present(r: Result<Snapshot>) -> Result<Option<Snapshot>> {
    match r {
        Ok(s) => Ok(Some(s)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every tree a snapshot references: its entries' content and member
/// indexes.
fn trees_of(snap: &Snapshot) -> impl Iterator<Item = &TreeId> {
    snap.entries
        .iter()
        .flat_map(|e| e.content.iter().chain(e.members.iter().flat_map(|m| m.content.iter())).map(|t| &t.tree))
}
