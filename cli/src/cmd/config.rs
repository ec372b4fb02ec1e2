use anyhow::Result;

use crate::common::Global;
use crate::exit;

/// Work with the --config file.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Check(CheckArgs),
}

/// Validate the --config file without touching the repository.
///
/// Parses the file as every command would: unknown keys, wrong types,
/// durations that do not parse, a source missing what its kind reads, a
/// password in a connection string or URL are each refused with the line
/// and the key. Prints the sources and what `cairn run` would do with each.
///
/// Examples:
///   cairn --config /etc/cairn/cairn.toml config check
///   cairn --config cairn.toml --json config check
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct CheckArgs {}

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    let Command::Check(_) = c;
    let cfg = g.config_file()?;
    let rows: Vec<serde_json::Value> = cfg
        .sources
        .iter()
        .map(|(name, s)| {
            let s = s.get_ref();
            serde_json::json!({
                "source": name,
                "kind": s.kind,
                "reads": s.connect.clone()
                    .or_else(|| s.url.clone())
                    .or_else(|| s.command.as_ref().map(|c| c.join(" ")))
                    .or_else(|| s.path.as_ref().map(|p| p.display().to_string())),
                "rpo_s": s.rpo.map(|d| d.as_secs_f64()),
                "rto_s": s.rto.map(|d| d.as_secs_f64()),
                "retention": !s.keep.is_empty(),
            })
        })
        .collect();
    if g.json {
        super::print_json(&serde_json::json!({ "ok": true, "sources": rows }));
    } else if !g.quiet {
        for r in &rows {
            let kind = r["kind"].as_str().unwrap_or("retention rules only");
            println!("{:<20} {:<22} {}", r["source"].as_str().unwrap_or(""), kind, r["reads"].as_str().unwrap_or(""));
        }
        println!("config file is valid: {} source(s)", rows.len());
    }
    Ok(exit::OK)
}
