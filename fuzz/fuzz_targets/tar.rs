//! Parsing arbitrary bytes as a tar stream never panics, events tile the
//! stream in order, and feeding the bytes in slices gives exactly the
//! events and result of feeding them whole.
//!
//! The first input byte seeds the slice sizes; the rest is the stream.
#![no_main]

use cairn_formats::tar::{TarError, TarEvent, TarParser};
use libfuzzer_sys::fuzz_target;

fn parse(input: &[u8], seed: Option<u8>) -> (Vec<TarEvent>, Result<(), TarError>) {
    let mut p = TarParser::new();
    let mut events = Vec::new();
    let mut rest = input;
    let mut x = usize::from(seed.unwrap_or(0)) | 1;
    while !rest.is_empty() {
        let n = match seed {
            None => rest.len(),
            Some(_) => {
                x = (x * 37 + 11) % 1031;
                (x % 700 + 1).min(rest.len())
            }
        };
        match p.feed(&rest[..n]) {
            Ok(ev) => events.extend(ev),
            Err(e) => return (events, Err(e)),
        }
        rest = &rest[n..];
    }
    (events, p.finish())
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = parse(input, None);
    let sliced = parse(input, Some(seed));
    // Events found before an error may differ in number (slices stop at
    // the error), so compare the result and the events of clean runs.
    assert_eq!(whole.1, sliced.1);
    if whole.1.is_ok() {
        assert_eq!(whole.0, sliced.0);
    }
    let mut next = 0u64;
    for e in &whole.0 {
        if let TarEvent::Member(m) = e {
            assert!(m.header_offset >= next && m.entry_offset >= m.header_offset);
            assert!(m.data_start > m.entry_offset);
            next = m.data_end_padded();
        }
    }
});
