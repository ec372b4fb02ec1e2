//! A stanza record and WAL manifests after opening (parts split at 0xFF),
//! decoded and summarised as `wal show` does.
//! Nothing may panic, hang or allocate without bound; the entry point is
//! `cairn_engine::fuzzing::wal_manifest`, which the replay test also calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_engine::fuzzing::wal_manifest(data);
});
