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
use crate::ids::SnapshotId;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::{BackupStats, Entry, FileKind, Snapshot, SourceInfo, SNAPSHOT_VERSION};
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

/// What to back up and how: [`BackupOptions::stream`], then set what
/// differs.
#[derive(Debug, Clone)]
#[non_exhaustive]
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

/// One backup: what to store and how, with optional progress counters and
/// a [`CommitGate`]; run with [`Backup::stream`], [`Backup::feed`] or
/// [`Backup::bytes`]. The snapshot is written last and its id returned.
///
/// Durability order: packs, then the index segment naming them, then the
/// snapshot. A crash at any point leaves only unreferenced objects.
///
/// ```no_run
/// # async fn demo(repo: std::sync::Arc<cairn_engine::Repository>, index: std::sync::Arc<cairn_engine::LocalIndex>) -> cairn_engine::Result<()> {
/// use cairn_engine::{Backup, BackupOptions};
/// let (id, _) = Backup::new(repo, index, BackupOptions::stream("greeting")).bytes(b"hello".to_vec()).await?;
/// # Ok(()) }
/// ```
pub struct Backup {
    repo: Arc<Repository>,
    index: Arc<LocalIndex>,
    opts: BackupOptions,
    progress: Arc<Progress>,
    gate: Option<CommitGate>,
}

impl Backup {
    /// A backup into `repo`, deduplicating against `index`.
    pub fn new(repo: Arc<Repository>, index: Arc<LocalIndex>, opts: BackupOptions) -> Backup {
        Backup { repo, index, opts, progress: Arc::default(), gate: None }
    }

    /// Counts progress into `progress` (read it from another task).
    pub fn progress(mut self, progress: Arc<Progress>) -> Backup {
        self.progress = progress;
        self
    }

    /// Runs `gate` after everything but the snapshot is durable.
    pub fn gate(mut self, gate: CommitGate) -> Backup {
        self.gate = Some(gate);
        self
    }

    /// Backs up one stream as one entry. A tar stream (by `opts.tar`) is cut
    /// at member boundaries and gets a member index.
    pub async fn stream(self, source: Box<dyn StreamSource>) -> Result<(SnapshotId, Snapshot)> {
        let entry = Entry::new(self.opts.entry_name.clone(), FileKind::File, self.opts.mode, self.opts.mtime);
        let feed = StreamFeed { source, entry, tar: self.opts.tar };
        self.feed(Box::new(feed)).await
    }

    /// Backs up `bytes` as one entry (tests, small inputs).
    pub async fn bytes(self, bytes: Vec<u8>) -> Result<(SnapshotId, Snapshot)> {
        self.stream(Box::new(std::io::Cursor::new(bytes))).await
    }

    /// Backs up what `feed` produces.
    pub async fn feed(self, feed: Box<dyn Feed>) -> Result<(SnapshotId, Snapshot)> {
        let Backup { repo, index, opts, progress, gate } = self;
        let started = Instant::now();
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let params = match opts.chunker {
            Some(p) => {
                p.validate()?;
                p
            }
            None => repo.config().chunker,
        };
        // Step 1: the reader thread runs the feed.
        let (batch_tx, batch_rx) = mpsc::sync_channel::<Result<Vec<Piece>>>(1);
        let reader = spawn_reader(feed, batch_tx, params, repo.keys().chunker_seed(), progress.clone());
        // Step 2: the packer thread seals what is new into packs.
        let session: SessionSet = Arc::default();
        let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<PackerMsg>(1);
        let packer = Packer::new(&repo, &index, session.clone(), opts.compression_level, pack_tx, progress.clone());
        let packer_thread = std::thread::Builder::new()
            .name("cairn-packer".into())
            .spawn(move || -> Result<()> {
                let mut packer = packer;
                while let Ok(batch) = batch_rx.recv() {
                    packer.add_batch(batch?)?;
                }
                packer.finish()
            })
            .map_err(|e| Error::Internal(format!("cannot start the packer thread: {e}")))?;
        // Step 3: packs are uploaded and indexed here.
        let mut committer = Committer::new(&repo, &index, session, progress.clone());
        let uploads = upload_all(&repo, &mut committer, pack_rx, opts.upload_concurrency, &progress).await;
        if let Uploads::Stopped(e) = uploads {
            // The threads stop at their next send; a source blocked in a
            // read is not waited for.
            return Err(e);
        }
        // Step 4: both threads end. When both failed, one only saw the
        // other stop (`Cancelled`): the other's error is the root cause,
        // and the reader's when neither was cancelled.
        let (packer_result, reader_result) = tokio::task::spawn_blocking(move || (packer_thread.join(), reader.join()))
            .await
            .map_err(|e| Error::Internal(format!("joining the pipeline: {e}")))?;
        let reader_result = reader_result.map_err(|_| Error::Internal("the reader thread panicked".into()))?;
        let packer_result = packer_result.map_err(|_| Error::Internal("the packer thread panicked".into()))?;
        let (bytes_read, learnt) = match (reader_result, packer_result) {
            (Err(Error::Cancelled(_)), Err(e)) | (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
            (Ok(read), Ok(())) => read,
        };
        let done = match uploads {
            Uploads::Done(done) => done,
            Uploads::Stopped(e) | Uploads::Drained(e) => return Err(e),
        };
        committer.write_segment().await?;
        let (entries, chunks, new_chunks, new_bytes) = done.ok_or_else(cancelled)?;
        // Step 5: the gate, then the snapshot, last.
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
            lease: index.lease().map(|l| l.key().to_string()),
            copied_from: None,
        };
        let id = commit(&repo, index.lease(), &snapshot).await?;
        Ok((id, snapshot))
    }
}

/// Writes the snapshot under the writer's lease: renewed right before
/// (a broken lease fails the backup before anything references a pack GC
/// may delete) and right after (if GC broke it meanwhile, the snapshot is
/// withdrawn and the backup fails: nothing acknowledged can reference a
/// swept pack). docs/FORMAT.md, "Garbage collection", argues why.
async fn commit(repo: &Repository, lease: Option<&crate::gc::Lease>, snapshot: &Snapshot) -> Result<SnapshotId> {
    let Some(lease) = lease else { return snapshot.save(repo).await };
    lease.renew().await?;
    let id = snapshot.save(repo).await?;
    if let Err(e) = lease.renew().await {
        let key = crate::repofile::ObjectKey::Snapshot(id).to_string();
        let withdrawn = crate::store::Backend::delete(repo.store(), &key).await;
        return Err(match (e, withdrawn) {
            (Error::LeaseLost { lease, detail }, Ok(())) => {
                Error::LeaseLost { lease, detail: format!("{detail}; snapshot {id} withdrawn") }
            }
            (Error::LeaseLost { lease, detail }, Err(w)) => Error::LeaseLost {
                lease,
                detail: format!("{detail}; withdrawing snapshot {id} failed ({w}): the next prune withdraws it"),
            },
            // Could not tell (storage error): the snapshot may be unsafe,
            // so it is withdrawn and the backup fails either way.
            (other, _) => other,
        });
    }
    Ok(id)
}

/// What the packer reported at the end: entries, chunks, new chunks, new bytes.
type Done = (Vec<Entry>, u64, u64, u64);

/// Starts the reader thread: `feed` into a [`PieceSink`]; returns the bytes
/// read from the source and what the feed learnt for the metadata.
fn spawn_reader(
    feed: Box<dyn Feed>,
    tx: mpsc::SyncSender<Result<Vec<Piece>>>,
    params: ChunkerParams,
    seed: u64,
    progress: Arc<Progress>,
) -> std::thread::JoinHandle<Result<(u64, Option<serde_json::Value>)>> {
    std::thread::Builder::new()
        .name("cairn-reader".into())
        .spawn(move || {
            let mut sink = PieceSink::new(tx, progress);
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
        .expect("spawn reader thread")
}

/// How the uploads ended.
enum Uploads {
    /// Every pack is durable; what the packer reported at the end (`None`
    /// if it stopped early: its own error says why).
    Done(Option<Done>),
    /// An upload failed while the packer was still producing: the root
    /// cause, reported at once.
    Stopped(Error),
    /// An upload failed after the packer had finished or failed: reported
    /// after the reader's and the packer's own errors.
    Drained(Error),
}

/// Uploads the packer's packs, at most `concurrency` at once, recording each
/// durable one with the committer. See [`Uploads`] for how it ends.
async fn upload_all(
    repo: &Repository,
    committer: &mut Committer<'_>,
    mut pack_rx: tokio::sync::mpsc::Receiver<PackerMsg>,
    concurrency: usize,
    progress: &Progress,
) -> Uploads {
    let concurrency = concurrency.max(1);
    let mut inflight = FuturesUnordered::new();
    let mut done = None;
    let mut failure: Option<Error> = None;
    while let Some(msg) = pack_rx.recv().await {
        match msg {
            PackerMsg::Pack(p) => {
                while inflight.len() >= concurrency {
                    let r: Result<PackEntries> = inflight.next().await.expect("non-empty");
                    if let Err(e) = async { committer.pack_durable(r?).await }.await {
                        return Uploads::Stopped(e);
                    }
                }
                committer.uploaded += p.bytes.len() as u64;
                inflight.push(upload(repo, p, progress));
            }
            PackerMsg::Done { entries, chunks, new_chunks, new_bytes } => {
                done = Some((entries, chunks, new_chunks, new_bytes));
            }
        }
    }
    while let Some(r) = inflight.next().await {
        match r {
            Ok(entries) => {
                if let Err(e) = committer.pack_durable(entries).await {
                    return Uploads::Stopped(e);
                }
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match failure {
        Some(e) => Uploads::Drained(e),
        None => Uploads::Done(done),
    }
}
