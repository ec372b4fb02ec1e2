//! [`Retry`]: tries an operation again when the backend says its failure
//! may be transient ([`crate::Error::is_retryable`]), with exponential
//! backoff.
//!
//! A conditional put can fail because its own earlier attempt landed even
//! though the answer was lost: on a retry here, or inside object_store,
//! which resends a request answered 5xx before it reports anything (see
//! shared/s3/README.md). So whenever a create comes back "already exists",
//! or an update "changed meanwhile", the object is read back: if it holds
//! exactly the bytes this put wrote, the put succeeded. Encrypted objects
//! carry a random nonce, so equal bytes are this writer's own.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::backend::{Backend, ObjectInfo, ObjectMeta, PutMode, Version};
use crate::{Error, Result};

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// Wait before the first retry; doubled each time.
    pub first_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// `retries` attempts after the first, waiting `first_backoff`, then
    /// twice as long each time, at most 15 s.
    pub fn new(retries: u32, first_backoff: Duration) -> RetryPolicy {
        RetryPolicy { retries, first_backoff, max_backoff: Duration::from_secs(15) }
    }
}

/// A backend whose transient failures are retried.
#[derive(Debug)]
pub struct Retry<B> {
    inner: B,
    policy: RetryPolicy,
}

impl<B: Backend> Retry<B> {
    /// Retries `inner`'s transient failures as `policy` says.
    pub fn new(inner: B, policy: RetryPolicy) -> Retry<B> {
        Retry { inner, policy }
    }

    /// Runs `op` until it succeeds, fails for good, or the retries are spent.
    async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
        T: Send,
    {
        let mut wait = self.policy.first_backoff;
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if e.is_retryable() && attempt < self.policy.retries => {
                    attempt += 1;
                    tracing::warn!(object = what, attempt, error = %e, "retrying after a transient storage failure");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.policy.max_backoff);
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl<B: Backend> Backend for Retry<B> {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version> {
        self.run(key, || {
            let (bytes, mode) = (bytes.clone(), mode.clone());
            async move {
                match self.inner.put_opts(key, bytes.clone(), mode).await {
                    Err(e @ (Error::AlreadyExists { .. } | Error::Precondition { .. })) => {
                        // Perhaps our own lost attempt: see the module docs.
                        // The version must be the one of the bytes compared:
                        // unchanged across the read, or someone else's write
                        // (a lease broken meanwhile) could be adopted.
                        let before = self.inner.head(key).await;
                        let stored = self.inner.get_opts(key, None).await;
                        let after = self.inner.head(key).await;
                        match (before, stored, after) {
                            (Ok(b), Ok(stored), Ok(a)) if stored == bytes && a.version == b.version => Ok(a.version),
                            _ => Err(e),
                        }
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.run(key, || self.inner.get_opts(key, range.clone())).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.run(key, || self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run(prefix, || self.inner.list(prefix)).await
    }

    async fn list_after(&self, prefix: &str, offset: &str, limit: Option<usize>) -> Result<Vec<ObjectInfo>> {
        self.run(prefix, || self.inner.list_after(prefix, offset, limit)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run(key, || self.inner.delete(key)).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        // Deleting is idempotent: a failed batch is sent again whole.
        let what = keys.first().map_or("", String::as_str);
        self.run(what, || self.inner.delete_many(keys)).await
    }

    async fn sync_existing(&self, key: &str) -> Result<()> {
        self.run(key, || self.inner.sync_existing(key)).await
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
}
