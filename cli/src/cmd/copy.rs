use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use cairn_engine::copy::{Copier, CopyOptions, CopyProgress, CopyReport};

use crate::common::{human_bytes, open_other, Global, Ticker};
use crate::exit;

/// Copy snapshots, and with --wal archived WAL, into another repository.
///
/// Copies what the target lacks: the selected snapshots, the packs they
/// need and, with --wal, WAL manifests with their packs. Into a target
/// made with `cairn init --copy-from` this repository, packs move byte for
/// byte, checked against their names; into any other, every blob is
/// decrypted and sealed again (much slower; new snapshot ids). A second run copies
/// nothing; a killed run is completed by running it again. The target's
/// credentials come from a `[repos.NAME]` table of --config or from
/// --to-config, never from the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The target: a `[repos.NAME]` table of --config, or a location whose
    /// key --to-config gives.
    #[arg(long, value_name = "NAME|REPO")]
    to: Option<String>,
    /// A config file for the target (`repo`, `key_file` or `password_file`,
    /// `cache_dir`).
    #[arg(long, value_name = "FILE")]
    to_config: Option<std::path::PathBuf>,
    /// Only snapshots of this source (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Also copy archived WAL (manifests, stanza records and their packs).
    #[arg(long)]
    wal: bool,
    /// With --wal: only this stanza [default: every stanza].
    #[arg(long, requires = "wal")]
    stanza: Option<String>,
    /// With --wal: WAL only, no snapshots.
    #[arg(long, requires = "wal", conflicts_with_all = ["sources", "snapshots"])]
    wal_only: bool,
    /// Packs transferred at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    transfers: u16,
    /// Say what would be copied (objects and bytes), copy nothing.
    #[arg(long)]
    dry_run: bool,
    /// Snapshots to copy (`latest` or id prefixes) [default: all].
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let src = g.open().await?;
    let (dst, dst_cache) = open_other(g, a.to.as_deref(), a.to_config.as_deref(), "copy target").await?;
    let opts = CopyOptions {
        sources: a.sources,
        snapshots: a.snapshots,
        with_snapshots: !a.wal_only,
        wal: a.wal,
        stanza: a.stanza.clone(),
        transfers: usize::from(a.transfers),
        cache_dir: g.cache_dir(),
        target_cache_dir: dst_cache,
        lock_timeout: g.lock_timeout(),
    };
    // What `wal push` recorded this copy lacks (`[stanzas.NAME] copies`),
    // listed before the plan so that the copy holds all of it.
    let copy_name = a.to.as_deref().filter(|n| g.config_file.as_ref().is_some_and(|c| c.repos.contains_key(*n)));
    let behind = match copy_name {
        Some(name) if a.wal && !a.dry_run => {
            cairn_engine::wal::copies::markers(&src, Some(name), a.stanza.as_deref()).await?
        }
        _ => Vec::new(),
    };
    let primary = src.clone();
    let copier = Copier::open(src, dst, opts, !a.dry_run).await?;
    let plan = copier.plan().await?;
    if a.dry_run {
        print(g, &CopyReport::of_plan(&plan), plan.manifest_bytes());
        return Ok(exit::OK);
    }
    let total = plan.pack_bytes();
    let manifest_bytes = plan.manifest_bytes();
    let progress = Arc::new(CopyProgress::default());
    let p = progress.clone();
    let ticker = Ticker::start(g.show_progress(), Some(total), "copy", move || p.bytes.load(Ordering::Relaxed));
    let report = copier.execute(plan, &progress).await;
    if let Some(t) = ticker {
        t.finish();
    }
    let report = report?;
    if !behind.is_empty() {
        let keys: Vec<String> = behind.into_iter().map(|m| m.0).collect();
        cairn_engine::wal::copies::clear(&primary, &keys).await?;
        g.info(format!("{} file(s) `wal push` could not store in this copy are there now", keys.len()));
    }
    crate::metrics::record(
        "",
        crate::metrics::Sample {
            read_bytes: report.pack_bytes + manifest_bytes,
            added_bytes: report.pack_bytes + manifest_bytes,
            objects: report.packs + report.snapshots + report.wal_manifests,
            ..Default::default()
        },
    );
    print(g, &report, manifest_bytes);
    Ok(exit::OK)
}

fn print(g: &Global, r: &CopyReport, manifest_bytes: u64) {
    if g.json {
        let mut v = serde_json::to_value(r).expect("serializable");
        v["manifest_bytes"] = manifest_bytes.into();
        super::print_json(&v);
        return;
    }
    let verb = if r.dry_run { "would copy" } else { "copied" };
    println!(
        "{verb} {} snapshot(s) ({} already there), {} pack(s) ({}), {} index segment(s), {} WAL manifest(s) ({} already \
         there), {} stanza record(s)",
        r.snapshots,
        r.snapshots_present,
        r.packs,
        human_bytes(r.pack_bytes),
        r.index_segments,
        r.wal_manifests,
        r.wal_present,
        r.stanzas
    );
    if r.resealed {
        g.info(format!(
            "not copy-compatible: {} of snapshot content {} decrypted and sealed again",
            human_bytes(r.reseal_bytes),
            if r.dry_run { "would be" } else { "was" }
        ));
    }
    if !r.dry_run && r.packs > 0 && r.duration_s > 0.0 {
        g.info(format!("{:.1} s, {}/s", r.duration_s, human_bytes((r.pack_bytes as f64 / r.duration_s) as u64)));
    }
}
