//! One 512-byte tar header block: checksum, numeric fields, and the
//! differences between v7, ustar and GNU headers.
//!
//! The rules follow GNU tar (`list.c`: `tar_checksum`, `from_header`),
//! since GNU tar is both the common producer and the oracle in the tests:
//! the checksum may be the unsigned or the signed byte sum, numbers are
//! octal with optional leading spaces and a space or NUL terminator, or
//! base-256 when the first byte has its high bit set.

use super::{TarError, TarFormat};

/// Tar's block size: headers are one block, data is padded to whole blocks.
pub const BLOCK: usize = 512;

/// Field offsets and widths (POSIX ustar; GNU shares the first 345 bytes).
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 8);
const UID: (usize, usize) = (108, 8);
const GID: (usize, usize) = (116, 8);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHKSUM: (usize, usize) = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 100);
const MAGIC: (usize, usize) = (257, 8);
const UNAME: (usize, usize) = (265, 32);
const GNAME: (usize, usize) = (297, 32);
const DEVMAJOR: (usize, usize) = (329, 8);
const DEVMINOR: (usize, usize) = (337, 8);
const PREFIX: (usize, usize) = (345, 155);
/// GNU old sparse headers: "is extended" flag in the main header, and in
/// each sparse extension block after its 21 map entries.
const GNU_ISEXTENDED: usize = 482;
pub(crate) const GNU_EXT_ISEXTENDED: usize = 504;

/// The fields of a header block, decoded but not yet combined with GNU
/// long names or pax records.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub format: TarFormat,
    pub typeflag: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub dev: (u32, u32),
    /// GNU old sparse: extension blocks follow this header.
    pub sparse_extended: bool,
}

/// The bytes of a field up to its first NUL.
fn text(block: &[u8; BLOCK], (at, len): (usize, usize)) -> &[u8] {
    let f = &block[at..at + len];
    let end = f.iter().position(|&b| b == 0).unwrap_or(len);
    &f[..end]
}

/// Whether a block is all zeros (an end-of-archive marker).
pub(crate) fn is_zero(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Parses a numeric field as GNU tar's `from_header` does. Returns `None`
/// for an invalid field. Blank fields read as zero.
fn number(f: &[u8], signed: bool) -> Option<i128> {
    let first = *f.first()?;
    if first & 0x80 != 0 {
        // Base-256: bit 6 of the first byte is the sign (two's complement).
        let negative = first & 0x40 != 0;
        if negative && !signed {
            return None;
        }
        let mut v: i128 = i128::from(first & 0x3f);
        if negative {
            v -= 0x40;
        }
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(i128::from(b))?;
        }
        return Some(v);
    }
    let mut i = f.iter().position(|&b| b != b' ').unwrap_or(f.len());
    let mut v: i128 = 0;
    let mut digits = 0;
    while i < f.len() && (b'0'..=b'7').contains(&f[i]) {
        v = v.checked_mul(8)?.checked_add(i128::from(f[i] - b'0'))?;
        i += 1;
        digits += 1;
    }
    // After the digits only a terminator (space or NUL) and padding may
    // follow; an empty field is zero.
    if f[i..].iter().any(|&b| b != b' ' && b != 0) || (digits == 0 && i < f.len() && f[i] != 0 && f[i] != b' ') {
        return None;
    }
    Some(v)
}

/// Reads and range-checks a numeric field, naming it in the error.
fn field<T: TryFrom<i128>>(
    block: &[u8; BLOCK],
    (at, len): (usize, usize),
    name: &'static str,
    offset: u64,
    signed: bool,
) -> Result<T, TarError> {
    let raw = &block[at..at + len];
    number(raw, signed).and_then(|v| T::try_from(v).ok()).ok_or_else(|| TarError::BadNumber {
        offset: offset + at as u64,
        field: name,
        got: raw.escape_ascii().to_string(),
    })
}

/// Verifies the header checksum of a non-zero block, accepting the unsigned
/// sum (POSIX) or the signed sum (some old tars), as GNU tar does.
pub(crate) fn check_checksum(block: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (CHKSUM.0..CHKSUM.0 + CHKSUM.1).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    let stored: Option<i64> = field(block, CHKSUM, "chksum", offset, false).ok();
    if stored == Some(unsigned) || stored == Some(signed) {
        return Ok(());
    }
    Err(TarError::BadChecksum { offset, stored: text(block, CHKSUM).escape_ascii().to_string(), computed: unsigned })
}

/// Decodes a header block whose checksum has been verified.
pub(crate) fn parse(block: &[u8; BLOCK], offset: u64) -> Result<Header, TarError> {
    let magic = &block[MAGIC.0..MAGIC.0 + MAGIC.1];
    let format = if magic == b"ustar  \0" {
        TarFormat::Gnu
    } else if &magic[..6] == b"ustar\0" {
        TarFormat::Ustar
    } else {
        TarFormat::V7
    };
    let mut path = text(block, NAME).to_vec();
    if format == TarFormat::Ustar {
        let prefix = text(block, PREFIX);
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&path);
            path = full;
        }
    }
    let typeflag = block[TYPEFLAG];
    let modern = format != TarFormat::V7;
    let dev = if modern && matches!(typeflag, b'3' | b'4') {
        (field(block, DEVMAJOR, "devmajor", offset, false)?, field(block, DEVMINOR, "devminor", offset, false)?)
    } else {
        (0, 0)
    };
    Ok(Header {
        format,
        typeflag,
        link: text(block, LINKNAME).to_vec(),
        mode: field::<u64>(block, MODE, "mode", offset, false)? as u32 & 0o7777,
        uid: field(block, UID, "uid", offset, false)?,
        gid: field(block, GID, "gid", offset, false)?,
        size: field(block, SIZE, "size", offset, false)?,
        mtime: field(block, MTIME, "mtime", offset, true)?,
        uname: if modern { text(block, UNAME).to_vec() } else { Vec::new() },
        gname: if modern { text(block, GNAME).to_vec() } else { Vec::new() },
        dev,
        sparse_extended: format == TarFormat::Gnu && typeflag == b'S' && block[GNU_ISEXTENDED] != 0,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields() {
        assert_eq!(number(b"0000644\0", false), Some(0o644));
        assert_eq!(number(b"   644 \0", false), Some(0o644));
        assert_eq!(number(b"\0\0\0\0\0\0\0\0", false), Some(0));
        assert_eq!(number(b"        ", false), Some(0));
        assert_eq!(number(b"0000648\0", false), None);
        assert_eq!(number(b"00006 4\0", false), None);
        assert_eq!(number(b"77777777777\0", false), Some(0o77777777777));
    }

    #[test]
    fn base_256_fields() {
        // 10 GiB in a 12-byte size field.
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[7] = 0x02;
        f[8] = 0x80;
        assert_eq!(number(&f, false), Some(10 << 30));
        // -1 as a base-256 mtime.
        assert_eq!(number(&[0xff; 12], true), Some(-1));
        assert_eq!(number(&[0xff; 12], false), None);
        // Too large for the type is caught by the caller's conversion.
        let mut huge = [0xffu8; 12];
        huge[0] = 0xbf;
        assert!(number(&huge, false).unwrap() > i128::from(u64::MAX));
    }

    #[test]
    fn signed_checksums_are_accepted() {
        let mut block = [0u8; BLOCK];
        block[..4].copy_from_slice(b"\xe9t\xfc\x01");
        let unsigned: i64 = block.iter().map(|&b| i64::from(b)).sum::<i64>() + 8 * 32;
        let signed: i64 = block.iter().map(|&b| i64::from(b as i8)).sum::<i64>() + 8 * 32;
        for sum in [unsigned, signed] {
            let mut b = block;
            b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            assert!(check_checksum(&b, 0).is_ok(), "sum {sum}");
        }
        let mut b = block;
        b[148..156].copy_from_slice(format!("{:06o}\0 ", unsigned + 1).as_bytes());
        assert!(matches!(check_checksum(&b, 1024), Err(TarError::BadChecksum { offset: 1024, .. })));
    }
}
