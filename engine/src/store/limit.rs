//! [`Limit`]: at most N requests to the wrapped backend at once (as
//! object_store's `LimitStore` and restic's `sema` backend do), so that many
//! parallel pipelines cannot exhaust a server's connections or a local
//! disk's queue. Direct local reads and staging ([`super::Store::open_local`],
//! [`super::Store::stage`]) are the caller's own file I/O and are not limited.

use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Semaphore;

use super::backend::{Backend, ObjectInfo, ObjectMeta, PutMode, Version};
use crate::{Error, Result};

/// A backend that serves at most `max` requests at once; the others wait.
#[derive(Debug)]
pub struct Limit<B> {
    inner: B,
    permits: Semaphore,
    max: usize,
}

impl<B: Backend> Limit<B> {
    /// Lets at most `max` (at least 1) requests reach `inner` at once.
    pub fn new(inner: B, max: usize) -> Limit<B> {
        let max = max.max(1);
        Limit { inner, permits: Semaphore::new(max), max }
    }

    /// Requests running right now.
    pub fn in_flight(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.permits.acquire().await.map_err(|_| Error::Internal("storage limiter closed".into()))
    }
}

#[async_trait]
impl<B: Backend> Backend for Limit<B> {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version> {
        let _p = self.permit().await?;
        self.inner.put_opts(key, bytes, mode).await
    }

    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let _p = self.permit().await?;
        self.inner.get_opts(key, range).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let _p = self.permit().await?;
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let _p = self.permit().await?;
        self.inner.list(prefix).await
    }

    async fn list_after(&self, prefix: &str, offset: &str, limit: Option<usize>) -> Result<Vec<ObjectInfo>> {
        let _p = self.permit().await?;
        self.inner.list_after(prefix, offset, limit).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let _p = self.permit().await?;
        self.inner.delete(key).await
    }

    async fn sync_existing(&self, key: &str) -> Result<()> {
        let _p = self.permit().await?;
        self.inner.sync_existing(key).await
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
}
