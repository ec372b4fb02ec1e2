//! Repacking: the live blobs of mostly unused packs are copied, still
//! sealed (a blob's seal binds only its id, so it moves without being
//! decrypted), into new packs; an index segment names them; only then are
//! the old packs condemned like any unused pack. A crash before the
//! condemnation leaves duplicates, which the next prune repacks away.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use cairn_formats::repo::{BlobEntry, IndexSegment, PackEntries};
use serde::Serialize;

use super::live::Live;
use crate::ids::{BlobId, Id, PackId};
use crate::pack::PackBuilder;
use crate::repo::{ObjectKind, Repository};
use crate::repofile::ObjectKey;
use crate::store::BackendExt as _;
use crate::Result;

/// New packs being stored at once. A local store fsyncs each pack before
/// it is renamed into place; one at a time, the disk waits on every fsync
/// in turn (measured here with dd: 44 files of 16 MiB, each fsynced, took
/// 4.5 s one by one and 0.7 s four at a time). Three keep the disk busy
/// while bounding memory: each in flight holds one pack buffer.
const UPLOADS: usize = 3;

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
    /// The packs chosen for repacking (on a dry run, those it would read).
    pub chosen: Vec<String>,
    /// The packs whose live blobs all moved (only these are condemned).
    #[serde(skip)]
    pub repacked: Vec<PackId>,
}

/// Unused share of a pack: bytes of blobs not live (`has`, by entry)
/// over the pack size.
pub(super) fn unused_share(size: u64, entries: &[BlobEntry], has: &[bool]) -> f64 {
    let unused: u64 = entries.iter().zip(has).filter(|(_, h)| !**h).map(|(e, _)| u64::from(e.stored_len)).sum();
    unused as f64 / size.max(1) as f64
}

/// Copies the live blobs of `candidates` into new packs and writes the
/// index segment naming them. Only the live blobs are read (adjacent ones
/// in one ranged read), and each is authenticated before it is copied, so
/// damage is never carried over. Memory is [`UPLOADS`] + 1 pack buffers
/// and one read buffer, reused from pack to pack whatever the number of
/// packs. The index segment is written only once every new pack is stored.
pub(super) async fn repack(
    repo: &Arc<Repository>,
    candidates: &[Candidate],
    live: &dyn Live,
    report: &mut RepackReport,
) -> Result<Vec<(PackId, String)>> {
    let mut skipped = Vec::new();
    let target = repo.config().pack_target as usize;
    let mut spares: Vec<Vec<u8>> = Vec::new();
    let mut builder = PackBuilder::with_buffer(Vec::with_capacity(target + target / 4));
    let mut read_buf: Vec<u8> = Vec::new();
    let mut written: Vec<PackEntries> = Vec::new();
    let mut uploads = Uploads::default();
    let mut copied: HashSet<BlobId> = HashSet::new();
    for c in candidates {
        let key = ObjectKey::Pack(c.pack).to_string();
        let ids: Vec<BlobId> = c.entries.iter().map(|e| BlobId(Id(e.id))).collect();
        let has = live.has(&ids)?;
        let mut wanted: Vec<&BlobEntry> = c
            .entries
            .iter()
            .zip(has)
            .filter(|(e, h)| *h && !copied.contains(&BlobId(Id(e.id))))
            .map(|(e, _)| e)
            .collect();
        wanted.sort_by_key(|e| e.offset);
        let local = repo.store().open_local(&key)?;
        let mut damaged = None;
        for run in runs(&wanted) {
            let last = run[run.len() - 1];
            let (start, end) = (u64::from(run[0].offset), u64::from(last.offset) + u64::from(last.stored_len));
            let fetched;
            let bytes: &[u8] = match &local {
                Some(f) => {
                    read_buf.resize((end - start) as usize, 0);
                    let buf = &mut read_buf[..];
                    tokio::task::block_in_place(|| f.read_at(buf, start))?;
                    &read_buf
                }
                None => {
                    fetched = repo.store().get_range(&key, start..end).await?;
                    &fetched
                }
            };
            report.bytes_read += bytes.len() as u64;
            let slice = |e: &BlobEntry| {
                let at = (u64::from(e.offset) - start) as usize;
                &bytes[at..at + e.stored_len as usize]
            };
            // Authenticated (and the id checked) on every core before any is
            // copied: damage stops here.
            let verified = tokio::task::block_in_place(|| {
                use rayon::prelude::*;
                run.par_iter().try_for_each(|e| verify(repo, &key, e, slice(e)))
            });
            if let Err(e) = verified {
                damaged = Some(e.to_string());
                break;
            }
            for e in run {
                if !copied.insert(BlobId(Id(e.id))) {
                    continue; // a duplicate entry within this pack
                }
                builder.push_sealed(BlobId(Id(e.id)), e.kind, e.compression, e.raw_len, slice(e));
                report.live_bytes += u64::from(e.stored_len);
                if builder.len() >= target {
                    if uploads.0.len() >= UPLOADS {
                        let (entries, buf) = uploads.next().await?;
                        written.push(entries);
                        spares.push(buf);
                    }
                    let next = PackBuilder::with_buffer(spares.pop().unwrap_or_default());
                    let full = std::mem::replace(&mut builder, next);
                    let repo = repo.clone();
                    uploads.0.push_back(tokio::spawn(async move { store_pack(&repo, full).await }));
                }
            }
        }
        match damaged {
            Some(why) => skipped.push((c.pack, why)),
            None => {
                report.packs += 1;
                report.repacked.push(c.pack);
            }
        }
    }
    if !builder.is_empty() {
        let repo = repo.clone();
        uploads.0.push_back(tokio::spawn(async move { store_pack(&repo, builder).await }));
    }
    while !uploads.0.is_empty() {
        written.push(uploads.next().await?.0);
    }
    report.packs_written = written.len() as u64;
    if !written.is_empty() {
        repo.put_object(ObjectKind::Index, &IndexSegment { packs: written }.encode()).await?;
    }
    Ok(skipped)
}

thread_local! {
    /// Where each verifying thread opens blobs, reused.
    static OPENED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn verify(repo: &Repository, key: &str, e: &BlobEntry, sealed: &[u8]) -> Result<()> {
    OPENED.with(|o| {
        let mut out = o.borrow_mut();
        out.resize(e.raw_len as usize, 0);
        crate::pack::open_blob_into(repo.keys(), key, e, sealed, &mut out)
    })
}

/// Adjacent entries (sorted by offset) grouped into runs read at once.
fn runs<'a>(sorted: &[&'a BlobEntry]) -> Vec<Vec<&'a BlobEntry>> {
    let mut out: Vec<Vec<&BlobEntry>> = Vec::new();
    for e in sorted {
        let ends_at = |l: &BlobEntry| u64::from(l.offset) + u64::from(l.stored_len);
        match out.last_mut() {
            Some(run) if run.last().is_some_and(|l| ends_at(l) == u64::from(e.offset)) => run.push(e),
            _ => out.push(vec![e]),
        }
    }
    out
}

/// Pack uploads in flight, oldest first. Dropped with some still running
/// (an error elsewhere), they are aborted: a pack stored anyway is one no
/// segment names, collected as an orphan by a later prune.
#[derive(Default)]
struct Uploads(VecDeque<tokio::task::JoinHandle<Result<Stored>>>);

/// A stored pack's entries and, when the store let go of them, its bytes'
/// buffer for the next pack.
type Stored = (PackEntries, Vec<u8>);

impl Uploads {
    /// Waits for the oldest upload.
    async fn next(&mut self) -> Result<Stored> {
        let h = self.0.pop_front().expect("an upload in flight");
        h.await.map_err(|e| crate::Error::Internal(format!("pack upload task failed: {e}")))?
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Stores a finished pack; returns its entries and, when the store let go
/// of the bytes, their buffer for the next pack.
async fn store_pack(repo: &Repository, b: PackBuilder) -> Result<Stored> {
    let p = b.finish(repo.keys());
    let len = p.bytes.len() as u64;
    let kept = p.bytes.clone();
    repo.store().put(&ObjectKey::Pack(p.id).to_string(), p.bytes).await?;
    let buf = kept.try_into_mut().map(Vec::from).unwrap_or_default();
    Ok((PackEntries { pack_id: p.id.0 .0, pack_len: len, blobs: p.entries }, buf))
}
