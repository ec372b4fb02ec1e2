use anyhow::{bail, Result};
use cairn_engine::pg::replication::ConnInfo;

use crate::common::Global;
use crate::exit;

/// Confirm that the server's WAL archiving reaches the repository.
///
/// Connects to the server (a plain SQL session: database `postgres`
/// unless the connection string names one; the password from PGPASSWORD
/// or PGPASSFILE, never the command line), refuses a standby or
/// archive_mode = off, writes a restore point and forces a WAL switch
/// (pg_switch_wal(); both need superuser or a grant), then waits up to
/// --timeout for the segment it completed to appear in the stanza — the
/// round trip PostgreSQL → archive_command → `cairn wal push` →
/// repository that restores depend on. While it waits it reads
/// pg_stat_archiver: when archive_command fails, it stops at once and
/// names the file and time of the failure, with a hint; when the server
/// reports the segment archived but the stanza lacks it, archive_command
/// delivers somewhere else. The segment's own failure message is in the
/// server's log.
///
/// Exit status: 0 when the segment arrived; 12 when archiving does not
/// work (archive_command failing, archived elsewhere, not arrived within
/// --timeout, archive_mode off, a standby); 1 when the server cannot be
/// reached or refuses the statements.
///
/// Examples:
///   cairn --config /etc/cairn/main.toml pg check --connect "host=/var/run/postgresql user=postgres"
///   PGPASSFILE=/etc/cairn/pgpass cairn pg check --stanza main --timeout 2min --json \
///       --connect "postgres://postgres@db1/postgres?sslmode=require"
///   # after changing archive_command:
///   cairn pg check --stanza main --connect "host=/tmp port=5433 user=postgres" && echo archiving works
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The cluster's WAL archive [env: CAIRN_STANZA, or `stanza` in --config].
    #[arg(long, env = "CAIRN_STANZA")]
    stanza: Option<String>,
    /// Connection string (libpq key=value or postgres:// URL), without a password.
    #[arg(long, value_name = "CONNINFO")]
    connect: String,
    /// How long to wait for the switched segment (seconds, or 90s, 2min…).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = super::pg_watch::parse_wait)]
    timeout: std::time::Duration,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let stanza = g.stanza(a.stanza.as_ref())?;
    if ConnInfo::parse_with_env(&a.connect, &|_| None)?.password.is_some() {
        bail!("--connect must not carry a password: use PGPASSWORD or PGPASSFILE");
    }
    let ci = ConnInfo::parse_sql(&a.connect)?;
    let repo = g.open().await?;
    let notify = super::pg_watch::notifier(g);
    let report = cairn_engine::pg::check(&repo, &stanza, &ci, a.timeout, notify).await?;
    if g.json {
        super::print_json(&report);
    } else if !g.quiet {
        println!(
            "archiving works: {} switched WAL at {}; segment {} reached stanza {:?} in {:.1} s",
            report.server, report.switch_lsn, report.segment, report.stanza, report.waited_s
        );
    }
    Ok(exit::OK)
}
