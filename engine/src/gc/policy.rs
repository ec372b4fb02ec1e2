//! Retention policies: which snapshots of a group `forget` keeps, and why.
//!
//! Pure: the same snapshots and policy always give the same decisions, so
//! the calendar tests pin the semantics. They follow restic's where restic
//! defines them (`internal/restic/snapshot_policy.go`), with one
//! difference: calendar buckets are UTC, not the host's local time, so two
//! hosts forgetting the same group agree.
//!
//! - Snapshots are considered newest first.
//! - `keep_last N`: the N newest.
//! - `keep_hourly/daily/weekly/monthly/yearly N`: walking newest first, a
//!   snapshot is kept when its bucket (the UTC hour, day, ISO week, month or
//!   year it was taken in) differs from the bucket last kept by that rule,
//!   until N buckets are kept. So each rule keeps the newest snapshot of
//!   each of its N most recent buckets that have a snapshot. N = -1 means
//!   no limit.
//! - `keep_within D`: every snapshot taken less than D before the group's
//!   newest snapshot (not before now: a source that stopped backing up
//!   keeps its last snapshots).
//! - `keep_within_hourly… D`: the bucket rule without a count, for
//!   snapshots taken less than D before the group's newest.
//! - `keep_tags`: a snapshot carrying every tag of any one of the lists.
//! - Pinned snapshots are always kept; and so is the newest snapshot of a
//!   group that `keep_newest` protects (PostgreSQL base backups: the newest
//!   one is never removed).
//!
//! A snapshot is removed only when no rule keeps it. An empty policy keeps
//! everything ([`Policy::is_empty`]): forgetting needs a rule to act on.

use chrono::{DateTime, Datelike, Months, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A calendar span: `1y6m`, `7d`, `2w`, `36h` (units y, m, w, d, h;
/// combinable, `1y2m3d4h`). Subtracted calendar-wise like restic's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days (a week is 7).
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl Span {
    /// Parses `1y2m3d4h`-style text.
    pub fn parse(text: &str) -> Result<Span> {
        let bad = |why: &str| Error::InvalidInput(format!("duration {text:?}: {why} (use e.g. 7d, 2w, 1y6m, 36h)"));
        let mut span = Span::default();
        let mut digits = String::new();
        let mut any = false;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: u32 = digits.parse().map_err(|_| bad("a unit needs a number before it"))?;
            digits.clear();
            match c {
                'y' => span.years += n,
                'm' => span.months += n,
                'w' => span.days += 7 * n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => return Err(bad(&format!("unknown unit {c:?}"))),
            }
            any = true;
        }
        if !digits.is_empty() {
            return Err(bad("a number needs a unit after it"));
        }
        if !any {
            return Err(bad("empty"));
        }
        Ok(span)
    }

    /// `t` minus this span.
    pub fn before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let months = self.years * 12 + self.months;
        let t = t.checked_sub_months(Months::new(months)).unwrap_or(DateTime::<Utc>::MIN_UTC);
        t - chrono::Duration::days(self.days.into()) - chrono::Duration::hours(self.hours.into())
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut wrote = false;
        for (n, u) in [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n > 0 {
                write!(f, "{n}{u}")?;
                wrote = true;
            }
        }
        if !wrote {
            f.write_str("0h")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Span {
    type Error = Error;
    fn try_from(s: String) -> Result<Span> {
        Span::parse(&s)
    }
}

impl From<Span> for String {
    fn from(s: Span) -> String {
        s.to_string()
    }
}

impl std::str::FromStr for Span {
    type Err = Error;
    fn from_str(s: &str) -> Result<Span> {
        Span::parse(s)
    }
}

/// A calendar bucket rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    /// Each snapshot is its own bucket (`keep_last`).
    Last,
    /// UTC hour.
    Hourly,
    /// UTC day.
    Daily,
    /// ISO 8601 week.
    Weekly,
    /// UTC month.
    Monthly,
    /// UTC year.
    Yearly,
}

impl Bucket {
    /// Every bucket rule, in the order reasons are reported.
    pub const ALL: [Bucket; 6] =
        [Bucket::Last, Bucket::Hourly, Bucket::Daily, Bucket::Weekly, Bucket::Monthly, Bucket::Yearly];

    fn of(self, t: DateTime<Utc>, nr: usize) -> i64 {
        let (y, m, d, h) = (i64::from(t.year()), i64::from(t.month()), i64::from(t.day()), i64::from(t.hour()));
        match self {
            Bucket::Last => -(nr as i64) - 2,
            Bucket::Hourly => y * 1_000_000 + m * 10_000 + d * 100 + h,
            Bucket::Daily => y * 10_000 + m * 100 + d,
            Bucket::Weekly => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Bucket::Monthly => y * 100 + m,
            Bucket::Yearly => y,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Bucket::Last => "last",
            Bucket::Hourly => "hourly",
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }
}

/// A retention policy for one group of snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The newest N snapshots (-1: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<i64>,
    /// The newest snapshot of each of the N most recent hours with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<i64>,
    /// … of each of the N most recent days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<i64>,
    /// … of each of the N most recent ISO weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<i64>,
    /// … of each of the N most recent months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<i64>,
    /// … of each of the N most recent years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<i64>,
    /// Every snapshot within this span of the group's newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Span>,
    /// The newest snapshot of each hour, within this span of the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<Span>,
    /// … of each day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<Span>,
    /// … of each ISO week.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<Span>,
    /// … of each month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<Span>,
    /// … of each year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<Span>,
    /// Snapshots carrying every tag of any one list (`"a,b"` is one list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// True when no rule is set: such a policy removes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    fn count(&self, b: Bucket) -> Option<i64> {
        match b {
            Bucket::Last => self.keep_last,
            Bucket::Hourly => self.keep_hourly,
            Bucket::Daily => self.keep_daily,
            Bucket::Weekly => self.keep_weekly,
            Bucket::Monthly => self.keep_monthly,
            Bucket::Yearly => self.keep_yearly,
        }
    }

    fn within(&self, b: Bucket) -> Option<Span> {
        match b {
            Bucket::Last => None,
            Bucket::Hourly => self.keep_within_hourly,
            Bucket::Daily => self.keep_within_daily,
            Bucket::Weekly => self.keep_within_weekly,
            Bucket::Monthly => self.keep_within_monthly,
            Bucket::Yearly => self.keep_within_yearly,
        }
    }

    /// Refuses counts below -1.
    pub fn validate(&self) -> Result<()> {
        for b in Bucket::ALL {
            if let Some(n) = self.count(b) {
                if n < -1 {
                    return Err(Error::InvalidInput(format!("keep-{}: {n} is below -1 (-1 means no limit)", b.name())));
                }
            }
        }
        Ok(())
    }
}

/// One snapshot as the policy sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Pinned (`cairn pin`): never removed.
    pub pinned: bool,
}

/// What the policy decided for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Kept (else removed).
    pub keep: bool,
    /// The rules that kept it (empty when removed).
    pub reasons: Vec<String>,
}

/// Decides for every snapshot of one group; the result is in the order of
/// `group`. `keep_newest` keeps the newest snapshot whatever the policy.
pub fn apply(policy: &Policy, group: &[Candidate], keep_newest: bool) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..group.len()).collect();
    order.sort_by(|&a, &b| group[b].time.cmp(&group[a].time).then(b.cmp(&a)));
    let mut out = vec![Decision { keep: false, reasons: Vec::new() }; group.len()];
    let Some(&newest) = order.first() else { return out };
    let latest = group[newest].time;
    let mut counts: Vec<(Bucket, i64, i64)> =
        Bucket::ALL.iter().filter_map(|&b| policy.count(b).map(|n| (b, n, -1))).collect();
    let mut within: Vec<(Bucket, DateTime<Utc>, Span, i64)> =
        Bucket::ALL.iter().filter_map(|&b| policy.within(b).map(|s| (b, s.before(latest), s, -1))).collect();
    let tag_lists: Vec<Vec<&str>> = policy
        .keep_tags
        .iter()
        .map(|l| l.split(',').map(str::trim).filter(|t| !t.is_empty()).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect();
    for (nr, &i) in order.iter().enumerate() {
        let c = &group[i];
        let mut reasons = Vec::new();
        if c.pinned {
            reasons.push("pinned".to_string());
        }
        if keep_newest && nr == 0 {
            reasons.push("newest of its group".to_string());
        }
        for l in &tag_lists {
            if l.iter().all(|t| c.tags.iter().any(|have| have == t)) {
                reasons.push(format!("tag {}", l.join(",")));
            }
        }
        if let Some(span) = policy.keep_within {
            if c.time > span.before(latest) {
                reasons.push(format!("within {span}"));
            }
        }
        for (b, since, span, last) in within.iter_mut() {
            if c.time > *since {
                let v = b.of(c.time, nr);
                if v != *last {
                    *last = v;
                    reasons.push(format!("within-{} {span}", b.name()));
                }
            }
        }
        for (b, left, last) in counts.iter_mut() {
            if *left != 0 {
                let v = b.of(c.time, nr);
                if v != *last {
                    *last = v;
                    if *left > 0 {
                        *left -= 1;
                    }
                    reasons.push(format!("{} snapshot", b.name()));
                }
            }
        }
        out[i] = Decision { keep: !reasons.is_empty(), reasons };
    }
    out
}
