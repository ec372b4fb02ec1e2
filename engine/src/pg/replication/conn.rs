//! One blocking connection to a PostgreSQL server in physical replication
//! mode: socket (TCP or Unix), TLS negotiation, the startup message,
//! authentication (trust, password, md5, SCRAM-SHA-256), then framed
//! backend messages and simple queries.
//!
//! Messages are decoded by `postgres-protocol`; this file only moves bytes
//! and maps what the server says onto [`Error`]. The password is written to
//! the socket (inside a password or SASL message) and nowhere else; the
//! buffer that carried it is zeroed.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{DataRowBody, ErrorFields, Header, Message};
use postgres_protocol::message::frontend;
use zeroize::Zeroize;

use super::conninfo::{ChannelBindingMode, ConnInfo, SslMode};
use super::tls;
use super::wire::message_name;
use crate::error::read_timed_out;
use crate::{Error, Result};

/// The largest backend message accepted. Archive data arrives in messages
/// of tens of KiB; anything near this is a broken or hostile server, and
/// must not make us allocate gigabytes.
const MAX_MESSAGE: usize = 64 << 20;

/// TCP keepalive: first probe after this much silence...
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// ...then one probe this often...
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// ...and the connection is dead after this many unanswered ones.
const KEEPALIVE_RETRIES: u32 = 6;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 128 << 10;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// A server's bytes held in memory (the fuzz targets and their replay
    /// tests): reads come from them, what is written is dropped.
    Script(io::Cursor<Vec<u8>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Script(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Script(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Script(_) => Ok(()),
        }
    }
}

/// An `ErrorResponse` or `NoticeResponse`, decoded.
#[derive(Debug, Default)]
pub(crate) struct ServerMessage {
    /// `ERROR`, `FATAL`, `WARNING`, `NOTICE`... (the non-localized form).
    pub severity: String,
    /// SQLSTATE.
    pub sqlstate: String,
    /// Primary message.
    pub message: String,
    /// Detail line.
    pub detail: Option<String>,
}

impl ServerMessage {
    fn parse(mut fields: ErrorFields<'_>) -> ServerMessage {
        let mut m = ServerMessage::default();
        let mut localized_severity = String::new();
        // A malformed field list ends the walk; what was read is kept.
        while let Ok(Some(f)) = fields.next() {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'S' => localized_severity = value,
                b'V' => m.severity = value,
                b'C' => m.sqlstate = value,
                b'M' => m.message = value,
                b'D' => m.detail = Some(value),
                _ => {}
            }
        }
        if m.severity.is_empty() {
            m.severity = localized_severity;
        }
        m
    }

    /// The typed error for this message from `server`.
    pub fn into_error(self, server: &str) -> Error {
        Error::Server { server: server.to_owned(), sqlstate: self.sqlstate, message: self.message, detail: self.detail }
    }
}

/// An `ErrorResponse` as a typed error.
pub(crate) fn server_error(server: &str, fields: ErrorFields<'_>) -> Error {
    ServerMessage::parse(fields).into_error(server)
}

/// Logs a `NoticeResponse` (a `WARNING` as a warning, the rest as info).
pub(crate) fn log_notice(server: &str, fields: ErrorFields<'_>) {
    let m = ServerMessage::parse(fields);
    let detail = m.detail.as_deref().unwrap_or("");
    if m.severity == "WARNING" {
        tracing::warn!(server, sqlstate = %m.sqlstate, detail, "{}", m.message);
    } else {
        tracing::info!(server, sqlstate = %m.sqlstate, detail, "{}", m.message);
    }
}

pub(crate) fn protocol_error(server: &str, detail: impl Into<String>) -> Error {
    Error::Protocol { server: server.to_owned(), detail: detail.into() }
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
        conn.startup(ci)?;
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

    /// The startup message, authentication, and the server's parameters up
    /// to `ReadyForQuery`.
    pub(crate) fn startup(&mut self, ci: &ConnInfo) -> Result<()> {
        let params =
            [("user", ci.user.as_str()), ("replication", "true"), ("application_name", ci.application_name.as_str())];
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out)
            .map_err(|e| Error::Config(format!("connection parameters: {e}")))?;
        self.send(&out, "sending the startup message")?;
        self.authenticate(ci)?;
        loop {
            match self.recv(&|| "waiting for the server to accept the session".into())? {
                Message::ParameterStatus(p) => {
                    if p.name().ok() == Some("server_version") {
                        self.server_version = p.value().ok().map(str::to_owned);
                    }
                }
                Message::BackendKeyData(_) => {}
                Message::NoticeResponse(n) => log_notice(&self.server, n.fields()),
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(e) => return Err(server_error(&self.server, e.fields())),
                other => {
                    return Err(protocol_error(
                        &self.server,
                        format!("{} while waiting for ReadyForQuery", message_name(&other)),
                    ))
                }
            }
        }
    }

    fn authenticate(&mut self, ci: &ConnInfo) -> Result<()> {
        let server = self.server.clone();
        let no_password = || Error::AuthFailed {
            server: server.clone(),
            sqlstate: None,
            detail: format!(
                "the server asks for a password for user {:?} and none was given (set PGPASSWORD or a password file \
                 with PGPASSFILE)",
                ci.user
            ),
        };
        let auth_failed = |detail: String| Error::AuthFailed { server: server.clone(), sqlstate: None, detail };
        let mut scram: Option<ScramSha256> = None;
        let mut bound = false;
        let mut scram_done = false;
        loop {
            let mut out = BytesMut::new();
            match self.recv(&|| "authenticating".into())? {
                // libpq: with channel_binding=require, a server may not skip
                // the bound exchange (trust, md5...), or it could be anyone.
                Message::AuthenticationOk if ci.channel_binding == ChannelBindingMode::Require && !bound => {
                    return Err(auth_failed(
                        "channel_binding=require, but the server authenticated us without channel binding".into(),
                    ))
                }
                // The server's SCRAM proof is what authenticates the server:
                // it may not be skipped.
                Message::AuthenticationOk if scram.is_some() && !scram_done => {
                    return Err(auth_failed("the server ended SCRAM authentication without its proof".into()))
                }
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let pw = ci.password.as_ref().ok_or_else(no_password)?;
                    frontend::password_message(pw.expose().as_bytes(), &mut out)
                        .map_err(|_| auth_failed("the password contains a NUL byte".into()))?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = ci.password.as_ref().ok_or_else(no_password)?;
                    let mut hash = md5_hash(ci.user.as_bytes(), pw.expose().as_bytes(), body.salt());
                    let written = frontend::password_message(hash.as_bytes(), &mut out);
                    hash.zeroize();
                    written.map_err(|_| auth_failed("the password contains a NUL byte".into()))?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = Vec::new();
                    let mut it = body.mechanisms();
                    while let Some(m) =
                        it.next().map_err(|e| protocol_error(&server, format!("SASL mechanisms: {e}")))?
                    {
                        mechanisms.push(m.to_owned());
                    }
                    let (mechanism, binding) = self.sasl_mechanism(ci, &mechanisms).map_err(auth_failed)?;
                    let pw = ci.password.as_ref().ok_or_else(no_password)?;
                    let s = ScramSha256::new(pw.expose().as_bytes(), binding);
                    frontend::sasl_initial_response(mechanism, s.message(), &mut out)
                        .map_err(|e| protocol_error(&server, format!("SASL initial response: {e}")))?;
                    bound = mechanism == "SCRAM-SHA-256-PLUS";
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol_error(&server, "SASL continuation without a SASL exchange"))?;
                    s.update(body.data()).map_err(|e| auth_failed(format!("SCRAM: the server's challenge: {e}")))?;
                    frontend::sasl_response(s.message(), &mut out)
                        .map_err(|e| protocol_error(&server, format!("SASL response: {e}")))?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol_error(&server, "SASL final message without a SASL exchange"))?;
                    // Checks the server's signature: a server that does not
                    // know the password cannot forge it.
                    s.finish(body.data()).map_err(|e| auth_failed(format!("SCRAM: the server's proof: {e}")))?;
                    scram_done = true;
                    continue;
                }
                Message::ErrorResponse(body) => {
                    let m = ServerMessage::parse(body.fields());
                    return Err(if m.sqlstate.starts_with("28") {
                        Error::AuthFailed { server, sqlstate: Some(m.sqlstate), detail: m.message }
                    } else {
                        m.into_error(&server)
                    });
                }
                Message::NoticeResponse(n) => {
                    log_notice(&server, n.fields());
                    continue;
                }
                Message::AuthenticationGss
                | Message::AuthenticationGssContinue(_)
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential => {
                    return Err(auth_failed(
                        "the server asks for GSSAPI/SSPI/Kerberos authentication, which cairn does not support; \
                         use scram-sha-256, md5 or password in pg_hba.conf"
                            .into(),
                    ))
                }
                other => {
                    return Err(protocol_error(&server, format!("{} during authentication", message_name(&other))))
                }
            }
            let sent = self.send(&out, "authenticating");
            out[..].zeroize();
            sent?;
        }
    }

    /// The SASL mechanism and channel binding to use, from what the server
    /// offers and `channel_binding`; `Err` says why authentication cannot
    /// go on.
    fn sasl_mechanism(
        &self,
        ci: &ConnInfo,
        mechanisms: &[String],
    ) -> std::result::Result<(&'static str, ChannelBinding), String> {
        let offered = |m: &str| mechanisms.iter().any(|o| o == m);
        let plus = offered("SCRAM-SHA-256-PLUS");
        // As libpq: bind when both sides can; say "y" (we could, the server
        // did not offer) over TLS so that a server stripped of the -PLUS
        // offer refuses; "n" otherwise.
        let chosen = match (ci.channel_binding, plus, &self.channel_binding) {
            (ChannelBindingMode::Disable, _, _) => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
            (_, true, Some(data)) => ("SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(data.clone())),
            (ChannelBindingMode::Require, _, _) => {
                return Err(format!(
                    "channel_binding=require, but {}",
                    if !self.tls {
                        "the connection is not encrypted (TLS is needed for channel binding)"
                    } else if !plus {
                        "the server does not offer SCRAM-SHA-256-PLUS"
                    } else {
                        "the server certificate's signature algorithm has no tls-server-end-point hash"
                    }
                ))
            }
            (ChannelBindingMode::Prefer, false, Some(_)) => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
            (ChannelBindingMode::Prefer, _, _) => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
        };
        if !offered(chosen.0) {
            return Err(format!("the server offers only SASL mechanisms {mechanisms:?}; cairn speaks SCRAM-SHA-256"));
        }
        Ok(chosen)
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

/// Connects to the first address of `hostaddr` or `host` that answers.
fn connect_tcp(ci: &ConnInfo, server: &str, timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = match &ci.hostaddr {
        Some(a) => {
            let ip: IpAddr =
                a.parse().map_err(|_| Error::Config(format!("hostaddr {a:?} is not a numeric IP address")))?;
            vec![SocketAddr::new(ip, ci.port)]
        }
        None => (ci.host.as_str(), ci.port)
            .to_socket_addrs()
            .map_err(|e| Error::connection(server, "resolving the host name", e))?
            .collect(),
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for addr in addrs {
        let attempt = match ci.connect_timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))
                    .and_then(|()| s.set_write_timeout(Some(timeout)))
                    .map_err(|e| Error::connection(server, "setting socket timeouts", e))?;
                // Small protocol messages must not wait for Nagle.
                let _ = s.set_nodelay(true);
                // A backup may sit idle for minutes (a spread checkpoint,
                // waiting for WAL archiving); keepalives notice a peer that
                // vanished without waiting for the OS default of two hours.
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(KEEPALIVE_IDLE)
                    .with_interval(KEEPALIVE_INTERVAL)
                    .with_retries(KEEPALIVE_RETRIES);
                if let Err(e) = socket2::SockRef::from(&s).set_tcp_keepalive(&keepalive) {
                    tracing::debug!(server, error = %e, "cannot enable TCP keepalives");
                }
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(Error::connection(server, "connecting", last))
}

/// Sends SSLRequest and returns the TLS stream, or the plain one when the
/// server declines and `sslmode` allows that (the server then expects the
/// startup message on the same connection).
fn negotiate_tls(ci: &ConnInfo, mut tcp: TcpStream, server: &str, timeout: Duration) -> Result<Stream> {
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).map_err(|e| Error::connection(server, "requesting TLS", e))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).map_err(|e| Error::connection(server, "requesting TLS", read_timed_out(e, timeout)))?;
    match answer[0] {
        b'S' => {}
        b'N' if ci.sslmode.requires_tls() => {
            return Err(Error::connection(
                server,
                "requesting TLS",
                io::Error::other(format!(
                    "the server does not accept TLS connections, and sslmode={} requires TLS",
                    sslmode_name(ci.sslmode)
                )),
            ))
        }
        b'N' => return Ok(Stream::Tcp(tcp)),
        other => {
            return Err(protocol_error(
                server,
                format!("answer {:?} to SSLRequest (expected 'S' or 'N')", other as char),
            ))
        }
    }
    let config = tls::client_config(ci)?;
    let mut conn = rustls::ClientConnection::new(config, tls::server_name(ci))
        .map_err(|e| Error::connection(server, "starting TLS", io::Error::other(e)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| Error::connection(server, "TLS handshake", read_timed_out(e, timeout)))?;
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

fn sslmode_name(m: SslMode) -> &'static str {
    match m {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}
