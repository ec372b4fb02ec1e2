//! `cairn pg restore`: point-in-time restore of a PostgreSQL cluster.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cairn_engine::index::LocalIndex;
use cairn_engine::pg::pitr::{self, Action, Target};
use clap::Subcommand;

use crate::common::{human_bytes, Global};
use crate::exit;

/// PostgreSQL base backups and point-in-time restore.
///
/// Base backups: `cairn backup --kind pg-base --stanza S -- pg_basebackup -D - -Ft -X none
/// --checkpoint=fast` (with `cairn wal push` as the cluster's archive_command).
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum Command {
    Restore(RestoreArgs),
}

/// Restore a cluster to a point in time.
///
/// Plans first, from the repository's catalogue alone: the newest base
/// backup of the stanza that ends before the target on the target's
/// timeline path, and every WAL segment from that backup to the target.
/// A target the archive cannot reach (before the oldest backup, after the
/// newest WAL, beyond a gap) is refused with the reason, exit 4, before
/// anything is written. Then the backup is restored into PGDATA, every
/// file is checked against its backup_manifest, and recovery.signal,
/// restore_command, the target, recovery_target_timeline and
/// recovery_target_action are written. Start PostgreSQL on PGDATA to
/// replay WAL up to the target.
///
/// Examples:
///   cairn pg restore --stanza main --to /var/lib/postgresql/15/restore --target-time 2026-11-25T10:15:00Z
///   cairn pg restore --stanza main --to /srv/pg --target-name before_migration --dry-run
///   cairn pg restore --stanza main --to /srv/pg --latest
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RestoreArgs {
    /// The cluster's archive [env: CAIRN_STANZA, or `stanza` in --config].
    #[arg(long, env = "CAIRN_STANZA")]
    stanza: Option<String>,
    /// The new data directory (missing or empty).
    #[arg(long, value_name = "PGDATA")]
    to: PathBuf,
    /// Stop after the last commit at or before this time (RFC 3339).
    #[arg(long, group = "target")]
    target_time: Option<String>,
    /// Stop at this LSN (e.g. 0/3000060).
    #[arg(long, group = "target")]
    target_lsn: Option<String>,
    /// Stop after this transaction id commits.
    #[arg(long, group = "target")]
    target_xid: Option<u32>,
    /// Stop at this restore point (pg_create_restore_point).
    #[arg(long, group = "target")]
    target_name: Option<String>,
    /// Replay all archived WAL.
    #[arg(long, group = "target")]
    latest: bool,
    /// Timeline to follow [default: the newest in the archive].
    #[arg(long)]
    target_timeline: Option<u32>,
    /// What PostgreSQL does at the target.
    #[arg(long, value_enum, default_value_t = ActionArg::Promote)]
    target_action: ActionArg,
    /// restore_command to write [default: this cairn with this repository,
    /// key and stanza running `wal fetch`].
    #[arg(long, value_name = "CMD")]
    restore_command: Option<String>,
    /// Print the plan and stop.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ActionArg {
    Promote,
    Pause,
    Shutdown,
}

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    match c {
        Command::Restore(a) => restore(g, a).await,
    }
}

/// Quotes one word for sh (PostgreSQL runs restore_command through it).
fn sh_quote(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:=@%+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn absolute(p: &Path) -> Result<String> {
    Ok(std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))?.display().to_string())
}

/// `cairn … wal fetch %f %p` with this invocation's repository and key.
fn default_restore_command(g: &Global, stanza: &str) -> Result<String> {
    let exe = std::env::current_exe().context("locating the cairn binary")?;
    let mut words = vec![exe.display().to_string()];
    if let Some(c) = &g.config {
        words.extend(["--config".into(), absolute(c)?]);
    } else {
        let repo = g.repo.clone().context("no repository given")?;
        let repo = if repo.contains("://") { repo } else { absolute(Path::new(&repo))? };
        words.extend(["--repo".into(), repo]);
        if let Some(k) = &g.key_file {
            words.extend(["--key-file".into(), absolute(k)?]);
        } else if let Some(p) = &g.password_file {
            words.extend(["--password-file".into(), absolute(p)?]);
        }
    }
    words.extend(["wal".into(), "fetch".into(), "--stanza".into(), stanza.into()]);
    let mut cmd: Vec<String> = words.iter().map(|w| sh_quote(w)).collect();
    cmd.extend(["%f".into(), "%p".into()]);
    Ok(cmd.join(" "))
}

async fn restore(g: &Global, a: RestoreArgs) -> Result<i32> {
    let stanza = a
        .stanza
        .clone()
        .or_else(|| g.stanza_from_config.clone())
        .context("no stanza given: use --stanza, CAIRN_STANZA or `stanza = \"…\"` in the --config file")?;
    let target = if let Some(t) = &a.target_time {
        Target::Time(pitr::parse_time(t)?)
    } else if let Some(l) = &a.target_lsn {
        Target::Lsn(l.parse::<cairn_engine::pg::Lsn>().map_err(|e| anyhow::anyhow!("--target-lsn {l:?}: {e}"))?.0)
    } else if let Some(x) = a.target_xid {
        Target::Xid(x)
    } else if let Some(n) = &a.target_name {
        Target::Name(n.clone())
    } else if a.latest {
        Target::Latest
    } else {
        bail!("choose a target: --target-time, --target-lsn, --target-xid, --target-name or --latest");
    };
    let action = match a.target_action {
        ActionArg::Promote => Action::Promote,
        ActionArg::Pause => Action::Pause,
        ActionArg::Shutdown => Action::Shutdown,
    };
    let restore_command = match a.restore_command {
        Some(c) => c,
        None => default_restore_command(g, &stanza)?,
    };
    let repo = g.open().await?;
    let (plan, snap) = pitr::plan(&repo, &stanza, target, a.target_timeline, action, &restore_command).await?;
    if a.dry_run {
        if g.json {
            super::print_json(&plan);
        } else {
            println!(
                "base backup   {} ({}, {} .. {})",
                &plan.snapshot[..12],
                plan.backup.label,
                plan.backup.start_lsn,
                plan.backup.stop_lsn
            );
            println!("timeline      {} (path {:?})", plan.timeline, plan.path);
            println!(
                "WAL           {} .. {} ({} segments, all archived)",
                plan.first_wal, plan.last_wal, plan.wal_segments
            );
            for (k, v) in &plan.settings {
                println!("setting       {k} = '{v}'");
            }
        }
        return Ok(exit::OK);
    }
    let index = LocalIndex::for_reading(&repo, &g.cache_dir(), g.lock_timeout()).await?;
    let started = std::time::Instant::now();
    let report = pitr::restore(&repo, &index, plan, snap, &a.to).await?;
    if g.json {
        super::print_json(&report);
    } else if !g.quiet {
        eprintln!(
            "restored base backup {} into {} ({} files, {}) in {:.1} s; {} files match backup_manifest; \
             start PostgreSQL there to replay WAL {} .. {}",
            &report.plan.snapshot[..12],
            a.to.display(),
            report.files,
            human_bytes(report.bytes),
            started.elapsed().as_secs_f64(),
            report.verified,
            report.plan.first_wal,
            report.plan.last_wal
        );
    }
    Ok(exit::OK)
}
