//! Parsing arbitrary bytes as a timeline history file never panics, and
//! what parses obeys the file's rules.
#![no_main]

use cairn_formats::pg::parse_timeline_history;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file_timeline = data.first().map(|&b| u32::from(b));
    if let Ok(entries) = parse_timeline_history(data, file_timeline) {
        for pair in entries.windows(2) {
            assert!(pair[0].timeline < pair[1].timeline);
            assert!(pair[0].switchpoint <= pair[1].switchpoint);
        }
        if let Some(t) = file_timeline {
            assert!(entries.iter().all(|e| e.timeline < t));
        }
    }
});
