//! The copy stream of BASE_BACKUP (15+ typed CopyData or 13–14 CopyOut per
//! archive) after a canned start, fed from memory (first byte: options).
//! Nothing may panic, hang or allocate without bound; the entry point is
//! `cairn_engine::fuzzing::pg_basebackup`, which the replay test also calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_engine::fuzzing::pg_basebackup(data);
});
