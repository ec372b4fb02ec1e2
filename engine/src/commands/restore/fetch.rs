//! Fetching the blobs of a restore window: distinct blobs are located in
//! the index, grouped by pack, sorted by offset and coalesced into range
//! reads (neighbours closer than [`COALESCE_GAP`] are read in one request,
//! up to [`MAX_RANGE`] per request). Ranges are fetched concurrently and
//! their blobs decrypted, decompressed and re-hashed in parallel
//! ([`crate::ordered`]). A blob that fails to open where the local index
//! placed it is read again where its pack's trailer places it.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_formats::repo::{decode_tree, ChunkRef};
use futures::StreamExt;

use crate::ids::{BlobId, Id, PackId, TreeId};
use crate::index::{BlobLocation, LocalIndex};
use crate::ordered::in_order;
use crate::pack::open_blob;
use crate::repo::Repository;
use crate::repofile::ObjectKey;
use crate::store::Backend as _;
use crate::store::BackendExt as _;
use crate::{Error, Result};

/// Blobs of one pack closer than this are read in one request.
const COALESCE_GAP: u64 = 256 << 10;
/// The largest range read in one request.
const MAX_RANGE: u64 = 16 << 20;

/// One range read: a pack's bytes `start..end` and the blobs in them.
pub(super) struct Range {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<BlobLocation>,
}

/// Plans the range reads for a set of distinct blobs.
pub(super) fn plan(locs: Vec<BlobLocation>) -> Vec<Range> {
    let mut by_pack: HashMap<PackId, Vec<BlobLocation>> = HashMap::new();
    for l in locs {
        by_pack.entry(l.pack).or_default().push(l);
    }
    let mut out = Vec::new();
    for (pack, mut blobs) in by_pack {
        blobs.sort_by_key(|b| b.entry.offset);
        let mut cur: Option<Range> = None;
        for b in blobs {
            let s = u64::from(b.entry.offset);
            let e = s + u64::from(b.entry.stored_len);
            match cur.as_mut() {
                Some(r) if s >= r.end && s - r.end <= COALESCE_GAP && e - r.start <= MAX_RANGE => {
                    r.end = e;
                    r.blobs.push(b);
                }
                Some(r) if s < r.end => {
                    // The same blob listed twice, or (from a damaged cache)
                    // entries that overlap: read enough for both; opening
                    // each one authenticates it.
                    r.end = r.end.max(e);
                    r.blobs.push(b);
                }
                _ => {
                    out.extend(cur.take());
                    cur = Some(Range { pack, start: s, end: e, blobs: vec![b] });
                }
            }
        }
        out.extend(cur);
    }
    out
}

/// The sealed bytes of blob `e` within `bytes`, read from `key` at
/// `start`; an index entry that points past what the read returned (a
/// stale or damaged cache, a truncated pack) is an error naming the pack
/// and offset, never a panic.
pub(super) fn slice_blob<'a>(
    bytes: &'a [u8],
    start: u64,
    e: &cairn_formats::repo::BlobEntry,
    key: &str,
) -> Result<&'a [u8]> {
    let s = u64::from(e.offset).checked_sub(start);
    s.and_then(|s| bytes.get(s as usize..(s as usize).checked_add(e.stored_len as usize)?)).ok_or_else(|| {
        Error::corrupt(
            key,
            Some(u64::from(e.offset)),
            format!(
                "the index places blob {} here ({} bytes), past the {} bytes read from {start}: \
                 the pack is truncated or the local index is stale (`cairn index rebuild`)",
                hex::encode(e.id),
                e.stored_len,
                bytes.len()
            ),
        )
    })
}

/// A blob that failed where the local index placed it: the pack's own
/// (authenticated) trailer decides. If it lists the blob elsewhere, the
/// cached entry was wrong and the blob is read where the trailer says; if
/// it agrees, or the trailer cannot be read, the pack is damaged and the
/// first error stands. The cache is a cache: never the last word.
async fn second_opinion(repo: &Repository, loc: &BlobLocation, first: Error) -> Result<Arc<Vec<u8>>> {
    let key = ObjectKey::Pack(loc.pack).to_string();
    let Ok(meta) = repo.store().head(&key).await else { return Err(first) };
    let Ok(entries) = crate::pack::read_trailer(repo.store(), repo.keys(), &loc.pack, meta.size).await else {
        return Err(first);
    };
    let Some(e) = entries.iter().find(|e| e.id == loc.entry.id) else {
        return Err(Error::corrupt(
            key,
            Some(u64::from(loc.entry.offset)),
            format!(
                "the local index places blob {} in this pack, whose trailer does not list it: the index is stale \
                 (`cairn index rebuild`)",
                hex::encode(loc.entry.id)
            ),
        ));
    };
    if *e == loc.entry {
        return Err(first);
    }
    tracing::warn!(
        "{key}: the local index placed blob {} at offset {}, the pack's trailer at {}; read by the trailer \
         (run `cairn index rebuild` to refresh the index)",
        hex::encode(loc.entry.id),
        loc.entry.offset,
        e.offset
    );
    let sealed =
        repo.store().get_range(&key, u64::from(e.offset)..u64::from(e.offset) + u64::from(e.stored_len)).await?;
    open_blob(repo.keys(), &key, e, &sealed).map(Arc::new)
}

/// A blob that failed authentication where the pack's trailer places it,
/// when the repository is read from several stores (see
/// [`crate::store::Fallback`]): each store's copy of the blob is read in
/// turn, a bad one is reported, and the first that opens is used. Without
/// other stores, or when every copy is bad, the first error stands.
async fn other_copy(repo: &Repository, loc: &BlobLocation, first: Error) -> Result<Arc<Vec<u8>>> {
    let Some(fallback) = repo.store().fallback() else { return Err(first) };
    let key = ObjectKey::Pack(loc.pack).to_string();
    let (at, len) = (u64::from(loc.entry.offset), u64::from(loc.entry.stored_len));
    for (i, m) in fallback.members().iter().enumerate() {
        let opened = match m.get_range(&key, at..at + len).await {
            Ok(sealed) => {
                fallback.count(i, len);
                open_blob(repo.keys(), &key, &loc.entry, &sealed)
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok(plain) => return Ok(Arc::new(plain)),
            Err(Error::Corrupt { detail, .. }) => fallback.report_corrupt(i, &key, Some(at), detail),
            Err(e) => tracing::debug!(store = %m.location(), error = %e, "no other copy of {key} here"),
        }
    }
    Err(first)
}

/// Fetches and opens blobs; returns them by id.
pub(crate) async fn fetch_blobs(
    repo: &Repository,
    index: &LocalIndex,
    ids: &[BlobId],
    concurrency: usize,
) -> Result<(HashMap<BlobId, Arc<Vec<u8>>>, u64, u64)> {
    let mut distinct: Vec<BlobId> = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let found = index.lookup_many(&distinct)?;
    let mut locs = Vec::with_capacity(distinct.len());
    for (id, f) in distinct.iter().zip(found) {
        locs.push(f.ok_or_else(|| Error::NotFound {
            what: format!("blob {id} in the index (data missing from the repository; run `cairn check`)"),
        })?);
    }
    let ranges = plan(locs);
    let requests = ranges.len() as u64;
    let mut results = futures::stream::iter(ranges)
        .map(|r| async move {
            let key = ObjectKey::Pack(r.pack).to_string();
            let bytes = repo.store().get_range(&key, r.start..r.end).await?;
            let (bytes, key, keys) = (&bytes, &key, repo.keys());
            let opened: Vec<(BlobLocation, Result<Arc<Vec<u8>>>)> = tokio::task::block_in_place(|| {
                in_order(|opening| {
                    for b in &r.blobs {
                        opening.spawn(move || {
                            let sealed = slice_blob(bytes, r.start, &b.entry, key);
                            (*b, sealed.and_then(|s| open_blob(keys, key, &b.entry, s)).map(Arc::new))
                        });
                    }
                    std::iter::from_fn(|| opening.next()).collect()
                })
            });
            Ok::<_, Error>((opened, bytes.len() as u64))
        })
        .buffer_unordered(concurrency.max(1));
    let mut out = HashMap::with_capacity(distinct.len());
    let mut fetched = 0;
    while let Some(r) = results.next().await {
        let (blobs, n) = r?;
        fetched += n;
        for (loc, b) in blobs {
            let p = match b {
                Ok(p) => p,
                Err(e @ Error::Corrupt { .. }) => match second_opinion(repo, &loc, e).await {
                    Err(e @ Error::Corrupt { .. }) => other_copy(repo, &loc, e).await?,
                    r => r?,
                },
                Err(e) => return Err(e),
            };
            out.insert(BlobId(Id(loc.entry.id)), p);
        }
    }
    Ok((out, fetched, requests))
}

/// Loads the chunk references of a tree blob.
pub(crate) async fn load_tree(repo: &Repository, index: &LocalIndex, tree: &TreeId) -> Result<Vec<ChunkRef>> {
    let id = tree.blob();
    let (blobs, _, _) = fetch_blobs(repo, index, &[id], 1).await?;
    let plain = blobs.get(&id).expect("fetched");
    decode_tree(plain).map_err(|e| Error::decode(format!("tree blob {id}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_formats::repo::{BlobEntry, BlobKind, Compression};

    fn entry(id: u8, offset: u32, stored_len: u32) -> BlobEntry {
        BlobEntry { id: [id; 32], kind: BlobKind::Data, compression: Compression::None, offset, stored_len, raw_len: 0 }
    }

    #[test]
    fn overlapping_or_oversized_index_entries_are_errors_not_panics() {
        let pack = PackId(Id([7; 32]));
        // Two entries that overlap, the second running further.
        let a = BlobLocation { pack, entry: entry(1, 100, 50) };
        let b = BlobLocation { pack, entry: entry(2, 120, 200) };
        let ranges = plan(vec![a, b]);
        assert_eq!(ranges.len(), 1);
        assert_eq!((ranges[0].start, ranges[0].end), (100, 320), "the read covers both");
        // A read that came back short (a truncated pack): a typed error.
        let bytes = vec![0u8; 60];
        let err = slice_blob(&bytes, 100, &b.entry, "packs/07/0707").unwrap_err();
        assert!(matches!(err, Error::Corrupt { offset: Some(120), .. }), "{err}");
        assert!(err.to_string().contains("packs/07/0707"));
        assert_eq!(slice_blob(&bytes, 100, &a.entry, "p").unwrap().len(), 50);
        // An entry before the range start.
        assert!(slice_blob(&bytes, 130, &a.entry, "p").is_err());
    }
}
