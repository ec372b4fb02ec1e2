//! A snapshot manifest after opening: decoded, re-encoded, its facts read, a
//! directory snapshot's file list built and vetted.
//! Nothing may panic, hang or allocate without bound; the entry point is
//! `cairn_engine::fuzzing::snapshot_manifest`, which the replay test also calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_engine::fuzzing::snapshot_manifest(data);
});
