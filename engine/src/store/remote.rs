//! Any `object_store` backend (S3, and the in-memory store unit tests use)
//! as a [`Backend`].
//!
//! Transient HTTP failures are retried with exponential backoff by
//! object_store's own client ([`retry_config`]); what is left is reported
//! with `retryable` set when the transport is a network one.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload, UpdateVersion};

use super::backend::{Backend, ObjectInfo, ObjectMeta, PutMode, Version};
use crate::{Error, Result};

/// An `object_store` store as a [`Backend`].
#[derive(Debug)]
pub struct RemoteBackend {
    inner: Arc<dyn ObjectStore>,
    networked: bool,
}

impl RemoteBackend {
    /// Wraps `inner`. `networked` says whether it talks to a server, so that
    /// its failures that survived the client's retries may still be an
    /// outage worth retrying later (true for S3, false for memory).
    pub fn new(inner: Arc<dyn ObjectStore>, networked: bool) -> RemoteBackend {
        RemoteBackend { inner, networked }
    }

    fn err(&self, key: &str, e: object_store::Error) -> Error {
        map_err(key, e, self.networked)
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

/// The [`Version`] of an object with ETag `e_tag`: the ETag without its
/// quotes. An update sends it back as `If-Match` exactly as stored here, and
/// servers differ on the quoted form: Ceph's radosgw refuses it (412) while
/// AWS S3 and moto accept both, so the unquoted one works everywhere.
fn version(e_tag: Option<String>) -> Version {
    let e_tag = e_tag.unwrap_or_default();
    let bare = e_tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(&e_tag);
    Version(bare.to_string())
}

/// Maps an object_store error on `key` to the engine's. `networked`: the
/// store behind it talks to a server, so a generic failure may be an outage.
fn map_err(key: &str, e: object_store::Error, networked: bool) -> Error {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => Error::NotFound { what: key.to_string() },
        E::AlreadyExists { .. } => Error::AlreadyExists { what: key.to_string() },
        E::Precondition { .. } => Error::Precondition { what: key.to_string() },
        other => {
            let retryable = networked && matches!(other, E::Generic { .. });
            Error::Storage { object: key.to_string(), retryable, source: Box::new(other) }
        }
    }
}

#[async_trait]
impl Backend for RemoteBackend {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version> {
        let (is_create, is_update) = (matches!(mode, PutMode::Create), matches!(mode, PutMode::Update(_)));
        let mode = match mode {
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Update(v) => object_store::PutMode::Update(UpdateVersion { e_tag: Some(v.0), version: None }),
        };
        let opts = PutOptions { mode, ..Default::default() };
        match self.inner.put_opts(&Path::from(key), PutPayload::from(bytes), opts).await {
            Ok(r) => Ok(version(r.e_tag)),
            // A create-only put that lost is "already exists" whichever way
            // the server said it (S3 answers 412 to `If-None-Match: *`).
            Err(object_store::Error::Precondition { .. }) if is_create => {
                Err(Error::AlreadyExists { what: key.to_string() })
            }
            // An update that lost: a missing key (AWS answers 404, Ceph
            // 412), or S3's 409 for concurrent conditional writes once
            // object_store's own retries of it ran out (it reports that as
            // "already exists"). Each means the version named is not the
            // current one.
            Err(object_store::Error::NotFound { .. } | object_store::Error::AlreadyExists { .. }) if is_update => {
                Err(Error::Precondition { what: key.to_string() })
            }
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let path = Path::from(key);
        match range {
            Some(r) => self.inner.get_range(&path, r).await.map_err(|e| self.err(key, e)),
            None => {
                let r = self.inner.get(&path).await.map_err(|e| self.err(key, e))?;
                r.bytes().await.map_err(|e| self.err(key, e))
            }
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let m = self.inner.head(&Path::from(key)).await.map_err(|e| self.err(key, e))?;
        Ok(ObjectMeta { size: m.size, modified: m.last_modified.into(), version: version(m.e_tag) })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = Path::from(prefix);
        let mut out: Vec<ObjectInfo> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| ObjectInfo { key: m.location.to_string(), size: m.size, modified: m.last_modified.into() })
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_after(&self, prefix: &str, offset: &str, limit: Option<usize>) -> Result<Vec<ObjectInfo>> {
        let p = Path::from(prefix);
        let mut out: Vec<ObjectInfo> = self
            .inner
            .list_with_offset(Some(&p), &Path::from(offset))
            .take(limit.unwrap_or(usize::MAX))
            .map_ok(|m| ObjectInfo { key: m.location.to_string(), size: m.size, modified: m.last_modified.into() })
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        use futures::StreamExt;
        let paths = futures::stream::iter(keys.iter().map(|k| Ok(Path::from(k.as_str())))).boxed();
        let mut done = self.inner.delete_stream(paths);
        while let Some(r) = done.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    let what = keys
                        .first()
                        .map_or(String::new(), |k| format!("{k} (and {} more in one batch)", keys.len() - 1));
                    return Err(self.err(&what, e));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_unquoted_etags() {
        assert_eq!(version(Some("\"6654c734\"".into())), Version("6654c734".into()));
        assert_eq!(version(Some("6654c734".into())), Version("6654c734".into()));
        assert_eq!(version(Some("\"".into())), Version("\"".into()));
        assert_eq!(version(None), Version(String::new()));
    }
}
