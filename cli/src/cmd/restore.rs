use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Result};
use cairn_engine::index::LocalIndex;
use cairn_engine::restore::{restore_entry, restore_entry_to_path, RestoreProgress};
use cairn_engine::snapshot::Snapshot;

use crate::common::{human_bytes, Global, Ticker};
use crate::exit;

/// Restore a snapshot's stream to a file or stdout.
///
/// Every blob is authenticated and re-hashed against its id, and the whole
/// stream against the BLAKE3 in the manifest. A file target is written under
/// a temporary name, fsynced and renamed, so it is never left half-written.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot id prefix (4+ hex digits) or `latest`.
    snapshot: String,
    /// With `latest`: the newest snapshot of this source.
    #[arg(long)]
    source: Option<String>,
    /// Output file, or `-` for stdout.
    #[arg(long, default_value = "-", value_name = "FILE")]
    to: PathBuf,
    /// Which entry, for snapshots with several [default: the only one].
    #[arg(long)]
    entry: Option<String>,
    /// Concurrent range reads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=128))]
    reads: u16,
}

impl Args {
    /// Restore of a whole single-entry snapshot.
    pub fn whole(snapshot: String, source: Option<String>, to: PathBuf) -> Args {
        Args { snapshot, source, to, entry: None, reads: 8 }
    }
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    run_kind(g, a, None).await
}

/// Restores, accepting only snapshots of source kind `kind` when given.
pub async fn run_kind(g: &Global, a: Args, kind: Option<&str>) -> Result<i32> {
    let to_stdout = a.to.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!("refusing to write binary data to a terminal: use --to FILE or redirect stdout");
    }
    let repo = g.open().await?;
    let (id, snap) = Snapshot::resolve_kind(&repo, &a.snapshot, a.source.as_deref(), kind).await?;
    let entry = match &a.entry {
        Some(n) => snap.entries.iter().find(|e| &e.name == n),
        None if snap.entries.len() == 1 => snap.entries.first(),
        None => bail!("snapshot {} has {} entries: choose one with --entry", id.short(), snap.entries.len()),
    };
    let Some(entry) = entry else {
        bail!(cairn_engine::Error::NotFound {
            what: format!("entry {:?} in snapshot {}", a.entry.unwrap_or_default(), id.short())
        });
    };
    let index = LocalIndex::for_reading(&repo, &g.cache_dir(), g.lock_timeout()).await?;
    let progress = Arc::new(RestoreProgress::default());
    let p = progress.clone();
    let ticker =
        Ticker::start(g.show_progress(), Some(entry.size), "restore", move || p.bytes_written.load(Ordering::Relaxed));
    let result = if to_stdout {
        restore_entry(&repo, &index, entry, std::io::stdout(), a.reads.into(), progress).await.map(|(s, _)| s)
    } else {
        restore_entry_to_path(&repo, &index, entry, &a.to, a.reads.into(), progress).await
    };
    if let Some(t) = ticker {
        t.finish();
    }
    let summary = result?;
    if g.json {
        let v = serde_json::json!({ "snapshot": id.to_hex(), "entry": entry.name, "summary": summary });
        if to_stdout {
            eprintln!("{v}");
        } else {
            super::print_json(&v);
        }
    } else if !g.quiet {
        eprintln!(
            "restored {} from snapshot {} in {:.1} s ({}/s), verified BLAKE3 {}",
            human_bytes(summary.bytes_written),
            id.short(),
            summary.duration_s,
            human_bytes((summary.bytes_written as f64 / summary.duration_s.max(1e-9)) as u64),
            &entry.blake3[..16]
        );
    }
    Ok(exit::OK)
}
