//! Garbage collection's shared state: `gc/state` (moved only by
//! compare-and-swap), the create-only plans it points to, and what writers
//! read from it before they deduplicate.

use std::collections::HashSet;
use std::time::SystemTime;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{BlobId, PackId, SnapshotId};
use crate::repo::Repository;
use crate::repofile::envelope::{self, Binding};
use crate::repofile::ObjectKey;
use crate::store::{Backend as _, BackendExt as _, PutMode, Version};
use crate::{Error, Result};

const GC_AAD: &[u8] = b"cairn gc v1\0";

/// `gc/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcState {
    /// Format version (1).
    pub version: u32,
    /// The last generation condemned (plans are `gc/plans/<generation>`).
    pub generation: u64,
    /// Bumped whenever index segments were retired: local index caches
    /// built at another epoch are rebuilt before they are used for dedup.
    pub epoch: u64,
    /// Generations condemned and not yet completely swept. Writers never
    /// deduplicate against their packs.
    pub pending: Vec<u64>,
    /// The lease of the prune sweeping now: one sweeper at a time, so two
    /// never rewrite the same index segment differently. A sweeper whose
    /// lease is broken or gone is taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweeper: Option<String>,
    /// When it was last moved (the mover's clock; for people).
    pub updated: String,
}

/// One condemned pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condemned {
    /// The pack.
    pub pack: PackId,
    /// Its size.
    pub size: u64,
    /// Its blobs (so a sweep can tell whether a snapshot committed since
    /// needs it).
    pub blobs: Vec<BlobId>,
    /// The index segments naming it (rewritten without it by the sweep).
    pub segments: Vec<crate::ids::Id>,
}

/// `gc/plans/<generation>`: what one generation condemned, and what it
/// had seen when it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Format version (1).
    pub version: u32,
    /// The generation.
    pub generation: u64,
    /// When (the planner's clock; for people).
    pub created: String,
    /// Snapshots marked: one committed later is marked again by the sweep.
    pub snapshots: Vec<SnapshotId>,
    /// WAL manifests marked (keys).
    pub wal: Vec<String>,
    /// Condemned packs.
    pub condemned: Vec<Condemned>,
}

/// `gc/leases/<generation>`: leases present right after the generation
/// began.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseList {
    /// Format version (1).
    pub version: u32,
    /// Lease keys.
    pub leases: Vec<String>,
}

pub(crate) fn seal<T: Serialize>(repo: &Repository, key: &str, v: &T) -> Bytes {
    let json = serde_json::to_vec(v).expect("gc records serialize");
    Bytes::from(envelope::seal(repo.keys(), Binding::Key(GC_AAD, key), &json))
}

pub(crate) fn open<T: DeserializeOwned>(repo: &Repository, key: &str, bytes: &[u8]) -> Result<T> {
    let json = envelope::open(repo.keys(), key, Binding::Key(GC_AAD, key), bytes)?;
    serde_json::from_slice(&json).map_err(|e| Error::corrupt(key, None, format!("bad gc record: {e}")))
}

/// Reads a sealed gc record; `None` when it does not exist.
pub(crate) async fn read<T: DeserializeOwned>(repo: &Repository, key: &ObjectKey) -> Result<Option<(T, Version)>> {
    let k = key.to_string();
    let meta = match repo.store().head(&k).await {
        Ok(m) => m,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bytes = match repo.store().get(&k).await {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    // The version is the one read before the bytes: a compare-and-swap
    // against it fails if anything changed in between, which is safe.
    Ok(Some((open(repo, &k, &bytes)?, meta.version)))
}

impl GcState {
    /// The current state and its version (`None`: never written).
    pub async fn read(repo: &Repository) -> Result<(GcState, Option<Version>)> {
        Ok(match read::<GcState>(repo, &ObjectKey::GcState).await? {
            Some((s, v)) => (s, Some(v)),
            None => (GcState { version: 1, ..Default::default() }, None),
        })
    }

    /// Moves the state from `from` to `self` by compare-and-swap;
    /// [`Error::Precondition`] or [`Error::AlreadyExists`] when someone
    /// else moved it first.
    pub async fn swap(&self, repo: &Repository, from: Option<&Version>) -> Result<Version> {
        let key = ObjectKey::GcState.to_string();
        let mode = match from {
            Some(v) => PutMode::Update(v.clone()),
            None => PutMode::Create,
        };
        repo.store().put_opts(&key, seal(repo, &key, self), mode).await
    }
}

impl GcState {
    /// Reads the state, lets `change` edit it, and writes it back by
    /// compare-and-swap, starting over whenever another prune moved it
    /// meanwhile. `change` returns false to leave the state as it is;
    /// the result is the state written, if any.
    pub(crate) async fn update(
        repo: &Repository,
        mut change: impl FnMut(&mut GcState) -> bool,
    ) -> Result<Option<GcState>> {
        loop {
            let (mut s, v) = GcState::read(repo).await?;
            if !change(&mut s) {
                return Ok(None);
            }
            s.updated = chrono::Utc::now().to_rfc3339();
            match s.swap(repo, v.as_ref()).await {
                Ok(_) => return Ok(Some(s)),
                Err(Error::Precondition { .. } | Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The plan of a generation.
pub async fn load_plan(repo: &Repository, generation: u64) -> Result<Plan> {
    let key = ObjectKey::GcPlan(generation);
    read::<Plan>(repo, &key)
        .await?
        .map(|(p, _)| p)
        .ok_or_else(|| Error::corrupt(key.to_string(), None, "gc/state names this plan but it is missing"))
}

/// What a writer must know before it deduplicates.
#[derive(Debug, Clone, Default)]
pub struct GcView {
    /// The epoch of `gc/state`.
    pub epoch: u64,
    /// Packs condemned and not yet swept: never deduplicated against.
    pub excluded: HashSet<PackId>,
}

impl GcView {
    /// Reads `gc/state` and the plans still pending. With the fencing
    /// switched off (test-only) nothing is excluded.
    pub async fn read(repo: &Repository) -> Result<GcView> {
        let (state, _) = GcState::read(repo).await?;
        let mut view = GcView { epoch: state.epoch, excluded: HashSet::new() };
        if super::lease::fencing_disabled() {
            return Ok(view);
        }
        for g in &state.pending {
            view.excluded.extend(load_plan(repo, *g).await?.condemned.iter().map(|c| c.pack));
        }
        Ok(view)
    }
}

/// The store's clock now: `gc/clock` is rewritten and its store time read.
pub async fn store_now(repo: &Repository) -> Result<SystemTime> {
    let key = ObjectKey::GcClock.to_string();
    repo.store().put(&key, Bytes::from_static(b"cairn gc clock\n")).await?;
    Ok(repo.store().head(&key).await?.modified)
}

/// Checks that the store honours conditional writes, which every fence
/// here rests on: a second create-only put of one key must fail, and so
/// must a compare-and-swap naming a stale version. Some S3 servers accept
/// both silently (shared/s3/README.md); prune then refuses to run rather
/// than delete what a writer is about to reference. The probe object is
/// removed afterwards.
pub async fn probe_conditional_writes(repo: &Repository) -> Result<()> {
    let mut raw = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let key = format!("gc/probe-{}", hex::encode(raw));
    let refuse = |what: &str| {
        Err(Error::Precondition {
            what: format!(
                "{key}: the store {what}; garbage collection cannot be fenced safely here, so prune refuses to run"
            ),
        })
    };
    let v1 = repo.store().put_opts(&key, Bytes::from_static(b"1"), PutMode::Create).await?;
    let second = repo.store().put_opts(&key, Bytes::from_static(b"2"), PutMode::Create).await;
    let v2 = repo.store().put_opts(&key, Bytes::from_static(b"3"), PutMode::Update(v1.clone())).await;
    let stale = repo.store().put_opts(&key, Bytes::from_static(b"4"), PutMode::Update(v1)).await;
    repo.store().delete(&key).await?;
    match second {
        Err(Error::AlreadyExists { .. }) => {}
        Ok(_) => return refuse("ignores create-only writes (If-None-Match)"),
        Err(e) => return Err(e),
    }
    match v2 {
        Ok(_) => {}
        Err(Error::Precondition { .. }) => return refuse("refuses a compare-and-swap naming the current version"),
        Err(e) => return Err(e),
    }
    match stale {
        Err(Error::Precondition { .. }) => Ok(()),
        Ok(_) => refuse("ignores compare-and-swap writes (If-Match)"),
        Err(e) => Err(e),
    }
}
