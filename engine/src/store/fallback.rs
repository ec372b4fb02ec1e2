//! [`Fallback`]: one repository read from several copy-compatible stores
//! (the primary and the secondaries `cairn copy` fills), for the restore
//! paths — `restore`, `wal fetch`, `pg restore`, `redis restore`.
//!
//! # Contract
//! - **Reads** (`get_opts`, `head`) go to the first store; when it is
//!   unreachable (a storage, connection or I/O error, after the retries of
//!   its own wrappers) or answers [`Error::NotFound`], the next is asked,
//!   and so on. A `NotFound` comes back only when every store said so; when
//!   some store could not be asked, its error comes back instead, so an
//!   outage is never mistaken for a missing object.
//! - **Listings** are the union of every store that answers, sorted by key
//!   (an object only a secondary holds is found); they fail only when no
//!   store answers.
//! - **Writes and deletes** go to the first store only. These are restore
//!   paths: nothing here writes to a secondary, and a command that backs up
//!   never reads through a `Fallback`.
//! - **Corruption** is not a reason to ask the next store at this level
//!   (the bytes are not checked here); a reader that authenticates what it
//!   read asks [`super::Store::members`] for the other copies and reports
//!   a bad one with [`Fallback::report_corrupt`].
//! - [`Backend::local_root`] is `None`: reads must pass through here to fall
//!   back, so callers take the generic path.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::backend::{Backend, ObjectInfo, ObjectMeta, PutMode, Version};
use super::Store;
use crate::{Error, Result};

/// Reads from the first of several stores that holds an object.
#[derive(Debug)]
pub struct Fallback {
    members: Vec<Store>,
    served: Vec<Counter>,
    corrupt: Mutex<Vec<CorruptCopy>>,
}

#[derive(Debug, Default)]
struct Counter {
    reads: AtomicU64,
    bytes: AtomicU64,
}

/// What one store served during a command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Served {
    /// The store's location (no credentials).
    pub location: String,
    /// Objects and ranges read from it.
    pub reads: u64,
    /// Bytes read from it.
    pub bytes: u64,
}

/// A copy of an object that failed authentication in one store (and was
/// read from another, when `replaced`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CorruptCopy {
    /// The store holding the bad copy.
    pub location: String,
    /// The object key.
    pub object: String,
    /// Where in the object the bad bytes start, when known.
    pub offset: Option<u64>,
    /// What failed.
    pub detail: String,
}

impl Fallback {
    /// Reads from `members` in order (at least one).
    pub fn new(members: Vec<Store>) -> Fallback {
        assert!(!members.is_empty(), "a fallback needs a store");
        let served = members.iter().map(|_| Counter::default()).collect();
        Fallback { members, served, corrupt: Mutex::new(Vec::new()) }
    }

    /// The stores, in the order they are asked.
    pub fn members(&self) -> &[Store] {
        &self.members
    }

    /// Records a bad copy found by a reader that authenticates (and warns).
    pub fn report_corrupt(&self, member: usize, object: &str, offset: Option<u64>, detail: String) {
        let location = self.members[member].location().to_string();
        tracing::warn!("corrupt copy of {object} at offset {offset:?} in {location}: {detail}");
        self.corrupt.lock().expect("fallback report").push(CorruptCopy {
            location,
            object: object.to_string(),
            offset,
            detail,
        });
    }

    /// Counts a read served by `member` outside this wrapper (a re-read of
    /// another copy).
    pub fn count(&self, member: usize, bytes: u64) {
        self.served[member].reads.fetch_add(1, Ordering::Relaxed);
        self.served[member].bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// What each store served so far, in member order.
    pub fn served(&self) -> Vec<Served> {
        self.members
            .iter()
            .zip(&self.served)
            .map(|(m, c)| Served {
                location: m.location().to_string(),
                reads: c.reads.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The locations of the stores that hold `key` now (for a plan that
    /// says where each part comes from); a store that cannot be asked is
    /// left out.
    pub async fn holders(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.members {
            if m.head(key).await.is_ok() {
                out.push(m.location().to_string());
            }
        }
        out
    }

    /// Bad copies found so far.
    pub fn corrupt_copies(&self) -> Vec<CorruptCopy> {
        self.corrupt.lock().expect("fallback report").clone()
    }

    /// Runs `op` against each store in turn until one answers; see the
    /// module's contract for which error comes back when none does.
    async fn first<'a, T, F, Fut>(&'a self, op: F) -> Result<(usize, T)>
    where
        F: Fn(&'a Store) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut failure: Option<Error> = None;
        for (i, m) in self.members.iter().enumerate() {
            match op(m).await {
                Ok(v) => return Ok((i, v)),
                Err(e) if e.is_unavailable() => {
                    if i + 1 < self.members.len() {
                        tracing::debug!(store = %m.location(), error = %e, "asking the next repository");
                    }
                    // An outage outranks a "not found": the object may be there.
                    match &failure {
                        Some(Error::NotFound { .. }) | None => failure = Some(e),
                        Some(_) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(failure.expect("at least one store"))
    }

    /// The union of what `op` lists in each store that answers.
    async fn union<'a, F, Fut>(&'a self, op: F) -> Result<Vec<ObjectInfo>>
    where
        F: Fn(&'a Store) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<ObjectInfo>>>,
    {
        let mut all: Vec<ObjectInfo> = Vec::new();
        let mut answered = false;
        let mut failure = None;
        for m in &self.members {
            match op(m).await {
                Ok(list) => {
                    answered = true;
                    all.extend(list);
                }
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(store = %m.location(), error = %e, "listing without this repository");
                    failure.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if !answered {
            return Err(failure.expect("at least one store"));
        }
        // Stable: the first store's entry of a key is kept.
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all.dedup_by(|b, a| a.key == b.key);
        Ok(all)
    }
}

#[async_trait]
impl Backend for Fallback {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version> {
        self.members[0].put_opts(key, bytes, mode).await
    }

    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let (i, b) = self.first(|m| m.get_opts(key, range.clone())).await?;
        self.count(i, b.len() as u64);
        Ok(b)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        Ok(self.first(|m| m.head(key)).await?.1)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.union(|m| m.list(prefix)).await
    }

    async fn list_after(&self, prefix: &str, offset: &str, limit: Option<usize>) -> Result<Vec<ObjectInfo>> {
        let mut all = self.union(|m| m.list_after(prefix, offset, limit)).await?;
        // Each store's first `limit` are enough for the union's first `limit`.
        all.truncate(limit.unwrap_or(usize::MAX));
        Ok(all)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.members[0].delete(key).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.members[0].delete_many(keys).await
    }

    async fn sync_existing(&self, key: &str) -> Result<()> {
        self.members[0].sync_existing(key).await
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BackendExt;

    #[tokio::test]
    async fn reads_fall_through_lists_unite_writes_stay_on_the_first() {
        let (a, b) = (Store::memory(), Store::memory());
        a.put("packs/aa/1", Bytes::from_static(b"one-a")).await.unwrap();
        b.put("packs/aa/1", Bytes::from_static(b"one-b")).await.unwrap();
        b.put("packs/bb/2", Bytes::from_static(b"two")).await.unwrap();
        let f = Store::with_fallbacks(a.clone(), vec![b.clone()]);
        assert_eq!(&f.get("packs/aa/1").await.unwrap()[..], b"one-a", "the first store answers first");
        assert_eq!(&f.get("packs/bb/2").await.unwrap()[..], b"two", "a key only the second holds is found");
        let keys: Vec<String> = f.list("packs").await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["packs/aa/1", "packs/bb/2"]);
        assert!(matches!(f.get("packs/cc/3").await, Err(Error::NotFound { .. })));
        f.put("snapshots/x", Bytes::from_static(b"x")).await.unwrap();
        assert!(a.exists("snapshots/x").await.unwrap() && !b.exists("snapshots/x").await.unwrap());
        let served = f.fallback().unwrap().served();
        assert_eq!((served[0].reads, served[1].reads), (1, 1));
        assert_eq!(served[1].bytes, 3);
    }

    #[tokio::test]
    async fn an_unreachable_first_store_is_skipped_and_outranks_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let gone = Store::open(&crate::store::Location::Local(dir.path().to_path_buf()), false).unwrap();
        drop(dir);
        let b = Store::memory();
        b.put("config", Bytes::from_static(b"c")).await.unwrap();
        let f = Store::with_fallbacks(gone, vec![b.clone()]);
        assert_eq!(&f.get("config").await.unwrap()[..], b"c");
        b.put("index/a", Bytes::from_static(b"i")).await.unwrap();
        assert_eq!(f.list("index").await.unwrap().len(), 1, "the missing directory lists nothing, the other one");
    }
}
