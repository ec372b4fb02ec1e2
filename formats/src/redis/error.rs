//! Errors of the RDB decoder.
//!
//! Every variant that can happen inside the file names the absolute byte
//! offset in the RDB stream, so that a failed backup says where the damage
//! is, and what was expected there.

use thiserror::Error;

use super::lzf::LzfError;

/// Why an encoded container (listpack, ziplist, intset, zipmap) was
/// rejected. `at` is the byte offset inside the container, which the
/// enclosing [`RdbError::Container`] places in the file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("container byte {at}: expected {expected}, got {got}")]
pub struct ContainerError {
    /// Offset inside the container's decoded bytes.
    pub at: usize,
    /// What the format requires at that point.
    pub expected: &'static str,
    /// What was found instead.
    pub got: String,
}

impl ContainerError {
    pub(crate) fn new(at: usize, expected: &'static str, got: impl ToString) -> Self {
        ContainerError { at, expected, got: got.to_string() }
    }
}

/// Everything that can go wrong while decoding an RDB stream.
///
/// The parser stops at the first error and keeps returning it: an RDB is
/// either loadable or not, and guessing past damage would only produce
/// wrong key counts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RdbError {
    /// The first bytes are not `REDIS` followed by a version number.
    #[error("not an RDB file: expected \"REDISnnnn\" at offset 0, got {got:?}")]
    BadMagic {
        /// The first bytes, escaped for printing.
        got: String,
    },
    /// The file was written by Valkey 9 or later (magic `VALKEY` or an RDB
    /// version of 80 and up). Its format diverges from Redis's, so it is
    /// recognised and refused instead of being misparsed.
    #[error("RDB version {version} was written by Valkey; this format is recognised but not decoded")]
    Valkey {
        /// The version number from the header.
        version: u32,
    },
    /// A Redis RDB version newer than this decoder knows (12, Redis 7.4/8).
    #[error("unsupported RDB version {version}: this decoder reads versions 1 to 12")]
    UnsupportedVersion {
        /// The version number from the header.
        version: u32,
    },
    /// A byte that should be an opcode or a value type is neither.
    #[error("offset {offset}: expected an RDB opcode or value type, got {got}")]
    UnknownType {
        /// Offset of the byte.
        offset: u64,
        /// The byte.
        got: u8,
    },
    /// A length prefix uses an encoding that does not exist (`0x82..=0xBF`)
    /// or a special string encoding where a plain length is required.
    #[error("offset {offset}: expected a length, got encoding byte {got:#04x}")]
    BadLength {
        /// Offset of the length's first byte.
        offset: u64,
        /// The first byte.
        got: u8,
    },
    /// A string uses a special encoding other than int8/16/32 or LZF.
    #[error("offset {offset}: expected a string encoding (0-3), got {got}")]
    BadStringEncoding {
        /// Offset of the encoding byte.
        offset: u64,
        /// The encoding number.
        got: u8,
    },
    /// An LZF-compressed string does not decompress to its declared length.
    #[error("offset {offset}: corrupt LZF string: {source}")]
    Lzf {
        /// Offset of the string's header.
        offset: u64,
        /// What the LZF decoder found.
        source: LzfError,
    },
    /// An encoded container (listpack, ziplist, intset, zipmap) is corrupt.
    #[error("offset {offset}: corrupt {kind}: {source}")]
    Container {
        /// Offset of the string holding the container.
        offset: u64,
        /// Which container format.
        kind: &'static str,
        /// What is wrong inside it.
        source: ContainerError,
    },
    /// A structural value is out of range (a stream node key that is not 16
    /// bytes, a NaN score, a quicklist node kind that does not exist, ...).
    #[error("offset {offset}: expected {expected}, got {got}")]
    Invalid {
        /// Offset of the offending item.
        offset: u64,
        /// What the format requires.
        expected: &'static str,
        /// What was found.
        got: String,
    },
    /// Valid by the format but refused by Redis itself too (pre-release
    /// module values and function libraries from 4.0 and 7.0 release
    /// candidates).
    #[error("offset {offset}: {what} is not supported (Redis refuses it too)")]
    Unsupported {
        /// Offset of the opcode or type byte.
        offset: u64,
        /// What was found.
        what: &'static str,
    },
    /// The CRC-64 trailer does not match the content.
    #[error("offset {offset}: checksum mismatch: trailer says {stored:#018x}, content hashes to {computed:#018x}")]
    ChecksumMismatch {
        /// Offset of the trailer.
        offset: u64,
        /// The checksum stored in the file.
        stored: u64,
        /// The checksum of the bytes before the trailer.
        computed: u64,
    },
    /// The stream ended before the RDB did.
    #[error("RDB ends at offset {offset} while expecting {expected}")]
    Truncated {
        /// Total bytes fed.
        offset: u64,
        /// What the parser was waiting for.
        expected: &'static str,
    },
}

impl RdbError {
    pub(crate) fn invalid(offset: u64, expected: &'static str, got: impl ToString) -> Self {
        RdbError::Invalid { offset, expected, got: got.to_string() }
    }
}
