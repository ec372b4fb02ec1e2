//! A push parser for tar streams (v7, ustar, GNU, pax) that reports where
//! each member's data lies in the stream.
//!
//! cairn chunks tar archives (a `pg_basebackup` is several) with the member
//! boundaries in mind: a file's content should chunk the same wherever it
//! sits in the archive, and one file should be restorable from a tar
//! snapshot without reading the rest. So [`TarParser`] does not hand out
//! data; it is fed the stream in slices of any size, alongside the chunker,
//! and emits a [`TarMember`] as soon as a member's headers are complete,
//! with the absolute stream offsets of its headers and its data. The data
//! itself is skipped, so memory stays bounded whatever the member sizes.
//!
//! Supported: ustar (with the 155-byte prefix), GNU long names (`L`) and
//! long link targets (`K`), pax extended headers per member (`x`) and
//! global (`g`) overriding `path`, `linkpath`, `size`, `mtime`, `uid`,
//! `gid`, `uname`, `gname`, base-256 numbers for big sizes and ids, both
//! checksum conventions, and old v7 headers. Sparse files (GNU old `S`
//! headers with their extension blocks, and pax `GNU.sparse.*`) are
//! reported with [`TarMember::sparse`] set and the stored data range; their
//! maps are not decoded.
//!
//! The data-length rule follows GNU tar (`skip_member`): every member is
//! followed by `size` bytes of data rounded up to 512, except directories
//! (typeflag `5`), whose size is not followed by data.
//!
//! # Example
//! ```
//! use cairn_formats::tar::{TarEvent, TarParser};
//!
//! # fn header(name: &str, size: u64) -> Vec<u8> {
//! #     let mut h = vec![0u8; 512];
//! #     h[..name.len()].copy_from_slice(name.as_bytes());
//! #     h[100..108].copy_from_slice(b"0000644\0");
//! #     h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
//! #     h[136..148].copy_from_slice(b"00000000000\0");
//! #     h[156] = b'0';
//! #     h[257..265].copy_from_slice(b"ustar\x0000");
//! #     h[148..156].fill(b' ');
//! #     let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
//! #     h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
//! #     h
//! # }
//! // A one-file archive: header, 5 bytes of data padded to 512, two zero blocks.
//! let mut archive = header("hello.txt", 5);
//! archive.extend_from_slice(b"hello");
//! archive.resize(512 * 4, 0);
//!
//! let mut parser = TarParser::new();
//! let mut events = Vec::new();
//! for piece in archive.chunks(100) {
//!     events.extend(parser.feed(piece).unwrap());
//! }
//! parser.finish().unwrap();
//! match &events[0] {
//!     TarEvent::Member(m) => {
//!         assert_eq!(m.path, b"hello.txt");
//!         assert_eq!((m.data_start, m.data_len), (512, 5));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert_eq!(events[1], TarEvent::End { offset: 1024 });
//! ```

mod header;
mod parser;
mod pax;

use std::borrow::Cow;

use thiserror::Error;

pub use header::BLOCK;
pub use parser::{TarLimits, TarParser};

/// Which header dialect a member's main header uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarFormat {
    /// No magic: the original Unix v7 layout (no user names, no prefix).
    V7,
    /// POSIX ustar (`ustar\0` magic), also the base of pax archives.
    Ustar,
    /// GNU (`ustar  \0` magic): no prefix field, GNU extensions.
    Gnu,
}

/// What a member is, from its typeflag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`0`, NUL, contiguous `7`, GNU sparse `S`).
    File,
    /// A hard link to an earlier member (`1`).
    HardLink,
    /// A symbolic link (`2`).
    Symlink,
    /// A character device (`3`).
    CharDevice,
    /// A block device (`4`).
    BlockDevice,
    /// A directory (`5`, or a v7 NUL-type entry whose name ends in `/`).
    Directory,
    /// A named pipe (`6`).
    Fifo,
    /// Any other typeflag (GNU dumpdir `D`, volume label `V`, ...), with
    /// its byte. Its data, if any, is reported like a file's.
    Other(u8),
}

/// One archive member, reported once its headers have been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarMember {
    /// Offset of the first header block that belongs to this member
    /// (a pax `x` or GNU `L`/`K` header if there is one).
    pub header_offset: u64,
    /// Offset of the member's own ustar/GNU/v7 header block, after any
    /// extension headers.
    pub entry_offset: u64,
    /// The dialect of that header.
    pub format: TarFormat,
    /// The member's path as stored (pax `path` or GNU long name if given).
    /// Tar paths are bytes; see [`path_lossy`](Self::path_lossy).
    pub path: Vec<u8>,
    /// What the member is.
    pub kind: EntryKind,
    /// The raw typeflag byte.
    pub typeflag: u8,
    /// The size field (or pax `size`).
    pub size: u64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Owner id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Owner name, empty if absent.
    pub uname: Vec<u8>,
    /// Group name, empty if absent.
    pub gname: Vec<u8>,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Sub-second part of the modification time (pax only).
    pub mtime_nanos: u32,
    /// Link target of symlinks and hard links.
    pub link_target: Option<Vec<u8>>,
    /// Device numbers of character and block devices.
    pub device: Option<(u32, u32)>,
    /// Whether the member is a sparse file: its stored data is a sparse
    /// representation, not the file's bytes.
    pub sparse: bool,
    /// Stream offset of the first data byte.
    pub data_start: u64,
    /// Bytes of data (without padding).
    pub data_len: u64,
}

impl TarMember {
    /// The path as text, with invalid UTF-8 replaced.
    pub fn path_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }

    /// Stream offset just past the data's padding, where the next header
    /// starts.
    pub fn data_end_padded(&self) -> u64 {
        self.data_start + padded(self.data_len)
    }
}

/// What the parser reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEvent {
    /// A member's headers are complete; its data follows at `data_start`.
    Member(TarMember),
    /// Two zero blocks: the archive ends. `offset` is where the first one
    /// starts; what follows (record padding) is not part of any member.
    End {
        /// Offset of the first zero block.
        offset: u64,
    },
}

/// Why a tar stream was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TarError {
    /// A header's checksum matches neither the unsigned nor the signed sum.
    #[error("offset {offset}: header checksum field says {stored:?}, the block sums to {computed}")]
    BadChecksum {
        /// Offset of the header block.
        offset: u64,
        /// The checksum field as written.
        stored: String,
        /// The unsigned sum of the block.
        computed: i64,
    },
    /// A numeric header field is neither octal nor base-256, or is out of
    /// range.
    #[error("offset {offset}: invalid {field} field {got:?}")]
    BadNumber {
        /// Offset of the field.
        offset: u64,
        /// Which field.
        field: &'static str,
        /// Its bytes, escaped.
        got: String,
    },
    /// A pax extended header record is malformed, or a value that decides
    /// the data layout (`size`) is not a number.
    #[error("offset {offset}: invalid pax header: expected {expected}, got {got:?}")]
    BadPax {
        /// Offset of the record.
        offset: u64,
        /// What was expected.
        expected: &'static str,
        /// The bytes found, escaped and cut short.
        got: String,
    },
    /// An extension header (GNU long name, pax) is larger than the limit.
    #[error("offset {offset}: extension header of {size} bytes exceeds the {limit}-byte limit")]
    ExtensionTooLarge {
        /// Offset of the header block.
        offset: u64,
        /// Its declared size.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Extension headers were not followed by a member.
    #[error("offset {offset}: extension header not followed by a member")]
    DanglingExtension {
        /// Offset where a member header was expected.
        offset: u64,
    },
    /// One zero block followed by a non-zero block. GNU tar warns ("a lone
    /// zero block") and stops; for a backup this is damage.
    #[error("offset {offset}: lone zero block inside the archive")]
    LoneZeroBlock {
        /// Offset of the zero block.
        offset: u64,
    },
    /// The stream ended before the end-of-archive marker.
    #[error("tar stream ends at offset {offset} while expecting {expected}")]
    Truncated {
        /// Total bytes fed.
        offset: u64,
        /// What was expected next.
        expected: &'static str,
    },
}

/// `n` rounded up to whole blocks.
pub(crate) fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}
