//! The server side of a PostgreSQL replication session from authentication
//! to the end of BASE_BACKUP, fed from memory (first byte: options).
//! Nothing may panic, hang or allocate without bound; the entry point is
//! `cairn_engine::fuzzing::pg_replication`, which the replay test also calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_engine::fuzzing::pg_replication(data);
});
