//! Repacking: the live blobs of mostly unused packs are copied, still
//! sealed (a blob's seal binds only its id, so it moves without being
//! decrypted), into new packs; an index segment names them; only then are
//! the old packs condemned like any unused pack. A crash before the
//! condemnation leaves duplicates, which the next prune repacks away.

use std::collections::HashSet;

use cairn_formats::repo::{BlobEntry, IndexSegment, PackEntries};
use serde::Serialize;

use crate::ids::{BlobId, Id, PackId};
use crate::pack::{PackBuilder, SealedBlob};
use crate::repo::{ObjectKind, Repository};
use crate::repofile::ObjectKey;
use crate::store::BackendExt as _;
use crate::{Error, Result};

/// A pack chosen for repacking.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub pack: PackId,
    pub size: u64,
    pub entries: Vec<BlobEntry>,
    pub segments: Vec<Id>,
}

/// What repacking did (or, on a dry run, would read).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepackReport {
    /// Packs whose unused share was above the limit and that were repacked.
    pub packs: u64,
    /// Their bytes (read).
    pub bytes_read: u64,
    /// Live bytes copied.
    pub live_bytes: u64,
    /// New packs written.
    pub packs_written: u64,
    /// Packs over the limit left for a later prune by `max_repack_bytes`.
    pub packs_left: u64,
}

/// Unused share of a pack: bytes of blobs not in `live` over the pack size.
pub(super) fn unused_share(size: u64, entries: &[BlobEntry], live: &HashSet<BlobId>) -> f64 {
    let unused: u64 =
        entries.iter().filter(|e| !live.contains(&BlobId(Id(e.id)))).map(|e| u64::from(e.stored_len)).sum();
    unused as f64 / size.max(1) as f64
}

/// Copies the live blobs of `candidates` into new packs and writes the
/// index segment naming them. Every byte read is checked against the
/// pack's name first.
pub(super) async fn repack(
    repo: &Repository,
    candidates: &[Candidate],
    live: &HashSet<BlobId>,
    report: &mut RepackReport,
) -> Result<()> {
    let target = repo.config().pack_target as usize;
    let mut builder = PackBuilder::new(target);
    let mut written: Vec<PackEntries> = Vec::new();
    let mut copied: HashSet<BlobId> = HashSet::new();
    for c in candidates {
        let key = ObjectKey::Pack(c.pack).to_string();
        let bytes = repo.store().get(&key).await?;
        if Id::of_bytes(&bytes) != c.pack.0 {
            return Err(Error::corrupt(key, None, "content does not match its name (BLAKE3 mismatch); not repacked"));
        }
        report.packs += 1;
        report.bytes_read += bytes.len() as u64;
        for e in &c.entries {
            let id = BlobId(Id(e.id));
            if !live.contains(&id) || !copied.insert(id) {
                continue;
            }
            let (at, len) = (e.offset as usize, e.stored_len as usize);
            let sealed = bytes
                .get(at..at + len)
                .ok_or_else(|| Error::corrupt(&key, Some(e.offset.into()), "blob runs past the pack's end"))?;
            builder.push(&SealedBlob {
                id,
                kind: e.kind,
                compression: e.compression,
                raw_len: e.raw_len,
                sealed: sealed.to_vec(),
            });
            report.live_bytes += len as u64;
            if builder.len() >= target {
                let full = std::mem::replace(&mut builder, PackBuilder::new(target));
                written.push(store_pack(repo, full).await?);
            }
        }
    }
    if !builder.is_empty() {
        written.push(store_pack(repo, builder).await?);
    }
    report.packs_written = written.len() as u64;
    if !written.is_empty() {
        repo.put_object(ObjectKind::Index, &IndexSegment { packs: written }.encode()).await?;
    }
    Ok(())
}

async fn store_pack(repo: &Repository, b: PackBuilder) -> Result<PackEntries> {
    let p = b.finish(repo.keys());
    let len = p.bytes.len() as u64;
    repo.store().put(&ObjectKey::Pack(p.id).to_string(), p.bytes).await?;
    Ok(PackEntries { pack_id: p.id.0 .0, pack_len: len, blobs: p.entries })
}
