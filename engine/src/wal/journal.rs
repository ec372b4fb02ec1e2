//! Segment journals: what `pg receive --synchronous` makes durable
//! between two `.stream` flushes on a local repository, for the price of
//! one `fdatasync`.
//!
//! # Why
//! A synchronous standby holds each commit on the primary until it reports
//! the commit's WAL flushed. A `.stream` flush ([`super::stream`]) writes
//! a pack and a manifest, each a new file made durable with its directory:
//! four ext4 journal commits, 2.6–3.4 ms at the median on the benchmark
//! machine, where `pg_receivewal --synchronous` pays one `fdatasync` of a
//! file it filled with zeros when it opened it (so the write changes no
//! metadata). On a local repository the receiver does the same: the
//! segment's journal is a repository file filled with zeros when the
//! segment's first bytes are journaled, and each flush appends one sealed
//! record to it in place and calls `fdatasync` once. The `.stream`
//! manifest is still written every `--flush-interval`, and the segment's
//! manifest when it is complete; then the journal is deleted.
//!
//! # Layout (docs/FORMAT.md)
//! `waljournal/<stanza>/<TLI>/<segment>`:
//! - a 64-byte header: `CAIRNWJ1`, 16 random bytes naming this journal,
//!   zeros;
//! - from offset 64, records `u32 LE n ‖ n sealed bytes`: XChaCha20-Poly1305
//!   (`nonce ‖ ciphertext ‖ tag`) of `u64 LE offset in the segment ‖ WAL
//!   bytes`, with associated data `cairn-wal-journal\0 ‖ key ‖ journal
//!   id ‖ u64 LE record number` (so a record cannot be moved to another
//!   journal, another segment or another place in this one);
//! - zeros after the last record.
//!
//! # Reading
//! Records are taken in order up to a length of zero, a record running
//! past the file, or one that fails authentication: that is where the last
//! completed append ended (an append cut short by a crash was never
//! reported durable, so nothing acknowledged is behind it). A reader
//! racing the writer sees a prefix of the records. Records are applied
//! after what the segment's `.stream` manifest holds ([`tail`]): each
//! begins at or before the end of what is held; a gap ends them.
//!
//! # One writer
//! The writer holds an exclusive `flock` on the file for as long as it
//! appends. A receiver resuming a segment takes the same lock on a
//! journal it finds before folding it into the `.stream` manifest and
//! deleting it ([`lock_existing`]); a lock held by another process is a
//! [`Error::Conflict`], as a second receiver's `.stream` write is.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::crypto::Keys;
use crate::repofile::ObjectKey;
use crate::{Error, Result};

/// The first bytes of a journal.
pub const MAGIC: &[u8; 8] = b"CAIRNWJ1";
/// Where the first record begins.
pub const HEADER_LEN: u64 = 64;
/// Bytes of a journal's random id.
pub const ID_LEN: usize = 16;
const AAD_PREFIX: &[u8] = b"cairn-wal-journal\0";
/// Zeros written past the segment's size when a journal is created, for
/// the records' framing (56 bytes each: room for 37,000 flushes). Appends
/// past it still work; they cost the metadata update preallocation saves.
const SLACK: u64 = 2 << 20;
/// No record is longer (a length past it is damage, not a record).
const MAX_RECORD: usize = 1 << 30;

/// The journal key of segment `segment` of `stanza`.
pub fn key(stanza: &str, timeline: u32, segment: &str) -> String {
    ObjectKey::WalJournal { stanza: stanza.to_string(), timeline, segment: segment.to_string() }.to_string()
}

fn aad(key: &str, id: &[u8], seq: u64) -> Vec<u8> {
    [AAD_PREFIX, key.as_bytes(), id, &seq.to_le_bytes()].concat()
}

/// The header of a journal with id `id`.
pub fn header(id: &[u8; ID_LEN]) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN as usize];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()..MAGIC.len() + ID_LEN].copy_from_slice(id);
    h
}

/// Record number `seq` of journal `key` (id `id`): `bytes`, which begin at
/// `offset` in the segment, sealed and framed as appended.
pub fn record(keys: &Keys, key: &str, id: &[u8; ID_LEN], seq: u64, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(8 + bytes.len());
    plain.extend_from_slice(&offset.to_le_bytes());
    plain.extend_from_slice(bytes);
    let sealed = keys.seal(&aad(key, id, seq), &plain);
    let mut out = Vec::with_capacity(4 + sealed.len());
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    out.extend_from_slice(&sealed);
    out
}

/// A journal's records, in order: `(offset in the segment, bytes)`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// The authentic records, in the order they were appended.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Reading stopped at bytes that are not a record (an append cut short
    /// by a crash, or damage) rather than at zeros or the end of the file.
    pub torn: bool,
}

/// Reads the records of journal `key` from its bytes. A file too short to
/// hold a header, or whose header is zeros (a crash while it was being
/// created), holds none; any other header than a journal's is corrupt.
pub fn read(keys: &Keys, key: &str, bytes: &[u8]) -> Result<Records> {
    let mut out = Records::default();
    if bytes.len() < HEADER_LEN as usize || bytes[..HEADER_LEN as usize].iter().all(|&b| b == 0) {
        return Ok(out);
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::corrupt(key, Some(0), "not a WAL journal (bad magic)"));
    }
    let id = &bytes[MAGIC.len()..MAGIC.len() + ID_LEN];
    let mut at = HEADER_LEN as usize;
    let mut seq = 0u64;
    while at + 4 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if n == 0 {
            break;
        }
        let Some(sealed) = bytes.get(at + 4..at + 4 + n).filter(|_| n <= MAX_RECORD) else {
            out.torn = true;
            break;
        };
        match keys.open(&aad(key, id, seq), sealed) {
            Some(plain) if plain.len() > 8 => {
                let offset = u64::from_le_bytes(plain[..8].try_into().expect("8 bytes"));
                out.records.push((offset, plain[8..].to_vec()));
            }
            _ => {
                out.torn = true;
                break;
            }
        }
        seq += 1;
        at += 4 + n;
    }
    Ok(out)
}

/// What `records` hold past the first `held` bytes of a segment, up to
/// byte `limit` of the segment. A record that begins past the end of what
/// is held so far is a gap: it and the records after it are left out.
pub fn tail(held: usize, records: &[(u64, Vec<u8>)], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (offset, bytes) in records {
        let (offset, end) = (*offset as usize, held + out.len());
        if offset > end {
            break;
        }
        let skip = end - offset;
        if skip < bytes.len() {
            let room = limit.saturating_sub(end);
            out.extend_from_slice(&bytes[skip..][..room.min(bytes.len() - skip)]);
        }
    }
    out
}

/// The journal of one segment, open for appending.
#[derive(Debug)]
pub struct Writer {
    file: File,
    path: PathBuf,
    key: String,
    id: [u8; ID_LEN],
    at: u64,
    seq: u64,
}

fn locked(key: &str, path: &Path) -> Error {
    Error::conflict(
        key,
        format!(
            "{} is locked by another process: another `cairn pg receive` is receiving this segment; run one per stanza",
            path.display()
        ),
    )
}

fn lock(file: &File, key: &str, path: &Path) -> Result<()> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(locked(key, path)),
        Err(e) => Err(Error::io(path, e.into())),
    }
}

/// Opens and locks the journal `key` under the local repository `root`, so
/// that no receiver appends to it while the caller folds it into the
/// `.stream` manifest and deletes it; `None` when there is none. Fails with
/// [`Error::Conflict`] when another process holds it.
pub fn lock_existing(root: &Path, key: &str) -> Result<Option<File>> {
    let path = root.join(key);
    // Read and write: NFS emulates `flock` with POSIX locks, and an
    // exclusive one needs a descriptor open for writing.
    match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => lock(&f, key, &path).map(|()| Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Deletes what journal creations of `key` that never finished (a crash
/// while zeros were written) left under staging names (`<key>#<digits>`),
/// so that a receiver resuming the segment reclaims the space. Blocking.
pub fn sweep_staged(root: &Path, key: &str) -> Result<()> {
    let path = root.join(key);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Ok(()) };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let staged = n.to_str().is_some_and(|n| {
            crate::store::is_staging_name(n) && n.rsplit_once('#').is_some_and(|(base, _)| base == name)
        });
        if staged {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(path = %e.path().display(), "removed an unfinished journal"),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(e.path(), err)),
            }
        }
    }
    Ok(())
}

impl Writer {
    /// Creates journal `key` under the local repository `root` for a
    /// segment of `segment_size` bytes: the header, then zeros up to the
    /// segment's size and some, written and fsynced under a staging name
    /// (`…#<digits>`, which listings skip) and then linked to its name, so
    /// that no reader or resuming receiver ever sees one half made. A
    /// journal already there belongs to another receiver (the resuming one
    /// folds and deletes any it finds): [`Error::Conflict`]. On failure (a
    /// full disk) nothing is left behind; what a crash left under a staging
    /// name is swept first.
    pub fn create(root: &Path, key: &str, segment_size: u64) -> Result<Writer> {
        let path = root.join(key);
        if let Some(dir) = path.parent() {
            crate::store::create_dirs(dir)?;
        }
        sweep_staged(root, key)?;
        let staged = crate::store::staging_path(&path);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(crate::store::OBJECT_MODE)
            .open(&staged)
            .map_err(|e| Error::io(&staged, e))?;
        let made = Writer::fill(file, &staged, key, segment_size).and_then(|w| {
            match std::fs::hard_link(&staged, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(locked(key, &path)),
                Err(e) => return Err(Error::io(&path, e)),
            }
            Ok(w)
        });
        let _ = std::fs::remove_file(&staged);
        let mut w = made?;
        crate::store::fsync_local(root, &path)?;
        w.path = path;
        Ok(w)
    }

    fn fill(file: File, path: &Path, key: &str, segment_size: u64) -> Result<Writer> {
        lock(&file, key, path)?;
        let mut id = [0u8; ID_LEN];
        rand::thread_rng().fill_bytes(&mut id);
        let io = |e| Error::io(path, e);
        file.write_all_at(&header(&id), 0).map_err(io)?;
        let zeros = vec![0u8; 1 << 20];
        let end = HEADER_LEN + segment_size + SLACK;
        let mut at = HEADER_LEN;
        while at < end {
            let n = (end - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at).map_err(io)?;
            at += n as u64;
        }
        file.sync_all().map_err(io)?;
        Ok(Writer { file, path: path.to_path_buf(), key: key.to_string(), id, at: HEADER_LEN, seq: 0 })
    }

    /// Appends `bytes`, which begin at `offset` in the segment, as one
    /// sealed record, and returns once it is durable (`fdatasync`).
    pub fn append(&mut self, keys: &Keys, offset: u64, bytes: &[u8]) -> Result<()> {
        let record = record(keys, &self.key, &self.id, self.seq, offset, bytes);
        let io = |e| Error::io(&self.path, e);
        self.file.write_all_at(&record, self.at).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        // Durable, but in the journal readers find only while it has its
        // name: a journal deleted under this writer (another receiver, with
        // no working `flock`) must not be reported durable.
        if rustix::fs::fstat(&self.file).map_err(|e| io(e.into()))?.st_nlink == 0 {
            return Err(Error::conflict(
                &self.key,
                "the journal was deleted while this receiver appended to it: run one `cairn pg receive` per stanza",
            ));
        }
        self.at += record.len() as u64;
        self.seq += 1;
        Ok(())
    }

    /// Deletes the journal (once the segment's manifest covers it).
    pub fn remove(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&crate::crypto::MasterKey::generate())
    }

    fn bytes_of(root: &Path, key: &str) -> Vec<u8> {
        std::fs::read(root.join(key)).unwrap()
    }

    #[test]
    fn appended_records_read_back_in_order_and_extend_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (k, key) = (keys(), key("main", 1, "000000010000000000000002"));
        let mut w = Writer::create(dir.path(), &key, 1 << 16).unwrap();
        w.append(&k, 0, b"hello ").unwrap();
        w.append(&k, 6, b"world").unwrap();
        w.append(&k, 8, b"rld, again").unwrap();
        let r = read(&k, &key, &bytes_of(dir.path(), &key)).unwrap();
        assert!(!r.torn);
        assert_eq!(r.records.len(), 3);
        assert_eq!(tail(3, &r.records, 1 << 16), b"lo world, again");
        assert_eq!(tail(0, &r.records, 8), b"hello wo");
        assert_eq!(tail(30, &r.records, 100), b"");
        // A gap ends what is taken.
        assert_eq!(tail(0, &[(0, b"ab".to_vec()), (3, b"d".to_vec())], 100), b"ab");
    }

    #[test]
    fn a_torn_append_a_foreign_record_and_a_second_writer_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (k, key) = (keys(), key("main", 1, "000000010000000000000002"));
        let mut w = Writer::create(dir.path(), &key, 1 << 16).unwrap();
        w.append(&k, 0, b"first").unwrap();
        w.append(&k, 5, b"second").unwrap();
        let whole = bytes_of(dir.path(), &key);
        // A crash part way through the second append.
        let second = HEADER_LEN as usize + 4 + (24 + 8 + 5 + 16);
        let mut torn = whole.clone();
        torn[second + 10..second + 20].fill(0);
        let r = read(&k, &key, &torn).unwrap();
        assert_eq!((r.records.len(), r.torn), (1, true));
        // The same bytes under another key (moved from another segment).
        let other = super::key("main", 1, "000000010000000000000003");
        assert_eq!(read(&k, &other, &whole).unwrap().records.len(), 0);
        // Another repository's key.
        assert!(read(&keys(), &key, &whole).unwrap().torn);
        // Not a journal at all; a header of zeros is an empty journal.
        assert!(matches!(read(&k, &key, &[7u8; 100]), Err(Error::Corrupt { .. })));
        assert_eq!(read(&k, &key, &[0u8; 100]).unwrap(), Records::default());
        // One writer: a second create, and a lock while it appends, fail.
        assert!(matches!(Writer::create(dir.path(), &key, 1 << 16), Err(Error::Conflict { .. })));
        assert!(matches!(lock_existing(dir.path(), &key), Err(Error::Conflict { .. })));
        w.remove().unwrap();
        assert!(lock_existing(dir.path(), &key).unwrap().is_none());
        // A creation cut short leaves a staging name, which a sweep removes
        // (and nothing else).
        let staged = dir.path().join(format!("{key}#123"));
        std::fs::write(&staged, b"half").unwrap();
        let other = dir.path().join(format!("{key}x#123"));
        std::fs::write(&other, b"other").unwrap();
        sweep_staged(dir.path(), &key).unwrap();
        assert!(!staged.exists() && other.exists());
    }
}
