//! The one error type for WAL pages, records and segment scans.
//!
//! Page-level problems name the byte `offset` in the input (the segment
//! file), because that is where an operator would look with `xxd`; record
//! problems name the record's `lsn`, because that is what `pg_waldump`
//! prints. Both are given where both are known.

use super::Lsn;

/// Why WAL bytes could not be decoded, or where valid WAL stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    /// The input ended before a structure that must be there; more bytes are
    /// needed, and nothing was guessed.
    #[error("incomplete {what} at offset {offset}: needed {needed} bytes, got {got}")]
    Incomplete {
        /// Which structure was cut short.
        what: &'static str,
        /// Offset in the input where the structure starts.
        offset: u64,
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes that were available.
        got: u64,
    },
    /// More bytes were pushed than the segment size in the long page header.
    #[error("{extra} bytes beyond the end of the {segment_size}-byte segment")]
    TrailingBytes {
        /// The segment size from the long page header.
        segment_size: u64,
        /// How many bytes were pushed past it.
        extra: u64,
    },
    /// The page magic is not one of PostgreSQL 13 to 17's XLOG_PAGE_MAGIC
    /// values, so this is either not WAL or WAL of an unsupported version.
    #[error(
        "unknown WAL page magic 0x{magic:04X} at offset {offset} (cairn reads PostgreSQL 13 \
         to 17: 0xD106, 0xD10D, 0xD110, 0xD113, 0xD116)"
    )]
    UnknownMagic {
        /// Offset of the page header.
        offset: u64,
        /// The magic found.
        magic: u16,
    },
    /// A page carries a different (known) magic than the segment's first page.
    #[error("WAL page magic 0x{got:04X} at offset {offset}, but the segment's first page has 0x{expected:04X}")]
    MagicChanged {
        /// Offset of the page header.
        offset: u64,
        /// The first page's magic.
        expected: u16,
        /// The magic found.
        got: u16,
    },
    /// `xlp_info` has bits PostgreSQL never sets, or lacks/has the long
    /// header flag where it must not.
    #[error("invalid page flags 0x{info:04X} at offset {offset}: {reason}")]
    InvalidPageFlags {
        /// Offset of the page header.
        offset: u64,
        /// The `xlp_info` value found.
        info: u16,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A page's `xlp_pageaddr` is not the WAL position the page sits at: a
    /// recycled or misplaced page.
    #[error("page at offset {offset} claims WAL address {got}, expected {expected}")]
    PageAddrMismatch {
        /// Offset of the page header.
        offset: u64,
        /// The address this page must have.
        expected: Lsn,
        /// The address in the header.
        got: Lsn,
    },
    /// The long header's system identifier differs from the expected one:
    /// the segment belongs to another cluster.
    #[error("WAL segment belongs to system {got}, expected system {expected}")]
    SystemIdMismatch {
        /// The system identifier the caller expected.
        expected: u64,
        /// The one in the long page header.
        got: u64,
    },
    /// The long header's segment size is not a power of two between 1 MiB
    /// and 1 GiB, or not the one the caller expected.
    #[error("WAL segment size {got} in the long page header: {reason}")]
    BadSegmentSize {
        /// The value found.
        got: u32,
        /// What was expected instead.
        reason: String,
    },
    /// The long header's WAL block size is not a power of two between 1 KiB
    /// and 64 KiB, or not the one the caller expected.
    #[error("WAL block size {got} in the long page header: {reason}")]
    BadBlockSize {
        /// The value found.
        got: u32,
        /// What was expected instead.
        reason: String,
    },
    /// A page's timeline is zero, newer than the segment's timeline, or older
    /// than the page before it.
    #[error("page at offset {offset} has timeline {got}: {reason}")]
    BadTimeline {
        /// Offset of the page header.
        offset: u64,
        /// The timeline found.
        got: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// A record that runs past the end of a page is not continued on the
    /// next page (no `XLP_FIRST_IS_CONTRECORD` flag).
    #[error("record at {record} is not continued on the page at {page} (no contrecord flag)")]
    MissingContrecord {
        /// Start of the unfinished record (the segment start when the record
        /// began in an earlier segment).
        record: Lsn,
        /// The page that should continue it.
        page: Lsn,
    },
    /// A page says it continues a record, but no record is unfinished, or the
    /// remaining length does not match.
    #[error("invalid continuation on the page at {page}: xlp_rem_len {got}, expected {expected}")]
    BadContrecord {
        /// The page carrying the continuation.
        page: Lsn,
        /// Bytes the unfinished record still needs (0: none is unfinished).
        expected: u64,
        /// The page's `xlp_rem_len`.
        got: u32,
    },
    /// No record starts here: the bytes are zero. This is where PostgreSQL
    /// itself stops replaying, the normal end of a partial segment.
    #[error("end of WAL at {lsn}: the rest of the page is zeros")]
    EndOfWal {
        /// The position where a record would start.
        lsn: Lsn,
    },
    /// `xl_tot_len` is smaller than a record header or larger than any record
    /// PostgreSQL can write.
    #[error("invalid record length at {lsn}: expected {min} to {max} bytes, got {got}")]
    BadRecordLength {
        /// The record's position.
        lsn: Lsn,
        /// The smallest valid length (the header size).
        min: u32,
        /// The largest valid length.
        max: u32,
        /// The length in the header.
        got: u32,
    },
    /// `xl_rmid` names no resource manager of this PostgreSQL version.
    #[error("invalid resource manager id {rmid} in the record at {lsn}")]
    BadRmgr {
        /// The record's position.
        lsn: Lsn,
        /// The id found.
        rmid: u8,
    },
    /// `xl_prev` does not point at the record before: the chain is broken.
    #[error("record at {lsn} has xl_prev {got}, expected {expected}")]
    BadPrevLink {
        /// The record's position.
        lsn: Lsn,
        /// The start of the previous record.
        expected: Lsn,
        /// The `xl_prev` found.
        got: Lsn,
    },
    /// The record's CRC-32C does not match its bytes.
    #[error("CRC mismatch in the record at {lsn}: header says 0x{expected:08X}, bytes give 0x{got:08X}")]
    CrcMismatch {
        /// The record's position.
        lsn: Lsn,
        /// `xl_crc` from the header.
        expected: u32,
        /// The CRC computed over the record.
        got: u32,
    },
    /// The block references or data headers after the record header are
    /// malformed (PostgreSQL's `DecodeXLogRecord` would reject them).
    #[error("invalid record at {lsn}, byte {offset} of the record: {reason}")]
    BadRecordBody {
        /// The record's position.
        lsn: Lsn,
        /// Offset within the record of the offending header field.
        offset: u32,
        /// What is wrong.
        reason: String,
    },
    /// A record's main data is too short for the payload its rmgr and info
    /// say it carries (e.g. a commit record without a timestamp).
    #[error("record at {lsn}: main data too short for {what}: needed {needed} bytes, got {got}")]
    ShortMainData {
        /// The record's position.
        lsn: Lsn,
        /// The payload being decoded.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        got: u64,
    },
}
