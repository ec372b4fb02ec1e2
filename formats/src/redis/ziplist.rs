//! Validation of the older compact encodings: ziplist (Redis 3.2 to 6.2
//! lists, hashes and sorted sets), intset (sets of integers, all versions)
//! and zipmap (hashes before Redis 2.6).
//!
//! The checks follow Redis's deep sanitisation (`ziplistValidateIntegrity`,
//! `intsetValidateIntegrity`, `zipmapValidateIntegrity` and the duplicate
//! checks in `rdb.c`), which is what `redis-check-rdb` runs.

use std::collections::HashSet;

use super::error::ContainerError;
use super::listpack::Elem;

/// `zlbytes: u32, zltail: u32, zllen: u16`.
const ZL_HEADER: usize = 10;

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn int_le(s: &[u8]) -> i64 {
    let mut v: u64 = 0;
    for (i, &byte) in s.iter().enumerate() {
        v |= u64::from(byte) << (8 * i);
    }
    let shift = 64 - 8 * s.len() as u32;
    ((v << shift) as i64) >> shift
}

/// Validates a ziplist and returns its element count.
///
/// With `pairs`, the elements are field/value (or member/score) pairs: the
/// count must be even and the fields unique, as Redis requires of hashes
/// and sorted sets.
pub(crate) fn validate_ziplist(zl: &[u8], pairs: bool) -> Result<u64, ContainerError> {
    if zl.len() < ZL_HEADER + 1 {
        return Err(ContainerError::new(0, "a ziplist of at least 11 bytes", format!("{} bytes", zl.len())));
    }
    let bytes = u32_le(zl, 0).unwrap_or(0);
    if u64::from(bytes) != zl.len() as u64 {
        return Err(ContainerError::new(0, "zlbytes equal to the string length", bytes));
    }
    let last = zl.len() - 1;
    if zl[last] != 0xff {
        return Err(ContainerError::new(last, "the 0xFF terminator", zl[last]));
    }
    let tail = u32_le(zl, 4).unwrap_or(0) as usize;
    if tail > last {
        return Err(ContainerError::new(4, "a tail offset inside the ziplist", tail));
    }
    let header_count = u16::from_le_bytes([zl[8], zl[9]]);

    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut p = ZL_HEADER;
    let mut prev: Option<usize> = None;
    let mut prev_size: usize = 0;
    let mut count: u64 = 0;
    while zl[p] != 0xff {
        let at = |i: usize| zl.get(p + i).copied().filter(|_| p + i <= last);
        let bad = |what: &'static str, got: String| ContainerError::new(p, what, got);
        // prevlen: one byte, or 0xFE and four bytes.
        let (plen_size, prevlen) = if zl[p] < 0xfe {
            (1, usize::from(zl[p]))
        } else {
            let v = u32_le(zl, p + 1)
                .filter(|_| p + 5 <= last)
                .ok_or_else(|| bad("a prevlen inside the ziplist", "past the end".into()))?;
            (5, v as usize)
        };
        let enc = at(plen_size).ok_or_else(|| bad("an entry encoding inside the ziplist", "past the end".into()))?;
        let e = p + plen_size;
        let (len_size, data_len) = match enc {
            0x00..=0x3f => (1, usize::from(enc & 0x3f)),
            0x40..=0x7f => {
                let lo = at(plen_size + 1).ok_or_else(|| bad("a 14-bit length", "past the end".into()))?;
                (2, (usize::from(enc & 0x3f) << 8) | usize::from(lo))
            }
            0x80..=0xbf => {
                let s = zl
                    .get(e + 1..e + 5)
                    .filter(|_| e + 5 <= last)
                    .ok_or_else(|| bad("a 32-bit length", "past the end".into()))?;
                (5, u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
            }
            0xc0 => (1, 2),
            0xd0 => (1, 4),
            0xe0 => (1, 8),
            0xf0 => (1, 3),
            0xfe => (1, 1),
            0xf1..=0xfd => (1, 0),
            _ => return Err(bad("a ziplist entry encoding", format!("{enc:#04x}"))),
        };
        let header = plen_size + len_size;
        let size = header.checked_add(data_len).ok_or_else(|| bad("an entry size that fits", data_len.to_string()))?;
        let next = p
            .checked_add(size)
            .filter(|&n| n <= last)
            .ok_or_else(|| bad("an entry inside the ziplist", format!("{size} bytes")))?;
        if prevlen != prev_size {
            return Err(bad("a prevlen equal to the previous entry's size", format!("{prevlen} for {prev_size}")));
        }
        if pairs && count.is_multiple_of(2) {
            let data = &zl[p + header..next];
            let elem = match enc {
                0x00..=0xbf => Elem::Str(data),
                0xf1..=0xfd => Elem::Int(i64::from(enc & 0x0f) - 1),
                _ => Elem::Int(int_le(data)),
            };
            if !seen.insert(elem.key().into_owned()) {
                return Err(bad("unique fields", "a duplicate".into()));
            }
        }
        prev_size = size;
        prev = Some(p);
        p = next;
        count += 1;
    }
    if p != last {
        return Err(ContainerError::new(p, "the terminator only at the end", "0xFF inside the ziplist"));
    }
    if let Some(prev) = prev {
        if prev != tail {
            return Err(ContainerError::new(
                4,
                "a tail offset pointing at the last entry",
                format!("{tail}, last entry at {prev}"),
            ));
        }
    }
    if header_count != u16::MAX && u64::from(header_count) != count {
        return Err(ContainerError::new(
            8,
            "a header count equal to the entries",
            format!("{header_count} for {count}"),
        ));
    }
    if pairs && !count.is_multiple_of(2) {
        return Err(ContainerError::new(0, "field/value pairs", format!("{count} elements")));
    }
    Ok(count)
}

/// Validates an intset (`encoding: u32, length: u32, sorted integers`) and
/// returns its length. Redis refuses empty intsets and unsorted or
/// duplicate members.
pub(crate) fn validate_intset(is: &[u8]) -> Result<u64, ContainerError> {
    let enc = u32_le(is, 0)
        .ok_or_else(|| ContainerError::new(0, "an 8-byte intset header", format!("{} bytes", is.len())))?;
    let width = match enc {
        2 | 4 | 8 => enc as usize,
        _ => return Err(ContainerError::new(0, "an intset encoding of 2, 4 or 8", enc)),
    };
    let len = u32_le(is, 4)
        .ok_or_else(|| ContainerError::new(0, "an 8-byte intset header", format!("{} bytes", is.len())))?;
    let want = (len as u64).checked_mul(width as u64).and_then(|n| n.checked_add(8));
    if want != Some(is.len() as u64) {
        return Err(ContainerError::new(
            4,
            "an intset length matching the string size",
            format!("{len} x {width} in {} bytes", is.len()),
        ));
    }
    if len == 0 {
        return Err(ContainerError::new(4, "a non-empty intset", 0));
    }
    let mut prev: Option<i64> = None;
    for (i, chunk) in is[8..].chunks_exact(width).enumerate() {
        let v = int_le(chunk);
        if prev.is_some_and(|p| v <= p) {
            return Err(ContainerError::new(8 + i * width, "intset members in ascending order", v));
        }
        prev = Some(v);
    }
    Ok(u64::from(len))
}

/// Validates a zipmap (Redis 2.4 and older hashes) and returns its number of
/// field/value pairs.
pub(crate) fn validate_zipmap(zm: &[u8]) -> Result<u64, ContainerError> {
    const BIGLEN: u8 = 254;
    const END: u8 = 255;
    if zm.len() < 2 {
        return Err(ContainerError::new(0, "a zipmap of at least 2 bytes", format!("{} bytes", zm.len())));
    }
    let last = zm.len() - 1;
    if zm[last] != END {
        return Err(ContainerError::new(last, "the 0xFF terminator", zm[last]));
    }
    let in_range = |p: usize| p >= 2 && p <= last;
    // The encoded length at `p`: one byte below 254, else 254 and a u32 LE.
    let len_at = |p: usize| -> Option<(usize, usize)> {
        let b = *zm.get(p)?;
        if b < BIGLEN {
            Some((1, usize::from(b)))
        } else {
            Some((5, u32_le(zm, p + 1)? as usize))
        }
    };
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut count: u64 = 0;
    let mut p = 1usize;
    while zm[p] != END {
        let entry_at = p;
        let bad = |what: &'static str| ContainerError::new(entry_at, what, "past the end");
        let (s, l) = len_at(p).ok_or_else(|| bad("a field length"))?;
        if !in_range(p + s) {
            return Err(bad("a field length inside the zipmap"));
        }
        let field_start = p + s;
        p = field_start.checked_add(l).filter(|&n| in_range(n)).ok_or_else(|| bad("a field inside the zipmap"))?;
        let field = &zm[field_start..p];
        let (s, l) = len_at(p).ok_or_else(|| bad("a value length"))?;
        if !in_range(p + s) {
            return Err(bad("a value length inside the zipmap"));
        }
        p += s;
        let free = usize::from(zm[p]);
        p = (p + 1)
            .checked_add(l)
            .and_then(|n| n.checked_add(free))
            .filter(|&n| in_range(n))
            .ok_or_else(|| bad("a value inside the zipmap"))?;
        if !seen.insert(field) {
            return Err(ContainerError::new(field_start, "unique fields", "a duplicate"));
        }
        count += 1;
    }
    if count == 0 {
        return Err(ContainerError::new(0, "a non-empty zipmap", 0));
    }
    if zm[0] != BIGLEN && u64::from(zm[0]) != count {
        return Err(ContainerError::new(0, "a header count equal to the entries", format!("{} for {count}", zm[0])));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a ziplist of short strings and small integers.
    fn build(elems: &[Elem<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut prev = 0usize;
        let mut tail = ZL_HEADER;
        for e in elems {
            tail = ZL_HEADER + body.len();
            let start = body.len();
            body.push(prev as u8);
            match *e {
                Elem::Str(s) => {
                    body.push(s.len() as u8);
                    body.extend_from_slice(s);
                }
                Elem::Int(v) => {
                    body.push(0xc0);
                    body.extend_from_slice(&(v as i16).to_le_bytes());
                }
            }
            prev = body.len() - start;
        }
        let mut zl = Vec::new();
        zl.extend_from_slice(&((body.len() + ZL_HEADER + 1) as u32).to_le_bytes());
        zl.extend_from_slice(&(tail as u32).to_le_bytes());
        zl.extend_from_slice(&(elems.len() as u16).to_le_bytes());
        zl.extend_from_slice(&body);
        zl.push(0xff);
        zl
    }

    #[test]
    fn valid_ziplist() {
        let zl = build(&[Elem::Str(b"field"), Elem::Int(300), Elem::Str(b"x"), Elem::Str(b"y")]);
        assert_eq!(validate_ziplist(&zl, false).unwrap(), 4);
        assert_eq!(validate_ziplist(&zl, true).unwrap(), 4);
        assert_eq!(validate_ziplist(&build(&[]), false).unwrap(), 0);
    }

    #[test]
    fn ziplist_damage_is_detected() {
        let good = build(&[Elem::Str(b"a"), Elem::Str(b"bc"), Elem::Int(7)]);
        let cases: &[(usize, u8, &str)] = &[
            (0, 1, "zlbytes equal to the string length"),
            (4, 0x10, "a tail offset pointing at the last entry"),
            (8, 5, "a header count equal to the entries"),
            (13, 9, "a prevlen equal to the previous entry's size"),
            (14, 0x3f, "an entry inside the ziplist"),
        ];
        for &(at, xor, what) in cases {
            let mut zl = good.clone();
            zl[at] ^= xor;
            assert_eq!(validate_ziplist(&zl, false).unwrap_err().expected, what, "flip at {at}");
        }
        let odd = build(&[Elem::Str(b"a"), Elem::Str(b"b"), Elem::Str(b"c")]);
        assert_eq!(validate_ziplist(&odd, true).unwrap_err().expected, "field/value pairs");
        let dup = build(&[Elem::Str(b"7"), Elem::Str(b"b"), Elem::Int(7), Elem::Str(b"c")]);
        assert_eq!(validate_ziplist(&dup, true).unwrap_err().expected, "unique fields");
    }

    #[test]
    fn intset_rules() {
        let mut is = vec![2, 0, 0, 0, 3, 0, 0, 0];
        for v in [-5i16, 1, 400] {
            is.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(validate_intset(&is).unwrap(), 3);
        let mut unsorted = is.clone();
        unsorted.swap(8, 10);
        unsorted.swap(9, 11);
        assert!(validate_intset(&unsorted).is_err());
        assert!(validate_intset(&is[..is.len() - 1]).is_err());
        assert!(validate_intset(&[2, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(validate_intset(&[3, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(validate_intset(&[2, 0, 0]).is_err());
    }

    #[test]
    fn zipmap_rules() {
        // 1 pair: "ab" -> "c" with 1 byte of free space.
        let zm = [1, 2, b'a', b'b', 1, 1, b'c', 0, 255];
        assert_eq!(validate_zipmap(&zm).unwrap(), 1);
        let mut wrong_count = zm;
        wrong_count[0] = 2;
        assert!(validate_zipmap(&wrong_count).is_err());
        let mut overrun = zm;
        overrun[5] = 9;
        assert!(validate_zipmap(&overrun).is_err());
        assert!(validate_zipmap(&[0, 255]).is_err());
        let dup = [2, 1, b'a', 1, 0, b'x', 1, b'a', 1, 0, b'y', 255];
        assert_eq!(validate_zipmap(&dup).unwrap_err().expected, "unique fields");
    }
}
