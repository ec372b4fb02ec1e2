//! Decoding arbitrary bytes as any repository structure never panics, and
//! whatever decodes re-encodes to the same bytes.
#![no_main]

use cairn_formats::repo::{
    decode_trailer, decode_tree, encode_trailer, encode_tree, parse_pack_tail, BlobEntry,
    IndexSegment,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(refs) = decode_tree(data) {
        assert_eq!(encode_tree(&refs), data);
    }
    if let Ok(seg) = IndexSegment::decode(data) {
        assert_eq!(seg.encode(), data);
    }
    if let Ok(entries) = decode_trailer(data, u64::MAX) {
        assert_eq!(encode_trailer(&entries), data);
    }
    let _ = parse_pack_tail(data);
    let _ = BlobEntry::decode_exact(data);
});
