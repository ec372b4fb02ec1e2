//! Point-in-time restore: plan from the catalogue, then restore.
//!
//! [`plan`] reads only sealed manifests (snapshots and the WAL catalogue)
//! and answers, before a byte is written: which base backup, which
//! timeline path, and which WAL segments recovery will ask for — and
//! whether every one of them is archived. A target the archive cannot
//! reach (before the oldest usable backup, after the newest WAL, beyond a
//! gap) is refused with the reason. [`restore`] then extracts the backup,
//! checks every file against its `backup_manifest`, and writes
//! `recovery.signal` and the recovery settings.

use std::collections::BTreeMap;
use std::path::Path;

use cairn_formats::pg::{BackupManifest, FileChecker, Lsn, SegmentName, SegmentSize, WalFileName};
use serde::Serialize;

use crate::beneath::{Beneath, Meta};
use crate::commands::files::{ExtractOptions, Layout, LinkRule};
use crate::commands::restore::restore_entry_beneath;
use crate::ids::SnapshotId;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::sources::pg::base::{PgFacts, KIND};
use crate::wal::{catalog, WalFileKind, WalManifest};
use crate::{Error, Result};

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// After the last commit at or before this time (Unix microseconds).
    Time(i64),
    /// At this LSN.
    Lsn(u64),
    /// After this transaction's commit.
    Xid(u32),
    /// At this restore point.
    Name(String),
    /// The end of the archive.
    Latest,
}

/// What to do when the target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// End recovery and open for writes on a new timeline.
    Promote,
    /// Pause (inspect with a read-only server, then promote by hand).
    Pause,
    /// Shut down.
    Shutdown,
}

impl Action {
    fn conf(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Pause => "pause",
            Action::Shutdown => "shutdown",
        }
    }
}

/// A restore, decided.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The stanza.
    pub stanza: String,
    /// The base backup's snapshot id.
    pub snapshot: String,
    /// What that backup recorded.
    pub backup: PgFacts,
    /// The target.
    pub target: Target,
    /// The timeline recovery follows.
    pub timeline: u32,
    /// Timelines on the way and where each begins: `(timeline, begin LSN)`.
    pub path: Vec<(u32, String)>,
    /// First and last WAL file recovery will ask for.
    pub first_wal: String,
    /// The last one (for `latest`, the newest contiguous segment).
    pub last_wal: String,
    /// Segments recovery will fetch.
    pub wal_segments: u64,
    /// The settings written to `postgresql.auto.conf`.
    pub settings: Vec<(String, String)>,
    /// The backup's tablespaces and where each is restored.
    pub tablespaces: Vec<TablespacePlan>,
}

/// Where a tablespace of the backup is restored.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TablespacePlan {
    /// Its OID (the archive is `<oid>.tar`).
    pub oid: String,
    /// Its directory on the server the backup was taken from, as the
    /// server reported it.
    pub server_location: String,
    /// Where this restore writes it: the server's location unless mapped.
    pub restore_to: std::path::PathBuf,
}

impl Plan {
    /// Sends tablespace `oid` to `dir` instead of the server's location
    /// (`--tablespace-map OID=DIR`); `tablespace_map` is rewritten to
    /// match. Every destination must be absolute.
    pub fn map_tablespaces(&mut self, map: &[(String, std::path::PathBuf)]) -> Result<()> {
        for (oid, dir) in map {
            let Some(t) = self.tablespaces.iter_mut().find(|t| &t.oid == oid) else {
                let known: Vec<&str> = self.tablespaces.iter().map(|t| t.oid.as_str()).collect();
                return Err(Error::InvalidInput(format!(
                    "tablespace {oid} is not in backup {} (it has {known:?})",
                    &self.snapshot[..12]
                )));
            };
            t.restore_to = dir.clone();
        }
        for t in &self.tablespaces {
            if !t.restore_to.is_absolute() {
                return Err(Error::InvalidInput(format!(
                    "tablespace {} would be restored to {:?}, which is not an absolute path; map it to one",
                    t.oid, t.restore_to
                )));
            }
        }
        Ok(())
    }
}

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

struct Archive {
    size: SegmentSize,
    segments: BTreeMap<(u32, u64), WalManifest>,
    history: BTreeMap<u32, Vec<(u32, u64)>>,
    backups: Vec<BTreeMap<String, String>>,
}

impl Archive {
    async fn load(repo: &Repository, stanza: &str) -> Result<Archive> {
        let (size, all) = catalog::archived(repo, stanza).await?;
        let mut a = Archive { size, segments: BTreeMap::new(), history: BTreeMap::new(), backups: Vec::new() };
        for (name, m) in all {
            match (name, m.kind) {
                (WalFileName::Segment(s), WalFileKind::Segment) => {
                    a.segments.insert((s.timeline, s.segno), m);
                }
                (WalFileName::History { timeline }, WalFileKind::History) => {
                    let h = m.history.iter().flatten().map(|l| (l.timeline, l.switchpoint)).collect();
                    a.history.insert(timeline, h);
                }
                (_, WalFileKind::Backup) => a.backups.extend(m.backup.clone()),
                _ => {}
            }
        }
        Ok(a)
    }

    /// `(timeline, begin LSN)` from the oldest ancestor to `tli`.
    fn path(&self, tli: u32) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let mut begin = 0u64;
        for &(t, switch) in self.history.get(&tli).map(Vec::as_slice).unwrap_or_default() {
            out.push((t, begin));
            begin = switch;
        }
        out.push((tli, begin));
        out
    }

    /// The timeline recovery reads segment `segno` from on `path`: the
    /// newest one that has begun by then and has the file.
    fn timeline_of(&self, path: &[(u32, u64)], segno: u64) -> Option<u32> {
        let seg_bytes = u64::from(self.size.bytes());
        path.iter()
            .rev()
            .filter(|(_, begin)| begin / seg_bytes <= segno)
            .map(|(t, _)| *t)
            .find(|t| self.segments.contains_key(&(*t, segno)))
    }

    fn name(&self, tli: u32, segno: u64) -> String {
        SegmentName { timeline: tli, segno }.format(self.size)
    }

    fn highest_timeline(&self) -> u32 {
        let seg = self.segments.keys().map(|(t, _)| *t).max().unwrap_or(1);
        seg.max(self.history.keys().copied().max().unwrap_or(1))
    }
}

fn refused(detail: String) -> Error {
    Error::NotFound { what: format!("a way to the target: {detail}") }
}

fn time_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| us.to_string())
}

/// A time as PostgreSQL's settings take it (`YYYY-MM-DD HH:MM:SS.ffffff+00`).
fn pg_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// Parses an RFC 3339 time (or `YYYY-MM-DD HH:MM:SS[.frac][+TZ]`).
pub fn parse_time(s: &str) -> Result<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map_err(|e| {
            Error::InvalidInput(format!("target time {s:?}: {e} (use RFC 3339, e.g. 2026-11-25T10:00:00Z)"))
        })?;
    Ok(t.timestamp_micros())
}

/// When the backup became consistent, at the latest. PostgreSQL writes
/// `STOP TIME` in whole seconds, truncated, so a second is added.
fn stop_time_us(b: &PgFacts) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&b.stop_time).map(|t| t.timestamp_micros() + 1_000_000).unwrap_or(i64::MAX)
}

/// Decides a restore without writing anything.
pub async fn plan(
    repo: &Repository,
    stanza: &str,
    target: Target,
    timeline: Option<u32>,
    action: Action,
    restore_command: &str,
) -> Result<(Plan, Snapshot)> {
    let archive = Archive::load(repo, stanza).await?;
    let tli = timeline.unwrap_or_else(|| archive.highest_timeline());
    let path = archive.path(tli);
    let seg_bytes = u64::from(archive.size.bytes());
    let backups = backups_on_path(repo, stanza, &path, tli).await?;
    let (id, snap, facts) = match choose_backup(&backups, &target) {
        Ok(c) => c,
        Err(Error::NotFound { what }) => {
            // Say so when retention is why the archive starts where it does.
            let why = match super::expire::expiry_record(repo, stanza).await? {
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

/// The `postgresql.auto.conf` settings that make recovery stop at `target`.
fn recovery_settings(target: &Target, tli: u32, action: Action, restore_command: &str) -> Vec<(String, String)> {
    let mut settings = vec![
        ("restore_command".to_string(), restore_command.to_string()),
        ("recovery_target_timeline".to_string(), tli.to_string()),
    ];
    match target {
        Target::Time(t) => settings.push(("recovery_target_time".into(), pg_time(*t))),
        Target::Lsn(l) => settings.push(("recovery_target_lsn".into(), Lsn(*l).to_string())),
        Target::Xid(x) => settings.push(("recovery_target_xid".into(), x.to_string())),
        Target::Name(n) => settings.push(("recovery_target_name".into(), n.clone())),
        Target::Latest => {}
    }
    if *target != Target::Latest {
        settings.push(("recovery_target_action".into(), action.conf().into()));
    }
    settings
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The plan carried out.
    pub plan: Plan,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files checked against `backup_manifest`.
    pub verified: u64,
}

/// Quotes a value for postgresql.conf: inside single quotes a quote is
/// doubled and a backslash escaped, as PostgreSQL's configuration parser
/// reads them; a line break cannot be represented and is refused.
fn conf_quote(key: &str, v: &str) -> Result<String> {
    if v.contains(['\n', '\r', '\0']) {
        return Err(Error::InvalidInput(format!(
            "{key}: a line break or NUL cannot be written to postgresql.auto.conf"
        )));
    }
    Ok(format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''")))
}

/// A `tablespace_map` line's path, escaped as PostgreSQL writes it.
fn map_escape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '\n' | '\r' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How `pg restore` treats existing directories.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Extract into tablespace directories that are not empty.
    pub allow_nonempty_tablespaces: bool,
}

fn read_all(b: &Beneath, rel: &str) -> Result<Option<Vec<u8>>> {
    let Some(mut f) = b.read_file(rel)? else { return Ok(None) };
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v).map_err(|e| Error::io(b.shown(rel), e))?;
    Ok(Some(v))
}

/// Carries out a plan into `pgdata`, which must be missing or empty.
///
/// Everything is written beneath `pgdata` (and each tablespace's
/// directory) through [`Beneath`]; the only symbolic links the backup may
/// hold are `pg_tblspc/<oid>`, and none is followed. Directories stay 0700
/// and files 0600 until their own modes are applied at the end.
pub async fn restore(
    repo: &Repository,
    index: &LocalIndex,
    plan: Plan,
    snapshot: Snapshot,
    pgdata: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    if std::fs::read_dir(pgdata).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::InvalidInput(format!("{}: not empty; restore into a new directory", pgdata.display())));
    }
    for t in &plan.tablespaces {
        if !t.restore_to.is_absolute() {
            return Err(Error::InvalidInput(format!(
                "tablespace {}: {:?} is not an absolute path",
                t.oid, t.restore_to
            )));
        }
        if !opts.allow_nonempty_tablespaces && std::fs::read_dir(&t.restore_to).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::InvalidInput(format!(
                "tablespace {}'s directory {} is not empty",
                t.oid,
                t.restore_to.display()
            )));
        }
    }
    let b = Beneath::open(pgdata)?;
    // A PostgreSQL data directory holds no setuid files and no links but
    // the tablespaces'; its files belong to the server's user, kept when
    // root restores.
    let xopts =
        ExtractOptions { same_owner: Some(true), same_permissions: Some(false), links: LinkRule::PgTablespaces };
    let manifest_entry = snapshot.entries.iter().find(|e| e.name == "backup_manifest" && e.members.is_none()).cloned();
    // The data directory's archive: a pulled backup sends the tablespaces'
    // archives first and `base.tar` last.
    let is_tablespace = |name: &str| plan.tablespaces.iter().any(|t| name == format!("{}.tar", t.oid));
    let base = snapshot
        .entries
        .iter()
        .position(|e| e.members.is_some() && e.name == "base.tar")
        .or_else(|| snapshot.entries.iter().position(|e| e.members.is_some() && !is_tablespace(&e.name)))
        .ok_or_else(|| Error::corrupt("snapshot", None, "no archive of the data directory"))?;
    let mut sum =
        Layout::load_tar(repo, index, snapshot.clone(), base).await?.extract(repo, index, None, pgdata, &xopts).await?;
    let mut roots = Vec::new();
    for t in &plan.tablespaces {
        let Some(i) = snapshot.entries.iter().position(|e| e.name == format!("{}.tar", t.oid)) else {
            return Err(Error::corrupt("snapshot", None, format!("tablespace {} has no archive", t.oid)));
        };
        let l = Layout::load_tar(repo, index, snapshot.clone(), i).await?;
        let s = l.extract(repo, index, None, &t.restore_to, &xopts).await?;
        sum.items += s.items;
        sum.bytes_written += s.bytes_written;
        roots.push((t, Beneath::open(&t.restore_to)?));
    }
    if let Some(e) = manifest_entry {
        restore_entry_beneath(repo, index, &e, &b, "backup_manifest", None, 4, Default::default()).await?;
    }
    for d in ["pg_wal", "pg_wal/archive_status"] {
        b.dir(d, true)?;
    }

    // Every file against backup_manifest, read without following links.
    let mbytes = read_all(&b, "backup_manifest")?
        .ok_or_else(|| Error::NotFound { what: format!("{}", b.shown("backup_manifest").display()) })?;
    let manifest =
        BackupManifest::parse(&mbytes).map_err(|e| Error::corrupt("backup_manifest", None, e.to_string()))?;
    let checked = tokio::task::block_in_place(|| -> Result<u64> {
        use rayon::prelude::*;
        manifest.files.par_iter().try_for_each(|f| -> Result<()> {
            let rel = f.path_lossy();
            // Tablespace files live in their own directories until
            // PostgreSQL links them in from tablespace_map.
            let in_tablespace = rel
                .strip_prefix("pg_tblspc/")
                .and_then(|r| r.split_once('/'))
                .and_then(|(oid, rest)| roots.iter().find(|(t, _)| t.oid == oid).map(|(_, root)| (root, rest)));
            let (root, rel) = in_tablespace.unwrap_or((&b, rel.as_str()));
            let shown = root.shown(rel);
            let mut file = root.read_file(rel)?.ok_or_else(|| Error::NotFound { what: shown.display().to_string() })?;
            let mut c = FileChecker::new(f);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| Error::io(&shown, e))?;
                if n == 0 {
                    break;
                }
                c.update(&buf[..n]);
            }
            c.finish().map_err(|e| Error::corrupt(shown.display().to_string(), None, e.to_string()))
        })?;
        Ok(manifest.files.len() as u64)
    })?;

    // What PostgreSQL reads is owned like PG_VERSION (the server's user).
    let owner = match b.read_file("PG_VERSION")? {
        Some(f) if running_as_root() => {
            let m = f.metadata().map_err(|e| Error::io(b.shown("PG_VERSION"), e))?;
            Some((std::os::unix::fs::MetadataExt::uid(&m), std::os::unix::fs::MetadataExt::gid(&m)))
        }
        _ => None,
    };
    // Mapped tablespaces: the map as PostgreSQL will read it, written
    // after the backup's own was checked against the manifest.
    if plan.tablespaces.iter().any(|t| t.restore_to.as_os_str() != t.server_location.as_str()) {
        let mut map = String::new();
        for t in &plan.tablespaces {
            let to = t.restore_to.to_str().ok_or_else(|| {
                Error::InvalidInput(format!("tablespace {}: {:?} is not valid UTF-8", t.oid, t.restore_to))
            })?;
            map.push_str(&format!("{} {}\n", t.oid, map_escape(to)));
        }
        b.write("tablespace_map", map.as_bytes(), Some(&Meta { mode: 0o600, owner, mtime: None }))?;
    }
    // Recovery settings last: a restore that failed above leaves no
    // recovery.signal, so the directory cannot be started by mistake.
    let file_meta = Meta { mode: 0o600, owner, mtime: None };
    let mut text =
        read_all(&b, "postgresql.auto.conf")?.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
    text.push_str(&format!("\n# Added by cairn pg restore (snapshot {})\n", plan.snapshot));
    for (k, v) in &plan.settings {
        text.push_str(&format!("{k} = {}\n", conf_quote(k, v)?));
    }
    b.write("postgresql.auto.conf", text.as_bytes(), Some(&file_meta))?;
    b.write("recovery.signal", b"", Some(&file_meta))?;
    if let Some(o) = owner {
        // The data directory itself and what cairn made are not members
        // of the archive.
        let dir_meta = Meta { mode: 0o700, owner: Some(o), mtime: None };
        for d in ["pg_wal/archive_status", "pg_wal", ""] {
            b.set_dir_meta(d, &dir_meta)?;
        }
        for (_, root) in &roots {
            root.set_dir_meta("", &dir_meta)?;
        }
        b.set_file_meta("backup_manifest", &file_meta)?;
    } else {
        b.set_dir_meta("", &Meta { mode: 0o700, owner: None, mtime: None })?;
    }
    Ok(RestoreReport { plan, files: sum.items, bytes: sum.bytes_written, verified: checked })
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
