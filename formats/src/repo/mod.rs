//! Plaintext byte layouts of cairn's own repository structures.
//!
//! The engine encrypts these before they reach storage and decrypts them
//! before handing them here, so every decoder in this module sees only
//! authenticated bytes in normal operation. They are still written to survive
//! hostile input (a bug, a key compromise, a fuzzer): lengths are checked
//! before any allocation and every error names the offset.
//!
//! docs/FORMAT.md is the byte-level specification; the golden tests in this
//! module pin it so a layout change without a version bump fails a test.

mod entry;
mod error;
mod segment;
mod trailer;
mod tree;

pub use entry::{BlobEntry, BlobKind, Compression, BLOB_ENTRY_LEN};
pub use error::RepoDecodeError;
pub use segment::{IndexSegment, PackEntries, INDEX_SEGMENT_VERSION};
pub use trailer::{
    decode_trailer, encode_trailer, parse_pack_tail, PackTail, PACK_MAGIC, PACK_TAIL_LEN, TRAILER_VERSION,
};
pub use tree::{decode_tree, encode_tree, ChunkRef, CHUNK_REF_LEN, TREE_VERSION};

/// A cursor over a byte slice that reports short input as an error naming
/// the offset, instead of panicking.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], RepoDecodeError> {
        if self.remaining() < n {
            return Err(RepoDecodeError::Truncated { offset: self.pos, needed: n, available: self.remaining() });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, RepoDecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, RepoDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, RepoDecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn id(&mut self) -> Result<[u8; 32], RepoDecodeError> {
        let b = self.take(32)?;
        let mut a = [0u8; 32];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// Checks a version byte and refuses unknown versions by name.
    pub(crate) fn version(&mut self, what: &'static str, known: u8) -> Result<(), RepoDecodeError> {
        let got = self.u8()?;
        if got != known {
            return Err(RepoDecodeError::UnknownVersion { what, got, known });
        }
        Ok(())
    }

    /// Reads a count and checks that `count * item_len` bytes can follow, so a
    /// hostile count never drives an allocation.
    pub(crate) fn count(&mut self, item_len: usize) -> Result<usize, RepoDecodeError> {
        let offset = self.pos;
        let n = self.u32()? as usize;
        let need = n.checked_mul(item_len).ok_or(RepoDecodeError::Truncated {
            offset,
            needed: usize::MAX,
            available: self.remaining(),
        })?;
        if need > self.remaining() {
            return Err(RepoDecodeError::Truncated { offset: self.pos, needed: need, available: self.remaining() });
        }
        Ok(n)
    }

    pub(crate) fn finish(&self) -> Result<(), RepoDecodeError> {
        if self.remaining() != 0 {
            return Err(RepoDecodeError::TrailingBytes { offset: self.pos, count: self.remaining() });
        }
        Ok(())
    }
}
