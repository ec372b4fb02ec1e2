//! Replays the fuzz targets' committed inputs through the same entry points
//! the fuzz targets call (`cairn_engine::fuzzing`):
//! - `testdata/fuzz-regressions/<target>/*`: inputs that once crashed or
//!   hung a target; each must now return, `Ok` or `Err`.
//! - `testdata/fuzz-seeds/<target>/*`: the seed corpora; those named
//!   `ok-*` must decode (the decoders still accept what cairn writes).
//!
//! The seeds are regenerated with
//! `CAIRN_WRITE_FUZZ_SEEDS=1 cargo test --release -p cairn-engine --test fuzz_regressions`.

use std::path::{Path, PathBuf};

use cairn_engine::fuzzing::{seeds, TARGETS};

fn testdata(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(dir)
}

/// The files of `dir/<target>/`, sorted.
fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(testdata(dir).join(target)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn target(name: &str) -> cairn_engine::fuzzing::Target {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no fuzz target {name}")).1
}

#[test]
fn committed_crashes_return() {
    for dir in std::fs::read_dir(testdata("fuzz-regressions")).into_iter().flatten() {
        let name = dir.unwrap().file_name().into_string().unwrap();
        let run = target(&name);
        for f in inputs("fuzz-regressions", &name) {
            let bytes = std::fs::read(&f).unwrap();
            // Returning at all is the point; the result is printed for context.
            let r = run(&bytes);
            println!("{}: {:?}", f.display(), r.err().map(|e| e.to_string()));
        }
    }
}

#[test]
fn committed_seeds_decode() {
    let mut seen = 0;
    for (name, run) in TARGETS {
        let files = inputs("fuzz-seeds", name);
        assert!(!files.is_empty(), "no seeds for fuzz target {name}");
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let r = run(&bytes);
            if f.file_name().unwrap().to_string_lossy().starts_with("ok-") {
                assert!(r.is_ok(), "{}: {:?}", f.display(), r.err());
            }
            seen += 1;
        }
    }
    assert!(seen >= TARGETS.len());
}

#[test]
fn generated_seeds_decode() {
    let write = std::env::var_os("CAIRN_WRITE_FUZZ_SEEDS").is_some();
    for (name, file, bytes) in seeds() {
        let r = target(name)(&bytes);
        assert!(r.is_ok(), "seed {name}/{file}: {:?}", r.err());
        if write {
            let dir = testdata("fuzz-seeds").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), bytes).unwrap();
        }
    }
}

#[test]
fn truncated_seeds_fail_cleanly() {
    // Every prefix of every seed: each must return, and a network session
    // cut short must fail (a truncated transfer never looks complete).
    for (name, _, bytes) in seeds() {
        let run = target(name);
        let step = (bytes.len() / 200).max(1);
        for n in (0..bytes.len()).step_by(step) {
            let r = run(&bytes[..n]);
            // (Cut in the final CRLF, `$0` still reads as an empty payload.)
            if matches!(name, "redis_sync" | "pg_replication" | "pg_basebackup") && n > 0 && n + 2 < bytes.len() {
                assert!(r.is_err(), "{name}: a session cut at byte {n} of {} ended cleanly", bytes.len());
            }
        }
    }
}
