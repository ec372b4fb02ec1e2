//! Leases: how a writer tells garbage collection "I may still commit a
//! reference to a pack you think is unused; wait for me".
//!
//! A lease is `leases/<16 hex>`, created create-only before the writer
//! reads `gc/state`, renewed by compare-and-swap every quarter of its
//! time-to-live, and deleted only after everything the writer committed is
//! durable. Garbage collection waits for every lease that existed when it
//! condemned packs; a lease whose last renewal is older than the TTL *on
//! the store's own clock* is broken by GC, by compare-and-swap, into a
//! tombstone. A writer renews right before and right after its commit; if
//! the renewal after fails, its lease was broken, the packs it relied on
//! may be gone, and it withdraws what it committed and fails
//! ([`Error::LeaseLost`]). Safety needs no agreement between clocks: a
//! writer whose TTL is longer than GC's only gets fenced out sooner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::repo::Repository;
use crate::repofile::envelope::{self, Binding};
use crate::repofile::ObjectKey;
use crate::store::{Backend as _, PutMode, Version};
use crate::{Error, Result};

const LEASE_AAD: &[u8] = b"cairn lease v1\0";

/// How long a lease lasts without renewal (`config.gc.lease_ttl_s`, one
/// value for every client). Writers renew every quarter of it.
pub fn lease_ttl(repo: &Repository) -> Duration {
    Duration::from_secs(repo.config().gc().lease_ttl_s.max(1))
}

/// Test-only: `CAIRN_TEST_UNSAFE_NO_FENCING=1` switches the fencing off
/// (writers take no lease and dedup against condemned packs; GC waits for
/// no lease), so the stress test can show that it then loses data.
pub fn fencing_disabled() -> bool {
    std::env::var("CAIRN_TEST_UNSAFE_NO_FENCING").is_ok_and(|v| v == "1")
}

/// What a lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Format version (1).
    pub version: u32,
    /// Host of the writer.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// What it is doing (`backup`, `restore`, …).
    pub purpose: String,
    /// When it was taken (writer's clock; for people only).
    pub started: String,
    /// Renewals so far (makes each renewal a new version).
    pub renewals: u64,
    /// Set by garbage collection when it broke the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

impl LeaseRecord {
    pub(crate) fn seal(&self, repo: &Repository, key: &str) -> Bytes {
        let json = serde_json::to_vec(self).expect("lease serializes");
        Bytes::from(envelope::seal(repo.keys(), Binding::Key(LEASE_AAD, key), &json))
    }

    pub(crate) fn open(repo: &Repository, key: &str, bytes: &[u8]) -> Result<LeaseRecord> {
        let json = envelope::open(repo.keys(), key, Binding::Key(LEASE_AAD, key), bytes)?;
        serde_json::from_slice(&json).map_err(|e| Error::corrupt(key, None, format!("bad lease: {e}")))
    }
}

struct Held {
    record: LeaseRecord,
    version: Version,
}

/// A held lease. Renewed in the background while held; [`Lease::release`]
/// deletes it. Dropped without release, it is left to expire (GC breaks it
/// after the TTL), which is what a killed writer leaves too.
pub struct Lease {
    repo: Arc<Repository>,
    key: String,
    held: Arc<tokio::sync::Mutex<Option<Held>>>,
    lost: Arc<AtomicBool>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.key)
    }
}

impl Lease {
    /// Creates a new lease (create-only) and starts renewing it.
    pub async fn acquire(repo: Arc<Repository>, purpose: &str) -> Result<Lease> {
        let mut raw = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let key = ObjectKey::Lease(hex::encode(raw)).to_string();
        let record = LeaseRecord {
            version: 1,
            host: crate::hostname(),
            pid: std::process::id(),
            purpose: purpose.into(),
            started: chrono::Utc::now().to_rfc3339(),
            renewals: 0,
            broken: None,
        };
        let version = repo.store().put_opts(&key, record.seal(&repo, &key), PutMode::Create).await?;
        let held = Arc::new(tokio::sync::Mutex::new(Some(Held { record, version })));
        let lost = Arc::new(AtomicBool::new(false));
        let mut lease = Lease { repo, key, held, lost, renewer: None };
        lease.renewer = Some(lease.spawn_renewer());
        tracing::debug!(lease = %lease.key, "lease taken");
        Ok(lease)
    }

    /// The lease object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn spawn_renewer(&self) -> tokio::task::JoinHandle<()> {
        let (repo, key, held, lost) = (self.repo.clone(), self.key.clone(), self.held.clone(), self.lost.clone());
        tokio::spawn(async move {
            let every = lease_ttl(&repo) / 4;
            loop {
                tokio::time::sleep(every).await;
                match renew(&repo, &key, &held).await {
                    Ok(()) => {}
                    Err(Error::LeaseLost { .. }) => {
                        lost.store(true, Ordering::SeqCst);
                        tracing::error!(lease = %key, "lease broken by garbage collection");
                        return;
                    }
                    // A transient failure: the next round tries again; the
                    // commit-time renewal is what decides.
                    Err(e) => tracing::warn!(lease = %key, error = %e, "lease renewal failed; retrying"),
                }
            }
        })
    }

    /// Renews now; [`Error::LeaseLost`] when GC broke the lease.
    pub async fn renew(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::LeaseLost { lease: self.key.clone(), detail: "broken by garbage collection".into() });
        }
        renew(&self.repo, &self.key, &self.held).await.inspect_err(|e| {
            if matches!(e, Error::LeaseLost { .. }) {
                self.lost.store(true, Ordering::SeqCst);
            }
        })
    }

    /// Stops renewing and deletes the lease. Call only once everything the
    /// writer committed is durable.
    pub async fn release(mut self) -> Result<()> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        *self.held.lock().await = None;
        self.repo.store().delete(&self.key).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

async fn renew(repo: &Repository, key: &str, held: &tokio::sync::Mutex<Option<Held>>) -> Result<()> {
    let mut guard = held.lock().await;
    let Some(h) = guard.as_mut() else {
        return Err(Error::LeaseLost { lease: key.into(), detail: "already released".into() });
    };
    let mut next = h.record.clone();
    next.renewals += 1;
    match repo.store().put_opts(key, next.seal(repo, key), PutMode::Update(h.version.clone())).await {
        Ok(v) => {
            h.record = next;
            h.version = v;
            Ok(())
        }
        Err(Error::Precondition { .. }) => Err(Error::LeaseLost {
            lease: key.into(),
            detail: "its compare-and-swap renewal was refused: garbage collection broke it (the writer was paused \
                     or cut off past the lease's time to live), or the store does not honour conditional writes \
                     (`cairn prune` probes for that)"
                .into(),
        }),
        Err(e) => Err(e),
    }
}
