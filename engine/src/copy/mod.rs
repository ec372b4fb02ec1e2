//! `cairn copy`: snapshots, and WAL manifests with their packs, from one
//! repository into another.
//!
//! Planned, then executed ([`Copier::plan`] returns a [`CopyPlan`] a dry
//! run prints; [`Copier::execute`] carries it out). When both repositories
//! are copy-compatible ([`Repository::copy_compatible`]: the target was
//! made with `cairn init --copy-from`), every object is valid byte for byte
//! in both, so packs, snapshots and WAL manifests move without being
//! decrypted or re-encrypted, and keep their ids; the rest of this page is
//! about that case. Otherwise every blob is re-sealed (`reseal.rs`): same
//! order, but new packs, new snapshot ids, and much slower.
//!
//! # Order
//! 1. Packs the target lacks, [`CopyOptions::transfers`] at a time; each
//!    read is checked against its BLAKE3 name and its trailer opened
//!    before it is written, and a write returns only once durable.
//! 2. One index segment per [`SEGMENT_PACKS`] packs that the target's
//!    index segments do not list yet (packs copied now, or by a run that
//!    was killed before its segment).
//! 3. Snapshots, then stanza records, then WAL manifests (create-only),
//!    between two renewals of the target lease.
//!
//! A kill at any point leaves the target referencing only packs it holds;
//! the next run finds what is there (listing `packs/`, the target's index,
//! `snapshots/` and `wal/`) and copies only the rest.
//!
//! # Fencing
//! Writing to the target takes a lease there, as a backup does (the target
//! index is opened with [`LocalIndex::for_writing`]), so a concurrent prune
//! of the target never sweeps what the copy is adding. Blobs in packs a
//! pending garbage collection condemned count as absent; when such a pack
//! is one the copy would need (same bytes, same name), the copy refuses
//! until a `cairn prune` of the target has finished that collection: the
//! sweep may delete it whatever the copy does, since the copy's lease came
//! after the condemnation.

mod packs;
mod reseal;
mod wal;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_formats::repo::{IndexSegment, PackEntries};
use serde::Serialize;

use crate::commands::restore::load_tree;
use crate::ids::{BlobId, Id, PackId, SnapshotId, TreeId};
use crate::index::LocalIndex;
use crate::repo::{ObjectKind, Repository};
use crate::repofile::{Kind, ObjectKey};
use crate::snapshot::Snapshot;
use crate::store::{Backend as _, BackendExt as _};
use crate::{Error, Result};

/// Most packs one index segment written by a copy lists.
pub const SEGMENT_PACKS: usize = 512;

/// Test-only: write snapshots and WAL manifests before the packs they
/// reference, so that the crash test can show it catches a wrong order.
const UNSAFE_ORDER_ENV: &str = "CAIRN_TEST_UNSAFE_COPY_ORDER";

/// What to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Only snapshots of these source names (none: every source).
    pub sources: Vec<String>,
    /// Only these snapshots (`latest` or id prefixes; none: every one).
    pub snapshots: Vec<String>,
    /// Copy snapshots at all (false: WAL only).
    pub with_snapshots: bool,
    /// Also copy WAL: manifests, stanza records and their packs.
    pub wal: bool,
    /// Only this stanza's WAL (none: every stanza).
    pub stanza: Option<String>,
    /// Packs copied at once.
    pub transfers: usize,
    /// Where the source's local index cache lives.
    pub cache_dir: PathBuf,
    /// Where the target's local index cache lives.
    pub target_cache_dir: PathBuf,
    /// How long to wait for another process holding a local index.
    pub lock_timeout: Duration,
}

/// What a copy will do; [`execute`] carries it out.
#[derive(Debug, Default)]
pub struct CopyPlan {
    /// Snapshots to copy, oldest first.
    pub snapshots: Vec<SnapshotId>,
    /// Selected snapshots the target already holds.
    pub snapshots_present: u64,
    /// Packs to transfer, with their sizes.
    pub packs: BTreeMap<PackId, u64>,
    /// Packs the snapshots need that the target holds but does not index
    /// yet (left by an interrupted copy), with their sizes in the target.
    pub unindexed: BTreeMap<PackId, u64>,
    /// Packs that go into the new index segments (snapshot packs; WAL
    /// packs are reached through their manifests only).
    pub to_index: BTreeSet<PackId>,
    /// Stanza records the target lacks: key and stored bytes.
    pub stanzas: Vec<(String, Bytes)>,
    /// WAL manifests the target lacks: key and stored bytes (verified).
    pub wal: Vec<(String, Bytes)>,
    /// Selected WAL manifests the target already holds.
    pub wal_present: u64,
    /// Packs the WAL manifests to copy reference (byte copies only).
    pub wal_packs: BTreeSet<PackId>,
    /// The repositories are not copy-compatible: blobs are re-sealed.
    pub reseal: bool,
    /// Re-sealing: plaintext bytes of the snapshots to copy (each read,
    /// decrypted and sealed again, whatever the target holds).
    pub reseal_bytes: u64,
}

impl CopyPlan {
    /// Bytes of the packs to transfer.
    pub fn pack_bytes(&self) -> u64 {
        self.packs.values().sum()
    }

    /// Bytes of manifests and records to write.
    pub fn manifest_bytes(&self) -> u64 {
        self.stanzas.iter().chain(&self.wal).map(|(_, b)| b.len() as u64).sum()
    }
}

/// What a copy did (or, dry, would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct CopyReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// Blobs were re-sealed (the repositories are not copy-compatible);
    /// a dry run then cannot tell the packs to write.
    pub resealed: bool,
    /// Re-sealing: plaintext bytes of the snapshots read.
    pub reseal_bytes: u64,
    /// Snapshots copied.
    pub snapshots: u64,
    /// Selected snapshots already in the target.
    pub snapshots_present: u64,
    /// Packs transferred.
    pub packs: u64,
    /// Their bytes.
    pub pack_bytes: u64,
    /// Index segments written.
    pub index_segments: u64,
    /// Stanza records copied.
    pub stanzas: u64,
    /// WAL manifests copied.
    pub wal_manifests: u64,
    /// Selected WAL manifests already in the target.
    pub wal_present: u64,
    /// Seconds taken by the execution (not the planning).
    pub duration_s: f64,
}

impl CopyReport {
    /// The report of a dry run of `plan`.
    pub fn of_plan(plan: &CopyPlan) -> CopyReport {
        CopyReport {
            dry_run: true,
            resealed: plan.reseal,
            reseal_bytes: plan.reseal_bytes,
            snapshots: plan.snapshots.len() as u64,
            snapshots_present: plan.snapshots_present,
            packs: plan.packs.len() as u64,
            pack_bytes: plan.pack_bytes(),
            index_segments: plan.to_index.len().div_ceil(SEGMENT_PACKS) as u64,
            stanzas: plan.stanzas.len() as u64,
            wal_manifests: plan.wal.len() as u64,
            wal_present: plan.wal_present,
            duration_s: 0.0,
        }
    }
}

/// Bytes and packs transferred so far, for a progress display.
#[derive(Debug, Default)]
pub struct CopyProgress {
    /// Pack bytes written to the target.
    pub bytes: AtomicU64,
    /// Packs written to the target.
    pub packs: AtomicU64,
}

/// A copy under way: both repositories and the target's index, which
/// holds the target lease (none in a dry run).
pub struct Copier {
    src: Arc<Repository>,
    dst: Arc<Repository>,
    dst_index: LocalIndex,
    opts: CopyOptions,
    reseal: bool,
}

impl Copier {
    /// Opens the target's index. With `write`, it is opened for writing,
    /// which takes a lease on the target. Repositories that are not
    /// copy-compatible are copied by re-sealing (`reseal.rs`).
    pub async fn open(src: Arc<Repository>, dst: Arc<Repository>, opts: CopyOptions, write: bool) -> Result<Copier> {
        if src.config().id == dst.config().id {
            return Err(Error::InvalidInput("source and target are the same repository".into()));
        }
        let reseal = !src.copy_compatible(&dst);
        if reseal {
            tracing::warn!(
                "the repositories are not copy-compatible (different keys or chunker): every blob is decrypted and \
                 sealed again, which is much slower; a target made with `cairn init --copy-from` is copied byte for byte"
            );
        }
        let dst_index = if write {
            LocalIndex::for_writing(&dst, &opts.target_cache_dir, opts.lock_timeout).await?
        } else {
            LocalIndex::for_reading(&dst, &opts.target_cache_dir, opts.lock_timeout).await?
        };
        Ok(Copier { src, dst, dst_index, opts, reseal })
    }

    /// Works out what the target lacks.
    pub async fn plan(&self) -> Result<CopyPlan> {
        let mut plan = CopyPlan { reseal: self.reseal, ..Default::default() };
        let dst_packs = pack_sizes(&self.dst).await?;
        let mut src_packs: Option<BTreeMap<PackId, u64>> = None;
        if self.opts.with_snapshots {
            let src_packs = src_packs.insert(pack_sizes(&self.src).await?);
            self.plan_snapshots(&mut plan, src_packs, &dst_packs).await?;
        }
        if self.opts.wal {
            let src_packs = match src_packs {
                Some(p) => p,
                None => pack_sizes(&self.src).await?,
            };
            let stanza = self.opts.stanza.as_deref();
            wal::plan(&self.src, &self.dst, stanza, &src_packs, &dst_packs, &mut plan).await?;
            if !plan.reseal {
                let condemned = self.dst_index.excluded();
                for pack in plan.wal_packs.iter() {
                    refuse_condemned(pack, &dst_packs, condemned)?;
                }
            }
        }
        Ok(plan)
    }

    async fn plan_snapshots(
        &self,
        plan: &mut CopyPlan,
        src_packs: &BTreeMap<PackId, u64>,
        dst_packs: &BTreeMap<PackId, u64>,
    ) -> Result<()> {
        // Present: the same id (a byte copy), or re-sealed from it.
        let mut present = HashSet::new();
        for (id, snap) in Snapshot::list(&self.dst).await? {
            present.insert(id.to_hex());
            present.extend(snap.copied_from);
        }
        let chosen = self.choose().await?;
        if self.reseal {
            for (id, snap) in chosen {
                if present.contains(&id.to_hex()) {
                    plan.snapshots_present += 1;
                } else {
                    plan.reseal_bytes += trees_of_refs(&snap).map(|t| t.bytes).sum::<u64>();
                    plan.snapshots.push(id);
                }
            }
            return Ok(());
        }
        let src_index = LocalIndex::for_reading(&self.src, &self.opts.cache_dir, self.opts.lock_timeout).await?;
        let mut blobs: HashSet<BlobId> = HashSet::new();
        for (id, snap) in chosen {
            if present.contains(&id.to_hex()) {
                plan.snapshots_present += 1;
                continue;
            }
            for tree in trees_of(&snap) {
                if !blobs.insert(tree.blob()) {
                    continue;
                }
                for r in load_tree(&self.src, &src_index, tree).await? {
                    blobs.insert(BlobId(Id(r.id)));
                }
            }
            plan.snapshots.push(id);
        }
        let blobs: Vec<BlobId> = blobs.into_iter().collect();
        for page in blobs.chunks(4096) {
            let there = self.dst_index.lookup_many(page)?;
            let lacking: Vec<BlobId> = page.iter().zip(there).filter(|(_, t)| t.is_none()).map(|(b, _)| *b).collect();
            for (blob, at) in lacking.iter().zip(src_index.lookup_many(&lacking)?) {
                let at = at.ok_or_else(|| Error::NotFound {
                    what: format!("blob {blob} in the source's index (run `cairn check` on the source)"),
                })?;
                plan.to_index.insert(at.pack);
            }
        }
        let condemned = self.dst_index.excluded();
        for pack in &plan.to_index {
            refuse_condemned(pack, dst_packs, condemned)?;
            match dst_packs.get(pack) {
                Some(size) => {
                    plan.unindexed.insert(*pack, *size);
                }
                None => {
                    let size = src_packs.get(pack).ok_or_else(|| Error::NotFound {
                        what: format!("{} in the source (run `cairn check` on the source)", ObjectKey::Pack(*pack)),
                    })?;
                    plan.packs.insert(*pack, *size);
                }
            }
        }
        Ok(())
    }

    /// The selected snapshots, oldest first.
    async fn choose(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let all = Snapshot::list(&self.src).await?;
        let by_source = |s: &Snapshot| self.opts.sources.is_empty() || self.opts.sources.contains(&s.source.name);
        if self.opts.snapshots.is_empty() {
            return Ok(all.into_iter().filter(|(_, s)| by_source(s)).collect());
        }
        let mut wanted = HashSet::new();
        for spec in &self.opts.snapshots {
            wanted.insert(Snapshot::resolve(&self.src, spec, None).await?.0);
        }
        Ok(all.into_iter().filter(|(id, s)| wanted.contains(id) && by_source(s)).collect())
    }

    /// Carries out `plan` in the order the module docs give, then releases
    /// the target lease.
    pub async fn execute(self, plan: CopyPlan, progress: &CopyProgress) -> Result<CopyReport> {
        if self.reseal {
            return self.execute_reseal(plan, progress).await;
        }
        let started = std::time::Instant::now();
        let mut report = CopyReport {
            snapshots_present: plan.snapshots_present,
            wal_present: plan.wal_present,
            ..Default::default()
        };
        let unsafe_order = std::env::var_os(UNSAFE_ORDER_ENV).is_some();
        if unsafe_order {
            tracing::warn!("{UNSAFE_ORDER_ENV} is set: writing manifests before their packs (tests only)");
            self.commit(&plan, &mut report).await?;
        }
        let copied = packs::transfer(&self.src, &self.dst, &plan.packs, self.opts.transfers, progress).await?;
        report.packs = copied.len() as u64;
        report.pack_bytes = plan.pack_bytes();
        let mut entries: Vec<PackEntries> = Vec::new();
        for (pack, blobs) in copied {
            if plan.to_index.contains(&pack) {
                entries.push(PackEntries { pack_id: pack.0 .0, pack_len: plan.packs[&pack], blobs });
            }
        }
        entries.extend(packs::trailers(&self.dst, &plan.unindexed, self.opts.transfers).await?);
        entries.sort_by_key(|e| e.pack_id);
        for chunk in entries.chunks(SEGMENT_PACKS) {
            let seg = IndexSegment { packs: chunk.to_vec() };
            let id = self.dst.put_object(ObjectKind::Index, &seg.encode()).await?;
            self.dst_index.record_segment(&id, &seg)?;
            report.index_segments += 1;
        }
        if !unsafe_order {
            self.commit(&plan, &mut report).await?;
        }
        self.dst_index.release().await?;
        report.duration_s = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Writes snapshots, stanza records and WAL manifests between two
    /// renewals of the lease; when the second fails (garbage collection
    /// broke the lease, so packs may be gone), withdraws the snapshots.
    async fn commit(&self, plan: &CopyPlan, report: &mut CopyReport) -> Result<()> {
        let lease = self.dst_index.lease();
        if let Some(l) = lease {
            l.renew().await?;
        }
        let mut written = Vec::new();
        for id in &plan.snapshots {
            let key = ObjectKey::Snapshot(*id).to_string();
            let bytes = self.src.store().get(&key).await?;
            self.src.open_object(ObjectKind::Snapshot, &key, &id.0, &bytes)?;
            self.dst.store().put(&key, bytes).await?;
            written.push(key);
            report.snapshots += 1;
        }
        for (key, bytes) in &plan.stanzas {
            put_wal_once(&self.src, &self.dst, key, bytes).await?;
            report.stanzas += 1;
        }
        if !plan.wal.is_empty() {
            wal::forget_catalogue(&self.src, &self.dst, &plan.wal).await?;
        }
        for (key, bytes) in &plan.wal {
            put_wal_once(&self.src, &self.dst, key, bytes).await?;
            report.wal_manifests += 1;
        }
        if !plan.wal.is_empty() {
            wal::forget_catalogue(&self.src, &self.dst, &plan.wal).await?;
        }
        if let Some(l) = lease {
            if let Err(e) = l.renew().await {
                for key in &written {
                    let _ = self.dst.store().delete(key).await;
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Copier {
    /// Re-sealing: every selected snapshot's blobs into new target packs
    /// and index segments, then WAL packs, then (committed as in
    /// [`Copier::commit`]) the new snapshots and WAL records.
    async fn execute_reseal(self, plan: CopyPlan, progress: &CopyProgress) -> Result<CopyReport> {
        let started = std::time::Instant::now();
        let mut report = CopyReport {
            resealed: true,
            reseal_bytes: plan.reseal_bytes,
            snapshots_present: plan.snapshots_present,
            wal_present: plan.wal_present,
            ..Default::default()
        };
        let mut snapshots = Vec::new();
        if !plan.snapshots.is_empty() {
            let src_index = LocalIndex::for_reading(&self.src, &self.opts.cache_dir, self.opts.lock_timeout).await?;
            let mut r = reseal::Resealer::new(&self.src, &self.dst, &src_index, &self.dst_index, progress);
            for id in &plan.snapshots {
                let mut snap = r.snapshot(&Snapshot::load(&self.src, id).await?).await?;
                snap.copied_from = Some(id.to_hex());
                snap.lease = self.dst_index.lease().map(|l| l.key().to_string());
                snapshots.push(snap);
            }
            r.finish().await?;
            (report.packs, report.pack_bytes, report.index_segments) = (r.packs, r.pack_bytes, r.segments);
        }
        let mut stanzas = Vec::new();
        for (key, bytes) in &plan.stanzas {
            stanzas.push((key.clone(), reseal::wal_record(&self.src, &self.dst, key, bytes).await?.0));
        }
        let mut manifests = Vec::new();
        for (key, bytes) in &plan.wal {
            let (sealed, len) = reseal::wal_record(&self.src, &self.dst, key, bytes).await?;
            report.packs += u64::from(len > 0);
            report.pack_bytes += len;
            manifests.push((key.clone(), sealed));
        }
        let lease = self.dst_index.lease();
        if let Some(l) = lease {
            l.renew().await?;
        }
        let mut written = Vec::new();
        for snap in &snapshots {
            written.push(ObjectKey::Snapshot(snap.save(&self.dst).await?).to_string());
            report.snapshots += 1;
        }
        // Create-only; one already there was written by an interrupted
        // run (its own pack durable first) and stands.
        for (key, bytes) in &stanzas {
            create_or_keep(&self.dst, key, bytes).await?;
            report.stanzas += 1;
        }
        if !manifests.is_empty() {
            wal::forget_catalogue(&self.src, &self.dst, &manifests).await?;
        }
        for (key, bytes) in &manifests {
            create_or_keep(&self.dst, key, bytes).await?;
            report.wal_manifests += 1;
        }
        if !manifests.is_empty() {
            wal::forget_catalogue(&self.src, &self.dst, &manifests).await?;
        }
        if let Some(l) = lease {
            if let Err(e) = l.renew().await {
                for key in &written {
                    let _ = self.dst.store().delete(key).await;
                }
                return Err(e);
            }
        }
        self.dst_index.release().await?;
        report.duration_s = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

async fn create_or_keep(repo: &Repository, key: &str, bytes: &Bytes) -> Result<()> {
    match repo.store().put_create(key, bytes.clone()).await {
        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` at `key` create-only; an object already there with the
/// same bytes (an earlier, interrupted run) is fine, other bytes are a
/// conflict that is reported, not overwritten.
async fn put_once(repo: &Repository, key: &str, bytes: &Bytes) -> Result<()> {
    match repo.store().put_create(key, bytes.clone()).await {
        Ok(()) => Ok(()),
        Err(Error::AlreadyExists { .. }) => {
            if repo.store().get(key).await? == *bytes {
                Ok(())
            } else {
                Err(Error::Conflict {
                    object: key.to_string(),
                    detail: "the target holds different content under this name; left untouched".into(),
                })
            }
        }
        Err(e) => Err(e),
    }
}

/// [`put_once`] for a stanza record or WAL manifest, which the target may
/// also hold under its own seal: `wal push` into both repositories
/// (`wal/copies.rs`) writes one in each. The same cluster, or the same
/// file (size and BLAKE3), is no conflict.
async fn put_wal_once(src: &Repository, dst: &Repository, key: &str, bytes: &Bytes) -> Result<()> {
    let conflict = match put_once(dst, key, bytes).await {
        Err(e @ Error::Conflict { .. }) => e,
        other => return other,
    };
    let there = dst.store().get(key).await?;
    let same = if key == crate::wal::stanza_key(key.split('/').nth(1).unwrap_or_default()) {
        let a = crate::wal::open_named::<crate::wal::StanzaRecord>(src, key, bytes)?;
        let b = crate::wal::open_named::<crate::wal::StanzaRecord>(dst, key, &there)?;
        (a.system_id, a.segment_size) == (b.system_id, b.segment_size)
    } else {
        let a = crate::wal::open_named::<crate::wal::WalManifest>(src, key, bytes)?;
        let b = crate::wal::open_named::<crate::wal::WalManifest>(dst, key, &there)?;
        (a.size, a.blake3) == (b.size, b.blake3)
    };
    if same {
        Ok(())
    } else {
        Err(conflict)
    }
}

/// A pack the target holds but a pending garbage collection there has
/// condemned: its sweep may delete it whatever this copy does (the copy's
/// lease came after the condemnation), and a byte copy cannot write it
/// under another name. Refused, saying how to get past it.
fn refuse_condemned(
    pack: &PackId,
    dst_packs: &BTreeMap<PackId, u64>,
    condemned: &std::collections::HashSet<PackId>,
) -> Result<()> {
    if dst_packs.contains_key(pack) && condemned.contains(pack) {
        return Err(Error::Refused {
            what: "the copy".into(),
            detail: format!(
                "the target holds {} but a pending garbage collection there condemned it; run `cairn prune` on \
                 the target to finish that collection, then copy again",
                ObjectKey::Pack(*pack)
            ),
        });
    }
    Ok(())
}

/// Every pack in `repo`, with its size.
async fn pack_sizes(repo: &Repository) -> Result<BTreeMap<PackId, u64>> {
    let mut out = BTreeMap::new();
    for o in repo.store().list(Kind::Pack.prefix()).await? {
        if let Some(ObjectKey::Pack(id)) = ObjectKey::parse(&o.key) {
            out.insert(id, o.size);
        }
    }
    Ok(out)
}

/// Every tree a snapshot references: its entries' content and member
/// indexes.
fn trees_of(snap: &Snapshot) -> impl Iterator<Item = &TreeId> {
    trees_of_refs(snap).map(|t| &t.tree)
}

fn trees_of_refs(snap: &Snapshot) -> impl Iterator<Item = &crate::snapshot::TreeRef> {
    snap.entries.iter().flat_map(|e| e.content.iter().chain(e.members.iter().flat_map(|m| m.content.iter())))
}
