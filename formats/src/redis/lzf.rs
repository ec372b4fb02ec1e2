//! Streaming LZF decompression, as used by Redis for compressed RDB strings.
//!
//! Redis stores a compressed string as `(compressed length, raw length,
//! compressed bytes)`. A back reference in LZF reaches at most 8192 bytes
//! back, so the decoder only needs that much history: [`LzfDecoder`] keeps
//! an 8 KiB ring and can check a 512 MB compressed value without holding it.
//! Callers that need the bytes (small containers such as listpacks) pass an
//! output vector; everyone else passes `None` and only gets validation.
//!
//! The checks mirror `lzf_decompress` in Redis (`lzf_d.c` with
//! `CHECK_INPUT`): an instruction may not run past the compressed input, a
//! back reference may not point before the start of the output, and the
//! output may not exceed the declared raw length. Redis also requires the
//! output to be exactly the declared length, which [`LzfDecoder::finish`]
//! checks.

use thiserror::Error;

/// How far back an LZF back reference can reach: 13 offset bits plus one.
const WINDOW: usize = 8192;

/// Why an LZF stream was rejected. Offsets count compressed bytes from the
/// start of this string's compressed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LzfError {
    /// A back reference points before the first output byte, which only a
    /// corrupt stream can produce.
    #[error("LZF back reference at compressed byte {at} reaches {distance} bytes back, but only {produced} bytes were produced")]
    BackrefBeforeStart {
        /// Compressed offset of the instruction's last byte.
        at: u64,
        /// How far back the reference points.
        distance: u32,
        /// How many bytes had been produced at that point.
        produced: u64,
    },
    /// An instruction would produce more bytes than the declared raw length.
    #[error("LZF output exceeds the declared {expected} bytes at compressed byte {at}")]
    Overflow {
        /// Compressed offset of the offending instruction.
        at: u64,
        /// The declared raw length.
        expected: u64,
    },
    /// The compressed input ended in the middle of an instruction.
    #[error("LZF stream ends inside an instruction ({consumed} compressed bytes read)")]
    TruncatedInstruction {
        /// Compressed bytes consumed in total.
        consumed: u64,
    },
    /// The stream ended cleanly but produced fewer bytes than declared.
    #[error("LZF stream produced {got} bytes, expected {expected}")]
    ShortOutput {
        /// The declared raw length.
        expected: u64,
        /// What the stream actually produced.
        got: u64,
    },
}

/// Where the decoder is inside the current instruction. LZF instructions are
/// at most three bytes plus a literal run, so this is all the state a split
/// input needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instr {
    /// Expecting a control byte.
    Ctrl,
    /// Copying this many more literal bytes.
    Literal(u8),
    /// A back reference whose control byte said "length 7 or more": the
    /// next byte extends the length.
    ExtLen { hi: u16 },
    /// A back reference waiting for its low offset byte.
    Offset { hi: u16, len: u16 },
}

/// A push-based LZF decoder with a bounded (8 KiB) history.
///
/// Feed the compressed bytes in any slices, then call [`finish`](Self::finish)
/// once the declared compressed length has been fed.
#[derive(Debug, Clone)]
pub struct LzfDecoder {
    window: Box<[u8]>,
    produced: u64,
    expected: u64,
    consumed: u64,
    instr: Instr,
}

impl LzfDecoder {
    /// Creates a decoder for a stream that must expand to `expected` bytes.
    pub fn new(expected: u64) -> Self {
        LzfDecoder {
            window: vec![0u8; WINDOW].into_boxed_slice(),
            produced: 0,
            expected,
            consumed: 0,
            instr: Instr::Ctrl,
        }
    }

    /// Starts over for a new stream, reusing the history buffer so that a
    /// parser decoding many small strings does not allocate for each.
    pub fn reset(&mut self, expected: u64) {
        self.produced = 0;
        self.expected = expected;
        self.consumed = 0;
        self.instr = Instr::Ctrl;
    }

    /// How many raw bytes have been produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// Decodes `input`, appending the raw bytes to `out` when given.
    ///
    /// # Errors
    /// Any [`LzfError`] except `ShortOutput`, which only `finish` can know.
    pub fn feed(&mut self, input: &[u8], mut out: Option<&mut Vec<u8>>) -> Result<(), LzfError> {
        let mut i = 0usize;
        while i < input.len() {
            match self.instr {
                Instr::Ctrl => {
                    let ctrl = input[i];
                    i += 1;
                    self.consumed += 1;
                    if ctrl < 32 {
                        let run = u64::from(ctrl) + 1;
                        if self.produced.saturating_add(run) > self.expected {
                            return Err(LzfError::Overflow { at: self.consumed - 1, expected: self.expected });
                        }
                        self.instr = Instr::Literal(ctrl + 1);
                    } else {
                        let len = u16::from(ctrl >> 5);
                        let hi = u16::from(ctrl & 0x1f) << 8;
                        self.instr = if len == 7 { Instr::ExtLen { hi } } else { Instr::Offset { hi, len } };
                    }
                }
                Instr::Literal(left) => {
                    let take = usize::from(left).min(input.len() - i);
                    let bytes = &input[i..i + take];
                    for &b in bytes {
                        self.push(b);
                    }
                    if let Some(v) = out.as_deref_mut() {
                        v.extend_from_slice(bytes);
                    }
                    i += take;
                    self.consumed += take as u64;
                    // `take` is at most `left`, which fits in a u8.
                    let left = left - take as u8;
                    self.instr = if left == 0 { Instr::Ctrl } else { Instr::Literal(left) };
                }
                Instr::ExtLen { hi } => {
                    let len = 7 + u16::from(input[i]);
                    i += 1;
                    self.consumed += 1;
                    self.instr = Instr::Offset { hi, len };
                }
                Instr::Offset { hi, len } => {
                    let distance = u32::from(hi | u16::from(input[i])) + 1;
                    i += 1;
                    self.consumed += 1;
                    self.instr = Instr::Ctrl;
                    let count = u64::from(len) + 2;
                    if self.produced.saturating_add(count) > self.expected {
                        return Err(LzfError::Overflow { at: self.consumed - 1, expected: self.expected });
                    }
                    if u64::from(distance) > self.produced {
                        return Err(LzfError::BackrefBeforeStart {
                            at: self.consumed - 1,
                            distance,
                            produced: self.produced,
                        });
                    }
                    for _ in 0..count {
                        // The reference may overlap the bytes being written,
                        // so copy one byte at a time through the ring.
                        let src = (self.produced - u64::from(distance)) as usize % WINDOW;
                        let b = self.window[src];
                        self.push(b);
                        if let Some(v) = out.as_deref_mut() {
                            v.push(b);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that the stream ended on an instruction boundary and produced
    /// exactly the declared length; returns that length.
    ///
    /// # Errors
    /// `TruncatedInstruction` or `ShortOutput`.
    pub fn finish(&self) -> Result<u64, LzfError> {
        if self.instr != Instr::Ctrl {
            return Err(LzfError::TruncatedInstruction { consumed: self.consumed });
        }
        if self.produced != self.expected {
            return Err(LzfError::ShortOutput { expected: self.expected, got: self.produced });
        }
        Ok(self.produced)
    }

    fn push(&mut self, b: u8) {
        self.window[self.produced as usize % WINDOW] = b;
        self.produced += 1;
    }
}

/// Decompresses a whole LZF stream that must expand to exactly
/// `expected_len` bytes.
///
/// The output is allocated as it grows, never up front from `expected_len`,
/// so a corrupt length cannot make this allocate more than the stream
/// actually produces (at most about 264 bytes per input byte).
///
/// # Errors
/// Any [`LzfError`].
pub fn decompress(input: &[u8], expected_len: u64) -> Result<Vec<u8>, LzfError> {
    let mut out = Vec::new();
    let mut dec = LzfDecoder::new(expected_len);
    dec.feed(input, Some(&mut out))?;
    dec.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-assembled: a 3-byte literal run "abc", then a back reference
    /// of length 24 at distance 3 that overlaps its own output.
    const ABC: &[u8] = &[0x02, b'a', b'b', b'c', 0xe0, 0x0f, 0x02];

    /// Written by Redis 7.0.15 for `SET compressible "abcdefgh" x 40` (the
    /// value of that key in `testdata/redis/small-7.0.15.rdb`): 19
    /// compressed bytes for 320 raw ones, with a back reference of 264
    /// bytes and one reaching 264 bytes back.
    const REDIS_ABCDEFGH: &[u8] = &[
        0x08, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x61, 0xe0, 0xff, 0x07, 0xe1, 0x24, 0x07, 0x01, 0x67,
        0x68,
    ];

    /// Written by Redis 7.0.15 for a 150-byte element `"pp...p"` (a plain
    /// quicklist node in the same file).
    const REDIS_P150: &[u8] = &[0x01, 0x70, 0x70, 0xe0, 0x89, 0x00, 0x01, 0x70, 0x70];

    #[test]
    fn vectors_written_by_redis() {
        assert_eq!(decompress(REDIS_ABCDEFGH, 320).unwrap(), b"abcdefgh".repeat(40));
        assert_eq!(decompress(REDIS_P150, 150).unwrap(), vec![b'p'; 150]);
    }

    #[test]
    fn round_trips_through_an_independent_compressor() {
        // The `lzf` crate is a separate implementation of the compressor.
        let mut inputs: Vec<Vec<u8>> = vec![b"abcdefgh".repeat(40), (0..=255u8).cycle().take(20_000).collect()];
        let mut x: u32 = 12345;
        inputs.push(
            (0..50_000)
                .map(|i| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    if i % 7 == 0 {
                        (x >> 24) as u8
                    } else {
                        b"the quick brown fox "[i % 20]
                    }
                })
                .collect(),
        );
        for input in inputs {
            let packed = lzf::compress(&input).expect("compressible test input");
            assert_eq!(decompress(&packed, input.len() as u64).unwrap(), input);
            // And fed one odd-sized slice at a time.
            let mut dec = LzfDecoder::new(input.len() as u64);
            let mut out = Vec::new();
            for piece in packed.chunks(7) {
                dec.feed(piece, Some(&mut out)).unwrap();
            }
            dec.finish().unwrap();
            assert_eq!(out, input);
        }
    }

    #[test]
    fn known_vector_with_overlapping_backref() {
        let out = decompress(ABC, 27).unwrap();
        assert_eq!(out, b"abcabcabcabcabcabcabcabcabc");
    }

    #[test]
    fn byte_by_byte_feeding_matches_whole() {
        let mut dec = LzfDecoder::new(27);
        let mut out = Vec::new();
        for b in ABC {
            dec.feed(std::slice::from_ref(b), Some(&mut out)).unwrap();
        }
        assert_eq!(dec.finish().unwrap(), 27);
        assert_eq!(out, b"abcabcabcabcabcabcabcabcabc");
    }

    #[test]
    fn truncated_instruction_is_reported() {
        let err = decompress(&ABC[..ABC.len() - 1], 27).unwrap_err();
        assert_eq!(err, LzfError::TruncatedInstruction { consumed: 6 });
        let err = decompress(&ABC[..2], 27).unwrap_err();
        assert_eq!(err, LzfError::TruncatedInstruction { consumed: 2 });
    }

    #[test]
    fn wrong_declared_length_is_reported() {
        assert_eq!(decompress(ABC, 28).unwrap_err(), LzfError::ShortOutput { expected: 28, got: 27 });
        assert_eq!(decompress(ABC, 26).unwrap_err(), LzfError::Overflow { at: 6, expected: 26 });
    }

    #[test]
    fn backref_before_start_is_rejected() {
        // A back reference as the very first instruction has nothing to copy.
        let err = decompress(&[0x20, 0x00], 3).unwrap_err();
        assert_eq!(err, LzfError::BackrefBeforeStart { at: 1, distance: 1, produced: 0 });
    }

    #[test]
    fn long_backref_uses_the_extension_byte() {
        // Literal "x", then a back reference with len 7 + 0xff = 262,
        // copying 264 bytes from distance 1.
        let out = decompress(&[0x00, b'x', 0xe0, 0xff, 0x00], 265).unwrap();
        assert_eq!(out, vec![b'x'; 265]);
    }

    #[test]
    fn far_backref_reads_from_the_ring() {
        // 8192 bytes of a pattern, then a back reference reaching the full
        // 8192 bytes back: the ring must still hold the first byte.
        let mut input = Vec::new();
        let mut expect = Vec::new();
        for chunk in 0..256u32 {
            input.push(31);
            for j in 0..32u32 {
                let b = (chunk * 7 + j) as u8;
                input.push(b);
                expect.push(b);
            }
        }
        input.extend_from_slice(&[0x3f, 0xff]); // len 1+2 = 3, distance 8192
        expect.extend_from_within(..3);
        let mut dec = LzfDecoder::new(expect.len() as u64);
        let mut out = Vec::new();
        dec.feed(&input, Some(&mut out)).unwrap();
        dec.finish().unwrap();
        assert_eq!(out, expect);
    }
}
