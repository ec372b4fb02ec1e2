use thiserror::Error;

/// Why a repository structure could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RepoDecodeError {
    /// The input ended before a field that must be there.
    #[error("truncated at offset {offset}: needed {needed} bytes, {available} available")]
    Truncated {
        /// Offset of the field that did not fit.
        offset: usize,
        /// Bytes the field needed.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// A structure carries a version this build does not understand.
    #[error("unknown {what} version {got} (this build reads version {known}); upgrade cairn")]
    UnknownVersion {
        /// Which structure.
        what: &'static str,
        /// The version found.
        got: u8,
        /// The version this build reads.
        known: u8,
    },
    /// A field holds a value outside its domain.
    #[error("invalid {field} at offset {offset}: {value}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// The offending value.
        value: u64,
    },
    /// Bytes follow the end of a structure that has a fixed end.
    #[error("{count} unexpected trailing bytes at offset {offset}")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: usize,
        /// How many extra bytes.
        count: usize,
    },
    /// The pack does not end with cairn's pack magic.
    #[error("bad pack magic: expected {expected:02x?}, got {got:02x?}")]
    BadMagic {
        /// The magic cairn writes.
        expected: [u8; 8],
        /// The bytes found.
        got: [u8; 8],
    },
}
