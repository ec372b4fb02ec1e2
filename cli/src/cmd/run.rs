use std::time::Instant;

use anyhow::Result;

use crate::common::{human_bytes, Global};
use crate::config::SourceKind;
use crate::exit;

/// Back up configured sources.
///
/// Takes a backup of each named `[sources.NAME]` of the --config file (or
/// of every source with a `kind`, with --all), exactly as configured:
/// pg-base pulls a base backup over the replication protocol (`connect`)
/// and waits for its WAL; redis pulls an RDB as a replica (`url`); stream
/// and tar read a producer `command` or a `path`; dir snapshots `path`.
/// Sources run one after another; a failing one does not stop the rest.
/// The exit code is the first failing source's (see `cairn --help`), 0
/// when all succeeded. With `metrics_dir` in the config (or
/// --metrics-file), each source's outcome is written as Prometheus metrics.
///
/// Examples:
///   cairn --config /etc/cairn/cairn.toml run pg-main
///   cairn --config /etc/cairn/cairn.toml run --all --json
///   # crontab: 0 2 * * *  cairn --config /etc/cairn/cairn.toml --quiet run pg-main
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Sources to back up (`[sources.NAME]` of the config file).
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    /// Every source of the config file that has a `kind`.
    #[arg(long)]
    all: bool,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let cfg = g.config_file()?;
    let sources = cfg.select(&a.names, a.all)?;
    let mut first_failure = None;
    let mut results = Vec::new();
    for src in &sources {
        g.info(format!("{}: backing up ({})", src.name, src.kind.as_str()));
        let t0 = Instant::now();
        let taken = match src.kind {
            SourceKind::PgBase => {
                let stanza = cfg.stanza_of(&src.cfg).expect("validated: a pg-base source has a stanza");
                super::pg::take(g, super::pg::BackupArgs::from_source(src, stanza)).await
            }
            SourceKind::Redis => super::redis::take(g, super::redis::BackupArgs::from_source(src)).await,
            SourceKind::Stream | SourceKind::Tar | SourceKind::Dir => {
                super::backup::take(g, super::backup::Args::from_source(src)).await
            }
        };
        let elapsed = t0.elapsed();
        let (code, error) = match &taken {
            Ok(t) if t.wal_incomplete() => (
                exit::FAILURE,
                Some(format!(
                    "the base backup is stored (snapshot {}) but its WAL is not all archived yet: check \
                     archive_command and `cairn wal show`",
                    t.id.short()
                )),
            ),
            Ok(_) => (exit::OK, None),
            Err(e) => (exit::code_for(e), Some(format!("{e:#}"))),
        };
        crate::metrics::record(
            &src.name,
            crate::metrics::Sample { exit_code: Some(code), duration: Some(elapsed), ..Default::default() },
        );
        if code != exit::OK {
            first_failure.get_or_insert(code);
        }
        if g.json {
            results.push(serde_json::json!({
                "source": src.name,
                "kind": src.kind,
                "ok": code == exit::OK,
                "exit_code": code,
                "duration_s": elapsed.as_secs_f64(),
                "snapshot": taken.as_ref().ok().map(|t| t.id.to_hex()),
                "stats": taken.as_ref().ok().map(|t| &t.snap.stats),
                "error": error,
            }));
            continue;
        }
        match (&taken, &error) {
            (_, Some(e)) => eprintln!("error: {}: {e}", src.name),
            (Ok(t), None) if !g.quiet => {
                let s = &t.snap.stats;
                println!(
                    "{}: snapshot {} saved: {} read, {} uploaded, {:.1} s",
                    src.name,
                    t.id.short(),
                    human_bytes(s.bytes_read),
                    human_bytes(s.uploaded_bytes),
                    elapsed.as_secs_f64()
                );
            }
            _ => {}
        }
    }
    if g.json {
        super::print_json(&results);
    }
    Ok(first_failure.unwrap_or(exit::OK))
}
