//! `cairn prune`, phase two: delete a generation's condemned packs once no
//! writer that could still reference them is running.
//!
//! For each pending generation, oldest first:
//! 1. wait until every lease in `gc/leases/<g>` has ended (deleted by its
//!    writer after its commit) or is broken (not renewed within the TTL on
//!    the store's clock: broken here by compare-and-swap into a tombstone);
//! 2. mark again what was committed since the plan (snapshots and WAL
//!    manifests it had not seen) and spare every condemned pack they need;
//! 3. rewrite the index segments naming the rest without them, and delete
//!    the old segments;
//! 4. delete the packs in batches, re-reading `gc/state` before each
//!    batch (a prune suspended meanwhile finds its generation done and
//!    stops);
//! 5. move `gc/state`: the generation leaves `pending` and the epoch
//!    advances, so local caches rebuild before they dedup again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_formats::repo::IndexSegment;

use super::lease::{fencing_disabled, lease_ttl, Lease, LeaseRecord};
use super::mark::mark;
use super::prune::{read_segments, record_leases, PruneOptions, PruneReport, SweepReport};
use super::state::{self, GcState, LeaseList, Plan};
use crate::ids::{BlobId, Id, PackId, SnapshotId};
use crate::index::LocalIndex;
use crate::repo::{ObjectKind, Repository};
use crate::repofile::ObjectKey;
use crate::snapshot::Snapshot;
use crate::store::{Backend as _, BackendExt as _, PutMode};
use crate::{Error, Result};

/// Packs deleted between two checks of `gc/state`.
const DELETE_BATCH: usize = 64;

pub(super) async fn sweep_pending(
    repo: &Arc<Repository>,
    cache_dir: &std::path::Path,
    lock_timeout: Duration,
    opts: &PruneOptions,
    report: &mut PruneReport,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    if GcState::read(repo).await?.0.pending.is_empty() {
        return Ok(());
    }
    let lease = if fencing_disabled() { None } else { Some(Lease::acquire(repo.clone(), "prune").await?) };
    if let Some(l) = &lease {
        if let Some(other) = claim(repo, l.key(), opts.sweep_wait).await? {
            report.deferred.push(format!("another prune (lease {other}) is sweeping"));
            l.renew().await?;
            return lease.expect("held").release().await;
        }
    }
    let swept = sweep_claimed(repo, cache_dir, lock_timeout, opts, report, progress, lease.as_ref()).await;
    if let Some(l) = lease {
        let unclaimed = unclaim(repo, l.key()).await;
        swept?;
        unclaimed?;
        l.release().await?;
        return Ok(());
    }
    swept
}

#[allow(clippy::too_many_arguments)]
async fn sweep_claimed(
    repo: &Arc<Repository>,
    cache_dir: &std::path::Path,
    lock_timeout: Duration,
    opts: &PruneOptions,
    report: &mut PruneReport,
    progress: &(dyn Fn(&str) + Sync),
    lease: Option<&Lease>,
) -> Result<()> {
    let (gc_state, _) = GcState::read(repo).await?;
    let mut pending = gc_state.pending.clone();
    pending.sort_unstable();
    // Oldest first, and none after one that must wait: segments are
    // rewritten generation by generation, in order.
    for g in pending {
        let plan = state::load_plan(repo, g).await?;
        let leases = match state::read::<LeaseList>(repo, &ObjectKey::GcLeases(g)).await? {
            Some((l, _)) => l,
            None => record_leases(repo, g).await?,
        };
        progress(&format!("generation {g}: waiting for {} older lease(s)", leases.leases.len()));
        let mut sweep = SweepReport { generation: g, ..Default::default() };
        let own = lease.map(|l| l.key());
        if let Some(held) = wait_for_leases(repo, &leases, own, opts.sweep_wait, &mut sweep).await? {
            report.deferred.push(format!("generation {g}: lease {held} is still held (a writer is running)"));
            report.swept.push(sweep);
            break;
        }
        progress(&format!("generation {g}: marking what was committed since"));
        let spared = remark(repo, cache_dir, lock_timeout, &plan).await?;
        sweep.spared_packs = spared.len() as u64;
        let doomed: Vec<&state::Condemned> = plan.condemned.iter().filter(|c| !spared.contains(&c.pack)).collect();
        progress(&format!("generation {g}: deleting {} pack(s)", doomed.len()));
        if !guard(repo, lease, g).await? {
            report.swept.push(sweep);
            break;
        }
        sweep.rewritten_segments = rewrite_segments(repo, &doomed).await?;
        // Caches rebuilt from now on see no segment naming a doomed pack.
        advance_epoch(repo, g).await?;
        for batch in doomed.chunks(DELETE_BATCH) {
            if !guard(repo, lease, g).await? {
                break;
            }
            let keys: Vec<String> = batch.iter().map(|c| ObjectKey::Pack(c.pack).to_string()).collect();
            repo.store().delete_many(&keys).await?;
            sweep.deleted_packs += batch.len() as u64;
            sweep.deleted_bytes += batch.iter().map(|c| c.size).sum::<u64>();
        }
        if guard(repo, lease, g).await? {
            finish(repo, g).await?;
        }
        report.swept.push(sweep);
    }
    Ok(())
}

/// Right before each destructive step: this prune's lease still holds
/// (renewed now) and `gc/state` still names it as the sweeper, with `g`
/// pending. Otherwise another prune has taken over or finished `g`.
async fn guard(repo: &Repository, lease: Option<&Lease>, g: u64) -> Result<bool> {
    if let Some(l) = lease {
        l.renew().await?;
    }
    let (s, _) = GcState::read(repo).await?;
    Ok(s.pending.contains(&g) && lease.is_none_or(|l| s.sweeper.as_deref() == Some(l.key())))
}

/// Makes this prune the sweeper; `Some(other)` when another prune's live
/// lease holds the claim for longer than `wait`.
async fn claim(repo: &Repository, mine: &str, wait: Duration) -> Result<Option<String>> {
    let started = Instant::now();
    loop {
        let (mut s, v) = GcState::read(repo).await?;
        match s.sweeper.clone() {
            Some(m) if m == mine => return Ok(None),
            Some(other) if lease_alive(repo, &other).await? => {
                if started.elapsed() >= wait {
                    return Ok(Some(other));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            _ => {}
        }
        s.sweeper = Some(mine.to_string());
        s.updated = chrono::Utc::now().to_rfc3339();
        match s.swap(repo, v.as_ref()).await {
            Ok(_) => return Ok(None),
            Err(Error::Precondition { .. } | Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Gives the claim up, if it is still this prune's.
async fn unclaim(repo: &Repository, mine: &str) -> Result<()> {
    let moved = GcState::update(repo, |s| {
        let held = s.sweeper.as_deref() == Some(mine);
        if held {
            s.sweeper = None;
        }
        held
    });
    moved.await.map(drop)
}

/// True while `key` is a lease renewed within its TTL (store time); a
/// stale one is broken here.
async fn lease_alive(repo: &Repository, key: &str) -> Result<bool> {
    let mut scratch = SweepReport::default();
    Ok(!check_lease(repo, key, &mut scratch).await?)
}

/// Waits for every lease of the list (but this prune's own) to end or
/// break; returns the first still held when `wait` runs out.
async fn wait_for_leases(
    repo: &Repository,
    leases: &LeaseList,
    own: Option<&str>,
    wait: Duration,
    sweep: &mut SweepReport,
) -> Result<Option<String>> {
    if fencing_disabled() {
        return Ok(None);
    }
    let started = Instant::now();
    let ttl = lease_ttl(repo);
    for key in leases.leases.iter().filter(|k| Some(k.as_str()) != own) {
        while !check_lease(repo, key, sweep).await? {
            if started.elapsed() >= wait {
                return Ok(Some(key.clone()));
            }
            tokio::time::sleep(Duration::from_millis(500).min(ttl / 4)).await;
        }
    }
    Ok(None)
}

/// True when the lease has ended: deleted, a tombstone, or not renewed
/// within the TTL on the store's clock (then broken here, by
/// compare-and-swap, and recorded in `sweep`).
async fn check_lease(repo: &Repository, key: &str, sweep: &mut SweepReport) -> Result<bool> {
    let ttl = lease_ttl(repo);
    loop {
        let meta = match repo.store().head(key).await {
            Ok(m) => m,
            Err(Error::NotFound { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        let bytes = match repo.store().get(key).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        let mut record = LeaseRecord::open(repo, key, &bytes)?;
        if record.broken.is_some() {
            return Ok(true);
        }
        let now = state::store_now(repo).await?;
        if now.duration_since(meta.modified).unwrap_or_default() <= ttl {
            return Ok(false);
        }
        record.broken = Some(format!("not renewed for over {} s; broken by prune", ttl.as_secs()));
        match repo.store().put_opts(key, record.seal(repo, key), PutMode::Update(meta.version)).await {
            Ok(_) => {
                tracing::warn!(lease = %key, host = %record.host, pid = record.pid, "broke an expired lease");
                sweep.broken_leases.push(key.to_string());
                return Ok(true);
            }
            // Renewed (or released) meanwhile: look again.
            Err(Error::Precondition { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Condemned packs that snapshots or WAL manifests committed since the
/// plan need.
async fn remark(
    repo: &Arc<Repository>,
    cache_dir: &std::path::Path,
    lock_timeout: Duration,
    plan: &Plan,
) -> Result<HashSet<PackId>> {
    let mut spared = HashSet::new();
    let condemned: HashMap<PackId, &state::Condemned> = plan.condemned.iter().map(|c| (c.pack, c)).collect();
    let seen_wal: HashSet<&String> = plan.wal.iter().collect();
    let new_wal: Vec<String> =
        crate::wal::manifest_keys(repo).await?.into_iter().filter(|k| !seen_wal.contains(k)).collect();
    let (wal_packs, problems) = crate::wal::manifest_packs(repo, new_wal).await?;
    if let Some((object, message)) = problems.into_iter().next() {
        return Err(Error::corrupt(object, None, format!("{message} (a sweep needs every new WAL manifest)")));
    }
    spared.extend(wal_packs.into_iter().filter(|p| condemned.contains_key(p)));
    let seen: HashSet<&SnapshotId> = plan.snapshots.iter().collect();
    let new: Vec<SnapshotId> = Snapshot::ids(repo).await?.into_iter().filter(|s| !seen.contains(s)).collect();
    if !new.is_empty() {
        let mut index = LocalIndex::for_reading(repo, cache_dir, lock_timeout).await?;
        index.exclude(HashSet::new());
        let mut live: HashSet<BlobId> = HashSet::new();
        let marked = mark(repo, &index, &new, &mut live).await?;
        if let Some(d) = marked.dangling.first() {
            // Its references are not all known: nothing may be deleted.
            return Err(Error::corrupt(
                ObjectKey::Snapshot(d.id).to_string(),
                None,
                format!("{} blob(s) it needs are in no index segment; the sweep stops (see `cairn check`)", d.missing),
            ));
        }
        for c in &plan.condemned {
            if c.blobs.iter().any(|b| live.contains(b)) {
                spared.insert(c.pack);
            }
        }
    }
    Ok(spared)
}

/// Rewrites each index segment naming a doomed pack without it (the new
/// segment first, then the old one deleted); returns how many.
async fn rewrite_segments(repo: &Repository, doomed: &[&state::Condemned]) -> Result<u64> {
    let doomed_packs: HashSet<PackId> = doomed.iter().map(|c| c.pack).collect();
    let touched: HashSet<Id> = doomed.iter().flat_map(|c| c.segments.iter().copied()).collect();
    let mut n = 0;
    for (id, seg) in read_segments(repo).await? {
        let names_doomed = seg.packs.iter().any(|p| doomed_packs.contains(&PackId(Id(p.pack_id))));
        if !touched.contains(&id) && !names_doomed {
            continue;
        }
        let keep: Vec<_> = seg.packs.into_iter().filter(|p| !doomed_packs.contains(&PackId(Id(p.pack_id)))).collect();
        if !keep.is_empty() {
            repo.put_object(ObjectKind::Index, &IndexSegment { packs: keep }.encode()).await?;
        }
        repo.store().delete(&ObjectKey::Index(id).to_string()).await?;
        n += 1;
    }
    Ok(n)
}

/// Advances the epoch while `g` stays pending.
async fn advance_epoch(repo: &Repository, g: u64) -> Result<()> {
    let moved = GcState::update(repo, |s| {
        let pending = s.pending.contains(&g);
        if pending {
            s.epoch += 1;
        }
        pending
    });
    moved.await.map(drop)
}

/// Takes `g` out of `pending` and advances the epoch, retrying the
/// compare-and-swap while other prunes move the state.
async fn finish(repo: &Repository, g: u64) -> Result<()> {
    let moved = GcState::update(repo, |s| {
        let pending = s.pending.contains(&g);
        if pending {
            s.pending.retain(|p| *p != g);
            s.epoch += 1;
        }
        pending
    });
    let Some(s) = moved.await? else { return Ok(()) };
    // Plans ten generations back and done are no longer read (a writer
    // reads the plans `gc/state` lists as pending).
    if g >= 10 && !s.pending.contains(&(g - 10)) {
        for old in [ObjectKey::GcPlan(g - 10), ObjectKey::GcLeases(g - 10)] {
            repo.store().delete(&old.to_string()).await?;
        }
    }
    Ok(())
}
