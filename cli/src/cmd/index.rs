use anyhow::Result;
use cairn_engine::rebuild_from_packs;

use crate::common::Global;
use crate::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Discard the local index and rebuild it from pack trailers.
    ///
    /// The index is only a cache; this reads the trailer of every pack (two
    /// small range reads each), so it works even if `index/` segments were lost.
    Rebuild,
}

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    match c {
        Command::Rebuild => {
            let repo = g.open().await?;
            let s = rebuild_from_packs(&repo, &g.cache_dir(), g.lock_timeout()).await?;
            if g.json {
                super::print_json(&s);
            } else {
                println!("rebuilt the local index: {} pack(s), {} blob(s)", s.packs, s.blobs);
                for u in &s.unreadable {
                    println!("error: {u}");
                }
            }
            Ok(if s.unreadable.is_empty() { exit::OK } else { exit::CORRUPT })
        }
    }
}
