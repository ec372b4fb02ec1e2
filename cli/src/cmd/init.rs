use anyhow::{bail, Result};
use cairn_engine::store::Store;
use cairn_engine::Secret;
use cairn_engine::{InitOptions, Repository};

use crate::common::{open_other, Global};
use crate::exit;

/// Create a repository.
///
/// With --key-file, a missing key file is created (mode 0600) holding 32
/// random bytes; keep a copy somewhere safe: without it (or another key slot)
/// the repository cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pack target size in MiB (packs are closed once they reach it).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=64))]
    pack_size_mib: u32,
    /// Seconds an unused pack must have existed (store time) before
    /// garbage collection may condemn it; `wal push` must finish well
    /// within it. Every client reads it from the repository.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    gc_min_age: u64,
    /// Seconds a writer's lease lasts without renewal before garbage
    /// collection may break it (the writer then fails instead of committing).
    #[arg(long, default_value_t = 600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    lease_ttl: u64,
    /// Make the repository copy-compatible with another one: same data
    /// keys and chunker (its own key slot and id), so `cairn copy` moves
    /// packs between them byte for byte. A `[repos.NAME]` table of
    /// --config, or a location whose key --copy-from-config gives.
    #[arg(long, value_name = "NAME|REPO")]
    copy_from: Option<String>,
    /// A config file for the --copy-from repository (`repo`, `key_file` or
    /// `password_file`).
    #[arg(long, value_name = "FILE")]
    copy_from_config: Option<std::path::PathBuf>,
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let secret = match (&g.key_file, &g.password_file) {
        (Some(k), _) if !k.exists() => {
            let s = Secret::create_key_file(k)?;
            g.info(format!("created key file {} (mode 0600)", k.display()));
            s
        }
        (Some(_), _) | (None, Some(_)) => g.secret()?,
        (None, None) => bail!(cairn_engine::Error::NoKey),
    };
    let location = g.location()?;
    let store = Store::open(&location, true)?;
    let mut opts = InitOptions::default().with_pack_target(a.pack_size_mib << 20);
    let gc = cairn_engine::GcParams { min_age_s: a.gc_min_age, lease_ttl_s: a.lease_ttl };
    if gc != cairn_engine::GcParams::default() {
        opts = opts.with_gc(gc);
    }
    let repo = if a.copy_from.is_some() || a.copy_from_config.is_some() {
        let (source, _) = open_other(g, a.copy_from.as_deref(), a.copy_from_config.as_deref(), "--copy-from").await?;
        let repo = Repository::init_copy_of(store, &secret, opts, &source).await?;
        g.info(format!("copy-compatible with repository {}", source.config().id));
        repo
    } else {
        Repository::init(store, &secret, opts).await?
    };
    if g.json {
        super::print_json(&serde_json::json!({
            "repository": location.to_string(), "id": repo.config().id, "copy_of": repo.config().copy_of,
        }));
    } else {
        println!("created cairn repository {} at {location}", repo.config().id);
    }
    Ok(exit::OK)
}
