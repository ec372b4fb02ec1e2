//! One module per command; each only turns arguments into engine calls.

mod backup;
mod check;
mod config;
mod copy;
mod diff;
mod drill;
mod forget;
mod index;
mod init;
mod inspect;
mod key;
mod ls;
mod pg;
mod pg_check;
mod pg_expire;
mod pg_receive;
mod pg_watch;
mod pin;
mod prune;
mod redis;
mod restore;
mod run;
mod snapshots;
mod stats;
mod status;
pub mod wal;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::common::Global;

const AFTER_HELP: &str = "\
Environment:
  CAIRN_CONFIG, CAIRN_REPO, CAIRN_PASSWORD_FILE, CAIRN_KEY_FILE, CAIRN_CACHE_DIR,
  CAIRN_STANZA, RUST_LOG
  S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL

Exit codes:
  0  success
  1  failure not listed below (storage unreachable, I/O error, bad option value)
  2  usage error
  3  wrong password or key, or no key given
  4  repository, snapshot or object not found; `pg restore`: the archive
     cannot reach the target (no backup before it, missing WAL)
  5  corrupt data found (restore refused, or `check` found problems)
  6  the local index is locked by another cairn process (see --lock-timeout)
  7  the input did not end cleanly (producer exited non-zero, read error);
     no snapshot was written
  8  refused: conflicts with what the repository holds (`wal push` of different
     content under an archived name, or of WAL from another cluster)
  9  fenced out: garbage collection broke this writer's lease (it was paused
     past it); nothing it wrote was acknowledged, run it again
  10 refused to restore: the snapshot would write outside the target
  11 `status`: an objective (RPO, RTO, the last drill) does not hold, or the
     last `check` found problems; `drill`: every restore worked but an
     objective was missed
  12 PostgreSQL's WAL archiving does not work (`pg check`, and base backups
     that fail at once while archive_command fails)
  `wal fetch` is PostgreSQL's restore_command and uses its own codes:
  0 delivered, 1 not in the archive, 126 any other failure";

/// cairn: streaming, deduplicating, encrypted backups for databases and ML artifacts.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, after_long_help = AFTER_HELP, after_help = "Run `cairn help <command>` or `cairn --help` for exit codes and environment.")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    Run(run::Args),
    Status(status::Args),
    Drill(drill::Args),
    Drills(drill::ListArgs),
    Backup(backup::Args),
    Restore(restore::Args),
    Ls(ls::Args),
    Diff(diff::Args),
    /// List snapshots.
    Snapshots(snapshots::Args),
    Check(check::Args),
    Copy(copy::Args),
    Forget(forget::Args),
    Prune(prune::Args),
    Pin(pin::Args),
    /// Remove a snapshot's pin.
    Unpin(pin::Args),
    /// Manage the local index cache.
    #[command(subcommand)]
    Index(index::Command),
    /// Manage key slots (passwords and key files that unlock the repository).
    #[command(subcommand)]
    Key(key::Command),
    /// Show what the repository stores and what deduplication saved.
    Stats(stats::Args),
    /// Decode files cairn ingests (WAL, backup_manifest, RDB, tar) without a repository.
    #[command(subcommand)]
    Inspect(inspect::Command),
    /// Validate the --config file.
    #[command(subcommand)]
    Config(config::Command),
    #[command(subcommand)]
    Wal(wal::Command),
    #[command(subcommand)]
    Pg(pg::Command),
    /// Redis: restore RDB snapshots.
    #[command(subcommand)]
    Redis(redis::Command),
}

/// The job name metrics carry, for the commands that are jobs.
fn job_name(c: &Command) -> Option<&'static str> {
    Some(match c {
        Command::Run(_) => "run",
        Command::Backup(_) => "backup",
        Command::Check(_) => "check",
        Command::Copy(_) => "copy",
        Command::Drill(_) => "drill",
        Command::Forget(_) => "forget",
        Command::Prune(_) => "prune",
        Command::Wal(wal::Command::Push(_)) => "wal_push",
        Command::Pg(pg::Command::Backup(_)) => "pg_backup",
        Command::Pg(pg::Command::Expire(_)) => "pg_expire",
        Command::Redis(redis::Command::Backup(_)) => "redis_backup",
        _ => return None,
    })
}

pub async fn run(mut cli: Cli) -> Result<i32> {
    cli.global.apply_config()?;
    let target = match (&cli.global.metrics_file, cli.global.config_file.as_ref().and_then(|c| c.metrics_dir.clone())) {
        (Some(f), _) => Some(crate::metrics::Target::File(f.clone())),
        (None, Some(d)) => Some(crate::metrics::Target::Dir(d)),
        (None, None) => None,
    };
    let job = job_name(&cli.command);
    let started = std::time::SystemTime::now();
    let result = dispatch(cli).await;
    if let (Some(target), Some(job)) = (target, job) {
        let code = match &result {
            Ok(c) => *c,
            Err(e) => crate::exit::code_for(e),
        };
        if let Err(e) = crate::metrics::write(&target, job, code, started, std::time::SystemTime::now()) {
            // The job's own outcome stands; a metrics failure is reported
            // and turns success into failure, so an unwritable textfile
            // directory does not go unnoticed.
            eprintln!("error: {e:#}");
            return result.and(Ok(crate::exit::FAILURE));
        }
    }
    result
}

async fn dispatch(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init::run(g, a).await,
        Command::Run(a) => run::run(g, a).await,
        Command::Status(a) => status::run(g, a).await,
        Command::Drill(a) => drill::run(g, a).await,
        Command::Drills(a) => drill::list(g, a).await,
        Command::Backup(a) => backup::run(g, a).await,
        Command::Restore(a) => restore::run(g, a).await,
        Command::Ls(a) => ls::run(g, a).await,
        Command::Diff(a) => diff::run(g, a).await,
        Command::Snapshots(a) => snapshots::run(g, a).await,
        Command::Check(a) => check::run(g, a).await,
        Command::Copy(a) => copy::run(g, a).await,
        Command::Forget(a) => forget::run(g, a).await,
        Command::Prune(a) => prune::run(g, a).await,
        Command::Pin(a) => pin::pin(g, a).await,
        Command::Unpin(a) => pin::unpin(g, a).await,
        Command::Index(c) => index::run(g, c).await,
        Command::Key(c) => key::run(g, c).await,
        Command::Stats(a) => stats::run(g, a).await,
        Command::Inspect(c) => inspect::run(g, c).await,
        Command::Config(c) => config::run(g, c).await,
        Command::Wal(c) => wal::run(g, c).await,
        Command::Redis(c) => redis::run(g, c).await,
        Command::Pg(c) => pg::run(g, c).await,
    }
}

/// Prints a value as one line of JSON on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(v).expect("serializable"));
}

#[cfg(test)]
mod tests {
    use clap::{Arg, CommandFactory};

    /// Every name by which an argument can be given: its id (what the
    /// derived structs read back), long and short names with their
    /// aliases, and its environment variable.
    fn names(a: &Arg) -> Vec<String> {
        let mut n = vec![format!("id {}", a.get_id())];
        n.extend(a.get_long().into_iter().chain(a.get_all_aliases().into_iter().flatten()).map(|l| format!("--{l}")));
        n.extend(
            a.get_short().into_iter().chain(a.get_all_short_aliases().into_iter().flatten()).map(|s| format!("-{s}")),
        );
        n.extend(a.get_env().map(|e| format!("env {}", e.to_string_lossy())));
        n
    }

    /// Regression test for `redis backup --password-file` (the Redis
    /// server's password), which shared its name with the global
    /// `--password-file` (the repository's, also `CAIRN_PASSWORD_FILE`): the
    /// repository password was sent to Redis. No argument of any subcommand
    /// may be reachable by a name a global argument uses.
    #[test]
    fn no_subcommand_argument_shadows_a_global_one() {
        let root = super::Cli::command();
        let globals: Vec<(String, String)> = root
            .get_arguments()
            .filter(|a| a.is_global_set())
            .flat_map(|a| names(a).into_iter().map(|n| (n, a.get_id().to_string())))
            .collect();
        assert!(globals.iter().any(|(n, _)| n == "env CAIRN_PASSWORD_FILE"), "{globals:?}");
        let mut clashes = Vec::new();
        let mut stack: Vec<(String, &clap::Command)> = vec![("cairn".into(), &root)];
        let mut visited = 0;
        while let Some((path, cmd)) = stack.pop() {
            visited += 1;
            for sub in cmd.get_subcommands() {
                stack.push((format!("{path} {}", sub.get_name()), sub));
            }
            if path == "cairn" {
                continue;
            }
            for a in cmd.get_arguments().filter(|a| !a.is_global_set()) {
                for n in names(a) {
                    if let Some((_, g)) = globals.iter().find(|(gn, _)| *gn == n) {
                        clashes.push(format!("`{path}`: {n} of argument {} is also global {g}'s", a.get_id()));
                    }
                }
            }
        }
        assert!(visited > 20, "only {visited} commands walked");
        assert!(clashes.is_empty(), "arguments shadowed by global ones:\n{}", clashes.join("\n"));
    }
}
