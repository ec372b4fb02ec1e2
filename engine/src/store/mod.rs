//! Object storage: the [`Backend`] contract, its implementations, the
//! wrappers that add behaviour around any of them, and [`Store`], the handle
//! the rest of the engine holds.
//!
//! # Layout
//! - [`backend`](Backend): the contract (durability, atomicity, conditional
//!   create and compare-and-swap update, typed errors) and [`BackendExt`].
//! - [`LocalBackend`] (`local.rs`): a local directory, fsynced, with
//!   staging ([`Staged`]) and direct reads ([`LocalObject`]).
//! - [`RemoteBackend`] (`remote.rs`): any `object_store` store — S3, and
//!   the in-memory store of unit tests.
//! - Wrappers, each in its own file and each itself a [`Backend`]:
//!   [`Retry`], [`Limit`], [`Metered`] and [`Faulty`].
//! - [`Fallback`] (`fallback.rs`): one repository read from several
//!   copy-compatible stores, for the restore paths.
//! - [`conformance`]: the contract as test functions, run against every
//!   backend and wrapper by the project's tests.
//!
//! Keys are relative to the repository root (`packs/ab/…`, `index/…`).

mod backend;
#[doc(hidden)]
pub mod conformance;
mod direct;
mod fallback;
mod fault;
mod limit;
mod local;
mod location;
mod metrics;
mod remote;
mod retry;
mod staged;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

pub use backend::{kind_of, Backend, BackendExt, ObjectInfo, ObjectMeta, PutMode, Version};
pub use fallback::{CorruptCopy, Fallback, Served};
pub use fault::{Fault, FaultRule, Faults, Faulty, Op};
pub use limit::Limit;
pub use local::LocalBackend;
pub(crate) use local::{create_dirs, fsync_local, OBJECT_MODE};
pub use location::Location;
pub use metrics::{Metered, Metrics, MetricsRow};
pub use remote::{retry_config, RemoteBackend};
pub use retry::{Retry, RetryPolicy};
pub(crate) use staged::{is_staging_name, staging_path};
pub use staged::{start_writeback, Staged};

use crate::{Error, Result};

/// The repository's storage: a [`Backend`] (possibly wrapped) and where it
/// is. Cheap to clone. Every [`BackendExt`] convenience works on it.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    location: Location,
    /// The [`Fallback`] under the wrappers, when this store reads from
    /// several.
    fallback: Option<Arc<Fallback>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.location)
    }
}

impl Store {
    /// Opens the store named by `location`. A local directory is created when
    /// `create` is set (for `init`).
    pub fn open(location: &Location, create: bool) -> Result<Store> {
        Ok(Store { backend: location.build(create)?, location: location.clone(), fallback: None })
    }

    /// An in-memory store, for unit tests.
    pub fn memory() -> Store {
        let inner = Arc::new(object_store::memory::InMemory::new());
        Store { backend: Arc::new(RemoteBackend::new(inner, false)), location: Location::Memory, fallback: None }
    }

    /// This store with `wrap` put around its backend (a [`Retry`],
    /// [`Limit`], [`Metered`] or [`Faulty`]); the location is unchanged.
    pub fn wrapped<B: Backend>(self, wrap: impl FnOnce(Arc<dyn Backend>) -> B) -> Store {
        Store { backend: Arc::new(wrap(self.backend)), location: self.location, fallback: self.fallback }
    }

    /// `primary` read together with `others`, copy-compatible stores of the
    /// same repository, through a [`Fallback`]: reads go to the first that
    /// answers, writes to `primary` only. The location is the primary's.
    pub fn with_fallbacks(primary: Store, others: Vec<Store>) -> Store {
        let location = primary.location.clone();
        let mut members = vec![primary];
        members.extend(others);
        let f = Arc::new(Fallback::new(members));
        Store { backend: f.clone(), location, fallback: Some(f) }
    }

    /// The [`Fallback`] this store reads through, if any: what each member
    /// served, the bad copies found, and the members themselves.
    pub fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_deref()
    }

    /// The stores holding copies of this repository, in the order they are
    /// asked: the members of its [`Fallback`], or none.
    pub fn members(&self) -> &[Store] {
        self.fallback.as_deref().map(Fallback::members).unwrap_or_default()
    }

    /// Where this store is, for messages (no credentials).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The local root directory when the backend (after its wrappers) lets
    /// callers use its files directly.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.backend.local_root()
    }

    /// Opens `key` of a local directory for [`LocalObject::read_at`]: ranged
    /// reads straight into the caller's buffers, with no intermediate copy and
    /// no hop through the blocking pool. `None` when the store is not a local
    /// directory (use [`BackendExt::get_range`]).
    pub fn open_local(&self, key: &str) -> Result<Option<LocalObject>> {
        let Some(root) = self.local_root() else { return Ok(None) };
        let path = root.join(key);
        match std::fs::File::open(&path) {
            Ok(file) => Ok(Some(LocalObject { file, path, key: key.to_string() })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound { what: key.to_string() }),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

#[async_trait::async_trait]
impl Backend for Store {
    async fn put_opts(&self, key: &str, bytes: bytes::Bytes, mode: PutMode) -> Result<Version> {
        self.backend.put_opts(key, bytes, mode).await
    }
    async fn get_opts(&self, key: &str, range: Option<std::ops::Range<u64>>) -> Result<bytes::Bytes> {
        self.backend.get_opts(key, range).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.backend.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.backend.list(prefix).await
    }
    async fn list_after(&self, prefix: &str, offset: &str, limit: Option<usize>) -> Result<Vec<ObjectInfo>> {
        self.backend.list_after(prefix, offset, limit).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.backend.delete(key).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.backend.delete_many(keys).await
    }
    async fn sync_existing(&self, key: &str) -> Result<()> {
        self.backend.sync_existing(key).await
    }
    fn local_root(&self) -> Option<&FsPath> {
        self.backend.local_root()
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
    /// [`BackendExt::get_range`].
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
