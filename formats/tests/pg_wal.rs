//! WAL page, record and segment-scan tests on synthetic WAL laid out the way
//! PostgreSQL lays it out (see `common/pg.rs`), including the rare shapes a
//! real server produces only by chance, and on the committed fixtures.

#[path = "common/pg.rs"]
mod pg_common;

use cairn_formats::pg::page::{PageHeader, SegmentHeader};
use cairn_formats::pg::record::{record_crc, DecodedRecord, ImageCompression};
use cairn_formats::pg::{scan_segment, Lsn, ScanEnd, ScanOptions, SegmentScanner, WalError, WalVersion, XactKind};
use pg_common::*;
use pg_common::{assert_segment_matches_waldump, parse_waldump, Dumped};
use proptest::prelude::*;

const MIB: usize = 1 << 20;

/// Checks that an error is the expected one.
type ErrorCheck = fn(&WalError) -> bool;
/// Segment bytes, the options to scan them with, and the expected error.
type HeaderCase = (Vec<u8>, ScanOptions, ErrorCheck);

fn opts() -> ScanOptions {
    ScanOptions::default()
}

fn stopped(summary: &cairn_formats::pg::SegmentSummary) -> &WalError {
    match &summary.end {
        ScanEnd::Stopped { error } => error,
        other => panic!("expected the scan to stop, got {other:?}"),
    }
}

/// One segment with commits, an abort, a restore point and a big record,
/// ending in a record that crosses into the next segment.
fn sample_stream() -> (WalBuilder, Vec<u64>) {
    let mut b = WalBuilder::new(MAGIC_15, MIB, 7, 2);
    let mut lsns = vec![
        b.record(1, 0x00, 700, &xact_data(1_000)),
        b.record(1, 0x20, 701, &xact_data(2_000)),
        b.record(0, 0x70, 0, &restore_point_data(3_000, "before_upgrade")),
        b.record(10, 0x00, 702, &main_data(&vec![7u8; 20_000])),
    ];
    while b.next_lsn() < b.start + MIB as u64 - 4096 {
        lsns.push(b.record(11, 0x00, 703, &main_data(&[1u8; 200])));
    }
    lsns.push(b.record(10, 0x00, 704, &main_data(&vec![9u8; 10_000])));
    lsns.push(b.record(1, 0x00, 704, &xact_data(4_000)));
    b.fill_headers();
    (b, lsns)
}

#[test]
fn scan_collects_facts_of_a_segment() {
    let (b, lsns) = sample_stream();
    let seg_start = b.start;
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    assert_eq!(s.header.version, WalVersion::V15);
    assert_eq!(s.header.start, Lsn(seg_start));
    assert_eq!(s.header.system_id, SYSID);
    assert_eq!(s.continuation_bytes, 0);
    assert_eq!(s.first_record, Some(Lsn(lsns[0])));
    let crossing = s.crossing.expect("the 10 kB record crosses into segment 2");
    assert_eq!(crossing.lsn.0, lsns[lsns.len() - 2]);
    assert_eq!(crossing.xid, 704);
    assert_eq!(crossing.rmid, Some(10));
    assert_eq!(s.last_record, Some(crossing.lsn));
    // Every record but the crossing one and the final commit is in segment 1.
    assert_eq!(s.records, (lsns.len() - 2) as u64);
    assert_eq!(s.records_per_rmgr[&1], 2);
    assert_eq!(s.records_per_rmgr[&0], 1);
    assert_eq!(s.records_per_rmgr[&10], 1);
    assert_eq!(s.xacts.len(), 2);
    assert_eq!((s.xacts[0].kind, s.xacts[0].xid, s.xacts[0].time), (XactKind::Commit, 700, 1_000));
    assert_eq!((s.xacts[1].kind, s.xacts[1].xid, s.xacts[1].time), (XactKind::Abort, 701, 2_000));
    assert_eq!(s.restore_points.len(), 1);
    assert_eq!(s.restore_points[0].name, "before_upgrade");
    assert_eq!(s.restore_points[0].time, 3_000);
    assert_eq!(s.end, ScanEnd::Complete);
    s.check_complete().unwrap();

    // Segment 2 starts with the crossing record's tail, then the commit.
    let s2 = scan_segment(b.segment(1), &opts()).unwrap();
    assert_eq!(s2.continuation_bytes, u64::from(crossing.total_len - crossing.bytes_here));
    assert_eq!(s2.first_record, Some(Lsn(lsns[lsns.len() - 1])));
    assert_eq!(s2.xacts.len(), 1);
    assert_eq!(s2.xacts[0].time, 4_000);
    // The rest of segment 2 was never written: valid WAL ends there.
    assert!(matches!(stopped(&s2), WalError::EndOfWal { .. }));
}

#[test]
fn record_header_split_across_pages_is_reassembled() {
    for gap in [8, 16] {
        let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 1);
        b.record(1, 0x00, 5, &xact_data(1));
        b.pad_to_page_end(gap);
        let split = b.record(1, 0x00, 6, &xact_data(42));
        assert_eq!(split % BLCKSZ as u64, (BLCKSZ - gap) as u64);
        let after = b.record(1, 0x20, 7, &xact_data(43));
        let s = scan_segment(b.segment(0), &opts()).unwrap();
        let times: Vec<_> = s.xacts.iter().map(|x| (x.lsn.0, x.xid, x.time)).collect();
        assert_eq!(times, vec![(s.xacts[0].lsn.0, 5, 1), (split, 6, 42), (after, 7, 43)]);
    }
}

#[test]
fn header_split_at_segment_end_reports_partial_crossing() {
    let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 2);
    while b.next_lsn() < b.start + MIB as u64 - BLCKSZ as u64 {
        b.record(11, 0x10, 1, &main_data(&[0; 100]));
    }
    b.pad_to_page_end(8);
    let lsn = b.record(1, 0x00, 99, &xact_data(5));
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    let c = s.crossing.unwrap();
    assert_eq!((c.lsn.0, c.xid, c.bytes_here, c.rmid, c.info), (lsn, 99, 8, None, None));
    assert_eq!(s.end, ScanEnd::Complete);
}

#[test]
fn crc_mismatch_stops_the_scan_at_that_record() {
    let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 1);
    b.record(1, 0x00, 5, &xact_data(1));
    let bad = b.record(1, 0x00, 6, &xact_data(2));
    let off = (bad - b.start) as usize + 24 + 2;
    b.bytes[off] ^= 0x01;
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    assert_eq!(s.records, 1);
    assert!(matches!(stopped(&s), WalError::CrcMismatch { lsn, .. } if lsn.0 == bad));
    assert!(s.check_complete().is_err());
    let msg = stopped(&s).to_string();
    assert!(msg.contains("CRC mismatch") && msg.contains(&Lsn(bad).to_string()), "{msg}");
}

#[test]
fn crc_is_computed_over_payload_then_header() {
    let rec = make_record(1, 0, 9, 0x1234, &xact_data(77));
    let stored = u32::from_le_bytes(rec[20..24].try_into().unwrap());
    assert_eq!(record_crc(&rec), Some(stored));
    // The plain CRC over the bytes in file order differs: the order matters.
    let mut naive = rec[..20].to_vec();
    naive.extend_from_slice(&rec[24..]);
    assert_ne!(crc32c::crc32c(&naive), stored);
    assert_eq!(record_crc(&rec[..10]), None);
}

#[test]
fn incomplete_input_is_reported_not_guessed() {
    let (b, _) = sample_stream();
    let seg = b.segment(0);
    for cut in [0, 1, 39, 40, 8191, 8192, MIB - 1] {
        let err = scan_segment(&seg[..cut], &opts()).unwrap_err();
        assert!(matches!(err, WalError::Incomplete { got, .. } if got == cut as u64), "cut {cut}: {err:?}");
    }
    assert!(matches!(PageHeader::parse(&seg[..30], 0), Err(WalError::Incomplete { needed: 40, got: 30, .. })));
    assert!(matches!(
        DecodedRecord::decode(&make_record(1, 0, 1, 0, &xact_data(1))[..30], Lsn(64), WalVersion::V15),
        Err(WalError::Incomplete { needed: 34, got: 30, .. })
    ));
    let mut long = seg.to_vec();
    long.push(0);
    assert_eq!(
        scan_segment(&long, &opts()).unwrap_err(),
        WalError::TrailingBytes { segment_size: MIB as u64, extra: 1 }
    );
}

#[test]
fn unknown_magic_is_a_clear_error() {
    let (mut b, _) = sample_stream();
    b.bytes[0..2].copy_from_slice(&0xD0FFu16.to_le_bytes());
    let err = scan_segment(b.segment(0), &opts()).unwrap_err();
    assert_eq!(err, WalError::UnknownMagic { offset: 0, magic: 0xD0FF });
    let msg = err.to_string();
    assert!(msg.contains("0xD0FF") && msg.contains("offset 0"), "{msg}");

    let (mut b, _) = sample_stream();
    let off = 3 * BLCKSZ;
    b.bytes[off..off + 2].copy_from_slice(&0x1234u16.to_le_bytes());
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    assert_eq!(stopped(&s), &WalError::UnknownMagic { offset: off as u64, magic: 0x1234 });
    // A different known version mid-segment is named as such.
    let (mut b, _) = sample_stream();
    b.bytes[off..off + 2].copy_from_slice(&MAGIC_14.to_le_bytes());
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    assert!(matches!(stopped(&s), WalError::MagicChanged { got: MAGIC_14, .. }));
}

#[test]
fn long_header_rejections() {
    let (b, _) = sample_stream();
    let good = b.segment(0).to_vec();
    let set = |at: usize, val: &[u8]| {
        let mut s = good.clone();
        s[at..at + val.len()].copy_from_slice(val);
        s
    };
    let cases: Vec<HeaderCase> = vec![
        (set(2, &0u16.to_le_bytes()), opts(), |e| matches!(e, WalError::InvalidPageFlags { .. })),
        (set(2, &0x0102u16.to_le_bytes()), opts(), |e| matches!(e, WalError::InvalidPageFlags { .. })),
        (set(32, &(3u32 << 20).to_le_bytes()), opts(), |e| matches!(e, WalError::BadSegmentSize { .. })),
        (set(32, &(2u32 << 30).to_le_bytes()), opts(), |e| matches!(e, WalError::BadSegmentSize { .. })),
        (set(36, &512u32.to_le_bytes()), opts(), |e| matches!(e, WalError::BadBlockSize { .. })),
        (set(4, &0u32.to_le_bytes()), opts(), |e| matches!(e, WalError::BadTimeline { .. })),
        (set(8, &(b.start + 4096).to_le_bytes()), opts(), |e| matches!(e, WalError::PageAddrMismatch { .. })),
        (good.clone(), ScanOptions { system_id: Some(1), ..opts() }, |e| {
            matches!(e, WalError::SystemIdMismatch { expected: 1, got: SYSID })
        }),
        (good.clone(), ScanOptions { segment_size: Some(16 << 20), ..opts() }, |e| {
            matches!(e, WalError::BadSegmentSize { .. })
        }),
        (good.clone(), ScanOptions { block_size: Some(16384), ..opts() }, |e| {
            matches!(e, WalError::BadBlockSize { .. })
        }),
        (good.clone(), ScanOptions { start: Some(Lsn(0)), ..opts() }, |e| {
            matches!(e, WalError::PageAddrMismatch { .. })
        }),
    ];
    for (i, (bytes, o, check)) in cases.into_iter().enumerate() {
        let err = scan_segment(&bytes, &o).unwrap_err();
        assert!(check(&err), "case {i}: {err:?}");
    }
    // Timeline newer than the file name's: the header check catches it too.
    let mut b2 = WalBuilder::new(MAGIC_15, MIB, 7, 1);
    b2.tli = 3;
    b2.record(1, 0, 1, &xact_data(1));
    let err = scan_segment(b2.segment(0), &ScanOptions { timeline: Some(2), ..opts() }).unwrap_err();
    assert!(matches!(err, WalError::BadTimeline { got: 3, .. }));
    assert!(SegmentHeader::parse(&good).is_ok());
    // Matching expectations pass.
    let o = ScanOptions {
        start: Some(Lsn(b.start)),
        timeline: Some(1),
        system_id: Some(SYSID),
        segment_size: Some(MIB as u32),
        block_size: Some(BLCKSZ as u32),
    };
    scan_segment(&good, &o).unwrap();
}

#[test]
fn short_header_rejections_stop_the_scan() {
    let (b, _) = sample_stream();
    let good = b.segment(0).to_vec();
    let page = 5 * BLCKSZ;
    let set = |at: usize, val: &[u8]| {
        let mut s = good.clone();
        s[page + at..page + at + val.len()].copy_from_slice(val);
        s
    };
    let info = u16::from_le_bytes([good[page + 2], good[page + 3]]);
    let cases: Vec<(Vec<u8>, ErrorCheck)> = vec![
        (set(2, &(info | 0x0002).to_le_bytes()), |e| matches!(e, WalError::InvalidPageFlags { .. })),
        (set(2, &(info | 0x0040).to_le_bytes()), |e| matches!(e, WalError::InvalidPageFlags { .. })),
        (set(8, &0u64.to_le_bytes()), |e| matches!(e, WalError::PageAddrMismatch { .. })),
        (set(4, &0u32.to_le_bytes()), |e| matches!(e, WalError::BadTimeline { .. })),
        (set(16, &1u32.to_le_bytes()), |e| matches!(e, WalError::BadContrecord { .. })),
    ];
    for (i, (bytes, check)) in cases.into_iter().enumerate() {
        let s = scan_segment(&bytes, &opts()).unwrap();
        let err = stopped(&s);
        assert!(check(err), "case {i}: {err:?}");
        assert!(err.to_string().contains(&(page as u64).to_string()) || err.to_string().contains('/'));
    }
    // A newer timeline mid-segment is fine (first segment of a new timeline),
    // an older one is not.
    let mut b2 = WalBuilder::new(MAGIC_15, MIB, 7, 1);
    b2.tli = 2;
    while b2.next_lsn() < b2.start + 7 * BLCKSZ as u64 {
        b2.record(1, 0, 1, &xact_data(1));
    }
    let mut bytes = b2.segment(0).to_vec();
    bytes[page + 4..page + 8].copy_from_slice(&1u32.to_le_bytes());
    let s = scan_segment(&bytes, &opts()).unwrap();
    assert!(matches!(stopped(&s), WalError::BadTimeline { got: 1, .. }));
}

#[test]
fn switch_ends_the_segment() {
    let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 1);
    b.record(1, 0x00, 5, &xact_data(1));
    let sw = b.record(0, 0x40, 0, &[]);
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    assert!(s.saw_switch());
    assert_eq!(s.end, ScanEnd::Switch { lsn: Lsn(sw), tail_zeroed: true });
    assert_eq!(s.records, 2);
    s.check_complete().unwrap();
    let mut dirty = b.segment(0).to_vec();
    dirty[MIB - 1] = 1;
    let s = scan_segment(&dirty, &opts()).unwrap();
    assert_eq!(s.end, ScanEnd::Switch { lsn: Lsn(sw), tail_zeroed: false });
}

#[test]
fn missing_and_overwritten_continuations() {
    // A record runs onto page 2, but page 2 does not continue it.
    let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 1);
    b.record(1, 0x00, 5, &xact_data(1));
    let big = b.record(10, 0x00, 6, &main_data(&vec![1u8; 12_000]));
    let page = 1;
    let off = page * BLCKSZ + 2;
    let mut missing = b.segment(0).to_vec();
    missing[off] &= !0x01;
    let s = scan_segment(&missing, &opts()).unwrap();
    assert_eq!(stopped(&s), &WalError::MissingContrecord { record: Lsn(big), page: Lsn(b.start + BLCKSZ as u64) });
    // After a crash, PostgreSQL marks the page and writes an
    // XLOG_OVERWRITE_CONTRECORD record there; the scan resumes.
    let first = b.start + 40;
    b.overwrite_at_page(page);
    b.set_prev(first);
    let mut data = big.to_le_bytes().to_vec();
    data.extend_from_slice(&123i64.to_le_bytes());
    let ow = b.record(0, 0xD0, 0, &main_data(&data));
    b.record(1, 0x00, 7, &xact_data(2));
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    assert_eq!(s.overwritten_contrecords, vec![Lsn(b.start + BLCKSZ as u64)]);
    assert_eq!(ow, b.start + BLCKSZ as u64 + 24);
    assert_eq!(s.xacts.iter().map(|x| x.xid).collect::<Vec<_>>(), vec![5, 7]);
    assert_eq!(s.records, 3);
}

#[test]
fn broken_prev_link_is_detected() {
    let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 1);
    b.record(1, 0x00, 5, &xact_data(1));
    b.set_prev(0x999);
    let bad = b.record(1, 0x00, 6, &xact_data(2));
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    assert_eq!(stopped(&s), &WalError::BadPrevLink { lsn: Lsn(bad), expected: Lsn(b.start + 40), got: Lsn(0x999) });
}

#[test]
fn block_references_and_images_decode_per_version() {
    // One block with a full-page image, some block data, an origin and main
    // data; only the image flag bits vary.
    let body = |bimg_info: u8, hole_offset: u16| {
        let mut v = vec![0u8, 0x10 | 0x20, 4, 0]; // id 0, HAS_IMAGE|HAS_DATA, 4 data bytes
        v.extend_from_slice(&100u16.to_le_bytes()); // image length
        v.extend_from_slice(&hole_offset.to_le_bytes());
        v.push(bimg_info);
        v.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]); // rel 1/2/3
        v.extend_from_slice(&9u32.to_le_bytes()); // block number
        v.extend_from_slice(&[253, 7, 0]); // origin 7
        v.extend_from_slice(&[255, 3]); // 3 bytes of main data
        v.extend_from_slice(&[0xAA; 100]); // image
        v.extend_from_slice(&[0xBB; 4]); // block data
        v.extend_from_slice(&[1, 2, 3]); // main data
        v
    };
    let decode = |bimg_info, hole, version| {
        let rec = make_record(10, 0, 1, 0, &body(bimg_info, hole));
        DecodedRecord::decode(&rec, Lsn(0x28), version).map(|d| {
            assert_eq!((d.blocks[0].rel.rel, d.blocks[0].block, d.origin), (3, 9, Some(7)));
            assert_eq!(d.main_data, &[1, 2, 3]);
            d.blocks[0].image.unwrap()
        })
    };
    // 0x03 is HAS_HOLE|APPLY in 15 ...
    let img = decode(0x03, 40, WalVersion::V15).unwrap();
    assert!(img.apply && img.compression.is_none());
    // ... but HAS_HOLE|IS_COMPRESSED in 14, which needs a hole-length field
    // these bytes lack: the lengths no longer add up, and decode says so.
    assert!(matches!(decode(0x03, 40, WalVersion::V14), Err(WalError::BadRecordBody { .. })));
    // 0x05 is HAS_HOLE|APPLY in 14, HAS_HOLE|PGLZ in 15.
    let img = decode(0x05, 40, WalVersion::V14).unwrap();
    assert!(img.apply && img.compression.is_none());
    assert!(matches!(decode(0x05, 40, WalVersion::V15), Err(WalError::BadRecordBody { .. })));
    // Compression without a hole, per version.
    assert_eq!(decode(0x02, 0, WalVersion::V14).unwrap().compression, Some(ImageCompression::Pglz));
    assert_eq!(decode(0x08, 0, WalVersion::V15).unwrap().compression, Some(ImageCompression::Lz4));
    assert_eq!(decode(0x10, 0, WalVersion::V17).unwrap().compression, Some(ImageCompression::Zstd));
    // A hole offset without the hole flag is rejected.
    assert!(matches!(decode(0x02, 40, WalVersion::V15), Err(WalError::BadRecordBody { .. })));
    // Data lengths that do not add up are rejected with the offset.
    let mut short = body(0x03, 40);
    short.pop();
    let rec = make_record(10, 0, 1, 0, &short);
    let err = DecodedRecord::decode(&rec, Lsn(0x28), WalVersion::V15).unwrap_err();
    assert!(err.to_string().contains("byte"), "{err}");
}

#[test]
fn prepared_transactions_report_the_prepared_xid() {
    // COMMIT_PREPARED with xinfo: dbinfo, 2 subxacts, twophase xid 4242.
    let mut d = 99i64.to_le_bytes().to_vec();
    d.extend_from_slice(&(1u32 | 2 | 16).to_le_bytes());
    d.extend_from_slice(&[0; 8]);
    d.extend_from_slice(&2i32.to_le_bytes());
    d.extend_from_slice(&[0; 8]);
    d.extend_from_slice(&4242u32.to_le_bytes());
    let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 1);
    b.record(1, 0x30 | 0x80, 0, &main_data(&d));
    b.record(1, 0x40 | 0x80, 0, &main_data(&d));
    b.record(1, 0x10, 5, &main_data(&[0; 16])); // PREPARE: not an end
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    let got: Vec<_> = s.xacts.iter().map(|x| (x.kind, x.xid, x.time)).collect();
    assert_eq!(got, vec![(XactKind::CommitPrepared, 4242, 99), (XactKind::AbortPrepared, 4242, 99)]);
    // A commit too short for its timestamp stops the scan with a clear error.
    let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 1);
    b.record(1, 0x00, 5, &main_data(&[1, 2, 3]));
    let s = scan_segment(b.segment(0), &opts()).unwrap();
    assert!(matches!(stopped(&s), WalError::ShortMainData { needed: 8, got: 3, .. }));
}

#[test]
fn a_segment_that_is_all_continuation() {
    let mut b = WalBuilder::new(MAGIC_15, MIB, 1, 3);
    b.record(1, 0x00, 5, &xact_data(1));
    let huge = b.record(10, 0x00, 6, &main_data(&vec![5u8; 2 * MIB + 100_000]));
    b.record(1, 0x00, 6, &xact_data(2));
    let s1 = scan_segment(b.segment(0), &opts()).unwrap();
    assert_eq!(s1.crossing.unwrap().lsn, Lsn(huge));
    let s2 = scan_segment(b.segment(1), &opts()).unwrap();
    assert_eq!((s2.records, s2.first_record, s2.crossing), (0, None, None));
    assert_eq!(s2.end, ScanEnd::Complete);
    let s3 = scan_segment(b.segment(2), &opts()).unwrap();
    assert_eq!(s3.xacts.len(), 1);
    assert!(s3.continuation_bytes > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Feeding the scanner in arbitrary pieces gives the one-shot result.
    #[test]
    fn streaming_equals_one_shot(cuts in proptest::collection::vec(0usize..MIB, 0..12)) {
        let (b, _) = sample_stream();
        let seg = b.segment(0);
        let expected = scan_segment(seg, &opts()).unwrap();
        let mut cuts = cuts;
        cuts.push(0);
        cuts.push(MIB);
        cuts.sort_unstable();
        let mut scanner = SegmentScanner::new(opts());
        for w in cuts.windows(2) {
            scanner.push(&seg[w[0]..w[1]]).unwrap();
        }
        prop_assert_eq!(scanner.finish().unwrap(), expected);
    }

    /// Any single corrupted byte is caught or harmless; the scan never panics.
    #[test]
    fn corruption_never_panics(at in 0usize..MIB, xor in 1u8..=255) {
        let (b, _) = sample_stream();
        let mut seg = b.segment(0).to_vec();
        seg[at] ^= xor;
        let _ = scan_segment(&seg, &opts());
    }
}

/// A real PostgreSQL 15 segment (see `testdata/pg/README.md`) decodes to
/// exactly what `pg_waldump` printed for it, without needing PostgreSQL.
#[test]
fn real_postgres_15_fixture_matches_its_waldump_output() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pg");
    let name = "000000010000000000000007";
    let size = cairn_formats::pg::SegmentSize::new(MIB as u64).unwrap();
    let mut bytes = std::fs::read(dir.join(format!("{name}.1mib.head"))).unwrap();
    assert!(bytes.len() < MIB && bytes.len() > 20_000);
    bytes.resize(MIB, 0);
    let dump = std::fs::read_to_string(dir.join(format!("{name}.1mib.waldump"))).unwrap();
    let dumped = parse_waldump(&dump);
    let Ok(cairn_formats::pg::WalFileName::Segment(seg)) = cairn_formats::pg::WalFileName::parse(name, size) else {
        panic!("fixture name")
    };
    let o = ScanOptions { start: seg.start_lsn(size), timeline: Some(1), segment_size: Some(size.bytes()), ..opts() };
    let s = scan_segment(&bytes, &o).unwrap();
    assert_eq!(s.header.version, WalVersion::V15);
    let here: Vec<&Dumped> = dumped.iter().collect();
    assert_segment_matches_waldump(name, &s, &here);
    // The fixture holds every kind of fact the scan extracts.
    let kinds: Vec<XactKind> = s.xacts.iter().map(|x| x.kind).collect();
    for kind in [XactKind::Commit, XactKind::Abort, XactKind::CommitPrepared, XactKind::AbortPrepared] {
        assert!(kinds.contains(&kind), "{kind:?} missing from {kinds:?}");
    }
    assert_eq!(s.restore_points[0].name, "cairn_fixture");
    assert!(matches!(s.end, ScanEnd::Switch { tail_zeroed: true, .. }));
    assert_eq!(s.records, dumped.len() as u64);
}
