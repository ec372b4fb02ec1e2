//! Receipts: how `wal push --ahead`'s background pusher tells
//! `archive_command`'s own call for a file that it stored that file, so the
//! call need not read and hash 16 MiB again.
//!
//! # Why a receipt is enough
//! The pusher writes a receipt only after the file's manifest is durable,
//! and only for a file that provably did not change while it was read (see
//! [`FileStamp::settled`]). The receipt names the repository (its random
//! id), the manifest's key and the file's stamp: device, inode, size, and
//! modification and change times in nanoseconds. `archive_command`'s call
//! accepts it only if all of them still match, the manifest still exists,
//! and the receipt lies in the pusher's private state directory (mode 0700,
//! checked to be this user's). A write to the file after it was read
//! changes its change time (user space cannot set that one back), and a
//! file replaced under the same name has another inode, so either sends the
//! call down the full path: hash the file and compare it with the manifest.
//! A receipt is used once and then removed; one that is missing, stale or
//! unreadable only costs that full check.
//!
//! This is the same trust pgBackRest's asynchronous `archive-push` places
//! in its spool's `.ok` files, with the file's identity checked on top.

use std::fs::Metadata;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::manifest_key;
use super::push::{kind_of, PushReport};
use crate::repo::Repository;
use crate::{Error, Result};

/// A file's timestamps must be at least this much older than the moment it
/// was opened for its stamp to vouch for its content: file times advance in
/// kernel clock ticks (1–10 ms), so a write in the same tick as an earlier
/// one can leave both times unchanged.
const SETTLE: Duration = Duration::from_millis(50);
/// Receipts nobody used for this long are removed by the next pusher.
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
    pub fn settled(before: &Metadata, after: &Metadata, opened: SystemTime) -> Option<FileStamp> {
        let (b, a) = (FileStamp::of(before), FileStamp::of(after));
        let opened_ns = i128::try_from(opened.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos()).ok()?;
        let settled = b.mtime_ns.max(b.ctime_ns) + SETTLE.as_nanos() as i128 <= opened_ns;
        (a == b && settled).then_some(b)
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

    /// Records that `r` (stored by this process from `repo`) is durable.
    /// Best effort: a receipt that cannot be written only costs the full check.
    pub(crate) fn write(&self, repo: &Repository, r: &PushReport) {
        let Some(stamp) = r.stamp else { return };
        let text = format!("{MAGIC}\n{}\n{}\n{}\n", repo.config().id, r.object, stamp.line());
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
    /// still matches the file, the repository and a manifest that exists.
    /// The receipt is removed either way.
    pub(crate) async fn acknowledge(
        &self,
        repo: &Repository,
        stanza: &str,
        path: &Path,
        name: &str,
    ) -> Option<PushReport> {
        if !super::ahead::is_wal_file_name(name) {
            return None;
        }
        let receipt = self.path(name);
        let text = {
            use std::io::Read;
            let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&receipt).ok()?;
            let mut s = String::new();
            f.by_ref().take(4096).read_to_string(&mut s).ok()?;
            s
        };
        let _ = std::fs::remove_file(&receipt);
        let tli = u32::from_str_radix(&name[..8], 16).ok()?;
        let key = manifest_key(stanza, tli, name);
        let stamp = FileStamp::of(&std::fs::metadata(path).ok()?);
        let want = format!("{MAGIC}\n{}\n{key}\n{}\n", repo.config().id, stamp.line());
        if text != want {
            tracing::debug!(%name, "receipt does not match the file; checking its content");
            return None;
        }
        match repo.store().exists(&key).await {
            Ok(true) => {}
            _ => return None,
        }
        Some(PushReport {
            name: name.to_string(),
            kind: kind_of(name),
            size: stamp.size,
            already_archived: true,
            stored_bytes: 0,
            object: key,
            receipt: true,
            stamp: None,
        })
    }

    /// Removes receipts nobody used for an hour (archive_command's call
    /// removes the ones it uses; PostgreSQL may never call for some).
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
