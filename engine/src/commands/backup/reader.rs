//! The reader side of the ingest pipeline: a [`Feed`] pushes [`Piece`]s
//! into a [`PieceSink`], which batches them (~8 MiB) for the packer over a
//! channel of depth 1. This thread is the pipeline's only serial stage, so
//! it only reads and cuts chunks; hashing and sealing happen on the packer.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use super::{cancelled, merge_metadata, Progress};
use crate::chunker::{ChunkerParams, StreamChunker};
use crate::snapshot::Entry;
use crate::sources::tar::{TarHints, TarMode};
use crate::sources::{Feed, Piece, StreamSource};
use crate::Result;

/// Bytes per batch handed from the reader to the packer.
const BATCH_BYTES: usize = 8 << 20;

/// Batches pieces for the packer; handed to a [`Feed`].
pub struct PieceSink {
    pub(super) tx: mpsc::SyncSender<Result<Vec<Piece>>>,
    cur: Vec<Piece>,
    cur_bytes: usize,
    pub(super) total: u64,
    /// Bytes pushed that were not read from the source (member indexes).
    pub(super) overhead: u64,
    progress: Arc<Progress>,
}

impl PieceSink {
    pub(super) fn new(tx: mpsc::SyncSender<Result<Vec<Piece>>>, progress: Arc<Progress>) -> PieceSink {
        PieceSink { tx, cur: Vec::new(), cur_bytes: 0, total: 0, overhead: 0, progress }
    }

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
            ch = ch.with_hints(Box::new(TarHints::new(tar, params)));
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

    pub(super) fn flush(&mut self) -> Result<()> {
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

/// One stream as one entry (with a member index when it is tar).
pub(super) struct StreamFeed {
    pub(super) source: Box<dyn StreamSource>,
    pub(super) entry: Entry,
    pub(super) tar: TarMode,
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
