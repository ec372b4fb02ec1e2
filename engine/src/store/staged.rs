//! An object written while it is produced, named only when it is complete:
//! a pack is named by the hash of its bytes, known at the end.
//!
//! Only local directories stage: the bytes go to `<dir>/staged-<pid>#<digits>`
//! (object_store's listing ignores `#<digits>` names, like a local put's
//! staging files) as they come, and the kernel is asked to start writing
//! them to disk at once, so the fsync in [`Staged::commit`] has little left
//! to wait for. Nothing has the final name until `commit` (fsync, rename,
//! directory fsyncs); a staged file that is never committed is removed when
//! dropped, and one left by a killed process is never listed and is removed
//! by a later [`Store::stage`] in the same directory once it has not been
//! written to for [`STALE_AFTER`] (as is a killed put's leftover in a pack
//! directory, by the next pack put there).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::local::{create_dirs, fsync_local, OBJECT_MODE};
use super::Store;
use crate::{Error, Result};

/// A staged file not written to for this long was left by a killed (or
/// hour-long stalled) process. Removing it is safe either way: nothing
/// refers to a staged file, and a stalled writer's commit fails, so its
/// push fails and is retried rather than pointing at a missing pack.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A local object being written; see the module docs.
#[derive(Debug)]
pub struct Staged {
    file: File,
    path: PathBuf,
    root: PathBuf,
    written: u64,
    committed: bool,
}

impl Store {
    /// Starts a staged object under `dir` (a key prefix such as `packs`), or
    /// `None` when the store is not a local directory (remote stores take
    /// whole objects with [`Backend::put`](crate::store::BackendExt::put)).
    pub fn stage(&self, dir: &str) -> Result<Option<Staged>> {
        let Some(root) = self.local_root() else { return Ok(None) };
        let d = root.join(dir);
        create_dirs(&d)?;
        let path = staging_path(&d.join(format!("staged-{}", std::process::id())));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(OBJECT_MODE)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // "Now" as the file system sees it (on a network file system the
        // server's clock stamps mtimes, not ours).
        if let Ok(now) = file.metadata().and_then(|m| m.modified()) {
            remove_stale(&d, now);
        }
        Ok(Some(Staged { file, path, root: root.to_path_buf(), written: 0, committed: false }))
    }
}

/// `path` with a fresh staging suffix (`…#<digits>`): a name no listing
/// shows, for a file written before it takes its own name.
pub(crate) fn staging_path(path: &Path) -> PathBuf {
    let mut staged = path.as_os_str().to_os_string();
    staged.push(format!("#{}", rand::random::<u64>() % 1_000_000_000_000));
    PathBuf::from(staged)
}

/// Whether `name` is a staging file's (`…#<digits>`): never an object.
pub(crate) fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the staging files in `dir` (staged packs, and the `…#<digits>`
/// files of puts) that nobody has written to for [`STALE_AFTER`] before
/// `now`. Best effort: a failure only leaves the file for the next caller.
pub(super) fn remove_stale(dir: &std::path::Path, now: std::time::SystemTime) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_staging_name(name) {
            continue;
        }
        let idle = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| now.duration_since(t).ok());
        if idle.is_some_and(|d| d > STALE_AFTER) && std::fs::remove_file(e.path()).is_ok() {
            tracing::info!(file = %e.path().display(), "removed a staging file left by a killed process");
        }
    }
}

impl Staged {
    /// Appends `bytes` and starts writing them to disk.
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(|e| Error::io(&self.path, e))?;
        start_writeback(&self.file, self.written, bytes.len());
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Makes the object durable under `key` (replacing an object of that
    /// name: callers stage content-addressed objects, so a replaced one had
    /// the same bytes).
    pub fn commit(mut self, key: &str) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        let dest = self.root.join(key);
        let dir = dest.parent().unwrap_or(&self.root);
        create_dirs(dir)?;
        std::fs::rename(&self.path, &dest).map_err(|e| match e.kind() {
            // Swept as stale (an hour without a write) while this process stalled.
            std::io::ErrorKind::NotFound => Error::io(&self.path, e),
            _ => Error::io(&dest, e),
        })?;
        self.committed = true;
        fsync_local(&self.root, &dest)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `f` to disk
/// now. On Linux `POSIX_FADV_DONTNEED` starts writeback of the dirty pages
/// in the range (and drops none of them: they are dirty); it is only a
/// hint, so a failure is ignored.
pub fn start_writeback(f: &File, offset: u64, len: usize) {
    let _ = rustix::fs::fadvise(f, offset, std::num::NonZeroU64::new(len as u64), rustix::fs::Advice::DontNeed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Backend, BackendExt, Location};

    #[tokio::test]
    async fn staged_objects_appear_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), true).unwrap();
        let mut s = store.stage("packs").unwrap().expect("local stores stage");
        s.append(b"hello ").unwrap();
        s.append(b"world").unwrap();
        assert_eq!(s.len(), 11);
        assert!(store.list("packs").await.unwrap().is_empty(), "a staged file is not listed");
        s.commit("packs/ab/abcdef").unwrap();
        assert_eq!(store.get("packs/ab/abcdef").await.unwrap().as_ref(), b"hello world");
        assert_eq!(store.list("packs").await.unwrap().len(), 1);

        let mut dropped = store.stage("packs").unwrap().unwrap();
        dropped.append(b"partial").unwrap();
        let p = dropped.path.clone();
        assert!(p.exists());
        drop(dropped);
        assert!(!p.exists(), "an uncommitted staged file is removed");
        assert!(Store::memory().stage("packs").unwrap().is_none());
    }

    #[test]
    fn staged_objects_and_their_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), true).unwrap();
        let mut s = store.stage("packs").unwrap().unwrap();
        s.append(b"pack").unwrap();
        assert_eq!(mode(&s.path), 0o600, "the staged file");
        s.commit("packs/cd/cdef").unwrap();
        assert_eq!(mode(&dir.path().join("packs/cd/cdef")), 0o600);
        assert_eq!(mode(&dir.path().join("packs")), 0o700);
        assert_eq!(mode(&dir.path().join("packs/cd")), 0o700);
    }

    #[test]
    fn staging_removes_files_killed_processes_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), true).unwrap();
        let packs = dir.path().join("packs");
        std::fs::create_dir_all(&packs).unwrap();
        let old = std::time::SystemTime::now() - STALE_AFTER - std::time::Duration::from_secs(60);
        let left = |name: &str, modified: std::time::SystemTime| {
            let p = packs.join(name);
            std::fs::File::create(&p).unwrap().set_modified(modified).unwrap();
            p
        };
        let stale = left("staged-4242#123456", old);
        let live = left("staged-4243#654321", std::time::SystemTime::now());
        let not_staged = left("0a1b2c", old);
        let not_digits = left("0a1b2c#x1", old);
        let s = store.stage("packs").unwrap().unwrap();
        assert!(!stale.exists(), "an idle staged file is removed");
        assert!(live.exists(), "a staged file written to recently is kept");
        assert!(not_staged.exists() && not_digits.exists(), "only staging names are considered");
        assert!(s.path.exists());
    }

    #[tokio::test]
    async fn a_pack_put_removes_put_leftovers_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), true).unwrap();
        let ab = dir.path().join("packs/ab");
        std::fs::create_dir_all(&ab).unwrap();
        let old = std::time::SystemTime::now() - STALE_AFTER - std::time::Duration::from_secs(60);
        let stale = ab.join("abcdef#42");
        std::fs::File::create(&stale).unwrap().set_modified(old).unwrap();
        let live = ab.join("ab1234#43");
        std::fs::write(&live, b"being written").unwrap();
        store.put("packs/ab/ab9999", bytes::Bytes::from_static(b"pack")).await.unwrap();
        assert!(!stale.exists(), "an hour-old put leftover is removed");
        assert!(live.exists(), "a fresh one is kept");
        assert_eq!(store.get("packs/ab/ab9999").await.unwrap().as_ref(), b"pack");
    }
}
