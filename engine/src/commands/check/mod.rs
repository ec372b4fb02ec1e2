//! `cairn check`: verify the repository's structure and, optionally, data.
//!
//! Structure: every index segment and snapshot opens and hashes to its
//! name; every pack an index segment names exists with the recorded size;
//! every tree and data blob a snapshot needs is in some index segment.
//! Data (`--read-data`, or a share of the packs): every byte of the pack
//! hashes to its name, the trailer opens and agrees with the index, and
//! every blob decrypts, decompresses and hashes to its id.
//!
//! Every check records itself in `check/coverage` ([`coverage`]): the packs
//! it read and verified, and its outcome. A share of the packs is chosen
//! from that record, least recently checked first, so N runs at 1/N read
//! every pack, whichever hosts run them.

mod coverage;

pub use coverage::{check_coverage, CheckCoverage, CheckRecord};

use crate::repofile::ObjectKey;
use crate::store::{Backend as _, BackendExt as _};
use std::collections::{HashMap, HashSet};

use cairn_formats::repo::{decode_tree, BlobEntry, BlobKind};
use futures::StreamExt;
use serde::Serialize;

use crate::ids::{BlobId, Id, PackId, TreeId};
use crate::pack::{open_blob, trailer_of};
use crate::repo::{ObjectKind, Repository};
use crate::snapshot::Snapshot;
use crate::{Error, Result};

/// How much data to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every pack.
    All,
    /// This percentage of the packs (rounded up): those not yet read in the
    /// current round of `check/coverage`, least recently read first.
    Percent(f64),
}

/// One problem found, naming the object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Object key.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// The result of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Index segments checked.
    pub index_segments: u64,
    /// WAL manifests checked (they open and their packs exist).
    pub wal_files: u64,
    /// Packs listed in the store.
    pub packs: u64,
    /// Packs whose data was read.
    pub packs_read: u64,
    /// Their bytes.
    pub bytes_read: u64,
    /// Blobs verified by reading.
    pub blobs_read: u64,
    /// The keys of the packs read, sorted.
    pub read_packs: Vec<String>,
    /// Packs no index segment names (left by interrupted backups; harmless,
    /// garbage collection removes them).
    pub unreferenced_packs: Vec<String>,
    /// Problems: anything here means the check failed.
    pub problems: Vec<Problem>,
    /// How far checks have read the packs, this one included.
    pub coverage: CheckCoverage,
}

fn problem(r: &mut CheckReport, object: impl Into<String>, message: impl Into<String>) {
    r.problems.push(Problem { object: object.into(), message: message.into() });
}

/// Runs a check: packs, index segments, WAL manifests and snapshots, then
/// (as `read` says) the packs' bytes; and records it in `check/coverage`
/// (packs whose read found a problem are not counted as read, so the next
/// check reads them first). A damaged `check/coverage` is a problem, and
/// replaced.
pub async fn check(repo: &Repository, read: ReadData) -> Result<CheckReport> {
    let started = chrono::Utc::now();
    let mut report = CheckReport::default();
    let packs = list_packs(repo, &mut report).await?;
    let (blobs, indexed_packs) = read_index(repo, &packs, &mut report).await?;
    check_wal(repo, &packs, &indexed_packs, &mut report).await?;
    check_snapshots(repo, &blobs, &mut report).await?;
    let file = match coverage::load(repo).await {
        Ok(f) => f,
        Err(Error::Corrupt { object, detail, .. }) => {
            problem(&mut report, object, detail);
            coverage::CoverageFile::default()
        }
        Err(e) => return Err(e),
    };
    let mut ids: Vec<PackId> = packs.keys().copied().collect();
    ids.sort();
    let (round, starts, to_read) = match read {
        ReadData::None => (file.round, false, Vec::new()),
        ReadData::All => file.plan(&ids, ids.len()),
        ReadData::Percent(p) => file.plan(&ids, coverage::share_of(ids.len(), p)),
    };
    let verified = read_data(repo, &packs, &indexed_packs, to_read, &mut report).await;
    report.problems.sort_by(|a, b| a.object.cmp(&b.object).then(a.message.cmp(&b.message)));
    let reads = coverage::Reads {
        round,
        round_started: starts.then(|| started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        packs: verified,
        at: started.timestamp(),
        record: CheckRecord {
            time: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            host: crate::hostname(),
            problems: report.problems.len() as u64,
            packs_read: report.packs_read,
            packs_total: report.packs,
            data_read: read != ReadData::None,
            subset_percent: match read {
                ReadData::Percent(p) => Some(p),
                _ => None,
            },
        },
    };
    let file = coverage::record(repo, &reads, &packs.keys().copied().collect()).await?;
    report.coverage = CheckCoverage::of(&file, ids);
    Ok(report)
}

/// Every pack in the store, with its size.
async fn list_packs(repo: &Repository, report: &mut CheckReport) -> Result<HashMap<PackId, u64>> {
    let packs: HashMap<PackId, u64> = repo
        .store()
        .list("packs")
        .await?
        .into_iter()
        .filter_map(|o| {
            let id = PackId::from_hex(o.key.rsplit('/').next().unwrap_or_default());
            if id.is_none() {
                report.problems.push(Problem { object: o.key.clone(), message: "malformed pack name".into() });
            }
            id.map(|id| (id, o.size))
        })
        .collect();
    report.packs = packs.len() as u64;
    Ok(packs)
}

/// Where every blob is, by index segment; and each indexed pack's blobs.
type Indexed = (HashMap<BlobId, (PackId, BlobEntry)>, HashMap<PackId, Vec<BlobEntry>>);

/// Index segments → where every blob is; a pack a segment names must exist
/// with the size it records.
async fn read_index(repo: &Repository, packs: &HashMap<PackId, u64>, report: &mut CheckReport) -> Result<Indexed> {
    let mut blobs: HashMap<BlobId, (PackId, BlobEntry)> = HashMap::new();
    let mut indexed_packs: HashMap<PackId, Vec<BlobEntry>> = HashMap::new();
    let segs = repo.list_ids(ObjectKind::Index).await?;
    let mut fetched = futures::stream::iter(segs.into_iter().map(|(id, _)| id))
        .map(|id| async move { (id, repo.load_segment(&id).await) })
        .buffer_unordered(16);
    while let Some((id, r)) = fetched.next().await {
        report.index_segments += 1;
        let seg = match r {
            Ok(s) => s,
            Err(e) => {
                problem(report, ObjectKey::Index(id).to_string(), e.to_string());
                continue;
            }
        };
        for p in seg.packs {
            let pid = PackId(Id(p.pack_id));
            match packs.get(&pid) {
                None => problem(
                    report,
                    ObjectKey::Pack(pid).to_string(),
                    format!("named by {} but missing from the store", ObjectKey::Index(id)),
                ),
                Some(&size) if size != p.pack_len => problem(
                    report,
                    ObjectKey::Pack(pid).to_string(),
                    format!("size {size} in the store, {} recorded by {}", p.pack_len, ObjectKey::Index(id)),
                ),
                Some(_) => {}
            }
            for b in &p.blobs {
                blobs.insert(BlobId(Id(b.id)), (pid, *b));
            }
            indexed_packs.insert(pid, p.blobs);
        }
    }
    Ok((blobs, indexed_packs))
}

/// WAL manifests → their packs (WAL never goes through the index); packs
/// neither names are unreferenced.
async fn check_wal(
    repo: &Repository,
    packs: &HashMap<PackId, u64>,
    indexed_packs: &HashMap<PackId, Vec<BlobEntry>>,
    report: &mut CheckReport,
) -> Result<()> {
    let (wal_packs, wal_files, wal_problems) = crate::wal::referenced_packs(repo).await?;
    report.wal_files = wal_files;
    for (object, message) in wal_problems {
        problem(report, object, message);
    }
    for p in crate::wal::catalog::catalogue_problems(repo).await? {
        problem(report, p.object, p.message);
    }
    for pid in &wal_packs {
        if !packs.contains_key(pid) {
            problem(report, ObjectKey::Pack(*pid).to_string(), "named by a WAL manifest but missing from the store");
        }
    }
    report.unreferenced_packs = packs
        .keys()
        .filter(|p| !indexed_packs.contains_key(p) && !wal_packs.contains(p))
        .map(|p| ObjectKey::Pack(*p).to_string())
        .collect();
    report.unreferenced_packs.sort();
    Ok(())
}

/// Snapshots → every tree and data blob they need.
async fn check_snapshots(
    repo: &Repository,
    blobs: &HashMap<BlobId, (PackId, BlobEntry)>,
    report: &mut CheckReport,
) -> Result<()> {
    let mut trees_done: HashSet<TreeId> = HashSet::new();
    for id in Snapshot::ids(repo).await? {
        report.snapshots += 1;
        let key = ObjectKey::Snapshot(id).to_string();
        let snap = match Snapshot::load(repo, &id).await {
            Ok(s) => s,
            Err(e) => {
                problem(report, key, e.to_string());
                continue;
            }
        };
        for entry in &snap.entries {
            let members = entry.members.iter().flat_map(|m| m.content.iter());
            for t in entry.content.iter().chain(members) {
                let tid = t.tree;
                if !trees_done.insert(tid) {
                    continue;
                }
                match check_tree(repo, blobs, &tid).await {
                    Ok(missing) => {
                        for m in missing {
                            let what = format!("entry {:?} needs blob {m}, which no index segment lists", entry.name);
                            problem(report, &key, what);
                        }
                    }
                    Err(e) => problem(report, &key, format!("tree {}: {e}", tid.short())),
                }
            }
        }
    }
    Ok(())
}

/// Reads the packs of `to_read` whole: each must hash to its name, its
/// trailer agree with the index, every blob open. Returns those that did.
async fn read_data(
    repo: &Repository,
    packs: &HashMap<PackId, u64>,
    indexed_packs: &HashMap<PackId, Vec<BlobEntry>>,
    to_read: Vec<PackId>,
    report: &mut CheckReport,
) -> Vec<PackId> {
    let mut verified = Vec::new();
    let mut reads = futures::stream::iter(to_read)
        .map(|pid| {
            let expected = indexed_packs.get(&pid).cloned();
            async move { (pid, read_pack(repo, &pid, expected).await) }
        })
        .buffer_unordered(4);
    while let Some((pid, r)) = reads.next().await {
        report.packs_read += 1;
        report.bytes_read += packs.get(&pid).copied().unwrap_or(0);
        report.read_packs.push(ObjectKey::Pack(pid).to_string());
        match r {
            Ok(n) => {
                report.blobs_read += n;
                verified.push(pid);
            }
            Err(e) => {
                let key = ObjectKey::Pack(pid).to_string();
                // The problem names the pack already; its message need not.
                let message = match e {
                    Error::Corrupt { object, offset, detail } if object == key => match offset {
                        Some(at) => format!("at offset {at}: {detail}"),
                        None => detail,
                    },
                    other => other.to_string(),
                };
                problem(report, key, message)
            }
        }
    }
    report.read_packs.sort();
    verified
}

async fn check_tree(
    repo: &Repository,
    blobs: &HashMap<BlobId, (PackId, BlobEntry)>,
    tid: &TreeId,
) -> Result<Vec<BlobId>> {
    let Some((pack, entry)) = blobs.get(&tid.blob()) else {
        return Ok(vec![tid.blob()]);
    };
    if entry.kind != BlobKind::Tree {
        return Err(crate::Error::corrupt(
            ObjectKey::Pack(*pack).to_string(),
            Some(entry.offset.into()),
            "tree id names a data blob",
        ));
    }
    let key = ObjectKey::Pack(*pack).to_string();
    let s = u64::from(entry.offset);
    let sealed = repo.store().get_range(&key, s..s + u64::from(entry.stored_len)).await?;
    let plain = open_blob(repo.keys(), &key, entry, &sealed)?;
    let refs = decode_tree(&plain).map_err(|e| crate::Error::decode(&key, e))?;
    Ok(refs.iter().map(|r| BlobId(Id(r.id))).filter(|id| !blobs.contains_key(id)).collect())
}

/// Reads one pack whole; returns the number of blobs verified.
async fn read_pack(repo: &Repository, pid: &PackId, expected: Option<Vec<BlobEntry>>) -> Result<u64> {
    let key = ObjectKey::Pack(*pid).to_string();
    let bytes = repo.store().get(&key).await?;
    let keys = repo.keys();
    tokio::task::block_in_place(|| {
        if Id::of_bytes(&bytes) != pid.0 {
            return Err(Error::corrupt(
                &key,
                None,
                "content does not match its name (BLAKE3 mismatch): the pack was modified",
            ));
        }
        let entries = trailer_of(keys, &key, &bytes)?;
        if let Some(exp) = expected {
            if exp != entries {
                return Err(Error::corrupt(
                    &key,
                    None,
                    "trailer disagrees with the index segment that names this pack",
                ));
            }
        }
        for e in &entries {
            // decode_trailer keeps every entry inside the pack; checked
            // again here so a slip there is an error, not a panic.
            let s = e.offset as usize;
            let sealed = bytes
                .get(s..s + e.stored_len as usize)
                .ok_or_else(|| Error::corrupt(&key, Some(s as u64), "trailer entry runs past the pack"))?;
            open_blob(keys, &key, e, sealed)?;
        }
        Ok(entries.len() as u64)
    })
}
