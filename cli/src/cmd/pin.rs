use anyhow::Result;
use cairn_engine::{gc, Snapshot};

use crate::common::Global;
use crate::exit;

/// Pin a snapshot: `cairn forget` never removes it.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshot id or unique prefix.
    #[arg(value_name = "SNAPSHOT")]
    snapshot: String,
}

pub async fn pin(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open().await?;
    let (id, _) = Snapshot::resolve(&repo, &a.snapshot, None).await?;
    gc::pin(&repo, id).await?;
    g.info(format!("snapshot {} pinned", id.short()));
    Ok(exit::OK)
}

pub async fn unpin(g: &Global, a: Args) -> Result<i32> {
    let repo = g.open().await?;
    let (id, _) = Snapshot::resolve(&repo, &a.snapshot, None).await?;
    gc::unpin(&repo, id).await?;
    g.info(format!("snapshot {} unpinned", id.short()));
    Ok(exit::OK)
}
