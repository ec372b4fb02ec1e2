//! The committer: uploads sealed packs (at most `upload_concurrency` at
//! once) and, every [`PACKS_PER_SEGMENT`] durable packs and at the end,
//! seals and stores an index segment naming them, then records it in the
//! local index and lets the session forget their blobs. Durable before
//! referenced: a segment is written only after its packs are.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cairn_formats::repo::{IndexSegment, PackEntries};

use super::packer::SessionSet;
use super::Progress;
use crate::ids::{BlobId, Id};
use crate::index::LocalIndex;
use crate::pack::SealedPack;
use crate::repo::{ObjectKind, Repository};
use crate::repofile::ObjectKey;
use crate::store::BackendExt as _;
use crate::Result;

/// An index segment is written once this many packs are durable.
const PACKS_PER_SEGMENT: usize = 64;

/// Writes index segments once their packs are durable, then records them
/// in the local index and lets the session forget their blobs.
pub(super) struct Committer<'a> {
    repo: &'a Repository,
    index: &'a LocalIndex,
    session: SessionSet,
    pending: Vec<PackEntries>,
    /// Bytes uploaded: packs and index segments.
    pub(super) uploaded: u64,
    /// Packs made durable.
    pub(super) packs: u64,
    progress: Arc<Progress>,
}

impl<'a> Committer<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        index: &'a LocalIndex,
        session: SessionSet,
        progress: Arc<Progress>,
    ) -> Committer<'a> {
        Committer { repo, index, session, pending: Vec::new(), uploaded: 0, packs: 0, progress }
    }

    pub(super) async fn pack_durable(&mut self, p: PackEntries) -> Result<()> {
        self.packs += 1;
        self.pending.push(p);
        if self.pending.len() >= PACKS_PER_SEGMENT {
            self.write_segment().await?;
        }
        Ok(())
    }

    pub(super) async fn write_segment(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let seg = IndexSegment { packs: std::mem::take(&mut self.pending) };
        let plain = seg.encode();
        let id = self.repo.put_object(ObjectKind::Index, &plain).await?;
        self.uploaded += plain.len() as u64;
        self.progress.uploaded_bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
        self.index.record_segment(&id, &seg)?;
        let mut s = self.session.lock().expect("session lock");
        for p in &seg.packs {
            for b in &p.blobs {
                s.remove(&BlobId(Id(b.id)));
            }
        }
        Ok(())
    }
}

pub(super) async fn upload(repo: &Repository, p: SealedPack, progress: &Progress) -> Result<PackEntries> {
    let len = p.bytes.len() as u64;
    repo.store().put(&ObjectKey::Pack(p.id).to_string(), p.bytes).await?;
    progress.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
    Ok(PackEntries { pack_id: p.id.0 .0, pack_len: len, blobs: p.entries })
}
