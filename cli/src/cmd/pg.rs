//! `cairn pg restore`: point-in-time restore of a PostgreSQL cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_engine::pg::pitr::{self, Action, Target};
use cairn_engine::pg::replication::{DEFAULT_READ_TIMEOUT, DEFAULT_START_TIMEOUT};
use cairn_engine::LocalIndex;
use clap::Subcommand;

use crate::common::{human_bytes, Global};
use crate::exit;

/// PostgreSQL base backups and point-in-time restore.
///
/// Base backups: `cairn pg backup --connect CONNINFO`, or `cairn backup --kind pg-base
/// --stanza S -- pg_basebackup -D - -Ft -X none --checkpoint=fast`, with `cairn wal push`
/// as the cluster's archive_command; `cairn pg check` confirms that archiving works.
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum Command {
    Backup(BackupArgs),
    Check(super::pg_check::Args),
    Restore(RestoreArgs),
    Expire(super::pg_expire::Args),
    Receive(super::pg_receive::Args),
}

/// Take a base backup over the replication protocol.
///
/// Connects like pg_basebackup (libpq conninfo or a postgres:// URL;
/// trust, md5 or SCRAM-SHA-256; TLS per sslmode; the password from
/// PGPASSWORD or PGPASSFILE, never the command line), runs BASE_BACKUP
/// with a manifest, and streams every archive (base.tar, one per
/// tablespace) straight into the repository, cut at file boundaries. Every
/// file is checked against the manifest before the snapshot is written,
/// and the snapshot waits (--wal-timeout) for the backup's WAL to reach
/// the stanza's archive (archive_command = 'cairn wal push %p'). A second
/// backup of a mostly unchanged cluster stores only what changed.
///
/// While the server runs its checkpoint, and while the WAL is awaited,
/// a line on stderr every 10 s says so. The WAL wait reads the server's
/// pg_stat_archiver (a plain SQL session with the same connection string,
/// database `postgres` unless it names one): when archive_command fails
/// after the backup began, the backup fails at once (exit 12, no
/// snapshot) naming the failed file and time, instead of waiting out
/// --wal-timeout. `cairn pg check` tests archiving on its own.
///
/// Examples:
///   cairn pg backup --stanza main --connect "host=/var/run/postgresql user=postgres"
///   PGPASSFILE=/etc/cairn/pgpass cairn pg backup --stanza main --connect postgres://backup@db1/postgres?sslmode=require --fast
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BackupArgs {
    /// The cluster's WAL archive [env: CAIRN_STANZA, or `stanza` in --config].
    #[arg(long, env = "CAIRN_STANZA")]
    stanza: Option<String>,
    /// Connection string (libpq key=value or postgres:// URL), without a password.
    #[arg(long, value_name = "CONNINFO")]
    connect: String,
    /// Backup label.
    #[arg(long, default_value = "cairn base backup")]
    label: String,
    /// Ask for an immediate checkpoint instead of a spread one.
    #[arg(long)]
    fast: bool,
    /// Seconds to wait for the backup's WAL to be archived (a failing
    /// archive_command ends the wait at once).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    wal_timeout: u64,
    /// Limit the server's send rate (kB/s).
    #[arg(long, value_name = "KB_PER_S")]
    max_rate: Option<u32>,
    /// Seconds the server may stay silent while connecting and while the
    /// backup streams.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_READ_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Seconds to wait for the backup to start: the server's checkpoint (a
    /// spread one, without --fast, takes up to checkpoint_timeout ×
    /// checkpoint_completion_target).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_START_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    start_timeout: u64,
    /// zstd level for new data.
    #[arg(long, default_value_t = cairn_engine::DEFAULT_COMPRESSION_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression: i32,
    /// Groups snapshots of the same cluster [default: the stanza].
    #[arg(long)]
    source: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
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
    /// Restore tablespace OID into DIR instead of the directory the server
    /// had (repeatable); tablespace_map is rewritten to match. Every
    /// tablespace's directory must be absolute, and is printed in the plan.
    #[arg(long, value_name = "OID=DIR", value_parser = parse_tablespace_map)]
    tablespace_map: Vec<(String, PathBuf)>,
    /// Extract into tablespace directories that already hold files.
    #[arg(long)]
    allow_nonempty_tablespaces: bool,
    /// Print the plan and stop.
    #[arg(long)]
    dry_run: bool,
}

fn parse_tablespace_map(s: &str) -> std::result::Result<(String, PathBuf), String> {
    let (oid, dir) = s.split_once('=').ok_or("expected OID=DIR")?;
    if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{oid:?} is not a tablespace OID"));
    }
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        return Err(format!("{}: give an absolute directory", dir.display()));
    }
    Ok((oid.to_string(), dir))
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ActionArg {
    Promote,
    Pause,
    Shutdown,
}

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    match c {
        Command::Backup(a) => backup(g, a).await,
        Command::Check(a) => super::pg_check::run(g, a).await,
        Command::Restore(a) => restore(g, a).await,
        Command::Expire(a) => super::pg_expire::run(g, a).await,
        Command::Receive(a) => super::pg_receive::run(g, a).await,
    }
}

async fn backup(g: &Global, a: BackupArgs) -> Result<i32> {
    let taken = take(g, a).await?;
    report(g, &taken);
    if taken.wal_incomplete() {
        eprintln!(
            "error: the base backup is stored (snapshot {}) but its WAL is not all archived yet: check \
             archive_command and `cairn wal show`; restores will refuse it until the WAL is there",
            taken.id.short()
        );
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}

impl BackupArgs {
    /// The backup `cairn run` takes of a configured pg-base source.
    pub fn from_source(src: &crate::config::Source, stanza: String) -> BackupArgs {
        let c = &src.cfg;
        BackupArgs {
            stanza: Some(stanza),
            connect: c.connect.clone().unwrap_or_default(),
            label: format!("cairn run {}", src.name),
            fast: c.fast,
            wal_timeout: c.wal_timeout.unwrap_or(300),
            max_rate: None,
            timeout: DEFAULT_READ_TIMEOUT.as_secs(),
            start_timeout: DEFAULT_START_TIMEOUT.as_secs(),
            compression: c.compression.unwrap_or(cairn_engine::DEFAULT_COMPRESSION_LEVEL),
            source: Some(src.name.clone()),
            tags: c.tags.clone(),
        }
    }
}

/// Takes a base backup over the replication protocol; records it for metrics.
pub async fn take(g: &Global, a: BackupArgs) -> Result<super::backup::Taken> {
    use cairn_engine::pg::replication::{BaseBackupOptions, ConnInfo};
    use cairn_engine::{Backup, BackupOptions, Progress};
    let stanza = g.stanza(a.stanza.as_ref())?;
    // A password in the connection string would sit in argv, visible to
    // every user of the machine: refused, as every other secret is.
    if ConnInfo::parse_with_env(&a.connect, &|_| None)?.password.is_some() {
        bail!("--connect must not carry a password: use PGPASSWORD or PGPASSFILE");
    }
    let conn = ConnInfo::parse(&a.connect)?;
    let bb = BaseBackupOptions::default()
        .with_label(a.label.clone())
        .with_fast_checkpoint(a.fast)
        .with_max_rate_kb(a.max_rate)
        .with_timeouts(Duration::from_secs(a.timeout), Duration::from_secs(a.start_timeout))
        // The gate below waits for the WAL itself, watching the archiver;
        // the server's own wait would be silent about a failing one.
        .with_wait_for_wal_archive(false);
    let mut opts = BackupOptions::stream(&stanza);
    opts.source.kind = cairn_engine::PG_BASE_KIND.into();
    opts.source.name = a.source.clone().unwrap_or_else(|| stanza.clone());
    opts.tags = a.tags.clone();
    opts.compression_level = a.compression;
    let repo = g.open().await?;
    let index = std::sync::Arc::new(LocalIndex::for_writing(&repo, &g.cache_dir(), g.lock_timeout()).await?);
    let progress = std::sync::Arc::new(Progress::default());
    let p = progress.clone();
    let ticker = crate::common::Ticker::start(g.show_progress(), None, "pg backup", move || {
        p.bytes_read.load(std::sync::atomic::Ordering::Relaxed)
    });
    let watch = super::pg_watch::backup_watch(g, Some(&a.connect)).await?;
    let gate = cairn_engine::pg::wal_gate(repo.clone(), stanza.clone(), Duration::from_secs(a.wal_timeout), watch);
    let notice = super::pg_watch::checkpoint_notice(
        g,
        progress.clone(),
        (!a.fast).then_some("--fast (`fast = true` for a source of `cairn run`)"),
    );
    let feed = cairn_engine::PullFeed::new(conn, bb, &stanza);
    let result = Backup::new(repo, index.clone(), opts).progress(progress).gate(gate).feed(Box::new(feed)).await;
    notice.abort();
    LocalIndex::release_shared(index).await;
    if let Some(t) = ticker {
        t.finish();
    }
    let (id, snap) = result?;
    let taken = super::backup::Taken { id, snap };
    taken.record();
    Ok(taken)
}

fn report(g: &Global, super::backup::Taken { id, snap }: &super::backup::Taken) {
    if g.json {
        super::print_json(
            &serde_json::json!({ "snapshot": id.to_hex(), "kind": snap.source.kind, "stats": snap.stats, "metadata": snap.metadata }),
        );
    } else if !g.quiet {
        let s = &snap.stats;
        println!(
            "base backup {} saved: {} read, {} new, {} uploaded, {:.1} s ({}/s)",
            id.short(),
            human_bytes(s.bytes_read),
            human_bytes(s.new_bytes),
            human_bytes(s.uploaded_bytes),
            s.duration_s,
            human_bytes((s.bytes_read as f64 / s.duration_s.max(1e-9)) as u64)
        );
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
    // wal fetch refuses a password (Argon2 on every call), so a
    // restore_command carrying one would fail at the first segment, after
    // the whole base backup was written: refused here instead.
    if g.key_file.is_none() && g.password_file.is_some() {
        bail!(
            "the restore_command this writes runs `cairn wal fetch`, which needs a key file (--key-file, \
             CAIRN_KEY_FILE or key_file in --config), not a password; create one with `cairn key add \
             --new-key-file FILE`, or give --restore-command"
        );
    }
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
    let stanza = g.stanza(a.stanza.as_ref())?;
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
    let repo = g.open_for_restore().await?;
    let (mut plan, snap) =
        pitr::plan(&repo, &stanza, target, a.target_timeline, action, &restore_command, Some(&g.cache_dir())).await?;
    plan.map_tablespaces(&a.tablespace_map)?;
    if a.dry_run {
        let sources = crate::fallback::plan_sources(&repo, &stanza, &plan).await;
        if g.json {
            let mut v = serde_json::to_value(&plan)?;
            if let (Some(o), Some(s)) = (v.as_object_mut(), sources) {
                o.insert("sources".into(), s.to_json());
            }
            super::print_json(&v);
        } else {
            if let Some(s) = &sources {
                s.print();
            }
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
            for t in &plan.tablespaces {
                let mapped = if t.restore_to.as_os_str() == t.server_location.as_str() { "" } else { " (mapped)" };
                println!(
                    "tablespace    {} -> {}{mapped} (server: {})",
                    t.oid,
                    t.restore_to.display(),
                    crate::common::escape_name(&t.server_location)
                );
            }
            for (k, v) in &plan.settings {
                println!("setting       {k} = {:?}", v);
            }
        }
        return Ok(exit::OK);
    }
    let index = LocalIndex::for_reading(&repo, &g.cache_dir(), g.lock_timeout()).await?;
    let started = std::time::Instant::now();
    let opts = pitr::RestoreOptions { allow_nonempty_tablespaces: a.allow_nonempty_tablespaces };
    let report = pitr::restore(&repo, &index, plan, snap, &a.to, &opts).await?;
    if g.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("repositories".into(), crate::fallback::json(&repo));
        }
        super::print_json(&v);
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
        crate::fallback::summary(g, &repo);
    }
    Ok(exit::OK)
}
