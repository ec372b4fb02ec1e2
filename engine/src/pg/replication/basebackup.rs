//! The `BASE_BACKUP` session: the command, the archives as byte streams,
//! the manifest and the end position, for both wire forms.
//!
//! PostgreSQL 15 and later answer `BASE_BACKUP (...)` with two result sets
//! (start position and timeline; one row per tablespace), then a single
//! CopyOut stream whose CopyData messages start with a type byte: `n` (a
//! new archive: name and tablespace location), `d` (archive or manifest
//! bytes), `p` (bytes done so far), `m` (the manifest follows). After
//! CopyDone comes a result set with the end position.
//!
//! PostgreSQL 13 and 14 send the same two result sets, then one CopyOut
//! stream per tablespace, in the order of the tablespace rows, carrying
//! raw tar bytes, then one more for the manifest, then the end position.
//! Their tar archives lack the two zero blocks that end a tar file;
//! [`BaseBackup`] appends them, so every archive it hands out is a
//! well-formed tar whatever the server version.
//!
//! A server error (checksum failures are reported only at the very end)
//! fails the session: [`BaseBackup::finish`] returns it, so a backup that
//! did not end cleanly never looks complete.

use std::io::{self, Read};

use bytes::{Buf, Bytes, BytesMut};
use cairn_formats::pg::manifest::MAX_MANIFEST_LEN;
use cairn_formats::pg::Lsn;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::conn::{log_notice, protocol_error, server_error, Conn};
use super::conninfo::ConnInfo;
use super::options::{base_backup_command, parse_server_version, BaseBackupOptions, NEW_PROTOCOL_VERSION};
use super::wire::{message_name, Event, Tablespace, Wire};
use crate::{Error, Result};

/// The oldest server spoken to: backup manifests appeared in 13.
pub const MIN_SERVER_VERSION: u32 = 130000;

/// Two 512-byte zero blocks: the end of a tar archive.
pub(super) const TAR_TRAILER: usize = 1024;

/// One archive of the backup: `base.tar` for the data directory, or
/// `<oid>.tar` for a tablespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The archive's name as the server gives it (for 13–14, as
    /// `pg_basebackup` computes it). Never empty, never holds `/`, never
    /// starts with `.`.
    pub name: String,
    /// The tablespace's directory on the server; `None` for `base.tar`.
    pub tablespace_location: Option<String>,
    /// The server's size estimate in bytes, when progress was requested.
    pub estimated_size: Option<u64>,
}

/// How the backup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupEnd {
    /// The WAL position at which the backup becomes consistent.
    pub end_lsn: u64,
    /// The timeline of that position.
    pub timeline: u32,
}

/// The archive being read.
struct Current {
    name: String,
    /// Archive bytes handed out so far (the added trailer not counted).
    offset: u64,
    pending: Bytes,
    ended: bool,
    trailer_left: usize,
}

/// A running `BASE_BACKUP` on a replication connection.
///
/// Call [`BaseBackup::next_archive`] for each archive and read its bytes
/// through `Read` (which returns `Ok(0)` at the archive's end), then
/// [`BaseBackup::manifest`], then [`BaseBackup::finish`]. Unread bytes are
/// skipped by the next call. Nothing is buffered beyond one protocol
/// message. Dropping the value closes the connection, which makes the
/// server abort the backup.
///
/// `Read` reports failures as `io::Error`s carrying the message of the
/// typed [`Error`]; every later call (and `finish`) returns the typed error.
pub struct BaseBackup {
    wire: Wire,
    system_id: u64,
    timeline: u32,
    start_lsn: u64,
    server_version: u32,
    progress_requested: bool,
    current: Option<Current>,
    lookahead: Option<Event>,
    received: u64,
    manifest_read: bool,
    /// The largest manifest accepted ([`MAX_MANIFEST_LEN`]; tests lower it).
    pub(super) manifest_limit: usize,
    failed: Option<Error>,
}

impl std::fmt::Debug for BaseBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseBackup")
            .field("server", &self.wire.conn.server)
            .field("server_version", &self.server_version)
            .field("system_id", &self.system_id)
            .field("timeline", &self.timeline)
            .field("start_lsn", &Lsn(self.start_lsn).to_string())
            .field("received", &self.received)
            .finish()
    }
}

impl BaseBackup {
    /// Connects (replication mode), runs `IDENTIFY_SYSTEM`, checks the
    /// server version (13 or later) and sends `BASE_BACKUP`; returns once
    /// the backup has started (after its checkpoint) and the first archive
    /// is on its way.
    pub fn start(conn: &ConnInfo, opts: &BaseBackupOptions) -> Result<BaseBackup> {
        Self::start_on(Conn::connect(conn, opts.read_timeout)?, opts)
    }

    /// [`BaseBackup::start`] on a connection already started.
    pub(crate) fn start_on(mut conn: Conn, opts: &BaseBackupOptions) -> Result<BaseBackup> {
        let server = conn.server.clone();
        let version = checked_version(&conn)?;
        let (system_id, mut timeline) = identify_system(&mut conn)?;

        let command = base_backup_command(opts, version);
        tracing::debug!(server, command, "starting base backup");
        let mut out = BytesMut::new();
        frontend::query(&command, &mut out).map_err(|e| Error::Config(format!("BASE_BACKUP command: {e}")))?;
        conn.send(&out, "sending BASE_BACKUP")?;

        // Nothing comes until the checkpoint is done (and, with PROGRESS,
        // the data directory has been sized): the start timeout governs.
        conn.set_read_timeout(opts.start_timeout)?;
        let (start_lsn, start_timeline, tablespaces) = read_start(&mut conn)?;
        if let Some(t) = start_timeline {
            timeline = t;
        }
        conn.set_read_timeout(opts.read_timeout)?;

        let new_protocol = version >= NEW_PROTOCOL_VERSION;
        let mut wire = Wire {
            conn,
            new_protocol,
            // 13–14: the CopyOutResponse just read opened the first archive.
            legacy_in_copy: false,
            legacy_started: 0,
            tablespaces,
            server_done: 0,
            manifest_requested: opts.manifest,
            manifest_seen: false,
        };
        let lookahead = if new_protocol {
            None
        } else {
            wire.legacy_in_copy = true;
            let t = wire.tablespaces[0].clone();
            wire.legacy_started = 1;
            Some(Event::ArchiveStart(Archive {
                name: t.oid.as_ref().map_or_else(|| "base.tar".to_owned(), |oid| format!("{oid}.tar")),
                tablespace_location: t.location,
                estimated_size: t.size,
            }))
        };
        tracing::info!(server, system_id, timeline, start_lsn = %start_lsn, version, "base backup started");
        Ok(BaseBackup {
            wire,
            system_id,
            timeline,
            start_lsn: start_lsn.0,
            server_version: version,
            progress_requested: opts.progress,
            current: None,
            lookahead,
            received: 0,
            manifest_read: false,
            manifest_limit: MAX_MANIFEST_LEN,
            failed: None,
        })
    }

    /// The cluster's system identifier (`pg_control`).
    pub fn system_id(&self) -> u64 {
        self.system_id
    }

    /// The timeline the backup starts on.
    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    /// The WAL position of the backup's checkpoint redo point.
    pub fn start_lsn(&self) -> u64 {
        self.start_lsn
    }

    /// Whether the connection is encrypted (TLS).
    pub fn encrypted(&self) -> bool {
        self.wire.conn.tls
    }

    /// The server's version number (`150008` for 15.8).
    pub fn server_version(&self) -> u32 {
        self.server_version
    }

    /// Bytes of archive data done so far and, when progress was requested,
    /// the server's estimate of the total (which may be exceeded: files
    /// grow while they are copied).
    pub fn progress(&self) -> (u64, Option<u64>) {
        let total = self
            .progress_requested
            .then(|| self.wire.tablespaces.iter().filter_map(|t| t.size).fold(0u64, u64::saturating_add));
        (self.received.max(self.wire.server_done), total)
    }

    /// Skips what is left of the current archive and returns the next one,
    /// or `None` once every archive has been seen.
    pub fn next_archive(&mut self) -> Result<Option<Archive>> {
        self.check()?;
        match self.advance() {
            Ok(Event::ArchiveStart(a)) => {
                let trailer_left = if self.wire.new_protocol { 0 } else { TAR_TRAILER };
                self.current = Some(Current {
                    name: a.name.clone(),
                    offset: 0,
                    pending: Bytes::new(),
                    ended: false,
                    trailer_left,
                });
                Ok(Some(a))
            }
            Ok(ev) => {
                self.lookahead = Some(ev);
                Ok(None)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Reads the `backup_manifest` (skipping any archive bytes not read
    /// yet). It comes after the last archive. One larger than
    /// [`MAX_MANIFEST_LEN`] is a protocol error: it is held in memory.
    pub fn manifest(&mut self) -> Result<Vec<u8>> {
        self.check()?;
        let server = self.wire.conn.server.clone();
        if !self.wire.manifest_requested {
            return Err(Error::Internal("no backup manifest was requested (BaseBackupOptions::manifest)".into()));
        }
        if self.manifest_read {
            return Err(Error::Internal("the backup manifest was already read".into()));
        }
        loop {
            match self.advance() {
                Ok(Event::ArchiveStart(a)) => {
                    tracing::warn!(server, archive = %a.name, "skipping an archive that was not read");
                    self.current =
                        Some(Current { name: a.name, offset: 0, pending: Bytes::new(), ended: false, trailer_left: 0 });
                }
                Ok(Event::ManifestStart) => break,
                Ok(Event::CopyEnd) => {
                    return Err(self.fail(protocol_error(&server, "the backup ended without a manifest")));
                }
                Ok(Event::Data(_)) => {
                    return Err(self.fail(protocol_error(&server, "backup data outside any archive")));
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.manifest_read = true;
        let mut manifest = Vec::new();
        loop {
            let len = manifest.len();
            match self.wire.next_event(&|| format!("reading backup_manifest at byte {len}")) {
                Ok(Event::Data(d)) if len + d.len() > self.manifest_limit => {
                    let limit = self.manifest_limit;
                    return Err(self.fail(protocol_error(
                        &server,
                        format!("the backup manifest is larger than {limit} bytes, the most accepted"),
                    )));
                }
                Ok(Event::Data(d)) => manifest.extend_from_slice(&d),
                // 15+: CopyDone; 13–14: the manifest's stream has ended and
                // the end-position result set has begun.
                Ok(Event::CopyEnd) => {
                    self.lookahead = Some(Event::CopyEnd);
                    return Ok(manifest);
                }
                Ok(_) => return Err(self.fail(protocol_error(&server, "archive data after the backup manifest"))),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Reads the rest of the session (skipping whatever was not read) to
    /// the end position and the server's final word. Fails if the server
    /// reported an error at any point, checksum failures included.
    pub fn finish(mut self) -> Result<BackupEnd> {
        self.check()?;
        loop {
            match self.advance() {
                Ok(Event::CopyEnd) => break,
                Ok(Event::ArchiveStart(a)) => {
                    self.current =
                        Some(Current { name: a.name, offset: 0, pending: Bytes::new(), ended: false, trailer_left: 0 });
                }
                Ok(Event::ManifestStart) => self.manifest_read = true,
                Ok(Event::Data(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let server = self.wire.conn.server.clone();
        let mut end = None;
        let mut failed = None;
        loop {
            match self.wire.conn.recv(&|| "waiting for the end of the backup".into())? {
                Message::DataRow(r) if end.is_none() => {
                    let row = self.wire.conn.data_row(&r)?;
                    let lsn: Lsn = row
                        .first()
                        .cloned()
                        .flatten()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|e| protocol_error(&server, format!("BASE_BACKUP end position: {e}")))?;
                    let tli = match row.get(1).cloned().flatten() {
                        Some(t) => {
                            t.parse().map_err(|_| protocol_error(&server, format!("BASE_BACKUP end timeline {t:?}")))?
                        }
                        None => self.timeline,
                    };
                    end = Some(BackupEnd { end_lsn: lsn.0, timeline: tli });
                }
                Message::RowDescription(_) | Message::CommandComplete(_) => {}
                Message::NoticeResponse(n) => log_notice(&server, n.fields()),
                Message::ErrorResponse(e) => {
                    failed.get_or_insert_with(|| server_error(&server, e.fields()));
                }
                Message::ReadyForQuery(_) => break,
                other => {
                    return Err(protocol_error(&server, format!("{} after the backup stream", message_name(&other))))
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let end = end.ok_or_else(|| protocol_error(&server, "BASE_BACKUP sent no end position"))?;
        tracing::info!(server, end_lsn = %Lsn(end.end_lsn), timeline = end.timeline, bytes = self.received, "base backup finished");
        self.wire.conn.terminate();
        Ok(end)
    }

    /// Returns the error that ended the session, if any, as a typed error.
    fn check(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(e) => Err(duplicate(e)),
        }
    }

    /// Records `e` as the session's failure and returns it.
    fn fail(&mut self, e: Error) -> Error {
        let copy = duplicate(&e);
        self.failed.get_or_insert(e);
        copy
    }

    /// Drains the current archive (if any) and returns the next event that
    /// is not archive data.
    fn advance(&mut self) -> Result<Event> {
        if let Some(cur) = self.current.take() {
            if !cur.ended {
                let (name, mut offset) = (cur.name, cur.offset + cur.pending.len() as u64);
                self.received += cur.pending.len() as u64;
                loop {
                    match self.wire.next_event(&|| format!("reading {name} at byte {offset}"))? {
                        Event::Data(d) => {
                            offset += d.len() as u64;
                            self.received += d.len() as u64;
                        }
                        ev => return Ok(ev),
                    }
                }
            }
        }
        match self.lookahead.take() {
            Some(ev) => Ok(ev),
            None => match self.wire.next_event(&|| "reading the backup stream".into())? {
                Event::Data(_) => Err(protocol_error(&self.wire.conn.server, "backup data outside any archive")),
                ev => Ok(ev),
            },
        }
    }
}

/// The server's version, refused below [`MIN_SERVER_VERSION`].
fn checked_version(conn: &Conn) -> Result<u32> {
    let server = &conn.server;
    let reported = conn.server_version.clone().unwrap_or_default();
    let version = parse_server_version(&reported)
        .ok_or_else(|| protocol_error(server, format!("unreadable server_version {reported:?}")))?;
    if version < MIN_SERVER_VERSION {
        return Err(Error::Config(format!(
            "{server}: PostgreSQL {reported} is too old: base backups need 13 or later (backup manifests)"
        )));
    }
    Ok(version)
}

/// `IDENTIFY_SYSTEM`: the cluster's system identifier and the current
/// timeline.
fn identify_system(conn: &mut Conn) -> Result<(u64, u32)> {
    let server = conn.server.clone();
    let rows = conn.simple_query("IDENTIFY_SYSTEM")?;
    let row = rows.first().ok_or_else(|| protocol_error(&server, "IDENTIFY_SYSTEM returned no row"))?;
    let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let system_id =
        col(0).parse().map_err(|_| protocol_error(&server, format!("IDENTIFY_SYSTEM: bad system id {:?}", col(0))))?;
    let timeline: u32 =
        col(1).parse().map_err(|_| protocol_error(&server, format!("IDENTIFY_SYSTEM: bad timeline {:?}", col(1))))?;
    Ok((system_id, timeline))
}

/// What `BASE_BACKUP` answers before its data: the start position (and
/// its timeline, when the server gives one) and the tablespace list, each
/// ended by CommandComplete, then the first CopyOutResponse.
fn read_start(conn: &mut Conn) -> Result<(Lsn, Option<u32>, Vec<Tablespace>)> {
    let server = conn.server.clone();
    let mut sets: Vec<Vec<Vec<Option<String>>>> = vec![Vec::new()];
    loop {
        match conn.recv(&|| "waiting for the backup to start (checkpoint)".into())? {
            Message::RowDescription(_) => {}
            Message::DataRow(r) => {
                let row = conn.data_row(&r)?;
                sets.last_mut().expect("never empty").push(row);
            }
            Message::CommandComplete(_) => sets.push(Vec::new()),
            Message::NoticeResponse(n) => log_notice(&server, n.fields()),
            Message::ErrorResponse(e) => return Err(server_error(&server, e.fields())),
            Message::CopyOutResponse(_) => break,
            other => {
                return Err(protocol_error(
                    &server,
                    format!("{} while waiting for the backup to start", message_name(&other)),
                ))
            }
        }
    }
    let start = sets.first().and_then(|s| s.first()).filter(|r| r.len() >= 2).ok_or_else(|| {
        protocol_error(&server, "BASE_BACKUP sent no start position (expected one row of two columns)")
    })?;
    let start_lsn: Lsn = start[0]
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| protocol_error(&server, format!("BASE_BACKUP start position: {e}")))?;
    let timeline = match start[1].as_deref() {
        Some(tli) => {
            Some(tli.parse().map_err(|_| protocol_error(&server, format!("BASE_BACKUP: bad timeline {tli:?}")))?)
        }
        None => None,
    };
    let tablespaces: Vec<Tablespace> = sets
        .get(1)
        .map(|rows| {
            rows.iter()
                .map(|r| Tablespace {
                    oid: r.first().cloned().flatten(),
                    location: r.get(1).cloned().flatten(),
                    // An estimate too large for bytes is no estimate.
                    size: r
                        .get(2)
                        .cloned()
                        .flatten()
                        .and_then(|kb| kb.parse::<u64>().ok())
                        .and_then(|kb| kb.checked_mul(1024)),
                })
                .collect()
        })
        .unwrap_or_default();
    if tablespaces.is_empty() {
        return Err(protocol_error(&server, "BASE_BACKUP sent no tablespace list"));
    }
    Ok((start_lsn, timeline, tablespaces))
}

impl Read for BaseBackup {
    /// Reads the current archive; `Ok(0)` at its end (and when there is no
    /// current archive).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(to_io(e));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(cur) = self.current.as_mut() else { return Ok(0) };
            if !cur.pending.is_empty() {
                let n = buf.len().min(cur.pending.len());
                buf[..n].copy_from_slice(&cur.pending[..n]);
                cur.pending.advance(n);
                cur.offset += n as u64;
                self.received += n as u64;
                return Ok(n);
            }
            if cur.ended {
                let n = buf.len().min(cur.trailer_left);
                buf[..n].fill(0);
                cur.trailer_left -= n;
                return Ok(n);
            }
            let (name, offset) = (&cur.name, cur.offset);
            match self.wire.next_event(&|| format!("reading {name} at byte {offset}")) {
                Ok(Event::Data(d)) => cur.pending = d,
                Ok(ev) => {
                    cur.ended = true;
                    self.lookahead = Some(ev);
                }
                Err(e) => {
                    let io = to_io(&e);
                    self.failed = Some(e);
                    return Err(io);
                }
            }
        }
    }
}

/// The `io::Error` a reader sees for `e`: same message, and
/// `UnexpectedEof` where the connection ended early.
fn to_io(e: &Error) -> io::Error {
    let kind = match e {
        Error::Connection { source, .. } => source.kind(),
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// A copy of a session error (errors are not `Clone`: their sources are
/// OS errors), keeping the variant and fields.
fn duplicate(e: &Error) -> Error {
    match e {
        Error::Server { server, sqlstate, message, detail } => Error::Server {
            server: server.clone(),
            sqlstate: sqlstate.clone(),
            message: message.clone(),
            detail: detail.clone(),
        },
        Error::Connection { server, during, retryable, source } => Error::Connection {
            server: server.clone(),
            during: during.clone(),
            retryable: *retryable,
            source: io::Error::new(source.kind(), source.to_string()),
        },
        Error::Protocol { server, detail } => Error::Protocol { server: server.clone(), detail: detail.clone() },
        other => Error::Config(other.to_string()),
    }
}
