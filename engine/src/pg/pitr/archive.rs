//! The WAL catalogue of one stanza, loaded once for planning: every
//! archived segment by `(timeline, segment number)`, each timeline's
//! history, and the backup history files. Planning asks it which timeline
//! recovery reads a segment from, so timeline switches are decided in one
//! place.

use std::collections::BTreeMap;

use cairn_formats::pg::{SegmentName, SegmentSize, WalFileName};

use crate::repo::Repository;
use crate::wal::{WalFileKind, WalManifest};
use crate::Result;

/// What is archived for a stanza.
pub(super) struct Archive {
    /// The cluster's WAL segment size.
    pub(super) size: SegmentSize,
    /// Every archived segment, by `(timeline, segment number)`.
    pub(super) segments: BTreeMap<(u32, u64), WalManifest>,
    /// Each timeline's history: `(parent timeline, switch LSN)`, oldest first.
    history: BTreeMap<u32, Vec<(u32, u64)>>,
    backups: Vec<BTreeMap<String, String>>,
}

impl Archive {
    /// Reads the catalogue of `stanza` (through the cache under
    /// `cache_dir`, if given).
    pub(super) async fn load(repo: &Repository, stanza: &str, cache_dir: Option<&std::path::Path>) -> Result<Archive> {
        let (size, all) = crate::wal::archived_with(repo, stanza, cache_dir).await?;
        let mut a = Archive { size, segments: BTreeMap::new(), history: BTreeMap::new(), backups: Vec::new() };
        for (name, m) in all {
            match (name, m.kind) {
                // A streamed segment (`wal/stream.rs`) stands for its
                // segment while that has no manifest of its own.
                (WalFileName::Segment(s), WalFileKind::Segment | WalFileKind::Partial) => {
                    a.segments.insert((s.timeline, s.segno), m);
                }
                (WalFileName::History { timeline }, WalFileKind::History) => {
                    let h = m.history.iter().flatten().map(|l| (l.timeline, l.switchpoint)).collect();
                    a.history.insert(timeline, h);
                }
                (_, WalFileKind::Backup) => a.backups.extend(m.backup.clone()),
                _ => {}
            }
        }
        Ok(a)
    }

    /// `(timeline, begin LSN)` from the oldest ancestor to `tli`.
    pub(super) fn path(&self, tli: u32) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let mut begin = 0u64;
        for &(t, switch) in self.history.get(&tli).map(Vec::as_slice).unwrap_or_default() {
            out.push((t, begin));
            begin = switch;
        }
        out.push((tli, begin));
        out
    }

    /// The timeline recovery reads segment `segno` from on `path`: the
    /// newest one that has begun by then and has the file.
    pub(super) fn timeline_of(&self, path: &[(u32, u64)], segno: u64) -> Option<u32> {
        let seg_bytes = u64::from(self.size.bytes());
        path.iter()
            .rev()
            .filter(|(_, begin)| begin / seg_bytes <= segno)
            .map(|(t, _)| *t)
            .find(|t| self.segments.contains_key(&(*t, segno)))
    }

    /// The file name of segment `segno` on timeline `tli`.
    pub(super) fn name(&self, tli: u32, segno: u64) -> String {
        SegmentName { timeline: tli, segno }.format(self.size)
    }

    /// The newest timeline anything is archived on (1 if none).
    pub(super) fn highest_timeline(&self) -> u32 {
        let seg = self.segments.keys().map(|(t, _)| *t).max().unwrap_or(1);
        seg.max(self.history.keys().copied().max().unwrap_or(1))
    }
}
