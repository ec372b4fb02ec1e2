//! How `wal push` and `wal fetch` hold a WAL file in memory.
//!
//! # Why not a `Vec` per piece
//! A push or fetch is one short process per segment. Fresh heap memory
//! costs a page fault per 4 KiB page on first touch: 4096 faults (and their
//! zeroing) for a 16 MiB segment, about a fifth of a push's CPU on pgbench
//! WAL (touching 16 MiB costs ~5.5 ms in 4 KiB pages here, ~0.3 ms in 2 MiB
//! pages). A [`Window`] is an anonymous mapping advised for transparent
//! huge pages, so the kernel fills it with a few 2 MiB pages instead (where
//! THP is `madvise` or `always`; elsewhere it is an ordinary mapping), but
//! only while the kernel has free 2 MiB blocks to spare: making it compact
//! memory for them costs far more than the faults it saves.
//!
//! A push reads the file into a window with `read(2)`, not by mapping it:
//! what is hashed, scanned and sealed is one private, consistent copy even
//! if the file changed underneath. Where a file is only hashed to compare
//! with an archived one ([`hash_file`]: a re-push, a spooled segment), the
//! pool reads its pieces with `pread` into small reused buffers and hashes
//! them in parallel. Never a memory map of the file: a file truncated under
//! a map kills the process with SIGBUS, where a read returns an error.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::PIECE;
use crate::{Error, Result};

/// Bytes per window: a 16 MiB segment is one window, larger segments (up
/// to 1 GiB) are read or decoded in windows of this size, so memory stays
/// bounded.
pub(crate) const WINDOW: usize = 8 * PIECE;

/// A private buffer of up to [`WINDOW`] bytes (two for the sealed bytes a
/// fetch reads). Its content is unspecified: every user writes what it
/// reads back.
pub(crate) struct Window {
    map: Option<memmap2::MmapMut>,
    len: usize,
}

/// Mappings of dropped windows, kept for the next window of this process
/// (until it exits). The long-lived pusher and prefetcher take a window per
/// file: fresh
/// memory costs a page fault and the zeroing of every page on first touch,
/// 3–5 ms of a heavy pgbench segment's 55–60 ms of CPU here, all of it on
/// the thread that reads the file.
static SPARE: std::sync::Mutex<Vec<memmap2::MmapMut>> = std::sync::Mutex::new(Vec::new());
/// Push keeps one window at a time, fetch two (plaintext and sealed).
const MAX_SPARE: usize = 2;
/// The size of the mappings kept: a window and a window's worst-case sealed
/// bytes fit.
const KEPT: usize = WINDOW + WINDOW / 8;

impl Window {
    /// A window for a file of `size` bytes.
    pub(crate) fn for_size(size: u64, path: &Path) -> Result<Window> {
        Window::with_len(usize::try_from(size).unwrap_or(WINDOW).clamp(1, WINDOW), path)
    }

    /// A window of exactly `len` (at least 1) bytes.
    pub(crate) fn with_len(len: usize, path: &Path) -> Result<Window> {
        let len = len.max(1);
        if let Some(map) = Window::spare(len) {
            return Ok(Window { map: Some(map), len });
        }
        // Mapped at full size (address space only; pages are faulted in as
        // touched) unless tiny, so that a spare fits the next file whatever
        // its size or its pieces' stored sizes.
        let map_len = if len >= PIECE { len.max(KEPT) } else { len };
        let map = memmap2::MmapOptions::new().len(map_len).map_anon().map_err(|e| Error::io(path, e))?;
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if std::fs::read_to_string("/proc/buddyinfo").is_ok_and(|b| free_huge_pages(&b) >= 2 * len.div_ceil(HUGE)) {
            // Advice only: a kernel without THP simply ignores it.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Ok(Window { map: Some(map), len })
    }

    /// The smallest spare mapping that holds `len` bytes.
    fn spare(len: usize) -> Option<memmap2::MmapMut> {
        let mut spare = SPARE.lock().ok()?;
        let (i, _) = spare.iter().enumerate().filter(|(_, m)| m.len() >= len).min_by_key(|(_, m)| m.len())?;
        Some(spare.swap_remove(i))
    }

    /// The window's capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.len
    }

    /// The whole window, to be filled piece by piece.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.map.as_mut().expect("a window holds its mapping until dropped")[..len]
    }

    /// The first `n` bytes (what was read into the window).
    pub(crate) fn data(&self, n: usize) -> &[u8] {
        &self.map.as_ref().expect("a window holds its mapping until dropped")[..self.len][..n]
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // Only windows worth keeping: small ones are cheap to map again.
        let Some(map) = self.map.take().filter(|m| m.len() >= KEPT) else { return };
        if let Ok(mut spare) = SPARE.lock() {
            if spare.len() < MAX_SPARE {
                spare.push(map);
            }
        }
    }
}

/// A transparent huge page on x86-64: 2 MiB, an order-9 block of 4 KiB pages.
#[cfg_attr(not(all(target_os = "linux", target_arch = "x86_64")), allow(dead_code))]
const HUGE: usize = 2 << 20;

/// How many free 2 MiB blocks `/proc/buddyinfo` lists (an order-10 block is
/// two). A window is advised for huge pages only when the kernel has twice
/// as many free as it needs: with `defrag=madvise` (the default) a fault in
/// an advised mapping otherwise waits for direct compaction. On a host
/// whose memory is full of page cache (a database server, always) 40
/// pushes here made 2–11 such stalls and ran up to 7 % slower than with no
/// advice taken; with the check they made none.
#[cfg_attr(not(all(target_os = "linux", target_arch = "x86_64")), allow(dead_code))]
fn free_huge_pages(buddyinfo: &str) -> usize {
    buddyinfo
        .lines()
        .filter_map(|l| l.split_once("zone").map(|(_, rest)| rest))
        .flat_map(|rest| rest.split_whitespace().skip(1).enumerate())
        .filter(|(order, _)| *order >= 9)
        .filter_map(|(order, n)| n.parse::<usize>().ok().map(|n| n << (order - 9)))
        .sum()
}

/// Reads from `f` until `buf` is full or the file ends; returns the bytes
/// read.
pub(crate) fn read_full(f: &mut File, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(n)
}

/// The whole file's BLAKE3, put together from its [`PIECE`]s hashed
/// independently (on different threads, in any order) as BLAKE3 subtrees:
/// the result is exactly `blake3::hash` of the file, without a second,
/// sequential pass over it.
///
/// Pieces are 2 MiB, a power of two, so every split of BLAKE3's
/// left-balanced tree above them falls on a piece boundary.
pub(crate) enum PieceHash {
    /// The file is this one piece (at most [`PIECE`] bytes): its root hash.
    Whole(blake3::Hash),
    /// The chaining value of the piece at this index of a larger file.
    Part(blake3::hazmat::ChainingValue),
}

impl PieceHash {
    /// Hashes piece `index` of a file of `file_len` bytes.
    pub(crate) fn of(piece: &[u8], index: usize, file_len: u64) -> PieceHash {
        let mut h = PieceHasher::new(index, file_len);
        h.update(piece);
        h.finish()
    }
}

/// The BLAKE3 of a file of `len` bytes from its pieces' hashes, in order.
/// `None` when they do not describe such a file (a piece count that does
/// not match `len`).
pub(crate) fn merge_piece_hashes(pieces: &[PieceHash], len: u64) -> Option<blake3::Hash> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, Mode};
    if pieces.len() as u64 != len.div_ceil(PIECE as u64) {
        return None;
    }
    fn cvs(p: &[PieceHash]) -> Option<Vec<ChainingValue>> {
        p.iter().map(|h| if let PieceHash::Part(cv) = h { Some(*cv) } else { None }).collect()
    }
    fn subtree(cvs: &[ChainingValue], len: u64) -> ChainingValue {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let left = left_subtree_len(len);
        let k = (left / PIECE as u64) as usize;
        merge_subtrees_non_root(&subtree(&cvs[..k], left), &subtree(&cvs[k..], len - left), Mode::Hash)
    }
    match pieces {
        [] => Some(blake3::hash(b"")),
        [PieceHash::Whole(h)] => Some(*h),
        [_] => None,
        _ => {
            let cvs = cvs(pieces)?;
            let left = left_subtree_len(len);
            let k = (left / PIECE as u64) as usize;
            Some(merge_subtrees_root(&subtree(&cvs[..k], left), &subtree(&cvs[k..], len - left), Mode::Hash))
        }
    }
}

/// BLAKE3 (hex) of the open file `f` (at `path`, named in errors), which
/// was `size` bytes when opened.
/// Fails if the size changed meanwhile. Used where only a hash is compared
/// (a re-push, a spooled file): each pool thread reads a piece with `pread`
/// in 256 KiB parts into one buffer it reuses and hashes it as a subtree,
/// merged as in a push.
///
/// Not from a memory map, as `b3sum` does: in a VM each fault on a mapped
/// file maps 64 KiB and costs microseconds, about 2.5 ms per 16 MiB here
/// (`b3sum --num-threads 1` 6.7 ms against 5.3 ms with `--no-mmap`). Not
/// into a whole-file [`Window`] either, as before: nothing needs the bytes
/// after they are hashed, and the reused buffer stays in cache, where fresh
/// pages for 16 MiB cost 1.5–3 ms of CPU per call here (`perf stat` of a
/// re-push, 30 calls each: 12.0–13.0 ms CPU against 10.2–10.5).
pub(crate) fn hash_file(f: &File, path: &Path, size: u64) -> Result<String> {
    use rayon::prelude::*;
    use std::os::unix::fs::FileExt;
    let changed = |now: String| Error::Input {
        offset: size,
        source: std::io::Error::other(format!(
            "{} changed while it was read ({size} bytes before, {now})",
            path.display()
        )),
    };
    let pieces = size.div_ceil(PIECE as u64) as usize;
    let hashes: Vec<Result<PieceHash>> = (0..pieces)
        .into_par_iter()
        .map(|j| {
            let at = j as u64 * PIECE as u64;
            let len = (size - at).min(PIECE as u64) as usize;
            HASH_BUF.with(|b| {
                let mut buf = b.borrow_mut();
                buf.resize(HASH_CHUNK, 0);
                let mut h = PieceHasher::new(j, size);
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(HASH_CHUNK);
                    f.read_exact_at(&mut buf[..n], at + done as u64).map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => changed("fewer now".into()),
                        _ => Error::io(path, e),
                    })?;
                    h.update(&buf[..n]);
                    done += n;
                }
                Ok(h.finish())
            })
        })
        .collect();
    let hashes = hashes.into_iter().collect::<Result<Vec<_>>>()?;
    if f.read_at(&mut [0u8], size).map_err(|e| Error::io(path, e))? != 0 {
        return Err(changed("more now".into()));
    }
    let hash = merge_piece_hashes(&hashes, size).ok_or_else(|| changed("a different piece count".into()))?;
    Ok(hash.to_hex().to_string())
}

/// Bytes [`hash_file`] reads at a time: small enough to stay in cache
/// between the read and the hash, and one reused buffer per thread instead
/// of fresh pages for the whole file.
const HASH_CHUNK: usize = 256 * 1024;

thread_local! {
    static HASH_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`PieceHash::of`] fed in parts.
struct PieceHasher {
    h: blake3::Hasher,
    whole: bool,
}

impl PieceHasher {
    fn new(index: usize, file_len: u64) -> PieceHasher {
        use blake3::hazmat::HasherExt;
        let mut h = blake3::Hasher::new();
        let whole = file_len <= PIECE as u64;
        if !whole {
            h.set_input_offset(index as u64 * PIECE as u64);
        }
        PieceHasher { h, whole }
    }

    fn update(&mut self, data: &[u8]) {
        self.h.update(data);
    }

    fn finish(self) -> PieceHash {
        use blake3::hazmat::HasherExt;
        if self.whole {
            PieceHash::Whole(self.h.finalize())
        } else {
            PieceHash::Part(self.h.finalize_non_root())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_at(p: &Path, size: u64) -> Result<String> {
        hash_file(&File::open(p).unwrap(), p, size)
    }

    #[test]
    fn windows_cover_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(WINDOW * 2 + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let mut f = File::open(&p).unwrap();
        let mut w = Window::for_size(data.len() as u64, &p).unwrap();
        assert_eq!(w.capacity(), WINDOW);
        let mut back = Vec::new();
        loop {
            let n = read_full(&mut f, w.as_mut_slice(), &p).unwrap();
            back.extend_from_slice(w.data(n));
            if n < w.capacity() {
                break;
            }
        }
        assert_eq!(back, data);
        assert_eq!(hash_at(&p, data.len() as u64).unwrap(), blake3::hash(&data).to_hex().to_string());
        assert!(hash_at(&p, data.len() as u64 - 1).is_err(), "a file that grew is refused");
        assert!(hash_at(&p, data.len() as u64 + 1).is_err(), "a file that shrank is refused");
        for len in [1, PIECE - 1, PIECE, PIECE + 1, WINDOW, WINDOW + 3 * PIECE + 9] {
            std::fs::write(&p, &data[..len]).unwrap();
            let want = blake3::hash(&data[..len]).to_hex().to_string();
            assert_eq!(hash_at(&p, len as u64).unwrap(), want, "{len} bytes");
        }
    }

    #[test]
    fn merged_piece_hashes_are_the_file_hash() {
        let data: Vec<u8> = (0..(9 * PIECE + 5)).map(|i| (i * 31 % 253) as u8).collect();
        for len in [0, 1, 1024, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE, 3 * PIECE + 17, 8 * PIECE, 9 * PIECE + 5] {
            let file = &data[..len];
            let pieces: Vec<PieceHash> =
                file.chunks(PIECE).enumerate().map(|(i, p)| PieceHash::of(p, i, len as u64)).collect();
            assert_eq!(merge_piece_hashes(&pieces, len as u64), Some(blake3::hash(file)), "{len} bytes");
        }
        let one = [PieceHash::of(&data[..PIECE], 0, 3 * PIECE as u64)];
        assert_eq!(merge_piece_hashes(&one, 3 * PIECE as u64), None, "too few pieces");
        assert_eq!(merge_piece_hashes(&one, PIECE as u64), None, "a part is not a whole file");
    }

    #[test]
    fn free_huge_pages_from_buddyinfo() {
        let b = "Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 \n\
                 Node 0, zone    DMA32     89    106    104    101    104     89     61     45     28      1      0 \n\
                 Node 0, zone   Normal  12774   7135   5684   5276   6804   2556    801    248    126      3      3 \n";
        // Order 9: 1 + 1 + 3; order 10 (two each): 3 + 0 + 3.
        assert_eq!(free_huge_pages(b), 5 + 2 * 6);
        assert_eq!(free_huge_pages(""), 0);
        assert_eq!(free_huge_pages("Node 0, zone Normal 1 2 3"), 0);
    }

    #[test]
    fn empty_and_small_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(hash_at(&p, 0).unwrap(), blake3::hash(b"").to_hex().to_string());
        std::fs::write(&p, b"00000002.history").unwrap();
        let mut w = Window::for_size(16, &p).unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(read_full(&mut f, w.as_mut_slice(), &p).unwrap(), 16);
        assert_eq!(w.data(16), b"00000002.history");
        assert_eq!(read_full(&mut f, w.as_mut_slice(), &p).unwrap(), 0);
    }
}
