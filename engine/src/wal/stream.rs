//! Streamed segments: WAL received over the replication protocol
//! (`cairn pg receive`) made durable while its segment is still being
//! written.
//!
//! # Objects
//! While segment `S` of timeline `T` is being received, what has arrived
//! is kept at `wal/<stanza>/<T>/<S>.stream`: a WAL manifest of kind
//! `partial` named `<S>.stream`, sealed and bound to its key like every
//! WAL record, whose `size` is the bytes received from the start of the
//! segment and whose `facts` describe them. Each flush *overwrites* it
//! (an atomic, durable put): a later one always covers an earlier one.
//! When the segment is complete, the manifest `wal push` would write is
//! created at `wal/<stanza>/<T>/<S>` (create-only; one already there from
//! `archive_command` is accepted when its size and BLAKE3 agree, and
//! refused otherwise), and only then is the `.stream` object deleted: at
//! every moment one of them names the segment's packs.
//!
//! # Pieces: only new bytes are uploaded
//! A segment is cut into the same 2 MiB [`PIECE`]s as a push. A streamed
//! manifest lists the whole pieces received so far (each sealed once, when
//! its last byte arrived) and then *fragments* of the piece being filled:
//! one blob per flush, holding only the bytes that flush added. A flush
//! therefore uploads one small pack: the new fragment, plus any piece that
//! became whole (sealed again from its bytes, so its blob id is the one a
//! push computes); the fragments it replaces become garbage for `prune`
//! (they are younger than `gc.min_age` or named by no manifest).
//! The complete segment's manifest lists exactly a push's pieces: same
//! boundaries, same blob ids; only the packs differ, as they do between
//! any two pushes.
//!
//! # Serving
//! `wal fetch` of a segment that has no manifest but a `.stream` object
//! serves its bytes padded with zeros to the segment size, as
//! `pg_receivewal` leaves a `.partial` file: recovery reads the records up
//! to the end of what was received and ends there. Planning treats a
//! `.stream` object as the segment while the segment has no manifest.

use std::time::{Duration, Instant};

use cairn_formats::pg::{ScanOptions, SegmentName, SegmentScanner, SegmentSize, WalFileName};
use cairn_formats::repo::BlobKind;

use super::facts::facts_of;
use super::WAL_MANIFEST_VERSION;
use super::{get_named, manifest_key, seal_named, Piece, StanzaRecord, WalFileKind, WalManifest, PIECE};
use crate::pack::{seal_blob, PackBuilder};
use crate::repo::Repository;
use crate::repofile::ObjectKey;
use crate::store::{Backend as _, BackendExt as _};
use crate::{Error, Result};

/// The suffix of a streamed segment's object and manifest name.
pub const STREAM_SUFFIX: &str = ".stream";

/// The key of segment `name`'s streamed manifest.
pub fn stream_key(stanza: &str, timeline: u32, name: &str) -> String {
    manifest_key(stanza, timeline, &format!("{name}{STREAM_SUFFIX}"))
}

/// The segment name of a streamed manifest's name (`<segment>.stream`).
pub fn segment_of_stream(name: &str) -> Option<&str> {
    name.strip_suffix(STREAM_SUFFIX).filter(|s| super::ahead::is_segment_name(s))
}

/// `archived` (parsed WAL file names and their manifests) with each
/// streamed segment of `streams` added as its segment, when the segment
/// has no manifest of its own: what planning reads (its kind stays
/// `partial`, its facts cover what was received).
pub(crate) fn with_streamed(
    mut archived: Vec<(WalFileName, WalManifest)>,
    streams: Vec<WalManifest>,
    size: SegmentSize,
) -> Vec<(WalFileName, WalManifest)> {
    let whole: std::collections::HashSet<SegmentName> = archived
        .iter()
        .filter_map(|(n, _)| match n {
            WalFileName::Segment(s) => Some(*s),
            _ => None,
        })
        .collect();
    for m in streams {
        let Some(seg) = segment_of_stream(&m.name) else { continue };
        if let Ok(WalFileName::Segment(s)) = WalFileName::parse(seg, size) {
            if !whole.contains(&s) {
                archived.push((WalFileName::Segment(s), m));
            }
        }
    }
    archived
}

/// Views of the stanza's segments whose journal holds more than their
/// `.stream` manifest ([`StreamSegment::view`]: what was received, with
/// its facts), dated when the journal was last written. Planning, `wal
/// show` and `status` read them in place of the `.stream` manifests
/// ([`merge_views`]), so a commit acknowledged by a synchronous receiver
/// is restored even before the next `.stream` flush.
pub(crate) async fn journal_views(repo: &Repository, stanza: &str, size: SegmentSize) -> Result<Vec<WalManifest>> {
    let mut out = Vec::new();
    if !may_hold_journals(repo) {
        return Ok(out);
    }
    let prefix = format!("{}/{stanza}", crate::repofile::Kind::WalJournal.prefix());
    for o in repo.store().list(&prefix).await? {
        let Some(ObjectKey::WalJournal { segment, .. }) = ObjectKey::parse(&o.key) else { continue };
        let Ok(WalFileName::Segment(n)) = WalFileName::parse(&segment, size) else { continue };
        let Some(seg) = StreamSegment::load(repo, stanza, n, size, 1).await? else { continue };
        if seg.has_unmanifested() {
            let mut view = seg.view();
            view.pushed = chrono::DateTime::<chrono::Utc>::from(o.modified).to_rfc3339();
            out.push(view);
        }
    }
    Ok(out)
}

/// Whether the repository is a local directory, or read through one
/// ([`crate::store::Fallback`] members): journals exist only there, and
/// other stores are spared the requests (and prefixes their credentials
/// may not allow).
fn may_hold_journals(repo: &Repository) -> bool {
    let s = repo.store();
    s.local_root().is_some() || s.members().iter().any(|m| m.local_root().is_some())
}

/// `streams` with each view of [`journal_views`] in place of the manifest
/// of the same name.
pub(crate) fn merge_views(streams: &mut Vec<WalManifest>, views: Vec<WalManifest>) {
    for v in views {
        if streams.iter().any(|m| m.name == v.name && m.size >= v.size) {
            continue;
        }
        streams.retain(|m| m.name != v.name);
        streams.push(v);
    }
}

/// What one flush or completion did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flushed {
    /// Bytes uploaded (pack and manifest).
    pub stored_bytes: u64,
    /// How long the uploads took.
    pub took: Duration,
}

/// The segment being received: its bytes so far, and what of them is
/// durable in the repository.
pub struct StreamSegment {
    stanza: String,
    name: SegmentName,
    size: SegmentSize,
    data: Vec<u8>,
    hasher: blake3::Hasher,
    scanner: SegmentScanner,
    /// The pieces of the last durable `.stream` manifest: `stored[..whole]`
    /// are whole pieces, the rest fragments of the piece being filled.
    stored: Vec<Piece>,
    whole: usize,
    durable: u64,
    level: i32,
    /// The version of the `.stream` object this receiver wrote or resumed
    /// from; `None` while there is none. Each flush replaces exactly that
    /// version, so a second receiver on the stanza cannot shorten what
    /// this one reported durable without the next flush failing.
    version: Option<crate::store::Version>,
    /// The segment's journal, once [`StreamSegment::flush_to_journal`]
    /// created it.
    journal: Option<super::journal::Writer>,
    /// Bytes from the segment's start durable in the journal.
    journaled: u64,
}

fn zstd(level: i32) -> crate::compress::Zstd {
    crate::compress::Zstd { level, hash_log: (level == 1).then_some(12) }
}

impl StreamSegment {
    /// An empty segment `name`, to be received from its first byte.
    pub fn new(stanza: &str, name: SegmentName, size: SegmentSize, level: i32) -> StreamSegment {
        let start = name.start_lsn(size).map(|l| l.0).unwrap_or(0);
        let scanner = SegmentScanner::new(ScanOptions {
            start: Some(cairn_formats::pg::Lsn(start)),
            timeline: Some(name.timeline),
            system_id: None,
            segment_size: Some(size.bytes()),
            block_size: None,
        });
        StreamSegment {
            stanza: stanza.to_string(),
            name,
            size,
            data: Vec::with_capacity(size.bytes() as usize),
            hasher: blake3::Hasher::new(),
            scanner,
            stored: Vec::new(),
            whole: 0,
            durable: 0,
            level,
            version: None,
            journal: None,
            journaled: 0,
        }
    }

    /// The segment as the repository holds it: the bytes of its `.stream`
    /// manifest, read back and verified, then what its journal holds past
    /// them ([`super::journal`]); `None` when it has neither. The journal is
    /// read first: a segment completed in between leaves the caller with
    /// no `.stream` manifest (and the segment's own manifest), never with a
    /// manifest whose journal is gone.
    pub async fn load(
        repo: &Repository,
        stanza: &str,
        name: SegmentName,
        size: SegmentSize,
        level: i32,
    ) -> Result<Option<StreamSegment>> {
        let file = name.format(size);
        let key = stream_key(stanza, name.timeline, &file);
        let jkey = super::journal::key(stanza, name.timeline, &file);
        let journal = match may_hold_journals(repo) {
            false => None,
            true => match repo.store().get(&jkey).await {
                Ok(bytes) => Some(super::journal::read(repo.keys(), &jkey, &bytes)?),
                Err(Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        // The version first: a change after it fails this receiver's next
        // flush instead of being overwritten.
        let version = match repo.store().head(&key).await {
            Ok(meta) => Some(meta.version),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let manifest = match version {
            Some(_) => get_named::<WalManifest>(repo, &key).await?,
            None => None,
        };
        if manifest.is_none() && journal.is_none() {
            return Ok(None);
        }
        if manifest.is_none() {
            // A journal but no `.stream` manifest: a segment completed since
            // the journal was read has its own manifest, and the journal
            // alone may hold only its end. The segment is whole, not streamed.
            match repo.store().head(&manifest_key(stanza, name.timeline, &file)).await {
                Ok(_) => return Ok(None),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut seg = StreamSegment::new(stanza, name, size, level);
        if let Some(m) = manifest {
            if m.name != format!("{file}{STREAM_SUFFIX}") || m.size > u64::from(size.bytes()) {
                return Err(Error::corrupt(&key, None, format!("manifest names {:?} of {} bytes", m.name, m.size)));
            }
            seg.version = version;
            let mut bytes = Vec::with_capacity(m.size as usize);
            super::fetch::read_verified(repo, &key, &m, super::fetch::Check::PiecesAndFile, |p| {
                bytes.extend_from_slice(p);
                Ok(())
            })
            .await?;
            seg.append(&bytes).map_err(|e| Error::corrupt(&key, None, e.to_string()))?;
            // Whole pieces come first, fragments (each shorter than a piece)
            // after; any other layout is stored again at the next flush.
            let whole = m.pieces.iter().take_while(|p| p.raw_len as usize == PIECE).count();
            if whole == m.size as usize / PIECE && m.pieces[whole..].iter().all(|p| (p.raw_len as usize) < PIECE) {
                seg.whole = whole;
                seg.stored = m.pieces;
                seg.durable = m.size;
            }
        }
        if let Some(j) = journal {
            if j.torn {
                tracing::debug!(journal = %jkey, records = j.records.len(), "journal read up to an incomplete record");
            }
            let more = super::journal::tail(seg.data.len(), &j.records, size.bytes() as usize);
            seg.append(&more).map_err(|e| Error::corrupt(&jkey, None, e.to_string()))?;
            seg.journaled = seg.data.len() as u64;
        }
        if seg.data.is_empty() {
            return Ok(None);
        }
        Ok(Some(seg))
    }

    /// The segment as the repository holds it ([`StreamSegment::load`]),
    /// for a receiver to go on with: a journal is locked first (another
    /// receiver appending to it is a [`Error::Conflict`]), folded into the
    /// `.stream` manifest and deleted, so the receiver starts a journal of
    /// its own. `None` when there is nothing.
    pub async fn resume(
        repo: &Repository,
        stanza: &str,
        name: SegmentName,
        size: SegmentSize,
        level: i32,
    ) -> Result<Option<StreamSegment>> {
        let jkey = super::journal::key(stanza, name.timeline, &name.format(size));
        let lock = match repo.store().local_root() {
            Some(root) => tokio::task::block_in_place(|| {
                super::journal::sweep_staged(root, &jkey)?;
                super::journal::lock_existing(root, &jkey)
            })?,
            None => None,
        };
        let Some(mut seg) = StreamSegment::load(repo, stanza, name, size, level).await? else { return Ok(None) };
        if seg.has_unmanifested() {
            seg.flush(repo).await?;
        }
        if lock.is_some() {
            repo.store().delete(&jkey).await?;
        }
        seg.journaled = 0;
        Ok(Some(seg))
    }

    /// What it holds, from the segment's start.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The `.stream` manifest describing everything held (for planning,
    /// when a journal holds more than the stored manifest).
    pub fn view(&self) -> WalManifest {
        let file = self.name.format(self.size);
        self.manifest(format!("{file}{STREAM_SUFFIX}"), WalFileKind::Partial, self.stored.clone())
    }

    /// The segment's name.
    pub fn name(&self) -> SegmentName {
        self.name
    }

    /// Its first LSN.
    pub fn start_lsn(&self) -> u64 {
        self.name.start_lsn(self.size).map(|l| l.0).unwrap_or(0)
    }

    /// The LSN after the last byte received.
    pub fn received_lsn(&self) -> u64 {
        self.start_lsn() + self.data.len() as u64
    }

    /// The LSN after the last byte durable in the repository (in the
    /// `.stream` manifest or the journal).
    pub fn durable_lsn(&self) -> u64 {
        self.start_lsn() + self.durable.max(self.journaled)
    }

    /// Whether every byte of the segment has arrived.
    pub fn is_full(&self) -> bool {
        self.data.len() as u64 == u64::from(self.size.bytes())
    }

    /// Whether bytes arrived that are not durable yet.
    pub fn has_unflushed(&self) -> bool {
        self.durable.max(self.journaled) < self.data.len() as u64
    }

    /// Whether bytes arrived that the `.stream` manifest does not cover
    /// (they may be durable in the journal).
    pub fn has_unmanifested(&self) -> bool {
        self.durable < self.data.len() as u64
    }

    /// Makes what has arrived durable by appending it to the segment's
    /// journal (created at the first call, filled with zeros to the
    /// segment's size): one sealed record and one `fdatasync`. `false`, and
    /// nothing done, when the repository is not a local directory (use
    /// [`StreamSegment::flush`]). Blocking.
    pub fn flush_to_journal(&mut self, repo: &Repository) -> Result<bool> {
        let Some(root) = repo.store().local_root() else { return Ok(false) };
        let from = self.durable.max(self.journaled);
        let len = self.data.len() as u64;
        if from >= len {
            return Ok(true);
        }
        if self.journal.is_none() {
            let key = super::journal::key(&self.stanza, self.name.timeline, &self.name.format(self.size));
            self.journal = Some(super::journal::Writer::create(root, &key, u64::from(self.size.bytes()))?);
        }
        let j = self.journal.as_mut().expect("created above");
        j.append(repo.keys(), from, &self.data[from as usize..])?;
        self.journaled = len;
        Ok(true)
    }

    /// Room left in the segment.
    pub fn room(&self) -> usize {
        self.size.bytes() as usize - self.data.len()
    }

    /// The long page header, once its bytes arrived.
    pub fn header(&self) -> Option<&cairn_formats::pg::SegmentHeader> {
        self.scanner.header()
    }

    /// Adds received bytes (at most [`StreamSegment::room`]). Fails when
    /// they are not WAL of this segment (a bad long page header).
    pub fn append(&mut self, bytes: &[u8]) -> std::result::Result<(), cairn_formats::pg::WalError> {
        self.scanner.push(bytes)?;
        self.hasher.update(bytes);
        self.data.extend_from_slice(bytes);
        Ok(())
    }

    /// Deletes the segment's journal when the `.stream` manifest covers
    /// everything (the receiver stops, or leaves the segment for a new
    /// timeline); otherwise it stays for the next receiver to fold in.
    /// Blocking.
    pub fn close_journal(&mut self) -> Result<()> {
        if self.has_unmanifested() {
            return Ok(());
        }
        self.journaled = 0;
        self.journal.take().map_or(Ok(()), super::journal::Writer::remove)
    }

    /// Makes what has arrived durable as the `.stream` manifest, uploading
    /// only new bytes (see the module documentation). Returns once both
    /// the pack and the manifest are durable. Nothing to do is a no-op.
    pub async fn flush(&mut self, repo: &Repository) -> Result<Flushed> {
        if !self.has_unmanifested() {
            return Ok(Flushed::default());
        }
        let started = Instant::now();
        let len = self.data.len();
        let whole_now = len / PIECE;
        let keys = repo.keys();
        let mut blobs = Vec::new();
        // Pieces that became whole, then the new bytes of the piece being filled.
        let mut ranges: Vec<(usize, usize)> = (self.whole..whole_now).map(|i| (i * PIECE, (i + 1) * PIECE)).collect();
        let tail_from = if whole_now > self.whole { whole_now * PIECE } else { self.durable as usize };
        if tail_from < len {
            ranges.push((tail_from, len));
        }
        let data = &self.data;
        let level = self.level;
        let sealed: Vec<_> = tokio::task::block_in_place(|| {
            use rayon::prelude::*;
            ranges
                .par_iter()
                .map(|&(a, b)| {
                    let bytes = &data[a..b];
                    seal_blob(keys, keys.blob_id(bytes), BlobKind::Data, zstd(level), bytes)
                })
                .collect()
        });
        let mut pack = PackBuilder::new(sealed.iter().map(|b| b.sealed.len()).sum::<usize>() + 4096);
        for b in &sealed {
            pack.push(b);
        }
        blobs.extend(sealed);
        let pack = pack.finish(keys);
        let new_pieces: Vec<Piece> = Piece::of_entries(pack.id, &pack.entries).collect();
        let mut pieces: Vec<Piece> =
            if whole_now > self.whole { self.stored[..self.whole].to_vec() } else { self.stored.clone() };
        pieces.extend(new_pieces);
        let mut stored_bytes = pack.bytes.len() as u64;
        repo.store().put(&ObjectKey::Pack(pack.id).to_string(), pack.bytes).await?;
        stored_bytes += self.put_manifest(repo, pieces.clone()).await?;
        self.stored = pieces;
        self.whole = whole_now;
        self.durable = len as u64;
        Ok(Flushed { stored_bytes, took: started.elapsed() })
    }

    /// Writes the `.stream` manifest again, unchanged but for its date,
    /// when it covers everything received (a receiver's heartbeat: the
    /// date is when the repository last held all the server had).
    /// `false` when there is no such manifest to write.
    pub async fn touch(&mut self, repo: &Repository) -> Result<bool> {
        if self.durable == 0 || self.has_unmanifested() {
            return Ok(false);
        }
        self.put_manifest(repo, self.stored.clone()).await?;
        Ok(true)
    }

    /// Replaces the `.stream` manifest (compare-and-swap on the version
    /// this receiver wrote or resumed from) with one listing `pieces` for
    /// everything received; returns the bytes written.
    async fn put_manifest(&mut self, repo: &Repository, pieces: Vec<Piece>) -> Result<u64> {
        let file = self.name.format(self.size);
        let key = stream_key(&self.stanza, self.name.timeline, &file);
        let manifest = self.manifest(format!("{file}{STREAM_SUFFIX}"), WalFileKind::Partial, pieces);
        let sealed = seal_named(repo, &key, &manifest);
        let stored_bytes = sealed.len() as u64;
        let mode = match self.version.clone() {
            Some(v) => crate::store::PutMode::Update(v),
            None => crate::store::PutMode::Create,
        };
        match repo.store().put_opts(&key, sealed, mode).await {
            Ok(v) => self.version = Some(v),
            Err(Error::Precondition { .. } | Error::AlreadyExists { .. }) => {
                return Err(Error::Conflict {
                    object: key,
                    detail: "another process wrote this streamed segment since this receiver did: run one `cairn pg \
                             receive` per stanza"
                        .into(),
                })
            }
            Err(e) => return Err(e),
        }
        Ok(stored_bytes)
    }

    fn manifest(&self, name: String, kind: WalFileKind, pieces: Vec<Piece>) -> WalManifest {
        WalManifest {
            version: WAL_MANIFEST_VERSION,
            name,
            kind,
            size: self.data.len() as u64,
            blake3: self.hasher.finalize().to_hex().to_string(),
            pushed: chrono::Utc::now().to_rfc3339(),
            host: crate::hostname(),
            pieces,
            // For a whole segment, the same summary `finish` gives.
            facts: self.scanner.summary_so_far().ok().map(|s| facts_of(&s)),
            history: None,
            backup: None,
        }
    }

    /// Stores the whole segment as `wal push` would (after making every
    /// piece durable), then deletes its `.stream` object. An existing
    /// manifest of the same size and BLAKE3 (`archive_command` was first)
    /// is accepted; a different one is a [`Error::Conflict`].
    pub async fn complete(mut self, repo: &Repository) -> Result<Flushed> {
        if !self.is_full() {
            return Err(Error::Internal(format!("{} is not complete", self.name.format(self.size))));
        }
        let started = Instant::now();
        // Makes every piece whole and durable; the `.stream` object now lists
        // exactly the pieces of the segment.
        let mut f = self.flush(repo).await?;
        let file = self.name.format(self.size);
        let key = manifest_key(&self.stanza, self.name.timeline, &file);
        let manifest = self.manifest(file.clone(), WalFileKind::Segment, self.stored.clone());
        if manifest.facts.is_none() {
            return Err(Error::corrupt(&file, None, "the received segment does not scan as WAL"));
        }
        let sealed = seal_named(repo, &key, &manifest);
        f.stored_bytes += sealed.len() as u64;
        match repo.store().put_create(&key, sealed).await {
            Ok(()) => {}
            Err(Error::AlreadyExists { .. }) => {
                let existing =
                    get_named::<WalManifest>(repo, &key).await?.ok_or_else(|| Error::NotFound { what: key.clone() })?;
                if existing.size != manifest.size || existing.blake3 != manifest.blake3 {
                    return Err(Error::conflict(
                        &key,
                        format!(
                            "already archived with different content (stored BLAKE3 {}…, received {}…); the stored copy is unchanged",
                            &existing.blake3[..16.min(existing.blake3.len())],
                            &manifest.blake3[..16]
                        ),
                    ));
                }
                repo.store().sync_existing(&key).await?;
            }
            Err(e) => return Err(e),
        }
        let name = cairn_formats::pg::WalFileName::Segment(self.name);
        super::catseg::after_push(repo, &self.stanza, &name, self.size).await?;
        repo.store().delete(&stream_key(&self.stanza, self.name.timeline, &file)).await?;
        if let Some(j) = self.journal.take() {
            tokio::task::block_in_place(|| j.remove())?;
        }
        f.took = started.elapsed();
        Ok(f)
    }
}

/// Stores a timeline history file received with `TIMELINE_HISTORY`, as
/// `wal push` would (create-only; the same content already there is
/// fine).
pub async fn store_history(repo: &Repository, stanza: &str, timeline: u32, content: &[u8]) -> Result<()> {
    let name = format!("{timeline:08X}.history");
    let key = manifest_key(stanza, timeline, &name);
    let hash = blake3::hash(content).to_hex().to_string();
    if let Some(existing) = get_named::<WalManifest>(repo, &key).await? {
        if existing.blake3 == hash {
            return Ok(());
        }
        return Err(Error::conflict(&key, "already archived with different content"));
    }
    let lines = cairn_formats::pg::parse_timeline_history(content, Some(timeline))
        .map_err(|e| Error::corrupt(&name, None, e.to_string()))?;
    let keys = repo.keys();
    let blob = seal_blob(keys, keys.blob_id(content), BlobKind::Data, zstd(1), content);
    let mut pack = PackBuilder::new(blob.sealed.len() + 4096);
    pack.push(&blob);
    let pack = pack.finish(keys);
    let pieces = Piece::of_entries(pack.id, &pack.entries).collect();
    repo.store().put(&ObjectKey::Pack(pack.id).to_string(), pack.bytes).await?;
    let manifest = WalManifest {
        version: WAL_MANIFEST_VERSION,
        name,
        kind: WalFileKind::History,
        size: content.len() as u64,
        blake3: hash,
        pushed: chrono::Utc::now().to_rfc3339(),
        host: crate::hostname(),
        pieces,
        facts: None,
        history: Some(
            lines
                .into_iter()
                .map(|l| super::HistoryLine { timeline: l.timeline, switchpoint: l.switchpoint.0, reason: l.reason })
                .collect(),
        ),
        backup: None,
    };
    match repo.store().put_create(&key, seal_named(repo, &key, &manifest)).await {
        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where the repository's WAL for a stanza ends, for a receiver to go on
/// from: the newest timeline with a segment or a streamed segment, and on
/// it, the streamed segment past the newest whole one, or the end of the
/// newest whole one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamResume {
    /// Nothing archived for the stanza.
    Nothing,
    /// Go on after whole segment `segment` (from its end).
    After(SegmentName),
    /// Go on in streamed segment `segment`.
    InStream(SegmentName),
}

/// Reads where the repository's WAL ends (see [`StreamResume`]); a
/// segment's journal counts as its `.stream` object. `.stream` objects and
/// journals of segments that have a manifest are deleted (a receiver
/// killed between the two).
pub async fn resume_point(repo: &Repository, stanza: &str, size: SegmentSize) -> Result<StreamResume> {
    let mut listed = repo.store().list(&format!("wal/{stanza}")).await?;
    listed.extend(repo.store().list(&format!("{}/{stanza}", crate::repofile::Kind::WalJournal.prefix())).await?);
    let mut whole: std::collections::BTreeSet<(u32, u64)> = Default::default();
    let mut streams: Vec<(u32, u64, String)> = Vec::new();
    for o in &listed {
        let (name, journal) = match ObjectKey::parse(&o.key) {
            Some(ObjectKey::WalFile { name, .. }) => (name, false),
            Some(ObjectKey::WalJournal { segment, .. }) => (segment, true),
            _ => continue,
        };
        if let Some(seg) = segment_of_stream(&name).or(journal.then_some(name.as_str())) {
            if let Ok(cairn_formats::pg::WalFileName::Segment(s)) = cairn_formats::pg::WalFileName::parse(seg, size) {
                streams.push((s.timeline, s.segno, o.key.clone()));
            }
        } else if let Ok(cairn_formats::pg::WalFileName::Segment(s)) =
            cairn_formats::pg::WalFileName::parse(&name, size)
        {
            whole.insert((s.timeline, s.segno));
        }
    }
    let mut live = Vec::new();
    for (t, n, key) in streams {
        if whole.contains(&(t, n)) {
            repo.store().delete(&key).await?;
        } else {
            live.push((t, n));
        }
    }
    let newest_whole = whole.iter().next_back().copied();
    let newest_stream = live.iter().max().copied();
    Ok(match (newest_whole, newest_stream) {
        (None, None) => StreamResume::Nothing,
        (Some((t, n)), None) => StreamResume::After(SegmentName { timeline: t, segno: n }),
        (None, Some((t, n))) => StreamResume::InStream(SegmentName { timeline: t, segno: n }),
        (Some(w), Some(s)) if s > w => StreamResume::InStream(SegmentName { timeline: s.0, segno: s.1 }),
        (Some((t, n)), Some(_)) => StreamResume::After(SegmentName { timeline: t, segno: n }),
    })
}

/// The stanza record of the receiver's first segment, written as
/// `wal push` writes it with the stanza's first segment (create-only; a
/// record that exists already must agree).
pub async fn record_stanza(
    repo: &Repository,
    stanza: &str,
    header: &cairn_formats::pg::SegmentHeader,
    name: &str,
) -> Result<()> {
    super::push::identify::first_of_stanza(repo, stanza, header, std::path::Path::new(name)).await
}

/// The stanza record, if any (a convenience for the receiver).
pub async fn stanza(repo: &Repository, stanza: &str) -> Result<Option<StanzaRecord>> {
    super::load_stanza(repo, stanza).await
}
