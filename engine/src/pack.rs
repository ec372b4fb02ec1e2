//! Packs: encrypted blobs back to back, then an encrypted trailer.
//!
//! ```text
//! [blob 0: nonce ‖ ct ‖ tag] … [blob n-1] [trailer: nonce ‖ ct ‖ tag] [trailer_len u32 LE] ["CAIRNPK\x01"]
//! ```
//! Each blob is sealed with its own id as associated data, so a blob moved to
//! another id fails authentication. The trailer repeats the index entries,
//! which is what lets `cairn index rebuild` work from packs alone.

use crate::repofile::ObjectKey;
use crate::store::BackendExt as _;
use bytes::Bytes;
use cairn_formats::repo::{
    decode_trailer, encode_trailer, parse_pack_tail, BlobEntry, BlobKind, Compression, PACK_MAGIC, PACK_TAIL_LEN,
};

use crate::compress;
use crate::crypto::{Keys, SEAL_OVERHEAD};
use crate::ids::{BlobId, Id, PackId};
use crate::store::Store;
use crate::{Error, Result};

const TRAILER_AAD: &[u8] = b"cairn pack trailer v1";

/// A blob ready to be appended to a pack: compressed and sealed.
pub struct SealedBlob {
    /// Blob id.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// How the plaintext was compressed.
    pub compression: Compression,
    /// Plaintext length.
    pub raw_len: u32,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub sealed: Vec<u8>,
}

/// Compresses (when worthwhile) and seals one blob.
pub fn seal_blob(
    keys: &Keys,
    id: BlobId,
    kind: BlobKind,
    zstd: impl Into<compress::Zstd>,
    plaintext: &[u8],
) -> SealedBlob {
    // One buffer: compressed in, sealed in place.
    let mut sealed = Vec::new();
    let compression = compress::compress_into(zstd, plaintext, &mut sealed);
    if compression == Compression::None {
        sealed.reserve_exact(plaintext.len() + SEAL_OVERHEAD);
        sealed.extend_from_slice(plaintext);
    }
    keys.seal_in_place(&id.0 .0, &mut sealed);
    SealedBlob { id, kind, compression, raw_len: plaintext.len() as u32, sealed }
}

/// Opens one blob read from `object` and checks it is what its id says.
///
/// The plaintext is written into fresh memory without zero-filling it
/// first (zeroing cost 5 % of a restore's CPU).
pub fn open_blob(keys: &Keys, object: &str, entry: &BlobEntry, sealed: &[u8]) -> Result<Vec<u8>> {
    let at = Some(u64::from(entry.offset));
    let id = BlobId(Id(entry.id));
    let unauthentic = || Error::corrupt(object, at, format!("blob {} failed authentication", id.short()));
    let plain = match entry.compression {
        Compression::None => {
            let plain = keys.open(&entry.id, sealed).ok_or_else(unauthentic)?;
            if plain.len() != entry.raw_len as usize {
                return Err(Error::corrupt(object, at, format!("blob {} is not {} bytes", id.short(), entry.raw_len)));
            }
            plain
        }
        Compression::Zstd => OPENED.with(|buf| {
            let mut body = buf.borrow_mut();
            body.resize(sealed.len().saturating_sub(SEAL_OVERHEAD), 0);
            if !keys.open_to_slice(&entry.id, sealed, &mut body) {
                return Err(unauthentic());
            }
            compress::decompress_exact(&body, entry.raw_len as usize)
                .map_err(|e| Error::corrupt(object, at, format!("blob {}: {e}", id.short())))
        })?,
    };
    if keys.blob_id(&plain) != id {
        return Err(Error::corrupt(object, at, format!("blob {} does not hash to its id", id.short())));
    }
    Ok(plain)
}

thread_local! {
    /// Decrypted, still compressed bytes of the blob being opened.
    static OPENED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`open_blob`] into `out`, which must be exactly `entry.raw_len` bytes: a
/// caller decoding many blobs into one buffer (`wal fetch`) allocates
/// nothing per blob.
pub fn open_blob_into(keys: &Keys, object: &str, entry: &BlobEntry, sealed: &[u8], out: &mut [u8]) -> Result<()> {
    open_authentic_into(keys, object, entry, sealed, out)?;
    let id = BlobId(Id(entry.id));
    if keys.blob_id(out) != id {
        let at = Some(u64::from(entry.offset));
        return Err(Error::corrupt(object, at, format!("blob {} does not hash to its id", id.short())));
    }
    Ok(())
}

/// [`open_blob_into`] without recomputing the id: the blob authenticates
/// (the id is its associated data, so it was sealed under this id by a key
/// holder) and decompresses to its length, and that is all. Only for a
/// caller that checks the whole content against another hash before using
/// it (the WAL prefetcher, whose spooled copy is hashed before it is served).
pub fn open_authentic_into(keys: &Keys, object: &str, entry: &BlobEntry, sealed: &[u8], out: &mut [u8]) -> Result<()> {
    let at = Some(u64::from(entry.offset));
    let id = Id(entry.id);
    if out.len() != entry.raw_len as usize {
        return Err(Error::corrupt(object, at, format!("blob {} is not {} bytes", id.short(), out.len())));
    }
    let unauthentic = || Error::corrupt(object, at, format!("blob {} failed authentication", id.short()));
    match entry.compression {
        Compression::None => {
            if !keys.open_to_slice(&entry.id, sealed, out) {
                return Err(unauthentic());
            }
        }
        Compression::Zstd => OPENED.with(|buf| {
            let mut body = buf.borrow_mut();
            body.resize(sealed.len().saturating_sub(SEAL_OVERHEAD), 0);
            if !keys.open_to_slice(&entry.id, sealed, &mut body) {
                return Err(unauthentic());
            }
            compress::decompress_into(&body, out)
                .map_err(|e| Error::corrupt(object, at, format!("blob {}: {e}", id.short())))
        })?,
    }
    Ok(())
}

/// A pack being filled.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
    /// The pack's id so far: hashed as blobs arrive, not all at the end.
    hasher: blake3::Hasher,
    /// For a streamed pack, the blob bytes pushed and not kept in `buf`.
    streamed: Option<usize>,
}

/// A finished pack.
pub struct SealedPack {
    /// BLAKE3 of `bytes`.
    pub id: PackId,
    /// The whole pack.
    pub bytes: Bytes,
    /// Its blobs.
    pub entries: Vec<BlobEntry>,
}

/// A finished streamed pack ([`PackBuilder::streaming`]): the caller wrote
/// the blobs; `tail` (encrypted trailer, its length, magic) ends the pack.
pub struct StreamedPack {
    /// BLAKE3 of the whole pack.
    pub id: PackId,
    /// What follows the blobs.
    pub tail: Vec<u8>,
    /// The whole pack's length.
    pub len: u64,
    /// Its blobs.
    pub entries: Vec<BlobEntry>,
}

impl PackBuilder {
    /// An empty pack with room for `target` bytes.
    pub fn new(target: usize) -> Self {
        PackBuilder {
            buf: Vec::with_capacity(target + target / 4),
            entries: Vec::new(),
            hasher: blake3::Hasher::new(),
            streamed: None,
        }
    }

    /// An empty pack whose blobs the caller writes out itself as it pushes
    /// them (`wal push` to a staged local file): only their entries and
    /// the running hash are kept, not a second copy of the bytes.
    pub fn streaming() -> Self {
        PackBuilder { buf: Vec::new(), entries: Vec::new(), hasher: blake3::Hasher::new(), streamed: Some(0) }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.streamed.unwrap_or(0) + self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An empty pack filling `buf` (cleared), so a caller writing many
    /// packs in turn (repacking) reuses one allocation.
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        PackBuilder { buf, entries: Vec::new(), hasher: blake3::Hasher::new(), streamed: None }
    }

    /// Appends a sealed blob.
    pub fn push(&mut self, b: &SealedBlob) {
        self.push_sealed(b.id, b.kind, b.compression, b.raw_len, &b.sealed);
    }

    /// Appends a blob sealed elsewhere, as it was stored (repacking moves
    /// blobs between packs without opening them: the seal binds the id only).
    pub fn push_sealed(&mut self, id: BlobId, kind: BlobKind, compression: Compression, raw_len: u32, sealed: &[u8]) {
        self.entries.push(BlobEntry {
            id: id.0 .0,
            kind,
            compression,
            offset: self.len() as u32,
            stored_len: sealed.len() as u32,
            raw_len,
        });
        match &mut self.streamed {
            Some(n) => *n += sealed.len(),
            None => self.buf.extend_from_slice(sealed),
        }
        self.hasher.update(sealed);
    }

    /// Appends the encrypted trailer, its length and the magic to `buf`;
    /// returns the pack's id.
    fn seal_tail(&mut self, keys: &Keys) -> PackId {
        let trailer = encode_trailer(&self.entries);
        let before = self.buf.len();
        keys.seal_into(TRAILER_AAD, &trailer, &mut self.buf);
        let trailer_len = (self.buf.len() - before) as u32;
        self.buf.extend_from_slice(&trailer_len.to_le_bytes());
        self.buf.extend_from_slice(&PACK_MAGIC);
        self.hasher.update(&self.buf[before..]);
        PackId(Id(*self.hasher.finalize().as_bytes()))
    }

    /// Appends the encrypted trailer and tail and names the pack.
    pub fn finish(mut self, keys: &Keys) -> SealedPack {
        assert!(self.streamed.is_none(), "a streamed pack ends with finish_streamed");
        let id = self.seal_tail(keys);
        debug_assert_eq!(id.0, Id::of_bytes(&self.buf));
        SealedPack { id, bytes: Bytes::from(self.buf), entries: self.entries }
    }

    /// Ends a [`PackBuilder::streaming`] pack: its tail and name.
    pub fn finish_streamed(mut self, keys: &Keys) -> StreamedPack {
        assert!(self.streamed.is_some(), "finish_streamed is for streamed packs");
        let id = self.seal_tail(keys);
        StreamedPack { id, len: self.len() as u64, tail: self.buf, entries: self.entries }
    }
}

/// Decodes the trailer of a whole pack held in memory.
pub fn trailer_of(keys: &Keys, object: &str, pack: &[u8]) -> Result<Vec<BlobEntry>> {
    if pack.len() < PACK_TAIL_LEN {
        return Err(Error::corrupt(object, Some(0), format!("{} bytes is too short for a pack", pack.len())));
    }
    let tail_at = pack.len() - PACK_TAIL_LEN;
    let tail =
        parse_pack_tail(&pack[tail_at..]).map_err(|e| Error::corrupt(object, Some(tail_at as u64), e.to_string()))?;
    let start = tail_at
        .checked_sub(tail.trailer_len as usize)
        .ok_or_else(|| Error::corrupt(object, Some(tail_at as u64), "trailer length exceeds the pack"))?;
    open_trailer(keys, object, &pack[start..tail_at], start as u64)
}

fn open_trailer(keys: &Keys, object: &str, sealed: &[u8], start: u64) -> Result<Vec<BlobEntry>> {
    let plain = keys
        .open(TRAILER_AAD, sealed)
        .ok_or_else(|| Error::corrupt(object, Some(start), "pack trailer failed authentication"))?;
    decode_trailer(&plain, start).map_err(|e| Error::decode(object, e))
}

/// Reads only the trailer of a stored pack (two range reads).
pub async fn read_trailer(store: &Store, keys: &Keys, id: &PackId, size: u64) -> Result<Vec<BlobEntry>> {
    let object = ObjectKey::Pack(*id).to_string();
    if size < PACK_TAIL_LEN as u64 {
        return Err(Error::corrupt(&object, Some(0), format!("{size} bytes is too short for a pack")));
    }
    let tail_at = size - PACK_TAIL_LEN as u64;
    let tail_bytes = store.get_range(&object, tail_at..size).await?;
    let tail = parse_pack_tail(&tail_bytes).map_err(|e| Error::corrupt(&object, Some(tail_at), e.to_string()))?;
    let start = tail_at
        .checked_sub(u64::from(tail.trailer_len))
        .ok_or_else(|| Error::corrupt(&object, Some(tail_at), "trailer length exceeds the pack"))?;
    let sealed = store.get_range(&object, start..tail_at).await?;
    open_trailer(keys, &object, &sealed, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn pack_round_trip_and_every_byte_flip_is_caught() {
        let keys = Keys::derive(&MasterKey([3; 32]));
        let mut p = PackBuilder::new(1024);
        let blobs: Vec<Vec<u8>> = vec![b"alpha".to_vec(), vec![7u8; 5000], b"gamma".to_vec()];
        for b in &blobs {
            p.push(&seal_blob(&keys, keys.blob_id(b), BlobKind::Data, 3, b));
        }
        let pack = p.finish(&keys);
        let entries = trailer_of(&keys, "p", &pack.bytes).unwrap();
        assert_eq!(entries, pack.entries);
        for (e, want) in entries.iter().zip(&blobs) {
            let s = &pack.bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
            assert_eq!(&open_blob(&keys, "p", e, s).unwrap(), want);
        }
        for i in 0..pack.bytes.len() {
            let mut t = pack.bytes.to_vec();
            t[i] ^= 0x80;
            assert_ne!(Id::of_bytes(&t), pack.id.0);
            let trailer_ok = trailer_of(&keys, "p", &t).map(|e| e == entries).unwrap_or(false);
            let blobs_ok = entries.iter().all(|e| {
                let s = &t[e.offset as usize..(e.offset + e.stored_len) as usize];
                open_blob(&keys, "p", e, s).is_ok()
            });
            assert!(!(trailer_ok && blobs_ok), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn a_streamed_pack_is_the_same_pack() {
        let keys = Keys::derive(&MasterKey([5; 32]));
        let blobs: Vec<SealedBlob> = [b"one".to_vec(), vec![9u8; 70_000], b"three".to_vec()]
            .iter()
            .map(|b| seal_blob(&keys, keys.blob_id(b), BlobKind::Data, 1, b))
            .collect();
        let (mut whole, mut streamed, mut written) = (PackBuilder::new(1 << 20), PackBuilder::streaming(), Vec::new());
        for b in &blobs {
            whole.push(b);
            streamed.push(b);
            written.extend_from_slice(&b.sealed);
            assert_eq!(whole.len(), streamed.len());
        }
        let (whole, streamed) = (whole.finish(&keys), streamed.finish_streamed(&keys));
        written.extend_from_slice(&streamed.tail);
        assert_eq!(streamed.id.0, Id::of_bytes(&written));
        assert_eq!(streamed.len, written.len() as u64);
        assert_eq!(streamed.entries, whole.entries);
        assert_eq!(trailer_of(&keys, "p", &written).unwrap(), whole.entries);
    }
}
