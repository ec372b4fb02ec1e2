//! WAL file names and the arithmetic between names, segment numbers and LSNs.
//!
//! PostgreSQL names every file it archives after the WAL it covers:
//!
//! | kind | form | example |
//! | --- | --- | --- |
//! | segment | `TTTTTTTTXXXXXXXXYYYYYYYY` | `000000010000000A000000FF` |
//! | partial segment | segment name + `.partial` | `000000010000000A000000FF.partial` |
//! | timeline history | `TTTTTTTT.history` | `00000002.history` |
//! | backup history | segment name + `.OOOOOOOO.backup` | `000000010000000000000002.00000028.backup` |
//!
//! `T` is the timeline, `X` the high 32 bits of the segment's start LSN and
//! `Y` the segment number within that 4 GiB "xlog id", so `Y` is below
//! `4 GiB / segment size` (0x100 for the default 16 MiB). All digits are
//! upper-case hexadecimal, as PostgreSQL's `IsXLogFileName` requires.

use std::fmt;

use super::Lsn;

/// Why a file name or segment size was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileNameError {
    /// The name does not have one of the four shapes.
    #[error("invalid WAL file name {name:?}: {reason}")]
    Malformed {
        /// The name as given.
        name: String,
        /// Which part is wrong.
        reason: &'static str,
    },
    /// The `Y` part is not below the number of segments per xlog id for this
    /// segment size.
    #[error(
        "invalid WAL file name {name:?}: segment part {seg:08X} must be below {per_id:X} \
         for {segment_size}-byte segments"
    )]
    SegmentOutOfRange {
        /// The name as given.
        name: String,
        /// The `Y` part.
        seg: u32,
        /// Segments per xlog id.
        per_id: u64,
        /// The segment size assumed.
        segment_size: u32,
    },
    /// A backup history file's offset lies outside its segment.
    #[error("invalid backup history file name {name:?}: offset {offset:X} is beyond the {segment_size}-byte segment")]
    BackupOffsetOutOfRange {
        /// The name as given.
        name: String,
        /// The offset part.
        offset: u32,
        /// The segment size assumed.
        segment_size: u32,
    },
    /// A segment size that PostgreSQL does not allow.
    #[error("invalid WAL segment size {got}: expected a power of two from 1 MiB to 1 GiB")]
    InvalidSegmentSize {
        /// The size given.
        got: u64,
    },
}

/// A WAL segment size: a power of two from 1 MiB to 1 GiB (`initdb
/// --wal-segsize`), fixed for the life of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentSize(u32);

impl SegmentSize {
    /// PostgreSQL's default, 16 MiB.
    pub const DEFAULT: SegmentSize = SegmentSize(16 << 20);

    /// Validates a size in bytes.
    pub fn new(bytes: u64) -> Result<SegmentSize, FileNameError> {
        match u32::try_from(bytes) {
            Ok(b) if b.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&b) => Ok(SegmentSize(b)),
            _ => Err(FileNameError::InvalidSegmentSize { got: bytes }),
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u32 {
        self.0
    }

    /// How many segments share one `X` value in a file name
    /// (`XLogSegmentsPerXLogId`).
    pub fn segments_per_xlog_id(self) -> u64 {
        0x1_0000_0000 / u64::from(self.0)
    }
}

impl fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// One segment on one timeline: what a segment file name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// The timeline (never 0).
    pub timeline: u32,
    /// The segment number: the start LSN divided by the segment size.
    pub segno: u64,
}

impl SegmentName {
    /// The segment of `timeline` that contains `lsn`.
    pub fn containing(timeline: u32, lsn: Lsn, size: SegmentSize) -> SegmentName {
        SegmentName { timeline, segno: lsn.0 / u64::from(size.bytes()) }
    }

    /// The LSN of the segment's first byte, or `None` if `segno` is beyond
    /// the 64-bit WAL address space (never the case for a parsed name).
    pub fn start_lsn(&self, size: SegmentSize) -> Option<Lsn> {
        self.segno.checked_mul(u64::from(size.bytes())).map(Lsn)
    }

    /// The LSN just past the segment's last byte, or `None` on overflow.
    pub fn end_lsn(&self, size: SegmentSize) -> Option<Lsn> {
        self.segno.checked_add(1)?.checked_mul(u64::from(size.bytes())).map(Lsn)
    }

    /// The next segment on the same timeline, or `None` on overflow.
    pub fn next(&self) -> Option<SegmentName> {
        Some(SegmentName { timeline: self.timeline, segno: self.segno.checked_add(1)? })
    }

    /// The 24-character file name. A `segno` too large for the name's 8+8
    /// digits (impossible for a parsed name) prints with more digits rather
    /// than being truncated into another segment's name.
    pub fn format(&self, size: SegmentSize) -> String {
        let per_id = size.segments_per_xlog_id();
        format!("{:08X}{:08X}{:08X}", self.timeline, self.segno / per_id, self.segno % per_id)
    }
}

/// A file PostgreSQL hands to `archive_command` or asks `restore_command` for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// A complete WAL segment.
    Segment(SegmentName),
    /// The last, partly-filled segment of a timeline that a promotion left
    /// behind (`.partial`).
    Partial(SegmentName),
    /// A timeline history file (`.history`).
    History {
        /// The timeline the history leads to.
        timeline: u32,
    },
    /// A backup history file (`.backup`) written at the end of a base backup.
    Backup {
        /// The segment in which the backup started.
        segment: SegmentName,
        /// The backup's start position within that segment.
        offset: u32,
    },
}

/// Parses exactly eight upper-case hexadecimal digits.
fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl WalFileName {
    /// Parses a file name (no directory part) for a cluster with segments of
    /// `size`. Timeline 0, lower-case digits, a `Y` part out of range for the
    /// size, or anything other than the four shapes is an error.
    pub fn parse(name: &str, size: SegmentSize) -> Result<WalFileName, FileNameError> {
        let malformed = |reason| FileNameError::Malformed { name: name.to_owned(), reason };
        let timeline = |s: &str| match hex8(s) {
            Some(0) => Err(malformed("timeline 0 is never valid")),
            Some(t) => Ok(t),
            None => Err(malformed("expected 8 upper-case hexadecimal digits for the timeline")),
        };
        if let Some(tli) = name.strip_suffix(".history") {
            return Ok(WalFileName::History { timeline: timeline(tli)? });
        }
        let segment = |s: &str| -> Result<SegmentName, FileNameError> {
            let (Some(t), Some(x), Some(y)) = (s.get(..8), s.get(8..16), s.get(16..)) else {
                return Err(malformed("expected 24 upper-case hexadecimal digits"));
            };
            let tli = timeline(t)?;
            let (Some(log), Some(seg)) = (hex8(x), hex8(y)) else {
                return Err(malformed("expected 24 upper-case hexadecimal digits"));
            };
            let per_id = size.segments_per_xlog_id();
            if u64::from(seg) >= per_id {
                return Err(FileNameError::SegmentOutOfRange {
                    name: name.to_owned(),
                    seg,
                    per_id,
                    segment_size: size.bytes(),
                });
            }
            Ok(SegmentName { timeline: tli, segno: u64::from(log) * per_id + u64::from(seg) })
        };
        if let Some(seg) = name.strip_suffix(".partial") {
            return Ok(WalFileName::Partial(segment(seg)?));
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (Some(seg), Some("."), Some(off)) = (rest.get(..24), rest.get(24..25), rest.get(25..)) else {
                return Err(malformed("expected TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup"));
            };
            let segment = segment(seg)?;
            let offset =
                hex8(off).ok_or_else(|| malformed("expected 8 upper-case hexadecimal digits for the offset"))?;
            if offset >= size.bytes() {
                return Err(FileNameError::BackupOffsetOutOfRange {
                    name: name.to_owned(),
                    offset,
                    segment_size: size.bytes(),
                });
            }
            return Ok(WalFileName::Backup { segment, offset });
        }
        if name.len() != 24 {
            return Err(malformed("expected a segment, .partial, .history or .backup name"));
        }
        Ok(WalFileName::Segment(segment(name)?))
    }

    /// The file name, exactly as PostgreSQL writes it.
    pub fn format(&self, size: SegmentSize) -> String {
        match self {
            WalFileName::Segment(s) => s.format(size),
            WalFileName::Partial(s) => format!("{}.partial", s.format(size)),
            WalFileName::History { timeline } => format!("{timeline:08X}.history"),
            WalFileName::Backup { segment, offset } => {
                format!("{}.{offset:08X}.backup", segment.format(size))
            }
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> u32 {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => s.timeline,
            WalFileName::Backup { segment, .. } => segment.timeline,
            WalFileName::History { timeline } => *timeline,
        }
    }

    /// The segment the file is about, for all kinds but history files.
    pub fn segment(&self) -> Option<SegmentName> {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => Some(*s),
            WalFileName::Backup { segment, .. } => Some(*segment),
            WalFileName::History { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_each_kind_parse() {
        let size = SegmentSize::DEFAULT;
        let seg = SegmentName { timeline: 1, segno: 0x2 };
        assert_eq!(
            WalFileName::parse("000000010000000000000002.00000028.backup", size),
            Ok(WalFileName::Backup { segment: seg, offset: 0x28 })
        );
        assert_eq!(WalFileName::parse("00000002.history", size), Ok(WalFileName::History { timeline: 2 }));
        assert_eq!(WalFileName::parse("000000010000000000000002.partial", size), Ok(WalFileName::Partial(seg)));
    }

    #[test]
    fn segment_part_must_fit_the_segment_size() {
        let name = "000000010000000000000100";
        assert!(matches!(
            WalFileName::parse(name, SegmentSize::DEFAULT),
            Err(FileNameError::SegmentOutOfRange { seg: 0x100, per_id: 0x100, .. })
        ));
        let one_mib = SegmentSize::new(1 << 20).unwrap();
        let parsed = WalFileName::parse(name, one_mib).unwrap();
        assert_eq!(parsed.segment().unwrap().start_lsn(one_mib), Some(Lsn(0x1000_0000)));
    }
}
