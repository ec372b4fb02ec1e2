//! A tiny WAL writer for tests: lays records out exactly as PostgreSQL does
//! (8-byte alignment, long header on each segment's first page, short
//! headers with `XLP_FIRST_IS_CONTRECORD` and `xlp_rem_len` where a record
//! continues), so the decoder can be tested on cases a real server produces
//! only by chance: header split across pages, records crossing segments,
//! overwritten continuations, corruption at a chosen byte.
#![allow(dead_code)]

use std::collections::BTreeMap;

use cairn_formats::pg::record::rmgr_name;
use cairn_formats::pg::{timestamptz_to_unix_micros, Lsn, ScanEnd, SegmentSummary, XactKind};

/// Page magic of PostgreSQL 15.
pub const MAGIC_15: u16 = 0xD110;
/// Page magic of PostgreSQL 14.
pub const MAGIC_14: u16 = 0xD10D;
/// The WAL page size every builder uses.
pub const BLCKSZ: usize = 8192;
/// The system identifier every builder writes.
pub const SYSID: u64 = 0x0123_4567_89AB_CDEF;

/// Builds a WAL stream covering `segments` segments of `seg_size` bytes.
pub struct WalBuilder {
    pub magic: u16,
    pub seg_size: usize,
    pub tli: u32,
    pub start: u64,
    pub bytes: Vec<u8>,
    pos: usize,
    prev: u64,
    written_pages: usize,
}

impl WalBuilder {
    /// A stream of `segments` segments starting at segment number `segno`.
    pub fn new(magic: u16, seg_size: usize, segno: u64, segments: usize) -> Self {
        WalBuilder {
            magic,
            seg_size,
            tli: 1,
            start: segno * seg_size as u64,
            bytes: vec![0; seg_size * segments],
            pos: 0,
            prev: 0,
            written_pages: 0,
        }
    }

    /// Writes the header of page `page` (if not yet written).
    fn page_header(&mut self, page: usize, rem_len: u32, extra_flags: u16) {
        if page < self.written_pages {
            return;
        }
        let off = page * BLCKSZ;
        let long = off.is_multiple_of(self.seg_size);
        let mut info: u16 = extra_flags;
        if rem_len > 0 {
            info |= 0x0001;
        }
        if long {
            info |= 0x0002;
        }
        let h = &mut self.bytes[off..off + 40];
        h[0..2].copy_from_slice(&self.magic.to_le_bytes());
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&self.tli.to_le_bytes());
        h[8..16].copy_from_slice(&(self.start + off as u64).to_le_bytes());
        h[16..20].copy_from_slice(&rem_len.to_le_bytes());
        if long {
            h[24..32].copy_from_slice(&SYSID.to_le_bytes());
            h[32..36].copy_from_slice(&(self.seg_size as u32).to_le_bytes());
            h[36..40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
        }
        self.written_pages = page + 1;
    }

    fn header_size(&self, page: usize) -> usize {
        if (page * BLCKSZ).is_multiple_of(self.seg_size) {
            40
        } else {
            24
        }
    }

    /// Moves the insert position to the next 8-byte boundary, skipping a page
    /// header if the position is at a page start. Returns false at the end.
    fn align(&mut self) -> bool {
        self.pos = (self.pos + 7) & !7;
        if self.pos >= self.bytes.len() {
            return false;
        }
        if self.pos.is_multiple_of(BLCKSZ) {
            let page = self.pos / BLCKSZ;
            self.page_header(page, 0, 0);
            self.pos += self.header_size(page);
        }
        true
    }

    /// Where the next record will start.
    pub fn next_lsn(&mut self) -> u64 {
        self.align();
        self.start + self.pos as u64
    }

    /// Moves the insert position forward so the next record starts `gap`
    /// bytes before the end of the current page (a multiple of 8).
    pub fn pad_to_page_end(&mut self, gap: usize) {
        self.align();
        let page_end = (self.pos / BLCKSZ + 1) * BLCKSZ;
        assert!(page_end - self.pos >= gap, "already past that point");
        // A NOOP record of exactly the right length fills the space, as an
        // unrelated record would in real WAL.
        let fill = page_end - gap - self.pos;
        if fill > 0 {
            assert!(fill >= 32, "cannot fill {fill} bytes with a record");
            let body = if fill - 26 < 256 {
                main_data(&vec![0u8; fill - 26])
            } else {
                let mut b = vec![254];
                b.extend_from_slice(&((fill - 29) as u32).to_le_bytes());
                b.extend_from_slice(&vec![0u8; fill - 29]);
                b
            };
            self.record(0, 0x20, 0, &body);
        }
        self.align();
        assert_eq!(page_end - self.pos, gap, "padding did not land");
    }

    /// Appends a record with the given rmgr, info, xid and body (everything
    /// after the 24-byte header), with a correct CRC. Returns its LSN.
    pub fn record(&mut self, rmid: u8, info: u8, xid: u32, body: &[u8]) -> u64 {
        let rec = make_record(rmid, info, xid, self.prev, body);
        self.raw_record(&rec)
    }

    /// Appends pre-built record bytes (already containing xl_prev etc.).
    pub fn raw_record(&mut self, rec: &[u8]) -> u64 {
        assert!(self.align(), "WAL stream full");
        let lsn = self.start + self.pos as u64;
        let mut remaining = rec;
        while !remaining.is_empty() {
            if self.pos >= self.bytes.len() {
                break;
            }
            if self.pos.is_multiple_of(BLCKSZ) {
                let page = self.pos / BLCKSZ;
                self.page_header(page, remaining.len() as u32, 0);
                self.pos += self.header_size(page);
            }
            let room = BLCKSZ - self.pos % BLCKSZ;
            let n = room.min(remaining.len());
            self.bytes[self.pos..self.pos + n].copy_from_slice(&remaining[..n]);
            self.pos += n;
            remaining = &remaining[n..];
        }
        self.prev = lsn;
        lsn
    }

    /// Writes headers on every page not yet written (as a server that wrote
    /// nothing there would not; used to make "complete" test segments).
    pub fn fill_headers(&mut self) {
        let pages = self.bytes.len() / BLCKSZ;
        for p in self.written_pages..pages {
            self.page_header(p, 0, 0);
        }
    }

    /// Marks page `page` as the place where a record was abandoned: clears
    /// its contrecord flag and sets `XLP_FIRST_IS_OVERWRITE_CONTRECORD`, and
    /// lets the next record start right after its header.
    pub fn overwrite_at_page(&mut self, page: usize) {
        let off = page * BLCKSZ;
        let info = u16::from_le_bytes([self.bytes[off + 2], self.bytes[off + 3]]);
        let info = (info & !0x0001) | 0x0008;
        self.bytes[off + 2..off + 4].copy_from_slice(&info.to_le_bytes());
        self.bytes[off + 16..off + 20].copy_from_slice(&0u32.to_le_bytes());
        for b in &mut self.bytes[off + 24..] {
            *b = 0;
        }
        self.written_pages = page + 1;
        self.pos = off + self.header_size(page);
    }

    /// Sets `xl_prev` for the next record (to simulate what follows an
    /// abandoned record).
    pub fn set_prev(&mut self, prev: u64) {
        self.prev = prev;
    }

    /// Segment `i` of the stream.
    pub fn segment(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.seg_size..(i + 1) * self.seg_size]
    }
}

/// Builds a record: header with CRC, then `body`.
pub fn make_record(rmid: u8, info: u8, xid: u32, prev: u64, body: &[u8]) -> Vec<u8> {
    let total = 24 + body.len();
    let mut rec = Vec::with_capacity(total);
    rec.extend_from_slice(&(total as u32).to_le_bytes());
    rec.extend_from_slice(&xid.to_le_bytes());
    rec.extend_from_slice(&prev.to_le_bytes());
    rec.push(info);
    rec.push(rmid);
    rec.extend_from_slice(&[0, 0]);
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(body);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[24..]), &rec[..20]);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// A record body holding only main data (short or long data header).
pub fn main_data(data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if data.len() < 256 {
        body.push(255);
        body.push(data.len() as u8);
    } else {
        body.push(254);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    }
    body.extend_from_slice(data);
    body
}

/// Main data of a commit/abort record with no optional parts.
pub fn xact_data(time: i64) -> Vec<u8> {
    main_data(&time.to_le_bytes())
}

/// Main data of `xl_restore_point`.
pub fn restore_point_data(time: i64, name: &str) -> Vec<u8> {
    let mut d = time.to_le_bytes().to_vec();
    let mut n = [0u8; 64];
    n[..name.len()].copy_from_slice(name.as_bytes());
    d.extend_from_slice(&n);
    main_data(&d)
}

/// Converts unix microseconds to a civil UTC date-time string in
/// `pg_waldump`'s format: `YYYY-MM-DD HH:MM:SS.ffffff UTC`.
pub fn format_utc_micros(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let frac = unix_micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{frac:06} UTC", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// One record as `pg_waldump` prints it.
#[derive(Debug)]
pub struct Dumped {
    pub rmgr: String,
    pub xid: u32,
    pub lsn: Lsn,
    pub desc: String,
}

fn field<'l>(line: &'l str, key: &str) -> &'l str {
    let start = line.find(key).unwrap_or_else(|| panic!("no {key:?} in pg_waldump line {line}")) + key.len();
    let rest = line[start..].trim_start();
    rest.split(',').next().unwrap().trim()
}

/// Parses `pg_waldump`'s record lines (other lines are ignored).
pub fn parse_waldump(text: &str) -> Vec<Dumped> {
    text.lines()
        .filter(|l| l.starts_with("rmgr: "))
        .map(|l| Dumped {
            rmgr: l["rmgr: ".len()..].split_whitespace().next().unwrap().to_owned(),
            xid: field(l, "tx:").parse().unwrap(),
            lsn: field(l, "lsn:").parse().unwrap(),
            desc: l[l.find("desc: ").unwrap() + 6..].to_owned(),
        })
        .collect()
}

/// `(lsn, kind, xid, time)` of a transaction end as `pg_waldump` shows it.
pub fn dumped_xact(d: &Dumped) -> Option<(Lsn, XactKind, u32, String)> {
    let (word, rest) = d.desc.split_once(' ')?;
    let kind = match word {
        "COMMIT" => XactKind::Commit,
        "ABORT" => XactKind::Abort,
        "COMMIT_PREPARED" => XactKind::CommitPrepared,
        "ABORT_PREPARED" => XactKind::AbortPrepared,
        _ => return None,
    };
    let (xid, rest) = match kind {
        XactKind::CommitPrepared | XactKind::AbortPrepared => {
            let (x, r) = rest.split_once(": ").unwrap();
            (x.parse().unwrap(), r)
        }
        _ => (d.xid, rest),
    };
    let time = &rest[..rest.find(" UTC").expect("pg_waldump must print UTC times") + 4];
    Some((d.lsn, kind, xid, time.to_owned()))
}

/// Asserts that cairn's summary of segment `name` says what `pg_waldump`
/// printed for the records starting in it (`here`, in WAL order): first and
/// last record, the crossing record as far as this segment holds it,
/// records per resource manager, commits and aborts with xid and time,
/// restore points and the switch record.
pub fn assert_segment_matches_waldump(name: &str, s: &SegmentSummary, here: &[&Dumped]) {
    assert_eq!(s.first_record, here.first().map(|d| d.lsn), "{name}: first record");
    assert_eq!(s.last_record, here.last().map(|d| d.lsn), "{name}: last record");
    // The crossing record is checked by what this segment holds of it.
    let crossing = s.crossing.map(|c| c.lsn);
    if let Some(c) = s.crossing {
        let d = here.last().unwrap();
        assert_eq!((d.lsn, d.xid), (c.lsn, c.xid), "{name}: crossing record");
        if let Some(rmid) = c.rmid {
            assert_eq!(rmgr_name(rmid), Some(d.rmgr.as_str()), "{name}: crossing record rmgr");
        }
    }
    let complete: Vec<&Dumped> = here.iter().copied().filter(|d| Some(d.lsn) != crossing).collect();
    let mut expected_rmgr: BTreeMap<String, u64> = BTreeMap::new();
    for d in &complete {
        *expected_rmgr.entry(d.rmgr.clone()).or_default() += 1;
    }
    let got_rmgr: BTreeMap<String, u64> =
        s.records_per_rmgr.iter().map(|(&id, &n)| (rmgr_name(id).unwrap_or("custom").to_owned(), n)).collect();
    assert_eq!(got_rmgr, expected_rmgr, "{name}: records per rmgr");
    assert_eq!(s.records, complete.len() as u64, "{name}: record count");
    let expected_xacts: Vec<_> = complete.iter().filter_map(|d| dumped_xact(d)).collect();
    let got_xacts: Vec<_> = s
        .xacts
        .iter()
        .map(|x| {
            let micros = timestamptz_to_unix_micros(x.time).expect("finite commit time");
            (x.lsn, x.kind, x.xid, format_utc_micros(micros))
        })
        .collect();
    assert_eq!(got_xacts, expected_xacts, "{name}: commits and aborts");
    let expected_rps: Vec<_> = complete
        .iter()
        .filter_map(|d| d.desc.strip_prefix("RESTORE_POINT ").map(|n| (d.lsn, n.trim().to_owned())))
        .collect();
    let got_rps: Vec<_> = s.restore_points.iter().map(|r| (r.lsn, r.name.clone())).collect();
    assert_eq!(got_rps, expected_rps, "{name}: restore points");
    let expected_switch = complete.iter().find(|d| d.rmgr == "XLOG" && d.desc.starts_with("SWITCH")).map(|d| d.lsn);
    let got_switch = match s.end {
        ScanEnd::Switch { lsn, .. } => Some(lsn),
        _ => None,
    };
    assert_eq!(got_switch, expected_switch, "{name}: switch record");
}
