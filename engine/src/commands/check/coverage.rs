//! Check coverage over time: `check/coverage` remembers which packs checks
//! have read, and when, in the repository itself, so that any host
//! continues the rotation. `check --read-data-subset N%` reads the packs
//! not yet read in the current round, never-read and least recently read
//! first; once every pack has been read in a round, the next round begins.
//! So N runs at 1/N read every pack.
//!
//! The object is small, sealed and bound to its key, and moved only by
//! compare-and-swap: a check re-reads it and merges its reads into what is
//! there, so two hosts checking at once never lose each other's progress.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ids::{Id, PackId};
use crate::repo::Repository;
use crate::repofile::envelope::{self, Binding};
use crate::repofile::{ObjectKey, RepoFile};
use crate::store::{Backend as _, BackendExt as _, PutMode, Version};
use crate::{Error, Result};

const COVERAGE_AAD: &[u8] = b"cairn check v1\0";

/// What one check did, as `check/coverage` keeps it for `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// When the check began (RFC 3339, the checking host's clock).
    pub time: String,
    /// The host that ran it.
    pub host: String,
    /// Problems found (0: the check passed).
    pub problems: u64,
    /// Packs whose data it read.
    pub packs_read: u64,
    /// Packs in the store when it listed them.
    pub packs_total: u64,
    /// Whether it read pack data at all (`--read-data` or a subset).
    pub data_read: bool,
    /// The subset asked for (`--read-data-subset`), in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_percent: Option<f64>,
}

/// The last verified read of one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct PackRead {
    /// The round it counted for.
    pub(crate) round: u64,
    /// When (Unix seconds, the reading host's clock).
    pub(crate) at: i64,
}

/// `check/coverage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CoverageFile {
    /// Format version (1).
    pub(crate) version: u32,
    /// The round under way; 0 until a check first reads data.
    pub(crate) round: u64,
    /// When the round began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) round_started: Option<String>,
    /// Each pack's last verified read, by hex id. Packs gone from the
    /// store are dropped by the next check that records.
    pub(crate) packs: BTreeMap<String, PackRead>,
    /// The last check recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_check: Option<CheckRecord>,
}

impl RepoFile for CoverageFile {
    const VERSION: u32 = 1;
    type Id = ();

    fn key(_: &()) -> ObjectKey {
        ObjectKey::CheckCoverage
    }
}

/// What a check adds to `check/coverage`.
#[derive(Debug, Clone)]
pub(crate) struct Reads {
    /// The round the reads count for.
    pub(crate) round: u64,
    /// Set when this check began the round.
    pub(crate) round_started: Option<String>,
    /// Packs read and verified.
    pub(crate) packs: Vec<PackId>,
    /// When the check listed the packs (Unix seconds): every read is
    /// recorded at this time, and an entry for a pack missing from that
    /// listing is dropped only if it is older.
    pub(crate) at: i64,
    /// The check's own record.
    pub(crate) record: CheckRecord,
}

/// Reads `check/coverage`: the outer error is the store's, the inner one
/// the object's content (damaged, or a version this build does not know).
async fn read_raw(repo: &Repository) -> Result<(Result<CoverageFile>, Option<Version>)> {
    let key = ObjectKey::CheckCoverage.to_string();
    let meta = match repo.store().head(&key).await {
        Ok(m) => m,
        Err(Error::NotFound { .. }) => return Ok((Ok(CoverageFile::default()), None)),
        Err(e) => return Err(e),
    };
    let bytes = match repo.store().get(&key).await {
        Ok(b) => b,
        Err(Error::NotFound { .. }) => return Ok((Ok(CoverageFile::default()), None)),
        Err(e) => return Err(e),
    };
    // The version is the one read before the bytes: a compare-and-swap
    // against it fails if anything changed in between, which is safe.
    let file = envelope::open(repo.keys(), &key, Binding::Key(COVERAGE_AAD, &key), &bytes)
        .and_then(|json| CoverageFile::decode(&key, &json));
    Ok((file, Some(meta.version)))
}

/// The current `check/coverage` (empty if none was written yet).
pub(crate) async fn load(repo: &Repository) -> Result<CoverageFile> {
    read_raw(repo).await?.0
}

/// Merges `reads` into `check/coverage` by compare-and-swap, starting over
/// whenever another check moved it meanwhile. `listed` is every pack the
/// check listed. A damaged object is replaced (the check reported it); one
/// of an unknown version is left alone and the error returned.
pub(crate) async fn record(repo: &Repository, reads: &Reads, listed: &HashSet<PackId>) -> Result<CoverageFile> {
    let key = ObjectKey::CheckCoverage.to_string();
    loop {
        let (file, version) = read_raw(repo).await?;
        let mut file = match file {
            Ok(f) => f,
            Err(Error::Corrupt { .. }) => CoverageFile::default(),
            Err(e) => return Err(e),
        };
        file.merge(reads, listed);
        let sealed = envelope::seal(repo.keys(), Binding::Key(COVERAGE_AAD, &key), &file.encode());
        let mode = match version {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        match repo.store().put_opts(&key, sealed.into(), mode).await {
            Ok(_) => return Ok(file),
            Err(Error::Precondition { .. } | Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

impl CoverageFile {
    /// Adds one check's reads: the later round wins, each pack keeps its
    /// latest read (by round, then time), and packs that were missing
    /// from the check's listing are dropped unless read since.
    pub(crate) fn merge(&mut self, reads: &Reads, listed: &HashSet<PackId>) {
        self.version = Self::VERSION;
        if reads.round > self.round {
            self.round = reads.round;
            self.round_started.clone_from(&reads.round_started);
        }
        for p in &reads.packs {
            let new = PackRead { round: reads.round, at: reads.at };
            let e = self.packs.entry(p.0.to_hex()).or_insert(new);
            *e = (*e).max(new);
        }
        self.packs.retain(|hex, r| r.at >= reads.at || PackId::from_hex(hex).is_some_and(|p| listed.contains(&p)));
        self.last_check = Some(reads.record.clone());
    }

    fn read_of(&self, p: &PackId) -> Option<PackRead> {
        self.packs.get(&p.0.to_hex()).copied()
    }

    /// Which packs a check reading `n` of `packs` reads, and the round the
    /// reads count for: the packs not yet read in the current round,
    /// never-read ones first, then the least recently read (ties by id, so
    /// every host picks alike), at most `n`. When every pack has been read
    /// in the current round, the next round begins and all are candidates.
    pub(crate) fn plan(&self, packs: &[PackId], n: usize) -> (u64, bool, Vec<PackId>) {
        let round = self.round.max(1);
        let pending: Vec<PackId> =
            packs.iter().copied().filter(|p| self.read_of(p).is_none_or(|r| r.round < round)).collect();
        let (round, started, mut candidates) = if pending.is_empty() && !packs.is_empty() {
            (round + 1, true, packs.to_vec())
        } else {
            (round, self.round == 0 && !packs.is_empty(), pending)
        };
        candidates.sort_by_key(|p| (self.read_of(p).map(|r| r.at), *p));
        candidates.truncate(n);
        (round, started, candidates)
    }
}

/// How many of `total` packs `percent`% is: rounded up, so any subset
/// above 0% reads at least one pack and 100/N % covers them in N runs.
pub(crate) fn share_of(total: usize, percent: f64) -> usize {
    // The epsilon keeps 10% of 30 at 3 whatever the float rounding.
    let n = ((total as f64) * percent / 100.0 - 1e-9).ceil().max(0.0) as usize;
    n.min(total)
}

/// How far checks have read the repository's packs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckCoverage {
    /// Packs in the store now.
    pub packs_total: u64,
    /// The rotation under way (1 = the first).
    pub round: u64,
    /// When it began (RFC 3339), if a check has read data yet.
    pub round_started: Option<String>,
    /// Packs read in this round.
    pub read_in_round: u64,
    /// Packs no check has read yet.
    pub never_read: u64,
    /// The least recent last read of a pack that has been read (RFC 3339).
    pub oldest_read: Option<String>,
    /// The last check, whatever it read.
    pub last_check: Option<CheckRecord>,
    /// Each current pack's last read (Unix seconds).
    #[serde(skip)]
    last_reads: Vec<Option<i64>>,
}

impl CheckCoverage {
    pub(crate) fn of(file: &CoverageFile, packs: impl IntoIterator<Item = PackId>) -> CheckCoverage {
        let round = file.round.max(1);
        let reads: Vec<Option<PackRead>> = packs.into_iter().map(|p| file.read_of(&p)).collect();
        let oldest = reads.iter().flatten().map(|r| r.at).min();
        CheckCoverage {
            packs_total: reads.len() as u64,
            round,
            round_started: file.round_started.clone(),
            read_in_round: reads.iter().flatten().filter(|r| r.round >= round).count() as u64,
            never_read: reads.iter().filter(|r| r.is_none()).count() as u64,
            oldest_read: oldest
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            last_check: file.last_check.clone(),
            last_reads: reads.iter().map(|r| r.map(|r| r.at)).collect(),
        }
    }

    /// Packs still to read before the round ends.
    pub fn to_go(&self) -> u64 {
        self.packs_total - self.read_in_round
    }

    /// The share (0 to 1) of the packs in the store now that a check has
    /// read at or after `since`; 1 when there are no packs.
    pub fn share_read_since(&self, since: SystemTime) -> f64 {
        if self.last_reads.is_empty() {
            return 1.0;
        }
        let t = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let n = self.last_reads.iter().filter(|r| r.is_some_and(|at| at >= t)).count();
        n as f64 / self.last_reads.len() as f64
    }
}

/// How far checks have read the repository's packs: `check/coverage`
/// against the packs in the store now.
pub async fn check_coverage(repo: &Repository) -> Result<CheckCoverage> {
    let file = load(repo).await?;
    let packs = repo
        .store()
        .list(crate::repofile::Kind::Pack.prefix())
        .await?
        .into_iter()
        .filter_map(|o| o.key.rsplit('/').next().and_then(Id::from_hex).map(PackId));
    Ok(CheckCoverage::of(&file, packs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::{InitOptions, Secret};

    fn pack(i: u8) -> PackId {
        PackId(Id([i; 32]))
    }

    fn record(n: u64) -> CheckRecord {
        CheckRecord {
            time: "2026-12-03T00:00:00+00:00".into(),
            host: "h".into(),
            problems: 0,
            packs_read: n,
            packs_total: 10,
            data_read: true,
            subset_percent: Some(25.0),
        }
    }

    /// One check at `percent` against the file in the store: plan, then
    /// record as if every planned pack read clean.
    async fn run(repo: &Repository, packs: &[PackId], percent: f64, at: i64) -> (u64, Vec<PackId>) {
        let file = load(repo).await.unwrap();
        let (round, started, chosen) = file.plan(packs, share_of(packs.len(), percent));
        let reads = Reads {
            round,
            round_started: started.then(|| format!("t{at}")),
            packs: chosen.clone(),
            at,
            record: record(chosen.len() as u64),
        };
        super::record(repo, &reads, &packs.iter().copied().collect()).await.unwrap();
        (round, chosen)
    }

    async fn memory_repo() -> Repository {
        let secret = Secret::KeyFile(zeroize::Zeroizing::new([7; 32]));
        Repository::init(Store::memory(), &secret, InitOptions::default()).await.unwrap()
    }

    #[test]
    fn subset_sizes_round_up() {
        assert_eq!(share_of(10, 25.0), 3);
        assert_eq!(share_of(30, 10.0), 3);
        assert_eq!(share_of(9, 100.0 / 3.0), 3);
        assert_eq!(share_of(5, 0.0), 0);
        assert_eq!(share_of(5, 0.1), 1);
        assert_eq!(share_of(5, 100.0), 5);
        assert_eq!(share_of(0, 50.0), 0);
    }

    #[tokio::test]
    async fn four_quarter_runs_read_every_pack_once_then_a_new_round_begins() {
        let repo = memory_repo().await;
        let packs: Vec<PackId> = (1..=10).map(pack).collect();
        let mut seen = Vec::new();
        for (i, at) in [100, 200, 300, 400].into_iter().enumerate() {
            let (round, chosen) = run(&repo, &packs, 25.0, at).await;
            assert_eq!(round, 1, "run {i}");
            seen.extend(chosen);
        }
        // 3 + 3 + 3 + 1: the fourth run reads what the round has left.
        assert_eq!(seen.len(), 10);
        seen.sort();
        assert_eq!(seen, packs, "every pack exactly once");
        let file = load(&repo).await.unwrap();
        let cov = CheckCoverage::of(&file, packs.clone());
        assert_eq!((cov.round, cov.read_in_round, cov.to_go(), cov.never_read), (1, 10, 0, 0));
        assert_eq!(cov.share_read_since(UNIX_EPOCH + std::time::Duration::from_secs(300)), 0.4);
        assert_eq!(cov.last_check, Some(record(1)));
        // Round 2 starts with the packs read longest ago.
        let (round, chosen) = run(&repo, &packs, 25.0, 500).await;
        assert_eq!(round, 2);
        assert_eq!(chosen, seen_first(&packs, &file, 3));
        assert_eq!(load(&repo).await.unwrap().round_started.as_deref(), Some("t500"));
    }

    fn seen_first(packs: &[PackId], file: &CoverageFile, n: usize) -> Vec<PackId> {
        let mut v = packs.to_vec();
        v.sort_by_key(|p| (file.read_of(p).unwrap().at, *p));
        v.truncate(n);
        v
    }

    #[tokio::test]
    async fn two_hosts_checks_merge_and_deleted_packs_drop_out() {
        let repo = memory_repo().await;
        let packs: Vec<PackId> = (1..=4).map(pack).collect();
        let listed: HashSet<PackId> = packs.iter().copied().collect();
        // Two hosts planned from the same state; the second records after
        // the first and adds to its reads instead of replacing them.
        let a = Reads { round: 1, round_started: None, packs: vec![pack(1)], at: 10, record: record(1) };
        let b = Reads { round: 1, round_started: None, packs: vec![pack(2), pack(3)], at: 11, record: record(2) };
        super::record(&repo, &a, &listed).await.unwrap();
        super::record(&repo, &b, &listed).await.unwrap();
        let merged = load(&repo).await.unwrap();
        assert_eq!(merged.packs.len(), 3, "{merged:?}");
        assert_eq!(merged.last_check, Some(record(2)));
        // Pack 1 is pruned: the next check's listing lacks it.
        let after_prune: HashSet<PackId> = packs[1..].iter().copied().collect();
        let c = Reads { round: 1, round_started: None, packs: vec![pack(4)], at: 20, record: record(1) };
        let f = super::record(&repo, &c, &after_prune).await.unwrap();
        assert_eq!(f.packs.keys().cloned().collect::<Vec<_>>(), [2, 3, 4].map(|i| pack(i).0.to_hex()));
        let cov = CheckCoverage::of(&f, after_prune.iter().copied());
        assert_eq!((cov.packs_total, cov.read_in_round, cov.to_go()), (3, 3, 0));
    }

    #[tokio::test]
    async fn a_damaged_coverage_object_is_an_error_to_read_and_replaced_by_the_next_check() {
        let repo = memory_repo().await;
        let key = ObjectKey::CheckCoverage.to_string();
        repo.store().put(&key, bytes::Bytes::from_static(b"\x01garbage that does not open")).await.unwrap();
        assert!(matches!(load(&repo).await, Err(Error::Corrupt { .. })));
        let r = Reads { round: 1, round_started: None, packs: vec![pack(1)], at: 1, record: record(1) };
        super::record(&repo, &r, &[pack(1)].into_iter().collect()).await.unwrap();
        assert_eq!(load(&repo).await.unwrap().packs.len(), 1);
    }

    /// Forwards to the store, but just before the first write of
    /// `check/coverage` puts `sneak` there: another host's check recording
    /// between this one's read and its write.
    #[derive(Debug)]
    struct Racer {
        inner: std::sync::Arc<dyn crate::store::Backend>,
        sneak: std::sync::Mutex<Option<bytes::Bytes>>,
    }

    #[async_trait::async_trait]
    impl crate::store::Backend for Racer {
        async fn put_opts(&self, key: &str, bytes: bytes::Bytes, mode: PutMode) -> Result<Version> {
            let sneak = self.sneak.lock().unwrap().take();
            if let Some(theirs) = sneak.filter(|_| key == "check/coverage") {
                self.inner.put_opts(key, theirs, PutMode::Overwrite).await?;
            }
            self.inner.put_opts(key, bytes, mode).await
        }
        async fn get_opts(&self, key: &str, range: Option<std::ops::Range<u64>>) -> Result<bytes::Bytes> {
            self.inner.get_opts(key, range).await
        }
        async fn head(&self, key: &str) -> Result<crate::store::ObjectMeta> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectInfo>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn a_check_racing_another_merges_instead_of_overwriting() {
        let secret = Secret::KeyFile(zeroize::Zeroizing::new([7; 32]));
        let store = Store::memory();
        let first = Repository::init(store.clone(), &secret, InitOptions::default()).await.unwrap();
        let listed: HashSet<PackId> = (1..=4).map(pack).collect();
        let mut theirs = CoverageFile::default();
        let t = Reads { round: 1, round_started: None, packs: vec![pack(3), pack(4)], at: 5, record: record(2) };
        theirs.merge(&t, &listed);
        let key = ObjectKey::CheckCoverage.to_string();
        let sealed = envelope::seal(first.keys(), Binding::Key(COVERAGE_AAD, &key), &theirs.encode());
        // The racing store is wrapped after `init`, which writes no coverage.
        let sneak = std::sync::Mutex::new(Some(bytes::Bytes::from(sealed)));
        let repo = Repository::open(store.wrapped(move |inner| Racer { inner, sneak }), &secret).await.unwrap();
        let mine = Reads { round: 1, round_started: None, packs: vec![pack(1)], at: 6, record: record(1) };
        let f = super::record(&repo, &mine, &listed).await.unwrap();
        assert_eq!(f.packs.keys().cloned().collect::<Vec<_>>(), [1, 3, 4].map(|i| pack(i).0.to_hex()));
        assert_eq!(load(&repo).await.unwrap(), f, "what was written is what was merged");
    }
}
