//! Deterministic data generators that never hold a whole stream in memory.

use std::io::Read;

/// A fast xorshift generator.
pub struct XorShift(pub u64);

impl XorShift {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Random (incompressible) bytes.
pub fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; n];
    XorShift(seed | 1).fill(&mut v);
    v
}

/// Text-like, compressible bytes.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = ["backup", "wal", "segment", "cairn", "restore", "pack", "chunk", "zstd", "index", "snapshot", "\n"];
    let mut r = XorShift(seed | 1);
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(words[(r.next_u64() % words.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(n);
    out
}

/// A reader yielding `len` bytes that mix text, random and zero regions,
/// generated on the fly.
pub struct MixedStream {
    left: u64,
    rng: XorShift,
    block: Vec<u8>,
    pos: usize,
}

impl MixedStream {
    /// A stream of `len` bytes from `seed`.
    pub fn new(len: u64, seed: u64) -> Self {
        MixedStream { left: len, rng: XorShift(seed | 1), block: Vec::new(), pos: 0 }
    }
}

impl Read for MixedStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.pos == self.block.len() {
            let kind = self.rng.next_u64() % 3;
            let n = 1 << 20;
            self.block = match kind {
                0 => text(n, self.rng.next_u64()),
                1 => random(n, self.rng.next_u64()),
                _ => vec![0; n],
            };
            self.pos = 0;
        }
        let n = buf.len().min(self.block.len() - self.pos).min(self.left as usize);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}
