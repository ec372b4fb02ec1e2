//! WAL page headers.
//!
//! A WAL segment is a sequence of `XLOG_BLCKSZ`-byte pages (8 KiB unless
//! PostgreSQL was built otherwise). Each page starts with a header; the first
//! page of a segment has the *long* header, which adds the cluster's system
//! identifier, the segment size and the block size, so a segment can be
//! matched to its cluster without any other file. Layout (little-endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 2 | `xlp_magic`, the WAL format version ([`WalVersion`]) |
//! | 2 | 2 | `xlp_info`, flags (`XLP_*`) |
//! | 4 | 4 | `xlp_tli`, timeline of the first record on the page |
//! | 8 | 8 | `xlp_pageaddr`, the page's own WAL address |
//! | 16 | 4 | `xlp_rem_len`, bytes left of a record continued from the previous page |
//! | 20 | 4 | padding (the short header is 24 bytes, MAXALIGNed) |
//! | 24 | 8 | `xlp_sysid` (long header only) |
//! | 32 | 4 | `xlp_seg_size` (long header only) |
//! | 36 | 4 | `xlp_xlog_blcksz` (long header only; the long header is 40 bytes) |

use super::{le_u16, le_u32, le_u64, Lsn, WalError};

/// `XLP_FIRST_IS_CONTRECORD`: the page starts with the rest of a record that
/// began on an earlier page; `xlp_rem_len` says how many bytes are left.
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `XLP_LONG_HEADER`: the page has the long header (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `XLP_BKP_REMOVABLE`: full-page images on this page may be dropped by
/// archive compressors; irrelevant to decoding, but a valid bit.
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD`: the record that should have been
/// continued here was never completed (the server crashed mid-write), and an
/// `XLOG_OVERWRITE_CONTRECORD` record replaces it. Back-patched into 13.5 and
/// 14.1, so every supported version may write it.
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// All flag bits PostgreSQL 13 to 17 define; any other bit means corruption.
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// Size of the short page header (`SizeOfXLogShortPHD`, MAXALIGNed).
pub const SHORT_HEADER_SIZE: usize = 24;
/// Size of the long page header (`SizeOfXLogLongPHD`, MAXALIGNed).
pub const LONG_HEADER_SIZE: usize = 40;

/// Smallest WAL segment size PostgreSQL accepts (`initdb --wal-segsize=1`).
pub const MIN_SEGMENT_SIZE: u32 = 1 << 20;
/// Largest WAL segment size PostgreSQL accepts (1 GiB).
pub const MAX_SEGMENT_SIZE: u32 = 1 << 30;

/// The WAL format version, identified by the page magic.
///
/// PostgreSQL bumps `XLOG_PAGE_MAGIC` whenever the WAL format changes, which
/// happens in every major release; a WAL file is only readable with knowledge
/// of its version (for example, the full-page-image flag bits moved in 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalVersion {
    /// PostgreSQL 13, magic 0xD106.
    V13,
    /// PostgreSQL 14, magic 0xD10D.
    V14,
    /// PostgreSQL 15, magic 0xD110.
    V15,
    /// PostgreSQL 16, magic 0xD113.
    V16,
    /// PostgreSQL 17, magic 0xD116.
    V17,
}

impl WalVersion {
    /// All versions cairn reads, oldest first.
    pub const ALL: [WalVersion; 5] =
        [WalVersion::V13, WalVersion::V14, WalVersion::V15, WalVersion::V16, WalVersion::V17];

    /// Maps a page magic to its version, or `None` for a magic cairn does not
    /// know (another major version, or not WAL at all).
    pub fn from_magic(magic: u16) -> Option<WalVersion> {
        WalVersion::ALL.into_iter().find(|v| v.magic() == magic)
    }

    /// The `XLOG_PAGE_MAGIC` this version writes.
    pub fn magic(self) -> u16 {
        match self {
            WalVersion::V13 => 0xD106,
            WalVersion::V14 => 0xD10D,
            WalVersion::V15 => 0xD110,
            WalVersion::V16 => 0xD113,
            WalVersion::V17 => 0xD116,
        }
    }

    /// The PostgreSQL major version number (13 to 17).
    pub fn major(self) -> u32 {
        match self {
            WalVersion::V13 => 13,
            WalVersion::V14 => 14,
            WalVersion::V15 => 15,
            WalVersion::V16 => 16,
            WalVersion::V17 => 17,
        }
    }
}

/// Fields only the long page header has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeaderFields {
    /// `xlp_sysid`: the cluster's system identifier from `pg_control`.
    pub system_id: u64,
    /// `xlp_seg_size`: the WAL segment size in bytes.
    pub segment_size: u32,
    /// `xlp_xlog_blcksz`: the WAL page size in bytes.
    pub block_size: u32,
}

/// One decoded page header, short or long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// The WAL version from `xlp_magic`.
    pub version: WalVersion,
    /// `xlp_info` flag bits (`XLP_*`).
    pub info: u16,
    /// `xlp_tli`: the timeline of the first record on this page.
    pub timeline: u32,
    /// `xlp_pageaddr`: the WAL address this page claims to be at.
    pub page_addr: Lsn,
    /// `xlp_rem_len`: bytes left of a record continued from the previous
    /// page (meaningful only with [`XLP_FIRST_IS_CONTRECORD`]).
    pub rem_len: u32,
    /// The long header's extra fields, when [`XLP_LONG_HEADER`] is set.
    pub long: Option<LongHeaderFields>,
}

impl PageHeader {
    /// Decodes the header at the start of `buf`, which sits at byte `offset`
    /// of the input (used only in errors).
    ///
    /// Checks what a header can say about itself: a known magic and only
    /// defined flag bits. Whether the header fits its position is checked by
    /// [`PageHeader::check_position`] and [`SegmentHeader::parse`].
    pub fn parse(buf: &[u8], offset: u64) -> Result<PageHeader, WalError> {
        let incomplete = |needed: usize| WalError::Incomplete {
            what: "WAL page header",
            offset,
            needed: needed as u64,
            got: buf.len() as u64,
        };
        let (Some(magic), Some(info), Some(timeline), Some(page_addr), Some(rem_len)) =
            (le_u16(buf, 0), le_u16(buf, 2), le_u32(buf, 4), le_u64(buf, 8), le_u32(buf, 16))
        else {
            return Err(incomplete(SHORT_HEADER_SIZE));
        };
        if buf.len() < SHORT_HEADER_SIZE {
            return Err(incomplete(SHORT_HEADER_SIZE));
        }
        let version = WalVersion::from_magic(magic).ok_or(WalError::UnknownMagic { offset, magic })?;
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(WalError::InvalidPageFlags { offset, info, reason: "undefined flag bits are set" });
        }
        let long = if info & XLP_LONG_HEADER != 0 {
            let (Some(system_id), Some(segment_size), Some(block_size)) =
                (le_u64(buf, 24), le_u32(buf, 32), le_u32(buf, 36))
            else {
                return Err(incomplete(LONG_HEADER_SIZE));
            };
            Some(LongHeaderFields { system_id, segment_size, block_size })
        } else {
            None
        };
        Ok(PageHeader { version, info, timeline, page_addr: Lsn(page_addr), rem_len, long })
    }

    /// The header's size in bytes, which is where the page's payload starts.
    pub fn size(&self) -> usize {
        if self.long.is_some() {
            LONG_HEADER_SIZE
        } else {
            SHORT_HEADER_SIZE
        }
    }

    /// Whether the page starts with the continuation of an earlier record.
    pub fn is_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_CONTRECORD != 0
    }

    /// Whether the page replaces a never-completed record (see
    /// [`XLP_FIRST_IS_OVERWRITE_CONTRECORD`]).
    pub fn is_overwrite_contrecord(&self) -> bool {
        self.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0
    }

    /// Checks a page after the first one of a segment against where it sits:
    /// the same magic as the first page, a short header, the expected WAL
    /// address, and a timeline that neither goes backwards (`min_timeline`,
    /// the previous page's) nor exceeds the segment's own (`max_timeline`).
    ///
    /// The timeline may legitimately rise within a segment: the first segment
    /// of a new timeline begins with pages copied from the old one.
    pub fn check_position(
        &self,
        offset: u64,
        first_magic: u16,
        expected_addr: Lsn,
        min_timeline: u32,
        max_timeline: Option<u32>,
    ) -> Result<(), WalError> {
        let magic = self.version.magic();
        if magic != first_magic {
            return Err(WalError::MagicChanged { offset, expected: first_magic, got: magic });
        }
        if self.long.is_some() {
            return Err(WalError::InvalidPageFlags {
                offset,
                info: self.info,
                reason: "only the first page of a segment has a long header",
            });
        }
        if self.page_addr != expected_addr {
            return Err(WalError::PageAddrMismatch { offset, expected: expected_addr, got: self.page_addr });
        }
        check_timeline(offset, self.timeline, min_timeline, max_timeline)
    }
}

/// Checks one page's timeline against the bounds its position allows.
fn check_timeline(offset: u64, got: u32, min: u32, max: Option<u32>) -> Result<(), WalError> {
    if got == 0 {
        return Err(WalError::BadTimeline { offset, got, reason: "timeline 0 is never valid".into() });
    }
    if got < min {
        return Err(WalError::BadTimeline {
            offset,
            got,
            reason: format!("an earlier page of the segment is already on timeline {min}"),
        });
    }
    match max {
        Some(max) if got > max => {
            Err(WalError::BadTimeline { offset, got, reason: format!("newer than the segment's timeline {max}") })
        }
        _ => Ok(()),
    }
}

/// The validated long header of a segment's first page: everything needed to
/// tell which cluster, timeline and position a WAL segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The WAL version from the page magic.
    pub version: WalVersion,
    /// `xlp_info` of the first page.
    pub info: u16,
    /// Timeline of the first record on the first page. It can be older than
    /// the timeline in the file name (see [`PageHeader::check_position`]).
    pub timeline: u32,
    /// The segment's start LSN (`xlp_pageaddr` of its first page).
    pub start: Lsn,
    /// `xlp_rem_len` of the first page: bytes of a record begun in the
    /// previous segment still to come, when the contrecord flag is set.
    pub rem_len: u32,
    /// The cluster's system identifier.
    pub system_id: u64,
    /// The WAL segment size in bytes.
    pub segment_size: u32,
    /// The WAL page size in bytes.
    pub block_size: u32,
}

impl SegmentHeader {
    /// Decodes and validates the long header at the start of a segment.
    ///
    /// Beyond [`PageHeader::parse`] this requires the long-header flag, a
    /// segment size that is a power of two from 1 MiB to 1 GiB, a block size
    /// that is a power of two from 1 KiB to 64 KiB, a start address on a
    /// segment boundary and a non-zero timeline. Needs at least
    /// [`LONG_HEADER_SIZE`] bytes, else [`WalError::Incomplete`].
    pub fn parse(buf: &[u8]) -> Result<SegmentHeader, WalError> {
        let page = PageHeader::parse(buf, 0)?;
        let Some(long) = page.long else {
            return Err(WalError::InvalidPageFlags {
                offset: 0,
                info: page.info,
                reason: "the first page of a segment must have a long header",
            });
        };
        let seg = long.segment_size;
        if !seg.is_power_of_two() || !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&seg) {
            return Err(WalError::BadSegmentSize {
                got: seg,
                reason: "expected a power of two from 1 MiB to 1 GiB".into(),
            });
        }
        let blk = long.block_size;
        if !blk.is_power_of_two() || !(1024..=65536).contains(&blk) {
            return Err(WalError::BadBlockSize {
                got: blk,
                reason: "expected a power of two from 1 KiB to 64 KiB".into(),
            });
        }
        if page.page_addr.0 % u64::from(seg) != 0 {
            return Err(WalError::PageAddrMismatch {
                offset: 0,
                expected: Lsn(page.page_addr.0 - page.page_addr.0 % u64::from(seg)),
                got: page.page_addr,
            });
        }
        check_timeline(0, page.timeline, 0, None)?;
        Ok(SegmentHeader {
            version: page.version,
            info: page.info,
            timeline: page.timeline,
            start: page.page_addr,
            rem_len: page.rem_len,
            system_id: long.system_id,
            segment_size: seg,
            block_size: blk,
        })
    }

    /// The first page's header in the general form, for code that walks
    /// pages uniformly.
    pub fn page_header(&self) -> PageHeader {
        PageHeader {
            version: self.version,
            info: self.info,
            timeline: self.timeline,
            page_addr: self.start,
            rem_len: self.rem_len,
            long: Some(LongHeaderFields {
                system_id: self.system_id,
                segment_size: self.segment_size,
                block_size: self.block_size,
            }),
        }
    }
}

/// Whether a page header is all zeros: a page PostgreSQL never wrote, which
/// ends valid WAL rather than corrupting it.
pub(crate) fn is_zero_header(buf: &[u8]) -> bool {
    buf.iter().take(SHORT_HEADER_SIZE).all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_round_trips_for_every_version() {
        for v in WalVersion::ALL {
            assert_eq!(WalVersion::from_magic(v.magic()), Some(v));
        }
        assert_eq!(WalVersion::from_magic(0xD101), None);
        assert_eq!(WalVersion::V15.major(), 15);
    }

    #[test]
    fn short_header_needs_24_bytes() {
        let err = PageHeader::parse(&[0x10, 0xD1, 0, 0], 8192).unwrap_err();
        assert!(matches!(err, WalError::Incomplete { offset: 8192, needed: 24, got: 4, .. }));
    }
}
