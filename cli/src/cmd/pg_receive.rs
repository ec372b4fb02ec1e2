//! `cairn pg receive`: stream WAL into the repository over the
//! replication protocol (the engine's `pg::receive`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use cairn_engine::pg::receive::{receive, ReceiveOptions};
use cairn_engine::pg::replication::ConnInfo;

use crate::common::Global;
use crate::exit;

/// Stream WAL into the repository continuously (RPO zero).
///
/// A long-running receiver, like pg_receivewal, that writes into the
/// stanza's archive instead of a directory: local or S3, compressed and
/// encrypted. It checks the server's system identifier against the
/// stanza (another cluster is refused, exit 8), streams from where the
/// repository's WAL ends (a segment received in part goes on where its
/// durable bytes end), and follows timeline switches, storing each
/// .history file. What has arrived is made durable at least every
/// --flush-interval (and whenever the server asks) as the segment's
/// streamed part, uploading only the new bytes; a complete segment is
/// stored exactly as `wal push` stores it, so an archive_command pushing
/// the same segment later finds it already archived.
///
/// The flush position reported to the server is what is durable in the
/// repository. With --synchronous every batch of WAL is made durable as
/// soon as no more is waiting, so the receiver can be named in
/// synchronous_standby_names (as its application_name: the conninfo's,
/// or `cairn`) and a commit returns only once its WAL is in the
/// repository; with --synchronous the write position is too, so that
/// synchronous_commit = remote_write never releases a commit whose WAL is
/// only in the receiver's memory (remote_apply is not supported: the
/// receiver applies nothing). Into a local repository a synchronous flush
/// is one encrypted record appended to the segment's journal and one
/// fdatasync, as pg_receivewal does; the streamed part is still written
/// every --flush-interval. Use a slot (--slot, --create-slot) so the server keeps WAL
/// the receiver has not confirmed. Lost connections are retried with
/// backoff; SIGTERM or SIGINT makes what arrived durable, then exits 0
/// with a report.
///
/// `wal fetch` serves a segment received in part, padded with zeros, and
/// `pg restore --latest` and time targets use it; `wal show` shows where
/// streamed WAL ends.
///
/// Examples:
///   cairn pg receive --stanza main --connect "host=/var/run/postgresql user=replicator" \
///       --slot cairn --create-slot --synchronous
///   # postgresql.conf: synchronous_standby_names = 'cairn'
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The cluster's WAL archive [env: CAIRN_STANZA, or `stanza` in --config].
    #[arg(long, env = "CAIRN_STANZA")]
    stanza: Option<String>,
    /// Connection string (libpq key=value or postgres:// URL), without a password.
    #[arg(long, value_name = "CONNINFO")]
    connect: String,
    /// Physical replication slot to stream from.
    #[arg(long, value_name = "NAME")]
    slot: Option<String>,
    /// Create the slot first (an existing one is kept).
    #[arg(long, requires = "slot")]
    create_slot: bool,
    /// Make WAL durable as soon as it arrives, to act as a synchronous standby.
    #[arg(long)]
    synchronous: bool,
    /// The longest received WAL waits before it is made durable (500ms, 1s, 10s…).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_interval)]
    flush_interval: Duration,
    /// The longest between two standby status updates. A receiver that has
    /// made durable all the server has, with nothing new for this long, also
    /// writes its streamed part again so that `cairn status` shows a small
    /// receive lag for an idle server.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_interval)]
    status_interval: Duration,
    /// Seconds the server may stay silent before the connection is retried.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = match s.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().map_err(|_| format!("{s:?}: not a duration"))?),
        None => super::pg_watch::parse_wait(s)?,
    };
    if d.is_zero() {
        return Err(format!("{s:?}: give a positive duration"));
    }
    Ok(d)
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let stanza = g.stanza(a.stanza.as_ref())?;
    if ConnInfo::parse_with_env(&a.connect, &|_| None)?.password.is_some() {
        bail!("--connect must not carry a password: use PGPASSWORD or PGPASSFILE");
    }
    let ci = ConnInfo::parse(&a.connect)?;
    let repo = g.open().await?;
    let mut opts = ReceiveOptions::default()
        .with_slot(a.slot, a.create_slot)
        .synchronous(a.synchronous)
        .flush_interval(a.flush_interval);
    opts.timeout = Duration::from_secs(a.timeout);
    opts.status_interval = a.status_interval;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    g.info(format_args!("receiving WAL from {} into stanza {stanza:?}", ci.server_name()));
    let r = receive(&repo, &stanza, &ci, &opts, &stop).await;
    watcher.abort();
    let report = r?;
    if g.json {
        super::print_json(&report);
    } else if !g.quiet {
        println!(
            "stopped: {} received, {} stored; {} segments, {} flushes, {} journal appends; durable up to {} on timeline {}",
            crate::common::human_bytes(report.received_bytes),
            crate::common::human_bytes(report.stored_bytes),
            report.segments,
            report.flushes,
            report.journal_appends,
            report.durable_lsn,
            report.timeline
        );
    }
    Ok(exit::OK)
}
