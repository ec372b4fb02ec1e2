use anyhow::Result;
use cairn_engine::Layout;
use cairn_engine::LocalIndex;
use cairn_engine::Snapshot;

use crate::common::{escape_name, human_bytes, Global};
use crate::exit;

/// List the files of a tar or directory snapshot.
///
/// Tar snapshots list their members from the member index stored with
/// the snapshot; nothing else of the archive is read. Directory snapshots
/// list their entries.
///
/// Examples:
///   cairn ls latest --source models
///   cairn ls 3fa2 weights/ --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Snapshot id prefix (4+ hex digits) or `latest`.
    snapshot: String,
    /// Only this path and what is under it.
    path: Option<String>,
    /// With `latest`: the newest snapshot of this source.
    #[arg(long)]
    source: Option<String>,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open().await?;
    let (id, snap) = Snapshot::resolve(&repo, &a.snapshot, a.source.as_deref()).await?;
    let index = LocalIndex::for_reading(&repo, &g.cache_dir(), g.lock_timeout()).await?;
    let layout = Layout::load(&repo, &index, snap).await?;
    let files = layout.list(a.path.as_deref());
    if a.path.is_some() && files.is_empty() {
        anyhow::bail!(cairn_engine::Error::NotFound {
            what: format!("{:?} in snapshot {}", a.path.unwrap_or_default(), id.short())
        });
    }
    if g.json {
        super::print_json(&serde_json::json!({ "snapshot": id.to_hex(), "files": files }));
        return Ok(exit::OK);
    }
    for f in files {
        let time = f
            .mtime
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        let link = f.target.as_deref().map(|t| format!(" -> {}", escape_name(t))).unwrap_or_default();
        let path = if f.path.is_empty() { ".".into() } else { escape_name(&f.path) };
        println!("{:<8} {:04o} {:>10} {time:16} {path}{link}", f.kind, f.mode, human_bytes(f.size));
    }
    Ok(exit::OK)
}
