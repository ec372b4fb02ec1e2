//! The storage contract: [`Backend`], the few operations every store
//! provides, and [`BackendExt`], the conveniences built on them.

use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Error, Result};

/// An opaque token naming one written state of an object (an S3 ETag; on a
/// local directory the inode, modification time and size). Two versions of
/// one key are equal only if nothing replaced the object in between.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// How a put treats an object that already has the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there (last writer wins).
    Overwrite,
    /// Write only if no object has the key; otherwise
    /// [`Error::AlreadyExists`].
    Create,
    /// Write only if the object's current version is this one (compare and
    /// swap); otherwise, or if the object is missing,
    /// [`Error::Precondition`].
    Update(Version),
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the repository root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the store last wrote it, on the store's own clock.
    pub modified: std::time::SystemTime,
}

/// What `head` says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// When the store last wrote it, on the store's own clock.
    pub modified: std::time::SystemTime,
    /// The version a later [`PutMode::Update`] must name.
    pub version: Version,
}

/// The operations a repository needs from storage.
///
/// # Contract
/// Every implementation, and every wrapper around one, keeps these promises;
/// [`super::conformance`] checks them and runs against each backend.
/// - **Keys** are relative to the repository root, `/`-separated
///   (`packs/ab/…`, `index/…`); a backend maps them to its own namespace.
/// - **Durability:** a put returns `Ok` only once the object survives a crash
///   of this host and, for a local directory, a power loss (file and
///   directory entries fsynced).
/// - **Atomicity:** readers see the old object, no object, or the new object,
///   never a prefix or a mixture.
/// - **Conditional writes:** [`PutMode::Create`] fails with
///   [`Error::AlreadyExists`] if the key exists; [`PutMode::Update`] fails
///   with [`Error::Precondition`] unless the current version is the one
///   named. Both are atomic against each other on a local directory and on
///   stores that implement `If-None-Match`/`If-Match` atomically (see
///   shared/s3/README.md: emulators do not).
/// - **Reads** of a range past the end fail; a short read is never returned
///   as success (see [`BackendExt::get_range`]).
/// - **Errors** are typed: [`Error::NotFound`] for a missing key (deleting a
///   missing key is not an error), [`Error::Storage`] with `retryable` set by
///   the backend that knows whether its transport may recover. Every error
///   names the object.
/// - **Wrappers** forward every method, including [`Backend::sync_existing`];
///   a wrapper that must see every byte returns `None` from
///   [`Backend::local_root`], so callers take the generic path through it.
#[async_trait]
pub trait Backend: std::fmt::Debug + Send + Sync + 'static {
    /// Writes `bytes` under `key` durably and atomically, as `mode` allows,
    /// and returns the new version.
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version>;

    /// Reads the object, or `range` of it.
    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes>;

    /// Size, store time and version of one object.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Every object whose key starts with the path `prefix` (whole
    /// segments: `"packs"` lists `packs/…`), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// The objects [`Backend::list`] would return whose key sorts after
    /// `offset`, sorted, at most `limit` of them (S3's `start-after`: the
    /// store returns only those, so a long listing's tail costs one
    /// request). The default filters a whole listing; a wrapper forwards
    /// it so the saving reaches the backend.
    async fn list_after(&self, prefix: &str, offset: &str, limit: Option<usize>) -> Result<Vec<ObjectInfo>> {
        let mut out: Vec<ObjectInfo> =
            self.list(prefix).await?.into_iter().filter(|o| o.key.as_str() > offset).collect();
        out.truncate(limit.unwrap_or(usize::MAX));
        Ok(out)
    }

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Deletes many objects, missing ones included, as few requests as the
    /// store allows (S3's DeleteObjects takes up to 1000 keys); on an error
    /// some may be gone and some not, and calling again finishes the job.
    /// The default deletes them one by one, a few at a time.
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for chunk in keys.chunks(8) {
            let mut pending = Vec::with_capacity(chunk.len());
            for k in chunk {
                pending.push(self.delete(k));
            }
            futures::future::try_join_all(pending).await?;
        }
        Ok(())
    }

    /// Makes sure an object another process wrote is durable before it is
    /// relied on (a local put by another process may not have fsynced yet).
    /// Remote stores acknowledge only durable writes: nothing to do.
    async fn sync_existing(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    /// The directory holding the objects, when the backend is a local
    /// directory whose files callers may read and stage directly.
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// Conveniences over any [`Backend`].
#[async_trait]
pub trait BackendExt: Backend {
    /// Writes an object durably, replacing any previous one.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.put_opts(key, bytes, PutMode::Overwrite).await.map(drop)
    }

    /// Writes an object durably only if no object has that key.
    async fn put_create(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.put_opts(key, bytes, PutMode::Create).await.map(drop)
    }

    /// Reads a whole object.
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_opts(key, None).await
    }

    /// Reads `range` of an object; fewer bytes than asked for is corruption.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let want = range.end - range.start;
        let b = self.get_opts(key, Some(range.clone())).await?;
        if b.len() as u64 != want {
            return Err(Error::corrupt(
                key,
                Some(range.start),
                format!("short read: wanted {want} bytes, got {}", b.len()),
            ));
        }
        Ok(b)
    }

    /// The size of an object.
    async fn size(&self, key: &str) -> Result<u64> {
        Ok(self.head(key).await?.size)
    }

    /// True when the object exists.
    async fn exists(&self, key: &str) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}

/// Forwards every method to the boxed backend, so `Arc<dyn Backend>` is a
/// backend that wrappers can hold.
#[async_trait]
impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version> {
        (**self).put_opts(key, bytes, mode).await
    }
    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        (**self).get_opts(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        (**self).head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        (**self).list(prefix).await
    }
    async fn list_after(&self, prefix: &str, offset: &str, limit: Option<usize>) -> Result<Vec<ObjectInfo>> {
        (**self).list_after(prefix, offset, limit).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        (**self).delete(key).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        (**self).delete_many(keys).await
    }
    async fn sync_existing(&self, key: &str) -> Result<()> {
        (**self).sync_existing(key).await
    }
    fn local_root(&self) -> Option<&Path> {
        (**self).local_root()
    }
}

/// Which kind of repository object a key names, from its first segment:
/// what metrics and fault rules group by.
pub fn kind_of(key: &str) -> &'static str {
    match key.split('/').next().unwrap_or("") {
        "config" => "config",
        "keys" | "key-removals" => "keys",
        "packs" => "packs",
        "index" => "index",
        "snapshots" => "snapshots",
        "wal" | "walbehind" | "waljournal" => "wal",
        "pins" => "pins",
        "leases" => "leases",
        "gc" => "gc",
        "drills" => "drills",
        "check" => "check",
        _ => "other",
    }
}
