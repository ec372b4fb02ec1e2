use anyhow::Result;
use cairn_engine::LocalIndex;
use cairn_engine::Snapshot;
use cairn_engine::{diff, Layout};

use crate::common::{escape_name, human_bytes, Global};
use crate::exit;

/// Show what changed between two tar or directory snapshots.
///
/// Lines start with `+` (added), `-` (removed), `M` (content changed, with
/// the bytes that are in no chunk of the first snapshot) or `m` (only mode,
/// mtime, owner changed). Content is compared by chunk ids, so nothing but
/// the file lists and chunk lists is read, except for small tar members
/// that share chunks with their neighbours.
///
/// Examples:
///   cairn diff 3fa2 latest --source models
///   cairn diff 3fa2 9b01 --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The older snapshot (id prefix or `latest`).
    a: String,
    /// The newer snapshot (id prefix or `latest`).
    b: String,
    /// With `latest`: snapshots of this source.
    #[arg(long)]
    source: Option<String>,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open().await?;
    let (ia, sa) = Snapshot::resolve(&repo, &a.a, a.source.as_deref()).await?;
    let (ib, sb) = Snapshot::resolve(&repo, &a.b, a.source.as_deref()).await?;
    let index = LocalIndex::for_reading(&repo, &g.cache_dir(), g.lock_timeout()).await?;
    let la = Layout::load(&repo, &index, sa).await?;
    let lb = Layout::load(&repo, &index, sb).await?;
    let report = diff(&repo, &index, &la, &lb).await?;
    if g.json {
        super::print_json(&serde_json::json!({ "a": ia.to_hex(), "b": ib.to_hex(), "diff": report }));
        return Ok(exit::OK);
    }
    for c in &report.changes {
        match c.change {
            "added" => println!("+ {} ({})", escape_name(&c.path), human_bytes(c.size_b.unwrap_or(0))),
            "removed" => println!("- {} ({})", escape_name(&c.path), human_bytes(c.size_a.unwrap_or(0))),
            "changed" => println!(
                "M {} ({} -> {}, {} new)",
                escape_name(&c.path),
                human_bytes(c.size_a.unwrap_or(0)),
                human_bytes(c.size_b.unwrap_or(0)),
                human_bytes(c.new_bytes)
            ),
            _ => println!("m {}", escape_name(&c.path)),
        }
    }
    if !g.quiet {
        eprintln!(
            "{} added, {} removed, {} changed, {} metadata only; {} of new content",
            report.added,
            report.removed,
            report.changed,
            report.metadata,
            human_bytes(report.new_bytes)
        );
    }
    Ok(exit::OK)
}
