//! Pulling an RDB straight from a running Redis server over the replication
//! protocol, the way a new replica would, with no temporary file.
//!
//! Handshake: `AUTH` (when a password is given), `PING`, `REPLCONF capa eof
//! capa psync2`, `REPLCONF rdb-only 1` (Redis ≥ 7.0; older servers refuse
//! it and the transfer simply stops being read after the RDB), then
//! `PSYNC ? -1`, answered by `+FULLRESYNC <replid> <offset>`. While the
//! server prepares the snapshot it sends bare newlines as keepalives. The
//! payload comes in one of two forms:
//! - `$<len>\r\n` and exactly `len` bytes (disk-based sync);
//! - `$EOF:<40-byte mark>\r\n`, the bytes, then the mark (diskless sync).
//!
//! A connection that ends before the length or the mark is an input error,
//! so a server killed mid-transfer never becomes a snapshot. The password is
//! only ever written to the socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::source::StreamSource;
use crate::{Error, Result};

/// Where and how to connect.
#[derive(Clone)]
pub struct SyncOptions {
    /// `host:port`.
    pub addr: String,
    /// ACL user, if any.
    pub user: Option<String>,
    /// Password, if any (never logged).
    pub password: Option<String>,
    /// Read and connect timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

enum Payload {
    Length { left: u64 },
    Marked { mark: [u8; 40], held: Vec<u8>, done: bool },
}

/// The RDB payload of a full resynchronisation, as a stream.
pub struct ReplicationSource {
    conn: BufReader<TcpStream>,
    payload: Payload,
    addr: String,
    repl_id: String,
    repl_offset: i64,
    received: u64,
}

fn io_err(addr: &str, what: &str, e: std::io::Error) -> Error {
    Error::Input { offset: 0, source: std::io::Error::new(e.kind(), format!("redis {addr}: {what}: {e}")) }
}

fn protocol(addr: &str, detail: impl std::fmt::Display) -> Error {
    Error::Config(format!("redis {addr}: {detail}"))
}

fn send(conn: &mut BufReader<TcpStream>, addr: &str, args: &[&[u8]]) -> Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    conn.get_mut().write_all(&out).map_err(|e| io_err(addr, "sending a command", e))
}

/// Reads one reply line, skipping keepalive newlines.
fn line(conn: &mut BufReader<TcpStream>, addr: &str) -> Result<String> {
    loop {
        let mut l = String::new();
        let n = conn.read_line(&mut l).map_err(|e| io_err(addr, "waiting for the server", e))?;
        if n == 0 {
            return Err(io_err(addr, "reading a reply", std::io::ErrorKind::UnexpectedEof.into()));
        }
        let l = l.trim_end_matches(['\r', '\n']);
        if !l.is_empty() {
            return Ok(l.to_string());
        }
    }
}

fn expect_ok(conn: &mut BufReader<TcpStream>, addr: &str, what: &str) -> Result<()> {
    let l = line(conn, addr)?;
    if l.starts_with('+') {
        Ok(())
    } else {
        Err(protocol(addr, format!("{what} refused: {l}")))
    }
}

impl ReplicationSource {
    /// Connects, authenticates and asks for a full resynchronisation; returns
    /// once the payload header has arrived.
    pub fn connect(opts: &SyncOptions) -> Result<ReplicationSource> {
        let addr = opts.addr.clone();
        let sock = std::net::ToSocketAddrs::to_socket_addrs(&opts.addr)
            .map_err(|e| io_err(&addr, "resolving", e))?
            .next()
            .ok_or_else(|| protocol(&addr, "no address"))?;
        let tcp = TcpStream::connect_timeout(&sock, opts.timeout).map_err(|e| io_err(&addr, "connecting", e))?;
        tcp.set_read_timeout(Some(opts.timeout)).map_err(|e| io_err(&addr, "socket", e))?;
        tcp.set_write_timeout(Some(opts.timeout)).map_err(|e| io_err(&addr, "socket", e))?;
        let mut conn = BufReader::with_capacity(1 << 20, tcp);
        if let Some(pw) = &opts.password {
            match &opts.user {
                Some(u) => send(&mut conn, &addr, &[b"AUTH", u.as_bytes(), pw.as_bytes()])?,
                None => send(&mut conn, &addr, &[b"AUTH", pw.as_bytes()])?,
            }
            let l = line(&mut conn, &addr)?;
            if !l.starts_with('+') {
                return Err(protocol(&addr, format!("authentication failed: {l}")));
            }
        }
        send(&mut conn, &addr, &[b"PING"])?;
        let l = line(&mut conn, &addr)?;
        if l.starts_with("-NOAUTH") {
            return Err(protocol(&addr, "the server requires a password (REDISCLI_AUTH or --password-file)"));
        }
        if !l.starts_with('+') {
            return Err(protocol(&addr, format!("PING refused: {l}")));
        }
        send(&mut conn, &addr, &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])?;
        expect_ok(&mut conn, &addr, "REPLCONF capa")?;
        send(&mut conn, &addr, &[b"REPLCONF", b"rdb-only", b"1"])?;
        if let Err(e) = expect_ok(&mut conn, &addr, "REPLCONF rdb-only") {
            tracing::info!(error = %e, "server without rdb-only; reading stops after the RDB");
        }
        send(&mut conn, &addr, &[b"PSYNC", b"?", b"-1"])?;
        let l = line(&mut conn, &addr)?;
        let mut parts = l.split_whitespace();
        let (Some("+FULLRESYNC"), Some(id), Some(off)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(protocol(&addr, format!("PSYNC answered {l:?}, expected +FULLRESYNC")));
        };
        let (repl_id, repl_offset) = (id.to_string(), off.parse().unwrap_or(-1));
        let header = line(&mut conn, &addr)?;
        let payload = if let Some(m) = header.strip_prefix("$EOF:") {
            let mark: [u8; 40] =
                m.as_bytes().try_into().map_err(|_| protocol(&addr, format!("bad EOF mark in {header:?}")))?;
            Payload::Marked { mark, held: Vec::new(), done: false }
        } else if let Some(n) = header.strip_prefix('$') {
            let left = n.parse().map_err(|_| protocol(&addr, format!("bad payload length in {header:?}")))?;
            Payload::Length { left }
        } else {
            return Err(protocol(&addr, format!("expected the RDB payload, got {header:?}")));
        };
        Ok(ReplicationSource { conn, payload, addr, repl_id, repl_offset, received: 0 })
    }

    fn eof_error(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("redis {}: connection closed after {} bytes, before the end of the RDB", self.addr, self.received),
        )
    }
}

impl Read for ReplicationSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.payload {
            Payload::Length { left } => {
                if *left == 0 {
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.conn.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(self.eof_error());
                }
                *left -= n as u64;
                self.received += n as u64;
                Ok(n)
            }
            Payload::Marked { mark, held, done } => loop {
                if *done {
                    // Everything before the mark, then end of stream.
                    let n = held.len().min(buf.len());
                    buf[..n].copy_from_slice(&held[..n]);
                    held.drain(..n);
                    self.received += n as u64;
                    return Ok(n);
                }
                let mut chunk = vec![0u8; buf.len().max(64 << 10)];
                let n = self.conn.read(&mut chunk)?;
                if n == 0 {
                    return Err(self.eof_error());
                }
                held.extend_from_slice(&chunk[..n]);
                if let Some(p) = held.windows(40).position(|w| w == &mark[..]) {
                    held.truncate(p);
                    *done = true;
                    continue;
                }
                // Keep 39 bytes back: the mark may be split across reads.
                let free = held.len().saturating_sub(39).min(buf.len());
                if free > 0 {
                    buf[..free].copy_from_slice(&held[..free]);
                    held.drain(..free);
                    self.received += free as u64;
                    return Ok(free);
                }
            },
        }
    }
}

impl StreamSource for ReplicationSource {
    fn finish(&mut self) -> Result<()> {
        match &self.payload {
            Payload::Length { left: 0 } | Payload::Marked { done: true, .. } => Ok(()),
            _ => Err(Error::Input { offset: self.received, source: self.eof_error() }),
        }
    }

    fn metadata(&self) -> Option<Value> {
        let transfer = match self.payload {
            Payload::Length { .. } => "disk",
            Payload::Marked { .. } => "diskless",
        };
        Some(
            json!({ "repl_id": self.repl_id, "repl_offset": self.repl_offset, "transfer": transfer, "server": self.addr }),
        )
    }
}
