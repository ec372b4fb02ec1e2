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

mod committer;
mod packer;
mod reader;

use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use cairn_formats::repo::PackEntries;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::chunker::ChunkerParams;
use crate::ids::Id;
use crate::index::LocalIndex;
use crate::pack::PackBuilder;
use crate::repo::Repository;
use crate::snapshot::{BackupStats, Entry, Snapshot, SourceInfo, SNAPSHOT_VERSION};
use crate::sources::tar::TarMode;
use crate::sources::{Feed, Piece, StreamSource};
use crate::{Error, Result};
use committer::{upload, Committer};
use packer::{Packer, PackerMsg, SessionSet};
pub use reader::PieceSink;
use reader::StreamFeed;

/// Chunk references per tree blob (16384 × 36 B ≈ 576 KiB).
pub const TREE_FANOUT: usize = 16384;

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

pub(super) fn cancelled() -> Error {
    Error::Cancelled("backup cancelled: a later pipeline stage failed".into())
}

/// Caller-given metadata, with what the source learnt added (the source
/// wins on a clash: it read the bytes).
pub(super) fn merge_metadata(given: serde_json::Value, learnt: Option<serde_json::Value>) -> serde_json::Value {
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
            let mut sink = PieceSink::new(batch_tx, reader_progress);
            let learnt = match feed.feed(&mut sink, params, seed) {
                Ok(l) => l,
                Err(e) => {
                    let _ = sink.tx.send(Err(Error::Cancelled(e.to_string())));
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
