//! What `pg backup`, `backup --kind pg-base` and `run` say while a base
//! backup waits on the server, and the archiver watch they share with
//! `pg check`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::pg::replication::ConnInfo;
use cairn_engine::pg::{GateWatch, Notify};
use cairn_engine::Progress;

use crate::common::Global;

/// Prints a wait's news on stderr, as `cairn: …`, unless --quiet or --json.
pub fn notifier(g: &Global) -> Notify {
    let silent = g.quiet || g.json;
    Arc::new(move |msg: &str| {
        if !silent {
            eprintln!("cairn: {msg}");
        }
    })
}

/// The WAL wait of a base backup of the server at `connect` (a libpq
/// connection string, no password): says every ten seconds what it waits
/// for, and fails the backup as soon as `pg_stat_archiver` shows
/// `archive_command` failing. Read before the backup starts, so that only
/// failures from then on count. Without `connect`, it only talks.
pub async fn backup_watch(g: &Global, connect: Option<&str>) -> anyhow::Result<GateWatch> {
    let watch = GateWatch::new(notifier(g));
    Ok(match connect {
        Some(c) => watch.watching(&ConnInfo::parse_sql(c)?).await,
        None => watch,
    })
}

/// Until the first byte arrives, says every ten seconds that the backup
/// waits for the server's checkpoint, and what shortens it (`how_fast`,
/// or nothing when the checkpoint is already immediate).
pub fn checkpoint_notice(
    g: &Global,
    progress: Arc<Progress>,
    how_fast: Option<&'static str>,
) -> tokio::task::JoinHandle<()> {
    let notify = notifier(g);
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(cairn_engine::pg::archiver::NOTIFY_EVERY).await;
            if progress.bytes_read.load(Ordering::Relaxed) > 0 {
                return;
            }
            let waited = started.elapsed().as_secs();
            notify(&match how_fast {
                Some(fast) => format!(
                    "waiting for the server's checkpoint before the backup starts ({waited} s): a spread checkpoint \
                     takes up to checkpoint_timeout × checkpoint_completion_target; {fast} asks for an immediate one"
                ),
                None => format!("waiting for the server's immediate checkpoint before the backup starts ({waited} s)"),
            });
        }
    })
}

/// `--timeout`-style values: seconds, or a duration such as `90s`, `2min`.
pub fn parse_wait(s: &str) -> Result<Duration, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let d = cairn_engine::pg::expire::parse_duration(s).map_err(|e| e.to_string())?;
    d.to_std().map_err(|_| format!("{s:?}: give a positive duration"))
}
