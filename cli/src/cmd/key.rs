use std::path::PathBuf;

use anyhow::Result;
use cairn_engine::Secret;

use crate::common::Global;
use crate::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add a key slot for a new password file or key file.
    Add {
        /// Password for the new slot, read from this file.
        #[arg(long, value_name = "FILE", conflicts_with = "new_key_file", required_unless_present = "new_key_file")]
        new_password_file: Option<PathBuf>,
        /// Key file for the new slot; created (mode 0600) if it does not exist.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
    /// List key slots.
    List,
    /// Remove a key slot. The last slot cannot be removed.
    Remove {
        /// Slot id, as shown by `cairn key list`.
        id: String,
    },
}

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    let repo = g.open().await?;
    match c {
        Command::Add { new_password_file, new_key_file } => {
            let secret = match (new_password_file, new_key_file) {
                (Some(p), _) => Secret::from_password_file(&p)?,
                (None, Some(k)) if k.exists() => Secret::from_key_file(&k)?,
                (None, Some(k)) => Secret::create_key_file(&k)?,
                (None, None) => unreachable!("clap requires one"),
            };
            let id = repo.add_key(&secret).await?;
            if g.json {
                super::print_json(&serde_json::json!({ "id": id }));
            } else {
                println!("added key slot {id}");
            }
        }
        Command::List => {
            let mut rows = Vec::new();
            for (id, slot) in repo.key_slots().await? {
                let kdf = serde_json::to_value(&slot.kdf)?;
                rows.push(serde_json::json!({
                    "id": id, "kdf": kdf["algorithm"], "created": slot.created, "host": slot.host,
                }));
            }
            if g.json {
                super::print_json(&rows);
            } else {
                for r in rows {
                    println!(
                        "{}  {:<16} {}  {}",
                        r["id"].as_str().unwrap_or(""),
                        r["kdf"].as_str().unwrap_or(""),
                        r["created"].as_str().unwrap_or(""),
                        r["host"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::Remove { id } => {
            repo.remove_key(&id).await?;
            g.info(format!("removed key slot {id}"));
        }
    }
    Ok(exit::OK)
}
