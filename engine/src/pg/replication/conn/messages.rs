//! What the server says when something is wrong: `ErrorResponse` as a
//! typed [`Error`], `NoticeResponse` as a log line, and a broken
//! conversation as [`Error::Protocol`]. One decoder for both, so that every
//! part of the client reports the server's SQLSTATE and detail the same
//! way.

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::ErrorFields;

use crate::Error;

/// An `ErrorResponse` or `NoticeResponse`, decoded.
#[derive(Debug, Default)]
pub(super) struct ServerMessage {
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
    pub(super) fn parse(mut fields: ErrorFields<'_>) -> ServerMessage {
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
