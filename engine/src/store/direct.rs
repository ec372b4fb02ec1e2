//! Writing large local objects around the page cache.
//!
//! A put of a pack copies its bytes into page-cache pages that the kernel
//! must first allocate, then writes them back, and the put's fsync waits for
//! that. On the machines measured here (virtual machines, where a fresh page
//! is expensive) the copy, not the disk, bounded repacking: 53 % of a
//! prune's CPU samples were in `copy_folio_from_iter_atomic`. With
//! `O_DIRECT` the disk reads the bytes from one small reused buffer.
//!
//! Only the 4 KiB-aligned body goes direct; the tail is written normally.
//! A file system that refuses `O_DIRECT` (tmpfs, some FUSE) gets the normal
//! write: the result on disk is the same bytes either way, and the caller
//! fsyncs as before.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};

/// Objects at least this large are written direct.
pub(super) const DIRECT_MIN: usize = 1 << 20;
/// The alignment `O_DIRECT` needs for buffers, offsets and lengths (the
/// logical block size of common disks is 512 or 4096).
const ALIGN: usize = 4096;
/// Bytes copied into the aligned buffer per write.
const PIECE: usize = 1 << 20;

thread_local! {
    /// One aligned bounce buffer per writing thread (over-allocated by
    /// `ALIGN` so an aligned window always fits), reused for every object.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes `bytes` at the start of the empty file `f`, direct where it can.
pub(super) fn write_object(f: &File, bytes: &[u8]) -> io::Result<()> {
    let body = if bytes.len() >= DIRECT_MIN { write_direct(f, bytes)? } else { 0 };
    f.write_all_at(&bytes[body..], body as u64)
}

/// Writes the aligned body of `bytes` with `O_DIRECT`; returns how many
/// bytes it wrote (0 when the file system refuses direct writes).
fn write_direct(f: &File, bytes: &[u8]) -> io::Result<usize> {
    let flags = fcntl_getfl(f)?;
    if fcntl_setfl(f, flags | OFlags::DIRECT).is_err() {
        return Ok(0);
    }
    let body = bytes.len() / ALIGN * ALIGN;
    let written = BOUNCE.with(|b| {
        let mut buf = b.borrow_mut();
        if buf.len() < PIECE + ALIGN {
            buf.resize(PIECE + ALIGN, 0);
        }
        let off = buf.as_ptr().align_offset(ALIGN);
        let window = &mut buf[off..off + PIECE];
        let mut at = 0;
        while at < body {
            let n = (body - at).min(PIECE);
            window[..n].copy_from_slice(&bytes[at..at + n]);
            match f.write_all_at(&window[..n], at as u64) {
                Ok(()) => at += n,
                // Accepted at open, refused at write (some FUSE file
                // systems): the rest goes through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(at)
    });
    fcntl_setfl(f, flags)?;
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_every_size_are_written_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 777u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        for len in [0, 1, 4095, DIRECT_MIN - 1, DIRECT_MIN, DIRECT_MIN + 1, PIECE * 2 + ALIGN, data.len()] {
            let path = dir.path().join(format!("o{len}"));
            let f = File::create(&path).unwrap();
            write_object(&f, &data[..len]).unwrap();
            f.sync_all().unwrap();
            drop(f);
            assert!(std::fs::read(&path).unwrap() == data[..len], "{len} bytes");
        }
    }
}
