//! The restore pipeline.
//!
//! For each tree blob of an entry, the chunk references are cut into
//! windows of about 32 MiB of plaintext. For a window: distinct blobs are
//! located in the index, grouped by pack, sorted by offset and coalesced into
//! range reads (neighbours closer than 256 KiB are read in one request, up
//! to 16 MiB per request). Ranges are fetched concurrently, blobs decrypted,
//! decompressed and re-hashed in parallel, and a writer thread writes the
//! window in order while the next windows are being fetched. The whole
//! output is hashed again and compared with the manifest's BLAKE3.

use crate::repofile::ObjectKey;
use crate::store::Backend as _;
use crate::store::BackendExt as _;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use cairn_formats::repo::{decode_tree, ChunkRef};
use futures::StreamExt;
use rayon::prelude::*;

use crate::beneath::{Beneath, Meta};
use crate::ids::{BlobId, Id, PackId, TreeId};
use crate::index::{BlobLocation, LocalIndex};
use crate::pack::open_blob;
use crate::repo::Repository;
use crate::snapshot::Entry;
use crate::{Error, Result};

const WINDOW_BYTES: u64 = 32 << 20;
/// How a write error names the output before the caller knows its path.
const OUTPUT: &str = "<restore output>";
const COALESCE_GAP: u64 = 256 << 10;
const MAX_RANGE: u64 = 16 << 20;
/// Windows fetched ahead of the writer.
const WINDOWS_AHEAD: usize = 2;

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreSummary {
    /// Plaintext bytes written.
    pub bytes_written: u64,
    /// Bytes read from storage.
    pub bytes_fetched: u64,
    /// Range requests made.
    pub requests: u64,
    /// Wall time.
    pub duration_s: f64,
}

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Plaintext bytes written so far.
    pub bytes_written: AtomicU64,
}

struct Range {
    pack: PackId,
    start: u64,
    end: u64,
    blobs: Vec<BlobLocation>,
}

/// Plans the range reads for a set of distinct blobs.
fn plan(locs: Vec<BlobLocation>) -> Vec<Range> {
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
fn slice_blob<'a>(bytes: &'a [u8], start: u64, e: &cairn_formats::repo::BlobEntry, key: &str) -> Result<&'a [u8]> {
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

/// Fetches and opens blobs; returns them by id.
pub async fn fetch_blobs(
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
            let opened: Vec<(BlobLocation, Result<Arc<Vec<u8>>>)> = tokio::task::block_in_place(|| {
                r.blobs
                    .par_iter()
                    .map(|b| {
                        let sealed = slice_blob(&bytes, r.start, &b.entry, &key);
                        (*b, sealed.and_then(|s| open_blob(repo.keys(), &key, &b.entry, s)).map(Arc::new))
                    })
                    .collect()
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
                Err(e @ Error::Corrupt { .. }) => second_opinion(repo, &loc, e).await?,
                Err(e) => return Err(e),
            };
            out.insert(BlobId(Id(loc.entry.id)), p);
        }
    }
    Ok((out, fetched, requests))
}

/// Loads the chunk references of a tree blob.
pub async fn load_tree(repo: &Repository, index: &LocalIndex, tree: &TreeId) -> Result<Vec<ChunkRef>> {
    let id = tree.blob();
    let (blobs, _, _) = fetch_blobs(repo, index, &[id], 1).await?;
    let plain = blobs.get(&id).expect("fetched");
    decode_tree(plain).map_err(|e| Error::decode(format!("tree blob {id}"), e))
}

type Window = Vec<Arc<Vec<u8>>>;

/// Restores one entry into `out`, verifying every blob and the whole stream.
pub async fn restore_entry<W: Write + Send + 'static>(
    repo: &Repository,
    index: &LocalIndex,
    entry: &Entry,
    out: W,
    concurrency: usize,
    progress: Arc<RestoreProgress>,
) -> Result<(RestoreSummary, W)> {
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Window>(1);
    let writer_progress = progress.clone();
    let writer = std::thread::Builder::new()
        .name("cairn-writer".into())
        .spawn(move || -> (std::io::Result<()>, W, u64, blake3::Hash) {
            let mut out = out;
            let mut hasher = blake3::Hasher::new();
            let mut n = 0u64;
            for window in rx {
                for chunk in window {
                    hasher.update(&chunk);
                    if let Err(e) = out.write_all(&chunk) {
                        return (Err(e), out, n, hasher.finalize());
                    }
                    n += chunk.len() as u64;
                    writer_progress.bytes_written.store(n, Ordering::Relaxed);
                }
            }
            let r = out.flush();
            (r, out, n, hasher.finalize())
        })
        .expect("spawn writer");

    let mut summary = RestoreSummary::default();
    let mut failure = None;
    let mut tree_start = 0u64;
    'trees: for t in &entry.content {
        let refs = match load_tree(repo, index, &t.tree).await {
            Ok(r) => r,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        // Each window with the entry offset it starts at.
        let mut windows = Vec::new();
        let mut cur: Vec<ChunkRef> = Vec::new();
        let (mut cur_start, mut cur_bytes) = (tree_start, 0u64);
        for r in refs {
            cur_bytes += u64::from(r.len);
            cur.push(r);
            if cur_bytes >= WINDOW_BYTES {
                windows.push((cur_start, std::mem::take(&mut cur)));
                cur_start += cur_bytes;
                cur_bytes = 0;
            }
        }
        if !cur.is_empty() {
            windows.push((cur_start, cur));
        }
        tree_start = tree_start.saturating_add(t.bytes);
        let mut fetched = futures::stream::iter(windows)
            .map(|(mut at, w)| async move {
                let ids: Vec<BlobId> = w.iter().map(|r| BlobId(Id(r.id))).collect();
                let (blobs, n, reqs) = fetch_blobs(repo, index, &ids, concurrency).await?;
                let ordered: Window = ids.iter().map(|id| blobs[id].clone()).collect();
                for (r, b) in w.iter().zip(&ordered) {
                    check_chunk_len(entry, at, r, b.len())?;
                    at += u64::from(r.len);
                }
                Ok::<_, Error>((ordered, n, reqs))
            })
            .buffered(WINDOWS_AHEAD);
        while let Some(r) = fetched.next().await {
            match r {
                Ok((w, n, reqs)) => {
                    summary.bytes_fetched += n;
                    summary.requests += reqs;
                    if tx.send(w).is_err() {
                        break 'trees; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break 'trees;
                }
            }
        }
    }
    drop(tx);
    let (wr, out, n, hash) =
        tokio::task::spawn_blocking(move || writer.join()).await.expect("join").expect("writer panicked");
    if let Some(e) = failure {
        return Err(e);
    }
    wr.map_err(|e| Error::io(OUTPUT, e))?;
    if n != entry.size || hash.to_hex().as_str() != entry.blake3 {
        return Err(Error::corrupt(
            format!("entry {:?}", entry.name),
            None,
            format!(
                "restored {n} bytes with BLAKE3 {}, manifest says {} bytes, {}",
                hash.to_hex(),
                entry.size,
                entry.blake3
            ),
        ));
    }
    summary.bytes_written = n;
    summary.duration_s = started.elapsed().as_secs_f64();
    Ok((summary, out))
}

/// Restores one entry to a file: written beside it under a temporary name,
/// fsynced, then renamed, so the target is never left half-written. The
/// file is created 0600, in a directory that is the operator's to choose.
pub async fn restore_entry_to_path(
    repo: &Repository,
    index: &LocalIndex,
    entry: &Entry,
    path: &Path,
    concurrency: usize,
    progress: Arc<RestoreProgress>,
) -> Result<RestoreSummary> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidInput(format!("{}: not a file path", path.display())))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let b = Beneath::open(dir)?;
    restore_entry_beneath(repo, index, entry, &b, name, None, concurrency, progress).await
}

/// A write error on the restore's output, named by the file it went to.
pub(crate) fn name_output(e: Error, shown: &Path) -> Error {
    match e {
        Error::Io { path, source } if path == Path::new(OUTPUT) => Error::io(shown, source),
        e => e,
    }
}

/// Restores one entry to file `rel` beneath `b` (see [`Beneath`]), with
/// `meta` applied on its handle before it takes its name.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn restore_entry_beneath(
    repo: &Repository,
    index: &LocalIndex,
    entry: &Entry,
    b: &Beneath,
    rel: &str,
    meta: Option<&Meta>,
    concurrency: usize,
    progress: Arc<RestoreProgress>,
) -> Result<RestoreSummary> {
    let (partial, f) = b.create(rel)?;
    let w = std::io::BufWriter::with_capacity(4 << 20, f);
    match restore_entry(repo, index, entry, w, concurrency, progress).await {
        Ok((summary, w)) => {
            let f = w.into_inner().map_err(|e| Error::io(partial.shown(), e.into_error()))?;
            partial.commit(f, meta)?;
            Ok(summary)
        }
        Err(e) => {
            let shown = partial.shown().to_path_buf();
            partial.abandon();
            Err(name_output(e, &shown))
        }
    }
}

/// The chunk references of `entry` that overlap `start..end`, each with
/// the stream offset it starts at. Only the tree blobs covering the range
/// are read.
pub async fn refs_in_range(
    repo: &Repository,
    index: &LocalIndex,
    entry: &Entry,
    start: u64,
    end: u64,
) -> Result<Vec<(u64, ChunkRef)>> {
    let mut out = Vec::new();
    let mut tree_start = 0u64;
    for t in &entry.content {
        let tree_end = tree_start + t.bytes;
        if tree_end > start && tree_start < end {
            let mut at = tree_start;
            for r in load_tree(repo, index, &t.tree).await? {
                let next = at + u64::from(r.len);
                if next > start && at < end {
                    out.push((at, r));
                }
                at = next;
            }
        }
        tree_start = tree_end;
        if tree_start >= end {
            break;
        }
    }
    Ok(out)
}

/// A tree's chunk reference must agree with the blob it names: a tree that
/// says otherwise (a damaged or forged one) is refused by name.
/// `at` is the chunk's offset in the entry, as the tree tells it.
fn check_chunk_len(entry: &Entry, at: u64, r: &ChunkRef, held: usize) -> Result<()> {
    if held == r.len as usize {
        return Ok(());
    }
    Err(Error::corrupt(
        format!("entry {:?}", entry.name),
        Some(at),
        format!("the tree says chunk {} is {} bytes, the blob holds {held}", hex::encode(r.id), r.len),
    ))
}

/// The end of bytes `start..start + len` of `entry`, which must lie within
/// it (tar members' ranges come from the member index).
pub(crate) fn range_end(entry: &Entry, start: u64, len: u64) -> Result<u64> {
    // Checked: an index naming offsets near 2^64 must not wrap around
    // into a short range that passes.
    start.checked_add(len).filter(|&end| end <= entry.size).ok_or_else(|| {
        Error::corrupt(
            format!("entry {:?}", entry.name),
            Some(start),
            format!("range of {len} bytes runs past the entry's {} bytes", entry.size),
        )
    })
}

/// Writes bytes `start..start + len` of `entry` to `out`, reading only the
/// blobs that hold them (each authenticated and re-hashed). The whole
/// stream's hash cannot be checked for a part of it; the per-blob checks
/// are what vouch for these bytes.
pub async fn restore_range<W: Write>(
    repo: &Repository,
    index: &LocalIndex,
    entry: &Entry,
    start: u64,
    len: u64,
    out: &mut W,
    concurrency: usize,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let end = range_end(entry, start, len)?;
    let refs = refs_in_range(repo, index, entry, start, end).await?;
    let mut summary = RestoreSummary::default();
    let mut i = 0;
    while i < refs.len() {
        let mut j = i;
        let mut bytes = 0u64;
        while j < refs.len() && (j == i || bytes < WINDOW_BYTES) {
            bytes += u64::from(refs[j].1.len);
            j += 1;
        }
        let ids: Vec<BlobId> = refs[i..j].iter().map(|(_, r)| BlobId(Id(r.id))).collect();
        let (blobs, n, reqs) = fetch_blobs(repo, index, &ids, concurrency).await?;
        summary.bytes_fetched += n;
        summary.requests += reqs;
        for (at, r) in &refs[i..j] {
            let b = &blobs[&BlobId(Id(r.id))];
            check_chunk_len(entry, *at, r, b.len())?;
            let s = start.saturating_sub(*at) as usize;
            let e = ((end - at) as usize).min(b.len());
            out.write_all(&b[s..e]).map_err(|e| Error::io(OUTPUT, e))?;
            summary.bytes_written += (e - s) as u64;
        }
        i = j;
    }
    if summary.bytes_written != len {
        return Err(Error::corrupt(
            format!("entry {:?}", entry.name),
            Some(start),
            format!("wanted {len} bytes, the chunk list holds {}", summary.bytes_written),
        ));
    }
    summary.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_formats::repo::{BlobEntry, BlobKind, Compression};

    fn entry(id: u8, offset: u32, stored_len: u32) -> BlobEntry {
        BlobEntry { id: [id; 32], kind: BlobKind::Data, compression: Compression::None, offset, stored_len, raw_len: 0 }
    }

    /// Three MiB backed up into a memory repository, in a few chunks.
    async fn backed_up() -> (tempfile::TempDir, Arc<Repository>, Arc<LocalIndex>, Vec<u8>, crate::Snapshot) {
        use crate::commands::backup::{Backup, BackupOptions};
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::keys::Secret::create_key_file(&dir.path().join("key")).unwrap();
        let repo =
            Arc::new(Repository::init(crate::store::Store::memory(), &secret, Default::default()).await.unwrap());
        let index = Arc::new(
            LocalIndex::for_writing(&repo, &dir.path().join("cache"), std::time::Duration::from_secs(5)).await.unwrap(),
        );
        let data: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let (_, snap) =
            Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(data.clone()).await.unwrap();
        (dir, repo, index, data, snap)
    }

    /// A cached entry that points at the wrong bytes (a damaged or stale
    /// cache): the pack's trailer decides, and the restore is exact.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_wrong_cached_entry_is_corrected_by_the_packs_trailer() {
        let (_dir, repo, index, data, snap) = backed_up().await;
        let tree = load_tree(&repo, &index, &snap.entries[0].content[0].tree).await.unwrap();
        let loc = index.lookup(&BlobId(Id(tree[0].id))).unwrap().unwrap();
        let mut wrong = loc.entry;
        wrong.offset += 16;
        index.put_pack(&loc.pack, &[wrong]).unwrap();
        assert_eq!(index.lookup(&BlobId(Id(tree[0].id))).unwrap().unwrap().entry, wrong);
        let (_, out) = restore_entry(&repo, &index, &snap.entries[0], Vec::new(), 2, Arc::default()).await.unwrap();
        assert!(out == data, "restored exactly, by the trailer");
        // A cached entry naming a blob the pack does not hold at all.
        let mut absent = loc.entry;
        absent.id = [0xee; 32];
        index.put_pack(&loc.pack, &[absent]).unwrap();
        let err = fetch_blobs(&repo, &index, &[BlobId(Id([0xee; 32]))], 1).await.unwrap_err();
        assert!(err.to_string().contains("index is stale"), "{err}");
    }

    /// A tree whose chunk reference gives another length than the blob it
    /// names holds (damaged, or forged by a key holder): whole restores and
    /// range reads fail with an error naming the entry, the offset and the
    /// chunk. Before the check, a range read past the real blob's end
    /// panicked on a reversed slice.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_tree_chunk_longer_or_shorter_than_its_blob_is_refused() {
        use crate::pack::{seal_blob, PackBuilder};
        use cairn_formats::repo::encode_tree;
        let (_dir, repo, index, _, snap) = backed_up().await;
        let good = &snap.entries[0];
        let refs = load_tree(&repo, &index, &good.content[0].tree).await.unwrap();
        for delta in [2i64, -1] {
            // The first chunk, then the first chunk again with a wrong length.
            let mut forged = vec![refs[0], refs[0]];
            forged[1].len = (i64::from(forged[1].len) + delta) as u32;
            let plain = encode_tree(&forged);
            let keys = repo.keys();
            let id = keys.blob_id(&plain);
            let mut pack = PackBuilder::new(0);
            pack.push(&seal_blob(keys, id, BlobKind::Tree, 3, &plain));
            let sealed = pack.finish(keys);
            repo.store().put(&ObjectKey::Pack(sealed.id).to_string(), sealed.bytes).await.unwrap();
            index.put_pack(&sealed.id, &sealed.entries).unwrap();
            let mut e = good.clone();
            let bytes: u64 = forged.iter().map(|r| u64::from(r.len)).sum();
            e.content = vec![crate::snapshot::TreeRef { tree: TreeId(id.0), chunks: forged.len() as u64, bytes }];
            e.size = bytes;
            let at = u64::from(forged[0].len);
            let named = |err: &Error| {
                matches!(err, Error::Corrupt { offset: Some(o), .. } if *o == at)
                    && err.to_string().contains(&hex::encode(forged[1].id))
                    && err.to_string().contains("\"s\"")
            };
            let err = restore_entry(&repo, &index, &e, Vec::new(), 2, Arc::default()).await.unwrap_err();
            assert!(named(&err), "delta {delta}: {err}");
            // The chunk's last byte by the tree's count.
            let last = at + u64::from(forged[1].len) - 1;
            let err = restore_range(&repo, &index, &e, last, 1, &mut Vec::new(), 2).await.unwrap_err();
            assert!(named(&err), "delta {delta}: {err}");
        }
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

    #[test]
    fn member_ranges_near_2_64_are_refused_not_wrapped() {
        // A member index is authenticated but still decoded: data offset
        // u64::MAX and one byte wrapped to an empty range that passed the
        // check in release builds (and panicked with overflow checks).
        let mut e = Entry::new("s.tar", crate::snapshot::FileKind::File, 0o644, None);
        e.size = 4096;
        assert_eq!(range_end(&e, 512, 100).unwrap(), 612);
        assert_eq!(range_end(&e, 0, 4096).unwrap(), 4096);
        for (start, len) in [(u64::MAX, 1), (1, u64::MAX), (u64::MAX, u64::MAX), (4000, 97)] {
            let err = range_end(&e, start, len).unwrap_err();
            assert!(matches!(err, Error::Corrupt { offset: Some(o), .. } if o == start), "{err}");
        }
    }
}
