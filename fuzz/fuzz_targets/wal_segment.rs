//! Scanning arbitrary bytes as a WAL segment never panics, whether the bytes
//! are raw or wrapped in valid page headers (so the fuzzer reaches record
//! reassembly and decoding), and pushing in pieces gives the one-shot result.
#![no_main]

use cairn_formats::pg::record::DecodedRecord;
use cairn_formats::pg::{scan_segment, Lsn, ScanOptions, SegmentScanner, WalVersion};
use libfuzzer_sys::fuzz_target;

const SEG: usize = 1 << 20;
const BLCKSZ: usize = 1024;

/// Lays `data` over a 1 MiB segment with 1 KiB pages, then repairs each
/// page header that `data` covers so only its flags and `xlp_rem_len` stay
/// under the fuzzer's control.
fn wrap(data: &[u8], version: WalVersion) -> Vec<u8> {
    let mut seg = vec![0u8; SEG];
    let n = data.len().min(SEG);
    seg[..n].copy_from_slice(&data[..n]);
    let start: u64 = 5 * SEG as u64;
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
        h[8..16].copy_from_slice(&(start + off as u64).to_le_bytes());
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
    let _ = DecodedRecord::decode(data, Lsn(0x28), version);
});
