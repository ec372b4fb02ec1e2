use anyhow::Result;

use crate::common::{human_bytes, Global};
use crate::exit;

/// Repository statistics.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(g: &Global, _a: Args) -> Result<i32> {
    let repo = g.open().await?;
    let s = cairn_engine::stats(&repo).await?;
    if g.json {
        super::print_json(&s);
    } else {
        println!("snapshots:       {}", s.snapshots);
        println!("logical size:    {}", human_bytes(s.logical_bytes));
        println!("packs:           {} ({})", s.packs, human_bytes(s.pack_bytes));
        println!("index segments:  {} ({})", s.index_segments, human_bytes(s.index_bytes));
        println!("manifests:       {}", human_bytes(s.snapshot_bytes));
        println!("logical/stored:  {:.2}x", s.ratio);
    }
    Ok(exit::OK)
}
