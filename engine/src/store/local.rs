//! A repository in a local directory: objects are plain files under the
//! root, written so that a crash or power loss never leaves a torn object
//! under its final name.
//!
//! object_store's `LocalFileSystem`, behind a [`RemoteBackend`], serves
//! reads and listings (its listing skips the `…#<digits>` staging names
//! used here); writes and deletes are done here, because it does not fsync
//! and takes no locks:
//! - a put writes a staging file beside the target, fsyncs it, then renames
//!   it into place (overwrite) or hard-links it (create-only: `link` fails if
//!   the name exists), and fsyncs the directories up to the root;
//! - a compare-and-swap update holds an exclusive `flock` on the object's
//!   directory while it compares the current version and renames, so two
//!   updates of one key cannot both win (every cairn process takes the same
//!   lock, and so does a delete, which therefore cannot be undone by an
//!   update that checked before it; a blind overwrite does not, and wins
//!   last as documented).
//!
//! Objects are created with mode 0600 and directories with 0700, whatever
//! the umask: a repository holds key slots and everything it stores is
//! private to the user that writes it (there is no setting for a shared
//! group; an existing directory keeps its mode).
//!
//! A version is the file's inode, modification time and size, and for
//! objects of at most [`HASHED_VERSION_MAX`] bytes (leases, state records:
//! what compare-and-swap is for) a BLAKE3 of the content too: a freed inode
//! is soon reused, and a replacement written within one clock tick with
//! the same size would otherwise carry the version of the object it
//! replaced.

use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::local::LocalFileSystem;

use super::backend::{Backend, ObjectInfo, ObjectMeta, PutMode, Version};
use super::remote::RemoteBackend;
use crate::{Error, Result};

/// A local directory as a [`Backend`].
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// Reads and listings.
    fs: RemoteBackend,
}

impl LocalBackend {
    /// Opens the directory `dir` (created first when `create` is set).
    pub fn open(dir: &Path, create: bool) -> Result<LocalBackend> {
        if create {
            create_dirs(dir)?;
        }
        if !dir.is_dir() {
            return Err(Error::NotFound { what: format!("repository directory {}", dir.display()) });
        }
        let root = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let fs =
            LocalFileSystem::new_with_prefix(&root).map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
        Ok(LocalBackend { root, fs: RemoteBackend::new(std::sync::Arc::new(fs), false) })
    }

    /// object_store reports a file this user may not open as a generic
    /// storage error. Objects are private to the user that wrote them, so
    /// that is the usual cause of a failed read by another user: then the
    /// file system's own error, which names the path, is returned instead
    /// (the CLI tells from it who owns what).
    fn denied(&self, key: &str, e: Error) -> Error {
        if !matches!(e, Error::Storage { .. }) {
            return e;
        }
        let path = self.root.join(key);
        match std::fs::File::open(&path) {
            Err(io) if io.kind() == std::io::ErrorKind::PermissionDenied => Error::io(path, io),
            _ => e,
        }
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version> {
        let (root, key) = (self.root.clone(), key.to_string());
        tokio::task::spawn_blocking(move || put_local(&root, &key, &bytes, &mode))
            .await
            .map_err(|e| Error::Internal(format!("local put task failed: {e}")))?
    }

    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.fs.get_opts(key, range).await.map_err(|e| self.denied(key, e))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let (path, key) = (self.root.join(key), key.to_string());
        // Blocking: a small object is read whole for its version.
        tokio::task::spawn_blocking(move || match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                meta_of(&m, || std::fs::read(&path).map(|b| blake3::hash(&b))).map_err(|e| Error::io(&path, e))
            }
            Ok(_) => Err(Error::NotFound { what: key }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound { what: key }),
            Err(e) => Err(Error::io(&path, e)),
        })
        .await
        .map_err(|e| Error::Internal(format!("local head task failed: {e}")))?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.fs.list(prefix).await.map_err(|e| self.denied(prefix, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.root.join(key);
        tokio::task::spawn_blocking(move || {
            let Some(dir) = path.parent().filter(|d| d.is_dir()) else { return Ok(()) };
            let _lock = lock_dir(dir)?;
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("local delete task failed: {e}")))?
    }

    async fn sync_existing(&self, key: &str) -> Result<()> {
        let (root, path) = (self.root.clone(), self.root.join(key));
        tokio::task::spawn_blocking(move || fsync_local(&root, &path))
            .await
            .map_err(|e| Error::Internal(format!("fsync task failed: {e}")))?
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Mode of every object file (before the umask, which can only remove bits).
pub(crate) const OBJECT_MODE: u32 = 0o600;
/// Mode of every directory created in a repository.
pub(super) const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parents with [`DIR_MODE`].
pub(crate) fn create_dirs(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|e| Error::io(dir, e))
}

/// Objects up to this size have a content hash in their version.
pub const HASHED_VERSION_MAX: u64 = 1 << 20;

/// A local file's metadata and version (see the module docs); `content`
/// hashes the file, and is called only for small files.
fn meta_of(
    m: &std::fs::Metadata,
    content: impl FnOnce() -> std::io::Result<blake3::Hash>,
) -> std::io::Result<ObjectMeta> {
    let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let ns = modified.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut version = format!("{:x}-{ns:x}-{:x}", m.ino(), m.len());
    if m.len() <= HASHED_VERSION_MAX {
        version.push('-');
        version.push_str(&content()?.to_hex()[..16]);
    }
    Ok(ObjectMeta { size: m.len(), modified, version: Version(version) })
}

/// A local put; see the module docs.
fn put_local(root: &Path, key: &str, bytes: &[u8], mode: &PutMode) -> Result<Version> {
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    create_dirs(dir)?;
    let staged = super::staged::staging_path(&path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(OBJECT_MODE)
        .open(&staged)
        .and_then(|f| super::direct::write_object(&f, bytes).and_then(|_| f.sync_all()).and_then(|_| f.metadata()))
        .and_then(|m| meta_of(&m, || Ok(blake3::hash(bytes))));
    let meta = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(Error::io(&staged, e));
        }
    };
    // Held until the end of the function: see the module docs.
    let _lock = match mode {
        PutMode::Update(_) => match lock_dir(dir) {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        },
        _ => None,
    };
    let placed = match mode {
        PutMode::Overwrite => std::fs::rename(&staged, &path),
        PutMode::Create => std::fs::hard_link(&staged, &path),
        PutMode::Update(expected) => {
            let current = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| meta_of(&m, || std::fs::read(&path).map(|b| blake3::hash(&b))).ok())
                .map(|m| m.version);
            if current.as_ref() != Some(expected) {
                let _ = std::fs::remove_file(&staged);
                return Err(Error::Precondition { what: key.to_string() });
            }
            std::fs::rename(&staged, &path)
        }
    };
    if matches!(mode, PutMode::Create) || placed.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    match placed {
        Ok(()) => {
            // A pack directory is where a killed put leaves a large
            // `#<digits>` file behind; sweep it as staging does. (Not
            // manifest directories: thousands of names per push to list,
            // for leftovers of a few hundred bytes.)
            if key.starts_with("packs/") {
                if let Ok(now) = std::fs::metadata(&path).and_then(|m| m.modified()) {
                    super::staged::remove_stale(dir, now);
                }
            }
            fsync_local(root, &path)?;
            Ok(meta.version)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists { what: key.to_string() }),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// An exclusive lock on a directory, released when the handle is dropped.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| Error::io(dir, e.into()))?;
    Ok(f)
}

/// Makes a local object's name durable: the file, then every directory from
/// its parent up to the repository root (a new `packs/ab/` entry must reach
/// the disk too; fsync of an unchanged directory costs next to nothing).
pub(crate) fn fsync_local(root: &Path, path: &Path) -> Result<()> {
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| Error::io(p, e));
    sync(path)?;
    let mut dir = path.parent();
    while let Some(d) = dir {
        sync(d)?;
        if d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BackendExt;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn objects_are_0600_and_directories_0700_whatever_the_umask_allows() {
        // The umask of the test process (usually 022) would make them 0644
        // and 0755: the modes asked for must be private themselves.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::open(&root, true).unwrap();
        b.put_create("keys/0123456789abcdef", Bytes::from_static(b"slot")).await.unwrap();
        b.put("snapshots/ab", Bytes::from_static(b"overwritten")).await.unwrap();
        let v = b.put_opts("gc/state", Bytes::from_static(b"1"), PutMode::Create).await.unwrap();
        b.put_opts("gc/state", Bytes::from_static(b"2"), PutMode::Update(v)).await.unwrap();
        for d in ["", "keys", "snapshots", "gc"] {
            assert_eq!(mode(&root.join(d)), 0o700, "directory {d:?}");
        }
        for f in ["keys/0123456789abcdef", "snapshots/ab", "gc/state"] {
            assert_eq!(mode(&root.join(f)), 0o600, "object {f}");
        }
    }

    #[test]
    fn small_objects_carry_their_content_in_the_version() {
        // A reused inode, written within one clock tick with the same size,
        // has the same metadata: only the content hash tells them apart.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease");
        std::fs::write(&path, b"aaaa").unwrap();
        let m = std::fs::metadata(&path).unwrap();
        let a = meta_of(&m, || Ok(blake3::hash(b"aaaa"))).unwrap();
        let b = meta_of(&m, || Ok(blake3::hash(b"bbbb"))).unwrap();
        assert_ne!(a.version, b.version);
        // Large objects are not read for their version.
        std::fs::write(&path, vec![0u8; HASHED_VERSION_MAX as usize + 1]).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        let big = meta_of(&m, || panic!("a large object is not hashed")).unwrap();
        assert_eq!(big.version.0.matches('-').count(), 2);
    }
}
