//! PostgreSQL: point-in-time restore, the replication client, and the
//! gate that makes a base backup wait for its WAL. The base backups
//! themselves are sources (`sources/pg/`).
//!
//! - [`archiver`]: whether the server's WAL reaches the repository
//!   (`pg_stat_archiver`), for `cairn pg check` and for the gate's wait.
//! - [`pitr`]: planning a restore from the catalogue and carrying it out.
//! - [`replication`]: a client for a running server's replication
//!   protocol (`BASE_BACKUP`), for `cairn pg backup --connect`.
//!
//! WAL archiving itself (`archive_command`, `restore_command`) is
//! [`crate::wal`]; a base backup is usable only with the WAL from its start
//! to its stop position, which [`wal_gate`] waits for before the snapshot
//! is written.

pub mod archiver;
pub mod expire;
pub mod pitr;
pub mod receive;
pub mod replication;

pub use archiver::{check, Archiver, ArchiverStats, CheckReport, GateWatch, Notify};
pub use cairn_formats::pg::Lsn;

use std::sync::Arc;
use std::time::Duration;

use cairn_formats::pg::{SegmentName, SegmentSize};

use crate::commands::backup::CommitGate;
use crate::repo::Repository;
use crate::sources::pg::base::PgFacts;
use crate::wal::{load_stanza, manifest_key};
use crate::{Error, Result};

/// How long the gate waits for the backup history file once the WAL is in.
const HISTORY_FILE_WAIT: Duration = Duration::from_secs(10);

/// A gate for base backups of `stanza`: checks that the backup comes from
/// the stanza's cluster, then waits up to `timeout` for every WAL segment
/// from the backup's start to its stop position to be archived, and
/// records the stop time from the backup history file. While it waits it
/// tells `watch` every ten seconds; when `watch` reads the server's
/// `pg_stat_archiver` and `archive_command` fails meanwhile, the backup
/// fails at once ([`Error::ArchiverFailing`], no snapshot). Otherwise the
/// snapshot is written either way; `pg.wal_complete` says whether the WAL
/// was there (a restore plan checks the archive again regardless).
pub fn wal_gate(repo: Arc<Repository>, stanza: String, timeout: Duration, watch: GateWatch) -> CommitGate {
    Box::new(move |mut meta: serde_json::Value| {
        Box::pin(async move {
            let mut watch = watch;
            let mut facts: PgFacts = serde_json::from_value(meta.get("pg").cloned().unwrap_or_default())
                .map_err(|e| Error::Config(format!("base backup facts missing: {e}")))?;
            let cluster = load_stanza(&repo, &stanza).await?;
            if let Some(c) = &cluster {
                if c.system_id != facts.system_id {
                    return Err(Error::conflict(
                        crate::wal::stanza_key(&stanza),
                        format!(
                            "the base backup is of cluster {} but stanza {stanza:?} archives cluster {}",
                            facts.system_id, c.system_id
                        ),
                    ));
                }
            }
            let size = SegmentSize::new(cluster.as_ref().map_or(16 << 20, |c| u64::from(c.segment_size)))
                .map_err(|e| Error::Config(e.to_string()))?;
            let seg = u64::from(size.bytes());
            let (first, last) = (facts.start().0 / seg, facts.stop().0.saturating_sub(1) / seg);
            let names: Vec<String> =
                (first..=last).map(|segno| SegmentName { timeline: facts.timeline, segno }.format(size)).collect();
            let waited = archiver::await_segments(&repo, &stanza, facts.timeline, &names, timeout, &mut watch).await?;
            if let archiver::Waited::TimedOut(name) = &waited {
                tracing::warn!(
                    "WAL segment {name} (needed by this base backup) is not archived after {} s; \
                     the backup cannot be restored until it is",
                    timeout.as_secs()
                );
            }
            facts.wal_complete = matches!(waited, archiver::Waited::All);
            // The backup history file is archived before the stop segment,
            // or just after it when start and stop share a segment (and
            // the server no longer waits for it: `pg backup` sends WAIT
            // false); a moment's wait gets the true stop time.
            let mut stop = stop_time(&repo, &stanza, &facts, size).await?;
            let deadline = std::time::Instant::now() + HISTORY_FILE_WAIT;
            while stop.is_none() && facts.wal_complete && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
                stop = stop_time(&repo, &stanza, &facts, size).await?;
            }
            // Without it, now: later than the true stop, so never too early
            // for a restore plan.
            facts.stop_time =
                stop.unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            meta["pg"] = serde_json::to_value(&facts).expect("facts serialize");
            Ok(meta)
        })
    })
}

/// The `STOP TIME` of the backup history file that matches `facts`.
async fn stop_time(repo: &Repository, stanza: &str, facts: &PgFacts, size: SegmentSize) -> Result<Option<String>> {
    let start = facts.start();
    let seg = SegmentName::containing(facts.timeline, start, size);
    let name = format!("{}.{:08X}.backup", seg.format(size), start.0 % u64::from(size.bytes()));
    let key = manifest_key(stanza, facts.timeline, &name);
    let Some(m) = crate::wal::get_named::<crate::wal::WalManifest>(repo, &key).await? else {
        return Ok(None);
    };
    let Some(t) = m.backup.as_ref().and_then(|b| b.get("STOP TIME")) else { return Ok(None) };
    // "2026-11-25 10:00:00 UTC" → RFC 3339.
    let parsed = chrono::NaiveDateTime::parse_from_str(t.trim_end_matches(" UTC").trim(), "%Y-%m-%d %H:%M:%S")
        .map(|n| n.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    Ok(parsed.ok())
}
