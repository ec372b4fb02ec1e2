//! Restore drills: restore a source into scratch space, start what it
//! holds, prove the result usable, and time every phase.
//!
//! A backup nobody has restored is a hope, not a recovery plan. A drill
//! does what an operator would do on the bad day — the same restore code,
//! the same checks PostgreSQL and Redis make — and measures the recovery
//! time (RTO: restore plus start or replay) and the recovered point's age
//! (RPO) so `cairn status` can hold them against the objectives. Each drill
//! leaves a sealed [`DrillRecord`] in the repository, so any host sees
//! when recovery was last proven and how long it took.
//!
//! # Layout
//! - this file: the record, its phases, storing and listing records.
//! - `guard.rs`: the scratch directory and the temporary servers, undone
//!   on every way out (failure, early return, the future being dropped).
//! - `pg.rs`: a base backup and its WAL restored into scratch, a temporary
//!   PostgreSQL started on it until recovery ends, `pg_amcheck`, the
//!   operator's SQL assertions.
//! - `redis.rs`: the RDB restored, a temporary `redis-server` loading it,
//!   per-database key counts compared with the snapshot's.
//! - `files.rs`: tar, dir and stream snapshots restored (every entry's
//!   BLAKE3 checked) and the operator's `verify_command` run on them.

mod files;
mod guard;
mod pg;
mod redis;

use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::repo::Repository;
use crate::repofile::envelope::{self, Binding};
use crate::repofile::{Kind, ObjectKey};
use crate::store::{Backend as _, BackendExt as _};
use crate::{Error, Result};

pub use files::{files, FilesDrill};
pub use guard::{RunAs, Scratch, Server};
pub use pg::{pg, PgDrill, PgTools};
pub use redis::{redis, RedisDrill};

const DRILL_AAD: &[u8] = b"cairn drill v1\0";

/// One timed step of a drill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Phase {
    /// `restore`, `wal`, `start`, `amcheck`, `sql`, `verify`, …
    pub name: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Whether it counts towards the recovery time (restore, WAL, start
    /// and replay do; checks that only prove the result do not).
    pub in_rto: bool,
}

/// The phases of one drill, timed as they run; kept when a later one fails.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    /// The phases finished (or failed) so far.
    pub phases: Vec<Phase>,
}

impl Timeline {
    /// Runs `f` as phase `name`, timing it whether it succeeds or not.
    pub async fn phase<T>(
        &mut self,
        name: &str,
        in_rto: bool,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let t0 = Instant::now();
        let r = f.await;
        self.phases.push(Phase { name: name.into(), seconds: t0.elapsed().as_secs_f64(), in_rto });
        r
    }

    /// The measured recovery time: the phases that count towards it.
    pub fn rto_s(&self) -> f64 {
        self.phases.iter().filter(|p| p.in_rto).map(|p| p.seconds).sum()
    }

    /// Every phase.
    pub fn total_s(&self) -> f64 {
        self.phases.iter().map(|p| p.seconds).sum()
    }
}

/// What a drill proved, stored sealed at `drills/<ms>-<nonce>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillRecord {
    /// Format version (1).
    pub version: u32,
    /// The configured source's name.
    pub source: String,
    /// Its kind (`pg-base`, `redis`, `tar`, `dir`, `stream`).
    pub kind: String,
    /// When the drill began (RFC 3339).
    pub time: String,
    /// The host that ran it.
    pub host: String,
    /// The snapshot restored (hex), when one was chosen.
    pub snapshot: Option<String>,
    /// The target asked for (`latest`, or a time).
    pub target: String,
    /// Whether the restore was proven usable and every objective held.
    pub ok: bool,
    /// Why not, when not.
    pub failure: Option<String>,
    /// The timed phases.
    pub phases: Vec<Phase>,
    /// Measured recovery time, seconds.
    pub rto_s: f64,
    /// Every phase, seconds.
    pub total_s: f64,
    /// The recovered point: the last commit replayed (PostgreSQL) or the
    /// snapshot's time (RFC 3339).
    pub recovered_to: Option<String>,
    /// The recovered point's age when the drill began, seconds.
    pub rpo_s: Option<f64>,
    /// The source's objectives at the time, seconds.
    pub rto_objective_s: Option<f64>,
    /// The source's RPO objective, seconds.
    pub rpo_objective_s: Option<f64>,
    /// What the checks saw (key counts, checked relations, …).
    pub details: Vec<String>,
}

impl DrillRecord {
    /// The key it is stored at.
    fn key(&self) -> Result<ObjectKey> {
        let t = DateTime::parse_from_rfc3339(&self.time)
            .map_err(|e| Error::InvalidInput(format!("drill time {:?}: {e}", self.time)))?;
        Ok(ObjectKey::Drill { ms: t.timestamp_millis().max(0) as u64, nonce: rand::random() })
    }
}

/// Stores a drill record; returns its key.
pub async fn store(repo: &Repository, record: &DrillRecord) -> Result<String> {
    let key = record.key()?.to_string();
    let json = serde_json::to_vec(record).expect("a drill record serializes");
    let sealed = envelope::seal(repo.keys(), Binding::Key(DRILL_AAD, &key), &json);
    repo.store().put_create(&key, Bytes::from(sealed)).await?;
    Ok(key)
}

/// Every drill record, oldest first. A record that does not open
/// (tampered, another repository's) is an error, naming it.
pub async fn records(repo: &Repository) -> Result<Vec<DrillRecord>> {
    let mut keys: Vec<(ObjectKey, String)> = Vec::new();
    for o in repo.store().list(Kind::Drill.prefix()).await? {
        match ObjectKey::parse(&o.key) {
            Some(k @ ObjectKey::Drill { .. }) => keys.push((k, o.key)),
            _ => tracing::warn!(object = %o.key, "ignoring a malformed drill record name"),
        }
    }
    keys.sort_by_key(|(k, _)| match k {
        ObjectKey::Drill { ms, nonce } => (*ms, *nonce),
        _ => (0, 0),
    });
    let mut out = Vec::with_capacity(keys.len());
    for (_, key) in keys {
        let bytes = repo.store().get(&key).await?;
        let json = envelope::open(repo.keys(), &key, Binding::Key(DRILL_AAD, &key), &bytes)?;
        let r: DrillRecord = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(&key, None, format!("not a drill record: {e}")))?;
        if r.version != 1 {
            return Err(Error::corrupt(&key, None, format!("drill record version {} is not known", r.version)));
        }
        out.push(r);
    }
    Ok(out)
}

/// What every kind of drill measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The snapshot restored.
    pub snapshot: Option<String>,
    /// The recovered point.
    pub recovered_to: Option<DateTime<Utc>>,
    /// What the checks saw.
    pub details: Vec<String>,
}

impl Measured {
    /// Records `snapshot` as what is restored, its time as the recovered
    /// point (sources whose snapshot is the whole recovery: Redis, files).
    fn restoring(&mut self, id: &crate::ids::SnapshotId, snapshot: &crate::snapshot::Snapshot) {
        self.snapshot = Some(id.to_hex());
        self.recovered_to = DateTime::parse_from_rfc3339(&snapshot.time).ok().map(|t| t.with_timezone(&Utc));
    }
}

pub(crate) fn failed(phase: &str, reason: impl Into<String>) -> Error {
    Error::DrillFailed { phase: phase.into(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: &str, time: &str, rto_s: f64) -> DrillRecord {
        DrillRecord {
            version: 1,
            source: source.into(),
            kind: "dir".into(),
            time: time.into(),
            host: "h".into(),
            snapshot: None,
            target: "latest".into(),
            ok: true,
            failure: None,
            phases: vec![Phase { name: "restore".into(), seconds: rto_s, in_rto: true }],
            rto_s,
            total_s: rto_s,
            recovered_to: None,
            rpo_s: None,
            rto_objective_s: None,
            rpo_objective_s: None,
            details: vec![],
        }
    }

    #[tokio::test]
    async fn records_come_back_oldest_first_and_a_moved_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = crate::keys::Secret::create_key_file(&dir.path().join("key")).unwrap();
        let repo = Repository::init(crate::store::Store::memory(), &secret, Default::default()).await.unwrap();
        let newer = record("b", "2026-12-03T02:00:00+00:00", 2.0);
        let older = record("a", "2026-12-01T02:00:00+00:00", 1.0);
        let k_newer = store(&repo, &newer).await.unwrap();
        store(&repo, &older).await.unwrap();
        let ms = DateTime::parse_from_rfc3339(&newer.time).unwrap().timestamp_millis() as u64;
        assert!(matches!(ObjectKey::parse(&k_newer), Some(ObjectKey::Drill { ms: m, .. }) if m == ms), "{k_newer}");
        assert_eq!(records(&repo).await.unwrap(), vec![older.clone(), newer.clone()]);
        // A record copied under another name does not open: it is bound to
        // its key.
        let bytes = repo.store().get(&k_newer).await.unwrap();
        let moved = ObjectKey::Drill { ms: 1, nonce: 1 }.to_string();
        repo.store().put_create(&moved, bytes).await.unwrap();
        let e = records(&repo).await.unwrap_err().to_string();
        assert!(e.contains(&moved), "{e}");
    }

    #[test]
    fn only_restore_and_start_count_towards_the_rto() {
        let tl = Timeline {
            phases: vec![
                Phase { name: "restore".into(), seconds: 2.0, in_rto: true },
                Phase { name: "start".into(), seconds: 1.5, in_rto: true },
                Phase { name: "amcheck".into(), seconds: 9.0, in_rto: false },
            ],
        };
        assert_eq!(tl.rto_s(), 3.5);
        assert_eq!(tl.total_s(), 12.5);
    }
}
