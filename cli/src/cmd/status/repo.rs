//! The repository's part of `status`: size, growth, checks.

use anyhow::Result;
use cairn_engine::store::Backend;
use cairn_engine::{check_coverage, CheckRecord, Repository, Snapshot, SnapshotId};
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
    /// The last `check`, whatever it read.
    pub last_check: Option<CheckRecord>,
    /// The window of `check_coverage`, in days.
    pub coverage_days: u32,
    /// The share (0 to 1) of the packs in the store that checks read in
    /// the last `coverage_days` days.
    pub check_coverage: f64,
    /// The rotation of `check --read-data-subset` under way, and how far
    /// it has got.
    pub check_round: u64,
    pub check_round_read: u64,
    pub check_round_to_go: u64,
    pub problems: Vec<String>,
}

pub async fn status(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    now: DateTime<Utc>,
    coverage_days: u32,
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
    let cov = check_coverage(repo).await?;
    let since = now - chrono::Duration::days(coverage_days.into());
    let mut problems = Vec::new();
    if let Some(c) = cov.last_check.as_ref().filter(|c| c.problems > 0) {
        problems.push(format!("the last check ({}) found {} problem(s)", c.time, c.problems));
    }
    Ok(RepoStatus {
        packs,
        pack_bytes,
        added_24h_bytes: added(24),
        added_7d_bytes: added(24 * 7),
        check_coverage: cov.share_read_since(since.into()),
        coverage_days,
        check_round: cov.round,
        check_round_read: cov.read_in_round,
        check_round_to_go: cov.to_go(),
        last_check: cov.last_check,
        problems,
    })
}

impl RepoStatus {
    pub fn print_check(&self) {
        match &self.last_check {
            Some(c) => {
                let read = match (c.data_read, c.subset_percent) {
                    (false, _) => "structure only".to_string(),
                    (true, Some(p)) => format!("read {} of {} packs ({p}%)", c.packs_read, c.packs_total),
                    (true, None) => format!("read {} of {} packs", c.packs_read, c.packs_total),
                };
                let outcome = match c.problems {
                    0 => "ok".to_string(),
                    n => format!("{n} PROBLEM(S)"),
                };
                println!("  last check      {} on {}, {read}: {outcome}", c.time, c.host);
            }
            None => println!("  last check      none"),
        }
        println!(
            "  check coverage  {:.0}% of {} packs read in the last {} d; round {}: {}/{} read, {} to go",
            self.check_coverage * 100.0,
            self.packs,
            self.coverage_days,
            self.check_round,
            self.check_round_read,
            self.check_round_read + self.check_round_to_go,
            self.check_round_to_go
        );
    }

    pub fn check_gauges(&self, m: &mut Families) {
        m.gauge(
            "cairn_check_coverage_ratio",
            "Share of the packs that checks read within the status coverage window.",
            &[],
            self.check_coverage,
        );
        let to_go = self.check_round_to_go as f64;
        m.gauge("cairn_check_round_packs_to_go", "Packs the current check rotation has yet to read.", &[], to_go);
        if let Some(c) = &self.last_check {
            if let Ok(t) = DateTime::parse_from_rfc3339(&c.time) {
                m.gauge(
                    "cairn_check_last_timestamp_seconds",
                    "When the last check began (Unix time).",
                    &[],
                    t.timestamp() as f64,
                );
            }
            m.gauge("cairn_check_problems", "Problems the last check found.", &[], c.problems as f64);
            m.gauge("cairn_check_last_packs_read", "Packs the last check read.", &[], c.packs_read as f64);
        }
    }
}
