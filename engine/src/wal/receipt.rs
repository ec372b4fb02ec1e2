//! Receipts: how `wal push --ahead`'s background pusher tells
//! `archive_command`'s own call for a file that it stored that file, so the
//! call need not read and hash 16 MiB again.
//!
//! # Why a receipt is enough
//! The pusher writes a receipt only after the file's manifest is durable,
//! and only for a file whose stamp did not change while it was read and
//! was already old when it was opened (see [`FileStamp::settled`]). The
//! receipt names the repository (location and random id), the manifest's
//! key, the file's stamp (device, inode, size, and modification and change
//! times in nanoseconds) and the BLAKE3 that was stored. `archive_command`'s
//! call accepts it only if all of them still match, the manifest still
//! authenticates and records that size and BLAKE3, and the receipt lies in
//! the pusher's private state directory (mode 0700, checked to be this
//! user's). A later `write(2)` to the file changes its change time (user
//! space cannot set that one back; stepping the clock can), and a file
//! replaced under the same name has another inode, so either sends the call
//! down the full path: hash the file and compare it with the manifest. A
//! receipt is used once and then removed; one that is missing, stale or
//! unreadable only costs that full check.
//!
//! What it assumes: nothing but PostgreSQL writes a WAL file, and
//! PostgreSQL writes and fsyncs a segment before it marks it ready (so no
//! write is in flight while the pusher reads it), and the file system keeps
//! sub-second times (a file whose times have no sub-second part gets no
//! receipt: on such file systems a rewrite within the second would not
//! show). Writes through a shared memory map do not update the times.
//! This is less than the trust pgBackRest's asynchronous `archive-push`
//! places in its spool's `.ok` files, which record only that a name was
//! pushed.

use std::fs::Metadata;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::push::PushReport;
use super::{get_named, manifest_key_of, WalManifest};
use crate::repo::Repository;
use crate::{Error, Result};

/// A file's timestamps must be at least this much older than the moment it
/// was opened for its stamp to vouch for its content: file times advance in
/// kernel clock ticks (1–10 ms), so a write in the same tick as an earlier
/// one can leave both times unchanged.
const SETTLE: Duration = Duration::from_millis(50);
/// Receipts nobody used for this long are removed when a pusher starts.
const STALE: Duration = Duration::from_secs(3600);
const MAGIC: &str = "cairn-receipt-1";

/// One version of a file, as `stat(2)` tells it cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of `m`.
    pub fn of(m: &Metadata) -> FileStamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// The stamp that vouches for what was read between `before` (taken when
    /// the file was opened, at `opened`) and `after` (taken once it was read):
    /// `None` if the file changed meanwhile, or if its last change is so
    /// recent that a later write could leave the stamp unchanged.
    /// Also `None` when neither time has a sub-second part: a file system
    /// that keeps whole seconds (FAT, ext4 with small inodes) would not show
    /// a rewrite within the second.
    pub fn settled(before: &Metadata, after: &Metadata, opened: SystemTime) -> Option<FileStamp> {
        let (b, a) = (FileStamp::of(before), FileStamp::of(after));
        let opened_ns = i128::try_from(opened.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos()).ok()?;
        let settled = b.mtime_ns.max(b.ctime_ns) + SETTLE.as_nanos() as i128 <= opened_ns;
        let fine = b.mtime_ns % 1_000_000_000 != 0 || b.ctime_ns % 1_000_000_000 != 0;
        (a == b && settled && fine).then_some(b)
    }

    fn line(&self) -> String {
        format!("{} {} {} {} {}", self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)
    }
}

/// The receipts of one pusher: a directory beside its lock.
pub(crate) struct Receipts {
    dir: PathBuf,
}

impl Receipts {
    pub(crate) fn new(dir: PathBuf) -> Receipts {
        Receipts { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What a receipt says before the stored BLAKE3.
    fn header(repo: &Repository, key: &str, stamp: &FileStamp) -> String {
        let (location, id) = (repo.store().location(), &repo.config().id);
        format!("{MAGIC}\n{location}\n{id}\n{key}\n{}\n", stamp.line())
    }

    /// Records that `r` (stored by this process from `repo`) is durable.
    /// Best effort: a receipt that cannot be written only costs the full check.
    pub(crate) fn write(&self, repo: &Repository, r: &PushReport) {
        let Some(stamp) = r.stamp else { return };
        let text = format!("{}{}\n", Receipts::header(repo, &r.object, &stamp), r.blake3);
        let done = std::fs::DirBuilder::new().mode(0o700).create(&self.dir);
        if done.is_err() && !self.dir.is_dir() {
            return;
        }
        let tmp = self.dir.join(format!(".{}.{}.tmp", r.name, std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            std::fs::rename(&tmp, self.path(&r.name))
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(name = %r.name, error = %e, "no receipt written");
        }
    }

    /// `archive_command`'s check for `path` (WAL file `name` of `stanza`):
    /// the report of an earlier push if this directory holds a receipt that
    /// still matches the file, the repository and the authenticated
    /// manifest. The receipt is removed either way.
    pub(crate) async fn acknowledge(
        &self,
        repo: &Repository,
        stanza: &str,
        path: &Path,
        name: &str,
    ) -> Option<PushReport> {
        let key = manifest_key_of(stanza, name)?;
        let receipt = self.path(name);
        let text = {
            use std::io::Read;
            let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&receipt).ok()?;
            let mut s = String::new();
            f.by_ref().take(4096).read_to_string(&mut s).ok()?;
            s
        };
        let _ = std::fs::remove_file(&receipt);
        let stamp = FileStamp::of(&std::fs::metadata(path).ok()?);
        let Some(blake3) = text.strip_prefix(&Receipts::header(repo, &key, &stamp)).and_then(|t| t.strip_suffix('\n'))
        else {
            tracing::debug!(%name, "receipt does not match the file; checking its content");
            return None;
        };
        // The manifest itself, authenticated: still there, and what was stored.
        match get_named::<WalManifest>(repo, &key).await {
            Ok(Some(m)) if m.name == name && m.size == stamp.size && m.blake3 == blake3 => {}
            _ => {
                tracing::debug!(%name, "the manifest is not what the receipt says; checking the file's content");
                return None;
            }
        }
        let report = PushReport::already_archived(name.to_string(), stamp.size, key, blake3.to_string());
        Some(PushReport { receipt: true, ..report })
    }

    /// Removes receipts nobody used for [`STALE`].
    pub(crate) fn sweep(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for e in entries.flatten() {
            let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if old.is_some_and(|age| age > STALE) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_since_it_was_opened_gets_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let set = |secs_ago: u64| {
            let t = SystemTime::now() - Duration::from_secs(secs_ago);
            std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        };
        // Both times must be old: set_modified changes the change time to now.
        set(10);
        let before = std::fs::metadata(&p).unwrap();
        let opened = SystemTime::now();
        assert_eq!(FileStamp::settled(&before, &before, opened), None, "a change time of now is too recent");
        let later = opened + Duration::from_secs(1);
        let stamp = FileStamp::settled(&before, &before, later).expect("settled");
        assert_eq!(stamp, FileStamp::of(&before));

        std::fs::write(&p, b"two").unwrap();
        let after = std::fs::metadata(&p).unwrap();
        assert_eq!(FileStamp::settled(&before, &after, later), None, "same size, new content");
        assert_ne!(FileStamp::of(&after), stamp);
    }
}
