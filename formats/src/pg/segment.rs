//! A push-based scan of one WAL segment.
//!
//! [`SegmentScanner`] is fed the segment's bytes in pieces of any size (as
//! they stream past on their way into the repository) and keeps at most one
//! page plus one unfinished record in memory. It validates every page header
//! and every record (header, CRC-32C, block headers) and collects the facts
//! cairn stores per archived segment: record counts, commit and abort times,
//! restore points and whether the segment was switched early.
//!
//! # What belongs to a segment
//! A record belongs to the segment it *starts* in. A segment can begin with
//! the tail of a record from the previous segment (the first page's
//! `xlp_rem_len`); those bytes are counted in
//! [`SegmentSummary::continuation_bytes`] and skipped, because the record's
//! start is not here. A record that starts here but runs into the next
//! segment is reported as [`SegmentSummary::crossing`]: its start is known,
//! its CRC and payload are not, so it is not among the counted records.
//!
//! # Where valid WAL ends
//! Problems with the first page (not WAL, wrong cluster, wrong position)
//! are errors: the bytes are not the segment the caller thinks they are.
//! After the first page, PostgreSQL itself would stop replaying at the first
//! invalid page or record; the scan does the same and records why in
//! [`ScanEnd::Stopped`]. A `.partial` segment normally stops with
//! [`WalError::EndOfWal`]; a complete segment should end with
//! [`ScanEnd::Complete`] or [`ScanEnd::Switch`], which
//! [`SegmentSummary::check_complete`] enforces.

use std::collections::BTreeMap;

use super::page::{is_zero_header, PageHeader, SegmentHeader, LONG_HEADER_SIZE, SHORT_HEADER_SIZE};
use super::record::{
    check_total_len, BlockRef, DecodedRecord, RecordHeader, RestorePoint, XactEvent, RECORD_HEADER_SIZE, RM_XACT_ID,
    RM_XLOG_ID, XLOG_SWITCH,
};
use super::{le_u32, Lsn, WalError};

/// What the caller already knows about the segment, checked against its long
/// page header. Every field is optional; `None` accepts whatever the
/// segment says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// The segment's start LSN, from its file name.
    pub start: Option<Lsn>,
    /// The timeline from the file name: no page may be on a newer one.
    pub timeline: Option<u32>,
    /// The cluster's system identifier (from the stanza).
    pub system_id: Option<u64>,
    /// The WAL segment size in bytes.
    pub segment_size: Option<u32>,
    /// The WAL page size in bytes.
    pub block_size: Option<u32>,
}

/// A record that starts in this segment and ends in the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossingRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    /// `xl_tot_len`.
    pub total_len: u32,
    /// How many of its bytes are in this segment.
    pub bytes_here: u32,
    /// `xl_xid` (always in this segment: records start 8-byte aligned).
    pub xid: u32,
    /// `xl_rmid`, when the whole 24-byte header is in this segment.
    pub rmid: Option<u8>,
    /// `xl_info`, when the whole 24-byte header is in this segment.
    pub info: Option<u8>,
}

/// How the scan of a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every page was valid up to the end of the segment.
    Complete,
    /// An `XLOG_SWITCH` record at `lsn` ended the segment early.
    Switch {
        /// Where the switch record starts.
        lsn: Lsn,
        /// Whether every byte after the switch record is zero (page headers
        /// valid for their position are allowed), as PostgreSQL leaves it.
        tail_zeroed: bool,
    },
    /// Valid WAL stops before the end of the segment, for the reason given;
    /// nothing after it was interpreted.
    Stopped {
        /// Why PostgreSQL would stop reading here.
        error: WalError,
    },
}

/// The facts about one WAL segment.
///
/// Plain fields without serde: the CLI and engine choose their own
/// representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The validated long header of the first page.
    pub header: SegmentHeader,
    /// The timeline of the last valid page (it can be newer than the first
    /// page's on the first segment of a new timeline).
    pub last_timeline: u32,
    /// Bytes at the start that continue a record from the previous segment.
    pub continuation_bytes: u64,
    /// The first record starting in this segment (complete or crossing).
    pub first_record: Option<Lsn>,
    /// The last record starting in this segment (complete or crossing).
    pub last_record: Option<Lsn>,
    /// Where a record after the last complete one would start: its end
    /// rounded up to 8 bytes, PostgreSQL's `EndRecPtr`. This is the LSN a
    /// timeline that ends here switches at. The segment start when no record
    /// completed here.
    pub end_of_records: Lsn,
    /// Complete, CRC-checked records starting in this segment.
    pub records: u64,
    /// `records` broken down by resource manager id (see
    /// [`super::record::rmgr_name`]).
    pub records_per_rmgr: BTreeMap<u8, u64>,
    /// Commits and aborts, in WAL order.
    pub xacts: Vec<XactEvent>,
    /// Restore points, in WAL order.
    pub restore_points: Vec<RestorePoint>,
    /// Pages where an unfinished record was abandoned after a crash
    /// (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`).
    pub overwritten_contrecords: Vec<Lsn>,
    /// The record running into the next segment, if any.
    pub crossing: Option<CrossingRecord>,
    /// How the scan ended.
    pub end: ScanEnd,
}

impl SegmentSummary {
    /// Whether an `XLOG_SWITCH` record ended the segment.
    pub fn saw_switch(&self) -> bool {
        matches!(self.end, ScanEnd::Switch { .. })
    }

    /// Fails with the reason valid WAL stopped early, for callers that hold
    /// a complete (not `.partial`) segment and must not accept a gap.
    pub fn check_complete(&self) -> Result<(), WalError> {
        match &self.end {
            ScanEnd::Stopped { error } => Err(error.clone()),
            ScanEnd::Complete | ScanEnd::Switch { .. } => Ok(()),
        }
    }
}

/// Where the page walk is between pages.
#[derive(Debug)]
enum State {
    /// Nothing read yet: the first page decides between `Skip` and `Between`.
    Start,
    /// Skipping the tail of a record begun in an earlier segment.
    Skip { remaining: u64 },
    /// The next record starts at the next aligned position.
    Between,
    /// Assembling a record that spans pages.
    InRecord { start: Lsn, total: u32, buf: Vec<u8> },
    /// A switch record ended the segment; remaining pages are only checked
    /// for being empty.
    SwitchTail { lsn: Lsn },
    /// Valid WAL ended; remaining bytes are only counted.
    Stopped,
}

/// Push-based scanner of one WAL segment; see the module docs.
///
/// Feed it with [`SegmentScanner::push`] and collect the result with
/// [`SegmentScanner::finish`]. After an error, every later call returns the
/// same error.
#[derive(Debug)]
pub struct SegmentScanner {
    opts: ScanOptions,
    header: Option<SegmentHeader>,
    pending: Vec<u8>,
    received: u64,
    page_index: u64,
    state: State,
    failed: Option<WalError>,
    stop_error: Option<WalError>,
    last_timeline: u32,
    prev_record: Option<Lsn>,
    first_valid: Option<Lsn>,
    last_valid: Option<Lsn>,
    end_of_records: Lsn,
    continuation_bytes: u64,
    records: u64,
    per_rmgr: [u64; 256],
    xacts: Vec<XactEvent>,
    restore_points: Vec<RestorePoint>,
    overwritten: Vec<Lsn>,
    tail_zeroed: bool,
    blocks: Vec<BlockRef>,
}

/// Scans a whole segment held in memory; a convenience over
/// [`SegmentScanner`]. Fewer bytes than the segment size give
/// [`WalError::Incomplete`], more give [`WalError::TrailingBytes`].
pub fn scan_segment(bytes: &[u8], opts: &ScanOptions) -> Result<SegmentSummary, WalError> {
    let mut scanner = SegmentScanner::new(*opts);
    scanner.push(bytes)?;
    scanner.finish()
}

/// Rounds up to PostgreSQL's MAXALIGN (8 bytes), where every record starts.
/// True when every byte is zero; folds 64-byte blocks so that the compiler
/// vectorizes it (a byte-wise `any` with its early exit does not), as the
/// zeroed tail after a switch can be most of a segment.
fn all_zero(b: &[u8]) -> bool {
    let blocks = b.chunks_exact(64);
    let rest = blocks.remainder();
    blocks.map(|c| c.iter().fold(0u8, |a, &x| a | x)).all(|x| x == 0) && rest.iter().all(|&x| x == 0)
}

fn align8(pos: usize) -> usize {
    pos.saturating_add(7) & !7
}

impl SegmentScanner {
    /// Starts a scan that checks the segment against `opts`.
    pub fn new(opts: ScanOptions) -> Self {
        SegmentScanner {
            opts,
            header: None,
            pending: Vec::new(),
            received: 0,
            page_index: 0,
            state: State::Start,
            failed: None,
            stop_error: None,
            last_timeline: 0,
            prev_record: None,
            first_valid: None,
            last_valid: None,
            end_of_records: Lsn::INVALID,
            continuation_bytes: 0,
            records: 0,
            per_rmgr: [0; 256],
            xacts: Vec::new(),
            restore_points: Vec::new(),
            overwritten: Vec::new(),
            tail_zeroed: true,
            blocks: Vec::new(),
        }
    }

    /// The validated long header, once the first 40 bytes have been pushed;
    /// lets a caller refuse a foreign segment before storing the rest.
    pub fn header(&self) -> Option<&SegmentHeader> {
        self.header.as_ref()
    }

    /// Feeds the next bytes of the segment. Fails on a bad first page, on
    /// bytes beyond the segment size, or after an earlier failure.
    pub fn push(&mut self, data: &[u8]) -> Result<(), WalError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.push_inner(data);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn push_inner(&mut self, mut data: &[u8]) -> Result<(), WalError> {
        while !data.is_empty() {
            let Some(header) = self.header else {
                let take = (LONG_HEADER_SIZE - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                self.received += take as u64;
                if self.pending.len() == LONG_HEADER_SIZE {
                    let header = SegmentHeader::parse(&self.pending)?;
                    self.check_expectations(&header)?;
                    self.last_timeline = header.timeline;
                    self.end_of_records = header.start;
                    self.header = Some(header);
                }
                continue;
            };
            let seg = u64::from(header.segment_size);
            let page_size = header.block_size as usize;
            let total = self.received.saturating_add(data.len() as u64);
            if total > seg {
                return Err(WalError::TrailingBytes { segment_size: seg, extra: total - seg });
            }
            if self.pending.is_empty() && data.len() >= page_size {
                let (page, rest) = data.split_at(page_size);
                self.process_page(&header, page);
                data = rest;
                self.received += page_size as u64;
            } else {
                let take = (page_size - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                self.received += take as u64;
                if self.pending.len() == page_size {
                    let page = std::mem::take(&mut self.pending);
                    self.process_page(&header, &page);
                    self.pending = page;
                    self.pending.clear();
                }
            }
        }
        Ok(())
    }

    fn check_expectations(&self, h: &SegmentHeader) -> Result<(), WalError> {
        let o = &self.opts;
        if let Some(start) = o.start.filter(|&s| s != h.start) {
            return Err(WalError::PageAddrMismatch { offset: 0, expected: start, got: h.start });
        }
        if let Some(expected) = o.system_id.filter(|&s| s != h.system_id) {
            return Err(WalError::SystemIdMismatch { expected, got: h.system_id });
        }
        if let Some(expected) = o.segment_size.filter(|&s| s != h.segment_size) {
            return Err(WalError::BadSegmentSize { got: h.segment_size, reason: format!("expected {expected}") });
        }
        if let Some(expected) = o.block_size.filter(|&s| s != h.block_size) {
            return Err(WalError::BadBlockSize { got: h.block_size, reason: format!("expected {expected}") });
        }
        match o.timeline {
            Some(max) if h.timeline > max => Err(WalError::BadTimeline {
                offset: 0,
                got: h.timeline,
                reason: format!("newer than the segment's timeline {max}"),
            }),
            _ => Ok(()),
        }
    }

    fn stop(&mut self, error: WalError) {
        self.stop_error = Some(error);
        self.state = State::Stopped;
    }

    /// Walks one full page: header, continuation, then the records on it.
    fn process_page(&mut self, seg: &SegmentHeader, page: &[u8]) {
        let index = self.page_index;
        self.page_index += 1;
        let offset = index * u64::from(seg.block_size);
        let page_lsn = Lsn(seg.start.0 + offset);
        match self.state {
            State::Stopped => return,
            State::SwitchTail { .. } => {
                self.check_switch_tail(page, 0, page_lsn);
                return;
            }
            _ => {}
        }
        let hdr = if index == 0 {
            seg.page_header()
        } else if is_zero_header(page) {
            let err = match &self.state {
                State::InRecord { start, .. } => WalError::MissingContrecord { record: *start, page: page_lsn },
                State::Skip { .. } => WalError::MissingContrecord { record: seg.start, page: page_lsn },
                _ => WalError::EndOfWal { lsn: page_lsn },
            };
            return self.stop(err);
        } else {
            let checked = PageHeader::parse(page, offset).and_then(|h| {
                h.check_position(offset, seg.version.magic(), page_lsn, self.last_timeline, self.opts.timeline)
                    .map(|()| h)
            });
            match checked {
                Ok(h) => h,
                Err(err) => return self.stop(err),
            }
        };
        self.last_timeline = hdr.timeline;
        if let Err(err) = self.enter_page(&hdr, seg.start, page_lsn) {
            return self.stop(err);
        }
        self.walk_page(seg, page, hdr.size(), page_lsn);
    }

    /// Reconciles the page's continuation flags with the record in progress.
    fn enter_page(&mut self, hdr: &PageHeader, seg_start: Lsn, page_lsn: Lsn) -> Result<(), WalError> {
        let rem = hdr.rem_len;
        let bad = |expected: u64| WalError::BadContrecord { page: page_lsn, expected, got: rem };
        if hdr.is_contrecord() {
            match &self.state {
                State::Start if rem > 0 => self.state = State::Skip { remaining: u64::from(rem) },
                State::Start => return Err(bad(1)),
                State::Skip { remaining } if *remaining != u64::from(rem) => return Err(bad(*remaining)),
                State::InRecord { total, buf, .. } => {
                    let needed = u64::from(*total) - buf.len() as u64;
                    if needed != u64::from(rem) {
                        return Err(bad(needed));
                    }
                }
                State::Between => return Err(bad(0)),
                _ => {}
            }
            return Ok(());
        }
        match &self.state {
            State::Start | State::Between => self.state = State::Between,
            State::Skip { .. } | State::InRecord { .. } if hdr.is_overwrite_contrecord() => {
                self.overwritten.push(page_lsn);
                self.state = State::Between;
            }
            State::Skip { .. } => return Err(WalError::MissingContrecord { record: seg_start, page: page_lsn }),
            State::InRecord { start, .. } => {
                return Err(WalError::MissingContrecord { record: *start, page: page_lsn })
            }
            _ => {}
        }
        Ok(())
    }

    /// Consumes the page payload from `pos` on according to the state.
    fn walk_page(&mut self, seg: &SegmentHeader, page: &[u8], mut pos: usize, page_lsn: Lsn) {
        let size = page.len();
        loop {
            match &mut self.state {
                State::Skip { remaining } => {
                    let n = (*remaining).min((size - pos) as u64);
                    pos += n as usize;
                    *remaining -= n;
                    self.continuation_bytes += n;
                    if *remaining > 0 {
                        return;
                    }
                    pos = align8(pos);
                    self.state = State::Between;
                }
                State::InRecord { start, total, buf } => {
                    let n = (*total as usize - buf.len()).min(size - pos);
                    let had = buf.len();
                    buf.extend_from_slice(&page[pos..pos + n]);
                    pos += n;
                    let (start, complete) = (*start, buf.len() == *total as usize);
                    if had < RECORD_HEADER_SIZE && buf.len() >= RECORD_HEADER_SIZE {
                        let checked = RecordHeader::parse(buf, start)
                            .and_then(|h| h.validate(start, seg.version, self.prev_record));
                        if let Err(err) = checked {
                            return self.stop(err);
                        }
                    }
                    if !complete {
                        return;
                    }
                    let State::InRecord { buf, .. } = std::mem::replace(&mut self.state, State::Between) else {
                        return;
                    };
                    self.finish_record(seg, start, &buf);
                    pos = self.after_record(page, pos, page_lsn);
                }
                State::Between => {
                    if pos >= size {
                        return;
                    }
                    let lsn = Lsn(page_lsn.0 + pos as u64);
                    let total = le_u32(page, pos).unwrap_or(0);
                    if let Err(err) = check_total_len(total, lsn) {
                        return self.stop(err);
                    }
                    let rest = &page[pos..];
                    if rest.len() >= RECORD_HEADER_SIZE {
                        let checked =
                            RecordHeader::parse(rest, lsn).and_then(|h| h.validate(lsn, seg.version, self.prev_record));
                        if let Err(err) = checked {
                            return self.stop(err);
                        }
                    }
                    if let Some(record) = rest.get(..total as usize) {
                        self.finish_record(seg, lsn, record);
                        pos = self.after_record(page, pos + total as usize, page_lsn);
                    } else {
                        self.state = State::InRecord { start: lsn, total, buf: rest.to_vec() };
                        return;
                    }
                }
                State::Start | State::SwitchTail { .. } | State::Stopped => return,
            }
        }
    }

    /// Returns where the next record starts after one ending at `end`, and
    /// checks the page tail when that record was a switch.
    fn after_record(&mut self, page: &[u8], end: usize, page_lsn: Lsn) -> usize {
        if let State::SwitchTail { .. } = self.state {
            self.check_switch_tail(page, end, page_lsn);
            return page.len();
        }
        align8(end)
    }

    /// After a switch, PostgreSQL leaves the rest of the segment zeroed
    /// (a later page may carry a valid short header). Anything else is
    /// noted, not fatal: the WAL before it is intact.
    fn check_switch_tail(&mut self, page: &[u8], from: usize, page_lsn: Lsn) {
        if !self.tail_zeroed {
            return;
        }
        let body_from = if from > 0 || is_zero_header(page) {
            from
        } else {
            match PageHeader::parse(page, 0) {
                Ok(h) if h.page_addr == page_lsn && h.long.is_none() => SHORT_HEADER_SIZE,
                _ => 0,
            }
        };
        if page.get(body_from..).is_some_and(|b| !all_zero(b)) {
            self.tail_zeroed = false;
        }
    }

    /// Validates a complete record and collects its facts.
    fn finish_record(&mut self, seg: &SegmentHeader, lsn: Lsn, bytes: &[u8]) {
        let blocks = std::mem::take(&mut self.blocks);
        let rec = match DecodedRecord::decode_reusing(bytes, lsn, seg.version, blocks) {
            Ok(rec) => rec,
            Err(err) => return self.stop(err),
        };
        let h = rec.header;
        // Only transaction and XLOG records carry facts; asking only them
        // keeps a quarter of a million records a segment off two calls each.
        if h.rmid == RM_XACT_ID {
            match XactEvent::from_record(&rec) {
                Ok(xact) => self.xacts.extend(xact),
                Err(err) => return self.stop(err),
            }
        } else if h.rmid == RM_XLOG_ID {
            match RestorePoint::from_record(&rec) {
                Ok(point) => self.restore_points.extend(point),
                Err(err) => return self.stop(err),
            }
        }
        self.records += 1;
        self.per_rmgr[usize::from(h.rmid)] += 1;
        self.prev_record = Some(lsn);
        self.first_valid.get_or_insert(lsn);
        self.last_valid = Some(lsn);
        // Saturating: only a forged header at the top of the address space
        // could overflow, and that must not panic.
        self.end_of_records = Lsn(lsn.0.saturating_add(u64::from(h.total_len)).saturating_add(7) & !7);
        if h.rmid == RM_XLOG_ID && h.record_type() == XLOG_SWITCH {
            self.state = State::SwitchTail { lsn };
        }
        self.blocks = rec.blocks;
    }

    /// Ends the scan: fails if the segment was shorter than its size (or an
    /// earlier push failed), else returns the summary.
    pub fn finish(self) -> Result<SegmentSummary, WalError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if let Some(h) = &self.header {
            if self.received < u64::from(h.segment_size) {
                return Err(WalError::Incomplete {
                    what: "WAL segment",
                    offset: 0,
                    needed: u64::from(h.segment_size),
                    got: self.received,
                });
            }
        }
        self.summarize()
    }

    /// The summary of what was pushed so far, without ending the scan: for
    /// a segment still being received (a streamed partial segment). When
    /// fewer bytes than the segment size were pushed, the summary ends
    /// with [`ScanEnd::Stopped`] and an [`WalError::Incomplete`] naming
    /// how many bytes arrived; a record begun in the last bytes is the
    /// `crossing` one. Fails like [`SegmentScanner::finish`] on an earlier
    /// failure or before the long page header arrived.
    pub fn summary_so_far(&self) -> Result<SegmentSummary, WalError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let mut copy = SegmentScanner {
            opts: self.opts,
            header: self.header,
            pending: self.pending.clone(),
            received: self.received,
            page_index: self.page_index,
            state: match &self.state {
                State::Start => State::Start,
                State::Skip { remaining } => State::Skip { remaining: *remaining },
                State::Between => State::Between,
                State::InRecord { start, total, buf } => {
                    State::InRecord { start: *start, total: *total, buf: buf.clone() }
                }
                State::SwitchTail { lsn } => State::SwitchTail { lsn: *lsn },
                State::Stopped => State::Stopped,
            },
            failed: None,
            stop_error: self.stop_error.clone(),
            last_timeline: self.last_timeline,
            prev_record: self.prev_record,
            first_valid: self.first_valid,
            last_valid: self.last_valid,
            end_of_records: self.end_of_records,
            continuation_bytes: self.continuation_bytes,
            records: self.records,
            per_rmgr: self.per_rmgr,
            xacts: self.xacts.clone(),
            restore_points: self.restore_points.clone(),
            overwritten: self.overwritten.clone(),
            tail_zeroed: self.tail_zeroed,
            blocks: Vec::new(),
        };
        // The records of a page that has only partly arrived are read as
        // PostgreSQL would read a page zeroed past what was written.
        if let Some(h) = copy.header {
            let pad = (h.block_size as usize).saturating_sub(copy.pending.len());
            if !copy.pending.is_empty() && copy.push_inner(&vec![0u8; pad]).is_err() {
                return Err(self.failed.clone().unwrap_or(WalError::Incomplete {
                    what: "WAL page",
                    offset: self.received,
                    needed: u64::from(h.block_size),
                    got: self.pending.len() as u64,
                }));
            }
            copy.received = self.received;
        }
        if let Some(h) = &copy.header {
            let size = u64::from(h.segment_size);
            if copy.received < size && copy.stop_error.is_none() && !matches!(copy.state, State::SwitchTail { .. }) {
                copy.stop_error =
                    Some(WalError::Incomplete { what: "WAL segment", offset: 0, needed: size, got: copy.received });
            }
        }
        copy.summarize()
    }

    fn summarize(self) -> Result<SegmentSummary, WalError> {
        let Some(header) = self.header else {
            return Err(WalError::Incomplete {
                what: "WAL segment long page header",
                offset: 0,
                needed: LONG_HEADER_SIZE as u64,
                got: self.received,
            });
        };
        let crossing = match &self.state {
            State::InRecord { start, total, buf } => {
                let whole_header = buf.len() >= RECORD_HEADER_SIZE;
                Some(CrossingRecord {
                    lsn: *start,
                    total_len: *total,
                    bytes_here: u32::try_from(buf.len()).unwrap_or(u32::MAX),
                    xid: le_u32(buf, 4).unwrap_or(0),
                    rmid: buf.get(17).copied().filter(|_| whole_header),
                    info: buf.get(16).copied().filter(|_| whole_header),
                })
            }
            _ => None,
        };
        let end = match (self.state, self.stop_error) {
            (State::SwitchTail { lsn }, _) => ScanEnd::Switch { lsn, tail_zeroed: self.tail_zeroed },
            (_, Some(error)) => ScanEnd::Stopped { error },
            _ => ScanEnd::Complete,
        };
        let records_per_rmgr = (0u8..=255).zip(self.per_rmgr).filter(|&(_, n)| n > 0).collect();
        Ok(SegmentSummary {
            header,
            last_timeline: self.last_timeline,
            continuation_bytes: self.continuation_bytes,
            first_record: self.first_valid.or(crossing.map(|c| c.lsn)),
            last_record: crossing.map(|c| c.lsn).or(self.last_valid),
            end_of_records: self.end_of_records,
            records: self.records,
            records_per_rmgr,
            xacts: self.xacts,
            restore_points: self.restore_points,
            overwritten_contrecords: self.overwritten,
            crossing,
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::all_zero;

    #[test]
    fn all_zero_sees_every_byte() {
        for len in [0, 1, 63, 64, 65, 200, 8192] {
            let mut b = vec![0u8; len];
            assert!(all_zero(&b), "{len} zeros");
            for at in 0..len {
                b[at] = 1;
                assert!(!all_zero(&b), "a one at {at} of {len}");
                b[at] = 0;
            }
        }
    }
}
