//! Content-defined chunking of a byte stream with a key-seeded FastCDC.
//!
//! `fastcdc`'s own `StreamCDC` shifts its whole buffer after every chunk; this
//! driver keeps a large buffer and a cursor instead, and only accepts a cut
//! once at least `max_size` bytes follow the chunk start (or the stream has
//! ended). A cut decision never depends on more than `max_size` bytes, so the
//! chunks are exactly those of a one-shot run over the whole stream,
//! whatever the read sizes — a property test pins that.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// FastCDC sizes, stored in the repository `config`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Smallest chunk (except the last).
    pub min_size: u32,
    /// Target average.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB: large enough to keep per-chunk overhead (index
    /// entries, AEAD tags, lookups) negligible at 1 GB/s, small enough that a
    /// changed region of a model file costs about a megabyte.
    fn default() -> Self {
        ChunkerParams { min_size: 256 * 1024, avg_size: 1024 * 1024, max_size: 4 * 1024 * 1024 }
    }
}

impl ChunkerParams {
    /// Sizes around an average of `kib` KiB: a quarter of it at least,
    /// four times it at most (the default's proportions).
    pub fn with_average_kib(kib: u32) -> ChunkerParams {
        let avg = kib.saturating_mul(1024);
        ChunkerParams { min_size: avg / 4, avg_size: avg, max_size: avg.saturating_mul(4) }
    }

    /// Checks the bounds `fastcdc` enforces with panics.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!("invalid chunker sizes {self:?}")))
        }
    }
}

/// Forced cut points learnt from the bytes as they are read (tar member
/// boundaries). The chunker shows every byte to `observe`, in order, before
/// it cuts anything after it; a hint source must report each cut no later
/// than when the bytes before it have been observed.
pub trait CutHints: Send {
    /// Sees `data`, which starts at stream offset `offset`.
    fn observe(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// The first forced cut strictly after `pos`, if one is known.
    fn next_cut_after(&mut self, pos: u64) -> Option<u64>;
    /// Whether the bytes from `pos` to the next forced cut are to be one
    /// chunk whatever their content (fixed-size chunking between cuts).
    fn whole_until_cut(&mut self, _pos: u64) -> bool {
        false
    }
    /// The stream ended at `offset`.
    fn end(&mut self, offset: u64) -> Result<()>;
    /// For taking a concrete hint source back after chunking.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
}

/// Splits a reader into chunks. The whole-stream hash is computed by the
/// caller (the backup pipeline does it in parallel with chunk ids), so this
/// single-threaded stage does nothing but read and cut.
///
/// With `CutHints`, a chunk never spans a forced cut: the bytes between
/// two cuts are chunked exactly as if they were a stream of their own (or,
/// where the hints say so and they fit in `max_size`, are one chunk), so a
/// tar member's content chunks the same wherever it sits.
pub struct StreamChunker<R> {
    reader: R,
    params: ChunkerParams,
    seed: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    read_total: u64,
    hints: Option<Box<dyn CutHints>>,
}

impl<R: Read> StreamChunker<R> {
    /// A chunker over `reader` with the repository's seed.
    pub fn new(reader: R, params: ChunkerParams, seed: u64) -> Self {
        let cap = (params.max_size as usize * 4).max(16 << 20);
        StreamChunker {
            reader,
            params,
            seed,
            buf: vec![0; cap],
            start: 0,
            end: 0,
            eof: false,
            read_total: 0,
            hints: None,
        }
    }

    /// Cuts also where `hints` says.
    pub fn with_hints(mut self, hints: Box<dyn CutHints>) -> Self {
        self.hints = Some(hints);
        self
    }

    /// Takes the hint source back (after the last batch).
    pub fn take_hints(&mut self) -> Option<Box<dyn CutHints>> {
        self.hints.take()
    }

    /// Bytes read from the input so far.
    pub fn bytes_read(&self) -> u64 {
        self.read_total
    }

    /// Gives the reader back (to ask a producer how it ended).
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn fill(&mut self) -> Result<()> {
        if self.start > 0 && (self.buf.len() - self.end) < self.params.max_size as usize {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    if let Some(h) = self.hints.as_mut() {
                        h.end(self.read_total)?;
                    }
                }
                Ok(n) => {
                    if let Some(h) = self.hints.as_mut() {
                        h.observe(self.read_total, &self.buf[self.end..self.end + n])?;
                    }
                    self.end += n;
                    self.read_total += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::Input { offset: self.read_total, source }),
            }
        }
        Ok(())
    }

    /// Returns the next chunks, about `target` bytes of them; empty at the end.
    pub fn next_batch(&mut self, target: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut got = 0usize;
        let max = self.params.max_size as usize;
        while got < target {
            if self.end - self.start < max && !self.eof {
                self.fill()?;
            }
            if self.start == self.end {
                break;
            }
            // Stream offset of buf[start], and the forced cut that bounds
            // this window if it is already in the buffer: up to it the
            // bytes are chunked as a stream that ends there.
            let base = self.read_total - (self.end - self.start) as u64;
            let cut = self.hints.as_mut().and_then(|h| h.next_cut_after(base)).filter(|&c| c <= self.read_total);
            let (stop, hard_end) = match cut {
                Some(c) => (self.start + (c - base) as usize, true),
                None => (self.end, self.eof),
            };
            let window = &self.buf[self.start..stop];
            let whole = cut.is_some() && self.hints.as_mut().is_some_and(|h| h.whole_until_cut(base));
            if whole && window.len() <= max {
                out.push(window.to_vec());
                got += window.len();
                self.start = stop;
                continue;
            }
            let cdc = FastCDC::with_level_and_seed(
                window,
                self.params.min_size,
                self.params.avg_size,
                self.params.max_size,
                Normalization::Level1,
                self.seed,
            );
            let mut consumed = 0usize;
            for c in cdc {
                if !hard_end && c.offset + max > window.len() {
                    break;
                }
                out.push(window[c.offset..c.offset + c.length].to_vec());
                consumed = c.offset + c.length;
                got += c.length;
                if got >= target {
                    break;
                }
            }
            self.start += consumed;
            if consumed == 0 && self.eof && cut.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pseudo-random bytes (xorshift): incompressible, no long repeats.
    pub(crate) fn pseudo_random(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn small() -> ChunkerParams {
        ChunkerParams { min_size: 4096, avg_size: 16384, max_size: 65536 }
    }

    /// Reads at most `step` bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn all_chunks(data: &[u8], step: usize, p: ChunkerParams, seed: u64, batch: usize) -> Vec<Vec<u8>> {
        let mut c = StreamChunker::new(Trickle(data, step), p, seed);
        let mut out = Vec::new();
        loop {
            let b = c.next_batch(batch).unwrap();
            if b.is_empty() {
                break;
            }
            out.extend(b);
        }
        assert_eq!(out.concat(), data, "chunks must tile the input");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Streaming equals one-shot FastCDC over the whole input.
        #[test]
        fn streaming_equals_one_shot(len in 0usize..400_000, step in 1usize..70_000, seed in any::<u64>(), batch in 1usize..200_000) {
            let data = pseudo_random(len, seed | 1);
            let p = small();
            let got = all_chunks(&data, step, p, seed, batch);
            let want: Vec<Vec<u8>> = FastCDC::with_level_and_seed(&data, p.min_size, p.avg_size, p.max_size, Normalization::Level1, seed)
                .map(|c| data[c.offset..c.offset + c.length].to_vec())
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    /// Cuts at fixed offsets, as tar hints would report them.
    struct FixedCuts(Vec<u64>);
    impl CutHints for FixedCuts {
        fn observe(&mut self, _: u64, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn next_cut_after(&mut self, pos: u64) -> Option<u64> {
            self.0.iter().copied().find(|&c| c > pos)
        }
        fn end(&mut self, _: u64) -> Result<()> {
            Ok(())
        }
        fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
            self
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// With forced cuts, no chunk spans a cut, and the bytes between two
        /// cuts chunk exactly as a stream of their own would.
        #[test]
        fn forced_cuts_chunk_segments_independently(
            len in 1usize..300_000,
            step in 1usize..70_000,
            seed in any::<u64>(),
            mut cuts in proptest::collection::vec(1u64..300_000, 0..6),
        ) {
            let data = pseudo_random(len, seed | 1);
            let p = small();
            cuts.sort_unstable();
            cuts.dedup();
            cuts.retain(|&c| (c as usize) < len);
            let mut c = StreamChunker::new(Trickle(&data, step), p, seed).with_hints(Box::new(FixedCuts(cuts.clone())));
            let mut got = Vec::new();
            loop {
                let b = c.next_batch(100_000).unwrap();
                if b.is_empty() {
                    break;
                }
                got.extend(b);
            }
            prop_assert_eq!(got.concat(), data.clone());
            let mut bounds = vec![0u64];
            bounds.extend(&cuts);
            bounds.push(len as u64);
            let mut want = Vec::new();
            for w in bounds.windows(2) {
                let seg = &data[w[0] as usize..w[1] as usize];
                want.extend(
                    FastCDC::with_level_and_seed(seg, p.min_size, p.avg_size, p.max_size, Normalization::Level1, seed)
                        .map(|c| seg[c.offset..c.offset + c.length].to_vec()),
                );
            }
            prop_assert_eq!(got, want);
        }
    }

    /// Golden vector: cut points for a seeded input are part of the format
    /// (they decide dedup across versions). Pinned as (length, BLAKE3 prefix).
    #[test]
    fn golden_cut_points() {
        let data = pseudo_random(300_000, 0x5eed);
        let chunks = all_chunks(&data, 1 << 20, small(), 0xC0FFEE, usize::MAX);
        let got: Vec<(usize, String)> =
            chunks.iter().map(|c| (c.len(), blake3::hash(c).to_hex()[..16].to_string())).collect();
        let want: Vec<(usize, &str)> = GOLDEN.to_vec();
        let got_ref: Vec<(usize, &str)> = got.iter().map(|(l, h)| (*l, h.as_str())).collect();
        assert_eq!(got_ref, want);
    }

    const GOLDEN: [(usize, &str); 15] = [
        (22824, "57f9d148607f9fc9"),
        (17744, "6bb1b30c86cc6605"),
        (4353, "4b9d48f5568e2af9"),
        (28451, "4d16d5c85a5581b9"),
        (26873, "9859ceb320ccbe97"),
        (26144, "b4e230afaf04c233"),
        (11698, "31a0444a7ba2bc7b"),
        (19289, "0155f2b42f6529c9"),
        (32002, "e818329e1066490a"),
        (11722, "0fdaf9323647eb45"),
        (26970, "ff33b6947d34c40e"),
        (24258, "12ab72283fe3cfca"),
        (11535, "431db24b406e5cfa"),
        (21925, "3513bd9ccdc37685"),
        (14212, "e63f8871b15a59f7"),
    ];
}
