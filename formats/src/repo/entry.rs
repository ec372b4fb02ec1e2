use super::{Reader, RepoDecodeError};

/// Length in bytes of one encoded [`BlobEntry`].
pub const BLOB_ENTRY_LEN: usize = 32 + 1 + 1 + 4 + 4 + 4;

/// What a blob holds, so that `check` and GC can walk trees without guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// A chunk of a source stream.
    Data,
    /// A serialized list of [`super::ChunkRef`]s.
    Tree,
}

impl BlobKind {
    fn code(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
}

/// How a blob's plaintext was transformed before encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is: zstd would not have saved enough.
    None,
    /// One zstd frame.
    Zstd,
}

impl Compression {
    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
}

/// Where one blob lives inside a pack and how to turn it back into plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobEntry {
    /// Keyed BLAKE3 of the blob's plaintext.
    pub id: [u8; 32],
    /// Data or tree.
    pub kind: BlobKind,
    /// Compression applied before encryption.
    pub compression: Compression,
    /// Offset of the encrypted blob from the start of the pack.
    pub offset: u32,
    /// Encrypted length (nonce, ciphertext and tag).
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

impl BlobEntry {
    /// Appends the fixed 46-byte encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id);
        out.push(self.kind.code());
        out.push(self.compression.code());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, RepoDecodeError> {
        let id = r.id()?;
        let kind_at = r.pos();
        let kind = match r.u8()? {
            0 => BlobKind::Data,
            1 => BlobKind::Tree,
            v => return Err(RepoDecodeError::Invalid { field: "blob kind", offset: kind_at, value: v.into() }),
        };
        let comp_at = r.pos();
        let compression = match r.u8()? {
            0 => Compression::None,
            1 => Compression::Zstd,
            v => return Err(RepoDecodeError::Invalid { field: "compression", offset: comp_at, value: v.into() }),
        };
        Ok(BlobEntry { id, kind, compression, offset: r.u32()?, stored_len: r.u32()?, raw_len: r.u32()? })
    }

    /// Decodes one entry from exactly [`BLOB_ENTRY_LEN`] bytes.
    pub fn decode_exact(bytes: &[u8]) -> Result<Self, RepoDecodeError> {
        let mut r = Reader::new(bytes);
        let e = Self::decode(&mut r)?;
        r.finish()?;
        Ok(e)
    }
}
