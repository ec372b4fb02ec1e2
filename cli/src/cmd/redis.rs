//! `cairn redis …`: Redis-specific commands.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::common::Global;

#[derive(Debug, Subcommand)]
pub enum Command {
    Restore(RestoreArgs),
}

/// Restore an RDB snapshot (taken with `cairn backup --kind redis-rdb`) to a
/// file or stdout; every blob and the whole file are verified on the way.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot id prefix, or `latest` (the newest redis-rdb snapshot).
    snapshot: String,
    /// With `latest`: the newest snapshot of this source.
    #[arg(long)]
    source: Option<String>,
    /// Output file (e.g. a server's dump.rdb), or `-` for stdout.
    #[arg(long, default_value = "-", value_name = "FILE")]
    to: PathBuf,
}

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    match c {
        Command::Restore(a) => {
            let args = super::restore::Args::whole(a.snapshot, a.source, a.to);
            super::restore::run_kind(g, args, Some(cairn_engine::redis::KIND)).await
        }
    }
}
