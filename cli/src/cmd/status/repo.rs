//! The repository's part of `status`: size, growth, checks.

use anyhow::Result;
use cairn_engine::store::Backend;
use cairn_engine::{Repository, Snapshot, SnapshotId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::metrics::Families;

/// Size, growth and check coverage.
#[derive(Debug, Serialize)]
pub struct RepoStatus {
    pub packs: u64,
    pub pack_bytes: u64,
    /// Bytes snapshots uploaded in the last 24 hours and 7 days.
    pub added_24h_bytes: u64,
    pub added_7d_bytes: u64,
    pub problems: Vec<String>,
}

pub async fn status(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    now: DateTime<Utc>,
    _coverage_days: u32,
) -> Result<RepoStatus> {
    let (mut packs, mut pack_bytes) = (0, 0);
    for o in repo.store().list("packs").await? {
        packs += 1;
        pack_bytes += o.size;
    }
    let added = |hours: i64| -> u64 {
        snapshots
            .iter()
            .filter(|(_, s)| {
                DateTime::parse_from_rfc3339(&s.time)
                    .is_ok_and(|t| now - t.with_timezone(&Utc) <= chrono::Duration::hours(hours))
            })
            .map(|(_, s)| s.stats.uploaded_bytes)
            .sum()
    };
    Ok(RepoStatus {
        packs,
        pack_bytes,
        added_24h_bytes: added(24),
        added_7d_bytes: added(24 * 7),
        problems: Vec::new(),
    })
}

impl RepoStatus {
    pub fn print_check(&self) {}

    pub fn check_gauges(&self, _m: &mut Families) {}
}
