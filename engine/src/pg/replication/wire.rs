//! The wire side of a `BASE_BACKUP` session: backend messages of either
//! wire form (15+ typed CopyData, or 13–14 one CopyOut per archive) turned
//! into one sequence of [`Event`]s.

use bytes::{Buf, Bytes};
use postgres_protocol::message::backend::Message;

use super::basebackup::Archive;
use super::conn::{log_notice, protocol_error, server_error, Conn};
use crate::Result;

/// One tablespace row of the backup header.
#[derive(Debug, Clone)]
pub(super) struct Tablespace {
    pub(super) oid: Option<String>,
    pub(super) location: Option<String>,
    pub(super) size: Option<u64>,
}

/// What the copy stream says next, with the two wire forms made one.
pub(super) enum Event {
    ArchiveStart(Archive),
    Data(Bytes),
    ManifestStart,
    /// All archives and the manifest are done; the end position follows.
    CopyEnd,
}

/// The wire side: turns backend messages into [`Event`]s.
pub(super) struct Wire {
    pub(super) conn: Conn,
    /// True for 15+ (type bytes in CopyData).
    pub(super) new_protocol: bool,
    /// 13–14: whether a CopyOut stream is open, and how many tablespace
    /// streams have begun.
    pub(super) legacy_in_copy: bool,
    pub(super) legacy_started: usize,
    pub(super) tablespaces: Vec<Tablespace>,
    /// Bytes done as the server last reported them (15+).
    pub(super) server_done: u64,
    pub(super) manifest_requested: bool,
    pub(super) manifest_seen: bool,
}

impl Wire {
    pub(super) fn next_event(&mut self, during: &dyn Fn() -> String) -> Result<Event> {
        loop {
            let msg = self.conn.recv(during)?;
            let server = &self.conn.server;
            match msg {
                Message::NoticeResponse(n) => log_notice(server, n.fields()),
                Message::ErrorResponse(e) => return Err(server_error(server, e.fields())),
                Message::CopyData(d) if self.new_protocol => {
                    let mut data = d.into_bytes();
                    if data.is_empty() {
                        return Err(protocol_error(server, "empty CopyData message"));
                    }
                    let kind = data.get_u8();
                    match kind {
                        b'd' => return Ok(Event::Data(data)),
                        b'n' => return self.new_archive(&data).map(Event::ArchiveStart),
                        b'p' if data.len() == 8 => self.server_done = data.get_u64(),
                        b'm' if data.is_empty() => {
                            self.manifest_seen = true;
                            return Ok(Event::ManifestStart);
                        }
                        _ => {
                            return Err(protocol_error(
                                server,
                                format!(
                                    "malformed CopyData message of type {:?}, {} bytes",
                                    kind as char,
                                    data.len() + 1
                                ),
                            ))
                        }
                    }
                }
                Message::CopyDone if self.new_protocol => return Ok(Event::CopyEnd),
                Message::CopyData(d) if self.legacy_in_copy => return Ok(Event::Data(d.into_bytes())),
                Message::CopyDone if self.legacy_in_copy => self.legacy_in_copy = false,
                Message::CopyOutResponse(_) if !self.new_protocol && !self.legacy_in_copy => {
                    self.legacy_in_copy = true;
                    if let Some(t) = self.tablespaces.get(self.legacy_started).cloned() {
                        self.legacy_started += 1;
                        let name = match &t.oid {
                            None => "base.tar".to_owned(),
                            Some(oid) => format!("{oid}.tar"),
                        };
                        return Ok(Event::ArchiveStart(Archive {
                            name,
                            tablespace_location: t.location,
                            estimated_size: t.size,
                        }));
                    }
                    if self.manifest_requested && !self.manifest_seen {
                        self.manifest_seen = true;
                        return Ok(Event::ManifestStart);
                    }
                    return Err(protocol_error(server, "more CopyOut streams than tablespaces and manifest"));
                }
                // 13–14: the end-position result set begins after the last stream.
                Message::RowDescription(_) if !self.new_protocol && !self.legacy_in_copy => return Ok(Event::CopyEnd),
                other => {
                    return Err(protocol_error(server, format!("{} during the backup stream", message_name(&other))))
                }
            }
        }
    }

    /// Decodes an `n` message: archive name and tablespace location, both
    /// NUL-terminated, and nothing after them.
    pub(super) fn new_archive(&self, data: &[u8]) -> Result<Archive> {
        let server = &self.conn.server;
        let malformed = || protocol_error(server, "malformed new-archive message");
        let mut parts = data.splitn(3, |&b| b == 0);
        let name = parts.next().ok_or_else(malformed)?;
        let location = parts.next().ok_or_else(malformed)?;
        if parts.next() != Some(&[][..]) {
            return Err(malformed());
        }
        let name = String::from_utf8(name.to_vec()).map_err(|_| malformed())?;
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
            return Err(protocol_error(server, format!("invalid archive name {name:?}")));
        }
        let location = (!location.is_empty()).then(|| String::from_utf8_lossy(location).into_owned());
        let estimated_size = self
            .tablespaces
            .iter()
            .find(|t| match &t.oid {
                None => location.is_none(),
                Some(oid) => t.location == location || name.strip_suffix(".tar") == Some(oid.as_str()),
            })
            .and_then(|t| t.size);
        Ok(Archive { name, tablespace_location: location, estimated_size })
    }
}

/// A name for a message in protocol errors.
pub(crate) fn message_name(m: &Message) -> &'static str {
    match m {
        Message::AuthenticationOk => "AuthenticationOk",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::NoticeResponse(_) => "NoticeResponse",
        Message::ParameterStatus(_) => "ParameterStatus",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "an unexpected message",
    }
}
