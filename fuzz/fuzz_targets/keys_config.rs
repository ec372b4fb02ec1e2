//! `config` and key slots (plaintext JSON read before unlocking): decoded,
//! validated, and slots opened with a key file and a password.
//! Nothing may panic, hang or allocate without bound; the entry point is
//! `cairn_engine::fuzzing::keys_config`, which the replay test also calls.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cairn_engine::fuzzing::keys_config(data);
});
