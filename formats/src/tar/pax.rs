//! POSIX pax extended headers: `"%d %s=%s\n"` records whose length prefix
//! counts the whole record, carried as the data of an `x` (next member) or
//! `g` (all later members) header.
//!
//! Only the keys that change where a member's data is or what it is called
//! are interpreted (`path`, `linkpath`, `size`, `mtime`, `uid`, `gid`,
//! `uname`, `gname`, `GNU.sparse.*`); others are kept out of the way, as
//! pax readers must ignore keys they do not know.

use super::TarError;

/// Records from one extended header, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PaxRecords(pub Vec<(Vec<u8>, Vec<u8>)>);

impl PaxRecords {
    /// Parses the data of an extended header. `offset` is where that data
    /// starts in the stream, for error messages.
    pub(crate) fn parse(data: &[u8], offset: u64) -> Result<PaxRecords, TarError> {
        let mut out = Vec::new();
        let mut at = 0usize;
        let bad = |at: usize, expected: &'static str, got: &[u8]| TarError::BadPax {
            offset: offset + at as u64,
            expected,
            got: got.iter().take(40).copied().collect::<Vec<u8>>().escape_ascii().to_string(),
        };
        while at < data.len() {
            let rest = &data[at..];
            // GNU tar pads the header data with NULs after the last record.
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let space =
                rest.iter().position(|&b| b == b' ').ok_or_else(|| bad(at, "a record length and a space", rest))?;
            let len: usize = std::str::from_utf8(&rest[..space])
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(at, "a decimal record length", &rest[..space]))?;
            if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(bad(at, "a record ending in a newline at its stated length", rest));
            }
            let body = &rest[space + 1..len - 1];
            let eq = body.iter().position(|&b| b == b'=').ok_or_else(|| bad(at, "keyword=value", body))?;
            if eq == 0 {
                return Err(bad(at, "a non-empty keyword", body));
            }
            out.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
            at += len;
        }
        Ok(PaxRecords(out))
    }

    /// The last value given for `key`; an empty value means "deleted" and
    /// is returned as such so that it can mask a global value.
    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        self.0.iter().rev().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v.as_slice())
    }

    /// Merges `later` into a global set: later values replace earlier ones.
    pub(crate) fn merge(&mut self, later: PaxRecords) {
        for (k, v) in later.0 {
            self.0.retain(|(old, _)| *old != k);
            self.0.push((k, v));
        }
    }

    /// Whether any `GNU.sparse.` key is present.
    pub(crate) fn has_sparse(&self) -> bool {
        self.0.iter().any(|(k, _)| k.starts_with(b"GNU.sparse."))
    }
}

/// Looks `key` up in the member's records, then the global ones. An empty
/// value in either means the header field applies.
pub(crate) fn lookup<'a>(local: &'a PaxRecords, global: &'a PaxRecords, key: &str) -> Option<&'a [u8]> {
    local.get(key).or_else(|| global.get(key)).filter(|v| !v.is_empty())
}

/// Parses a pax unsigned decimal (`size`, `uid`, `gid`).
pub(crate) fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a pax time: optional minus, seconds, optional fraction. Returns
/// whole seconds (rounded down) and nanoseconds, so that `-1.25` is
/// `(-2, 750_000_000)`.
pub(crate) fn time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, v) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, v),
    };
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &[][..]),
    };
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(int).ok()?.parse().ok()?;
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !neg {
        return Some((secs, nanos));
    }
    if nanos == 0 {
        Some((secs.checked_neg()?, 0))
    } else {
        Some((secs.checked_neg()?.checked_sub(1)?, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &str) -> String {
        // The length counts itself, so iterate to a fixed point.
        let body = format!(" {k}={v}\n");
        let mut n = body.len() + 1;
        while n.to_string().len() + body.len() != n {
            n = n.to_string().len() + body.len();
        }
        format!("{n}{body}")
    }

    #[test]
    fn records_parse_and_override() {
        let data = format!("{}{}{}", rec("path", "a/b=c"), rec("size", "123"), rec("path", "final"));
        let mut padded = data.into_bytes();
        padded.resize(512, 0);
        let r = PaxRecords::parse(&padded, 0).unwrap();
        assert_eq!(r.get("path"), Some(&b"final"[..]));
        assert_eq!(r.0[0].1, b"a/b=c");
        assert_eq!(decimal(r.get("size").unwrap()), Some(123));
        let global = PaxRecords::parse(rec("uid", "5").as_bytes(), 0).unwrap();
        let masking = PaxRecords::parse(rec("uid", "").as_bytes(), 0).unwrap();
        assert_eq!(lookup(&PaxRecords::default(), &global, "uid"), Some(&b"5"[..]));
        assert_eq!(lookup(&masking, &global, "uid"), None);
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in ["13 path=abc\n", "x path=a\n", "9 pathabc\n", "8 =value\n", "99 path=a\n", "10 path=abc "] {
            assert!(PaxRecords::parse(bad.as_bytes(), 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(time(b"1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(time(b"12"), Some((12, 0)));
        assert_eq!(time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(time(b"1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(time(b"1.x"), None);
        assert_eq!(time(b""), None);
    }
}
