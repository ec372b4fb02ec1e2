//! The drill records `status` compares with each source's RTO.

use anyhow::Result;
use cairn_engine::Repository;

/// What `status` needs of one drill record.
#[derive(Debug, Clone)]
pub struct DrillSummary {
    pub source: String,
    pub time: String,
    pub ok: bool,
    pub rto_s: f64,
    pub failure: Option<String>,
}

/// Every drill record, oldest first.
pub async fn records(repo: &Repository) -> Result<Vec<DrillSummary>> {
    Ok(cairn_engine::drill::records(repo)
        .await?
        .into_iter()
        .map(|r| DrillSummary { source: r.source, time: r.time, ok: r.ok, rto_s: r.rto_s, failure: r.failure })
        .collect())
}
