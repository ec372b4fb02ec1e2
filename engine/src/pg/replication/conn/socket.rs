//! The socket under a connection: TCP or a Unix socket, and TLS when
//! `sslmode` asks for it. PostgreSQL negotiates TLS in-band (an
//! `SSLRequest` answered by one byte) before the startup message, so the
//! plain TCP stream is what TLS is layered on, and `sslmode=prefer` may
//! have to start over on a new one.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use super::protocol_error;
use crate::error::read_timed_out;
use crate::pg::replication::conninfo::{ConnInfo, SslMode};
use crate::pg::replication::tls;
use crate::{Error, Result};

/// TCP keepalive: first probe after this much silence...
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// ...then one probe this often...
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// ...and the connection is dead after this many unanswered ones.
const KEEPALIVE_RETRIES: u32 = 6;

/// What a connection reads and writes.
pub(super) enum Stream {
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

/// Connects to the first address of `hostaddr` or `host` that answers.
pub(super) fn connect_tcp(ci: &ConnInfo, server: &str, timeout: Duration) -> Result<TcpStream> {
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
pub(super) fn negotiate_tls(ci: &ConnInfo, mut tcp: TcpStream, server: &str, timeout: Duration) -> Result<Stream> {
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
