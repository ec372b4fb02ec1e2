use anyhow::{bail, Result};
use cairn_engine::gc::{self, GroupBy, Policies, Policy, Span};
use cairn_engine::Snapshot;

use crate::common::Global;
use crate::exit;

/// Remove snapshots that a retention policy does not keep.
///
/// Snapshots are grouped by source and host (--group-by source: by source
/// alone) and, in each group, kept when any rule keeps them; every other
/// snapshot's manifest is deleted. Space is reclaimed by `cairn prune`
/// (or --prune). Calendar rules walk the group newest first and keep the
/// newest snapshot of each of the N most recent hours, days, ISO weeks,
/// months or years that have one (UTC); N = -1 keeps all. --keep-within
/// spans (7d, 2w, 1y6m, 36h) are measured back from the group's newest
/// snapshot, not from now. Pinned snapshots (`cairn pin`) are always
/// kept, and so is the newest PostgreSQL base backup of a group.
///
/// With no rule on the command line, each source's rules come from the
/// config file (`[sources.NAME]` with keep_daily = 30, keep_within = "7d",
/// …); sources without rules there are kept whole. Naming snapshots
/// removes exactly those (pinned ones excepted).
///
/// --dry-run lists every snapshot with keep or remove and the rules that
/// kept it, and changes nothing. Forgetting deletes one manifest at a
/// time: interrupted, it is finished by running it again.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Snapshots to remove (ids or unique prefixes) instead of a policy.
    #[arg(value_name = "SNAPSHOT", conflicts_with_all = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "keep_tag"])]
    snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the N most recent hours.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_hourly: Option<i64>,
    /// … of each of the N most recent days.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_daily: Option<i64>,
    /// … of each of the N most recent ISO weeks.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_weekly: Option<i64>,
    /// … of each of the N most recent months.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_monthly: Option<i64>,
    /// … of each of the N most recent years.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    keep_yearly: Option<i64>,
    /// Keep every snapshot taken within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN")]
    keep_within: Option<Span>,
    /// Keep the newest snapshot of each hour within SPAN of the newest.
    #[arg(long, value_name = "SPAN")]
    keep_within_hourly: Option<Span>,
    /// … of each day within SPAN.
    #[arg(long, value_name = "SPAN")]
    keep_within_daily: Option<Span>,
    /// … of each ISO week within SPAN.
    #[arg(long, value_name = "SPAN")]
    keep_within_weekly: Option<Span>,
    /// … of each month within SPAN.
    #[arg(long, value_name = "SPAN")]
    keep_within_monthly: Option<Span>,
    /// … of each year within SPAN.
    #[arg(long, value_name = "SPAN")]
    keep_within_yearly: Option<Span>,
    /// Keep snapshots carrying these tags (`a,b`: both); repeatable.
    #[arg(long = "keep-tag", value_name = "TAGS")]
    keep_tag: Vec<String>,
    /// Only snapshots of this source; repeatable.
    #[arg(long, value_name = "NAME")]
    source: Vec<String>,
    /// Only snapshots taken on this host; repeatable.
    #[arg(long, value_name = "HOST")]
    host: Vec<String>,
    /// Group by `source-host` (default) or `source`.
    #[arg(long, value_name = "GROUPING", default_value = "source-host", value_parser = ["source-host", "source"])]
    group_by: String,
    /// List the decisions; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run `cairn prune` afterwards.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_opts: super::prune::Args,
}

impl Args {
    fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_within_hourly: self.keep_within_hourly,
            keep_within_daily: self.keep_within_daily,
            keep_within_weekly: self.keep_within_weekly,
            keep_within_monthly: self.keep_within_monthly,
            keep_within_yearly: self.keep_within_yearly,
            keep_tags: self.keep_tag.clone(),
        }
    }
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let given = a.policy();
    let mut policies = Policies {
        group_by: if a.group_by == "source" { GroupBy::Source } else { GroupBy::SourceHost },
        sources: a.source.clone(),
        hosts: a.host.clone(),
        ..Default::default()
    };
    if !given.is_empty() {
        policies.all = Some(given);
    } else {
        policies.per_source = g.policies_from_config.clone();
    }
    if a.snapshots.is_empty() && policies.all.is_none() && policies.per_source.values().all(Policy::is_empty) {
        bail!("no retention rule given: use --keep-… options, name snapshots, or set keep_… under [sources.NAME] in the config file");
    }
    let repo = g.open().await?;
    let mut ids = Vec::new();
    for s in &a.snapshots {
        ids.push(Snapshot::resolve(&repo, s, None).await?.0);
    }
    let summary = gc::forget(&repo, &policies, &ids, a.dry_run).await?;
    crate::metrics::record("", crate::metrics::Sample { objects: summary.removed, ..Default::default() });
    let pruned = if a.prune && !a.dry_run { Some(super::prune::execute(g, a.prune_opts).await?) } else { None };
    if g.json {
        // One JSON document: the forget summary, with the prune's report.
        let mut v = serde_json::to_value(&summary)?;
        if let Some(p) = &pruned {
            v["prune"] = serde_json::to_value(p)?;
        }
        super::print_json(&v);
    } else if !g.quiet {
        let mut group = None;
        for r in &summary.rows {
            if group.as_ref() != Some(&r.group) {
                println!("{}:", r.group);
                group = Some(r.group.clone());
            }
            let what = if r.keep {
                "keep  "
            } else if a.dry_run {
                "would remove"
            } else {
                "remove"
            };
            println!("  {what:<12} {}  {}  {}", r.id.short(), r.time, r.reasons.join(", "));
        }
        let removed = summary.rows.iter().filter(|r| !r.keep).count();
        if a.dry_run {
            println!("dry run: {removed} snapshot(s) would be removed, {} kept", summary.kept);
        } else {
            println!("{} snapshot(s) removed, {} kept", summary.removed, summary.kept);
        }
    }
    match &pruned {
        Some(p) => {
            super::prune::print(g, p);
            Ok(super::prune::code(p))
        }
        None => Ok(exit::OK),
    }
}
