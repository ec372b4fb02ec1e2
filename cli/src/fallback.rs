//! Opening the repository for a restore path (`restore`, `wal fetch`, `pg
//! restore`, `redis restore`) together with its copies (`--fallback NAME`,
//! `fallback = […]`), and saying afterwards which copy served what.

use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_engine::store::{Location, Store};
use cairn_engine::{Repository, Secret};

use crate::common::{other_credentials, Global};

/// --repo and then each fallback, in order. The first that opens is read
/// first (a warning names it when it is not --repo); one that cannot be
/// reached or holds no repository is left out with a warning; a wrong key
/// or a copy that is not copy-compatible is an error.
pub async fn open(g: &Global) -> Result<Arc<Repository>> {
    if g.fallback.is_empty() {
        return g.open().await;
    }
    let mut candidates: Vec<(String, Secret)> = vec![(g.location()?.to_string(), g.secret()?)];
    for name in &g.fallback {
        let (location, secret, _) = other_credentials(g, Some(name), None, &format!("fallback {name}"))?;
        candidates.push((location, secret));
    }
    let mut opened = Vec::new();
    let mut skipped = Vec::new();
    for (location, secret) in &candidates {
        // A deleted directory fails already here; an S3 store on first use.
        let opened_store = Store::open(&Location::parse(location)?, false);
        let repo = match opened_store {
            Ok(store) => Repository::open(store, secret).await,
            Err(e) => Err(e),
        };
        match repo {
            Ok(r) => opened.push(r),
            Err(e) if e.is_unavailable() => {
                tracing::warn!("repository {location} is unavailable, reading from the others: {e}");
                skipped.push(format!("{location}: {e}"));
            }
            Err(e) => return Err(e).with_context(|| format!("opening {location}")),
        }
    }
    anyhow::ensure!(!opened.is_empty(), "no repository could be opened: {}", skipped.join("; "));
    let main = opened.remove(0);
    if main.store().location().to_string() != candidates[0].0 {
        tracing::warn!("restoring from {} (the primary {} is unavailable)", main.store().location(), candidates[0].0);
    }
    Ok(Arc::new(main.with_fallbacks(opened)?))
}

/// What each repository served and the bad copies found, as JSON fields
/// (`null` when the repository was not read through fallbacks).
pub fn json(repo: &Repository) -> serde_json::Value {
    match repo.store().fallback() {
        Some(f) => serde_json::json!({ "served": f.served(), "corrupt_copies": f.corrupt_copies() }),
        None => serde_json::Value::Null,
    }
}

/// A line on stderr saying which repository served what (unless --quiet or
/// --json); bad copies were already reported as warnings when found.
pub fn summary(g: &Global, repo: &Repository) {
    let Some(f) = repo.store().fallback() else { return };
    let parts: Vec<String> = f
        .served()
        .iter()
        .map(|s| format!("{} {} reads ({})", s.location, s.reads, crate::common::human_bytes(s.bytes)))
        .collect();
    g.info(format!("read from: {}", parts.join(", ")));
    let bad = f.corrupt_copies();
    if !bad.is_empty() {
        g.info(format!("{} corrupt copies replaced by another repository's", bad.len()));
    }
}

/// Which repositories hold each part of a `pg restore` plan: the base
/// backup's snapshot, and the manifests of the first and last WAL segments
/// replay needs.
pub struct PlanSources {
    base: Vec<String>,
    first_wal: Vec<String>,
    last_wal: Vec<String>,
}

/// `None` when the repository is not read through fallbacks.
pub async fn plan_sources(repo: &Repository, stanza: &str, plan: &cairn_engine::pg::pitr::Plan) -> Option<PlanSources> {
    let f = repo.store().fallback()?;
    let wal_key = |name: &str| format!("wal/{stanza}/{}/{name}", name.get(..8).unwrap_or_default());
    Some(PlanSources {
        base: f.holders(&format!("snapshots/{}", plan.snapshot)).await,
        first_wal: f.holders(&wal_key(&plan.first_wal)).await,
        last_wal: f.holders(&wal_key(&plan.last_wal)).await,
    })
}

impl PlanSources {
    /// Each part's repositories, the first being the one read.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "base_backup": self.base, "first_wal": self.first_wal, "last_wal": self.last_wal })
    }

    /// Lines of the dry-run plan.
    pub fn print(&self) {
        let show = |v: &[String]| match v.split_first() {
            Some((first, [])) => first.clone(),
            Some((first, rest)) => format!("{first} (also in {})", rest.join(", ")),
            None => "no repository holds it as a single object (read through the WAL catalogue)".into(),
        };
        println!("from          base backup: {}", show(&self.base));
        println!("from          first WAL: {}", show(&self.first_wal));
        println!("from          last WAL: {}", show(&self.last_wal));
    }
}
