//! Parsing repository locations: a path, `file://`, `s3://`, `memory://`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;

use super::{Backend, LocalBackend, RemoteBackend};

use crate::{Error, Result};

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory (the default).
    Local(PathBuf),
    /// An S3 bucket and key prefix. Credentials, region and endpoint come
    /// from the usual `AWS_*` variables; plain http is allowed so local
    /// S3-compatible endpoints work.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without slashes at either end.
        prefix: String,
    },
    /// A process-local in-memory store, for tests.
    Memory,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Memory => f.write_str("memory://"),
        }
    }
}

/// Retries on top of object_store's own: a few, soon.
fn retry_policy() -> super::RetryPolicy {
    super::RetryPolicy::new(3, std::time::Duration::from_millis(250))
}

impl Location {
    /// Parses `PATH`, `file:///abs/path`, `s3://bucket[/prefix]` or `memory://`.
    pub fn parse(s: &str) -> Result<Location> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!("{s}: missing bucket name")));
            }
            return Ok(Location::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
        }
        if s == "memory://" {
            return Ok(Location::Memory);
        }
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if s.contains("://") {
            return Err(Error::Config(format!("{s}: unsupported repository scheme (use a path, file://, or s3://)")));
        }
        if s.is_empty() {
            return Err(Error::Config("empty repository location".into()));
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    pub(super) fn build(&self, create: bool) -> Result<Arc<dyn Backend>> {
        let backend = self.build_plain(create)?;
        // Test-only fault injection for end-to-end tests of real commands,
        // under the retries real failures get.
        Ok(match super::Faults::from_env()? {
            Some(f) => Arc::new(super::Retry::new(super::Faulty::new(backend, f), retry_policy())),
            None => backend,
        })
    }

    fn build_plain(&self, create: bool) -> Result<Arc<dyn Backend>> {
        match self {
            Location::Local(p) => Ok(Arc::new(LocalBackend::open(p, create)?)),
            Location::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_allow_http(true)
                    .with_retry(super::retry_config());
                if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                    b = b.with_region("us-east-1");
                }
                if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") {
                    b = b.with_endpoint(ep);
                }
                let s3 = b.build().map_err(|e| Error::Config(format!("s3://{bucket}: {e}")))?;
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str()))
                };
                // object_store retries a request that fails before its
                // answer arrives; a body cut short after the headers (a
                // LIST or GET read half-way) surfaces as an error instead,
                // and is retried here, a few times.
                Ok(Arc::new(super::Retry::new(RemoteBackend::new(store, true), retry_policy())))
            }
            Location::Memory => {
                Ok(Arc::new(RemoteBackend::new(Arc::new(object_store::memory::InMemory::new()), false)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(Location::parse("/x/y").unwrap(), Location::Local("/x/y".into()));
        assert_eq!(Location::parse("file:///x").unwrap(), Location::Local("/x".into()));
        assert_eq!(Location::parse("s3://b/p/q/").unwrap(), Location::S3 { bucket: "b".into(), prefix: "p/q".into() });
        assert!(Location::parse("gopher://x").is_err());
        assert!(Location::parse("s3:///x").is_err());
    }
}
