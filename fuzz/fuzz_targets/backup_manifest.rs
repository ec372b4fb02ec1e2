//! Parsing arbitrary bytes as a backup_manifest never panics, both as given
//! and sealed with a correct Manifest-Checksum (so the fuzzer gets past the
//! checksum to the field checks), and checking files against what parses
//! never panics either.
#![no_main]

use cairn_formats::pg::manifest::manifest_checksum;
use cairn_formats::pg::{BackupManifest, FileChecker};
use libfuzzer_sys::fuzz_target;

fn check_files(manifest: &BackupManifest, data: &[u8]) {
    for file in &manifest.files {
        let mut checker = FileChecker::new(file);
        checker.update(data);
        let _ = checker.finish();
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = BackupManifest::parse(data) {
        assert!(m.version == 1 || m.version == 2);
        check_files(&m, data);
    }
    let _ = manifest_checksum(data);
    // Seal everything up to the last newline, as PostgreSQL would.
    let body_len = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut sealed = data[..body_len].to_vec();
    if sealed.is_empty() {
        sealed.extend_from_slice(b"{\n");
    }
    let digest = manifest_checksum(&[sealed.as_slice(), b"x\n"].concat()).expect("two lines");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    sealed.extend_from_slice(format!("\"Manifest-Checksum\": \"{hex}\"}}\n").as_bytes());
    if let Ok(m) = BackupManifest::parse(&sealed) {
        check_files(&m, data);
    }
});
