//! What backups read: byte streams ([`StreamSource`]) and feeds that turn
//! a source into pipeline pieces ([`Feed`]).
//!
//! - [`command`]: files, stdin and producer commands (`cairn backup -- CMD`).
//! - [`tar`]: the chunker's forced cuts at tar member boundaries and the
//!   member index stored beside a tar entry.
//! - [`dir`]: a directory walk as a feed, one entry per path, with the
//!   previous snapshot as the files cache.
//! - [`redis`]: an RDB stream checked as it passes ([`redis::rdb`]) and a
//!   live pull over the replication protocol ([`redis::sync`]).
//! - [`pg`]: a base backup's tar checked against its `backup_manifest`
//!   ([`pg::base`]) and one pulled over the replication protocol
//!   ([`pg::pull`]).

pub mod command;
pub mod dir;
pub mod pg;
pub mod redis;
pub mod tar;

use std::io::Read;

use crate::chunker::ChunkerParams;
pub use crate::commands::backup::PieceSink;
use crate::snapshot::Entry;
use crate::Result;

/// A stream read once by the backup pipeline.
///
/// `finish` is called after the last byte was read and before anything is
/// committed: a source that can tell its output was incomplete (a producer
/// that exited non-zero) fails there, and no snapshot is written.
pub trait StreamSource: Read + Send {
    /// Confirms that the stream ended normally.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Facts learnt from the bytes (RDB version, key counts, …), recorded in
    /// the snapshot's metadata; asked for after a successful `finish`.
    fn metadata(&self) -> Option<serde_json::Value> {
        None
    }
}

impl StreamSource for Box<dyn StreamSource> {
    fn finish(&mut self) -> Result<()> {
        (**self).finish()
    }

    fn metadata(&self) -> Option<serde_json::Value> {
        (**self).metadata()
    }
}

impl StreamSource for std::fs::File {}
impl StreamSource for std::io::Stdin {}
impl StreamSource for std::io::Cursor<Vec<u8>> {}
impl StreamSource for std::io::Empty {}
impl<R: Read + Send> StreamSource for std::io::Take<R> {}

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
