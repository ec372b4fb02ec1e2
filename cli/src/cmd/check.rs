use anyhow::{bail, Result};
use cairn_engine::{check, ReadData};

use crate::common::Global;
use crate::exit;
use crate::metrics::Sample;

/// Verify the repository.
///
/// Without options, checks structure: every snapshot and index segment opens
/// and hashes to its name, every pack they name exists with the right size,
/// every blob a snapshot needs is indexed. --read-data also downloads every
/// pack and verifies every blob. Problems are listed with the object's name;
/// the exit code is 5 when any is found.
///
/// --read-data-subset N% reads N% of the packs, those checked least
/// recently first: the repository remembers which packs checks have read
/// (`check/coverage`), so any host continues the rotation and N daily runs
/// at 1/N read every pack once ("round 3: 40/120 packs read, 80 to go").
/// `cairn status` shows the last check and the share of packs read
/// recently. Every check records itself there, so it needs write access
/// to the repository.
///
/// Examples:
///   cairn check --read-data-subset 10%
///   # crontab: 0 4 * * *  cairn --quiet check --read-data-subset 4%
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Read and verify all pack data.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read and verify this share of the packs, least recently checked
    /// first, e.g. `10%`.
    #[arg(long, value_name = "N%")]
    read_data_subset: Option<String>,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let read = match (&a.read_data, &a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => {
            let n: f64 = s
                .trim_end_matches('%')
                .parse()
                .map_err(|_| anyhow::anyhow!("--read-data-subset takes a percentage like 10%"))?;
            if !(0.0..=100.0).contains(&n) {
                bail!("--read-data-subset must be between 0% and 100%");
            }
            ReadData::Percent(n)
        }
        _ => ReadData::None,
    };
    let repo = g.open().await?;
    let r = check(&repo, read).await?;
    crate::metrics::record("", Sample { read_bytes: r.bytes_read, objects: r.packs_read, ..Default::default() });
    if g.json {
        super::print_json(&r);
    } else {
        for p in &r.problems {
            println!("error: {}: {}", p.object, p.message);
        }
        if !r.unreferenced_packs.is_empty() {
            g.info(format!(
                "{} unreferenced pack(s) left by interrupted backups (harmless)",
                r.unreferenced_packs.len()
            ));
        }
        g.info(format!(
            "checked {} snapshot(s), {} index segment(s), {} pack(s); read {} pack(s), {} blob(s): {}",
            r.snapshots,
            r.index_segments,
            r.packs,
            r.packs_read,
            r.blobs_read,
            if r.problems.is_empty() { "no problems".to_string() } else { format!("{} problem(s)", r.problems.len()) }
        ));
        if read != ReadData::None {
            let c = &r.coverage;
            g.info(format!("round {}: {}/{} packs read, {} to go", c.round, c.read_in_round, c.packs_total, c.to_go()));
        }
    }
    Ok(if r.problems.is_empty() { exit::OK } else { exit::CORRUPT })
}
