//! The ingest pipeline.
//!
//! ```text
//! reader thread:  source → StreamChunker (FastCDC) → batches (bounded channel)
//! packer thread:  batch → rayon, per chunk: keyed BLAKE3 id → dedup (session set, RocksDB)
//!                 → zstd (skipped for incompressible) + XChaCha20-Poly1305; beside it the whole-stream BLAKE3
//!                 → PackBuilder, in stream order
//! async:          sealed packs → bounded concurrent PUTs → index segment (after its packs)
//!                 → local index → snapshot manifest (last)
//! ```
//! The reader hands the packer [`Piece`]s: chunks of the current entry,
//! then the entry's metadata when it ends, so one pass can store a stream
//! (one entry, plus a member index for a tar), or a directory (an entry per
//! file, with files the files cache knows passed through unread).
//!
//! Memory is bounded by the channel depths (the chunker's 16 MiB buffer, one
//! 8 MiB batch queued and one being sealed, one pack filling, one sealed pack
//! queued, `upload_concurrency` packs in flight) and
//! by the session set, which only holds blobs whose index segment is not yet
//! written — never by the stream's size.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use cairn_formats::repo::{encode_tree, BlobKind, ChunkRef, IndexSegment, PackEntries};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rayon::prelude::*;

use crate::chunker::{ChunkerParams, StreamChunker};
use crate::ids::{pack_key, Id};
use crate::index::LocalIndex;
use crate::pack::{seal_blob, PackBuilder, SealedBlob, SealedPack};
use crate::repo::{ObjectKind, Repository};
use crate::snapshot::{BackupStats, Entry, MembersRef, Snapshot, SourceInfo, TreeRef, SNAPSHOT_VERSION};
use crate::source::StreamSource;
use crate::tarstream::{TarHints, TarMode};
use crate::{Error, Result};

/// Bytes per batch handed from the reader to the packer.
const BATCH_BYTES: usize = 8 << 20;
/// Chunk references per tree blob (16384 × 36 B ≈ 576 KiB).
pub const TREE_FANOUT: usize = 16384;
/// An index segment is written once this many packs are durable.
const PACKS_PER_SEGMENT: usize = 64;

/// zstd level for new data. Level 2 costs about two thirds of level 3's CPU
/// for about 5 % more stored bytes on a tar of binaries and text (measured
/// with `make bench-peers`); compression is most of the backup's CPU.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 2;

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read from the source.
    pub bytes_read: AtomicU64,
    /// Plaintext bytes found new.
    pub new_bytes: AtomicU64,
    /// Bytes written to storage.
    pub uploaded_bytes: AtomicU64,
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Source kind and name.
    pub source: SourceInfo,
    /// Entry name inside the snapshot.
    pub entry_name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// zstd level.
    pub compression_level: i32,
    /// Packs uploaded at once.
    pub upload_concurrency: usize,
    /// Kind-specific metadata.
    pub metadata: serde_json::Value,
    /// Mode and mtime of the entry, where the source has them.
    pub mode: u32,
    /// Modification time.
    pub mtime: Option<i64>,
    /// Whether the stream is chunked as tar (cut at member boundaries, with
    /// a member index).
    pub tar: TarMode,
    /// Chunk sizes for this backup instead of the repository's (recorded
    /// in the snapshot metadata as `chunker`). Data chunked with other
    /// sizes does not deduplicate against it, so keep one setting per source.
    pub chunker: Option<ChunkerParams>,
}

impl BackupOptions {
    /// Defaults for a named stream.
    pub fn stream(name: &str) -> Self {
        BackupOptions {
            source: SourceInfo { kind: "stream".into(), name: name.into(), command: None },
            entry_name: name.into(),
            tags: Vec::new(),
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            upload_concurrency: 3,
            metadata: serde_json::Value::Null,
            mode: 0o644,
            mtime: None,
            tar: TarMode::Detect,
            chunker: None,
        }
    }
}

/// What the reader hands the packer, in stream order.
pub enum Piece {
    /// A chunk of the current entry's content.
    Chunk(Vec<u8>),
    /// The current entry ends here: the packer fills in its content, size
    /// and BLAKE3 and keeps the rest of this metadata.
    End(Box<Entry>),
    /// The content since the last `End` is the member index of the entry
    /// that ended there.
    EndMembers {
        /// Members listed.
        count: u64,
    },
    /// An entry whose content is already stored (files cache): kept as is.
    Reuse(Box<Entry>),
}

/// Batches pieces for the packer; handed to a [`Feed`].
pub struct PieceSink {
    tx: mpsc::SyncSender<Result<Vec<Piece>>>,
    cur: Vec<Piece>,
    cur_bytes: usize,
    total: u64,
    /// Bytes pushed that were not read from the source (member indexes).
    overhead: u64,
    progress: Arc<Progress>,
}

impl PieceSink {
    /// Queues one piece; a full batch goes to the packer (blocking while
    /// the packer is busy: that is the pipeline's back-pressure).
    pub fn push(&mut self, p: Piece) -> Result<()> {
        if let Piece::Chunk(c) = &p {
            self.cur_bytes += c.len();
            self.total += c.len() as u64;
            self.progress.bytes_read.store(self.total, Ordering::Relaxed);
        }
        self.cur.push(p);
        if self.cur_bytes >= BATCH_BYTES || self.cur.len() >= 4096 {
            self.flush()?;
        }
        Ok(())
    }

    /// Chunks `source` to its end as the current entry's content, with tar
    /// hints when `tar` says so; returns the hints (for the member index).
    pub fn chunk_stream<R: std::io::Read>(
        &mut self,
        source: R,
        params: ChunkerParams,
        seed: u64,
        tar: TarMode,
    ) -> Result<(R, Option<TarHints>)> {
        let mut ch = StreamChunker::new(source, params, seed);
        if tar != TarMode::Off {
            ch = ch.with_hints(Box::new(TarHints::new(tar, u64::from(params.min_size))));
        }
        loop {
            let batch = ch.next_batch(BATCH_BYTES)?;
            if batch.is_empty() {
                break;
            }
            for c in batch {
                self.push(Piece::Chunk(c))?;
            }
        }
        let hints = ch.take_hints().and_then(|h| h.into_any().downcast::<TarHints>().ok()).map(|h| *h);
        Ok((ch.into_inner(), hints))
    }

    /// After a tar entry's `End`: its member index, if the stream was tar.
    pub fn push_member_index(&mut self, hints: Option<TarHints>, params: ChunkerParams, seed: u64) -> Result<()> {
        if let Some(index) = hints.and_then(|h| h.into_index()) {
            let count = index.members.len() as u64;
            let bytes = index.encode();
            self.overhead += bytes.len() as u64;
            self.chunk_stream(std::io::Cursor::new(bytes), params, seed, TarMode::Off)?;
            self.push(Piece::EndMembers { count })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        self.cur_bytes = 0;
        let batch = std::mem::take(&mut self.cur);
        self.tx.send(Ok(batch)).map_err(|_| cancelled())
    }

    /// Plaintext bytes pushed so far.
    pub fn bytes(&self) -> u64 {
        self.total
    }
}

/// Produces the pieces of one backup on the reader thread. Returns what
/// it learnt for the snapshot metadata. It must end every entry it starts
/// with `End` (and may follow one with its member index).
pub trait Feed: Send + 'static {
    /// Pushes everything into `sink`.
    fn feed(
        self: Box<Self>,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
    ) -> Result<Option<serde_json::Value>>;
}

/// One stream as one entry (with a member index when it is tar).
struct StreamFeed {
    source: Box<dyn StreamSource>,
    entry: Entry,
    tar: TarMode,
}

impl Feed for StreamFeed {
    fn feed(
        self: Box<Self>,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
    ) -> Result<Option<serde_json::Value>> {
        let StreamFeed { source, entry, tar } = *self;
        let (mut source, hints) = sink.chunk_stream(source, params, seed, tar)?;
        source.finish()?;
        sink.push(Piece::End(Box::new(entry)))?;
        let learnt = merge_learnt(source.metadata(), hints.as_ref().and_then(|h| h.metadata()));
        sink.push_member_index(hints, params, seed)?;
        Ok(learnt)
    }
}

fn merge_learnt(a: Option<serde_json::Value>, b: Option<serde_json::Value>) -> Option<serde_json::Value> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(merge_metadata(a, Some(b))),
    }
}

enum PackerMsg {
    Pack(SealedPack),
    Done { entries: Vec<Entry>, chunks: u64, new_chunks: u64, new_bytes: u64 },
}

/// Blobs added during this backup whose index segment is not yet written.
type SessionSet = Arc<Mutex<HashSet<Id>>>;

/// Decides whether one id is new (not in this session, not in the index),
/// recording it in the session if so. The session is checked first and
/// entries leave it only after they are in the index, so an id is never
/// missed by both.
fn is_new(index: &LocalIndex, session: &SessionSet, id: &Id) -> Result<bool> {
    if session.lock().expect("session lock").contains(id) {
        return Ok(false);
    }
    if index.lookup(id)?.is_some() {
        return Ok(false);
    }
    Ok(session.lock().expect("session lock").insert(*id))
}

struct Packer {
    repo: Arc<Repository>,
    index: Arc<LocalIndex>,
    session: SessionSet,
    level: i32,
    target: usize,
    pack: PackBuilder,
    out: tokio::sync::mpsc::Sender<PackerMsg>,
    refs: Vec<ChunkRef>,
    refs_bytes: u64,
    trees: Vec<TreeRef>,
    entry_bytes: u64,
    entries: Vec<Entry>,
    chunks: u64,
    new_chunks: u64,
    new_bytes: u64,
    /// The current entry's plain BLAKE3, and those of entries that ended
    /// in the batch being processed.
    entry_hash: blake3::Hasher,
    progress: Arc<Progress>,
}

impl Packer {
    fn push_sealed(&mut self, b: &SealedBlob) -> Result<()> {
        self.pack.push(b);
        if self.pack.len() >= self.target {
            let full = std::mem::replace(&mut self.pack, PackBuilder::new(self.target));
            let sealed = full.finish(self.repo.keys());
            self.out.blocking_send(PackerMsg::Pack(sealed)).map_err(|_| cancelled())?;
        }
        Ok(())
    }

    fn add_batch(&mut self, batch: Vec<Piece>) -> Result<()> {
        let keys = self.repo.keys();
        // The plain per-entry hash (for `b3sum` comparisons and the restore
        // check) runs beside the chunk ids instead of on the reader thread,
        // which is the pipeline's only serial stage.
        let entry_hash = &mut self.entry_hash;
        let (index, session, level) = (&*self.index, &self.session, self.level);
        // One parallel pass per chunk: id, dedup decision, compress and seal.
        // The session insert is atomic, so a chunk repeated within the batch
        // is sealed once.
        let (hashes, results) = rayon::join(
            || {
                let mut ended = Vec::new();
                for p in &batch {
                    match p {
                        Piece::Chunk(c) => {
                            entry_hash.update(c);
                        }
                        Piece::End(_) | Piece::EndMembers { .. } => {
                            ended.push(entry_hash.finalize().to_hex().to_string());
                            entry_hash.reset();
                        }
                        Piece::Reuse(_) => {}
                    }
                }
                ended
            },
            || {
                batch
                    .par_iter()
                    .with_max_len(1)
                    .map(|p| match p {
                        Piece::Chunk(c) => {
                            let id = keys.blob_id(c);
                            let new = is_new(index, session, &id)?;
                            Ok(Some((id, new.then(|| seal_blob(keys, id, BlobKind::Data, level, c)))))
                        }
                        _ => Ok(None),
                    })
                    .collect::<Result<Vec<Option<(Id, Option<SealedBlob>)>>>>()
            },
        );
        let mut hashes = hashes.into_iter();
        for (piece, r) in batch.into_iter().zip(results?) {
            match (piece, r) {
                (Piece::Chunk(chunk), Some((id, s))) => {
                    self.chunks += 1;
                    if let Some(s) = s {
                        self.new_chunks += 1;
                        self.new_bytes += chunk.len() as u64;
                        self.progress.new_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        self.push_sealed(&s)?;
                    }
                    self.refs.push(ChunkRef { id: id.0, len: chunk.len() as u32 });
                    self.refs_bytes += chunk.len() as u64;
                    self.entry_bytes += chunk.len() as u64;
                    if self.refs.len() == TREE_FANOUT {
                        self.flush_tree()?;
                    }
                }
                (Piece::End(mut e), _) => {
                    self.flush_tree()?;
                    e.content = std::mem::take(&mut self.trees);
                    e.size = std::mem::take(&mut self.entry_bytes);
                    e.blake3 = hashes.next().expect("one hash per end");
                    self.entries.push(*e);
                }
                (Piece::EndMembers { count }, _) => {
                    self.flush_tree()?;
                    let m = MembersRef {
                        count,
                        size: std::mem::take(&mut self.entry_bytes),
                        blake3: hashes.next().expect("one hash per end"),
                        content: std::mem::take(&mut self.trees),
                    };
                    let last = self.entries.last_mut().ok_or_else(|| {
                        Error::Config("internal: a member index must follow the entry it describes".into())
                    })?;
                    last.members = Some(m);
                }
                (Piece::Reuse(e), _) => self.entries.push(*e),
                (Piece::Chunk(_), None) => unreachable!("every chunk has an id"),
            }
        }
        Ok(())
    }

    fn flush_tree(&mut self) -> Result<()> {
        if self.refs.is_empty() {
            return Ok(());
        }
        let plain = encode_tree(&self.refs);
        let keys = self.repo.keys();
        let id = keys.blob_id(&plain);
        if is_new(&self.index, &self.session, &id)? {
            let s = seal_blob(keys, id, BlobKind::Tree, self.level, &plain);
            self.push_sealed(&s)?;
        }
        self.trees.push(TreeRef { tree: id.to_hex(), chunks: self.refs.len() as u64, bytes: self.refs_bytes });
        self.refs.clear();
        self.refs_bytes = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if !self.refs.is_empty() || !self.trees.is_empty() {
            return Err(Error::Config("internal: content after the last entry ended".into()));
        }
        if !self.pack.is_empty() {
            let last = std::mem::replace(&mut self.pack, PackBuilder::new(0));
            let sealed = last.finish(self.repo.keys());
            self.out.blocking_send(PackerMsg::Pack(sealed)).map_err(|_| cancelled())?;
        }
        let done = PackerMsg::Done {
            entries: std::mem::take(&mut self.entries),
            chunks: self.chunks,
            new_chunks: self.new_chunks,
            new_bytes: self.new_bytes,
        };
        self.out.blocking_send(done).map_err(|_| cancelled())
    }
}

fn cancelled() -> Error {
    Error::Config("backup cancelled: a later pipeline stage failed".into())
}

/// Writes index segments once their packs are durable, then records them
/// in the local index and lets the session forget their blobs.
struct Committer<'a> {
    repo: &'a Repository,
    index: &'a LocalIndex,
    session: SessionSet,
    pending: Vec<PackEntries>,
    uploaded: u64,
    packs: u64,
    progress: Arc<Progress>,
}

impl Committer<'_> {
    async fn pack_durable(&mut self, p: PackEntries) -> Result<()> {
        self.packs += 1;
        self.pending.push(p);
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
        let plain = seg.encode();
        let id = self.repo.put_object(ObjectKind::Index, &plain).await?;
        self.uploaded += plain.len() as u64;
        self.progress.uploaded_bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
        self.index.record_segment(&id, &seg)?;
        let mut s = self.session.lock().expect("session lock");
        for p in &seg.packs {
            for b in &p.blobs {
                s.remove(&Id(b.id));
            }
        }
        Ok(())
    }
}

async fn upload(repo: &Repository, p: SealedPack, progress: &Progress) -> Result<PackEntries> {
    let len = p.bytes.len() as u64;
    repo.store().put(&pack_key(&p.id), p.bytes).await?;
    progress.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
    Ok(PackEntries { pack_id: p.id.0, pack_len: len, blobs: p.entries })
}

/// Caller-given metadata, with what the source learnt added (the source
/// wins on a clash: it read the bytes).
fn merge_metadata(given: serde_json::Value, learnt: Option<serde_json::Value>) -> serde_json::Value {
    match (given, learnt) {
        (g, None) => g,
        (serde_json::Value::Object(mut g), Some(serde_json::Value::Object(l))) => {
            g.extend(l);
            serde_json::Value::Object(g)
        }
        (_, Some(l)) => l,
    }
}

/// Backs up one stream and writes its snapshot. Returns the snapshot id.
///
/// A tar stream (by `opts.tar`) is cut at member boundaries and gets a
/// member index.
pub async fn backup_stream(
    repo: Arc<Repository>,
    index: Arc<LocalIndex>,
    source: Box<dyn StreamSource>,
    opts: BackupOptions,
    progress: Arc<Progress>,
) -> Result<(Id, Snapshot)> {
    backup_stream_gated(repo, index, source, opts, progress, None).await
}

/// Runs after every pack and index segment of a backup is durable and
/// before its snapshot is written: it sees the snapshot's metadata and
/// returns it, possibly amended (a base backup waits for its WAL here), or
/// fails the backup.
pub type CommitGate = Box<
    dyn FnOnce(
            serde_json::Value,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value>> + Send>>
        + Send,
>;

/// Backs up what `feed` produces and writes the snapshot.
///
/// Durability order: packs, then the index segment naming them, then the
/// snapshot. A crash at any point leaves only unreferenced objects.
pub async fn backup_feed(
    repo: Arc<Repository>,
    index: Arc<LocalIndex>,
    feed: Box<dyn Feed>,
    opts: BackupOptions,
    progress: Arc<Progress>,
) -> Result<(Id, Snapshot)> {
    backup_feed_gated(repo, index, feed, opts, progress, None).await
}

/// [`backup_stream`] with a [`CommitGate`].
pub async fn backup_stream_gated(
    repo: Arc<Repository>,
    index: Arc<LocalIndex>,
    source: Box<dyn StreamSource>,
    opts: BackupOptions,
    progress: Arc<Progress>,
    gate: Option<CommitGate>,
) -> Result<(Id, Snapshot)> {
    let entry = Entry::new(opts.entry_name.clone(), "file", opts.mode, opts.mtime);
    let feed = StreamFeed { source, entry, tar: opts.tar };
    backup_feed_gated(repo, index, Box::new(feed), opts, progress, gate).await
}

/// [`backup_feed`] with a [`CommitGate`].
pub async fn backup_feed_gated(
    repo: Arc<Repository>,
    index: Arc<LocalIndex>,
    feed: Box<dyn Feed>,
    opts: BackupOptions,
    progress: Arc<Progress>,
    gate: Option<CommitGate>,
) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let params = match opts.chunker {
        Some(p) => {
            p.validate()?;
            p
        }
        None => repo.config().chunker,
    };
    let seed = repo.keys().chunker_seed();

    let (batch_tx, batch_rx) = mpsc::sync_channel::<Result<Vec<Piece>>>(1);
    let reader_progress = progress.clone();
    let reader = std::thread::Builder::new()
        .name("cairn-reader".into())
        .spawn(move || -> Result<(u64, Option<serde_json::Value>)> {
            let mut sink = PieceSink {
                tx: batch_tx,
                cur: Vec::new(),
                cur_bytes: 0,
                total: 0,
                overhead: 0,
                progress: reader_progress,
            };
            let learnt = match feed.feed(&mut sink, params, seed) {
                Ok(l) => l,
                Err(e) => {
                    let _ = sink.tx.send(Err(Error::Config(e.to_string())));
                    return Err(e);
                }
            };
            sink.flush()?;
            Ok((sink.total - sink.overhead, learnt))
        })
        .expect("spawn reader thread");

    let session: SessionSet = Arc::default();
    let (pack_tx, mut pack_rx) = tokio::sync::mpsc::channel::<PackerMsg>(1);
    let mut packer = Packer {
        repo: repo.clone(),
        index: index.clone(),
        session: session.clone(),
        level: opts.compression_level,
        target: repo.config().pack_target as usize,
        pack: PackBuilder::new(repo.config().pack_target as usize),
        out: pack_tx,
        refs: Vec::new(),
        refs_bytes: 0,
        trees: Vec::new(),
        entry_bytes: 0,
        entries: Vec::new(),
        chunks: 0,
        new_chunks: 0,
        new_bytes: 0,
        entry_hash: blake3::Hasher::new(),
        progress: progress.clone(),
    };
    let packer_thread = std::thread::Builder::new()
        .name("cairn-packer".into())
        .spawn(move || -> Result<()> {
            while let Ok(batch) = batch_rx.recv() {
                packer.add_batch(batch?)?;
            }
            packer.finish()
        })
        .expect("spawn packer thread");

    let mut committer = Committer {
        repo: &repo,
        index: &index,
        session,
        pending: Vec::new(),
        uploaded: 0,
        packs: 0,
        progress: progress.clone(),
    };
    let concurrency = opts.upload_concurrency.max(1);
    let mut inflight = FuturesUnordered::new();
    let mut done = None;
    let mut failure: Option<Error> = None;
    while let Some(msg) = pack_rx.recv().await {
        match msg {
            PackerMsg::Pack(p) => {
                while inflight.len() >= concurrency {
                    let r: Result<PackEntries> = inflight.next().await.expect("non-empty");
                    match r {
                        Ok(entries) => committer.pack_durable(entries).await?,
                        Err(e) => return Err(e),
                    }
                }
                committer.uploaded += p.bytes.len() as u64;
                inflight.push(upload(&repo, p, &progress));
            }
            PackerMsg::Done { entries, chunks, new_chunks, new_bytes } => {
                done = Some((entries, chunks, new_chunks, new_bytes));
            }
        }
    }
    while let Some(r) = inflight.next().await {
        match r {
            Ok(entries) => committer.pack_durable(entries).await?,
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let joined = tokio::task::spawn_blocking(move || (packer_thread.join(), reader.join())).await.expect("join task");
    let (packer_result, reader_result) = joined;
    // The reader's error is the root cause when both failed (the packer then
    // only saw a closed channel), so it is reported first.
    let (bytes_read, learnt) = reader_result.expect("reader thread panicked")?;
    packer_result.expect("packer thread panicked")?;
    if let Some(e) = failure {
        return Err(e);
    }
    committer.write_segment().await?;
    let (entries, chunks, new_chunks, new_bytes) = done.ok_or_else(cancelled)?;
    let mut metadata = merge_metadata(opts.metadata, learnt);
    if let Some(p) = opts.chunker {
        metadata = merge_metadata(metadata, Some(serde_json::json!({ "chunker": p })));
    }
    if let Some(gate) = gate {
        metadata = gate(metadata).await?;
    }

    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time,
        host: crate::hostname(),
        source: opts.source,
        tags: opts.tags,
        metadata,
        entries,
        stats: BackupStats {
            bytes_read,
            chunks,
            new_chunks,
            new_bytes,
            uploaded_bytes: committer.uploaded,
            packs: committer.packs,
            duration_s: started.elapsed().as_secs_f64(),
        },
    };
    let id = snapshot.save(&repo).await?;
    Ok((id, snapshot))
}

/// Uploads `bytes` as a single-entry snapshot (tests, small inputs).
pub async fn backup_bytes(
    repo: Arc<Repository>,
    index: Arc<LocalIndex>,
    bytes: Vec<u8>,
    opts: BackupOptions,
) -> Result<(Id, Snapshot)> {
    backup_stream(repo, index, Box::new(std::io::Cursor::new(bytes)), opts, Arc::default()).await
}
