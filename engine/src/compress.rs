//! Per-blob compression with a cheap incompressibility test.
//!
//! Compressing random-looking data (already compressed archives, encrypted
//! files, float weights) wastes most of the pipeline's CPU. Before a full
//! zstd pass, three 8 KiB samples (start, middle, end) are compressed at the
//! fastest level; if they do not shrink by at least 3 %, the blob is stored
//! raw. The full pass is only kept when it saves at least 2 %.

use std::cell::RefCell;

use cairn_formats::repo::Compression;

const SAMPLE: usize = 8 * 1024;
const MIN_SAMPLED_LEN: usize = 64 * 1024;

/// zstd settings for a blob: a level and, where measured to pay, a smaller
/// match-finder hash table than the level's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zstd {
    /// The compression level.
    pub level: i32,
    /// `ZSTD_c_hashLog`; `None`: the level's default.
    pub hash_log: Option<u32>,
}

impl From<i32> for Zstd {
    fn from(level: i32) -> Zstd {
        Zstd { level, hash_log: None }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(Zstd, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static SAMPLER: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    /// One decompression context per thread: creating one per blob cost 7 %
    /// of a restore's CPU (`perf`, pgbase.py scale 50).
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// True when a sample says the data will not compress.
pub fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < MIN_SAMPLED_LEN {
        return false;
    }
    let mid = data.len() / 2 - SAMPLE / 2;
    let samples = [&data[..SAMPLE], &data[mid..mid + SAMPLE], &data[data.len() - SAMPLE..]];
    SAMPLER.with(|s| {
        let mut s = s.borrow_mut();
        let c = s.get_or_insert_with(|| zstd::bulk::Compressor::new(1).expect("zstd level 1"));
        let mut packed = 0usize;
        for sample in samples {
            packed += c.compress(sample).map(|v| v.len()).unwrap_or(SAMPLE);
        }
        packed * 100 >= 3 * SAMPLE * 97
    })
}

/// Compresses `data` at `level`, or says it is not worth it.
pub fn compress(level: i32, data: &[u8]) -> (Compression, Option<Vec<u8>>) {
    let mut out = Vec::new();
    match compress_into(level, data, &mut out) {
        Compression::Zstd => (Compression::Zstd, Some(out)),
        Compression::None => (Compression::None, None),
    }
}

/// Like [`compress`], writing the compressed bytes into `out` (replacing
/// its content, reusing its capacity) so that a caller can seal them in
/// place. `out` holds nothing useful when the answer is
/// [`Compression::None`].
pub fn compress_into(z: impl Into<Zstd>, data: &[u8], out: &mut Vec<u8>) -> Compression {
    let z = z.into();
    out.clear();
    if data.is_empty() || looks_incompressible(data) {
        return Compression::None;
    }
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let packed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(z) {
            let mut zc = zstd::bulk::Compressor::new(z.level).expect("valid zstd level");
            if let Some(h) = z.hash_log {
                zc.set_parameter(zstd::stream::raw::CParameter::HashLog(h)).expect("valid zstd hash log");
            }
            *c = Some((z, zc));
        }
        c.as_mut().expect("just set").1.compress_to_buffer(data, out).is_ok()
    });
    if packed && out.len() * 100 <= data.len() * 98 {
        Compression::Zstd
    } else {
        out.clear();
        Compression::None
    }
}

/// Decompresses a zstd blob into `out`, which must be exactly its
/// plaintext length.
pub fn decompress_into(data: &[u8], out: &mut [u8]) -> std::io::Result<()> {
    let n = decompress_with(|d| d.decompress_to_buffer(data, out))?;
    exact(n, out.len())
}

/// Decompresses a zstd blob of plaintext length `len` into a new vector,
/// written without zero-filling it first.
pub fn decompress_exact(data: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    // Writes into the spare capacity only, never past it.
    let n = decompress_with(|d| d.decompress_to_buffer(data, &mut out))?;
    exact(n, len)?;
    Ok(out)
}

fn decompress_with(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        f(d.as_mut().expect("just set"))
    })
}

fn exact(n: usize, len: usize) -> std::io::Result<()> {
    if n != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("decompressed to {n} bytes, expected {len}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_stored_raw_and_text_is_compressed() {
        let mut x = 1u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect();
        assert!(looks_incompressible(&random));
        assert_eq!(compress(3, &random).0, Compression::None);
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(30_000);
        let (c, p) = compress(3, &text);
        assert_eq!(c, Compression::Zstd);
        let mut back = vec![0u8; text.len()];
        decompress_into(&p.unwrap(), &mut back).unwrap();
        assert_eq!(back, text);
        assert!(decompress_into(&compress(1, &text).1.unwrap(), &mut vec![0u8; text.len() + 1]).is_err());
    }

    #[test]
    fn a_tuned_hash_log_round_trips_and_switches_per_call() {
        // Words drawn from a few thousand: many match candidates compete
        // for the hash table, so its size shows in the output.
        let mut x = 7u64;
        let text: Vec<u8> = (0..400_000)
            .flat_map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                format!("w{} ", (x >> 33) % 4000).into_bytes()
            })
            .collect();
        let tuned = Zstd { level: 1, hash_log: Some(12) };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(compress_into(tuned, &text, &mut a), Compression::Zstd);
        // The thread's compressor is rebuilt for other settings, and back.
        assert_eq!(compress_into(1, &text, &mut b), Compression::Zstd);
        let mut again = Vec::new();
        assert_eq!(compress_into(tuned, &text, &mut again), Compression::Zstd);
        assert_eq!(a, again);
        assert_ne!(a, b, "the hash log setting made no difference");
        for packed in [&a, &b] {
            let mut back = vec![0u8; text.len()];
            decompress_into(packed, &mut back).unwrap();
            assert!(back == text);
        }
    }
}
