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
//!
//! Nothing the server sends is trusted to be small or timely: a reply line
//! (status, error, `+FULLRESYNC`, the payload header) longer than
//! [`MAX_LINE`] is a protocol error, and every read gives up after
//! [`SyncOptions::timeout`] without a byte (keepalive newlines count).
//!
//! With [`TlsOptions`] the same conversation runs inside TLS (rustls, ring
//! provider, TLS 1.2 and 1.3): the server's certificate is verified against
//! a given CA file or the system's roots and the name it was reached by (or
//! an override), and a client certificate is presented when the server asks
//! for one (`tls-auth-clients yes`). The handshake completes before the
//! first command, so an untrusted server never sees the password.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use super::tls::tls_handshake;
pub use super::tls::TlsOptions;
use crate::error::read_timed_out;
use crate::sources::StreamSource;
use crate::{Error, Result};

/// The longest reply line accepted, newline included. Redis's own are under
/// a hundred bytes (an error message, `+FULLRESYNC <40 hex> <offset>`,
/// `$EOF:<40 bytes>`).
const MAX_LINE: usize = 64 << 10;

/// Where and how to connect.
#[derive(Clone)]
#[non_exhaustive]
pub struct SyncOptions {
    /// `host:port`.
    pub addr: String,
    /// ACL user, if any.
    pub user: Option<String>,
    /// Password, if any (never logged).
    pub password: Option<String>,
    /// Connect timeout, and the longest a read or write may wait without
    /// progress.
    pub timeout: Duration,
    /// Speak TLS (`rediss://`); `None` is plain TCP.
    pub tls: Option<TlsOptions>,
}

impl SyncOptions {
    /// Options for the server a `redis://` or `rediss://` URL names
    /// (default port 6379). TLS is spoken for `rediss://` or when `force_tls`
    /// is set, and `tls` settings without TLS are refused. The password is
    /// read from `password_file` (one trailing newline dropped) if given,
    /// else taken from the URL (with a warning: it shows in the process
    /// list), else from `REDISCLI_AUTH`.
    pub fn from_url(
        url: &str,
        force_tls: bool,
        tls: TlsOptions,
        password_file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<SyncOptions> {
        let url = url::Url::parse(url).map_err(|e| Error::InvalidInput(format!("Redis URL: {e}")))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(Error::InvalidInput(
                "the Redis URL must be redis://host:port or rediss://host:port (TLS)".into(),
            ));
        }
        let tls_given =
            tls.ca_file.is_some() || tls.cert_file.is_some() || tls.key_file.is_some() || tls.server_name.is_some();
        let use_tls = force_tls || url.scheme() == "rediss";
        if tls_given && !use_tls {
            return Err(Error::InvalidInput("TLS settings need TLS (a rediss:// URL)".into()));
        }
        let host = url.host_str().ok_or_else(|| Error::InvalidInput("the Redis URL has no host".into()))?;
        let addr = format!("{host}:{}", url.port().unwrap_or(6379));
        let mut password = url.password().map(|p| p.to_string());
        if password.is_some() {
            tracing::warn!(
                "the password in the Redis URL is visible in the process list; prefer REDISCLI_AUTH or a password file"
            );
        }
        if let Some(f) = password_file {
            let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            password = Some(text.strip_suffix('\n').unwrap_or(&text).to_string());
        } else if password.is_none() {
            password = std::env::var("REDISCLI_AUTH").ok().filter(|p| !p.is_empty());
        }
        let user = (!url.username().is_empty()).then(|| url.username().to_string());
        Ok(SyncOptions { addr, user, password, timeout, tls: use_tls.then_some(tls) })
    }
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

pub(crate) enum Payload {
    Length { left: u64 },
    Marked { mark: [u8; 40], held: Vec<u8>, done: bool },
}

/// The socket, plain or inside TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            // rustls reports a peer that closes without close_notify as
            // UnexpectedEof. The payload's own framing (length or EOF mark)
            // is what proves the RDB complete, so this is treated as the
            // end of the stream and that framing decides, exactly as for a
            // plain socket.
            Conn::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// The RDB payload of a full resynchronisation, as a stream.
pub struct ReplicationSource {
    payload: PayloadReader<BufReader<Conn>>,
    repl_id: String,
    repl_offset: i64,
}

/// The payload's bytes as they come off a connection (any byte source, so
/// that the fuzz targets can feed the framing from memory).
pub(crate) struct PayloadReader<R> {
    conn: R,
    payload: Payload,
    addr: String,
    timeout: Duration,
    received: u64,
}

/// A failed connection to `addr`.
fn io_err(addr: &str, what: &str, e: std::io::Error) -> Error {
    Error::connection(format!("redis {addr}"), what, e)
}

/// A failed read from `addr`, a read timeout said as one.
fn read_err(addr: &str, timeout: Duration, what: &str, e: std::io::Error) -> Error {
    io_err(addr, what, read_timed_out(e, timeout))
}

pub(super) fn protocol(addr: &str, detail: impl std::fmt::Display) -> Error {
    Error::Config(format!("redis {addr}: {detail}"))
}

fn send<C: Write>(conn: &mut BufReader<C>, addr: &str, args: &[&[u8]]) -> Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    let w = conn.get_mut();
    w.write_all(&out).and_then(|()| w.flush()).map_err(|e| io_err(addr, "sending a command", e))
}

/// Reads one reply line of at most [`MAX_LINE`] bytes, skipping keepalive
/// newlines.
fn line<C: Read>(conn: &mut BufReader<C>, addr: &str, timeout: Duration) -> Result<String> {
    loop {
        let mut l = Vec::new();
        let n = conn
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut l)
            .map_err(|e| read_err(addr, timeout, "waiting for the server", e))?;
        if l.last() != Some(&b'\n') {
            if n == MAX_LINE {
                return Err(Error::Protocol {
                    server: format!("redis {addr}"),
                    detail: format!("a reply line longer than {MAX_LINE} bytes"),
                });
            }
            return Err(io_err(addr, "reading a reply", std::io::ErrorKind::UnexpectedEof.into()));
        }
        let l = String::from_utf8_lossy(&l);
        let l = l.trim_end_matches(['\r', '\n']);
        if !l.is_empty() {
            return Ok(l.to_string());
        }
    }
}

fn expect_ok<C: Read>(conn: &mut BufReader<C>, addr: &str, timeout: Duration, what: &str) -> Result<()> {
    let l = line(conn, addr, timeout)?;
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
        let (addr, timeout) = (opts.addr.clone(), opts.timeout);
        let sock = std::net::ToSocketAddrs::to_socket_addrs(&opts.addr)
            .map_err(|e| io_err(&addr, "resolving", e))?
            .next()
            .ok_or_else(|| protocol(&addr, "no address"))?;
        let tcp = TcpStream::connect_timeout(&sock, opts.timeout).map_err(|e| io_err(&addr, "connecting", e))?;
        tcp.set_read_timeout(Some(opts.timeout)).map_err(|e| io_err(&addr, "socket", e))?;
        tcp.set_write_timeout(Some(opts.timeout)).map_err(|e| io_err(&addr, "socket", e))?;
        let conn = match &opts.tls {
            None => Conn::Plain(tcp),
            Some(t) => Conn::Tls(Box::new(tls_handshake(tcp, &addr, timeout, t)?)),
        };
        let mut conn = BufReader::with_capacity(1 << 20, conn);
        let (payload, repl_id, repl_offset) =
            handshake(&mut conn, &addr, timeout, opts.user.as_deref(), opts.password.as_deref())?;
        Ok(ReplicationSource {
            payload: PayloadReader { conn, payload, addr, timeout, received: 0 },
            repl_id,
            repl_offset,
        })
    }
}

/// The conversation on a connected stream, from `AUTH` to the payload
/// header: the payload's framing, the replication id and the offset.
pub(crate) fn handshake<C: Read + Write>(
    conn: &mut BufReader<C>,
    addr: &str,
    timeout: Duration,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<(Payload, String, i64)> {
    if let Some(pw) = password {
        match user {
            Some(u) => send(conn, addr, &[b"AUTH", u.as_bytes(), pw.as_bytes()])?,
            None => send(conn, addr, &[b"AUTH", pw.as_bytes()])?,
        }
        let l = line(conn, addr, timeout)?;
        if !l.starts_with('+') {
            return Err(protocol(addr, format!("authentication failed: {l}")));
        }
    }
    send(conn, addr, &[b"PING"])?;
    let l = line(conn, addr, timeout)?;
    if l.starts_with("-NOAUTH") {
        return Err(protocol(addr, "the server requires a password (set REDISCLI_AUTH or give a password file)"));
    }
    if !l.starts_with('+') {
        return Err(protocol(addr, format!("PING refused: {l}")));
    }
    send(conn, addr, &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])?;
    expect_ok(conn, addr, timeout, "REPLCONF capa")?;
    send(conn, addr, &[b"REPLCONF", b"rdb-only", b"1"])?;
    if let Err(e) = expect_ok(conn, addr, timeout, "REPLCONF rdb-only") {
        tracing::info!(error = %e, "server without rdb-only; reading stops after the RDB");
    }
    send(conn, addr, &[b"PSYNC", b"?", b"-1"])?;
    let l = line(conn, addr, timeout)?;
    let mut parts = l.split_whitespace();
    let (Some("+FULLRESYNC"), Some(id), Some(off)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(protocol(addr, format!("PSYNC answered {l:?}, expected +FULLRESYNC")));
    };
    let (repl_id, repl_offset) = (id.to_string(), off.parse().unwrap_or(-1));
    let header = line(conn, addr, timeout)?;
    let payload = if let Some(m) = header.strip_prefix("$EOF:") {
        let mark: [u8; 40] =
            m.as_bytes().try_into().map_err(|_| protocol(addr, format!("bad EOF mark in {header:?}")))?;
        Payload::Marked { mark, held: Vec::new(), done: false }
    } else if let Some(n) = header.strip_prefix('$') {
        let left = n.parse().map_err(|_| protocol(addr, format!("bad payload length in {header:?}")))?;
        Payload::Length { left }
    } else {
        return Err(protocol(addr, format!("expected the RDB payload, got {header:?}")));
    };
    Ok((payload, repl_id, repl_offset))
}

impl<R> PayloadReader<R> {
    /// Reads the payload framed by `payload` from `conn`.
    pub(crate) fn new(conn: R, payload: Payload, addr: &str) -> PayloadReader<R> {
        PayloadReader { conn, payload, addr: addr.to_string(), timeout: Duration::ZERO, received: 0 }
    }

    /// A failed read of the payload, naming the server and how far it got.
    fn read_error(&self, e: std::io::Error) -> std::io::Error {
        let e = read_timed_out(e, self.timeout);
        std::io::Error::new(
            e.kind(),
            format!("redis {}: reading the RDB after {} bytes: {e}", self.addr, self.received),
        )
    }

    fn eof_error(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("redis {}: connection closed after {} bytes, before the end of the RDB", self.addr, self.received),
        )
    }

    /// Fails unless the payload's framing (length or EOF mark) says it is
    /// complete.
    pub(crate) fn finish(&self) -> Result<()> {
        match &self.payload {
            Payload::Length { left: 0 } | Payload::Marked { done: true, .. } => Ok(()),
            _ => Err(Error::Input { offset: self.received, source: self.eof_error() }),
        }
    }
}

impl Read for ReplicationSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.payload.read(buf)
    }
}

impl<R: Read> Read for PayloadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.payload {
            Payload::Length { left } => {
                if *left == 0 {
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = match self.conn.read(&mut buf[..want]) {
                    Ok(n) => n,
                    Err(e) => return Err(self.read_error(e)),
                };
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
                let n = match self.conn.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) => return Err(self.read_error(e)),
                };
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
        self.payload.finish()
    }

    fn metadata(&self) -> Option<Value> {
        let transfer = match self.payload.payload {
            Payload::Length { .. } => "disk",
            Payload::Marked { .. } => "diskless",
        };
        Some(
            json!({ "repl_id": self.repl_id, "repl_offset": self.repl_offset, "transfer": transfer, "server": self.payload.addr }),
        )
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod fake_server_tests;
