//! Whether a server's WAL archiving reaches the repository, told from the
//! server's side (`pg_stat_archiver`, over a plain SQL session) and from
//! the repository's (the stanza's WAL manifests).
//!
//! - [`Archiver`]: the SQL session; [`ArchiverStats`] is one reading.
//! - [`check`]: `cairn pg check`: switch WAL, then wait for that segment.
//! - [`GateWatch`]: what a base backup's WAL wait ([`super::wal_gate`])
//!   watches while it waits, and whom it tells.
//!
//! Both waits end early, with [`Error::ArchiverFailing`], as soon as the
//! server shows `archive_command` failing since the wait began (its
//! `failed_count` grew and the last failure is newer than the last
//! success) for [`FAILING_FOR`] on end (the archiver retries a failed
//! file every second, so a passing failure clears by then), or reports
//! the awaited segment archived while the stanza lacks it
//! (`archive_command` delivers somewhere else). A segment that merely has
//! not arrived yet is waited for.
//!
//! **Invariant:** watching never changes the server: the only statements
//! with effects are `pg check`'s `pg_create_restore_point` and
//! `pg_switch_wal`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pg::replication::conn::Conn;
use crate::pg::replication::ConnInfo;
use crate::repo::Repository;
use crate::store::BackendExt as _;
use crate::wal::manifest_key;
use crate::{Error, Result};

/// Told what a wait is waiting for, about every [`NOTIFY_EVERY`].
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

/// How often a wait says what it waits for.
pub const NOTIFY_EVERY: Duration = Duration::from_secs(10);

/// How often a wait reads `pg_stat_archiver`.
const POLL_STATS_EVERY: Duration = Duration::from_secs(1);

/// How often a wait looks for the segment in the repository.
const POLL_REPO_EVERY: Duration = Duration::from_millis(500);

/// How long `archive_command` must stay failing, with nothing archived
/// meanwhile, before a wait gives up on it.
pub const FAILING_FOR: Duration = Duration::from_secs(3);

/// The longest a statement of the watch may take.
const SQL_TIMEOUT: Duration = Duration::from_secs(30);

const STATS_SQL: &str = "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, \
     last_failed_wal, last_failed_time, coalesce(last_failed_time > last_archived_time, last_failed_time IS NOT NULL) \
     FROM pg_stat_archiver";

/// One reading of `pg_stat_archiver`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiverStats {
    /// Files archived since the statistics were reset.
    pub archived_count: u64,
    /// The last file archived.
    pub last_archived_wal: Option<String>,
    /// When (the server's clock, as text).
    pub last_archived_time: Option<String>,
    /// Failed `archive_command` runs.
    pub failed_count: u64,
    /// The file of the last failed run.
    pub last_failed_wal: Option<String>,
    /// When it failed.
    pub last_failed_time: Option<String>,
    /// The last run failed: its failure is newer than the last success.
    pub failing: bool,
}

impl ArchiverStats {
    /// Whether `archive_command` failed after `before` was read and has
    /// not succeeded since.
    pub fn failing_since(&self, before: &ArchiverStats) -> bool {
        self.failing && self.failed_count > before.failed_count
    }

    /// Whether the server says it archived `segment` (a 24-digit segment
    /// name) or a later segment of the same timeline.
    fn archived_past(&self, segment: &str) -> bool {
        self.last_archived_wal.as_deref().is_some_and(|w| w.len() == 24 && w[..8] == segment[..8] && w >= segment)
    }

    fn last_success(&self) -> String {
        match (&self.last_archived_wal, &self.last_archived_time) {
            (Some(w), Some(t)) => format!("{w} at {t}"),
            _ => "none".into(),
        }
    }
}

/// Decides, reading after reading, whether `archive_command` fails for
/// good since `before`: failing in every reading for [`FAILING_FOR`], with
/// nothing archived in between.
struct FailureTracker {
    before: ArchiverStats,
    /// Since when it has been failing, and the archived count then.
    since: Option<(Instant, u64)>,
}

impl FailureTracker {
    fn new(before: ArchiverStats) -> FailureTracker {
        FailureTracker { before, since: None }
    }

    fn failed(&mut self, s: &ArchiverStats, now: Instant) -> bool {
        if !s.failing_since(&self.before) {
            self.since = None;
            return false;
        }
        match self.since {
            Some((t, archived)) if archived == s.archived_count => now.duration_since(t) >= FAILING_FOR,
            _ => {
                self.since = Some((now, s.archived_count));
                false
            }
        }
    }
}

/// A plain SQL session to the server, for `pg_stat_archiver` and settings.
pub struct Archiver {
    conn: Arc<Mutex<Option<Conn>>>,
    server: String,
    archive_command: Option<String>,
}

impl Archiver {
    /// Connects (a plain session, see [`ConnInfo::parse_sql`]) and reads
    /// `archive_command` where this role may (superusers and
    /// `pg_read_all_settings`).
    pub async fn connect(ci: &ConnInfo) -> Result<Archiver> {
        let ci = ci.clone();
        let conn = tokio::task::spawn_blocking(move || Conn::connect_sql(&ci, SQL_TIMEOUT))
            .await
            .map_err(|e| Error::Internal(format!("connecting for pg_stat_archiver: {e}")))??;
        let server = conn.server.clone();
        let mut a = Archiver { conn: Arc::new(Mutex::new(Some(conn))), server, archive_command: None };
        a.archive_command = match a.query("SELECT current_setting('archive_command')").await {
            Ok(rows) => rows.first().and_then(|r| r.first().cloned().flatten()),
            Err(e) => {
                tracing::debug!(error = %e, "archive_command is not readable by this role");
                None
            }
        };
        Ok(a)
    }

    /// The server, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let conn = self.conn.clone();
        let sql = sql.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| Error::Internal("archiver session poisoned".into()))?;
            let c = guard.as_mut().ok_or_else(|| Error::Internal("archiver session closed".into()))?;
            c.simple_query(&sql)
        })
        .await
        .map_err(|e| Error::Internal(format!("archiver query: {e}")))?
    }

    /// One row's first columns, or a protocol error naming `what`.
    async fn row(&self, sql: &str, what: &str) -> Result<Vec<Option<String>>> {
        let rows = self.query(sql).await?;
        rows.into_iter().next().ok_or_else(|| Error::Protocol {
            server: self.server.clone(),
            detail: format!("no row in the answer to {what}"),
        })
    }

    /// Reads `pg_stat_archiver`.
    pub async fn stats(&self) -> Result<ArchiverStats> {
        let r = self.row(STATS_SQL, "pg_stat_archiver").await?;
        let col = |i: usize| r.get(i).cloned().flatten();
        let num = |i: usize| col(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(ArchiverStats {
            archived_count: num(0),
            last_archived_wal: col(1),
            last_archived_time: col(2),
            failed_count: num(3),
            last_failed_wal: col(4),
            last_failed_time: col(5),
            failing: col(6).as_deref() == Some("t"),
        })
    }

    fn failing(&self, awaited: &str, s: &ArchiverStats, before: &ArchiverStats) -> Error {
        Error::ArchiverFailing {
            server: self.server.clone(),
            detail: format!(
                "archive_command failed {} time(s) while {awaited} was awaited, last on {} at {} (pg_stat_archiver; \
                 last success: {})",
                s.failed_count - before.failed_count,
                s.last_failed_wal.as_deref().unwrap_or("?"),
                s.last_failed_time.as_deref().unwrap_or("?"),
                s.last_success()
            ),
            last_failed_wal: s.last_failed_wal.clone(),
            last_failed_time: s.last_failed_time.clone(),
            archive_command: self.archive_command.clone(),
        }
    }

    fn elsewhere(&self, stanza: &str, segment: &str, s: &ArchiverStats) -> Error {
        Error::ArchiverFailing {
            server: self.server.clone(),
            detail: format!(
                "the server reports {} archived (pg_stat_archiver) but stanza {stanza:?} of this repository lacks \
                 {segment}: archive_command delivers to another repository or stanza",
                s.last_success()
            ),
            last_failed_wal: None,
            last_failed_time: None,
            archive_command: self.archive_command.clone(),
        }
    }
}

impl Drop for Archiver {
    fn drop(&mut self) {
        if let Some(c) = self.conn.lock().ok().and_then(|mut g| g.take()) {
            c.terminate();
        }
    }
}

/// What a base backup's WAL wait watches, and whom it tells that it waits.
pub struct GateWatch {
    archiver: Option<(Archiver, FailureTracker)>,
    notify: Notify,
}

impl GateWatch {
    /// A wait that only tells `notify` (every [`NOTIFY_EVERY`]).
    pub fn new(notify: Notify) -> GateWatch {
        GateWatch { archiver: None, notify }
    }

    /// A wait that says nothing and watches nothing.
    pub fn quiet() -> GateWatch {
        GateWatch::new(Arc::new(|_: &str| {}))
    }

    /// Also watches the server's archiver: reads `pg_stat_archiver` now
    /// (call this before the backup starts), so that failures after this
    /// moment end the wait. A server this cannot reach over SQL (a role
    /// or `pg_hba.conf` that allows replication only) leaves the wait
    /// unwatched, with a warning.
    pub async fn watching(mut self, ci: &ConnInfo) -> GateWatch {
        let started = async {
            let a = Archiver::connect(ci).await?;
            let before = a.stats().await?;
            Ok::<_, Error>((a, FailureTracker::new(before)))
        };
        match started.await {
            Ok(w) => self.archiver = Some(w),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot read pg_stat_archiver; the wait for the backup's WAL will not notice a failing archive_command"
            ),
        }
        self
    }

    /// Reads `pg_stat_archiver` every second until `archive_command` fails
    /// for good (see the module docs) and returns that failure, naming
    /// `awaited`. Without an archiver to read, or once the server stops
    /// answering (with a warning), never returns: race it against the work
    /// it guards.
    pub async fn until_failing(&mut self, awaited: &str) -> Error {
        if let Some((a, tracker)) = &mut self.archiver {
            loop {
                tokio::time::sleep(POLL_STATS_EVERY).await;
                match a.stats().await {
                    Ok(s) if tracker.failed(&s, Instant::now()) => return a.failing(awaited, &s, &tracker.before),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "stopped reading pg_stat_archiver");
                        break;
                    }
                }
            }
        }
        std::future::pending().await
    }
}

/// Where a wait for segments stopped.
pub(crate) enum Waited {
    /// Every segment is in the stanza.
    All,
    /// The time ran out while this segment was missing.
    TimedOut(String),
}

/// Waits up to `timeout` until every segment of `names` (in order, one
/// timeline) is in `stanza`, reading the archiver's statistics meanwhile.
pub(crate) async fn await_segments(
    repo: &Repository,
    stanza: &str,
    timeline: u32,
    names: &[String],
    timeout: Duration,
    watch: &mut GateWatch,
) -> Result<Waited> {
    let started = Instant::now();
    let (mut last_stats, mut last_notice) = (None::<Instant>, started);
    let mut next = 0;
    while let Some(name) = names.get(next) {
        if repo.store().exists(&manifest_key(stanza, timeline, name)).await? {
            next += 1;
            continue;
        }
        let mut seen = None;
        if let Some((a, tracker)) = &mut watch.archiver {
            if last_stats.is_none_or(|t| t.elapsed() >= POLL_STATS_EVERY) {
                last_stats = Some(Instant::now());
                let s = a.stats().await?;
                if tracker.failed(&s, Instant::now()) {
                    return Err(a.failing(name, &s, &tracker.before));
                }
                // Read after the statistics: a segment archived by then is
                // in the stanza by then, if it went to this stanza.
                if s.archived_past(name) && !repo.store().exists(&manifest_key(stanza, timeline, name)).await? {
                    return Err(a.elsewhere(stanza, name, &s));
                }
                seen = Some(s);
            }
        }
        if started.elapsed() >= timeout {
            return Ok(Waited::TimedOut(name.clone()));
        }
        if last_notice.elapsed() >= NOTIFY_EVERY {
            last_notice = Instant::now();
            let server = match (&watch.archiver, &seen) {
                (Some(_), Some(s)) => format!("; the server last archived {}", s.last_success()),
                _ => String::new(),
            };
            (watch.notify)(&format!(
                "waiting for WAL segment {name} to be archived into stanza {stanza:?} ({next} of {} archived so far, \
                 {} s of {} s){server}",
                names.len(),
                started.elapsed().as_secs(),
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL_REPO_EVERY).await;
    }
    Ok(Waited::All)
}

/// What [`check`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The server.
    pub server: String,
    /// The stanza the segment arrived in.
    pub stanza: String,
    /// The segment `pg_switch_wal()` completed.
    pub segment: String,
    /// Where the switch happened.
    pub switch_lsn: String,
    /// Seconds from the switch until the segment was in the stanza.
    pub waited_s: f64,
    /// `pg_stat_archiver` after the segment arrived.
    pub archiver: ArchiverStats,
}

/// `cairn pg check`: confirms that the server's WAL reaches `stanza`. On a
/// primary with `archive_mode` on, writes a restore point (so that there
/// is WAL to switch away from), forces a WAL switch, and waits up to
/// `timeout` for the segment it completed to appear in the stanza.
/// `archive_command` failing meanwhile, the segment reported archived
/// but absent, or the time running out is [`Error::ArchiverFailing`].
pub async fn check(
    repo: &Repository,
    stanza: &str,
    ci: &ConnInfo,
    timeout: Duration,
    notify: Notify,
) -> Result<CheckReport> {
    crate::wal::validate_stanza(stanza)?;
    let a = Archiver::connect(ci).await?;
    let r = a.row("SELECT pg_is_in_recovery(), current_setting('archive_mode')", "the server's state").await?;
    let refuse = |detail: String| Error::ArchiverFailing {
        server: a.server.clone(),
        detail,
        last_failed_wal: None,
        last_failed_time: None,
        archive_command: a.archive_command.clone(),
    };
    if r.first().cloned().flatten().as_deref() == Some("t") {
        return Err(refuse("the server is a standby (in recovery): check its primary".into()));
    }
    if r.get(1).cloned().flatten().as_deref() == Some("off") {
        return Err(refuse("archive_mode is off: nothing is archived".into()));
    }
    let before = a.stats().await?;
    // Without WAL written since the last switch, pg_switch_wal() switches
    // nothing; a restore point is a record to switch away from.
    if let Err(e) = a.query("SELECT pg_create_restore_point('cairn pg check')").await {
        tracing::debug!(error = %e, "no restore point (needs superuser or a grant)");
    }
    let r = a.row("SELECT pg_walfile_name(lsn), lsn::text FROM pg_switch_wal() AS lsn", "pg_switch_wal()").await?;
    let (Some(segment), Some(lsn)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten()) else {
        return Err(Error::Protocol { server: a.server.clone(), detail: "pg_switch_wal() returned NULL".into() });
    };
    let timeline =
        segment.get(..8).and_then(|t| u32::from_str_radix(t, 16).ok()).filter(|_| segment.len() == 24).ok_or_else(
            || Error::Protocol { server: a.server.clone(), detail: format!("WAL file name {segment:?}") },
        )?;
    let started = Instant::now();
    let mut watch = GateWatch { archiver: Some((a, FailureTracker::new(before))), notify };
    let waited = await_segments(repo, stanza, timeline, std::slice::from_ref(&segment), timeout, &mut watch).await?;
    let (a, FailureTracker { before, .. }) = watch.archiver.expect("set above");
    let stats = a.stats().await?;
    if let Waited::TimedOut(name) = waited {
        return Err(Error::ArchiverFailing {
            server: a.server.clone(),
            detail: format!(
                "{name} did not reach stanza {stanza:?} within {} s; archive_command did not fail meanwhile \
                 (pg_stat_archiver: {} archived since, last success: {})",
                timeout.as_secs(),
                stats.archived_count.saturating_sub(before.archived_count),
                stats.last_success()
            ),
            last_failed_wal: None,
            last_failed_time: None,
            archive_command: a.archive_command.clone(),
        });
    }
    Ok(CheckReport {
        server: a.server.clone(),
        stanza: stanza.to_owned(),
        segment,
        switch_lsn: lsn,
        waited_s: started.elapsed().as_secs_f64(),
        archiver: stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(failed_count: u64, failing: bool, last_archived: Option<&str>) -> ArchiverStats {
        ArchiverStats {
            failed_count,
            failing,
            last_archived_wal: last_archived.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn only_failures_after_the_baseline_that_persist_count() {
        let before = stats(3, true, None);
        // Failing before the wait began, and no new failure: not (yet) ours.
        assert!(!stats(3, true, None).failing_since(&before));
        // A new failure, not followed by a success: failing.
        assert!(stats(4, true, None).failing_since(&before));
        // A new failure since overtaken by a success: archiving recovered.
        assert!(!stats(4, false, None).failing_since(&before));
    }

    #[test]
    fn a_failure_counts_once_it_persists_with_nothing_archived() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = FailureTracker::new(stats(3, true, None));
        assert!(!t.failed(&stats(4, true, None), at(0)));
        assert!(!t.failed(&stats(5, true, None), at(2)));
        assert!(t.failed(&stats(6, true, None), at(3)));
        // A success in between starts the clock again.
        let mut t = FailureTracker::new(stats(0, false, None));
        assert!(!t.failed(&stats(1, true, None), at(0)));
        let mut archived = stats(2, true, None);
        archived.archived_count = 1;
        assert!(!t.failed(&archived, at(3)));
        assert!(t.failed(&archived, at(6)));
        // Recovered: no verdict, and the clock is reset.
        let mut t = FailureTracker::new(stats(0, false, None));
        assert!(!t.failed(&stats(1, true, None), at(0)));
        assert!(!t.failed(&stats(1, false, None), at(1)));
        assert!(!t.failed(&stats(2, true, None), at(4)));
    }

    #[test]
    fn archived_past_compares_segments_of_one_timeline_only() {
        let seg = "000000010000000000000005";
        assert!(stats(0, false, Some(seg)).archived_past(seg));
        assert!(stats(0, false, Some("000000010000000000000006")).archived_past(seg));
        assert!(!stats(0, false, Some("000000010000000000000004")).archived_past(seg));
        // Another timeline, a history file, a backup history file: no verdict.
        assert!(!stats(0, false, Some("000000020000000000000009")).archived_past(seg));
        assert!(!stats(0, false, Some("00000002.history")).archived_past(seg));
        assert!(!stats(0, false, Some("000000010000000000000007.00000028.backup")).archived_past(seg));
        assert!(!stats(0, false, None).archived_past(seg));
    }
}
