//! `cairn drill` and `cairn drills`: restore drills of configured sources
//! and their records.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_engine::drill::{
    self, DrillRecord, FilesDrill, Measured, PgDrill, PgTools, RedisDrill, RunAs, Scratch, Timeline,
};
use cairn_engine::pg::pitr::{self, Target};
use cairn_engine::{LocalIndex, Repository, Snapshot, SnapshotId};
use chrono::{DateTime, Utc};

use crate::common::Global;
use crate::config::{ConfigFile, Source, SourceKind};
use crate::exit;

/// Prove that configured sources can be restored, and time it.
///
/// For each named `[sources.NAME]` of the --config file (or every one, with
/// --all) the newest backup (or the last before --target-time) is restored
/// into a private scratch directory and proven usable:
///   pg-base  the base backup and the WAL up to the target are restored, a
///            temporary PostgreSQL (unprivileged, no TCP: its socket is in
///            the scratch directory; archive_mode=off) replays it until
///            recovery ends, then `pg_amcheck --all` and the source's
///            `drill_sql` assertions run;
///   redis    the RDB is restored and loaded by a temporary redis-server,
///            whose per-database key counts must match the snapshot's;
///   tar, dir, stream  the snapshot is restored (every BLAKE3 checked) and
///            the source's `verify_command` runs on it.
/// Each phase is timed. The measured RTO (restore, WAL staging, start and
/// replay; not the checks) is compared with the source's `rto`, the
/// recovered point's age with its `rpo`. A sealed record of every drill is
/// stored in the repository (`cairn drills`; `cairn status` compares the
/// last one with the RTO).
///
/// The scratch directory and the temporary servers are removed and stopped
/// on every way out: success, failure, Ctrl-C and SIGTERM.
///
/// Exit 0 when every drill succeeded within its objectives, 1 when one
/// failed, 11 when all restores worked but an objective was missed, 130 or
/// 143 when interrupted by SIGINT or SIGTERM.
///
/// Examples:
///   cairn --config /etc/cairn/cairn.toml drill --all
///   cairn --config /etc/cairn/cairn.toml drill pg-main --target-time '2026-12-01 10:00:00+00'
///   cairn --config /etc/cairn/cairn.toml --json drill redis | jq .rto_s
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Sources to drill (`[sources.NAME]` of the config file).
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    /// Every source of the config file that has a `kind`.
    #[arg(long)]
    all: bool,
    /// Restore to this point instead of the newest: PostgreSQL replays to
    /// it; other sources use their last snapshot at or before it.
    #[arg(long, value_name = "TIME")]
    target_time: Option<String>,
    /// Leave the scratch directory in place for inspection (servers are
    /// still stopped).
    #[arg(long)]
    keep_scratch: bool,
    /// Give up on a restore whose server has not finished recovery or
    /// loading after this long.
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// List the restore drills recorded in the repository.
///
/// Oldest first: when, which source, whether it succeeded, the measured
/// RTO and RPO against the objectives, and why a failed one failed.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this source's drills.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
}

/// How a record's failure begins when the restore worked but an objective
/// did not hold.
const OBJECTIVE_MISSED: &str = "objective missed";

/// Where the drill's programs and scratch space are.
struct Setup {
    scratch_parent: PathBuf,
    run_as: Option<RunAs>,
    pg: PgTools,
    redis_server: PathBuf,
}

fn setup(cfg: &ConfigFile) -> Result<Setup> {
    let d = &cfg.drill;
    let run_as = if !RunAs::running_as_root() {
        None
    } else {
        let name = d.user.clone().unwrap_or_else(|| "postgres".into());
        Some(RunAs::lookup(&name).with_context(|| {
            "cairn runs as root, and the temporary servers need an unprivileged user: set `user` in [drill]"
        })?)
    };
    let bin_dir = d.pg_bin_dir.clone().unwrap_or_else(|| {
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
        if debian.join("postgres").exists() {
            return debian;
        }
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).find(|d| d.join("postgres").exists()))
            .unwrap_or(debian)
    });
    Ok(Setup {
        scratch_parent: d.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
        run_as,
        pg: PgTools { bin_dir },
        redis_server: d.redis_server.clone().unwrap_or_else(|| "redis-server".into()),
    })
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let cfg = g.config_file()?;
    let sources = cfg.select(&a.names, a.all)?;
    let setup = setup(cfg)?;
    let target_us = a.target_time.as_deref().map(pitr::parse_time).transpose()?;
    let repo = g.open().await?;
    let index = LocalIndex::for_reading(&repo, &g.cache_dir(), g.lock_timeout()).await?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut worst = exit::OK;
    let mut out = Vec::new();
    for src in &sources {
        g.info(format!("{}: drill ({})", src.name, src.kind.as_str()));
        let one = one(g, cfg, &repo, &index, &setup, src, target_us, &a);
        // Dropping the drill stops its servers and removes its scratch
        // directory (their guards' Drop) before cairn exits.
        let record = tokio::select! {
            r = one => r?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("error: {}: drill interrupted (SIGINT); servers stopped, scratch removed", src.name);
                return Ok(130);
            }
            _ = sigterm.recv() => {
                eprintln!("error: {}: drill interrupted (SIGTERM); servers stopped, scratch removed", src.name);
                return Ok(143);
            }
        };
        let code = if record.ok {
            exit::OK
        } else if record.failure.as_deref().is_some_and(|f| f.starts_with(OBJECTIVE_MISSED)) {
            exit::OBJECTIVE_MISSED
        } else {
            exit::FAILURE
        };
        if code == exit::FAILURE || (code == exit::OBJECTIVE_MISSED && worst == exit::OK) {
            worst = code;
        }
        crate::metrics::record(
            &src.name,
            crate::metrics::Sample {
                exit_code: Some(code),
                duration: Some(Duration::from_secs_f64(record.total_s)),
                ..Default::default()
            },
        );
        report(g, &record);
        out.push(record);
    }
    if g.json {
        super::print_json(&out);
    }
    Ok(worst)
}

/// The newest snapshot of `source` (at or before `before`, Unix µs).
async fn newest(repo: &Repository, source: &str, before: Option<i64>) -> Result<(SnapshotId, Snapshot)> {
    let mut all: Vec<(SnapshotId, Snapshot, DateTime<Utc>)> = Snapshot::list(repo)
        .await?
        .into_iter()
        .filter(|(_, s)| s.source.name == source)
        .filter_map(|(id, s)| {
            let t = DateTime::parse_from_rfc3339(&s.time).ok()?.with_timezone(&Utc);
            before.is_none_or(|b| t.timestamp_micros() <= b).then_some((id, s, t))
        })
        .collect();
    all.sort_by_key(|(_, _, t)| *t);
    let Some((id, s, _)) = all.pop() else {
        bail!(cairn_engine::Error::NotFound {
            what: format!(
                "a snapshot of source {source:?}{}",
                if before.is_some() { " at or before --target-time" } else { "" }
            )
        });
    };
    Ok((id, s))
}

#[allow(clippy::too_many_arguments)]
async fn one(
    g: &Global,
    cfg: &ConfigFile,
    repo: &Repository,
    index: &LocalIndex,
    setup: &Setup,
    src: &Source,
    target_us: Option<i64>,
    a: &Args,
) -> Result<DrillRecord> {
    let started = Utc::now();
    let mut tl = Timeline::default();
    let mut m = Measured::default();
    let result = async {
        let mut scratch = Scratch::create(&setup.scratch_parent, &src.name, setup.run_as.as_ref())?;
        if a.keep_scratch {
            scratch.keep();
            g.info(format!("{}: scratch directory {}", src.name, scratch.path().display()));
        }
        match src.kind {
            SourceKind::PgBase => {
                let d = PgDrill {
                    stanza: cfg.stanza_of(&src.cfg).context("a pg-base source needs a stanza")?,
                    target: target_us.map_or(Target::Latest, Target::Time),
                    sql: src.cfg.drill_sql.clone(),
                    tools: setup.pg.clone(),
                    run_as: setup.run_as.clone(),
                    timeout: a.timeout,
                    cache_dir: Some(g.cache_dir()),
                };
                drill::pg(repo, index, &d, &scratch, &mut tl, &mut m).await?;
            }
            SourceKind::Redis => {
                let d = RedisDrill {
                    snapshot: newest(repo, &src.name, target_us).await?,
                    redis_server: setup.redis_server.clone(),
                    run_as: setup.run_as.clone(),
                    timeout: a.timeout,
                    drop_key: std::env::var("CAIRN_TEST_DRILL_REDIS_DROP_KEY").ok(),
                };
                drill::redis(repo, index, &d, &scratch, &mut tl, &mut m).await?;
            }
            SourceKind::Stream | SourceKind::Tar | SourceKind::Dir => {
                let d = FilesDrill {
                    snapshot: newest(repo, &src.name, target_us).await?,
                    verify_command: src.cfg.verify_command.clone(),
                };
                drill::files(repo, index, &d, &scratch, &mut tl, &mut m).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    let rto_s = tl.rto_s();
    let rpo_s = m.recovered_to.map(|t| (started - t).num_milliseconds().max(0) as f64 / 1000.0);
    let rto_objective_s = src.cfg.rto.map(|d| d.as_secs_f64());
    let rpo_objective_s = src.cfg.rpo.map(|d| d.as_secs_f64());
    let failure = match &result {
        Err(e) => Some(format!("{e:#}")),
        Ok(()) => {
            let mut missed = Vec::new();
            if let Some(o) = rto_objective_s.filter(|o| rto_s > *o) {
                missed.push(format!("measured RTO {rto_s:.1} s exceeds the rto of {o} s"));
            }
            if let (Some(o), Some(r)) = (rpo_objective_s, rpo_s) {
                if r > o {
                    missed.push(format!("the recovered point is {r:.1} s old, more than the rpo of {o} s"));
                }
            }
            (!missed.is_empty()).then(|| format!("{OBJECTIVE_MISSED}: {}", missed.join("; ")))
        }
    };
    let record = DrillRecord {
        version: 1,
        source: src.name.clone(),
        kind: src.kind.as_str().into(),
        time: started.to_rfc3339(),
        host: cairn_engine::hostname(),
        snapshot: m.snapshot,
        target: a.target_time.clone().unwrap_or_else(|| "latest".into()),
        ok: failure.is_none(),
        failure,
        rto_s,
        total_s: tl.total_s(),
        phases: tl.phases,
        recovered_to: m.recovered_to.map(|t| t.to_rfc3339()),
        rpo_s,
        rto_objective_s,
        rpo_objective_s,
        details: m.details,
    };
    drill::store(repo, &record).await.context("storing the drill record")?;
    Ok(record)
}

fn report(g: &Global, r: &DrillRecord) {
    if g.json {
        return;
    }
    if let Some(f) = &r.failure {
        eprintln!("error: {}: {f}", r.source);
    }
    if g.quiet {
        return;
    }
    let phases: Vec<String> = r.phases.iter().map(|p| format!("{} {:.1} s", p.name, p.seconds)).collect();
    println!(
        "{}: {} — RTO {:.1} s{}, RPO {}{} [{}]",
        r.source,
        if r.ok { "ok" } else { "FAILED" },
        r.rto_s,
        r.rto_objective_s.map(|o| format!(" (objective {o} s)")).unwrap_or_default(),
        r.rpo_s.map_or("unknown".into(), |s| format!("{s:.1} s")),
        r.rpo_objective_s.map(|o| format!(" (objective {o} s)")).unwrap_or_default(),
        phases.join(", ")
    );
    for d in &r.details {
        println!("  {d}");
    }
}

pub async fn list(g: &Global, a: ListArgs) -> Result<i32> {
    let repo = g.open().await?;
    let records: Vec<DrillRecord> =
        drill::records(&repo).await?.into_iter().filter(|r| a.source.as_ref().is_none_or(|s| &r.source == s)).collect();
    if g.json {
        super::print_json(&records);
        return Ok(exit::OK);
    }
    for r in &records {
        println!(
            "{}  {:<16} {:<8} {:<6} RTO {:>8.1} s  RPO {:>10}  {}",
            r.time,
            r.source,
            r.kind,
            if r.ok { "ok" } else { "FAILED" },
            r.rto_s,
            r.rpo_s.map_or("-".into(), |s| format!("{s:.1} s")),
            r.failure.as_deref().map(|f| f.lines().next().unwrap_or_default()).unwrap_or_default()
        );
    }
    if records.is_empty() {
        g.info("no drills recorded");
    }
    Ok(exit::OK)
}
