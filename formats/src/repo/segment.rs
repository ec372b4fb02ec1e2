//! Index segment: which blobs each pack holds, written after its packs.

use super::{BlobEntry, Reader, RepoDecodeError, BLOB_ENTRY_LEN};

/// Version byte at the start of a plaintext index segment.
pub const INDEX_SEGMENT_VERSION: u8 = 1;

/// The blobs of one pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntries {
    /// BLAKE3 of the pack's bytes.
    pub pack_id: [u8; 32],
    /// The pack's total length, so `check` can compare it with the store.
    pub pack_len: u64,
    /// The pack's blobs in pack order.
    pub blobs: Vec<BlobEntry>,
}

/// A decoded index segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexSegment {
    /// The packs this segment describes.
    pub packs: Vec<PackEntries>,
}

impl IndexSegment {
    /// Encodes the plaintext segment.
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out = Vec::with_capacity(5 + self.packs.len() * 44 + blobs * BLOB_ENTRY_LEN);
        out.push(INDEX_SEGMENT_VERSION);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.pack_id);
            out.extend_from_slice(&p.pack_len.to_le_bytes());
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                b.encode(&mut out);
            }
        }
        out
    }

    /// Decodes a plaintext segment.
    pub fn decode(bytes: &[u8]) -> Result<Self, RepoDecodeError> {
        let mut r = Reader::new(bytes);
        r.version("index segment", INDEX_SEGMENT_VERSION)?;
        let n = r.count(32 + 8 + 4)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let pack_id = r.id()?;
            let pack_len = r.u64()?;
            let m = r.count(BLOB_ENTRY_LEN)?;
            let mut blobs = Vec::with_capacity(m);
            for _ in 0..m {
                blobs.push(BlobEntry::decode(&mut r)?);
            }
            packs.push(PackEntries { pack_id, pack_len, blobs });
        }
        r.finish()?;
        Ok(IndexSegment { packs })
    }
}
