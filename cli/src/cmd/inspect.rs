use std::path::PathBuf;

use anyhow::Result;
use cairn_engine::inspect;

use crate::common::Global;
use crate::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// PostgreSQL WAL segments: LSN range, records, commits and aborts,
    /// first/last commit time, restore points, switch.
    Wal {
        /// Segment files (also `.partial`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// A PostgreSQL backup_manifest: verifies its checksum and summarises it.
    Manifest {
        /// The backup_manifest file.
        file: PathBuf,
    },
    /// A Redis RDB file: version, AUX fields, keys and expiries per
    /// database; verifies structure and the CRC-64 trailer.
    Rdb {
        /// The RDB file.
        file: PathBuf,
    },
    /// A tar stream: members with their data's byte range in the stream.
    Tar {
        /// The tar file.
        file: PathBuf,
    },
}

fn show(g: &Global, v: &serde_json::Value, human: impl Fn(&serde_json::Value) -> String) {
    if g.json {
        super::print_json(v);
    } else {
        println!("{}", human(v));
    }
}

fn s(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    match c {
        Command::Wal { files } => {
            let mut reports = Vec::new();
            for f in &files {
                reports.push(inspect::wal_segment(f)?);
            }
            let v = serde_json::Value::Array(reports);
            show(g, &v, |v| {
                let mut out = String::new();
                for r in v.as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{}: PostgreSQL {} timeline {} {}..{}, {} records, {} commits ({} .. {}), {} aborts, restore points [{}], end {}\n",
                        s(&r["file"]),
                        r["postgresql"],
                        r["timeline"],
                        s(&r["first_record"]),
                        s(&r["last_record"]),
                        r["records"],
                        r["commits"],
                        s(&r["first_commit_time"]),
                        s(&r["last_commit_time"]),
                        r["aborts"],
                        r["restore_points"].as_array().into_iter().flatten().map(|p| s(&p["name"])).collect::<Vec<_>>().join(", "),
                        s(&r["end"]),
                    ));
                }
                out.trim_end().to_string()
            });
        }
        Command::Manifest { file } => {
            let v = inspect::backup_manifest(&file)?;
            show(g, &v, |r| {
                format!(
                    "{}: backup manifest version {}, system id {}, {} files ({} bytes), WAL ranges {}, checksum valid",
                    s(&r["file"]),
                    r["version"],
                    s(&r["system_id"]),
                    r["files"],
                    r["total_bytes"],
                    r["wal_ranges"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|w| format!("tli {} {}..{}", w["timeline"], s(&w["start"]), s(&w["end"])))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        Command::Rdb { file } => {
            let v = inspect::rdb(&file)?;
            show(g, &v, |r| {
                let mut out = format!(
                    "{}: RDB version {}, redis-ver {}, {} keys, checksum {}",
                    s(&r["file"]),
                    r["rdb_version"],
                    s(&r["aux"]["redis-ver"]),
                    r["keys"],
                    s(&r["checksum"]["status"])
                );
                for (db, d) in r["databases"].as_object().into_iter().flatten() {
                    out.push_str(&format!("\n  db{db}: {} keys, {} with expiry", d["keys"], d["expires"]));
                }
                out
            });
        }
        Command::Tar { file } => {
            let v = inspect::tar(&file)?;
            show(g, &v, |r| {
                let mut out = String::new();
                for m in r["members"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{} {:>10} {:>12} +{:<10} {}\n",
                        s(&m["mode"]),
                        s(&m["kind"]),
                        m["size"],
                        m["data_start"],
                        s(&m["path"])
                    ));
                }
                out.push_str(&format!("end of archive at byte {}", s(&r["end_of_archive"])));
                out
            });
        }
    }
    Ok(exit::OK)
}
