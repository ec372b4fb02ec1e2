use anyhow::Result;
use cairn_engine::Snapshot;

use crate::common::{human_bytes, Global};
use crate::exit;

/// List snapshots, oldest first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only snapshots of this source.
    #[arg(long)]
    source: Option<String>,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open().await?;
    let all: Vec<_> = Snapshot::list(&repo)
        .await?
        .into_iter()
        .filter(|(_, s)| a.source.as_deref().is_none_or(|n| s.source.name == n))
        .collect();
    if g.json {
        let v: Vec<_> = all
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(), "time": s.time, "host": s.host, "source": s.source,
                    "tags": s.tags, "size": s.entries.iter().map(|e| e.size).sum::<u64>(),
                    "entries": s.entries.iter().map(|e| serde_json::json!({"name": e.name, "size": e.size, "blake3": e.blake3})).collect::<Vec<_>>(),
                    "stats": s.stats, "metadata": s.metadata, "copied_from": s.copied_from,
                })
            })
            .collect();
        super::print_json(&v);
        return Ok(exit::OK);
    }
    println!("{:<10} {:<32} {:<12} {:<20} {:>10}  tags", "id", "time", "kind", "source", "size");
    for (id, s) in &all {
        let size: u64 = s.entries.iter().map(|e| e.size).sum();
        println!(
            "{:<10} {:<32} {:<12} {:<20} {:>10}  {}",
            id.short(),
            s.time,
            s.source.kind,
            s.source.name,
            human_bytes(size),
            s.tags.join(",")
        );
    }
    g.info(format!("{} snapshot(s)", all.len()));
    Ok(exit::OK)
}
