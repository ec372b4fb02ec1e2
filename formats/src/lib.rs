//! Pure decoders for the byte formats cairn reads and writes.
//!
//! **Invariant:** this crate does no I/O. Every decoder takes `&[u8]` (or is a
//! push-based state machine fed with byte slices), reports "incomplete" on
//! short input instead of guessing, and never panics on any input: each
//! decoder has a fuzz target under `fuzz/`.
//!
//! # Layout
//! - [`repo`]: cairn's own repository structures (pack trailers, index
//!   segments, tree blobs) as plaintext byte layouts; encryption is the
//!   engine's job.
//! - [`pg`]: PostgreSQL WAL pages and records, WAL file names, timeline
//!   history files, `backup_manifest`.
//! - [`redis`]: Redis RDB files.
//! - [`tar`]: a push parser for ustar/GNU/pax tar streams.
#![warn(missing_docs)]

pub mod pg;
pub mod redis;
pub mod repo;
pub mod tar;
