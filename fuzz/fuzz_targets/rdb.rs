//! Decoding arbitrary bytes as an RDB file never panics, and feeding them
//! in slices gives exactly the result of feeding them whole.
//!
//! The first input byte seeds the slice sizes; the rest is the file.
#![no_main]

use cairn_formats::redis::{RdbError, RdbParser, RdbSummary};
use libfuzzer_sys::fuzz_target;

fn parse(input: &[u8], seed: Option<u8>) -> Result<RdbSummary, RdbError> {
    let mut p = RdbParser::new();
    let mut rest = input;
    let mut x = usize::from(seed.unwrap_or(0)) | 1;
    while !rest.is_empty() {
        let n = match seed {
            None => rest.len(),
            Some(_) => {
                x = (x * 37 + 11) % 257;
                (x % 97 + 1).min(rest.len())
            }
        };
        p.feed(&rest[..n])?;
        rest = &rest[n..];
    }
    p.finish().cloned()
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = parse(input, None);
    let sliced = parse(input, Some(seed));
    assert_eq!(whole, sliced);
});
