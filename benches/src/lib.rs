//! Corpora for cairn's criterion benchmarks (`cargo bench -p cairn-benches`)
//! and, under `peers/`, the harness that measures cairn against restic, borg
//! and the physical limits (`zstd`, `b3sum`) on the same bytes in one run.

/// Deterministic text-like bytes (compressible, about 4:1 with zstd -3).
pub fn text(n: usize) -> Vec<u8> {
    let words: [&[u8]; 8] =
        [b"checkpoint ", b"segment ", b"relation ", b"tuple ", b"0x7f3a ", b"vacuum\n", b"index ", b"lsn "];
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 8) as usize]);
    }
    out.truncate(n);
    out
}

/// Deterministic random bytes (incompressible).
pub fn random(n: usize) -> Vec<u8> {
    let mut x = 0x2545f4914f6cdd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
