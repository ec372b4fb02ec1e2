//! Moving packs byte for byte, and reading the trailers of packs the
//! target holds but does not index yet.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use cairn_formats::repo::{BlobEntry, PackEntries};
use futures::{StreamExt, TryStreamExt};

use super::CopyProgress;
use crate::ids::{Id, PackId};
use crate::pack::{read_trailer, trailer_of};
use crate::repo::Repository;
use crate::repofile::ObjectKey;
use crate::store::BackendExt as _;
use crate::{Error, Result};

/// Copies `packs` from `src` to `dst`, `transfers` at a time. Each pack
/// read is checked against its name (BLAKE3 of its bytes) and its trailer
/// opened, so a damaged source pack is reported, never copied; each write
/// returns once durable. Returns every pack's blob entries.
pub(super) async fn transfer(
    src: &Repository,
    dst: &Repository,
    packs: &BTreeMap<PackId, u64>,
    transfers: usize,
    progress: &CopyProgress,
) -> Result<Vec<(PackId, Vec<BlobEntry>)>> {
    futures::stream::iter(packs.keys().copied())
        .map(|pack| async move {
            let key = ObjectKey::Pack(pack).to_string();
            let bytes = src.store().get(&key).await?;
            if Id::of_bytes(&bytes) != pack.0 {
                return Err(Error::corrupt(&key, None, "content does not match its name (BLAKE3 mismatch)"));
            }
            let entries = trailer_of(src.keys(), &key, &bytes)?;
            let len = bytes.len() as u64;
            dst.store().put(&key, bytes).await?;
            progress.bytes.fetch_add(len, Ordering::Relaxed);
            progress.packs.fetch_add(1, Ordering::Relaxed);
            Ok((pack, entries))
        })
        .buffer_unordered(transfers.max(1))
        .try_collect()
        .await
}

/// The index entries of packs already in `dst` (two range reads each).
pub(super) async fn trailers(
    dst: &Repository,
    packs: &BTreeMap<PackId, u64>,
    transfers: usize,
) -> Result<Vec<PackEntries>> {
    futures::stream::iter(packs.iter().map(|(p, s)| (*p, *s)))
        .map(|(pack, size)| async move {
            let blobs = read_trailer(dst.store(), dst.keys(), &pack, size).await?;
            Ok(PackEntries { pack_id: pack.0 .0, pack_len: size, blobs })
        })
        .buffer_unordered(transfers.max(1))
        .try_collect()
        .await
}
