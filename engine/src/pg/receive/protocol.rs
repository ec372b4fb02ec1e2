//! The streaming replication copy messages, decoded from and encoded to
//! bytes without I/O: `XLogData` (`w`) and primary keepalives (`k`) from
//! the server, standby status updates (`r`) to it, and the text forms
//! (`X/Y` positions, `wal_segment_size`) replication commands answer with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_OFFSET_S: u64 = 946_684_800;

/// What the server sent inside `CopyData` during `START_REPLICATION`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CopyMessage<'a> {
    /// WAL bytes starting at `start`; `server_end` is the server's end of WAL.
    XLogData { start: u64, server_end: u64, data: &'a [u8] },
    /// The server's end of WAL, and whether it wants a status update now.
    Keepalive { server_end: u64, reply_requested: bool },
}

/// Why a copy message did not decode.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Shorter than its fixed part.
    #[error("{what} message of {got} bytes, expected at least {expected}")]
    Short { what: &'static str, expected: usize, got: usize },
    /// An unknown type byte.
    #[error("unknown replication message type {0:?}")]
    UnknownType(char),
    /// A message with nothing in it.
    #[error("empty CopyData message")]
    Empty,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Decodes the body of one `CopyData` message of a replication stream.
pub(crate) fn decode(body: &[u8]) -> Result<CopyMessage<'_>, DecodeError> {
    let (&kind, rest) = body.split_first().ok_or(DecodeError::Empty)?;
    match kind {
        b'w' => {
            if rest.len() < 24 {
                return Err(DecodeError::Short { what: "XLogData", expected: 25, got: body.len() });
            }
            Ok(CopyMessage::XLogData { start: u64_at(rest, 0), server_end: u64_at(rest, 8), data: &rest[24..] })
        }
        b'k' => {
            if rest.len() < 17 {
                return Err(DecodeError::Short { what: "keepalive", expected: 18, got: body.len() });
            }
            Ok(CopyMessage::Keepalive { server_end: u64_at(rest, 0), reply_requested: rest[16] != 0 })
        }
        other => Err(DecodeError::UnknownType(char::from(other))),
    }
}

/// Microseconds since 2000-01-01 UTC, PostgreSQL's clock.
pub(crate) fn pg_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let us = since.as_micros() as i64;
    us - (PG_EPOCH_OFFSET_S as i64) * 1_000_000
}

/// A framed `CopyData` message holding a standby status update: written,
/// flushed and applied positions (0 = unknown), the clock, and whether
/// the server should answer at once.
pub(crate) fn status_update(write: u64, flush: u64, apply: u64, now: i64, reply: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(34);
    body.push(b'r');
    body.extend_from_slice(&write.to_be_bytes());
    body.extend_from_slice(&flush.to_be_bytes());
    body.extend_from_slice(&apply.to_be_bytes());
    body.extend_from_slice(&now.to_be_bytes());
    body.push(u8::from(reply));
    copy_data(&body)
}

/// `body` framed as a `CopyData` message.
pub(crate) fn copy_data(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(b'd');
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A framed `CopyDone` message.
pub(crate) fn copy_done() -> [u8; 5] {
    [b'c', 0, 0, 0, 4]
}

/// Parses an `X/Y` position.
pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Formats a position as `X/Y`.
pub(crate) fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses `SHOW wal_segment_size` (`16MB`, `1GB`, `512kB`) into bytes.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().ok()?;
    let mult = match s[digits..].trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_xlogdata_and_keepalive() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&0x1_0000_0028u64.to_be_bytes());
        w.extend_from_slice(&0x1_0000_0100u64.to_be_bytes());
        w.extend_from_slice(&7i64.to_be_bytes());
        w.extend_from_slice(b"abc");
        assert_eq!(
            decode(&w),
            Ok(CopyMessage::XLogData { start: 0x1_0000_0028, server_end: 0x1_0000_0100, data: b"abc" })
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&5u64.to_be_bytes());
        k.extend_from_slice(&0i64.to_be_bytes());
        k.push(1);
        assert_eq!(decode(&k), Ok(CopyMessage::Keepalive { server_end: 5, reply_requested: true }));
        assert!(matches!(decode(&k[..10]), Err(DecodeError::Short { .. })));
        assert!(matches!(decode(&w[..20]), Err(DecodeError::Short { .. })));
        assert_eq!(decode(b"z"), Err(DecodeError::UnknownType('z')));
        assert_eq!(decode(b""), Err(DecodeError::Empty));
    }

    #[test]
    fn status_update_layout() {
        let m = status_update(1, 2, 0, 3, true);
        assert_eq!(m.len(), 1 + 4 + 34);
        assert_eq!(&m[..5], &[b'd', 0, 0, 0, 38]);
        assert_eq!(m[5], b'r');
        assert_eq!(u64_at(&m, 6), 1);
        assert_eq!(u64_at(&m, 14), 2);
        assert_eq!(m[38], 1);
    }

    #[test]
    fn texts() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("16 furlongs"), None);
    }
}
