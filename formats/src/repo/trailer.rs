//! Pack tail: `[encrypted trailer][trailer length: u32 LE][magic: 8 bytes]`.

use super::{BlobEntry, Reader, RepoDecodeError, BLOB_ENTRY_LEN};

/// The last 8 bytes of every pack; the final byte is the pack format version.
pub const PACK_MAGIC: [u8; 8] = *b"CAIRNPK\x01";
/// Length of the fixed tail after the encrypted trailer.
pub const PACK_TAIL_LEN: usize = 4 + 8;
/// Version byte at the start of the plaintext trailer.
pub const TRAILER_VERSION: u8 = 1;

/// The fixed end of a pack: where its encrypted trailer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackTail {
    /// Length of the encrypted trailer that precedes the tail.
    pub trailer_len: u32,
}

/// Parses the last [`PACK_TAIL_LEN`] bytes of a pack.
pub fn parse_pack_tail(tail: &[u8]) -> Result<PackTail, RepoDecodeError> {
    let mut r = Reader::new(tail);
    let trailer_len = r.u32()?;
    let mut got = [0u8; 8];
    got.copy_from_slice(r.take(8)?);
    r.finish()?;
    if got != PACK_MAGIC {
        return Err(RepoDecodeError::BadMagic { expected: PACK_MAGIC, got });
    }
    Ok(PackTail { trailer_len })
}

/// Encodes the plaintext trailer: version, count, entries.
pub fn encode_trailer(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + entries.len() * BLOB_ENTRY_LEN);
    out.push(TRAILER_VERSION);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode(&mut out);
    }
    out
}

/// Decodes a plaintext trailer and checks that its blobs tile the pack
/// without overlapping and end before `trailer_start`.
pub fn decode_trailer(bytes: &[u8], trailer_start: u64) -> Result<Vec<BlobEntry>, RepoDecodeError> {
    let mut r = Reader::new(bytes);
    r.version("pack trailer", TRAILER_VERSION)?;
    let n = r.count(BLOB_ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    let mut next_free = 0u64;
    for _ in 0..n {
        let at = r.pos();
        let e = BlobEntry::decode(&mut r)?;
        let end = u64::from(e.offset) + u64::from(e.stored_len);
        if u64::from(e.offset) < next_free || end > trailer_start {
            return Err(RepoDecodeError::Invalid { field: "blob offset", offset: at + 34, value: e.offset.into() });
        }
        next_free = end;
        out.push(e);
    }
    r.finish()?;
    Ok(out)
}
