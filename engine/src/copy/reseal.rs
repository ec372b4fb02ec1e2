//! Copying between repositories that are not copy-compatible: every blob
//! is read and opened with the source's keys, named and sealed again with
//! the target's, and packed into new packs; trees are rewritten with the
//! new ids, so snapshots get new ids too (each records the source
//! snapshot it came from in `copied_from`). Slower than a byte copy: it
//! decrypts, hashes, compresses and encrypts everything it moves. The
//! chunk boundaries stay the source's.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use cairn_formats::repo::{encode_tree, BlobKind, ChunkRef, Compression, IndexSegment, PackEntries};

use super::CopyProgress;
use crate::commands::restore::{fetch_blobs, load_tree};
use crate::ids::{BlobId, Id, TreeId};
use crate::index::LocalIndex;
use crate::pack::{open_blob, seal_blob, PackBuilder};
use crate::repo::{ObjectKind, Repository};
use crate::repofile::ObjectKey;
use crate::snapshot::{Snapshot, TreeRef};
use crate::store::BackendExt as _;
use crate::wal::{open_named, seal_named, WalManifest};
use crate::{Error, Result, DEFAULT_COMPRESSION_LEVEL};

/// An index segment is written once this many packs are durable.
const PACKS_PER_SEGMENT: usize = 64;
/// Chunks fetched from the source at once.
const FETCH_BATCH: usize = 16;

/// Re-seals snapshots' blobs into the target, packing them as a backup
/// does: packs durable, then the index segment naming them.
pub(super) struct Resealer<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    src_index: &'a LocalIndex,
    dst_index: &'a LocalIndex,
    builder: PackBuilder,
    target: usize,
    /// Target blob ids sealed by this run (the index learns them only once
    /// their segment is written).
    added: HashSet<BlobId>,
    pending: Vec<PackEntries>,
    progress: &'a CopyProgress,
    /// Packs written.
    pub(super) packs: u64,
    /// Their bytes.
    pub(super) pack_bytes: u64,
    /// Index segments written.
    pub(super) segments: u64,
}

impl<'a> Resealer<'a> {
    pub(super) fn new(
        src: &'a Repository,
        dst: &'a Repository,
        src_index: &'a LocalIndex,
        dst_index: &'a LocalIndex,
        progress: &'a CopyProgress,
    ) -> Resealer<'a> {
        let target = dst.config().pack_target as usize;
        Resealer {
            src,
            dst,
            src_index,
            dst_index,
            builder: PackBuilder::new(target),
            target,
            added: HashSet::new(),
            pending: Vec::new(),
            progress,
            packs: 0,
            pack_bytes: 0,
            segments: 0,
        }
    }

    /// `snap` with every tree re-sealed into the target; not yet saved.
    pub(super) async fn snapshot(&mut self, snap: &Snapshot) -> Result<Snapshot> {
        let mut s = snap.clone();
        for e in &mut s.entries {
            for t in &mut e.content {
                *t = self.tree(t).await?;
            }
            if let Some(m) = &mut e.members {
                for t in &mut m.content {
                    *t = self.tree(t).await?;
                }
            }
        }
        Ok(s)
    }

    async fn tree(&mut self, tree: &TreeRef) -> Result<TreeRef> {
        let refs = load_tree(self.src, self.src_index, &tree.tree).await?;
        let mut out = Vec::with_capacity(refs.len());
        for batch in refs.chunks(FETCH_BATCH) {
            let ids: Vec<BlobId> = batch.iter().map(|r| BlobId(Id(r.id))).collect();
            let (blobs, _, _) = fetch_blobs(self.src, self.src_index, &ids, 8).await?;
            for (r, id) in batch.iter().zip(&ids) {
                let plain = blobs.get(id).ok_or_else(|| Error::Internal(format!("blob {id} was not fetched")))?;
                let new = self.blob(BlobKind::Data, plain).await?;
                out.push(ChunkRef { id: new.0 .0, len: r.len });
            }
        }
        let new = self.blob(BlobKind::Tree, &encode_tree(&out)).await?;
        Ok(TreeRef { tree: TreeId(new.0), chunks: tree.chunks, bytes: tree.bytes })
    }

    /// Names `plain` with the target's key and packs it unless the target
    /// has it.
    async fn blob(&mut self, kind: BlobKind, plain: &[u8]) -> Result<BlobId> {
        let id = self.dst.keys().blob_id(plain);
        if self.added.contains(&id) || self.dst_index.lookup(&id)?.is_some() {
            return Ok(id);
        }
        let sealed = seal_blob(self.dst.keys(), id, kind, DEFAULT_COMPRESSION_LEVEL, plain);
        self.builder.push(&sealed);
        self.added.insert(id);
        if self.builder.len() >= self.target {
            self.flush().await?;
        }
        Ok(id)
    }

    async fn flush(&mut self) -> Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let pack = std::mem::replace(&mut self.builder, PackBuilder::new(self.target)).finish(self.dst.keys());
        let len = pack.bytes.len() as u64;
        self.dst.store().put(&ObjectKey::Pack(pack.id).to_string(), pack.bytes).await?;
        self.progress.bytes.fetch_add(len, Ordering::Relaxed);
        self.progress.packs.fetch_add(1, Ordering::Relaxed);
        self.packs += 1;
        self.pack_bytes += len;
        self.pending.push(PackEntries { pack_id: pack.id.0 .0, pack_len: len, blobs: pack.entries });
        if self.pending.len() >= PACKS_PER_SEGMENT {
            self.write_segment().await?;
        }
        Ok(())
    }

    async fn write_segment(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let seg = IndexSegment { packs: std::mem::take(&mut self.pending) };
        let id = self.dst.put_object(ObjectKind::Index, &seg.encode()).await?;
        self.dst_index.record_segment(&id, &seg)?;
        self.segments += 1;
        Ok(())
    }

    /// Makes every pack durable and writes the last index segment; only
    /// then may snapshots reference them.
    pub(super) async fn finish(&mut self) -> Result<()> {
        self.flush().await?;
        self.write_segment().await
    }
}

/// Re-seals the WAL record at `key` (a manifest or a stanza record) for
/// the target: a manifest's content goes into one fresh pack (as `wal push`
/// writes it), made durable before the manifest is returned. Returns the
/// sealed record and the pack bytes written.
pub(super) async fn wal_record(src: &Repository, dst: &Repository, key: &str, bytes: &Bytes) -> Result<(Bytes, u64)> {
    if !matches!(ObjectKey::parse(key), Some(ObjectKey::WalFile { .. })) {
        let record: crate::wal::StanzaRecord = open_named(src, key, bytes)?;
        return Ok((seal_named(dst, key, &record), 0));
    }
    let mut m: WalManifest = open_named(src, key, bytes)?;
    if m.pieces.is_empty() {
        return Ok((seal_named(dst, key, &m), 0));
    }
    let mut builder = PackBuilder::new(m.size as usize + 4096);
    for p in &m.pieces {
        let (pack, entry) = p.entry().ok_or_else(|| Error::corrupt(key, None, "malformed piece"))?;
        let object = ObjectKey::Pack(pack).to_string();
        let at = u64::from(entry.offset);
        let sealed = src.store().get_range(&object, at..at + u64::from(entry.stored_len)).await?;
        let plain = open_blob(src.keys(), &object, &entry, &sealed)?;
        let id = dst.keys().blob_id(&plain);
        builder.push(&seal_blob(dst.keys(), id, BlobKind::Data, DEFAULT_COMPRESSION_LEVEL, &plain));
    }
    let pack = builder.finish(dst.keys());
    let len = pack.bytes.len() as u64;
    dst.store().put(&ObjectKey::Pack(pack.id).to_string(), pack.bytes).await?;
    for (p, e) in m.pieces.iter_mut().zip(&pack.entries) {
        p.pack = pack.id.to_hex();
        p.id = hex::encode(e.id);
        p.offset = e.offset;
        p.stored_len = e.stored_len;
        p.raw_len = e.raw_len;
        p.zstd = e.compression == Compression::Zstd;
    }
    Ok((seal_named(dst, key, &m), len))
}
