//! The WAL catalogue: what a stanza's archive holds (`cairn wal show`) and
//! whether every archived file still reads back intact (`cairn wal verify`).
//!
//! Everything here comes from the sealed manifests, so answering "what can
//! I restore to" reads a few hundred bytes per segment, never the WAL.

use crate::store::Backend as _;
use std::collections::BTreeMap;

use cairn_formats::pg::{Lsn, SegmentScanner, SegmentSize, WalFileName};
use futures::StreamExt;
use serde::Serialize;

use super::facts::facts_of;
use super::{get_named, load_stanza, validate_stanza, StanzaRecord, WalFileKind, WalManifest};
use crate::commands::check::Problem;
use crate::repo::Repository;
use crate::{Error, Result};

/// A contiguous run of archived segments.
#[derive(Debug, Clone, Serialize)]
pub struct Range {
    /// First segment's name.
    pub first: String,
    /// Last segment's name.
    pub last: String,
    /// Segments in the run.
    pub segments: u64,
    /// Start LSN of the first segment.
    pub start_lsn: String,
    /// End LSN of the last segment.
    pub end_lsn: String,
    /// Time of the first commit in the run (RFC 3339).
    pub first_commit: Option<String>,
    /// Time of the last commit in the run.
    pub last_commit: Option<String>,
}

/// Segments missing between two ranges.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// The last segment before the gap.
    pub after: String,
    /// The first segment after it.
    pub before: String,
    /// How many segments are missing.
    pub missing: u64,
}

/// A restore point.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePointInfo {
    /// Its name.
    pub name: String,
    /// Its LSN.
    pub lsn: String,
    /// Its time.
    pub time: Option<String>,
}

/// One ancestor in a timeline's history.
#[derive(Debug, Clone, Serialize)]
pub struct Ancestor {
    /// The parent timeline.
    pub timeline: u32,
    /// Where WAL left it.
    pub switchpoint: String,
    /// PostgreSQL's reason.
    pub reason: String,
}

/// One timeline of a stanza.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimelineReport {
    /// Timeline id.
    pub timeline: u32,
    /// Complete segments archived.
    pub segments: u64,
    /// Contiguous runs of segments.
    pub ranges: Vec<Range>,
    /// Holes between runs.
    pub gaps: Vec<Gap>,
    /// Earliest commit time on the timeline.
    pub earliest_commit: Option<String>,
    /// Latest commit time on the timeline.
    pub latest_commit: Option<String>,
    /// Named restore points.
    pub restore_points: Vec<RestorePointInfo>,
    /// `.partial` files.
    pub partial: Vec<String>,
    /// `.backup` files with their `KEY: value` lines.
    pub backups: Vec<BTreeMap<String, String>>,
    /// Ancestors, from this timeline's `.history` file.
    pub history: Vec<Ancestor>,
    /// Segments in which valid WAL stops before the end.
    pub stopped_early: Vec<String>,
    /// The newest segment `cairn pg receive` holds only in part (its
    /// `.stream` object): where streamed WAL ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streamed: Option<Streamed>,
}

/// Where streamed WAL ends on a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Streamed {
    /// The segment being received.
    pub segment: String,
    /// Bytes of it durable in the repository.
    pub bytes: u64,
    /// The LSN after the last durable byte.
    pub end_lsn: String,
    /// Where the last whole record received ends.
    pub end_of_records: Option<String>,
    /// The last commit received (RFC 3339).
    pub last_commit: Option<String>,
    /// When it was last made durable (RFC 3339).
    pub flushed: String,
    /// Seconds since then (receive lag, for a receiver that is idle or stopped).
    pub age_s: f64,
}

fn streamed_of(m: &WalManifest, segno: u64, size: SegmentSize) -> Streamed {
    let start = segno.saturating_mul(u64::from(size.bytes()));
    let age_s = chrono::DateTime::parse_from_rfc3339(&m.pushed)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(f64::NAN);
    Streamed {
        segment: super::stream::segment_of_stream(&m.name).unwrap_or_default().to_string(),
        bytes: m.size,
        end_lsn: lsn(start.saturating_add(m.size)),
        end_of_records: m.facts.as_ref().map(|f| lsn(f.end_of_records)),
        last_commit: m.facts.as_ref().and_then(|f| f.last_commit).and_then(|c| time(c.time_us)),
        flushed: m.pushed.clone(),
        age_s,
    }
}

/// What one stanza's archive holds.
#[derive(Debug, Clone, Serialize)]
pub struct StanzaReport {
    /// Stanza name.
    pub stanza: String,
    /// The cluster it belongs to.
    pub cluster: Option<StanzaRecord>,
    /// Archived files of every kind.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Per timeline, ascending.
    pub timelines: Vec<TimelineReport>,
    /// Every archived file name, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Manifests that could not be read.
    pub problems: Vec<Problem>,
    /// What retention (`cairn pg expire`) last left: the earliest
    /// restorable time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::pg::expire::ExpiryRecord>,
    /// Copies of the archive in other repositories that lack files pushed
    /// here (`wal/copies.rs`); the caller adds the configured copies that
    /// lack nothing.
    pub copies: Vec<super::copies::CopyLag>,
}

/// The result of `wal verify`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Stanza name.
    pub stanza: String,
    /// Files read back.
    pub files: u64,
    /// Bytes read back.
    pub bytes: u64,
    /// Anything here means verification failed.
    pub problems: Vec<Problem>,
}

fn time(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

fn lsn(v: u64) -> String {
    Lsn(v).to_string()
}

/// Every manifest of a stanza, opened; failures become problems.
async fn manifests(repo: &Repository, stanza: &str) -> Result<(Vec<(String, WalManifest)>, Vec<Problem>)> {
    let keys: Vec<String> = repo
        .store()
        .list(&format!("wal/{stanza}"))
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.split('/').count() == 4)
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    let mut problems = Vec::new();
    let mut fetched = futures::stream::iter(keys)
        .map(|k| async move {
            let r = get_named::<WalManifest>(repo, &k).await;
            (k, r)
        })
        .buffered(32);
    while let Some((k, r)) = fetched.next().await {
        match r {
            Ok(Some(m)) if k.ends_with(&format!("/{}", m.name)) => out.push((k, m)),
            Ok(Some(m)) => problems.push(Problem { object: k, message: format!("manifest names {:?}", m.name) }),
            Ok(None) => {}
            Err(e) => problems.push(Problem { object: k, message: e.to_string() }),
        }
    }
    Ok((out, problems))
}

/// Summarises a stanza's archive; `names` adds every file name.
pub async fn show(repo: &Repository, stanza: &str, names: bool) -> Result<StanzaReport> {
    validate_stanza(stanza)?;
    let cluster = load_stanza(repo, stanza).await?;
    let (all, problems) = manifests(repo, stanza).await?;
    if cluster.is_none() && all.is_empty() && problems.is_empty() {
        return Err(Error::NotFound { what: format!("stanza {stanza:?} (nothing archived)") });
    }
    let mut report = summarise(stanza, cluster, &all, problems, names)?;
    report.retention = crate::pg::expire::expiry_record(repo, stanza).await?;
    report.copies = super::copies::lags(repo, stanza).await?;
    Ok(report)
}

/// What [`show`] reports about the manifests read (all but retention).
pub(crate) fn summarise(
    stanza: &str,
    cluster: Option<StanzaRecord>,
    all: &[(String, WalManifest)],
    problems: Vec<Problem>,
    names: bool,
) -> Result<StanzaReport> {
    let size = SegmentSize::new(cluster.as_ref().map_or(16 << 20, |c| u64::from(c.segment_size)))
        .map_err(|e| Error::corrupt(super::stanza_key(stanza), None, e.to_string()))?;
    let mut by_tli: BTreeMap<u32, Vec<&WalManifest>> = BTreeMap::new();
    for (_, m) in all {
        let name = super::stream::segment_of_stream(&m.name).unwrap_or(&m.name);
        if let Ok(n) = WalFileName::parse(name, size) {
            by_tli.entry(n.timeline()).or_default().push(m);
        }
    }
    let timelines = by_tli.into_iter().map(|(tli, files)| timeline_report(tli, files, size)).collect();
    Ok(StanzaReport {
        stanza: stanza.to_string(),
        cluster,
        files: all.len() as u64,
        bytes: all.iter().map(|(_, m)| m.size).fold(0u64, u64::saturating_add),
        timelines,
        names: names.then(|| all.iter().map(|(_, m)| m.name.clone()).collect()),
        problems,
        retention: None,
        copies: Vec::new(),
    })
}

fn timeline_report(tli: u32, files: Vec<&WalManifest>, size: SegmentSize) -> TimelineReport {
    let mut r = TimelineReport { timeline: tli, ..Default::default() };
    let mut segs: Vec<(u64, &WalManifest)> = Vec::new();
    for m in files {
        match m.kind {
            WalFileKind::Segment => {
                if let Ok(WalFileName::Segment(s)) = WalFileName::parse(&m.name, size) {
                    segs.push((s.segno, m));
                }
            }
            WalFileKind::Partial if super::stream::segment_of_stream(&m.name).is_some() => {
                let seg = super::stream::segment_of_stream(&m.name).unwrap_or_default();
                if let Ok(WalFileName::Segment(s)) = WalFileName::parse(seg, size) {
                    let newer = r.streamed.as_ref().is_none_or(|old| old.segment.as_str() < seg);
                    if newer {
                        r.streamed = Some(streamed_of(m, s.segno, size));
                    }
                }
            }
            WalFileKind::Partial => r.partial.push(m.name.clone()),
            WalFileKind::Backup => {
                let mut b = m.backup.clone().unwrap_or_default();
                b.insert("FILE".into(), m.name.clone());
                r.backups.push(b);
            }
            WalFileKind::History => {
                r.history = m
                    .history
                    .iter()
                    .flatten()
                    .map(|h| Ancestor {
                        timeline: h.timeline,
                        switchpoint: lsn(h.switchpoint),
                        reason: h.reason.clone(),
                    })
                    .collect();
            }
        }
    }
    segs.sort_by_key(|(n, _)| *n);
    // One segment's manifest twice (its name under two timeline
    // directories) counts once: a run is strictly ascending.
    segs.dedup_by_key(|(n, _)| *n);
    r.segments = segs.len() as u64;
    let seg_bytes = u64::from(size.bytes());
    let mut i = 0;
    while i < segs.len() {
        let mut j = i + 1;
        while j < segs.len() && segs[j].0 == segs[j - 1].0 + 1 {
            j += 1;
        }
        let run = &segs[i..j];
        let commits = run.iter().filter_map(|(_, m)| m.facts.as_ref());
        let first_commit = commits.clone().find_map(|f| f.first_commit).map(|c| c.time_us);
        let last_commit = commits.clone().filter_map(|f| f.last_commit).next_back().map(|c| c.time_us);
        r.ranges.push(Range {
            first: run[0].1.name.clone(),
            last: run[run.len() - 1].1.name.clone(),
            segments: run.len() as u64,
            // The last segment of the WAL space ends at 2^64: shown as
            // the largest LSN rather than wrapping to 0/0.
            start_lsn: lsn(run[0].0.saturating_mul(seg_bytes)),
            end_lsn: lsn((run[run.len() - 1].0 + 1).saturating_mul(seg_bytes)),
            first_commit: first_commit.and_then(time),
            last_commit: last_commit.and_then(time),
        });
        if j < segs.len() {
            r.gaps.push(Gap {
                after: run[run.len() - 1].1.name.clone(),
                before: segs[j].1.name.clone(),
                missing: segs[j].0 - segs[j - 1].0 - 1,
            });
        }
        i = j;
    }
    let facts: Vec<_> = segs.iter().filter_map(|(_, m)| m.facts.as_ref().map(|f| (m, f))).collect();
    r.earliest_commit = facts.iter().find_map(|(_, f)| f.first_commit).and_then(|c| time(c.time_us));
    r.latest_commit = facts.iter().filter_map(|(_, f)| f.last_commit).next_back().and_then(|c| time(c.time_us));
    for (m, f) in &facts {
        r.restore_points.extend(f.restore_points.iter().map(|p| RestorePointInfo {
            name: p.name.clone(),
            lsn: lsn(p.lsn),
            time: time(p.time_us),
        }));
        if f.stopped.is_some() {
            r.stopped_early.push(m.name.clone());
        }
    }
    if let Some(st) = &r.streamed {
        if st.last_commit.is_some() && r.latest_commit.as_deref() < st.last_commit.as_deref() {
            r.latest_commit = st.last_commit.clone();
        }
    }
    r.partial.sort();
    r
}

/// Reads back every archived file of a stanza: every blob authenticates and
/// hashes to its id, every file to its recorded size and BLAKE3, and every
/// segment's header and facts match what was recorded at push time.
pub async fn verify(repo: &Repository, stanza: &str) -> Result<VerifyReport> {
    validate_stanza(stanza)?;
    let cluster = load_stanza(repo, stanza).await?;
    let (all, problems) = manifests(repo, stanza).await?;
    if cluster.is_none() && all.is_empty() && problems.is_empty() {
        return Err(Error::NotFound { what: format!("stanza {stanza:?} (nothing archived)") });
    }
    let mut report = VerifyReport { stanza: stanza.into(), problems, ..Default::default() };
    if let Some(size) = cluster.as_ref().and_then(|c| SegmentSize::new(u64::from(c.segment_size)).ok()) {
        report.problems.extend(super::catseg::verify(repo, stanza, &all, size).await?);
    }
    let cluster = &cluster;
    let mut checks = futures::stream::iter(all)
        .map(|(k, m)| async move {
            let r = verify_one(repo, &k, &m, cluster.as_ref()).await;
            (k, m.size, r)
        })
        .buffer_unordered(4);
    while let Some((k, size, r)) = checks.next().await {
        report.files += 1;
        report.bytes += size;
        if let Err(e) = r {
            report.problems.push(Problem { object: k, message: e.to_string() });
        }
    }
    report.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(report)
}

/// What `cairn check` finds wrong with the catalogue segments of every
/// stanza, compared with the manifests (`catseg::verify`).
pub(crate) async fn catalogue_problems(repo: &Repository) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for stanza in super::list_stanzas(repo).await? {
        let Some(cluster) = load_stanza(repo, &stanza).await? else { continue };
        let Ok(size) = SegmentSize::new(u64::from(cluster.segment_size)) else { continue };
        let (all, _) = manifests(repo, &stanza).await?;
        problems.extend(super::catseg::verify(repo, &stanza, &all, size).await?);
    }
    Ok(problems)
}

async fn verify_one(repo: &Repository, key: &str, m: &WalManifest, cluster: Option<&StanzaRecord>) -> Result<()> {
    let Some(expected) = &m.facts else {
        return super::fetch::read_verified(repo, key, m, super::fetch::Check::PiecesAndFile, |_| Ok(())).await;
    };
    if let Some(c) = cluster {
        if c.system_id != expected.system_id {
            return Err(Error::corrupt(key, None, format!("system id {} is not the stanza's", expected.system_id)));
        }
    }
    let mut scanner = SegmentScanner::new(Default::default());
    read_verified_scan(repo, key, m, &mut scanner).await?;
    // A streamed segment's facts describe the bytes received so far.
    let summary =
        if super::stream::segment_of_stream(&m.name).is_some() { scanner.summary_so_far() } else { scanner.finish() };
    let facts = facts_of(&summary.map_err(|e| Error::corrupt(key, None, e.to_string()))?);
    if &facts != expected {
        return Err(Error::corrupt(key, None, "re-scanned facts differ from those recorded at push"));
    }
    Ok(())
}

async fn read_verified_scan(repo: &Repository, key: &str, m: &WalManifest, scanner: &mut SegmentScanner) -> Result<()> {
    super::fetch::read_verified(repo, key, m, super::fetch::Check::PiecesAndFile, |p| {
        scanner.push(p).map_err(|e| Error::corrupt(key, None, e.to_string()))
    })
    .await
}

/// Every readable manifest of a stanza with its parsed name, for planning
/// restores; unreadable ones fail the call (a plan must not guess).
pub async fn archived(repo: &Repository, stanza: &str) -> Result<(SegmentSize, Vec<(WalFileName, WalManifest)>)> {
    validate_stanza(stanza)?;
    let size = super::archived_segment_size(repo, stanza).await?;
    let (all, problems) = manifests(repo, stanza).await?;
    if let Some(p) = problems.first() {
        return Err(Error::corrupt(p.object.clone(), None, p.message.clone()));
    }
    let streams: Vec<WalManifest> = all
        .iter()
        .filter(|(_, m)| super::stream::segment_of_stream(&m.name).is_some())
        .map(|(_, m)| m.clone())
        .collect();
    let mut out: Vec<(WalFileName, WalManifest)> =
        all.into_iter().filter_map(|(_, m)| WalFileName::parse(&m.name, size).ok().map(|n| (n, m))).collect();
    out = super::stream::with_streamed(out, streams, size);
    out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    Ok((size, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str, size: u64) -> (String, WalManifest) {
        let m = WalManifest {
            version: 1,
            name: name.into(),
            kind: WalFileKind::Segment,
            size,
            blake3: String::new(),
            pushed: String::new(),
            host: String::new(),
            pieces: Vec::new(),
            facts: None,
            history: None,
            backup: None,
        };
        (format!("wal/s/00000001/{name}"), m)
    }

    #[test]
    fn the_last_segment_and_huge_sizes_do_not_overflow() {
        // Manifests are authenticated but still decoded: the last segment
        // of the WAL space ends at 2^64 (the end LSN wrapped to 0/0, or
        // panicked with overflow checks), and sizes summed past 2^64.
        let all = [manifest("00000001FFFFFFFF000000FE", u64::MAX), manifest("00000001FFFFFFFF000000FF", 2)];
        let r = summarise("s", None, &all, Vec::new(), false).unwrap();
        assert_eq!(r.bytes, u64::MAX);
        let range = &r.timelines[0].ranges[0];
        assert_eq!((range.start_lsn.as_str(), range.end_lsn.as_str()), ("FFFFFFFF/FE000000", "FFFFFFFF/FFFFFFFF"));
    }

    #[test]
    fn a_segment_listed_twice_is_one_segment_not_a_negative_gap() {
        // Found by the wal_manifest fuzz target: the gap after a run was
        // computed as next - last - 1, which underflowed for a segment
        // listed twice (a panic with overflow checks, a gap of 2^64 - 1
        // segments without).
        let (k, m) = manifest("000000010000000000000001", 16 << 20);
        let all =
            [(k.clone(), m.clone()), (k.replace("00000001/", "00000002/"), m), manifest("000000010000000000000003", 1)];
        let r = summarise("s", None, &all, Vec::new(), false).unwrap();
        let t = &r.timelines[0];
        assert_eq!((r.files, t.segments, t.ranges.len()), (3, 2, 2));
        assert_eq!(t.gaps.len(), 1);
        assert_eq!(t.gaps[0].missing, 1);
    }
}
