//! Parsing arbitrary text as a WAL file name or an LSN never panics, and
//! whatever parses prints back to the same text.
#![no_main]

use cairn_formats::pg::{Lsn, SegmentSize, WalFileName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shift, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let size = SegmentSize::new(1 << (20 + u64::from(shift % 11))).expect("valid size");
    if let Ok(name) = WalFileName::parse(text, size) {
        assert_eq!(name.format(size), text);
        if let Some(seg) = name.segment() {
            let start = seg.start_lsn(size).expect("parsed names are in range");
            assert_eq!(cairn_formats::pg::SegmentName::containing(seg.timeline, start, size), seg);
        }
    }
    if let Ok(lsn) = text.parse::<Lsn>() {
        assert_eq!(lsn.to_string().parse::<Lsn>(), Ok(lsn));
    }
});
