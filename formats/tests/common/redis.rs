//! A throwaway `redis-server` for the RDB oracle tests, and helpers to talk
//! to it and to `redis-check-rdb`.
//!
//! The tests need the real tools: a missing binary fails the test with a
//! message saying what to install, so a machine without Redis never reports
//! a pass that checked nothing.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

// The server harness is shared with the end-to-end tests.
#[path = "../../../tests/src/redis.rs"]
mod server;
pub use server::{cmd, require_tool, RedisServer};

/// What `redis-check-rdb` said about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// "RDB looks OK".
    Valid,
    /// It reported an error (the report's first lines).
    Invalid(String),
    /// It did not finish within the time limit. One run of the damage test
    /// once took about 17 minutes of CPU time that did not reproduce in
    /// later runs and was not pinned on either side; the limit keeps such a
    /// case from stalling the suite, and the decoder's own time is asserted
    /// separately.
    TimedOut,
}

/// Runs `redis-check-rdb` on `bytes` (written to `dir/name`), stopping it
/// after `limit_secs`.
pub fn check_rdb(dir: &Path, name: &str, bytes: &[u8], limit_secs: u32) -> Check {
    require_tool("redis-check-rdb");
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("timeout")
        .args(["-s", "KILL", &limit_secs.to_string(), "redis-check-rdb"])
        .arg(&path)
        .output()
        .expect("run redis-check-rdb under timeout(1)");
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Check::Valid,
        // timeout(1) exits 137 when it had to kill the command.
        Some(137) | Some(124) | None => Check::TimedOut,
        Some(_) => Check::Invalid(
            text.lines().skip_while(|l| !l.contains("RDB ERROR")).take(3).collect::<Vec<_>>().join(" | "),
        ),
    }
}

/// A small deterministic generator (splitmix64), so that data sets and
/// corruption offsets are the same on every run.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A 16-hex-digit name, so that one flipped bit rarely turns one name
    /// into another (which Redis would then reject as a duplicate).
    pub fn name(&mut self, prefix: &str) -> String {
        format!("{prefix}{:016x}", self.next())
    }
}
