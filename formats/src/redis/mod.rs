//! Redis RDB files: a streaming validator that reports what a dump holds.
//!
//! A backup of Redis is the `dump.rdb` the server writes (or sends to a
//! replica). Before such a stream becomes a snapshot, cairn wants to know
//! that it is a complete, loadable RDB and what is in it: the format
//! version, the AUX fields (`redis-ver`, `repl-id`, `repl-offset`, ...),
//! and the keys and expiries per database. [`RdbParser`] provides that
//! without holding the file: it is fed slices of any size, streams string
//! payloads (a single value can be 512 MB), and only keeps the small
//! encoded containers it validates.
//!
//! What it checks, following `redis-check-rdb` (which loads with deep
//! sanitisation):
//! - every opcode and value type of RDB versions 1 to 12 (Redis up to 7.4
//!   and 8.x), including streams v1 to v3, quicklists, hashes with field
//!   TTLs and module values (walked through their typed-item framing);
//! - LZF-compressed strings decompress to exactly their declared length;
//! - listpacks, ziplists, intsets and zipmaps: header, sizes, entry
//!   encodings, back-lengths, terminators, counts, duplicate fields, and
//!   the stream node layout;
//! - the CRC-64/Jones trailer (zero means the writer disabled it).
//!
//! What it does not check, because it would need memory proportional to a
//! value: duplicate members of sets, hashes and sorted sets stored as plain
//! element lists (hash tables and skiplists in memory), and cross-references
//! between a stream consumer's pending entries and its group's.
//!
//! Valkey 9 files (magic `VALKEY`, RDB version 80 and up) are recognised
//! and refused with [`RdbError::Valkey`]; Valkey 8 still writes Redis
//! format 11 and is read like Redis.
//!
//! # Example
//! ```
//! use cairn_formats::redis::{RdbError, RdbParser};
//!
//! let mut parser = RdbParser::new();
//! parser.feed(b"REDIS0011\xfe\x00").unwrap();
//! // The file stops after SELECTDB: that is a truncated RDB, not an empty one.
//! assert!(matches!(parser.finish(), Err(RdbError::Truncated { offset: 11, .. })));
//! ```

mod error;
mod listpack;
pub mod lzf;
mod parser;
mod program;
mod summary;
mod ziplist;

pub use error::{ContainerError, RdbError};
pub use parser::{RdbLimits, RdbParser};
pub use summary::{rdb_type_name, ChecksumStatus, DbStats, KindCounts, RdbSummary};
