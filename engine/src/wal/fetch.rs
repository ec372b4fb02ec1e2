//! `cairn wal fetch`: one archived WAL file back to where PostgreSQL wants it.
//!
//! "Not archived" ([`FetchOutcome::NotArchived`]) is only ever the answer
//! when the repository opened, the stanza exists and the manifest object is
//! absent. Every other failure is an error, which `restore_command` turns
//! into an exit status that stops recovery instead of ending it early.
//!
//! The file is written to a temporary name beside the destination, checked
//! (every piece authenticates and hashes to the id the manifest lists, and
//! the total size matches) and only then renamed into place, so
//! PostgreSQL never sees a partial or wrong file.
//!
//! It is not fsynced unless asked ([`Durability::Fsync`]): PostgreSQL makes
//! durable what it keeps. A file it keeps (`KeepFileRestoredFromArchive`
//! in `xlogarchive.c`) takes its `pg_wal` name through `durable_rename`,
//! which fsyncs the file before the rename and the directory after; a
//! file it only reads (`RECOVERYXLOG`) is fetched again after a crash.
//! The fsync of a 16 MiB segment was a quarter of a fetch's time (wal.py:
//! `dd conv=fsync` 16 ms against `cp` 6 ms), spent twice.

use crate::repofile::ObjectKey;
use crate::store::BackendExt as _;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::spool::Spool;
use super::window::Window;
use super::{get_named, load_stanza, manifest_key, validate_stanza, WalFileKind, WalManifest};
use crate::crypto::SEAL_OVERHEAD;
use crate::ordered::in_order;
use crate::pack::{open_authentic_into, open_blob_into};
use crate::repo::Repository;
use crate::{Error, Result};
use cairn_formats::pg::{SegmentSize, WalFileName};

/// Whether a delivered file is fsynced (with its directory) before the
/// fetch reports success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Renamed into place only: for PostgreSQL's `restore_command`, which
    /// fsyncs what it keeps (see the module documentation).
    Rename,
    /// Also fsynced, file and directory, for callers that keep the file
    /// themselves.
    Fsync,
}

/// What a fetch did.
#[derive(Debug, Clone, Serialize)]
pub enum FetchOutcome {
    /// The file was written to the destination (durable when asked).
    Delivered {
        /// Its kind.
        kind: WalFileKind,
        /// Its size.
        size: u64,
    },
    /// The archive does not have this file.
    NotArchived,
}

/// The timeline in a WAL file name's first eight hex digits.
fn timeline_of(name: &str) -> Result<u32> {
    let bad = || Error::InvalidInput(format!("{name:?} is not a WAL file name"));
    let t = name.get(..8).ok_or_else(bad)?;
    if !t.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) || name.contains('/') {
        return Err(bad());
    }
    match u32::from_str_radix(t, 16) {
        Ok(0) | Err(_) => Err(bad()),
        Ok(t) => Ok(t),
    }
}

/// How much of an archived file's content [`read_verified`] proves, beyond
/// every piece authenticating under the id the (authenticated) manifest
/// lists and the total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Each piece also hashes to its id, so the content is proven piece by
    /// piece (`wal fetch`).
    Pieces,
    /// That, and the file's BLAKE3 is recomputed (`wal verify`), which
    /// restore_command's latency budget does without.
    PiecesAndFile,
    /// Nothing is hashed: for the prefetcher, whose spooled copy is hashed
    /// whole against the manifest before it is ever served.
    Authentic,
}

/// Reads an archived file's content, verified as `check` says, passing it
/// on in order.
///
/// The pieces of one pack are read in order: from a local directory each
/// straight into its place in one buffer (so the pool starts opening the
/// first piece while the next is read), from a remote store with one ranged
/// request per pack. The pool opens them in parallel into a [`Window`], and
/// this thread hands each to `sink` as soon as it and those before it are
/// ready, between reads and after, so reading, decoding and writing overlap.
pub(crate) async fn read_verified(
    repo: &Repository,
    key: &str,
    m: &WalManifest,
    check: Check,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut hasher = blake3::Hasher::new();
    let mut window = Window::for_size(m.size, Path::new(key))?;
    let mut total = 0u64;
    let mut i = 0;
    while i < m.pieces.len() {
        // Pieces of one pack, at most a window of plaintext.
        let pack = &m.pieces[i].pack;
        let mut entries = Vec::new();
        let mut raw = 0usize;
        for p in m.pieces[i..].iter().take_while(|p| &p.pack == pack) {
            let (pid, e) = p.entry().ok_or_else(|| Error::corrupt(key, None, "malformed piece reference"))?;
            if !entries.is_empty() && raw + e.raw_len as usize > window.capacity() {
                break;
            }
            // Bounds the buffers: no blob is stored in more bytes than zstd's
            // worst case and the seal.
            if e.stored_len as usize > zstd::zstd_safe::compress_bound(e.raw_len as usize) + SEAL_OVERHEAD {
                return Err(Error::corrupt(key, None, "a piece is stored in more bytes than its plaintext and seal"));
            }
            raw += e.raw_len as usize;
            entries.push((pid, e));
        }
        if raw > window.capacity() {
            return Err(Error::corrupt(key, None, format!("a piece of {raw} bytes is larger than a WAL piece")));
        }
        let object = ObjectKey::Pack(entries[0].0).to_string();
        let local = repo.store().open_local(&object)?;
        let (remote, mut sealed_buf) = match &local {
            Some(_) => {
                let stored = entries.iter().map(|(_, e)| e.stored_len as usize).sum();
                (None, Some(Window::with_len(stored, Path::new(&object))?))
            }
            None => {
                let start = u64::from(entries.iter().map(|(_, e)| e.offset).min().unwrap_or(0));
                let end =
                    entries.iter().map(|(_, e)| u64::from(e.offset) + u64::from(e.stored_len)).max().unwrap_or(start);
                // One request covers the pieces because they are contiguous.
                if end - start != entries.iter().map(|(_, e)| u64::from(e.stored_len)).sum::<u64>() {
                    return Err(Error::corrupt(key, None, "the pieces of one pack are not contiguous"));
                }
                (Some((start, repo.store().get_range(&object, start..end).await?)), None)
            }
        };
        let keys = repo.keys();
        let (object, entries, local, remote) = (&object, &entries, &local, &remote);
        let (hasher, sink, total) = (&mut hasher, &mut sink, &mut total);
        let (window, sealed_buf) = (&mut window, &mut sealed_buf);
        tokio::task::block_in_place(move || {
            in_order(|opening| -> Result<()> {
                // Hands on, in order, an opened piece.
                let mut deliver = |r: Result<&[u8]>| -> Result<()> {
                    let piece = r?;
                    if check == Check::PiecesAndFile {
                        hasher.update(piece);
                    }
                    *total += piece.len() as u64;
                    sink(piece)
                };
                let mut rest: &mut [u8] = window.as_mut_slice();
                let mut sealed_rest: &mut [u8] = sealed_buf.as_mut().map(|w| w.as_mut_slice()).unwrap_or_default();
                for (_, e) in entries.iter() {
                    let (slot, tail) = std::mem::take(&mut rest).split_at_mut(e.raw_len as usize);
                    rest = tail;
                    let sealed: &[u8] = match (local, remote) {
                        (Some(obj), _) => {
                            let (buf, tail) = std::mem::take(&mut sealed_rest).split_at_mut(e.stored_len as usize);
                            sealed_rest = tail;
                            obj.read_at(buf, u64::from(e.offset))?;
                            buf
                        }
                        (None, Some((start, bytes))) => {
                            let s = (u64::from(e.offset) - start) as usize;
                            bytes.get(s..s + e.stored_len as usize).unwrap_or_default()
                        }
                        (None, None) => unreachable!("a pack is either local or fetched"),
                    };
                    opening.spawn(move || {
                        let r = match check {
                            Check::Authentic => open_authentic_into(keys, object, e, sealed, slot),
                            Check::Pieces | Check::PiecesAndFile => open_blob_into(keys, object, e, sealed, slot),
                        };
                        r.map(|()| &*slot)
                    });
                    opening.take_ready(&mut deliver)?;
                }
                opening.take_all(deliver)
            })
        })?;
        i += entries.len();
    }
    if total != m.size || (check == Check::PiecesAndFile && hasher.finalize().to_hex().as_str() != m.blake3) {
        return Err(Error::corrupt(
            key,
            None,
            format!("content does not match the manifest (size {total}, manifest says {})", m.size),
        ));
    }
    Ok(())
}

/// Fetches WAL file `name` of `stanza` to `dest`, from `spool` when a
/// prefetcher already put a copy there that checks out against the manifest
/// (size and whole-file BLAKE3, compared when it is served).
pub async fn fetch(
    repo: &Repository,
    stanza: &str,
    name: &str,
    dest: &Path,
    spool: Option<&Spool>,
    durability: Durability,
) -> Result<FetchOutcome> {
    validate_stanza(stanza)?;
    let key = manifest_key(stanza, timeline_of(name)?, name);
    let m = match get_named::<WalManifest>(repo, &key).await? {
        Some(m) => m,
        None => {
            // "Not archived" only for a stanza that exists: a typo in the stanza
            // must stop recovery, not end it.
            let Some(record) = load_stanza(repo, stanza).await? else {
                return Err(Error::UnknownStanza {
                    stanza: stanza.to_string(),
                    location: repo.store().location().to_string(),
                });
            };
            if !super::ahead::is_segment_name(name) {
                return Ok(FetchOutcome::NotArchived);
            }
            let size = SegmentSize::new(u64::from(record.segment_size))
                .map_err(|e| Error::corrupt(super::stanza_key(stanza), None, e.to_string()))?;
            if let Ok(WalFileName::Segment(seg)) = WalFileName::parse(name, size) {
                if let Some(seg) = super::stream::StreamSegment::load(repo, stanza, seg, size, 1).await? {
                    return streamed(seg.bytes(), size.bytes().into(), dest, durability);
                }
            }
            // `pg receive` deletes a `.stream` only once the segment's own
            // manifest is durable: a completion between the two reads
            // above left neither, and answering "not archived" would end
            // recovery short of acknowledged commits. Look again.
            match get_named::<WalManifest>(repo, &key).await? {
                Some(m) => m,
                None => return Ok(FetchOutcome::NotArchived),
            }
        }
    };
    if m.name != name {
        return Err(Error::corrupt(&key, None, format!("manifest names {:?}", m.name)));
    }
    if let Some(s) = spool {
        if s.take(&key, &m, dest, durability).await? {
            return Ok(FetchOutcome::Delivered { kind: m.kind, size: m.size });
        }
    }
    let tmp = temp_path(dest)?;
    let first = to_temp(repo, &key, &m, &tmp, durability).await;
    match (first, repo.store().fallback()) {
        (Err(e @ Error::Corrupt { .. }), Some(f)) => from_another_copy(repo, f, &key, &m, &tmp, durability, e).await?,
        (r, _) => r?,
    }
    if let Err(e) = deliver_from(&tmp, dest, durability) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(FetchOutcome::Delivered { kind: m.kind, size: m.size })
}

/// A streamed segment (`wal/stream.rs`): its received bytes (verified
/// when read: the `.stream` manifest's pieces and BLAKE3, the journal's
/// records), then zeros up to the segment size, as PostgreSQL reads a
/// segment whose end was never written (recovery stops at the last whole
/// record).
fn streamed(bytes: &[u8], segment_size: u64, dest: &Path, durability: Durability) -> Result<FetchOutcome> {
    let tmp = temp_path(dest)?;
    let written = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.set_len(segment_size)?;
        match durability {
            Durability::Fsync => f.sync_all(),
            Durability::Rename => Ok(()),
        }
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = deliver_from(&tmp, dest, durability) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(FetchOutcome::Delivered { kind: WalFileKind::Partial, size: segment_size })
}

/// The verified content of `m` in the new file `tmp` (removed on failure).
async fn to_temp(repo: &Repository, key: &str, m: &WalManifest, tmp: &Path, durability: Durability) -> Result<()> {
    match durability {
        Durability::Fsync => fetch_to_temp(repo, key, m, tmp, Check::Pieces).await,
        Durability::Rename => write_temp(repo, key, m, tmp, Check::Pieces, durability).await.map(drop),
    }
}

/// A file whose content failed verification when read through the
/// [`crate::store::Fallback`]: read again from each of its stores alone, a
/// bad copy reported, the first good one kept. When every copy fails, the
/// first error stands.
async fn from_another_copy(
    repo: &Repository,
    f: &crate::store::Fallback,
    key: &str,
    m: &WalManifest,
    tmp: &Path,
    durability: Durability,
    first: Error,
) -> Result<()> {
    for (i, member) in f.members().iter().enumerate() {
        match to_temp(&repo.reading_from(member.clone()), key, m, tmp, durability).await {
            Ok(()) => {
                f.count(i, m.size);
                return Ok(());
            }
            Err(Error::Corrupt { object, offset, detail }) => f.report_corrupt(i, &object, offset, detail),
            Err(e) => tracing::debug!(store = %member.location(), error = %e, "no other copy of {key} here"),
        }
    }
    Err(first)
}

fn temp_path(dest: &Path) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidInput(format!("{}: not a file path", dest.display())))?;
    Ok(dest.with_file_name(format!(".{name}.cairn-{}-{:08x}.tmp", std::process::id(), rand::random::<u32>())))
}

/// Writes the content of `m`, verified as `check` says, to a new file `tmp`
/// and fsyncs it; removes `tmp` on failure.
pub(crate) async fn fetch_to_temp(
    repo: &Repository,
    key: &str,
    m: &WalManifest,
    tmp: &Path,
    check: Check,
) -> Result<()> {
    let f = write_temp(repo, key, m, tmp, check, Durability::Fsync).await?;
    let r = f.sync_all().map_err(|e| Error::io(tmp, e));
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    r
}

/// [`fetch_to_temp`] up to the fsync, which is the caller's: the written
/// file. Removes `tmp` on failure. Writeback is started as the file is
/// written when it is to be fsynced.
pub(crate) async fn write_temp(
    repo: &Repository,
    key: &str,
    m: &WalManifest,
    tmp: &Path,
    check: Check,
    durability: Durability,
) -> Result<std::fs::File> {
    let r = async {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| Error::io(tmp, e))?;
        let mut written = 0u64;
        read_verified(repo, key, m, check, |piece| {
            f.write_all(piece).map_err(|e| Error::io(tmp, e))?;
            if durability == Durability::Fsync {
                crate::store::start_writeback(&f, written, piece.len());
            }
            written += piece.len() as u64;
            Ok(())
        })
        .await?;
        Ok(f)
    }
    .await;
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    r
}

/// Moves a complete file to `dest` (copying when `dest` is on another
/// file system); with [`Durability::Fsync`], `src` must be fsynced and the
/// new name is made durable.
pub(crate) fn deliver_from(src: &Path, dest: &Path, durability: Durability) -> Result<()> {
    if let Err(e) = std::fs::rename(src, dest) {
        if e.kind() != std::io::ErrorKind::CrossesDevices {
            return Err(Error::io(dest, e));
        }
        let tmp = temp_path(dest)?;
        let copied = std::fs::copy(src, &tmp).and_then(|_| match durability {
            Durability::Fsync => std::fs::File::open(&tmp)?.sync_all(),
            Durability::Rename => Ok(()),
        });
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&tmp, e));
        }
        if let Err(e) = std::fs::rename(&tmp, dest) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(dest, e));
        }
        let _ = std::fs::remove_file(src);
    }
    if durability == Durability::Fsync {
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}
