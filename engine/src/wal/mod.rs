//! PostgreSQL continuous archiving: `archive_command` ([`push()`]),
//! `restore_command` ([`fetch()`]) and the WAL catalogue ([`catalog`]).
//!
//! # Why WAL bypasses the index and the snapshot machinery
//! `archive_command` runs once per 16 MiB segment, often every few seconds,
//! while a backup may hold the local index. So WAL commands never touch the
//! index (a writer holds it exclusively, and WAL must never wait behind a
//! backup): a pushed file becomes one pack of its own plus
//! one sealed manifest at `wal/<stanza>/<TLI>/<file name>`, written
//! create-only *after* the pack is durable. The manifest is the commit point:
//! a killed push leaves at most an unreferenced pack, never a name that
//! serves partial content.
//!
//! WAL content does not repeat between segments, so content-defined chunking
//! would cost CPU for no dedup; files are split at fixed [`PIECE`] boundaries
//! instead, which lets compression and encryption run in parallel.
//!
//! # The stanza
//! A stanza is one cluster's archive. The first segment pushed records the
//! cluster's system identifier, segment size, page size and WAL version in
//! `wal/<stanza>/stanza` (create-only); every later segment's long page
//! header must agree, so WAL from another cluster is refused before anything
//! is stored.
//!
//! # Sealing
//! Manifests and the stanza record are sealed with their own object key as
//! associated data: a manifest copied or renamed to another WAL name fails
//! authentication instead of serving the wrong segment.

pub mod ahead;
pub mod catalog;
pub mod catseg;
pub mod copies;
mod facts;
pub mod fetch;
pub mod journal;
pub mod known;
mod pack_out;
pub mod push;
mod receipt;
pub mod spool;
pub mod stream;
mod window;

use crate::store::{Backend as _, BackendExt as _};
use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_formats::repo::{BlobEntry, BlobKind, Compression};
use serde::{Deserialize, Serialize};

use crate::ids::{Id, PackId};
use crate::repo::Repository;
use crate::repofile::envelope::{self, Binding};
use crate::repofile::{ObjectKey, RepoFile};
use crate::{Error, Result};

pub use ahead::AheadState;
pub use catalog::{show, verify, StanzaReport, VerifyReport};
pub use fetch::{fetch, Durability, FetchOutcome};
pub use known::archived_with;
pub use push::{push, PushOptions, PushReport};
pub use receipt::FileStamp;
pub use spool::Spool;

/// WAL files are stored in pieces of this many bytes (the last may be shorter).
pub const PIECE: usize = 2 * 1024 * 1024;
/// Version of the WAL manifest and stanza record.
pub const WAL_MANIFEST_VERSION: u32 = 1;
const AAD_PREFIX: &[u8] = b"cairn wal v1\0";

/// Checks a stanza name: 1–64 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_stanza(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid stanza name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

/// The key of the stanza record.
pub fn stanza_key(stanza: &str) -> String {
    StanzaRecord::key(stanza).to_string()
}

/// The key of a WAL file's manifest.
pub fn manifest_key(stanza: &str, timeline: u32, name: &str) -> String {
    WalManifest::key(&(stanza.to_string(), timeline, name.to_string())).to_string()
}

/// The manifest key of WAL file `name`, whose timeline is its first eight
/// hex digits; `None` if `name` is not a WAL file name.
pub(crate) fn manifest_key_of(stanza: &str, name: &str) -> Option<String> {
    if !ahead::is_wal_file_name(name) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    Some(manifest_key(stanza, tli, name))
}

/// The four kinds of file PostgreSQL archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalFileKind {
    /// A complete segment.
    Segment,
    /// The unfinished last segment of a timeline left by a promotion.
    Partial,
    /// A timeline history file.
    History,
    /// A backup history file.
    Backup,
}

/// What the first segment of a stanza recorded about its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StanzaRecord {
    /// [`WAL_MANIFEST_VERSION`].
    pub version: u32,
    /// The stanza name.
    pub stanza: String,
    /// The cluster's system identifier (a string: JSON numbers lose 64-bit precision).
    pub system_id: String,
    /// WAL segment size in bytes.
    pub segment_size: u32,
    /// WAL page size in bytes.
    pub block_size: u32,
    /// The WAL page magic.
    pub wal_magic: u16,
    /// PostgreSQL major version the magic belongs to.
    pub postgresql: u32,
    /// RFC 3339 time of the first push.
    pub created: String,
    /// Host of the first push.
    pub host: String,
}

/// One stored piece of a WAL file: a blob in a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Pack id (hex).
    pub pack: String,
    /// Blob id (hex).
    pub id: String,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Sealed length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Whether the blob is zstd-compressed.
    pub zstd: bool,
}

impl Piece {
    /// The pieces naming `entries` of pack `pack`, in order (the inverse
    /// of [`Piece::entry`]).
    pub fn of_entries(pack: PackId, entries: &[BlobEntry]) -> impl Iterator<Item = Piece> + '_ {
        let pack = pack.to_hex();
        entries.iter().map(move |e| Piece {
            pack: pack.clone(),
            id: hex::encode(e.id),
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            zstd: e.compression == Compression::Zstd,
        })
    }

    /// The pack id and blob entry this piece names; `None` when malformed.
    pub fn entry(&self) -> Option<(PackId, BlobEntry)> {
        let pack = PackId::from_hex(&self.pack)?;
        let id = Id::from_hex(&self.id)?;
        let compression = if self.zstd { Compression::Zstd } else { Compression::None };
        let entry = BlobEntry {
            id: id.0,
            kind: BlobKind::Data,
            compression,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
        };
        Some((pack, entry))
    }
}

/// A commit's position and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitPoint {
    /// LSN of the commit record.
    pub lsn: u64,
    /// `xact_time` as microseconds since the Unix epoch.
    pub time_us: i64,
    /// The transaction id.
    pub xid: u32,
}

/// A named restore point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPoint {
    /// The name given to `pg_create_restore_point`.
    pub name: String,
    /// LSN of the record.
    pub lsn: u64,
    /// Microseconds since the Unix epoch.
    pub time_us: i64,
}

/// Facts parsed from a segment's records while it was pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFacts {
    /// PostgreSQL major version (from the page magic).
    pub postgresql: u32,
    /// System identifier (string for 64-bit safety).
    pub system_id: String,
    /// Timeline of the first page.
    pub timeline: u32,
    /// First LSN of the segment.
    pub start_lsn: u64,
    /// First record starting here.
    pub first_record: Option<u64>,
    /// Last record starting here.
    pub last_record: Option<u64>,
    /// Where the next record after the last complete one would start.
    pub end_of_records: u64,
    /// Complete, CRC-checked records starting here.
    pub records: u64,
    /// Commits (including commit-prepared).
    pub commits: u64,
    /// Aborts (including abort-prepared).
    pub aborts: u64,
    /// The first commit.
    pub first_commit: Option<CommitPoint>,
    /// The last commit.
    pub last_commit: Option<CommitPoint>,
    /// Smallest and largest committed xid, for `--target-xid` planning.
    pub commit_xids: Option<(u32, u32)>,
    /// Restore points.
    pub restore_points: Vec<NamedPoint>,
    /// `complete`, `switch` or `stopped`.
    pub end: String,
    /// Why valid WAL stopped early, for `stopped`.
    pub stopped: Option<String>,
}

/// One line of a timeline history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// The ancestor timeline.
    pub timeline: u32,
    /// The LSN at which WAL left it.
    pub switchpoint: u64,
    /// PostgreSQL's reason text.
    pub reason: String,
}

impl RepoFile for StanzaRecord {
    const VERSION: u32 = WAL_MANIFEST_VERSION;
    type Id = str;
    fn key(stanza: &str) -> ObjectKey {
        ObjectKey::Stanza(stanza.to_string())
    }
}

impl RepoFile for WalManifest {
    const VERSION: u32 = WAL_MANIFEST_VERSION;
    /// Stanza, timeline and file name.
    type Id = (String, u32, String);
    fn key((stanza, timeline, name): &(String, u32, String)) -> ObjectKey {
        ObjectKey::WalFile { stanza: stanza.clone(), timeline: *timeline, name: name.clone() }
    }
}

/// The sealed manifest of one archived WAL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalManifest {
    /// [`WAL_MANIFEST_VERSION`].
    pub version: u32,
    /// The file name PostgreSQL gave it.
    pub name: String,
    /// Segment, partial, history or backup.
    pub kind: WalFileKind,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the content (hex), checked on every fetch.
    pub blake3: String,
    /// RFC 3339 time of the push.
    pub pushed: String,
    /// Host that pushed it.
    pub host: String,
    /// Where the content is, in order.
    pub pieces: Vec<Piece>,
    /// Parsed segment facts (segments and partials).
    pub facts: Option<SegmentFacts>,
    /// Parsed history (history files).
    pub history: Option<Vec<HistoryLine>>,
    /// `KEY: value` lines (backup history files).
    pub backup: Option<BTreeMap<String, String>>,
}

/// Seals a WAL record bound to its key.
pub(crate) fn seal_named(repo: &Repository, key: &str, value: &impl RepoFile) -> Bytes {
    Bytes::from(envelope::seal(repo.keys(), Binding::Key(AAD_PREFIX, key), &value.encode()))
}

/// Opens a WAL record read from `key`.
pub(crate) fn open_named<T: RepoFile>(repo: &Repository, key: &str, bytes: &[u8]) -> Result<T> {
    T::decode(key, &envelope::open(repo.keys(), key, Binding::Key(AAD_PREFIX, key), bytes)?)
}

/// Reads a sealed WAL record; `Ok(None)` when it does not exist.
pub(crate) async fn get_named<T: RepoFile>(repo: &Repository, key: &str) -> Result<Option<T>> {
    match repo.store().get(key).await {
        Ok(bytes) => open_named(repo, key, &bytes).map(Some),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Bytes [`write_in_place`] pads a state file to.
const STATE_LEN: usize = 256;

/// Writes a small state file of the background helpers (`.current`,
/// `.claim`, a spool's `.want`) in place: one `pwrite` of `text` padded with
/// newlines to at least [`STATE_LEN`] bytes at offset 0, no truncation, no
/// new inode. On ext4 here, creating (or truncating) and renaming a file
/// costs 130–180 µs of CPU, a `pwrite` 3 µs, and these are written once or
/// twice per file archived or fetched. Readers take the first lines and
/// ignore the padding. A reader racing a write may see a mix of two texts;
/// every reader treats what it reads as a hint (at worst a file is stored
/// twice, and the create-only manifest settles it, or a segment is
/// prefetched for nothing). Best effort: errors are ignored.
pub(crate) fn write_in_place(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(bytes.len().max(STATE_LEN), b'\n');
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let _ = file.and_then(|f| f.write_all_at(&bytes, 0));
}

/// The lock file of a background helper (the prefetcher, the pusher):
/// whoever holds an exclusive lock on it is the one running. `nofollow`
/// refuses a symlink planted at `path`.
pub(crate) struct HelperLock {
    path: std::path::PathBuf,
    nofollow: bool,
}

impl HelperLock {
    pub(crate) fn new(path: std::path::PathBuf, nofollow: bool) -> HelperLock {
        HelperLock { path, nofollow }
    }

    fn open(&self) -> Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        o.create(true).truncate(false).write(true).mode(0o600);
        if self.nofollow {
            o.custom_flags(libc::O_NOFOLLOW);
        }
        o.open(&self.path).map_err(|e| Error::io(&self.path, e))
    }

    /// Whether another process holds the lock.
    pub(crate) fn held(&self) -> bool {
        self.open().is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
    }

    /// Takes the lock (kept while the file is open); `None` if it is held.
    pub(crate) fn take(&self) -> Result<Option<std::fs::File>> {
        let f = self.open()?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&self.path, e)),
        }
    }
}

/// The stanza record, if the stanza has archived a segment.
pub async fn load_stanza(repo: &Repository, stanza: &str) -> Result<Option<StanzaRecord>> {
    validate_stanza(stanza)?;
    get_named(repo, &stanza_key(stanza)).await
}

/// The segment size of a stanza that has archived something, for
/// planning: a stanza with nothing archived is not found, and a record
/// with an impossible size is corrupt.
pub(crate) async fn archived_segment_size(repo: &Repository, stanza: &str) -> Result<cairn_formats::pg::SegmentSize> {
    let cluster = load_stanza(repo, stanza)
        .await?
        .ok_or_else(|| Error::NotFound { what: format!("stanza {stanza:?} (nothing archived)") })?;
    cairn_formats::pg::SegmentSize::new(u64::from(cluster.segment_size))
        .map_err(|e| Error::corrupt(stanza_key(stanza), None, e.to_string()))
}

/// Stanzas with anything archived, sorted.
pub async fn list_stanzas(repo: &Repository) -> Result<Vec<String>> {
    let mut out: Vec<String> = repo
        .store()
        .list("wal")
        .await?
        .into_iter()
        .filter_map(|o| o.key.split('/').nth(1).map(str::to_string))
        .collect();
    out.dedup();
    Ok(out)
}

/// Pack ids that WAL manifests reference, over every stanza; for `check`
/// and `index rebuild`, which must not call WAL packs unreferenced.
/// Manifests that do not open are returned as problems `(key, message)`.
pub async fn referenced_packs(
    repo: &Repository,
) -> Result<(std::collections::HashSet<PackId>, u64, Vec<(String, String)>)> {
    let keys = manifest_keys(repo).await?;
    let count = keys.len() as u64;
    let (packs, problems) = manifest_packs(repo, keys).await?;
    Ok((packs, count, problems))
}

/// The key of every WAL manifest (not stanza records).
pub(crate) async fn manifest_keys(repo: &Repository) -> Result<Vec<String>> {
    Ok(repo.store().list("wal").await?.into_iter().map(|o| o.key).filter(|k| k.split('/').count() == 4).collect())
}

/// The packs the manifests at `keys` name, and what could not be read
/// (a manifest deleted meanwhile is skipped).
pub(crate) async fn manifest_packs(
    repo: &Repository,
    keys: Vec<String>,
) -> Result<(std::collections::HashSet<PackId>, Vec<(String, String)>)> {
    use futures::StreamExt;
    let mut packs = std::collections::HashSet::new();
    let mut problems = Vec::new();
    let mut fetched = futures::stream::iter(keys)
        .map(|k| async move {
            let r = get_named::<WalManifest>(repo, &k).await;
            (k, r)
        })
        .buffer_unordered(16);
    while let Some((k, r)) = fetched.next().await {
        match r {
            Ok(Some(m)) => {
                for p in &m.pieces {
                    match PackId::from_hex(&p.pack) {
                        Some(id) => {
                            packs.insert(id);
                        }
                        None => problems.push((k.clone(), format!("malformed pack id {:?}", p.pack))),
                    }
                }
            }
            Ok(None) => {}
            Err(e) => problems.push((k, e.to_string())),
        }
    }
    Ok((packs, problems))
}
