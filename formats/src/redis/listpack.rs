//! Listpack validation (Redis 7+ small lists, sets, sorted sets, hashes and
//! stream nodes).
//!
//! A listpack is `total_bytes: u32 LE, count: u16 LE, entries..., 0xFF`,
//! where each entry is an encoding byte, its data, and a "backlen" that
//! stores the entry size again so the list can be walked backwards. The
//! checks follow Redis's deep sanitisation (`lpValidateIntegrity`,
//! `lpValidateNext`, `lpValidateIntegrityAndDups` and
//! `streamValidateListpackIntegrity`) so that this decoder rejects what
//! `redis-check-rdb` rejects.

use std::borrow::Cow;
use std::collections::HashSet;

use super::error::ContainerError;

/// The header is six bytes; the smallest listpack adds the 0xFF terminator.
const HEADER: usize = 6;
/// A header count of 65535 means "too many to count, walk the list".
const COUNT_UNKNOWN: u16 = u16::MAX;
/// Largest expiry time a hash field may carry (`EB_EXPIRE_TIME_MAX`).
pub(crate) const EXPIRE_TIME_MAX: u64 = (1 << 48) - 1;

/// One decoded listpack or ziplist element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem<'a> {
    /// An integer-encoded element.
    Int(i64),
    /// A string element.
    Str(&'a [u8]),
}

impl<'a> Elem<'a> {
    /// The integer value, if the element is one or is a string that Redis's
    /// `string2ll` would accept.
    pub(crate) fn as_int(&self) -> Option<i64> {
        match *self {
            Elem::Int(v) => Some(v),
            Elem::Str(s) => parse_i64_strict(s),
        }
    }

    /// The element as Redis compares it for duplicates: integers by their
    /// decimal text.
    pub(crate) fn key(&self) -> Cow<'a, [u8]> {
        match *self {
            Elem::Int(v) => Cow::Owned(v.to_string().into_bytes()),
            Elem::Str(s) => Cow::Borrowed(s),
        }
    }
}

/// Parses a decimal integer the way Redis's `string2ll` does: optional
/// minus, no leading zeros, no plus sign, no spaces, no overflow.
pub(crate) fn parse_i64_strict(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: i128 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i128::from(d - b'0');
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

fn u32_le(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn int_le(b: &[u8], at: usize, width: usize) -> Option<i64> {
    let s = b.get(at..at.checked_add(width)?)?;
    let mut v: u64 = 0;
    for (i, &byte) in s.iter().enumerate() {
        v |= u64::from(byte) << (8 * i);
    }
    // Sign-extend from `width` bytes.
    let shift = 64 - 8 * width as u32;
    Some(((v << shift) as i64) >> shift)
}

/// Walks a listpack whose header has been checked, yielding validated
/// elements and their offsets.
pub(crate) struct Entries<'a> {
    lp: &'a [u8],
    pos: usize,
    done: bool,
    count: u64,
    header_count: u16,
}

/// Checks the header (size, terminator) and returns an element iterator.
pub(crate) fn entries(lp: &[u8]) -> Result<Entries<'_>, ContainerError> {
    if lp.len() < HEADER + 1 {
        return Err(ContainerError::new(0, "a listpack of at least 7 bytes", format!("{} bytes", lp.len())));
    }
    let total = u32_le(lp, 0).unwrap_or(0);
    if u64::from(total) != lp.len() as u64 {
        return Err(ContainerError::new(0, "total_bytes equal to the string length", total));
    }
    if lp[lp.len() - 1] != 0xff {
        return Err(ContainerError::new(lp.len() - 1, "the 0xFF terminator", lp[lp.len() - 1]));
    }
    let header_count = u16::from_le_bytes([lp[4], lp[5]]);
    Ok(Entries { lp, pos: HEADER, done: false, count: 0, header_count })
}

impl<'a> Entries<'a> {
    /// Decodes the entry at `self.pos`, checking that it and its backlen stay
    /// inside the listpack and that the backlen matches the entry size.
    fn decode(&mut self) -> Result<Option<Elem<'a>>, ContainerError> {
        let lp = self.lp;
        let last = lp.len() - 1; // index of the terminator
        let p = self.pos;
        let b = lp[p];
        if b == 0xff {
            if p != last {
                return Err(ContainerError::new(p, "the terminator only at the end", "0xFF inside the listpack"));
            }
            return Ok(None);
        }
        let byte = |i: usize| -> Result<usize, ContainerError> {
            let at = p + i;
            if at > last {
                return Err(ContainerError::new(p, "an entry header inside the listpack", "header past the end"));
            }
            Ok(usize::from(lp[at]))
        };
        // (header bytes, data bytes, element)
        let (hdr, data, elem): (usize, usize, Option<Elem<'a>>) = if b & 0x80 == 0 {
            (1, 0, Some(Elem::Int(i64::from(b & 0x7f))))
        } else if b & 0xc0 == 0x80 {
            (1, usize::from(b & 0x3f), None)
        } else if b & 0xe0 == 0xc0 {
            let uv = (usize::from(b & 0x1f) << 8) | byte(1)?;
            let v = if uv >= 1 << 12 { uv as i64 - (1 << 13) } else { uv as i64 };
            (2, 0, Some(Elem::Int(v)))
        } else if b & 0xf0 == 0xe0 {
            (2, (usize::from(b & 0x0f) << 8) | byte(1)?, None)
        } else {
            match b {
                0xf0 => {
                    byte(4)?;
                    let len = u32_le(lp, p + 1).unwrap_or(0);
                    (5, len as usize, None)
                }
                0xf1 => (1, 2, None),
                0xf2 => (1, 3, None),
                0xf3 => (1, 4, None),
                0xf4 => (1, 8, None),
                _ => return Err(ContainerError::new(p, "a listpack entry encoding", format!("{b:#04x}"))),
            }
        };
        let entry =
            hdr.checked_add(data).ok_or_else(|| ContainerError::new(p, "an entry size that fits in memory", data))?;
        let back = backlen_size(entry as u64);
        let next = p.checked_add(entry).and_then(|n| n.checked_add(back));
        let next = match next {
            Some(n) if n <= last => n,
            _ => {
                return Err(ContainerError::new(p, "an entry inside the listpack", format!("{entry} bytes + backlen")))
            }
        };
        let stored = decode_backlen(lp, next - 1);
        if stored != Some(entry as u64) {
            return Err(ContainerError::new(
                next - 1,
                "a backlen matching the entry size",
                format!("{stored:?} for {entry}"),
            ));
        }
        let elem = match elem {
            Some(e) => e,
            None if b >= 0xf1 => Elem::Int(int_le(lp, p + 1, data).unwrap_or(0)),
            None => Elem::Str(&lp[p + hdr..p + entry]),
        };
        self.pos = next;
        Ok(Some(elem))
    }

    /// Checks that the element count in the header matches the walk.
    fn check_count(&self) -> Result<(), ContainerError> {
        if self.header_count != COUNT_UNKNOWN && u64::from(self.header_count) != self.count {
            return Err(ContainerError::new(
                4,
                "a header count equal to the entries",
                format!("{} for {}", self.header_count, self.count),
            ));
        }
        Ok(())
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(usize, Elem<'a>), ContainerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.pos;
        match self.decode() {
            Ok(Some(e)) => {
                self.count += 1;
                Some(Ok((at, e)))
            }
            Ok(None) => {
                self.done = true;
                self.check_count().err().map(Err)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Bytes `lpEncodeBacklen` uses for an entry of `l` bytes.
fn backlen_size(l: u64) -> usize {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2_097_150 => 3,
        2_097_151..=268_435_454 => 4,
        _ => 5,
    }
}

/// Reads a backlen backwards from its last byte, as `lpDecodeBacklen` does.
fn decode_backlen(lp: &[u8], mut at: usize) -> Option<u64> {
    let mut val: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *lp.get(at)?;
        val |= u64::from(b & 127) << shift;
        if b & 128 == 0 {
            return Some(val);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
        at = at.checked_sub(1)?;
    }
}

/// Validates a listpack holding `tuple`-sized records (1 for sets and list
/// nodes, 2 for hashes and sorted sets, 3 for hashes with field TTLs) and
/// returns the number of elements.
///
/// With `unique`, the first element of each record must not repeat, as
/// Redis requires of set members and hash fields. For 3-tuples the third
/// element is an expiry time that must be a valid, ordered timestamp.
pub(crate) fn validate(lp: &[u8], tuple: u64, unique: bool) -> Result<u64, ContainerError> {
    let mut it = entries(lp)?;
    let mut seen: HashSet<Cow<'_, [u8]>> = HashSet::new();
    let mut last_expire: i64 = -1;
    let mut n: u64 = 0;
    for item in &mut it {
        let (at, elem) = item?;
        let slot = n % tuple;
        if unique && slot == 0 && !seen.insert(elem.key()) {
            return Err(ContainerError::new(at, "unique fields", "a duplicate"));
        }
        if tuple == 3 && slot == 2 {
            let ttl = elem
                .as_int()
                .filter(|&t| t >= 0 && t as u64 <= EXPIRE_TIME_MAX)
                .ok_or_else(|| ContainerError::new(at, "a field expiry time", format!("{elem:?}")))?;
            if ttl != 0 && (last_expire == 0 || ttl < last_expire) {
                return Err(ContainerError::new(at, "field expiry times in ascending order", ttl));
            }
            last_expire = ttl;
        }
        n += 1;
    }
    if !n.is_multiple_of(tuple) {
        return Err(ContainerError::new(0, "whole records", format!("{n} elements for records of {tuple}")));
    }
    Ok(n)
}

/// Validates a stream node listpack: the master entry (count, deleted,
/// field names, 0) followed by `count + deleted` entries, each ending with
/// its own element count. Returns the number of elements.
pub(crate) fn validate_stream(lp: &[u8]) -> Result<u64, ContainerError> {
    const SAMEFIELDS: i64 = 2;
    let mut it = entries(lp)?;
    let it = &mut it;
    let count = next_int(it, "the stream node entry count")?;
    let deleted = next_int(it, "the stream node deleted count")?;
    let master_fields = next_int(it, "the master field count")?;
    for _ in 0..master_fields.max(0) {
        next_any(it, "a master field name")?;
    }
    if next_int(it, "the master entry terminator")? != 0 {
        return Err(ContainerError::new(0, "a zero master entry terminator", "non-zero"));
    }
    let total = count.checked_add(deleted).unwrap_or(-1);
    if total < 0 || master_fields < 0 {
        return Err(ContainerError::new(
            0,
            "non-negative entry and field counts",
            format!("{count}+{deleted}, {master_fields}"),
        ));
    }
    for _ in 0..total {
        let flags = next_int(it, "entry flags")?;
        next_int(it, "an entry ms delta")?;
        next_int(it, "an entry seq delta")?;
        let mut fields = master_fields;
        let mut extra: i64 = 3;
        if flags & SAMEFIELDS == 0 {
            fields = next_int(it, "an entry field count")?;
            if fields < 0 {
                return Err(ContainerError::new(0, "a non-negative field count", fields));
            }
            for _ in 0..fields {
                next_any(it, "a field name")?;
            }
            extra = extra.saturating_add(fields).saturating_add(1);
        }
        for _ in 0..fields {
            next_any(it, "a field value")?;
        }
        let lp_count = next_int(it, "the entry's element count")?;
        if Some(lp_count) != fields.checked_add(extra) {
            return Err(ContainerError::new(0, "an entry element count matching its fields", lp_count));
        }
    }
    match it.next() {
        None => Ok(it.count),
        Some(Err(e)) => Err(e),
        Some(Ok((at, _))) => Err(ContainerError::new(at, "the end of the stream node", "another element")),
    }
}

/// The next element, which must exist.
fn next_any<'a>(it: &mut Entries<'a>, what: &'static str) -> Result<(usize, Elem<'a>), ContainerError> {
    match it.next() {
        Some(r) => r,
        None => Err(ContainerError::new(it.lp.len() - 1, what, "the end of the listpack")),
    }
}

/// The next element, which must be an integer.
fn next_int(it: &mut Entries<'_>, what: &'static str) -> Result<i64, ContainerError> {
    let (at, e) = next_any(it, what)?;
    e.as_int().ok_or_else(|| ContainerError::new(at, what, format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a listpack the way Redis encodes small strings and integers.
    pub(crate) fn build(elems: &[Elem<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        for e in elems {
            let start = body.len();
            match *e {
                Elem::Int(v) if (0..=127).contains(&v) => body.push(v as u8),
                Elem::Int(v) => {
                    body.push(0xf4);
                    body.extend_from_slice(&v.to_le_bytes());
                }
                Elem::Str(s) if s.len() < 64 => {
                    body.push(0x80 | s.len() as u8);
                    body.extend_from_slice(s);
                }
                Elem::Str(s) => {
                    assert!(s.len() < 4096);
                    body.push(0xe0 | (s.len() >> 8) as u8);
                    body.push(s.len() as u8);
                    body.extend_from_slice(s);
                }
            }
            let l = (body.len() - start) as u64;
            match backlen_size(l) {
                1 => body.push(l as u8),
                2 => body.extend_from_slice(&[(l >> 7) as u8, (l & 127) as u8 | 128]),
                _ => unreachable!("test entries are small"),
            }
        }
        let mut lp = Vec::new();
        lp.extend_from_slice(&((body.len() + 7) as u32).to_le_bytes());
        lp.extend_from_slice(&(elems.len() as u16).to_le_bytes());
        lp.extend_from_slice(&body);
        lp.push(0xff);
        lp
    }

    #[test]
    fn valid_listpack_counts_elements() {
        let long = vec![b'x'; 200];
        let lp = build(&[Elem::Str(b"a"), Elem::Int(5), Elem::Int(-70000), Elem::Str(&long)]);
        assert_eq!(validate(&lp, 1, false).unwrap(), 4);
        assert_eq!(validate(&lp, 2, true).unwrap(), 4);
        let got: Vec<_> = entries(&lp).unwrap().map(|e| e.unwrap().1).collect();
        assert_eq!(got[2], Elem::Int(-70000));
        assert_eq!(got[3], Elem::Str(&long));
    }

    #[test]
    fn empty_listpack_is_valid_with_zero_elements() {
        assert_eq!(validate(&build(&[]), 1, true).unwrap(), 0);
    }

    #[test]
    fn header_damage_is_detected() {
        let mut lp = build(&[Elem::Str(b"abc")]);
        lp[0] ^= 1;
        assert_eq!(validate(&lp, 1, false).unwrap_err().expected, "total_bytes equal to the string length");
        let mut lp = build(&[Elem::Str(b"abc")]);
        *lp.last_mut().unwrap() = 0;
        assert_eq!(validate(&lp, 1, false).unwrap_err().expected, "the 0xFF terminator");
        let mut lp = build(&[Elem::Str(b"abc")]);
        lp[4] = 2;
        assert_eq!(validate(&lp, 1, false).unwrap_err().expected, "a header count equal to the entries");
        assert!(validate(&lp[..5], 1, false).is_err());
    }

    #[test]
    fn entry_damage_is_detected() {
        // A string length that runs past the end.
        let mut lp = build(&[Elem::Str(b"abc")]);
        lp[6] = 0x80 | 40;
        assert!(validate(&lp, 1, false).is_err());
        // A wrong backlen.
        let mut lp = build(&[Elem::Str(b"abc")]);
        lp[10] = 3;
        assert_eq!(validate(&lp, 1, false).unwrap_err().expected, "a backlen matching the entry size");
        // An encoding byte that does not exist.
        let mut lp = build(&[Elem::Int(1)]);
        lp[6] = 0xf5;
        assert_eq!(validate(&lp, 1, false).unwrap_err().expected, "a listpack entry encoding");
    }

    #[test]
    fn duplicates_and_odd_records_are_rejected() {
        let lp = build(&[Elem::Str(b"f"), Elem::Str(b"v"), Elem::Str(b"f"), Elem::Str(b"w")]);
        assert_eq!(validate(&lp, 2, true).unwrap_err().expected, "unique fields");
        assert_eq!(validate(&lp, 2, false).unwrap(), 4);
        // Integer 12 and string "12" are the same member to Redis.
        let lp = build(&[Elem::Int(12), Elem::Str(b"12")]);
        assert!(validate(&lp, 1, true).is_err());
        let lp = build(&[Elem::Str(b"f"), Elem::Str(b"v"), Elem::Str(b"g")]);
        assert_eq!(validate(&lp, 2, false).unwrap_err().expected, "whole records");
    }

    #[test]
    fn field_ttls_must_be_ordered() {
        let ok = build(&[
            Elem::Str(b"a"),
            Elem::Str(b"1"),
            Elem::Int(1000),
            Elem::Str(b"b"),
            Elem::Str(b"2"),
            Elem::Int(2000),
            Elem::Str(b"c"),
            Elem::Str(b"3"),
            Elem::Int(0),
        ]);
        assert_eq!(validate(&ok, 3, true).unwrap(), 9);
        let bad =
            build(&[Elem::Str(b"a"), Elem::Str(b"1"), Elem::Int(0), Elem::Str(b"b"), Elem::Str(b"2"), Elem::Int(2000)]);
        assert!(validate(&bad, 3, true).is_err());
    }

    #[test]
    fn stream_node_structure() {
        // Master entry: count 1, deleted 0, 1 field "f", terminator 0.
        // Entry: flags SAMEFIELDS, ms 0, seq 0, value "v", lp-count 4.
        let node = build(&[
            Elem::Int(1),
            Elem::Int(0),
            Elem::Int(1),
            Elem::Str(b"f"),
            Elem::Int(0),
            Elem::Int(2),
            Elem::Int(0),
            Elem::Int(0),
            Elem::Str(b"v"),
            Elem::Int(4),
        ]);
        assert_eq!(validate_stream(&node).unwrap(), 10);
        // A wrong lp-count.
        let bad = build(&[
            Elem::Int(1),
            Elem::Int(0),
            Elem::Int(1),
            Elem::Str(b"f"),
            Elem::Int(0),
            Elem::Int(2),
            Elem::Int(0),
            Elem::Int(0),
            Elem::Str(b"v"),
            Elem::Int(5),
        ]);
        assert!(validate_stream(&bad).is_err());
        // A missing entry.
        let short = build(&[Elem::Int(2), Elem::Int(0), Elem::Int(0), Elem::Int(0)]);
        assert!(validate_stream(&short).is_err());
    }

    #[test]
    fn strict_integers() {
        assert_eq!(parse_i64_strict(b"-12"), Some(-12));
        assert_eq!(parse_i64_strict(b"0"), Some(0));
        for bad in [&b"-0"[..], b"012", b"+1", b" 1", b"", b"99999999999999999999"] {
            assert_eq!(parse_i64_strict(bad), None, "{bad:?}");
        }
        assert_eq!(parse_i64_strict(b"-9223372036854775808"), Some(i64::MIN));
    }
}
