//! Tree blobs: an ordered list of chunk references that make up a stream.
//!
//! A 1 TB stream has about a million chunks; its reference list is cut into
//! tree blobs of bounded size, so a manifest stays small and restoring from a
//! byte offset only needs the tree blobs that cover it.

use super::{Reader, RepoDecodeError};

/// Version byte at the start of a plaintext tree blob.
pub const TREE_VERSION: u8 = 1;
/// Length in bytes of one encoded [`ChunkRef`].
pub const CHUNK_REF_LEN: usize = 36;

/// One chunk of a stream: its blob id and plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// Keyed BLAKE3 of the chunk.
    pub id: [u8; 32],
    /// Plaintext length of the chunk.
    pub len: u32,
}

/// Encodes a tree blob.
pub fn encode_tree(refs: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + refs.len() * CHUNK_REF_LEN);
    out.push(TREE_VERSION);
    out.extend_from_slice(&(refs.len() as u32).to_le_bytes());
    for r in refs {
        out.extend_from_slice(&r.id);
        out.extend_from_slice(&r.len.to_le_bytes());
    }
    out
}

/// Decodes a tree blob.
pub fn decode_tree(bytes: &[u8]) -> Result<Vec<ChunkRef>, RepoDecodeError> {
    let mut r = Reader::new(bytes);
    r.version("tree", TREE_VERSION)?;
    let n = r.count(CHUNK_REF_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.id()?;
        out.push(ChunkRef { id, len: r.u32()? });
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{decode_trailer, encode_trailer, BlobEntry, BlobKind, Compression, IndexSegment, PackEntries};

    fn entry(i: u8, offset: u32) -> BlobEntry {
        BlobEntry {
            id: [i; 32],
            kind: if i.is_multiple_of(2) { BlobKind::Data } else { BlobKind::Tree },
            compression: Compression::Zstd,
            offset,
            stored_len: 100,
            raw_len: 300,
        }
    }

    /// Pins the byte layout: changing it without bumping a version breaks
    /// every existing repository, so it must break this test too.
    #[test]
    fn golden_layouts() {
        let t = encode_tree(&[ChunkRef { id: [7; 32], len: 0x01020304 }]);
        assert_eq!(t[..5], [1, 1, 0, 0, 0]);
        assert_eq!(t[37..], [4, 3, 2, 1]);
        let tr = encode_trailer(&[entry(2, 0)]);
        assert_eq!(tr.len(), 5 + 46);
        assert_eq!(
            blake3::hash(&tr).to_hex().as_str(),
            GOLDEN_TRAILER_HASH,
            "pack trailer layout changed without a version bump"
        );
        let seg = IndexSegment { packs: vec![PackEntries { pack_id: [9; 32], pack_len: 5, blobs: vec![entry(1, 0)] }] };
        assert_eq!(
            blake3::hash(&seg.encode()).to_hex().as_str(),
            GOLDEN_SEGMENT_HASH,
            "index segment layout changed without a version bump"
        );
    }

    const GOLDEN_TRAILER_HASH: &str = "522390a969dcdf7ae2623ede8468cc4be507e2779d3b08785e07859efc9b346f";
    const GOLDEN_SEGMENT_HASH: &str = "04a147f679c200dc49606111f835ed1260fcf9493653e569c67163f0e309123e";

    #[test]
    fn round_trips_and_refusals() {
        let refs: Vec<_> = (0..10).map(|i| ChunkRef { id: [i; 32], len: i as u32 * 7 }).collect();
        assert_eq!(decode_tree(&encode_tree(&refs)).unwrap(), refs);
        let entries = vec![entry(1, 0), entry(2, 100)];
        assert_eq!(decode_trailer(&encode_trailer(&entries), 200).unwrap(), entries);
        // Overlapping blobs and blobs running into the trailer are refused.
        assert!(decode_trailer(&encode_trailer(&[entry(1, 0), entry(2, 50)]), 200).is_err());
        assert!(decode_trailer(&encode_trailer(&entries), 150).is_err());
        let mut bad = encode_tree(&refs);
        bad[0] = 2;
        assert!(matches!(decode_tree(&bad), Err(RepoDecodeError::UnknownVersion { got: 2, .. })));
        // A hostile count cannot drive an allocation.
        assert!(matches!(decode_tree(&[1, 0xff, 0xff, 0xff, 0xff]), Err(RepoDecodeError::Truncated { .. })));
        for cut in 0..encode_tree(&refs).len() {
            assert!(decode_tree(&encode_tree(&refs)[..cut]).is_err());
        }
    }
}
