//! A tar entry's member index: decoded and re-encoded, every member's range
//! checked as a restore does, the file list built and vetted.
//! Nothing may panic, hang or allocate without bound; the entry point is
//! `cairn_engine::fuzzing::member_index`, which the replay test also calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_engine::fuzzing::member_index(data);
});
