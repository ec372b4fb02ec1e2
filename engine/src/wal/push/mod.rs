//! `cairn wal push`: one WAL file into the archive, acknowledged only when
//! durable.
//!
//! Order of work, each step a gate for the next:
//! 1. If the name is already archived (its manifest exists), the file is only
//!    hashed: identical content succeeds without writing, different content
//!    is refused ([`Error::Conflict`]) and the stored copy is untouched. This
//!    is the path `archive_command` takes for files `--ahead` pushed
//!    without a receipt that still matches (see `receipt.rs`), so it reads
//!    only the manifest to decide; identical content then reads the stanza
//!    record to finish step 4's catalogue step (a retry after a push died
//!    between its manifest and that step).
//! 2. The name must be a WAL file name; a segment's long page header must
//!    agree with the stanza (system id, segment size, page size, version) and
//!    its size must be the segment size.
//! 3. Otherwise the file is read once into a window (`window.rs`), 16 MiB at a time:
//!    scanned for facts on this thread while the pool seals its pieces and
//!    hashes it; the pack is written durably, then the manifest create-only.
//! 4. The catalogue (`catseg.rs`): the catalogue segment of the file's group,
//!    if one exists, is deleted (one `HEAD`, 4 ms per push on moto); the
//!    push 8 segments into a group writes the previous group's (a listing
//!    and its 256 manifests read: 15 ms on a local repository, 0.8 s on
//!    moto, once per 256 pushes; a failure there never fails the push).

pub(crate) mod identify;
mod seal;

use crate::repofile::ObjectKey;
use crate::store::{Backend as _, BackendExt as _};
use std::fs::File;
use std::path::Path;

use serde::Serialize;

use super::pack_out::{DonePack, PackBody};
use super::receipt::FileStamp;
use super::window::{hash_file, merge_piece_hashes, read_full, Window};
use super::{
    get_named, load_stanza, manifest_key, manifest_key_of, seal_named, validate_stanza, Piece, WalFileKind,
    WalManifest, PIECE, WAL_MANIFEST_VERSION,
};
use crate::repo::Repository;
use crate::{Error, Result};
use identify::{first_of_stanza, identify};
use seal::{describe, Reading};

/// How to push.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PushOptions {
    /// zstd level for the pieces.
    pub compression_level: i32,
    /// Refuse to open the file through a symbolic link (`O_NOFOLLOW`); the
    /// background pusher sets it.
    pub no_follow: bool,
}

/// zstd level for WAL. On pgbench WAL, level 1 stores within about 1 % of
/// level 2 and 3 at a third less CPU, and archive_command latency is what
/// matters here (see benches/peers/wal.py).
pub const DEFAULT_WAL_COMPRESSION_LEVEL: i32 = 1;

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions { compression_level: DEFAULT_WAL_COMPRESSION_LEVEL, no_follow: false }
    }
}

impl PushOptions {
    /// Pieces compressed at zstd `level`.
    pub fn with_compression(mut self, level: i32) -> PushOptions {
        self.compression_level = level;
        self
    }

    /// Refuses to open the file through a symbolic link.
    pub fn no_follow(mut self) -> PushOptions {
        self.no_follow = true;
        self
    }
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The file name.
    pub name: String,
    /// Its kind.
    pub kind: WalFileKind,
    /// Its size.
    pub size: u64,
    /// True when the same content was already archived (nothing written).
    pub already_archived: bool,
    /// Bytes written to the store (pack and manifest).
    pub stored_bytes: u64,
    /// The manifest's key.
    pub object: String,
    /// The file's BLAKE3 (hex), as the manifest records it.
    pub blake3: String,
    /// True when `wal push --ahead`'s pusher stored the file and this call
    /// accepted its receipt instead of hashing the file (see
    /// `receipt.rs`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub receipt: bool,
    /// The stamp of the file as stored, when it provably did not change
    /// while it was read; what a receipt records.
    #[serde(skip)]
    pub stamp: Option<FileStamp>,
}

impl PushReport {
    /// The report for `name`, found archived under `object` with the same
    /// size and BLAKE3: nothing was written.
    pub(crate) fn already_archived(name: String, size: u64, object: String, blake3: String) -> PushReport {
        let kind = kind_of(&name);
        PushReport {
            name,
            kind,
            size,
            already_archived: true,
            stored_bytes: 0,
            object,
            blake3,
            receipt: false,
            stamp: None,
        }
    }
}

/// The kind of a WAL file from its name's suffix.
pub fn kind_of(name: &str) -> WalFileKind {
    if name.ends_with(".partial") {
        WalFileKind::Partial
    } else if name.ends_with(".history") {
        WalFileKind::History
    } else if name.ends_with(".backup") {
        WalFileKind::Backup
    } else {
        WalFileKind::Segment
    }
}

fn open_file(path: &Path, no_follow: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    if no_follow {
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path).map_err(|e| Error::io(path, e))
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Archives the WAL file at `path` under `stanza`. Returns only once the
/// file is durable in the store (or already was).
pub async fn push(repo: &Repository, stanza: &str, path: &Path, opts: &PushOptions) -> Result<PushReport> {
    validate_stanza(stanza)?;
    // Starts the pool's threads while the repository is read.
    rayon::spawn(|| ());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidInput(format!("{}: not a WAL file name", shown(path))))?
        .to_string();
    let kind = kind_of(&name);
    let opened = std::time::SystemTime::now();
    let mut file = open_file(path, opts.no_follow)?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    let size = meta.len();

    // Step 1: already archived? The manifest's key needs only the timeline in the
    // name, so this path reads nothing else from the repository: identical
    // bytes were checked against the stanza when they were stored, and
    // different bytes are refused whatever their header says.
    if let Some(key) = manifest_key_of(stanza, &name) {
        if let Some(existing) = get_named::<WalManifest>(repo, &key).await? {
            // The handle opened above (with O_NOFOLLOW for the pusher), not the path again.
            let hash = tokio::task::block_in_place(|| hash_file(&file, path, size))?;
            let r = same_or_conflict(&existing, &key, size, &hash, path, name)?;
            // Another process may have linked it and not yet fsynced it.
            repo.store().sync_existing(&key).await?;
            super::catseg::after_existing(repo, stanza, &r.name).await?;
            return Ok(r);
        }
    }

    // Step 2: the first piece alone first: its header decides whether to go on.
    let record = load_stanza(repo, stanza).await?;
    let mut window = Window::for_size(size, path)?;
    let head_len = PIECE.min(window.capacity());
    let pre_read = read_full(&mut file, &mut window.as_mut_slice()[..head_len], path)?;
    let id = identify(window.data(pre_read), kind, size, &name, record.as_ref(), path)?;
    let key = manifest_key(stanza, id.name.timeline(), &name);
    tracing::debug!(%key, "checked header and name");

    // Step 3: read once; scan here, seal and hash on the pool.
    let read = Reading { repo, file: &mut file, path, size, level: wal_zstd(opts.compression_level) };
    let sealed = read.seal(&mut window, pre_read, &id)?;
    let changed = || Error::Input {
        offset: sealed.read_bytes,
        source: std::io::Error::other(format!("{} changed while it was read ({size} bytes before)", shown(path))),
    };
    if sealed.read_bytes != size {
        return Err(changed());
    }
    let stamp = file.metadata().ok().and_then(|after| FileStamp::settled(&meta, &after, opened));
    let hash = merge_piece_hashes(&sealed.piece_hashes, size).ok_or_else(changed)?.to_hex().to_string();
    tracing::debug!(packs = sealed.packs.len(), "read, scanned and sealed");

    // Step 4: the manifest's facts, the stanza record with the first
    // segment, then packs durable and the manifest last: it is the commit.
    let mut manifest = WalManifest {
        version: WAL_MANIFEST_VERSION,
        name: name.clone(),
        kind,
        size,
        blake3: hash.clone(),
        pushed: chrono::Utc::now().to_rfc3339(),
        host: crate::hostname(),
        pieces: Vec::new(),
        facts: None,
        history: None,
        backup: None,
    };
    describe(&mut manifest, sealed.scanner, &sealed.text, &id, path)?;
    if let (None, Some(h)) = (&record, &id.header) {
        first_of_stanza(repo, stanza, h, path).await?;
    }
    let packs_started = boottime();
    let (mut stored, pack_keys) = store_packs(repo, sealed.packs, &mut manifest).await?;
    tracing::debug!(stored, "packs durable");
    refresh_if_old(repo, &pack_keys, packs_started).await?;
    let sealed = seal_named(repo, &key, &manifest);
    stored += sealed.len() as u64;
    match repo.store().put_create(&key, sealed).await {
        Ok(()) => {
            let group = super::catseg::group_of(&id.name, id.seg_size).map(|g| (stanza, g, id.seg_size));
            confirm_if_slow(repo, &key, &pack_keys, packs_started, group).await?;
            super::catseg::after_push(repo, stanza, &id.name, id.seg_size).await?;
            Ok(PushReport {
                name,
                kind,
                size,
                already_archived: false,
                stored_bytes: stored,
                object: key,
                blake3: hash,
                receipt: false,
                stamp,
            })
        }
        Err(Error::AlreadyExists { .. }) => {
            // Another push of the same name won the race.
            let existing =
                get_named::<WalManifest>(repo, &key).await?.ok_or_else(|| Error::NotFound { what: key.clone() })?;
            let r = same_or_conflict(&existing, &key, size, &hash, path, name)?;
            repo.store().sync_existing(&key).await?;
            Ok(r)
        }
        Err(e) => Err(e),
    }
}

/// Step 4's packs: each made durable, its pieces listed in the manifest in
/// order. Returns the bytes stored and the packs' keys.
async fn store_packs(
    repo: &Repository,
    packs: Vec<DonePack>,
    manifest: &mut WalManifest,
) -> Result<(u64, Vec<String>)> {
    let mut stored = 0u64;
    let mut pack_keys = Vec::new();
    for p in packs {
        stored += p.len;
        manifest.pieces.extend(Piece::of_entries(p.id, &p.entries));
        let pkey = ObjectKey::Pack(p.id).to_string();
        match p.body {
            PackBody::Staged(s) => tokio::task::block_in_place(|| s.commit(&pkey))?,
            PackBody::Bytes(b) => repo.store().put(&pkey, b).await?,
        }
        pack_keys.push(pkey);
    }
    Ok((stored, pack_keys))
}

/// Garbage collection never condemns a pack younger than
/// [`crate::gc::min_age`] on the store's clock, and a push takes no lease:
/// so the manifest must follow its packs well within that age. If this
/// push was held up for half of it (a paused process, a stalled network),
/// its packs are written again first (same bytes, same names, a fresh
/// store time); one already collected fails the push, and PostgreSQL
/// retries it from the start.
async fn refresh_if_old(repo: &Repository, keys: &[String], since: std::time::Duration) -> Result<()> {
    if boottime().saturating_sub(since) < crate::gc::min_age(repo) / 2 {
        return Ok(());
    }
    for k in keys {
        let bytes = match repo.store().get(k).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::Precondition {
                    what: format!("{k} (collected while this push was held up; it must be pushed again)"),
                })
            }
            Err(e) => return Err(e),
        };
        repo.store().put(k, bytes).await?;
    }
    Ok(())
}

/// The time since boot, suspend included (a laptop asleep is a pause too).
fn boottime() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// When the push was held up between its first pack and its manifest (for
/// a quarter of the minimum age), a prune may have condemned the packs
/// before the manifest existed to protect them, and its sweep may already
/// have decided to delete them. Then the push checks, after the manifest
/// is durable: a pack that is gone, or condemned by a generation still
/// pending, withdraws the manifest and fails the push, which PostgreSQL
/// retries with fresh packs. A pack neither gone nor condemned now is safe:
/// every later condemnation lists the manifest first.
///
/// A withdrawal is a deletion: the catalogue segment of the manifest's
/// `group` goes, and the stanza's change marker is rewritten (see
/// `catseg.rs`).
async fn confirm_if_slow(
    repo: &Repository,
    key: &str,
    packs: &[String],
    since: std::time::Duration,
    group: Option<(&str, (u32, u64), cairn_formats::pg::SegmentSize)>,
) -> Result<()> {
    if boottime().saturating_sub(since) < crate::gc::min_age(repo) / 4 {
        return Ok(());
    }
    let view = crate::gc::GcView::read(repo).await?;
    for k in packs {
        let condemned =
            ObjectKey::parse(k).is_some_and(|o| matches!(o, ObjectKey::Pack(p) if view.excluded.contains(&p)));
        let missing = !repo.store().exists(k).await?;
        if condemned || missing {
            repo.store().delete(key).await?;
            if let Some((stanza, g, size)) = group {
                super::catseg::forget_groups(repo, stanza, &[g], size).await?;
                super::catseg::mark_changed(repo, stanza).await?;
            }
            return Err(Error::Precondition {
                what: format!("{k} (collected while this push was held up; {key} withdrawn, push it again)"),
            });
        }
    }
    Ok(())
}

/// zstd settings for WAL pieces. At level 1 (the default), a 4096-entry hash
/// table (`hashLog` 12, the level's default being larger): on pgbench WAL
/// in 2 MiB pieces it compressed 8–9 % faster with the same ratio (`zstd -b1
/// -B2M --zstd=hlog=12`: 848 against 779 MB/s, ×5.247 against ×5.240), and
/// `wal push` used 1.4 ms less CPU per segment.
fn wal_zstd(level: i32) -> crate::compress::Zstd {
    crate::compress::Zstd { level, hash_log: (level == 1).then_some(12) }
}

fn same_or_conflict(
    existing: &WalManifest,
    key: &str,
    size: u64,
    hash: &str,
    path: &Path,
    name: String,
) -> Result<PushReport> {
    if existing.size == size && existing.blake3 == hash {
        return Ok(PushReport::already_archived(name, size, key.to_string(), hash.to_string()));
    }
    Err(Error::conflict(
        shown(path),
        format!(
            "{key} is already archived with different content (stored: {} bytes, BLAKE3 {}…; offered: {size} bytes, BLAKE3 {}…); the stored copy is unchanged",
            existing.size,
            &existing.blake3[..16.min(existing.blake3.len())],
            &hash[..16],
        ),
    ))
}
