//! One blocking connection to a PostgreSQL server in physical replication
//! mode: socket (TCP or Unix), TLS negotiation, the startup message,
//! authentication (trust, password, md5, SCRAM-SHA-256), then framed
//! backend messages and simple queries.
//!
//! Messages are decoded by `postgres-protocol`; this module only moves bytes
//! and maps what the server says onto [`Error`]. The password is written to
//! the socket (inside a password or SASL message) and nowhere else; the
//! buffer that carried it is zeroed.
//!
//! # Layout
//! - this file: [`Conn`], framed messages in and out, simple queries.
//! - `socket.rs`: TCP (keepalives, timeouts) or Unix socket, and the
//!   `SSLRequest` that turns TCP into TLS per `sslmode`.
//! - `auth.rs`: the startup message and authentication, SCRAM's channel
//!   binding chosen as libpq chooses it.
//! - `messages.rs`: `ErrorResponse` and `NoticeResponse` as typed errors
//!   and log lines.

mod auth;
mod messages;
mod socket;

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{DataRowBody, Header, Message};
use postgres_protocol::message::frontend;

use super::conninfo::{ConnInfo, SslMode};
use super::tls;
use super::wire::message_name;
use crate::error::read_timed_out;
use crate::{Error, Result};
use socket::{connect_tcp, negotiate_tls, Stream};

pub(crate) use messages::{log_notice, protocol_error, server_error};

/// The largest backend message accepted. Archive data arrives in messages
/// of tens of KiB; anything near this is a broken or hostile server, and
/// must not make us allocate gigabytes.
const MAX_MESSAGE: usize = 64 << 20;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 128 << 10;

/// What a connection is for, which decides its startup parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Session {
    /// Physical replication (`replication=true`): replication commands only.
    Replication,
    /// A plain session bound to a database: SQL.
    Sql,
}

/// A live connection, authenticated and ready for replication commands.
pub(crate) struct Conn {
    stream: Stream,
    buf: BytesMut,
    /// `host:port` or the socket path, for messages.
    pub server: String,
    /// The `server_version` the server reported at startup.
    pub server_version: Option<String>,
    /// Whether the connection is encrypted.
    pub tls: bool,
    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS, when TLS is on
    /// and the certificate's signature algorithm allows it.
    channel_binding: Option<Vec<u8>>,
    /// The socket's read timeout, for messages.
    read_timeout: Duration,
}

impl Conn {
    /// Connects, negotiates TLS per `sslmode`, starts a physical
    /// replication session and authenticates. Every read and write on the
    /// socket, TCP or Unix, from the TLS negotiation on, gives up after
    /// `timeout` without progress (see [`Conn::set_read_timeout`]).
    pub fn connect(ci: &ConnInfo, timeout: Duration) -> Result<Conn> {
        Conn::open(ci, timeout, Session::Replication)
    }

    /// [`Conn::connect`] for a plain SQL session (no replication) to
    /// `dbname`, or `postgres` when the connection string names none: for
    /// the statistics and functions a physical replication session cannot
    /// reach (`pg_stat_archiver`, `pg_switch_wal()`).
    pub fn connect_sql(ci: &ConnInfo, timeout: Duration) -> Result<Conn> {
        Conn::open(ci, timeout, Session::Sql)
    }

    fn open(ci: &ConnInfo, timeout: Duration, session: Session) -> Result<Conn> {
        let server = ci.server_name();
        let mut conn = if ci.is_unix_socket() {
            let path = ci.socket_path();
            let s = UnixStream::connect(&path).map_err(|e| Error::connection(&server, "connecting", e))?;
            s.set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout)))
                .map_err(|e| Error::connection(&server, "setting socket timeouts", e))?;
            Conn::new(Stream::Unix(s), server, false, timeout)
        } else if ci.sslmode == SslMode::Disable {
            Conn::new(Stream::Tcp(connect_tcp(ci, &server, timeout)?), server, false, timeout)
        } else {
            match negotiate_tls(ci, connect_tcp(ci, &server, timeout)?, &server, timeout) {
                Ok(stream) => {
                    let tls = matches!(stream, Stream::Tls(_));
                    Conn::new(stream, server, tls, timeout)
                }
                // libpq's `prefer` also falls back to plain when the handshake
                // fails; that connection is spoilt, so a new one is made.
                Err(e) if ci.sslmode == SslMode::Prefer => {
                    tracing::warn!(server, error = %e, "TLS handshake failed; sslmode=prefer, so connecting without TLS");
                    Conn::new(Stream::Tcp(connect_tcp(ci, &server, timeout)?), server, false, timeout)
                }
                Err(e) => return Err(e),
            }
        };
        conn.startup(ci, session)?;
        Ok(conn)
    }

    /// A connection whose server says `script` (and ignores what it is
    /// sent), not yet started: for the fuzz targets.
    pub(crate) fn scripted(script: Vec<u8>) -> Conn {
        Conn::new(Stream::Script(io::Cursor::new(script)), "script".into(), false, Duration::from_secs(60))
    }

    fn new(stream: Stream, server: String, tls: bool, read_timeout: Duration) -> Conn {
        let channel_binding = match &stream {
            Stream::Tls(s) => {
                s.conn.peer_certificates().and_then(|c| c.first()).and_then(|c| tls::tls_server_end_point(c))
            }
            _ => None,
        };
        Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            server,
            server_version: None,
            tls,
            channel_binding,
            read_timeout,
        }
    }

    /// How long a read may wait for the server's next byte from now on:
    /// short while data flows, longer while the server works before it
    /// answers (a checkpoint). A read that waits longer fails with a
    /// `TimedOut` [`Error::Connection`] naming what was being read.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> Result<()> {
        let set = match &self.stream {
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)),
            Stream::Tls(s) => s.sock.set_read_timeout(Some(timeout)),
            Stream::Script(_) => Ok(()),
        };
        set.map_err(|e| Error::connection(&self.server, "setting the read timeout", e))?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// Writes `bytes` (one or more framed messages) and flushes.
    pub fn send(&mut self, bytes: &[u8], during: &str) -> Result<()> {
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| Error::connection(&self.server, during, e))
    }

    /// The next backend message. `during` names what we were doing, for
    /// the error if the connection fails.
    pub fn recv(&mut self, during: &dyn Fn() -> String) -> Result<Message> {
        loop {
            let header = Header::parse(&self.buf)
                .map_err(|e| protocol_error(&self.server, format!("bad message header: {e}")))?;
            if let Some(h) = header {
                // `Header::parse` refuses lengths below 4, so this is positive.
                let total = usize::try_from(h.len()).unwrap_or(usize::MAX).saturating_add(1);
                if total > MAX_MESSAGE {
                    return Err(protocol_error(
                        &self.server,
                        format!("a message of type {:?} of {total} bytes (limit {MAX_MESSAGE})", char::from(h.tag())),
                    ));
                }
                if self.buf.len() >= total {
                    return match Message::parse(&mut self.buf) {
                        Ok(Some(m)) => Ok(m),
                        Ok(None) => Err(protocol_error(&self.server, "incomplete message")),
                        Err(e) => Err(protocol_error(
                            &self.server,
                            format!("cannot decode a message of type {:?}: {e}", char::from(h.tag())),
                        )),
                    };
                }
            }
            self.fill(during)?;
        }
    }

    /// The next backend message as a raw frame (type byte, length, body),
    /// for the messages `postgres-protocol` does not decode
    /// (`CopyBothResponse`); [`Conn::decode`] turns any other frame into a
    /// [`Message`]. With `wait`, gives up after that long without a whole
    /// message and returns `None` (what has arrived is kept for the next
    /// call).
    pub fn recv_frame(&mut self, wait: Option<Duration>, during: &dyn Fn() -> String) -> Result<Option<BytesMut>> {
        let restore = self.read_timeout;
        if let Some(w) = wait {
            self.set_read_timeout(w.max(Duration::from_millis(1)))?;
        }
        let r = loop {
            match self.complete_frame_len() {
                Err(e) => break Err(e),
                Ok(Some(total)) => break Ok(Some(self.buf.split_to(total))),
                Ok(None) => {}
            }
            match self.fill(during) {
                Ok(()) => {}
                Err(Error::Connection { source, .. })
                    if wait.is_some()
                        && matches!(source.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) =>
                {
                    break Ok(None)
                }
                Err(e) => break Err(e),
            }
        };
        if wait.is_some() {
            self.set_read_timeout(restore)?;
        }
        r
    }

    /// Whether a whole message is buffered or the socket has bytes to
    /// read right now (a TLS connection may also hold decrypted bytes; then
    /// this may say no when a read would not block, which only makes the
    /// caller act a little sooner).
    pub fn has_input(&self) -> bool {
        if matches!(self.complete_frame_len(), Ok(Some(_))) {
            return true;
        }
        use rustix::event::{poll, PollFd, PollFlags};
        use std::os::fd::AsFd;
        let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
        let ready = |fd: std::os::fd::BorrowedFd<'_>| {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            poll(&mut fds, Some(&zero)).map(|n| n > 0).unwrap_or(true)
        };
        match &self.stream {
            Stream::Tcp(s) => ready(s.as_fd()),
            Stream::Unix(s) => ready(s.as_fd()),
            Stream::Tls(s) => ready(s.sock.as_fd()),
            Stream::Script(c) => (c.position() as usize) < c.get_ref().len(),
        }
    }

    /// The length of the whole frame at the front of the buffer, if it has
    /// all arrived.
    fn complete_frame_len(&self) -> Result<Option<usize>> {
        let header =
            Header::parse(&self.buf).map_err(|e| protocol_error(&self.server, format!("bad message header: {e}")))?;
        let Some(h) = header else { return Ok(None) };
        let total = usize::try_from(h.len()).unwrap_or(usize::MAX).saturating_add(1);
        if total > MAX_MESSAGE {
            return Err(protocol_error(
                &self.server,
                format!("a message of type {:?} of {total} bytes (limit {MAX_MESSAGE})", char::from(h.tag())),
            ));
        }
        Ok((self.buf.len() >= total).then_some(total))
    }

    /// Decodes a frame from [`Conn::recv_frame`].
    pub fn decode(&self, mut frame: BytesMut) -> Result<Message> {
        let tag = frame.first().copied().unwrap_or(0);
        match Message::parse(&mut frame) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(protocol_error(&self.server, "incomplete message")),
            Err(e) => {
                Err(protocol_error(&self.server, format!("cannot decode a message of type {:?}: {e}", char::from(tag))))
            }
        }
    }

    /// Reads more bytes into the buffer; end of stream is an error.
    fn fill(&mut self, during: &dyn Fn() -> String) -> Result<()> {
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        loop {
            match self.stream.read(&mut self.buf[start..]) {
                Ok(0) => {
                    self.buf.truncate(start);
                    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection");
                    return Err(Error::connection(&self.server, during(), eof));
                }
                Ok(n) => {
                    self.buf.truncate(start + n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(Error::connection(&self.server, during(), read_timed_out(e, self.read_timeout)));
                }
            }
        }
    }

    /// Runs a simple query to its `ReadyForQuery` and returns the rows of
    /// its result sets, text columns (NULL as `None`). The first
    /// `ErrorResponse` is returned once the server is ready again.
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| Error::Config(format!("query {sql:?}: {e}")))?;
        self.send(&out, sql)?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.recv(&|| format!("waiting for the answer to {sql}"))? {
                Message::DataRow(row) => rows.push(self.data_row(&row)?),
                Message::RowDescription(_) | Message::CommandComplete(_) | Message::EmptyQueryResponse => {}
                Message::ParameterStatus(_) => {}
                Message::NoticeResponse(n) => log_notice(&self.server, n.fields()),
                Message::ErrorResponse(e) => {
                    failed.get_or_insert_with(|| server_error(&self.server, e.fields()));
                }
                Message::ReadyForQuery(_) => return failed.map_or(Ok(rows), Err),
                other => {
                    return Err(protocol_error(
                        &self.server,
                        format!("{} in the answer to {sql}", message_name(&other)),
                    ))
                }
            }
        }
    }

    /// The columns of a `DataRow` as text.
    pub fn data_row(&self, row: &DataRowBody) -> Result<Vec<Option<String>>> {
        let buf = row.buffer();
        let mut ranges = row.ranges();
        let mut cols = Vec::new();
        while let Some(r) = ranges.next().map_err(|e| protocol_error(&self.server, format!("bad DataRow: {e}")))? {
            cols.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
        }
        Ok(cols)
    }

    /// Says goodbye (Terminate) and closes; errors are irrelevant by now.
    pub fn terminate(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.stream.write_all(&out).and_then(|()| self.stream.flush());
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
    }
}
