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
/// What snapshots need is kept between prunes in the cache (live-blob
/// counts per snapshot), so a prune reads only the snapshots added or
/// forgotten since the last one. Deleting the cache costs one prune that
/// reads everything; --full does that on purpose and checks the counts.
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
    /// Repack packs more than this share unused (their live blobs are
    /// copied into new packs, then the old packs are deleted).
    #[arg(long, value_name = "PERCENT", default_value = "10%")]
    max_unused: String,
    /// Repack at most this many bytes of packs per run (e.g. 2G, 500M).
    #[arg(long, value_name = "SIZE")]
    max_repack_size: Option<String>,
    /// Mark from every snapshot's trees instead of the counts kept in the
    /// cache, and check those counts (a disagreement is reported and the
    /// counts are rebuilt by the next prune).
    #[arg(long)]
    full: bool,
}

fn percent(s: &str) -> Result<f64> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| anyhow::anyhow!("--max-unused {s:?}: use a percentage like 10%"))?;
    anyhow::ensure!((0.0..=100.0).contains(&n), "--max-unused must be between 0% and 100%");
    Ok(n / 100.0)
}

fn size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("--max-repack-size {s:?}: use bytes or K, M, G, T"))?;
    Ok(n.saturating_mul(mult))
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
    let repack_bytes = a.max_repack_size.as_deref().map(size).transpose()?;
    let opts = PruneOptions::default()
        .with_dry_run(a.dry_run)
        .with_sweep_wait(Duration::from_secs(wait))
        .with_repack(percent(&a.max_unused)?, repack_bytes)
        .with_full(a.full);
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
        println!("marked from {} ({} snapshot(s) read)", r.marking, r.snapshots_read);
        if let Some(n) = r.counts_mismatch {
            match n {
                0 => println!("the kept counts agree with the full mark"),
                n => {
                    println!("the kept counts disagreed with the full mark on {n} blob(s): dropped, rebuilt next time")
                }
            }
        }
        let verb = if r.dry_run { "would condemn" } else { "condemned" };
        println!(
            "{verb} {} pack(s), {} ({} delete request(s)); {} unused pack(s) too recent to condemn",
            r.condemned_packs,
            human_bytes(r.condemned_bytes),
            r.delete_requests,
            r.too_recent_packs
        );
        let rp = &r.repack;
        if rp.packs > 0 || rp.packs_left > 0 {
            println!(
                "{} {} pack(s) over the unused limit: {} read, {} live copied into {} new pack(s){}",
                if r.dry_run { "would repack" } else { "repacked" },
                rp.packs,
                human_bytes(rp.bytes_read),
                human_bytes(rp.live_bytes),
                rp.packs_written,
                if rp.packs_left > 0 {
                    format!("; {} left for later (--max-repack-size)", rp.packs_left)
                } else {
                    String::new()
                }
            );
        }
        println!("about {} store request(s) beyond listing and marking", r.requests);
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
