//! [`Metered`]: counts requests and bytes per object kind and operation, so
//! a command can say what it cost (a GC dry run reports the requests its
//! plan would make; `-v` runs can print their traffic).
//!
//! Requests are counted when they are made, failed ones included; bytes
//! when they have moved (put: bytes sent, get: bytes received, list: none).
//! Direct local reads and staging bypass every wrapper and are not counted.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::backend::{kind_of, Backend, ObjectInfo, ObjectMeta, PutMode, Version};
use super::fault::Op;
use crate::Result;

/// Requests and bytes of one (kind, operation) pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MetricsRow {
    /// Object kind ([`kind_of`]: `packs`, `index`, `snapshots`, `wal`, …).
    pub kind: &'static str,
    /// Operation (`put`, `get`, `head`, `list`, `delete`, `sync`).
    pub op: &'static str,
    /// Requests made, failed ones included.
    pub requests: u64,
    /// Payload bytes moved by the requests that succeeded.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counter {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Shared counters; clone the `Arc` to read them while the store is in use.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, &'static str), Arc<Counter>>>,
}

impl Metrics {
    fn counter(&self, key: &str, op: Op) -> Arc<Counter> {
        let mut m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let c = m.entry((kind_of(key), op.name())).or_default().clone();
        c.requests.fetch_add(1, Ordering::Relaxed);
        c
    }

    /// Every (kind, operation) seen so far, sorted.
    pub fn rows(&self) -> Vec<MetricsRow> {
        let m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .map(|(&(kind, op), c)| MetricsRow {
                kind,
                op,
                requests: c.requests.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The requests made for `kind` objects with `op`.
    pub fn requests(&self, kind: &str, op: Op) -> u64 {
        self.rows().iter().filter(|r| r.kind == kind && r.op == op.name()).map(|r| r.requests).sum()
    }

    /// The bytes moved for `kind` objects with `op`.
    pub fn bytes(&self, kind: &str, op: Op) -> u64 {
        self.rows().iter().filter(|r| r.kind == kind && r.op == op.name()).map(|r| r.bytes).sum()
    }
}

/// A backend whose traffic is counted in a [`Metrics`].
#[derive(Debug)]
pub struct Metered<B> {
    inner: B,
    metrics: Arc<Metrics>,
}

impl<B: Backend> Metered<B> {
    /// Counts `inner`'s traffic into `metrics`.
    pub fn new(inner: B, metrics: Arc<Metrics>) -> Metered<B> {
        Metered { inner, metrics }
    }
}

fn add<T>(c: &Counter, r: &Result<T>, bytes: impl FnOnce(&T) -> u64) {
    if let Ok(v) = r {
        c.bytes.fetch_add(bytes(v), Ordering::Relaxed);
    }
}

#[async_trait]
impl<B: Backend> Backend for Metered<B> {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version> {
        let c = self.metrics.counter(key, Op::Put);
        let n = bytes.len() as u64;
        let r = self.inner.put_opts(key, bytes, mode).await;
        add(&c, &r, |_| n);
        r
    }

    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let c = self.metrics.counter(key, Op::Get);
        let r = self.inner.get_opts(key, range).await;
        add(&c, &r, |b| b.len() as u64);
        r
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.metrics.counter(key, Op::Head);
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.metrics.counter(prefix, Op::List);
        self.inner.list(prefix).await
    }

    async fn list_after(&self, prefix: &str, offset: &str, limit: Option<usize>) -> Result<Vec<ObjectInfo>> {
        self.metrics.counter(prefix, Op::List);
        self.inner.list_after(prefix, offset, limit).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.metrics.counter(key, Op::Delete);
        self.inner.delete(key).await
    }

    async fn sync_existing(&self, key: &str) -> Result<()> {
        self.metrics.counter(key, Op::Sync);
        self.inner.sync_existing(key).await
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
}
