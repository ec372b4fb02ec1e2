//! Scanning arbitrary bytes as a WAL segment never panics, whether the bytes
//! are raw, wrapped in valid page headers, or turned into records with valid
//! CRCs laid out across pages (so the fuzzer reaches record reassembly and
//! decoding, which a CRC would otherwise guard), and pushing in pieces gives
//! the one-shot result.
#![no_main]

use cairn_formats::pg::record::{record_crc, DecodedRecord};
use cairn_formats::pg::{scan_segment, Lsn, ScanOptions, SegmentScanner, WalVersion};
use libfuzzer_sys::fuzz_target;

const SEG: usize = 1 << 20;
const BLCKSZ: usize = 1024;
const START: u64 = 5 * SEG as u64;

/// Lays `data` over a 1 MiB segment with 1 KiB pages, then repairs each
/// page header that `data` covers so only its flags and `xlp_rem_len` stay
/// under the fuzzer's control.
fn wrap(data: &[u8], version: WalVersion) -> Vec<u8> {
    let mut seg = vec![0u8; SEG];
    let n = data.len().min(SEG);
    seg[..n].copy_from_slice(&data[..n]);
    for page in 0..n.div_ceil(BLCKSZ) {
        let off = page * BLCKSZ;
        let h = &mut seg[off..off + 40];
        let mut info = u16::from_le_bytes([h[2], h[3]]) & 0x000D;
        if page == 0 {
            info |= 0x0002;
            h[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
            h[36..40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
        }
        h[0..2].copy_from_slice(&version.magic().to_le_bytes());
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..16].copy_from_slice(&(START + off as u64).to_le_bytes());
    }
    seg
}

/// Writes page `page`'s header: long on page 0, contrecord when `rem > 0`.
fn page_header(seg: &mut [u8], page: usize, rem: u32, version: WalVersion) {
    let off = page * BLCKSZ;
    let mut info: u16 = if rem > 0 { 0x0001 } else { 0 };
    if page == 0 {
        info |= 0x0002;
        seg[off + 32..off + 36].copy_from_slice(&(SEG as u32).to_le_bytes());
        seg[off + 36..off + 40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
    }
    seg[off..off + 2].copy_from_slice(&version.magic().to_le_bytes());
    seg[off + 2..off + 4].copy_from_slice(&info.to_le_bytes());
    seg[off + 4..off + 8].copy_from_slice(&1u32.to_le_bytes());
    seg[off + 8..off + 16].copy_from_slice(&(START + off as u64).to_le_bytes());
    seg[off + 16..off + 20].copy_from_slice(&rem.to_le_bytes());
}

/// Turns `data` into records (a length byte, rmid, info, then the body) with
/// correct `xl_prev` and CRC, laid out as PostgreSQL lays them out.
fn layout(mut data: &[u8], version: WalVersion) -> Vec<u8> {
    let mut seg = vec![0u8; SEG];
    let (mut pos, mut prev, mut pages) = (0usize, 0u64, 0usize);
    while data.len() >= 3 {
        let body_len = (usize::from(data[0]) * 37).min(data.len() - 3);
        let (rmid, info, body) = (data[1] % 24, data[2], &data[3..3 + body_len]);
        data = &data[3 + body_len..];
        let mut rec = Vec::with_capacity(24 + body.len());
        rec.extend_from_slice(&((24 + body.len()) as u32).to_le_bytes());
        rec.extend_from_slice(&7u32.to_le_bytes());
        rec.extend_from_slice(&prev.to_le_bytes());
        rec.extend_from_slice(&[info, rmid, 0, 0, 0, 0, 0, 0]);
        rec.extend_from_slice(body);
        let crc = record_crc(&rec).expect("a whole header");
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        pos = (pos + 7) & !7;
        if pos >= SEG {
            break;
        }
        if pos % BLCKSZ == 0 {
            page_header(&mut seg, pos / BLCKSZ, 0, version);
            pages = pos / BLCKSZ + 1;
            pos += if pos == 0 { 40 } else { 24 };
        }
        prev = START + pos as u64;
        let mut rest = rec.as_slice();
        while !rest.is_empty() && pos < SEG {
            if pos % BLCKSZ == 0 {
                page_header(&mut seg, pos / BLCKSZ, rest.len() as u32, version);
                pages = pos / BLCKSZ + 1;
                pos += 24;
            }
            let n = (BLCKSZ - pos % BLCKSZ).min(rest.len());
            seg[pos..pos + n].copy_from_slice(&rest[..n]);
            pos += n;
            rest = &rest[n..];
        }
    }
    if pages == 0 {
        page_header(&mut seg, 0, 0, version);
    }
    seg
}

fuzz_target!(|data: &[u8]| {
    let opts = ScanOptions::default();
    let one_shot = scan_segment(data, &opts);
    let mut scanner = SegmentScanner::new(opts);
    let cut = data.first().map_or(0, |&b| usize::from(b) * 97).min(data.len());
    let pushed = scanner.push(&data[..cut]).and_then(|()| scanner.push(&data[cut..]));
    if pushed.is_ok() {
        assert_eq!(scanner.finish(), one_shot);
    }

    let version = WalVersion::ALL[usize::from(data.first().copied().unwrap_or(0) % 5)];
    if let Ok(summary) = scan_segment(&wrap(data, version), &opts) {
        assert!(summary.records as usize <= SEG / 24);
    }
    if let Ok(summary) = scan_segment(&layout(data, version), &opts) {
        assert!(summary.xacts.len() as u64 <= summary.records);
    }
    let _ = DecodedRecord::decode(data, Lsn(0x28), version);
});
