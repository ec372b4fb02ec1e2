use std::time::Duration;

use anyhow::Result;
use cairn_engine::gc::{self, PruneOptions};

use crate::common::{human_bytes, Global};
use crate::exit;

/// Delete packs that no snapshot and no WAL manifest needs.
///
/// Safe while backups and `wal push` keep running, here and on other
/// hosts: packs are first condemned under a new garbage-collection
/// generation and deleted only once every backup that was running then
/// has finished, or was paused past its lease (it then fails instead of
/// committing). A prune that must wait longer than --sweep-wait leaves the
/// deletion to the next run; an interrupted prune is finished by the next.
/// Packs younger than an hour (store time) are left alone.
///
/// --dry-run reports what would be condemned, without writing anything.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Report packs and bytes that would be condemned; change nothing.
    #[arg(long = "dry-run", id = "prune_dry_run")]
    dry_run: bool,
    /// Seconds to wait for backups that began before this prune's
    /// condemnation to finish before leaving the deletion to a later prune
    /// [default: the repository's lease TTL plus 30 s, so that leases of
    /// killed writers expire within the wait].
    #[arg(long, value_name = "SECONDS")]
    sweep_wait: Option<u64>,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let r = execute(g, a).await?;
    if g.json {
        super::print_json(&r);
    }
    print(g, &r);
    Ok(code(&r))
}

/// The exit code for a prune's report.
pub fn code(r: &gc::PruneReport) -> i32 {
    if r.problems.is_empty() {
        exit::OK
    } else {
        exit::CORRUPT
    }
}

/// Runs a prune and returns its report, printing nothing.
pub async fn execute(g: &Global, a: Args) -> Result<gc::PruneReport> {
    let repo = g.open().await?;
    let wait = a.sweep_wait.unwrap_or(repo.config().gc().lease_ttl_s + 30);
    let opts = PruneOptions::default().with_dry_run(a.dry_run).with_sweep_wait(Duration::from_secs(wait));
    let show = g.show_progress();
    let progress = move |m: &str| {
        if show {
            eprintln!("prune: {m}");
        }
    };
    Ok(gc::prune(&repo, &g.cache_dir(), g.lock_timeout(), &opts, &progress).await?)
}

/// The human summary (nothing with --json or --quiet).
pub fn print(g: &Global, r: &gc::PruneReport) {
    if !g.json && !g.quiet {
        println!(
            "{} snapshot(s), {} WAL file(s); {} pack(s), {} in the store; {} needed",
            r.snapshots,
            r.wal_files,
            r.packs,
            human_bytes(r.pack_bytes),
            r.live_packs
        );
        let verb = if r.dry_run { "would condemn" } else { "condemned" };
        println!(
            "{verb} {} pack(s), {} ({} delete request(s)); {} unused pack(s) too recent to condemn",
            r.condemned_packs,
            human_bytes(r.condemned_bytes),
            r.delete_requests,
            r.too_recent_packs
        );
        for s in &r.swept {
            println!(
                "generation {}: deleted {} pack(s), {}; spared {}; rewrote {} index segment(s){}",
                s.generation,
                s.deleted_packs,
                human_bytes(s.deleted_bytes),
                s.spared_packs,
                s.rewritten_segments,
                if s.broken_leases.is_empty() {
                    String::new()
                } else {
                    format!("; broke {} expired lease(s)", s.broken_leases.len())
                }
            );
        }
        for d in &r.deferred {
            println!("deferred: {d}");
        }
        for w in &r.withdrawn_snapshots {
            println!("withdrew snapshot {w}: it referenced deleted packs and its writer had been fenced out");
        }
        for p in &r.problems {
            println!("problem: {p}");
        }
    }
}
