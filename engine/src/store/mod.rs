//! Object storage: one [`Store`] in front of any `object_store` backend.
//!
//! # Contract
//! - `put` returns only when the object is durable: on a local directory the
//!   bytes are written to a staging file and fsynced before the name appears
//!   (object_store's `LocalFileSystem` does not fsync, so local puts are done
//!   here), then the directories up to the root are fsynced;
//!   on S3 the PUT has completed.
//! - `put` of a whole object is atomic: readers see the old object, no
//!   object, or the new object, never a prefix (staged file + rename locally,
//!   single PUT remotely).
//! - Errors name the object. Transient HTTP failures are retried with
//!   exponential backoff by object_store's client (see [`retry_config`]); what
//!   is left is reported with `retryable` set by kind.
//! - Keys are relative to the repository root (`packs/ab/…`, `index/…`).

mod location;
mod staged;

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

pub use location::Location;
pub use staged::{start_writeback, Staged};

use crate::{Error, Result};

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// The repository's storage.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    location: Location,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.location)
    }
}

/// Retry policy for remote stores: up to 8 retries with backoff from 100 ms,
/// giving up after 3 minutes.
pub fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 8,
        retry_timeout: Duration::from_secs(180),
    }
}

fn map_err(key: &str, e: object_store::Error) -> Error {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => Error::NotFound { what: key.to_string() },
        E::AlreadyExists { .. } | E::Precondition { .. } => Error::AlreadyExists { what: key.to_string() },
        other => {
            // object_store has already retried transient HTTP failures; what
            // remains from a remote client may still be a network outage.
            let retryable = matches!(other, E::Generic { store, .. } if store != "LocalFileSystem");
            Error::Storage { object: key.to_string(), retryable, source: Box::new(other) }
        }
    }
}

impl Store {
    /// Opens the store named by `location`. A local directory is created when
    /// `create` is set (for `init`).
    pub fn open(location: &Location, create: bool) -> Result<Store> {
        let (inner, local_root) = location.build(create)?;
        Ok(Store { inner, local_root, location: location.clone() })
    }

    /// An in-memory store, for unit tests.
    pub fn memory() -> Store {
        Store { inner: Arc::new(object_store::memory::InMemory::new()), local_root: None, location: Location::Memory }
    }

    /// Where this store is, for messages (no credentials).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The local root directory when the store is a local directory.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    /// Writes an object durably, replacing any previous one.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.put_mode(key, bytes, PutMode::Overwrite).await
    }

    /// Writes an object durably only if no object has that key.
    pub async fn put_create(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.put_mode(key, bytes, PutMode::Create).await
    }

    async fn put_mode(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<()> {
        if let Some(root) = &self.local_root {
            let (root, key) = (root.clone(), key.to_string());
            let create = matches!(mode, PutMode::Create);
            return tokio::task::spawn_blocking(move || put_local(&root, &key, &bytes, create))
                .await
                .expect("local put task panicked");
        }
        let opts = PutOptions { mode, ..Default::default() };
        self.inner.put_opts(&Path::from(key), PutPayload::from(bytes), opts).await.map_err(|e| map_err(key, e))?;
        Ok(())
    }

    /// Makes sure an object some other process wrote is durable before it is
    /// relied on (a local put by another process may not have fsynced yet).
    pub async fn sync_existing(&self, key: &str) -> Result<()> {
        if let Some(root) = &self.local_root {
            let path = root.join(key);
            let root = root.clone();
            tokio::task::spawn_blocking(move || fsync_local(&root, &path)).await.expect("fsync task panicked")?;
        }
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let r = self.inner.get(&Path::from(key)).await.map_err(|e| map_err(key, e))?;
        r.bytes().await.map_err(|e| map_err(key, e))
    }

    /// Reads `range` of an object.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let b = self.inner.get_range(&Path::from(key), range.clone()).await.map_err(|e| map_err(key, e))?;
        if b.len() as u64 != want {
            return Err(Error::corrupt(
                key,
                Some(range.start),
                format!("short read: wanted {want} bytes, got {}", b.len()),
            ));
        }
        Ok(b)
    }

    /// Opens `key` of a local directory for [`LocalObject::read_at`]: ranged
    /// reads straight into the caller's buffers, with no intermediate copy and
    /// no hop through the blocking pool. `None` when the store is not a local
    /// directory (use [`Store::get_range`]).
    pub fn open_local(&self, key: &str) -> Result<Option<LocalObject>> {
        let Some(root) = &self.local_root else { return Ok(None) };
        let path = root.join(key);
        match std::fs::File::open(&path) {
            Ok(file) => Ok(Some(LocalObject { file, path, key: key.to_string() })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound { what: key.to_string() }),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// The size of an object.
    pub async fn size(&self, key: &str) -> Result<u64> {
        let m = self.inner.head(&Path::from(key)).await.map_err(|e| map_err(key, e))?;
        Ok(m.size)
    }

    /// True when the object exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.size(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lists every object under `prefix` (e.g. `"packs"`), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = Path::from(prefix);
        let mut out: Vec<ObjectInfo> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| ObjectInfo { key: m.location.to_string(), size: m.size })
            .try_collect()
            .await
            .map_err(|e| map_err(prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(key, e)),
        }
    }
}

/// An object of a local directory open for reading; see [`Store::open_local`].
#[derive(Debug)]
pub struct LocalObject {
    file: std::fs::File,
    path: PathBuf,
    key: String,
}

impl LocalObject {
    /// Fills `buf` with the object's bytes from `offset` on (blocking). An
    /// object that ends before `buf` is full is corrupt, as with
    /// [`Store::get_range`].
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(&self.key, Some(offset), format!("short read: wanted {} bytes", buf.len()))
            } else {
                Error::io(&self.path, e)
            }
        })
    }
}

/// A local put: the bytes go to a staging file beside the target (named
/// `…#<digits>`, which object_store's listing ignores), which is fsynced and
/// only then renamed into place (overwrite) or hard-linked (create-only:
/// fails if the name exists). So a crash never leaves a torn or empty object
/// under its final name, and a create-only name is never replaced.
fn put_local(root: &FsPath, key: &str, bytes: &[u8], create: bool) -> Result<()> {
    use std::io::Write;
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut staged = path.clone().into_os_string();
    staged.push(format!("#{}", rand::random::<u64>() % 1_000_000_000_000));
    let staged = PathBuf::from(staged);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staged)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(Error::io(&staged, e));
    }
    let placed = if create { std::fs::hard_link(&staged, &path) } else { std::fs::rename(&staged, &path) };
    if create || placed.is_err() {
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
                    staged::remove_stale(dir, now);
                }
            }
            fsync_local(root, &path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists { what: key.to_string() }),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Makes a local object's name durable: the file, then every directory from
/// its parent up to the repository root (a new `packs/ab/` entry must reach
/// the disk too; fsync of an unchanged directory costs next to nothing).
fn fsync_local(root: &FsPath, path: &FsPath) -> Result<()> {
    let sync = |p: &FsPath| std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| Error::io(p, e));
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
