//! `cairn wal push`: one WAL file into the archive, acknowledged only when
//! durable.
//!
//! Order of work, each step a gate for the next:
//! 1. If the name is already archived (its manifest exists), the file is only
//!    hashed: identical content succeeds without writing, different content
//!    is refused ([`Error::Conflict`]) and the stored copy is untouched. This
//!    is the path `archive_command` takes for files `--ahead` pushed
//!    without a receipt that still matches (see `receipt.rs`), so it reads
//!    only the manifest (not the stanza record).
//! 2. The name must be a WAL file name; a segment's long page header must
//!    agree with the stanza (system id, segment size, page size, version) and
//!    its size must be the segment size.
//! 3. Otherwise the file is read once into a [`Window`], 16 MiB at a time:
//!    scanned for facts on this thread while the pool seals its pieces and
//!    hashes it; the pack is written durably, then the manifest create-only.

use crate::repofile::ObjectKey;
use crate::store::{Backend as _, BackendExt as _};
use std::fs::File;
use std::path::Path;

use cairn_formats::pg::{parse_timeline_history, ScanOptions, SegmentHeader, SegmentScanner, SegmentSize, WalFileName};
use cairn_formats::repo::BlobKind;
use serde::Serialize;

use super::facts::{facts_of, parse_backup_history};
use super::pack_out::{DonePack, PackBody, PackOut};
use super::receipt::FileStamp;
use super::window::{hash_file, merge_piece_hashes, read_full, InOrder, PieceHash, Window};
use super::{
    get_named, load_stanza, manifest_key, manifest_key_of, seal_named, stanza_key, validate_stanza, HistoryLine, Piece,
    StanzaRecord, WalFileKind, WalManifest, PIECE, WAL_MANIFEST_VERSION,
};
use crate::pack::{seal_blob, SealedBlob};
use crate::repo::Repository;
use crate::{Error, Result};

/// History and backup history files are a few hundred bytes; anything this
/// large is not one.
const MAX_TEXT_FILE: u64 = 1 << 20;
const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;

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
    /// [`super::receipt`]).
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

/// Refuses a segment whose long header disagrees with the stanza.
fn check_against_stanza(rec: &StanzaRecord, h: &SegmentHeader, path: &Path) -> Result<()> {
    let mut diffs = Vec::new();
    if rec.system_id != h.system_id.to_string() {
        diffs.push(format!("system identifier {} (the stanza's is {})", h.system_id, rec.system_id));
    }
    if rec.segment_size != h.segment_size {
        diffs.push(format!("segment size {} (the stanza's is {})", h.segment_size, rec.segment_size));
    }
    if rec.block_size != h.block_size {
        diffs.push(format!("page size {} (the stanza's is {})", h.block_size, rec.block_size));
    }
    if rec.wal_magic != h.version.magic() {
        diffs.push(format!("WAL magic {:#06X} (the stanza's is {:#06X})", h.version.magic(), rec.wal_magic));
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(Error::conflict(
        shown(path),
        format!(
            "this WAL is from another cluster than stanza {:?} was created for: {}; nothing was stored",
            rec.stanza,
            diffs.join(", ")
        ),
    ))
}

fn new_record(stanza: &str, h: &SegmentHeader) -> StanzaRecord {
    StanzaRecord {
        version: WAL_MANIFEST_VERSION,
        stanza: stanza.to_string(),
        system_id: h.system_id.to_string(),
        segment_size: h.segment_size,
        block_size: h.block_size,
        wal_magic: h.version.magic(),
        postgresql: h.version.major(),
        created: chrono::Utc::now().to_rfc3339(),
        host: crate::hostname(),
    }
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
    let mut stored = 0u64;
    let packs_started = boottime();
    let mut pack_keys = Vec::new();
    for p in sealed.packs {
        stored += p.len;
        let pid = p.id.to_hex();
        manifest.pieces.extend(p.entries.iter().map(|e| Piece {
            pack: pid.clone(),
            id: hex::encode(e.id),
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            zstd: e.compression == cairn_formats::repo::Compression::Zstd,
        }));
        let pkey = ObjectKey::Pack(p.id).to_string();
        match p.body {
            PackBody::Staged(s) => tokio::task::block_in_place(|| s.commit(&pkey))?,
            PackBody::Bytes(b) => repo.store().put(&pkey, b).await?,
        }
        pack_keys.push(pkey);
    }
    tracing::debug!(stored, "packs durable");
    refresh_if_old(repo, &pack_keys, packs_started).await?;
    let sealed = seal_named(repo, &key, &manifest);
    stored += sealed.len() as u64;
    match repo.store().put_create(&key, sealed).await {
        Ok(()) => {
            confirm_if_slow(repo, &key, &pack_keys, packs_started).await?;
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
async fn confirm_if_slow(repo: &Repository, key: &str, packs: &[String], since: std::time::Duration) -> Result<()> {
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
            return Err(Error::Precondition {
                what: format!("{k} (collected while this push was held up; {key} withdrawn, push it again)"),
            });
        }
    }
    Ok(())
}

/// What step 2 learnt about a file from its name and first piece.
struct Identified {
    kind: WalFileKind,
    /// A segment's or partial's long page header.
    header: Option<SegmentHeader>,
    /// The cluster's segment size.
    seg_size: SegmentSize,
    name: WalFileName,
}

/// Step 2: what the file is (from its name and `first` piece), and whether
/// it belongs to the stanza that `record` describes.
fn identify(
    first: &[u8],
    kind: WalFileKind,
    size: u64,
    name: &str,
    record: Option<&StanzaRecord>,
    path: &Path,
) -> Result<Identified> {
    let header = match kind {
        WalFileKind::Segment | WalFileKind::Partial => {
            let h = SegmentHeader::parse(first).map_err(|e| Error::corrupt(shown(path), Some(0), e.to_string()))?;
            if let Some(rec) = record {
                check_against_stanza(rec, &h, path)?;
            }
            Some(h)
        }
        WalFileKind::History | WalFileKind::Backup => {
            if size > MAX_TEXT_FILE {
                return Err(Error::corrupt(
                    shown(path),
                    None,
                    format!("{size} bytes is too large for a {kind:?} file"),
                ));
            }
            None
        }
    };
    let seg_bytes = header.map(|h| h.segment_size).or(record.map(|r| r.segment_size)).unwrap_or(DEFAULT_SEGMENT_SIZE);
    let seg_size = SegmentSize::new(seg_bytes.into())
        .map_err(|e| Error::corrupt(shown(path), Some(0), format!("segment size: {e}")))?;
    let parsed =
        WalFileName::parse(name, seg_size).map_err(|e| Error::InvalidInput(format!("{}: {e}", shown(path))))?;
    match kind {
        WalFileKind::Segment if size != u64::from(seg_bytes) => {
            return Err(Error::corrupt(
                shown(path),
                None,
                format!("{size} bytes, but this cluster's segments are {seg_bytes} bytes"),
            ));
        }
        WalFileKind::Partial if size > u64::from(seg_bytes) => {
            return Err(Error::corrupt(shown(path), None, format!("{size} bytes, more than a segment ({seg_bytes})")));
        }
        _ => {}
    }
    Ok(Identified { kind, header, seg_size, name: parsed })
}

/// Step 3's inputs: the open file and how to seal it.
struct Reading<'a> {
    repo: &'a Repository,
    file: &'a mut File,
    path: &'a Path,
    size: u64,
    level: crate::compress::Zstd,
}

/// What step 3 produced.
struct Sealed {
    packs: Vec<DonePack>,
    read_bytes: u64,
    piece_hashes: Vec<PieceHash>,
    /// A segment's scan, to be finished.
    scanner: Option<SegmentScanner>,
    /// A history or backup history file's text.
    text: Vec<u8>,
}

impl Reading<'_> {
    /// Reads the file once into `window` (whose first `pre_read` bytes are
    /// already there), scanning each piece on this thread while the pool
    /// seals it and hashes it as a BLAKE3 subtree.
    fn seal(self, window: &mut Window, mut pre_read: usize, id: &Identified) -> Result<Sealed> {
        let Reading { repo, file, path, size, level } = self;
        let scan_opts = ScanOptions {
            start: id.name.segment().and_then(|s| s.start_lsn(id.seg_size)),
            timeline: Some(id.name.timeline()),
            system_id: id.header.map(|h| h.system_id),
            segment_size: Some(id.seg_size.bytes()),
            block_size: id.header.map(|h| h.block_size),
        };
        let mut scanner = id.header.map(|_| SegmentScanner::new(scan_opts));
        let mut text = Vec::new();
        let keys = repo.keys();
        let target = repo.config().pack_target as usize;
        let mut out = PackOut::new(repo, target, target.min(size as usize + 4096))?;
        let mut piece_hashes: Vec<PieceHash> = Vec::new();
        // Per window, one rayon scope: this thread reads the window piece by
        // piece and scans each piece while the pool seals it and hashes it as a
        // BLAKE3 subtree; between pieces, and at the end of the window, this
        // thread writes out the sealed pieces that are ready, in order, so
        // reading, scanning, hashing, compression and writing overlap.
        let mut next_index = 0usize;
        let mut read_bytes = 0u64;
        let mut eof = false;
        while !eof {
            tokio::task::block_in_place(|| {
                rayon::in_place_scope(|sc| -> Result<()> {
                    let (tx, rx) = std::sync::mpsc::channel::<(usize, SealedBlob, PieceHash)>();
                    let mut ready = InOrder::from(piece_hashes.len());
                    // Writes out, in order, the sealed pieces that are ready.
                    let mut write_ready = |ready: &mut InOrder<(SealedBlob, PieceHash)>| {
                        while let Some((b, h)) = ready.pop() {
                            out.push(keys, &b)?;
                            piece_hashes.push(h);
                        }
                        Ok::<(), Error>(())
                    };
                    let mut rest: &mut [u8] = window.as_mut_slice();
                    while !rest.is_empty() {
                        let at = PIECE.min(rest.len());
                        let (head, tail) = std::mem::take(&mut rest).split_at_mut(at);
                        rest = tail;
                        let want = head.len();
                        let n = match std::mem::take(&mut pre_read) {
                            0 => read_full(file, head, path)?,
                            n => n,
                        };
                        eof = n < want;
                        if n == 0 {
                            break;
                        }
                        let piece: &[u8] = &head[..n];
                        let i = next_index;
                        let seal = move || {
                            let h = PieceHash::of(piece, i, size);
                            (i, seal_blob(keys, keys.blob_id(piece), BlobKind::Data, level, piece), h)
                        };
                        // The window's last piece is sealed here, after the scan,
                        // rather than queued behind the pool's: this thread has
                        // nothing else left to do, and the pool finishes sooner.
                        let last = eof || rest.is_empty() || read_bytes + n as u64 >= size;
                        if !last {
                            let tx = tx.clone();
                            sc.spawn(move |_| {
                                let _ = tx.send(seal());
                            });
                        }
                        next_index += 1;
                        read_bytes += n as u64;
                        match scanner.as_mut() {
                            Some(s) => s.push(piece).map_err(|e| Error::corrupt(shown(path), None, e.to_string()))?,
                            None => text.extend_from_slice(piece),
                        }
                        if last {
                            let (i, b, h) = seal();
                            ready.insert(i, (b, h));
                            break;
                        }
                        rx.try_iter().for_each(|(i, b, h)| ready.insert(i, (b, h)));
                        write_ready(&mut ready)?;
                    }
                    drop(tx);
                    for (i, b, h) in rx {
                        ready.insert(i, (b, h));
                        write_ready(&mut ready)?;
                    }
                    write_ready(&mut ready)
                })
            })?;
        }
        let packs = out.finish(keys)?;
        Ok(Sealed { packs, read_bytes, piece_hashes, scanner, text })
    }
}

/// Fills in what the manifest records about the file's content: a
/// segment's scan facts, a history file's lines, a backup history file's
/// fields. A segment whose scan fails is refused; a partial one is archived
/// without facts.
fn describe(
    manifest: &mut WalManifest,
    scanner: Option<SegmentScanner>,
    text: &[u8],
    id: &Identified,
    path: &Path,
) -> Result<()> {
    match id.kind {
        WalFileKind::Segment | WalFileKind::Partial => {
            let scanner = scanner.expect("segments are scanned");
            match scanner.finish() {
                Ok(s) => manifest.facts = Some(facts_of(&s)),
                Err(e) if id.kind == WalFileKind::Segment => {
                    return Err(Error::corrupt(shown(path), None, e.to_string()));
                }
                Err(e) => tracing::warn!(file = %shown(path), error = %e, "partial segment: no facts recorded"),
            }
            if let Some(reason) = manifest.facts.as_ref().and_then(|f| f.stopped.as_ref()) {
                if id.kind == WalFileKind::Segment {
                    tracing::warn!(file = %shown(path), %reason, "valid WAL ends before the end of this segment; archived as is");
                }
            }
        }
        WalFileKind::History => {
            let lines = parse_timeline_history(text, Some(id.name.timeline()))
                .map_err(|e| Error::corrupt(shown(path), None, e.to_string()))?;
            manifest.history = Some(
                lines
                    .into_iter()
                    .map(|l| HistoryLine { timeline: l.timeline, switchpoint: l.switchpoint.0, reason: l.reason })
                    .collect(),
            );
        }
        WalFileKind::Backup => manifest.backup = Some(parse_backup_history(text)),
    }
    Ok(())
}

/// The stanza record comes with the stanza's first segment; a push that
/// lost the race to write it checks its header against the winner's.
async fn first_of_stanza(repo: &Repository, stanza: &str, h: &SegmentHeader, path: &Path) -> Result<()> {
    let rec = new_record(stanza, h);
    let skey = stanza_key(stanza);
    match repo.store().put_create(&skey, seal_named(repo, &skey, &rec)).await {
        Ok(()) => Ok(()),
        Err(Error::AlreadyExists { .. }) => {
            let now = load_stanza(repo, stanza).await?.ok_or_else(|| Error::NotFound { what: skey.clone() })?;
            check_against_stanza(&now, h, path)
        }
        Err(e) => Err(e),
    }
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
