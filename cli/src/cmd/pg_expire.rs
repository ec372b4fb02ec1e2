use anyhow::{bail, Result};
use cairn_engine::pg::expire::{expire, parse_duration, ExpireOptions};

use crate::common::Global;
use crate::exit;

/// Expire base backups and WAL of a stanza, keeping a point-in-time window.
///
/// Base backups are kept by count (--retain-full N) or by age
/// (--retain-full-for 30d); the newest is always kept, and so is the
/// newest backup that ended before now minus --pitr-window, so that every
/// time inside the window stays restorable. WAL is kept from that
/// backup's start on, plus each kept backup's own WAL from its start to
/// its stop (so it stays consistent), on every timeline; history files
/// stay. The window may be shorter than the backup retention.
///
/// Backup manifests are removed first, then WAL manifests; `cairn prune`
/// reclaims the space. A restore to a time before what is left is refused
/// naming the retention. --dry-run prints the plan: backups kept (and the
/// rule keeping each) and removed, the WAL removed per timeline, and the
/// earliest restorable time before and after.
///
/// Example (a daily job):
///   cairn pg expire --stanza main --retain-full 4 --pitr-window 7d && cairn prune
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The cluster's WAL archive [env: CAIRN_STANZA, or `stanza` in --config].
    #[arg(long, env = "CAIRN_STANZA")]
    stanza: Option<String>,
    /// Keep the newest N base backups.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    retain_full: Option<u64>,
    /// Keep base backups that ended within this long (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    retain_full_for: Option<String>,
    /// Every time within this long of now stays restorable (e.g. 7d, 36h).
    #[arg(long, value_name = "DURATION")]
    pitr_window: String,
    /// Print the plan; remove nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let stanza = g.stanza(a.stanza.as_ref())?;
    if a.retain_full.is_none() && a.retain_full_for.is_none() {
        bail!("give --retain-full N or --retain-full-for DURATION (the newest backup is always kept)");
    }
    let mut opts = ExpireOptions::window(parse_duration(&a.pitr_window)?);
    opts.retain_full = a.retain_full.map(|n| n as usize);
    opts.retain_full_for = a.retain_full_for.as_deref().map(parse_duration).transpose()?;
    opts.dry_run = a.dry_run;
    let repo = g.open().await?;
    opts.cache_dir = Some(g.cache_dir());
    let r = expire(&repo, &stanza, &opts).await?;
    if g.json {
        super::print_json(&r);
    } else if !g.quiet {
        for b in &r.kept {
            println!("keep    {}  {}  stop {}  ({})", &b.snapshot[..8], b.start_lsn, b.stop_time, b.reasons.join(", "));
        }
        let verb = if r.dry_run { "would remove" } else { "remove" };
        for b in &r.removed {
            println!("{verb:<7} {}  {}  stop {}", &b.snapshot[..8], b.start_lsn, b.stop_time);
        }
        for w in &r.wal_removed {
            println!("{verb} WAL timeline {}: {} .. {} ({} files)", w.timeline, w.first, w.last, w.files);
        }
        println!(
            "WAL kept from {}; restorable from {} (was {})",
            r.wal_kept_from,
            r.restorable_from_after.as_deref().unwrap_or("-"),
            r.restorable_from_before.as_deref().unwrap_or("-")
        );
    }
    Ok(exit::OK)
}
