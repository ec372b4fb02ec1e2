//! Retention policies against a fixed calendar: hourly snapshots over 400
//! days from several sources and hosts, with pins and tags. The expected
//! sets are computed here another way (the newest snapshot of each
//! calendar bucket, the N most recent buckets), not by the engine's walk.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use cairn_engine::gc::{plan_forget, GroupBy, Listed, Policies, Policy, Span};
use cairn_engine::{Id, SnapshotId};
use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

const HOURS: i64 = 400 * 24;

fn sid(n: u64) -> SnapshotId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    SnapshotId(Id(b))
}

struct Calendar {
    snaps: Vec<Listed>,
}

impl Calendar {
    /// Hourly snapshots at :17 past, per (source, kind, host, offset hours).
    fn new(groups: &[(&str, &str, &str, i64)]) -> Calendar {
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 17, 0).unwrap();
        let mut snaps = Vec::new();
        let mut n = 0u64;
        for (source, kind, host, offset) in groups {
            for h in 0..HOURS {
                let time = start + Duration::hours(h + offset);
                let mut tags = Vec::new();
                if time.day() == 1 && time.hour() == 0 {
                    tags.push("month-start".to_string());
                }
                if time.weekday() == chrono::Weekday::Mon && time.hour() == 12 {
                    tags.push("release".to_string());
                    tags.push("qa".to_string());
                }
                n += 1;
                snaps.push(Listed {
                    id: sid(n),
                    time,
                    host: host.to_string(),
                    source: source.to_string(),
                    kind: kind.to_string(),
                    tags,
                });
            }
        }
        Calendar { snaps }
    }

    fn of(&self, source: &str, host: &str) -> Vec<&Listed> {
        self.snaps.iter().filter(|s| s.source == source && s.host == host).collect()
    }
}

/// The newest snapshot of each of the `n` most recent buckets.
fn newest_per_bucket<K: Ord>(snaps: &[&Listed], n: usize, key: impl Fn(DateTime<Utc>) -> K) -> BTreeSet<SnapshotId> {
    let mut best: BTreeMap<K, &Listed> = BTreeMap::new();
    for s in snaps {
        let k = key(s.time);
        if best.get(&k).is_none_or(|b| b.time < s.time) {
            best.insert(k, s);
        }
    }
    best.values().rev().take(n).map(|s| s.id).collect()
}

fn kept(rows: &[cairn_engine::gc::Row], group: &str) -> BTreeSet<SnapshotId> {
    rows.iter().filter(|r| r.group == group && r.keep).map(|r| r.id).collect()
}

#[test]
fn gfs_policies_keep_exactly_the_expected_calendar_set() {
    let cal = Calendar::new(&[
        ("pg", "pg-base", "db1", 0),
        ("pg", "pg-base", "db2", 5),
        ("models", "tar", "ml1", 0),
        ("redis", "redis-rdb", "cache1", 0),
    ]);
    let gfs = Policy {
        keep_last: Some(2),
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(12),
        keep_yearly: Some(3),
        ..Default::default()
    };
    let models = Policy {
        keep_within: Some(Span::parse("30d").unwrap()),
        keep_tags: vec!["release,qa".into()],
        ..Default::default()
    };
    let policies = Policies {
        per_source: [("pg".to_string(), gfs), ("models".to_string(), models)].into_iter().collect(),
        ..Default::default()
    };
    // One old pg snapshot of db1 is pinned.
    let pinned_snap = cal.of("pg", "db1")[10 * 24 + 5].id;
    let pins: HashSet<SnapshotId> = [pinned_snap].into_iter().collect();
    let rows = plan_forget(&cal.snaps, &policies, &pins);
    assert_eq!(rows.len(), cal.snaps.len(), "every snapshot gets a decision");

    for host in ["db1", "db2"] {
        let snaps = cal.of("pg", host);
        let mut expected = BTreeSet::new();
        let mut by_time = snaps.clone();
        by_time.sort_by_key(|s| std::cmp::Reverse(s.time));
        expected.extend(by_time.iter().take(2).map(|s| s.id));
        expected.extend(newest_per_bucket(&snaps, 7, |t| t.date_naive()));
        expected.extend(newest_per_bucket(&snaps, 4, |t| (t.iso_week().year(), t.iso_week().week())));
        expected.extend(newest_per_bucket(&snaps, 12, |t| (t.year(), t.month())));
        expected.extend(newest_per_bucket(&snaps, 3, |t| t.year()));
        if host == "db1" {
            expected.insert(pinned_snap);
        }
        let got = kept(&rows, &format!("pg@{host}"));
        assert_eq!(got, expected, "pg@{host}");
        // 2 last + 7 days (the newest day's last is also the last) etc.: a
        // handful, not thousands.
        assert!((20..=30).contains(&got.len()), "pg@{host} keeps {}", got.len());
    }
    let pinned_row = rows.iter().find(|r| r.id == pinned_snap).unwrap();
    assert_eq!(pinned_row.reasons, vec!["pinned".to_string()]);

    // models: within 30 days of its newest, plus every Monday-noon release.
    let snaps = cal.of("models", "ml1");
    let newest = snaps.iter().map(|s| s.time).max().unwrap();
    let expected: BTreeSet<SnapshotId> = snaps
        .iter()
        .filter(|s| {
            s.time > newest - Duration::days(30)
                || (s.tags.contains(&"release".into()) && s.tags.contains(&"qa".into()))
        })
        .map(|s| s.id)
        .collect();
    assert_eq!(kept(&rows, "models@ml1"), expected);
    assert_eq!(expected.len(), 30 * 24 + (400 - 30) / 7 + 1, "30 days hourly plus the older Mondays");

    // redis has no policy: kept whole, and says why.
    let redis: Vec<_> = rows.iter().filter(|r| r.source == "redis").collect();
    assert!(redis.iter().all(|r| r.keep && r.reasons == vec!["no policy".to_string()]));
}

#[test]
fn grouping_filters_and_calendar_spans() {
    let cal = Calendar::new(&[("pg", "stream", "db1", 0), ("pg", "stream", "db2", 5)]);
    let keep2 = Policy { keep_last: Some(2), ..Default::default() };
    // By source alone, the two hosts share one history: the two newest are db2's.
    let by_source = Policies { all: Some(keep2.clone()), group_by: GroupBy::Source, ..Default::default() };
    let rows = plan_forget(&cal.snaps, &by_source, &HashSet::new());
    let k: Vec<_> = rows.iter().filter(|r| r.keep).collect();
    assert_eq!(k.len(), 2);
    assert!(k.iter().all(|r| r.host == "db2" && r.group == "pg"));
    // A host filter leaves other hosts out of the plan entirely.
    let only_db1 = Policies { all: Some(keep2), hosts: vec!["db1".into()], ..Default::default() };
    let rows = plan_forget(&cal.snaps, &only_db1, &HashSet::new());
    assert!(rows.iter().all(|r| r.host == "db1"));
    assert_eq!(rows.len() as i64, HOURS);
    assert_eq!(rows.iter().filter(|r| r.keep).count(), 2);

    // keep_within_daily 10d: the newest of each day within 10 days of the newest.
    let daily = Policies {
        all: Some(Policy { keep_within_daily: Some(Span::parse("10d").unwrap()), ..Default::default() }),
        ..Default::default()
    };
    let rows = plan_forget(&cal.snaps, &daily, &HashSet::new());
    let snaps = cal.of("pg", "db1");
    let newest = snaps.iter().map(|s| s.time).max().unwrap();
    let within: Vec<&Listed> = snaps.iter().copied().filter(|s| s.time > newest - Duration::days(10)).collect();
    assert_eq!(kept(&rows, "pg@db1"), newest_per_bucket(&within, usize::MAX, |t| t.date_naive()));

    // -1 keeps every bucket: one per day over 400 days.
    let all_days = Policies { all: Some(Policy { keep_daily: Some(-1), ..Default::default() }), ..Default::default() };
    let rows = plan_forget(&cal.snaps, &all_days, &HashSet::new());
    assert_eq!(kept(&rows, "pg@db1").len(), 400);
}

#[test]
fn spans_parse_and_subtract_by_the_calendar() {
    let s = Span::parse("1y2m3d4h").unwrap();
    assert_eq!((s.years, s.months, s.days, s.hours), (1, 2, 3, 4));
    assert_eq!(Span::parse("2w").unwrap().days, 14);
    assert_eq!(Span::parse("1y6m").unwrap().to_string(), "1y6m");
    for bad in ["", "7", "d", "7x", "-1d"] {
        assert!(Span::parse(bad).is_err(), "{bad:?} must be refused");
    }
    let t = Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap();
    // One month before March 31 is the end of February, as restic's AddDate clamps… to Feb 28.
    assert_eq!(Span::parse("1m").unwrap().before(t), Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap());
    assert_eq!(Span::parse("1d12h").unwrap().before(t), Utc.with_ymd_and_hms(2026, 3, 30, 0, 0, 0).unwrap());
    // A policy from a config file's TOML, spans as text.
    let p: Policy = toml_like(r#"{"keep_daily": 30, "keep_within": "7d"}"#);
    assert_eq!(p.keep_within, Some(Span::parse("7d").unwrap()));
    assert!(serde_json::from_str::<Policy>(r#"{"keep_dayly": 3}"#).is_err(), "unknown keys are refused");
}

fn toml_like(json: &str) -> Policy {
    serde_json::from_str(json).unwrap()
}
