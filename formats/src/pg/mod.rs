//! PostgreSQL's on-disk formats that a WAL archive and a base backup carry.
//!
//! cairn stores PostgreSQL's WAL and base backups byte for byte, but it also
//! needs to *understand* them: `wal push` must refuse a segment that belongs
//! to another cluster before it is stored, and point-in-time recovery must
//! know which segment holds which commit time and restore point before a
//! restore starts. Everything here decodes bytes that the engine has already
//! read; nothing opens a file or runs a program.
//!
//! # Layout
//! - [`page`]: WAL page headers (long and short) and the XLOG_PAGE_MAGIC
//!   values of PostgreSQL 13 to 17 ([`WalVersion`]).
//! - [`record`]: the `XLogRecord` header, its CRC-32C, block references and
//!   main data, and the transaction and restore-point payloads cairn reads.
//! - [`segment`]: [`SegmentScanner`], a push-based scan of one WAL segment
//!   that yields a [`SegmentSummary`] (record counts, commits, aborts,
//!   restore points, switch records, records crossing the segment's ends).
//! - [`filename`]: WAL file names (segments, `.partial`, `.history`,
//!   `.backup`), segment sizes and [`Lsn`] arithmetic.
//! - [`timeline`]: timeline history files.
//! - [`manifest`]: `backup_manifest` (versions 1 and 2) and a streaming
//!   per-file checker.
//!
//! **Invariant:** no function here panics on any input; short input is
//! reported as incomplete rather than guessed at, and every error names
//! where (offset, LSN, line or path) and what was expected.
//!
//! # Example
//! ```
//! use cairn_formats::pg::{Lsn, SegmentSize, WalFileName};
//!
//! let size = SegmentSize::DEFAULT;
//! let name = WalFileName::parse("000000010000000A000000FF", size).unwrap();
//! let WalFileName::Segment(seg) = name else { unreachable!() };
//! assert_eq!(seg.timeline, 1);
//! assert_eq!(seg.start_lsn(size), Some("A/FF000000".parse::<Lsn>().unwrap()));
//! assert_eq!(name.format(size), "000000010000000A000000FF");
//! ```

pub mod filename;
pub mod manifest;
pub mod page;
pub mod record;
pub mod segment;
pub mod timeline;

mod error;

use std::fmt;
use std::str::FromStr;

pub use error::WalError;
pub use filename::{FileNameError, SegmentName, SegmentSize, WalFileName};
pub use manifest::{BackupManifest, ChecksumAlgorithm, FileChecker, ManifestError, ManifestFile, WalRange};
pub use page::{PageHeader, SegmentHeader, WalVersion};
pub use record::{DecodedRecord, RecordHeader, RestorePoint, XactEvent, XactKind};
pub use segment::{scan_segment, CrossingRecord, ScanEnd, ScanOptions, SegmentScanner, SegmentSummary};
pub use timeline::{parse_timeline_history, TimelineHistoryEntry, TimelineHistoryError};

/// A position in the WAL stream (PostgreSQL's `XLogRecPtr`).
///
/// PostgreSQL prints and parses it as two 32-bit hexadecimal halves, `X/Y`;
/// [`fmt::Display`] and [`FromStr`] use that form so values can be compared
/// with what `psql`, `pg_waldump` and history files show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `InvalidXLogRecPtr`: PostgreSQL uses zero to mean "no position".
    pub const INVALID: Lsn = Lsn(0);

    /// Adds `bytes`, or returns `None` where the WAL address space (64 bits)
    /// would overflow, which no valid WAL ever reaches.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a string is not an LSN in PostgreSQL's `X/Y` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {input:?}: expected two hexadecimal numbers of 1 to 8 digits separated by '/'")]
pub struct ParseLsnError {
    /// The text that failed to parse, kept so the message can quote it.
    pub input: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Parses `X/Y` the way PostgreSQL's `pg_lsn` input does: each half is
    /// 1 to 8 hexadecimal digits, in either case, with nothing around them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError { input: s.to_owned() };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |part: &str| -> Option<u64> {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u64::from_str_radix(part, 16).ok()
        };
        let hi = half(hi).ok_or_else(err)?;
        let lo = half(lo).ok_or_else(err)?;
        Ok(Lsn((hi << 32) | lo))
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's epoch
/// (2000-01-01 00:00:00 UTC), the origin of every `TimestampTz`.
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Converts a PostgreSQL `TimestampTz` (microseconds since 2000-01-01 UTC,
/// as stored in commit records and restore points) to microseconds since
/// the Unix epoch.
///
/// Returns `None` for PostgreSQL's `-infinity` and `infinity` sentinels
/// (`i64::MIN`, `i64::MAX`) and for values whose conversion would overflow,
/// because those are not points in time a restore could target.
pub fn timestamptz_to_unix_micros(ts: i64) -> Option<i64> {
    if ts == i64::MIN || ts == i64::MAX {
        return None;
    }
    ts.checked_add(POSTGRES_EPOCH_UNIX_MICROS)
}

/// Converts microseconds since the Unix epoch to a PostgreSQL `TimestampTz`,
/// the inverse of [`timestamptz_to_unix_micros`], or `None` on overflow.
pub fn unix_micros_to_timestamptz(micros: i64) -> Option<i64> {
    micros.checked_sub(POSTGRES_EPOCH_UNIX_MICROS)
}

/// Reads a little-endian `u16` at `at`, or `None` when `buf` is too short.
///
/// PostgreSQL writes WAL in the server's native byte order; cairn supports
/// the little-endian platforms it runs on (x86-64, AArch64), and the page
/// magic check rejects big-endian WAL because its magic reads byte-swapped.
pub(crate) fn le_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

/// Reads a little-endian `u32` at `at`, or `None` when `buf` is too short.
pub(crate) fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Reads a little-endian `u64` at `at`, or `None` when `buf` is too short.
pub(crate) fn le_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = buf.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parses_and_prints_like_postgres() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::INVALID);
        assert_eq!("ffffffff/ffffffff".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
        for bad in ["", "/", "0/", "/0", "1/2/3", "123456789/0", "0x1/0", " 1/0", "g/0"] {
            let err = bad.parse::<Lsn>().unwrap_err();
            assert_eq!(err.input, bad);
        }
    }

    #[test]
    fn timestamps_convert_between_epochs() {
        assert_eq!(timestamptz_to_unix_micros(0), Some(POSTGRES_EPOCH_UNIX_MICROS));
        assert_eq!(timestamptz_to_unix_micros(i64::MAX), None);
        assert_eq!(timestamptz_to_unix_micros(i64::MIN), None);
        assert_eq!(timestamptz_to_unix_micros(i64::MAX - 1), None);
        assert_eq!(unix_micros_to_timestamptz(POSTGRES_EPOCH_UNIX_MICROS), Some(0));
        assert_eq!(unix_micros_to_timestamptz(i64::MIN), None);
    }
}
