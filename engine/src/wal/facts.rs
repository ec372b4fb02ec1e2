//! What a WAL manifest keeps from a file's content: a segment's scan
//! facts, a backup history file's fields.

use cairn_formats::pg::{ScanEnd, SegmentSummary};

use super::{CommitPoint, NamedPoint, SegmentFacts};

/// The facts a manifest keeps from a scan.
pub(crate) fn facts_of(s: &SegmentSummary) -> SegmentFacts {
    let to_us = |t: i64| cairn_formats::pg::timestamptz_to_unix_micros(t).unwrap_or(i64::MIN);
    let commits: Vec<_> = s.xacts.iter().filter(|x| x.kind.is_commit()).collect();
    let point = |x: &&cairn_formats::pg::XactEvent| CommitPoint { lsn: x.lsn.0, time_us: to_us(x.time), xid: x.xid };
    let xids = commits.iter().map(|x| x.xid);
    let commit_xids = xids.clone().min().zip(xids.max());
    let (end, stopped) = match &s.end {
        ScanEnd::Complete => ("complete", None),
        ScanEnd::Switch { .. } => ("switch", None),
        ScanEnd::Stopped { error } => ("stopped", Some(error.to_string())),
    };
    SegmentFacts {
        postgresql: s.header.version.major(),
        system_id: s.header.system_id.to_string(),
        timeline: s.header.timeline,
        start_lsn: s.header.start.0,
        first_record: s.first_record.map(|l| l.0),
        last_record: s.last_record.map(|l| l.0),
        end_of_records: s.end_of_records.0,
        records: s.records,
        commits: commits.len() as u64,
        aborts: (s.xacts.len() - commits.len()) as u64,
        first_commit: commits.first().map(point),
        last_commit: commits.last().map(point),
        commit_xids,
        restore_points: s
            .restore_points
            .iter()
            .map(|r| NamedPoint { name: r.name.clone(), lsn: r.lsn.0, time_us: to_us(r.time) })
            .collect(),
        end: end.to_string(),
        stopped,
    }
}

/// `KEY: value` lines of a backup history file (`START WAL LOCATION`,
/// `STOP WAL LOCATION`, `LABEL`, …).
pub(crate) fn parse_backup_history(text: &[u8]) -> std::collections::BTreeMap<String, String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}
