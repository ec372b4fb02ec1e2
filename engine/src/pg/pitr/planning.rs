//! Deciding a restore from the catalogue alone: the base backup, the
//! timeline path, and every WAL segment from the backup's start to the
//! target. Nothing is written and no pack is read, so a target the archive
//! cannot reach is refused, with the reason, before a restore begins.

use cairn_formats::pg::Lsn;

use super::archive::Archive;
use super::target::{recovery_settings, time_text};
use super::{Action, Plan, TablespacePlan, Target};
use crate::ids::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::sources::pg::base::{PgFacts, KIND};
use crate::{Error, Result};

/// The tablespaces a pulled backup recorded (a `pg_basebackup` tar has
/// them in `tablespace_map` only, which PostgreSQL reads itself).
fn tablespaces_of(snap: &Snapshot) -> Vec<TablespacePlan> {
    snap.metadata
        .get("tablespaces")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    let location = t["location"].as_str()?.to_string();
                    Some(TablespacePlan {
                        oid: t["oid"].as_str()?.to_string(),
                        restore_to: location.clone().into(),
                        server_location: location,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn refused(detail: String) -> Error {
    Error::NotFound { what: format!("a way to the target: {detail}") }
}

/// When the backup became consistent, at the latest. PostgreSQL writes
/// `STOP TIME` in whole seconds, truncated, so a second is added.
fn stop_time_us(b: &PgFacts) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&b.stop_time).map(|t| t.timestamp_micros() + 1_000_000).unwrap_or(i64::MAX)
}

/// Decides a restore without writing anything to the repository. The
/// WAL catalogue is read through the cache under `cache_dir`, if given
/// (`wal::archived_with`).
pub async fn plan(
    repo: &Repository,
    stanza: &str,
    target: Target,
    timeline: Option<u32>,
    action: Action,
    restore_command: &str,
    cache_dir: Option<&std::path::Path>,
) -> Result<(Plan, Snapshot)> {
    let archive = Archive::load(repo, stanza, cache_dir).await?;
    tracing::debug!(segments = archive.segments.len(), "WAL catalogue loaded");
    let tli = timeline.unwrap_or_else(|| archive.highest_timeline());
    let path = archive.path(tli);
    let seg_bytes = u64::from(archive.size.bytes());
    let backups = backups_on_path(repo, stanza, &path, tli).await?;
    let (id, snap, facts) = match choose_backup(&backups, &target) {
        Ok(c) => c,
        Err(Error::NotFound { what }) => {
            // Say so when retention is why the archive starts where it does.
            let why = match crate::pg::expire::expiry_record(repo, stanza).await? {
                Some(r) => format!(
                    "{what}; retention (`cairn pg expire` at {}, PITR window {} s) keeps restores from {} on",
                    r.expired_at, r.pitr_window_s, r.restorable_from
                ),
                None => what,
            };
            return Err(Error::NotFound { what: why });
        }
        Err(e) => return Err(e),
    };
    let start_seg = facts.start().0 / seg_bytes;
    let stop_seg = facts.stop().0.saturating_sub(1) / seg_bytes;
    let (walked, end) = walk(&archive, &path, tli, &target, start_seg, stop_seg)?;
    let last = end.unwrap_or_else(|| walked.last().map_or(start_seg, |(_, s)| *s));
    if last < stop_seg {
        return Err(refused(format!(
            "the archive ends before the base backup's WAL does ({} is needed)",
            archive.name(facts.timeline, stop_seg)
        )));
    }
    let last_tli = walked.last().map_or(tli, |(t, _)| *t);
    let plan = Plan {
        stanza: stanza.into(),
        snapshot: id.to_hex(),
        backup: facts.clone(),
        settings: recovery_settings(&target, tli, action, restore_command),
        target,
        timeline: tli,
        path: path.iter().map(|(t, b)| (*t, Lsn(*b).to_string())).collect(),
        first_wal: archive.name(walked.first().map_or(tli, |(t, _)| *t), start_seg),
        last_wal: archive.name(last_tli, last),
        wal_segments: walked.len() as u64,
        wal_files: walked
            .iter()
            .map(|(t, s)| archive.name(*t, *s))
            .chain(path.iter().filter(|(t, _)| *t > 1).map(|(t, _)| format!("{t:08X}.history")))
            .collect(),
        tablespaces: tablespaces_of(&snap),
    };
    Ok((plan, snap))
}

/// The base backups of `stanza` on the timeline path to `tli`, newest
/// first; refused if there is none.
async fn backups_on_path(
    repo: &Repository,
    stanza: &str,
    path: &[(u32, u64)],
    tli: u32,
) -> Result<Vec<(SnapshotId, Snapshot, PgFacts)>> {
    let mut backups: Vec<(SnapshotId, Snapshot, PgFacts)> = Vec::new();
    for (id, s) in Snapshot::list(repo).await? {
        if s.source.kind != KIND {
            continue;
        }
        let f = PgFacts::of(&s)?;
        if f.stanza != stanza {
            continue;
        }
        // On the path: its timeline is there, and it ended before that
        // timeline was left.
        let on_path = path.iter().enumerate().any(|(i, (t, _))| {
            *t == f.timeline && path.get(i + 1).is_none_or(|(_, next_begin)| f.stop().0 <= *next_begin)
        });
        if on_path {
            backups.push((id, s, f));
        }
    }
    backups.reverse();
    if backups.is_empty() {
        return Err(refused(format!("no base backup of stanza {stanza:?} lies on timeline {tli}'s history")));
    }
    Ok(backups)
}

/// The newest backup that ended before `target` (the newest of all for
/// the other kinds of target).
fn choose_backup(
    backups: &[(SnapshotId, Snapshot, PgFacts)],
    target: &Target,
) -> Result<(SnapshotId, Snapshot, PgFacts)> {
    let pick = |ok: &dyn Fn(&PgFacts) -> bool, what: String| {
        backups.iter().find(|(_, _, f)| ok(f)).cloned().ok_or_else(|| refused(what))
    };
    Ok(match target {
        Target::Time(t) => {
            let oldest = backups.last().map(|(_, _, f)| f.stop_time.clone()).unwrap_or_default();
            pick(
                &|f| stop_time_us(f) <= *t,
                format!("{} is before the oldest usable base backup ended ({oldest})", time_text(*t)),
            )?
        }
        Target::Lsn(l) => {
            pick(&|f| f.stop().0 <= *l, format!("LSN {} is before the oldest base backup's consistent point", Lsn(*l)))?
        }
        _ => backups[0].clone(),
    })
}

/// The segments walked, as (timeline, segment number), and the one where
/// the target is reached, if found.
type Walked = (Vec<(u32, u64)>, Option<u64>);

/// The segments recovery reads, from the backup's first (`start_seg`)
/// along the timeline path until the one where `target` is reached (or,
/// for `latest`, the last archived), and that one if found. Refused at a
/// segment missing from the archive that recovery needs.
fn walk(
    archive: &Archive,
    path: &[(u32, u64)],
    tli: u32,
    target: &Target,
    start_seg: u64,
    stop_seg: u64,
) -> Result<Walked> {
    let seg_bytes = u64::from(archive.size.bytes());
    let mut walked: Vec<(u32, u64)> = Vec::new();
    let mut end: Option<u64> = None;
    let mut segno = start_seg;
    loop {
        let Some(t) = archive.timeline_of(path, segno) else {
            let want = path.iter().rev().find(|(_, b)| b / seg_bytes <= segno).map_or(tli, |(t, _)| *t);
            if matches!(target, Target::Latest) && segno > stop_seg {
                let beyond =
                    path.iter().any(|(t, _)| archive.segments.range((*t, segno)..(*t, u64::MAX)).next().is_some());
                if beyond {
                    return Err(refused(format!(
                        "WAL segment {} is missing from the archive (a gap): recovery would stop there, short of the newest WAL",
                        archive.name(want, segno)
                    )));
                }
                break;
            }
            let missing = archive.name(want, segno);
            let why = if archive.segments.range((want, segno)..(want, u64::MAX)).next().is_some() {
                format!("WAL segment {missing} is missing from the archive (a gap), and recovery needs it")
            } else {
                match &target {
                    Target::Time(t) => format!(
                        "no commit after {} is archived on timeline {tli}: the newest archived WAL ends in {}",
                        time_text(*t),
                        walked.last().map_or("nothing".into(), |(t, s)| archive.name(*t, *s))
                    ),
                    _ => format!("WAL segment {missing} is not archived yet (the target is past the newest WAL)"),
                }
            };
            return Err(refused(why));
        };
        walked.push((t, segno));
        let m = &archive.segments[&(t, segno)];
        let facts_here = m.facts.as_ref();
        let seg_start = segno * seg_bytes;
        let found = segno >= stop_seg
            && match &target {
                Target::Latest => false,
                Target::Lsn(l) => *l < seg_start + seg_bytes,
                Target::Time(tt) => facts_here.and_then(|f| f.last_commit).is_some_and(|c| c.time_us > *tt),
                Target::Xid(x) => facts_here.and_then(|f| f.commit_xids).is_some_and(|(lo, hi)| lo <= *x && *x <= hi),
                Target::Name(n) => facts_here.is_some_and(|f| f.restore_points.iter().any(|p| &p.name == n)),
            };
        if found {
            end = Some(segno);
            break;
        }
        segno += 1;
    }
    Ok((walked, end))
}
