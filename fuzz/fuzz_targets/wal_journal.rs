//! A segment journal (`waljournal/…`) as stored, its records sealed with
//! the fuzz key: read and applied as `wal fetch` and planning do.
//! Nothing may panic, hang or allocate without bound; the entry point is
//! `cairn_engine::fuzzing::wal_journal`, which the replay test also calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_engine::fuzzing::wal_journal(data);
});
