//! `cairn prune`, phase one: mark what snapshots and WAL manifests need,
//! and condemn the packs nothing needs under a new generation. Phase two
//! (`sweep.rs`) deletes them once no writer can still commit a reference.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn_formats::repo::IndexSegment;
use futures::StreamExt;
use serde::Serialize;

use super::counts::Counts;
use super::live::{Live, LiveSet};
use super::mark::{mark, mark_counted, Marked};
use super::repack::{repack, unused_share, Candidate};
use super::state::{self, Condemned, GcState, LeaseList, Plan};
use crate::ids::{BlobId, Id, PackId, SnapshotId};
use crate::index::LocalIndex;
use crate::repo::{ObjectKind, Repository};
use crate::repofile::{Kind, ObjectKey};
use crate::snapshot::Snapshot;
use crate::store::{Backend as _, PutMode};
use crate::{Error, Result};

/// Packs younger than this (store time) are never condemned
/// (`config.gc.min_age_s`, one value for every client). `wal push` writes
/// its manifest well within it of its pack (it re-sends the pack
/// otherwise), so a pack whose manifest is still on its way is never
/// condemned.
pub fn min_age(repo: &Repository) -> Duration {
    Duration::from_secs(repo.config().gc().min_age_s)
}

/// How a prune runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PruneOptions {
    /// Report what would be condemned and deleted; write nothing.
    pub dry_run: bool,
    /// How long a sweep waits for leases older than its generation to end
    /// before leaving the generation to the next prune.
    pub sweep_wait: Duration,
    /// A pack whose unused share (bytes of blobs nothing needs over its
    /// size) is above this is repacked (0.10 = 10 %).
    pub max_unused: f64,
    /// At most this many bytes of packs are repacked per run (`None`: no
    /// limit).
    pub max_repack_bytes: Option<u64>,
    /// Mark from every snapshot's trees, ignoring the counts kept between
    /// prunes, and check those counts against the result.
    pub full: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            sweep_wait: Duration::from_secs(300),
            max_unused: 0.10,
            max_repack_bytes: None,
            full: false,
        }
    }
}

impl PruneOptions {
    /// Only report.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
    /// Wait at most this long for older leases.
    pub fn with_sweep_wait(mut self, wait: Duration) -> Self {
        self.sweep_wait = wait;
        self
    }
    /// Mark everything from the repository and check the kept counts.
    pub fn with_full(mut self, full: bool) -> Self {
        self.full = full;
        self
    }
    /// Repack packs more than `share` unused, at most `bytes` of them.
    pub fn with_repack(mut self, share: f64, bytes: Option<u64>) -> Self {
        self.max_unused = share;
        self.max_repack_bytes = bytes;
        self
    }
}

/// What one generation's sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// The generation.
    pub generation: u64,
    /// Packs deleted and their bytes.
    pub deleted_packs: u64,
    /// Bytes.
    pub deleted_bytes: u64,
    /// Condemned packs a snapshot or manifest committed since needed.
    pub spared_packs: u64,
    /// Index segments rewritten without the deleted packs.
    pub rewritten_segments: u64,
    /// Leases broken because they were not renewed within their TTL.
    pub broken_leases: Vec<String>,
}

/// What a prune found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// Snapshots marked.
    pub snapshots: u64,
    /// How they were marked: `counts` (only the snapshots added or gone
    /// since the last prune were read) or `full` (every snapshot's trees).
    pub marking: String,
    /// Snapshots whose trees this run read.
    pub snapshots_read: u64,
    /// With `--full`: blobs on which the kept counts and the full mark
    /// disagreed (the counts are then dropped and rebuilt by the next
    /// prune; the full mark is what this prune used).
    pub counts_mismatch: Option<u64>,
    /// WAL manifests marked.
    pub wal_files: u64,
    /// Packs in the store, and their bytes.
    pub packs: u64,
    /// Bytes.
    pub pack_bytes: u64,
    /// Packs something needs.
    pub live_packs: u64,
    /// Packs condemned now, and their bytes.
    pub condemned_packs: u64,
    /// Bytes.
    pub condemned_bytes: u64,
    /// Unused packs younger than the minimum age, left for a later prune.
    pub too_recent_packs: u64,
    /// Packs an earlier generation condemned (still pending).
    pub pending_packs: u64,
    /// The generation this run condemned under, if any.
    pub generation: Option<u64>,
    /// Sweeps done.
    pub swept: Vec<SweepReport>,
    /// Generations whose sweep must wait (a lease still held), with why.
    pub deferred: Vec<String>,
    /// Snapshots withdrawn: they referenced swept packs and their writer's
    /// lease had been broken (that writer exited non-zero).
    pub withdrawn_snapshots: Vec<String>,
    /// Things found wrong (reported, not acted on).
    pub problems: Vec<String>,
    /// Store requests the deletions cost (or will cost, on a dry run).
    pub delete_requests: u64,
    /// Repacking (on a dry run: what it would read).
    pub repack: super::repack::RepackReport,
    /// Store requests this run costs beyond listing and marking: pack
    /// reads and writes of repacking, index segments, deletions.
    pub requests: u64,
}

/// Runs a prune: condemns (phase one), then sweeps every pending
/// generation whose older leases have ended (phase two).
pub async fn prune(
    repo: &Arc<Repository>,
    cache_dir: &std::path::Path,
    lock_timeout: Duration,
    opts: &PruneOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PruneReport> {
    let mut report = PruneReport { dry_run: opts.dry_run, ..Default::default() };
    if !opts.dry_run {
        state::probe_conditional_writes(repo).await?;
    }
    let now = if opts.dry_run { SystemTime::now() } else { state::store_now(repo).await? };
    let (gc_state, version) = GcState::read(repo).await?;
    let mut pending = HashSet::new();
    for g in &gc_state.pending {
        pending.extend(state::load_plan(repo, *g).await?.condemned.into_iter().map(|c| c.pack));
    }
    report.pending_packs = pending.len() as u64;

    progress("listing snapshots and WAL manifests");
    // Snapshots first, then the index: every segment a listed snapshot
    // needs was durable before the snapshot, so the index sync sees it.
    let snapshot_ids = Snapshot::ids(repo).await?;
    let wal_keys = crate::wal::manifest_keys(repo).await?;
    let (wal_packs, wal_problems) = crate::wal::manifest_packs(repo, wal_keys.clone()).await?;
    if let Some((object, message)) = wal_problems.into_iter().next() {
        return Err(Error::corrupt(object, None, format!("{message} (prune needs every WAL manifest)")));
    }
    report.wal_files = wal_keys.len() as u64;
    let mut index = LocalIndex::for_reading(repo, cache_dir, lock_timeout).await?;
    // Marking must see every copy, condemned or not.
    index.exclude(HashSet::new());

    progress("marking what snapshots need");
    let (marked, kept) = mark_all(repo, &index, &snapshot_ids, cache_dir, opts.full, &mut report).await?;
    let live = kept.as_ref();
    drop(index);
    report.snapshots = marked.snapshots.len() as u64;
    let marked_ids = withdraw_dangling(repo, &marked, opts.dry_run, &mut report).await?;

    progress("reading index segments");
    let scope =
        Scope { now, min_age: min_age(repo), pending: &pending, wal_packs: &wal_packs, max_unused: opts.max_unused };
    let (mut condemned, candidates) = classify(repo, &scope, live, &mut report).await?;
    let chosen = choose(candidates, opts.max_repack_bytes, &mut report);
    report.repack.chosen = chosen.iter().map(|c| ObjectKey::Pack(c.pack).to_string()).collect();
    condemned.extend(repack_chosen(repo, chosen, live, opts.dry_run, &mut report, progress).await?);
    drop(kept);
    report.condemned_packs = condemned.len() as u64;
    let segments_touched: HashSet<Id> = condemned.iter().flat_map(|c| c.segments.iter().copied()).collect();
    report.delete_requests = condemned.len() as u64 + 2 * segments_touched.len() as u64;
    let repack_requests =
        report.repack.packs + report.repack.packs_written + u64::from(report.repack.packs_written > 0);
    report.requests = report.delete_requests + repack_requests + 4;
    if opts.dry_run {
        return Ok(report);
    }
    if !condemned.is_empty() {
        let plan = Plan {
            version: 1,
            generation: 0,
            created: chrono::Utc::now().to_rfc3339(),
            snapshots: marked_ids,
            wal: wal_keys,
            condemned,
        };
        match condemn(repo, gc_state, version.as_ref(), plan).await {
            Ok(g) => report.generation = Some(g),
            // Another prune condemned first: sweep what is pending anyway.
            Err(Error::Precondition { what }) => report.deferred.push(format!("no new generation: {what}")),
            Err(e) => return Err(e),
        }
    }
    super::sweep::sweep_pending(repo, cache_dir, lock_timeout, opts, &mut report, progress).await?;
    Ok(report)
}

/// Withdraws the dangling snapshots whose writer's lease was broken (on a
/// dry run, only reports them) and returns the marked snapshots left;
/// refuses when any other snapshot is dangling.
async fn withdraw_dangling(
    repo: &Repository,
    marked: &Marked,
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<Vec<SnapshotId>> {
    let mut marked_ids = marked.snapshots.clone();
    for d in &marked.dangling {
        if withdrawable(repo, d.lease.as_deref()).await? {
            report.withdrawn_snapshots.push(d.id.to_hex());
            marked_ids.retain(|s| *s != d.id);
            if !dry_run {
                repo.store().delete(&ObjectKey::Snapshot(d.id).to_string()).await?;
            }
        } else {
            // Its references are not all known: condemning anything now
            // could delete what it needs.
            return Err(Error::corrupt(
                ObjectKey::Snapshot(d.id).to_string(),
                None,
                format!(
                    "{} blob(s) it needs are missing from every index segment; prune refuses to run (see `cairn check`)",
                    d.missing
                ),
            ));
        }
    }
    Ok(marked_ids)
}

/// Repacks the `chosen` packs (on a dry run, only counts what that would
/// read and write) and returns the packs now to condemn: each one
/// repacked, with the blobs that were not copied.
async fn repack_chosen(
    repo: &Arc<Repository>,
    chosen: Vec<Candidate>,
    live: &dyn Live,
    dry_run: bool,
    report: &mut PruneReport,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Condemned>> {
    let target = u64::from(repo.config().pack_target).max(1);
    if dry_run {
        report.repack.packs = chosen.len() as u64;
        report.repack.bytes_read = chosen.iter().map(|c| c.size).sum();
        for c in &chosen {
            let ids: Vec<BlobId> = c.entries.iter().map(|e| BlobId(Id(e.id))).collect();
            let has = live.has(&ids)?;
            report.repack.live_bytes +=
                c.entries.iter().zip(has).filter(|(_, h)| *h).map(|(e, _)| u64::from(e.stored_len)).sum::<u64>();
        }
        report.repack.packs_written = report.repack.live_bytes.div_ceil(target);
    } else if !chosen.is_empty() {
        progress(&format!("repacking {} pack(s)", chosen.len()));
        let skipped = repack(repo, &chosen, live, &mut report.repack).await?;
        // A pack with a damaged live blob is left whole (and reported):
        // one bad blob must not stop every other pack's collection.
        for (pack, why) in skipped {
            report.problems.push(format!("{}: not repacked: {why}", ObjectKey::Pack(pack)));
        }
    }
    let repacked: HashSet<PackId> =
        if dry_run { HashSet::new() } else { report.repack.repacked.iter().copied().collect() };
    let mut condemned = Vec::new();
    for c in chosen.into_iter().filter(|c| repacked.contains(&c.pack)) {
        // Only what was not copied can make a sweep spare the old pack: a
        // snapshot needing a copied blob finds it in the new pack.
        let ids: Vec<BlobId> = c.entries.iter().map(|e| BlobId(Id(e.id))).collect();
        let has = live.has(&ids)?;
        let uncopied = ids.into_iter().zip(has).filter(|(_, h)| !h).map(|(b, _)| b).collect();
        report.condemned_bytes += c.size;
        condemned.push(Condemned { pack: c.pack, size: c.size, blobs: uncopied, segments: c.segments });
    }
    Ok(condemned)
}

/// What classifying a pack needs to know.
struct Scope<'a> {
    now: SystemTime,
    min_age: Duration,
    pending: &'a HashSet<PackId>,
    wal_packs: &'a HashSet<PackId>,
    max_unused: f64,
}

/// Where a pack went.
enum Class {
    Live,
    Condemned(usize),
    Candidate(usize),
}

/// Reads the index segments one at a time and sorts every listed pack:
/// needed (possibly a repack candidate), or condemned. Memory holds the
/// pack listing and the condemned and candidate packs, not the index.
async fn classify(
    repo: &Repository,
    scope: &Scope<'_>,
    live: &dyn Live,
    report: &mut PruneReport,
) -> Result<(Vec<Condemned>, Vec<(f64, Candidate)>)> {
    let listed: HashMap<PackId, (u64, SystemTime)> = repo
        .store()
        .list(Kind::Pack.prefix())
        .await?
        .into_iter()
        .filter_map(|o| match ObjectKey::parse(&o.key) {
            Some(ObjectKey::Pack(p)) => Some((p, (o.size, o.modified))),
            _ => None,
        })
        .collect();
    report.packs = listed.len() as u64;
    report.pack_bytes = listed.values().map(|(s, _)| s).sum();
    let pending_listed = listed.keys().filter(|p| scope.pending.contains(p)).count() as u64;
    let mut seen: HashMap<PackId, Class> = HashMap::new();
    let mut condemned: Vec<Condemned> = Vec::new();
    let mut candidates: Vec<(f64, Candidate)> = Vec::new();
    let ids = repo.list_ids(ObjectKind::Index).await?;
    let mut segments = futures::stream::iter(ids.into_iter().map(|(id, _)| id))
        .map(|id| async move { Ok::<_, Error>((id, repo.load_segment(&id).await?)) })
        .buffer_unordered(8);
    while let Some(r) = segments.next().await {
        let (seg, s) = r?;
        for p in s.packs {
            let pid = PackId(Id(p.pack_id));
            let Some(&(size, modified)) = listed.get(&pid) else { continue };
            match seen.get(&pid) {
                Some(Class::Condemned(i)) => condemned[*i].segments.push(seg),
                Some(Class::Candidate(i)) => candidates[*i].1.segments.push(seg),
                Some(Class::Live) => {}
                None => {
                    let class = if scope.pending.contains(&pid) || scope.wal_packs.contains(&pid) {
                        Class::Live
                    } else {
                        let ids: Vec<BlobId> = p.blobs.iter().map(|e| BlobId(Id(e.id))).collect();
                        let has = live.has(&ids)?;
                        if has.iter().any(|h| *h) {
                            let share = unused_share(size, &p.blobs, &has);
                            if share > scope.max_unused {
                                let c = Candidate { pack: pid, size, entries: p.blobs, segments: vec![seg] };
                                candidates.push((share, c));
                                Class::Candidate(candidates.len() - 1)
                            } else {
                                Class::Live
                            }
                        } else if scope.now.duration_since(modified).unwrap_or_default() < scope.min_age {
                            report.too_recent_packs += 1;
                            Class::Live
                        } else {
                            condemned.push(Condemned { pack: pid, size, blobs: ids, segments: vec![seg] });
                            Class::Condemned(condemned.len() - 1)
                        }
                    };
                    seen.insert(pid, class);
                }
            }
        }
    }
    // Packs no segment names: WAL packs, and orphans of crashed writers.
    for (pid, (size, modified)) in listed {
        if seen.contains_key(&pid) || scope.pending.contains(&pid) || scope.wal_packs.contains(&pid) {
            continue;
        }
        if scope.now.duration_since(modified).unwrap_or_default() < scope.min_age {
            report.too_recent_packs += 1;
            continue;
        }
        // Its trailer says what it holds; one that cannot be read is left
        // alone: without its blobs a sweep could not tell whether a later
        // snapshot needs it.
        match crate::pack::read_trailer(repo.store(), repo.keys(), &pid, size).await {
            Ok(entries) => {
                let blobs = entries.iter().map(|e| BlobId(Id(e.id))).collect();
                condemned.push(Condemned { pack: pid, size, blobs, segments: Vec::new() });
            }
            Err(e) => report
                .problems
                .push(format!("{}: unreadable pack no index segment names, left alone: {e}", ObjectKey::Pack(pid))),
        }
    }
    report.live_packs = report.packs - condemned.len() as u64 - pending_listed;
    report.condemned_bytes = condemned.iter().map(|c| c.size).sum();
    Ok((condemned, candidates))
}

/// Marks what `ids` need: from the counts kept between prunes (reading
/// only the snapshots added or gone since), or, with `full`, when they
/// cannot be used, from every snapshot's trees. With `full` the counts are
/// brought up to date first and checked against the full mark.
async fn mark_all(
    repo: &Repository,
    index: &LocalIndex,
    ids: &[crate::ids::SnapshotId],
    cache_dir: &std::path::Path,
    full: bool,
    report: &mut PruneReport,
) -> Result<(Marked, Box<dyn Live>)> {
    let dir = Counts::dir(cache_dir, &repo.config().id);
    let mut counts = Counts::open(&dir);
    if let Some(c) = counts.as_mut() {
        match mark_counted(repo, index, ids, c).await? {
            Some((marked, read)) if !full => {
                report.marking = "counts".into();
                report.snapshots_read = read;
                return Ok((marked, Box::new(counts.expect("open"))));
            }
            Some(_) => {}
            None => {
                counts.take().expect("open").destroy();
                counts = Counts::open(&dir);
            }
        }
    }
    report.marking = "full".into();
    let mut live = LiveSet::create(cache_dir)?;
    let marked = mark(repo, index, ids, &mut live).await?;
    report.snapshots_read = marked.snapshots.len() as u64;
    if let (true, Some(c)) = (full, counts) {
        let mut differ = 0u64;
        c.for_each_live(4096, |page| {
            differ += live.has(page)?.iter().filter(|h| !**h).count() as u64;
            Ok(())
        })?;
        live.for_each(4096, |page| {
            differ += c.has(page)?.iter().filter(|h| !**h).count() as u64;
            Ok(())
        })?;
        // A dangling snapshot is marked in full but never counted: the
        // two cannot be compared until it is withdrawn.
        if marked.dangling.is_empty() {
            if differ > 0 {
                tracing::warn!(blobs = differ, "gc counts disagreed with a full mark: dropped");
                c.destroy();
            }
            report.counts_mismatch = Some(differ);
        }
    }
    Ok((marked, Box::new(live)))
}

/// The most unused candidates first, within the byte budget.
fn choose(mut candidates: Vec<(f64, Candidate)>, budget: Option<u64>, report: &mut PruneReport) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut budget = budget.unwrap_or(u64::MAX);
    let mut chosen = Vec::new();
    for (_, c) in candidates {
        if c.size <= budget {
            budget -= c.size;
            chosen.push(c);
        } else {
            report.repack.packs_left += 1;
        }
    }
    chosen
}

/// A dangling snapshot is withdrawn only when its writer was fenced out:
/// its lease is a tombstone GC left when it broke it. Any other dangling
/// snapshot stops the prune.
async fn withdrawable(repo: &Repository, lease: Option<&str>) -> Result<bool> {
    let Some(key) = lease else { return Ok(false) };
    match crate::store::BackendExt::get(repo.store(), key).await {
        Err(Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
        Ok(b) => Ok(super::lease::LeaseRecord::open(repo, key, &b)?.broken.is_some()),
    }
}

/// Every index segment, decoded.
pub(super) async fn read_segments(repo: &Repository) -> Result<Vec<(Id, IndexSegment)>> {
    let ids = repo.list_ids(ObjectKind::Index).await?;
    futures::stream::iter(ids.into_iter().map(|(id, _)| id))
        .map(|id| async move { Ok::<_, Error>((id, repo.load_segment(&id).await?)) })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Publishes `plan` as the next generation: the plan create-only, then
/// `gc/state` by compare-and-swap, then the leases present right after.
async fn condemn(
    repo: &Repository,
    from: GcState,
    version: Option<&crate::store::Version>,
    mut plan: Plan,
) -> Result<u64> {
    // A crashed prune may have left a plan no state names: skip past it.
    let mut g = from.generation + 1;
    for o in repo.store().list("gc/plans").await? {
        if let Some(ObjectKey::GcPlan(n)) = ObjectKey::parse(&o.key) {
            g = g.max(n + 1);
        }
    }
    plan.generation = g;
    let key = ObjectKey::GcPlan(g).to_string();
    match repo.store().put_opts(&key, state::seal(repo, &key, &plan), PutMode::Create).await {
        Ok(_) => {}
        // Another prune is publishing the same generation.
        Err(Error::AlreadyExists { .. }) => {
            return Err(Error::Precondition { what: format!("{key} (another prune is condemning; run prune again)") })
        }
        Err(e) => return Err(e),
    }
    let mut next = from.clone();
    next.version = 1;
    next.generation = g;
    next.pending.push(g);
    next.updated = chrono::Utc::now().to_rfc3339();
    match next.swap(repo, version).await {
        Ok(_) => {}
        Err(Error::Precondition { .. } | Error::AlreadyExists { .. }) => {
            return Err(Error::Precondition {
                what: "gc/state (another prune moved it meanwhile; run prune again)".into(),
            })
        }
        Err(e) => return Err(e),
    }
    record_leases(repo, g).await?;
    Ok(g)
}

/// Writes `gc/leases/<g>`: the leases present now, which is after the
/// state moved to `g`. Listed later than that only adds leases (safe);
/// a lease that ended before is one whose writer already committed.
pub(super) async fn record_leases(repo: &Repository, g: u64) -> Result<LeaseList> {
    let leases: Vec<String> = repo.store().list(Kind::Lease.prefix()).await?.into_iter().map(|o| o.key).collect();
    let list = LeaseList { version: 1, leases };
    let key = ObjectKey::GcLeases(g).to_string();
    match repo.store().put_opts(&key, state::seal(repo, &key, &list), PutMode::Create).await {
        Ok(_) => Ok(list),
        Err(Error::AlreadyExists { .. }) => match state::read::<LeaseList>(repo, &ObjectKey::GcLeases(g)).await? {
            Some((l, _)) => Ok(l),
            None => Err(Error::Precondition { what: key }),
        },
        Err(e) => Err(e),
    }
}
