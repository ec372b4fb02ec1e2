//! The server side of a Redis replica handshake and RDB payload framing, fed
//! from memory (first byte: options and read sizes).
//! Nothing may panic, hang or allocate without bound; the entry point is
//! `cairn_engine::fuzzing::redis_sync`, which the replay test also calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_engine::fuzzing::redis_sync(data);
});
