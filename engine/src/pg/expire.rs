//! PostgreSQL-aware retention (`cairn pg expire`): base backups kept by
//! count or age, and a point-in-time window kept independently of them.
//!
//! What is kept, for a stanza:
//! - base backups: the newest always; then the newest `retain_full`, or
//!   those that ended within `retain_full_for`; and the *window anchor*,
//!   the newest backup that ended before now − `pitr_window` (so every
//!   time inside the window has a backup before it); pinned ones;
//! - WAL: everything from the anchor's start LSN on (every timeline), and
//!   for every kept backup its own start→stop range, so it stays
//!   consistent; history and `.backup` files always.
//!
//! Removing goes backups first, then WAL manifests (their packs are left
//! to `prune`): a crash in between leaves extra WAL, never a kept backup
//! without its WAL. Before anything is removed, `wal/<stanza>/expiry`
//! records the earliest restorable time, so a restore to a time before it
//! is refused naming the retention.

use std::collections::HashSet;

use cairn_formats::pg::{Lsn, SegmentSize, WalFileName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::SnapshotId;
use crate::repo::Repository;
use crate::repofile::{ObjectKey, RepoFile};
use crate::snapshot::Snapshot;
use crate::sources::pg::base::{PgFacts, KIND};
use crate::store::Backend as _;
use crate::wal::{catseg, get_named, seal_named, WalFileKind, WalManifest};
use crate::{Error, Result};

/// How to expire.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExpireOptions {
    /// Keep the newest N base backups.
    pub retain_full: Option<usize>,
    /// Keep base backups that ended within this long of now.
    pub retain_full_for: Option<chrono::Duration>,
    /// Every time within this long of now stays restorable.
    pub pitr_window: chrono::Duration,
    /// Only report.
    pub dry_run: bool,
    /// "Now" (tests); the wall clock when `None`.
    pub now: Option<DateTime<Utc>>,
    /// Where the WAL catalogue's cache is (`wal::archived_with`); none
    /// reads it from the repository alone.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl ExpireOptions {
    /// A window; the other rules unset.
    pub fn window(pitr_window: chrono::Duration) -> ExpireOptions {
        ExpireOptions { pitr_window, ..Default::default() }
    }
}

/// One base backup and the decision.
#[derive(Debug, Clone, Serialize)]
pub struct BackupRow {
    /// Snapshot id.
    pub snapshot: String,
    /// Label, timeline, start and stop.
    pub label: String,
    /// Timeline.
    pub timeline: u32,
    /// Start LSN.
    pub start_lsn: String,
    /// Stop LSN.
    pub stop_lsn: String,
    /// When it became consistent.
    pub stop_time: String,
    /// Why it is kept (empty: removed).
    pub reasons: Vec<String>,
}

/// WAL removed from one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct WalRemoved {
    /// Timeline.
    pub timeline: u32,
    /// First and last file removed, and how many.
    pub first: String,
    /// Last.
    pub last: String,
    /// Count.
    pub files: u64,
}

/// What expiry decided (and, unless a dry run, did).
#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    /// The stanza.
    pub stanza: String,
    /// Nothing was removed.
    pub dry_run: bool,
    /// Base backups kept, newest first.
    pub kept: Vec<BackupRow>,
    /// Base backups removed.
    pub removed: Vec<BackupRow>,
    /// WAL below this LSN is removed unless a kept backup needs it.
    pub wal_kept_from: String,
    /// WAL removed, per timeline.
    pub wal_removed: Vec<WalRemoved>,
    /// Every WAL file removed.
    pub wal_removed_names: Vec<String>,
    /// Earliest time a restore could reach before and after.
    pub restorable_from_before: Option<String>,
    /// After.
    pub restorable_from_after: Option<String>,
}

/// `wal/<stanza>/expiry`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpiryRecord {
    /// Format version (1).
    pub version: u32,
    /// When the expiry ran.
    pub expired_at: String,
    /// The earliest restorable time it left (a backup's consistent point).
    pub restorable_from: String,
    /// WAL below this LSN was removed unless a kept backup needed it.
    pub wal_kept_from: String,
    /// The window.
    pub pitr_window_s: i64,
}

impl RepoFile for ExpiryRecord {
    const VERSION: u32 = 1;
    type Id = str;
    fn key(stanza: &str) -> ObjectKey {
        ObjectKey::Expiry(stanza.to_string())
    }
}

/// The retention record of a stanza, if expiry ever ran.
pub async fn expiry_record(repo: &Repository, stanza: &str) -> Result<Option<ExpiryRecord>> {
    get_named::<ExpiryRecord>(repo, &ObjectKey::Expiry(stanza.into()).to_string()).await
}

fn stop_time(f: &PgFacts) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&f.stop_time).map(|t| t.with_timezone(&Utc)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Plans, and unless `dry_run` carries out, the expiry of `stanza`.
///
/// The steps, as the module documentation states the rules: the complete
/// base backups and the WAL catalogue are read, each backup is kept or not
/// (`decide_backups`), the WAL no kept backup and no time in the window
/// needs is chosen (`wal_to_remove`), and unless a dry run the expiry
/// record is written before anything is removed (`carry_out`).
pub async fn expire(repo: &Repository, stanza: &str, opts: &ExpireOptions) -> Result<ExpireReport> {
    let now = opts.now.unwrap_or_else(Utc::now);
    let pins = crate::gc::pins(repo).await?;
    let mut backups = complete_backups(repo, stanza).await?;
    let (size, archived) = crate::wal::archived_with(repo, stanza, opts.cache_dir.as_deref()).await?;
    // Retention follows the newest timeline's history: backups and WAL of
    // timelines off it (abandoned branches) are kept whole.
    let path = timeline_path(&archived);
    let on_path = |f: &PgFacts| {
        path.iter().enumerate().any(|(i, (t, _))| {
            *t == f.timeline && path.get(i + 1).is_none_or(|(_, next_begin)| f.stop().0 <= *next_begin)
        })
    };
    backups.sort_by_key(|(_, f)| std::cmp::Reverse(stop_time(f)));
    let on: Vec<usize> = (0..backups.len()).filter(|i| on_path(&backups[*i].1)).collect();
    let Some(&oldest_on) = on.last() else {
        return Err(Error::NotFound {
            what: format!("a complete base backup of stanza {stanza:?} on the newest timeline's history"),
        });
    };
    // Every time after the anchor's end is restorable from it: the newest
    // backup that was consistent (STOP TIME is whole seconds, truncated)
    // before the window begins.
    let edge = now - opts.pitr_window;
    let consistent = |f: &PgFacts| stop_time(f) + chrono::Duration::seconds(1);
    let anchor = on.iter().copied().find(|i| consistent(&backups[*i].1) <= edge).unwrap_or(oldest_on);
    let rows = decide_backups(&backups, &on, anchor, &pins, opts, now);
    let kept_facts: Vec<&PgFacts> =
        backups.iter().zip(&rows).filter(|(_, r)| !r.reasons.is_empty()).map(|((_, f), _)| f).collect();
    let cutoff = backups[anchor].1.start().0;
    let removed_names = wal_to_remove(&archived, size, &path, cutoff, &kept_facts);
    let report = ExpireReport {
        stanza: stanza.to_string(),
        dry_run: opts.dry_run,
        restorable_from_before: Some(consistent(&backups[oldest_on].1).to_rfc3339()),
        restorable_from_after: Some(consistent(&backups[anchor].1).to_rfc3339()),
        kept: rows.iter().filter(|r| !r.reasons.is_empty()).cloned().collect(),
        removed: rows.iter().filter(|r| r.reasons.is_empty()).cloned().collect(),
        wal_kept_from: Lsn(cutoff).to_string(),
        wal_removed: per_timeline(&removed_names),
        wal_removed_names: removed_names.iter().map(|(_, n)| n.clone()).collect(),
    };
    if opts.dry_run {
        return Ok(report);
    }
    carry_out(repo, stanza, now, opts, &report, &backups, &removed_names).await?;
    catseg::recompact(repo, stanza, &removed_names, size).await;
    // Groups archived before catalogue segments existed get theirs.
    let removed: HashSet<&str> = removed_names.iter().map(|(_, n)| n.as_str()).collect();
    let left: Vec<(WalFileName, WalManifest)> =
        archived.into_iter().filter(|(_, m)| !removed.contains(m.name.as_str())).collect();
    catseg::backfill(repo, stanza, &left, size).await;
    Ok(report)
}

/// The base backups of `stanza` whose WAL was complete when they were
/// taken, in snapshot list order.
async fn complete_backups(repo: &Repository, stanza: &str) -> Result<Vec<(SnapshotId, PgFacts)>> {
    let mut backups: Vec<(SnapshotId, PgFacts)> = Vec::new();
    for (id, s) in Snapshot::list(repo).await? {
        if s.source.kind == KIND {
            let f = PgFacts::of(&s)?;
            if f.stanza == stanza && f.wal_complete {
                backups.push((id, f));
            }
        }
    }
    Ok(backups)
}

/// One row per backup (newest first, as `backups`), with every reason it
/// is kept; no reason means it is removed. `on` indexes the backups on the
/// newest timeline's history, newest first; `anchor` is the window's.
fn decide_backups(
    backups: &[(SnapshotId, PgFacts)],
    on: &[usize],
    anchor: usize,
    pins: &HashSet<SnapshotId>,
    opts: &ExpireOptions,
    now: DateTime<Utc>,
) -> Vec<BackupRow> {
    let mut rows: Vec<BackupRow> = Vec::new();
    for (i, (id, f)) in backups.iter().enumerate() {
        let mut reasons = Vec::new();
        let rank = on.iter().position(|j| *j == i);
        if rank == Some(0) {
            reasons.push("newest".to_string());
        }
        if rank.is_none() {
            reasons.push("on another timeline's history".to_string());
        }
        if opts.retain_full.is_some_and(|n| rank.is_some_and(|r| r < n)) {
            reasons.push(format!("one of the newest {}", opts.retain_full.unwrap_or_default()));
        }
        if opts.retain_full_for.is_some_and(|d| stop_time(f) > now - d) {
            reasons.push("within the backup retention".to_string());
        }
        if i == anchor {
            reasons.push("start of the PITR window".to_string());
        }
        if pins.contains(id) {
            reasons.push("pinned".to_string());
        }
        rows.push(BackupRow {
            snapshot: id.to_hex(),
            label: f.label.clone(),
            timeline: f.timeline,
            start_lsn: f.start_lsn.clone(),
            stop_lsn: f.stop_lsn.clone(),
            stop_time: f.stop_time.clone(),
            reasons,
        });
    }
    rows
}

/// The WAL segments (and partial segments) nothing needs, as `(timeline,
/// name)` in catalogue order: on the newest timeline's history, wholly
/// below `cutoff`, and outside every kept backup's start→stop range.
fn wal_to_remove(
    archived: &[(WalFileName, WalManifest)],
    size: SegmentSize,
    path: &[(u32, u64)],
    cutoff: u64,
    kept_facts: &[&PgFacts],
) -> Vec<(u32, String)> {
    let path_tlis: HashSet<u32> = path.iter().map(|(t, _)| *t).collect();
    let seg = u64::from(size.bytes());
    let mut removed_names = Vec::new();
    for (name, m) in archived {
        let (tli, lo, hi) = match (name, m.kind) {
            (WalFileName::Segment(s), WalFileKind::Segment | WalFileKind::Partial) => {
                (s.timeline, s.segno.saturating_mul(seg), s.segno.saturating_add(1).saturating_mul(seg))
            }
            _ => continue, // history and .backup files stay
        };
        let needed = !path_tlis.contains(&tli)
            || hi > cutoff
            || kept_facts.iter().any(|f| f.timeline == tli && lo < f.stop().0.max(f.start().0 + 1) && hi > f.start().0);
        if !needed {
            removed_names.push((tli, m.name.clone()));
        }
    }
    removed_names
}

/// Consecutive removals on one timeline as one [`WalRemoved`].
fn per_timeline(removed_names: &[(u32, String)]) -> Vec<WalRemoved> {
    let mut wal_removed: Vec<WalRemoved> = Vec::new();
    for (tli, name) in removed_names {
        match wal_removed.last_mut() {
            Some(w) if w.timeline == *tli => {
                w.last = name.clone();
                w.files += 1;
            }
            _ => wal_removed.push(WalRemoved { timeline: *tli, first: name.clone(), last: name.clone(), files: 1 }),
        }
    }
    wal_removed
}

/// Writes the expiry record, then removes the backups `report` removes,
/// then the WAL manifests (their packs are left to `prune`).
async fn carry_out(
    repo: &Repository,
    stanza: &str,
    now: DateTime<Utc>,
    opts: &ExpireOptions,
    report: &ExpireReport,
    backups: &[(SnapshotId, PgFacts)],
    removed_names: &[(u32, String)],
) -> Result<()> {
    let key = ObjectKey::Expiry(stanza.to_string()).to_string();
    let record = ExpiryRecord {
        version: 1,
        expired_at: now.to_rfc3339(),
        restorable_from: report.restorable_from_after.clone().unwrap_or_default(),
        wal_kept_from: report.wal_kept_from.clone(),
        pitr_window_s: opts.pitr_window.num_seconds(),
    };
    repo.store().put_opts(&key, seal_named(repo, &key, &record), crate::store::PutMode::Overwrite).await?;
    let removed_ids: HashSet<&str> = report.removed.iter().map(|r| r.snapshot.as_str()).collect();
    for (id, _) in backups.iter().filter(|(id, _)| removed_ids.contains(id.to_hex().as_str())) {
        repo.store().delete(&ObjectKey::Snapshot(*id).to_string()).await?;
    }
    let size = crate::wal::load_stanza(repo, stanza)
        .await?
        .and_then(|r| SegmentSize::new(u64::from(r.segment_size)).ok())
        .ok_or_else(|| Error::NotFound { what: format!("stanza {stanza:?}") })?;
    catseg::delete_manifests(repo, stanza, removed_names, size).await
}

/// `(timeline, begin LSN)` from the oldest ancestor to the newest
/// timeline archived, as its history file lists them.
fn timeline_path(archived: &[(WalFileName, WalManifest)]) -> Vec<(u32, u64)> {
    let newest = archived.iter().map(|(n, _)| n.timeline()).max().unwrap_or(1);
    let lines: Vec<(u32, u64)> = archived
        .iter()
        .find_map(|(n, m)| match n {
            WalFileName::History { timeline } if *timeline == newest => {
                Some(m.history.iter().flatten().map(|l| (l.timeline, l.switchpoint)).collect())
            }
            _ => None,
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut begin = 0;
    for (t, switchpoint) in lines {
        out.push((t, begin));
        begin = switchpoint;
    }
    out.push((newest, begin));
    out
}

/// Parses a duration like `7d`, `36h`, `90s`, `2h30min`, `2w` (units w,
/// d, h, min, s).
pub fn parse_duration(text: &str) -> Result<chrono::Duration> {
    let bad = |why: &str| Error::InvalidInput(format!("duration {text:?}: {why} (use e.g. 7d, 36h, 90s, 2h30min)"));
    let mut total = chrono::Duration::zero();
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: i64 = rest[..digits].parse().map_err(|_| bad("a unit needs a number before it"))?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        total += match &rest[..unit] {
            "w" => chrono::Duration::weeks(n),
            "d" => chrono::Duration::days(n),
            "h" => chrono::Duration::hours(n),
            "min" | "m" => chrono::Duration::minutes(n),
            "s" => chrono::Duration::seconds(n),
            "" => return Err(bad("a number needs a unit after it")),
            u => return Err(bad(&format!("unknown unit {u:?}"))),
        };
        rest = &rest[unit..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("7d").unwrap(), chrono::Duration::days(7));
        assert_eq!(parse_duration("2h30min").unwrap(), chrono::Duration::minutes(150));
        assert_eq!(parse_duration("90s").unwrap(), chrono::Duration::seconds(90));
        for bad in ["", "7", "d", "7x", "1y"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
