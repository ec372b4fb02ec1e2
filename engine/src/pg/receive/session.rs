//! One replication connection of the receiver: `IDENTIFY_SYSTEM`, the
//! slot, `TIMELINE_HISTORY`, `START_REPLICATION` and the copy-both stream
//! it opens, as [`Event`]s; standby status updates back.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;

use super::protocol::{self, CopyMessage};
use crate::pg::replication::conn::{log_notice, protocol_error, server_error, Conn};
use crate::pg::replication::ConnInfo;
use crate::{Error, Result};

/// What `IDENTIFY_SYSTEM` says.
#[derive(Debug, Clone)]
pub(crate) struct System {
    /// The cluster's system identifier.
    pub(crate) system_id: String,
    /// The server's current timeline.
    pub(crate) timeline: u32,
    /// The server's current WAL flush position.
    pub(crate) xlogpos: u64,
}

/// What the stream says next.
pub(crate) enum Event {
    /// WAL bytes from `start`; the server's WAL ends at `server_end`.
    Data { start: u64, server_end: u64, data: Bytes },
    /// The server's keepalive: where its WAL ends, and `reply` when it wants
    /// a status update now.
    Keepalive { server_end: u64, reply: bool },
    /// The timeline being streamed ended (the server was promoted, or this
    /// is an older timeline of its history): the next one begins at
    /// `start`. The copy stream is closed; the session takes commands again.
    TimelineEnd { next: u32, start: u64 },
    /// The server ended the stream without a next timeline (shutting down).
    Ended,
}

/// How `START_REPLICATION` answered.
pub(crate) enum Started {
    /// Streaming: [`Session::next`] gives the events.
    Streaming,
    /// The requested position is the end of a historic timeline: nothing to
    /// stream there; the next timeline begins at `start`.
    TimelineEnd { next: u32, start: u64 },
}

/// A replication connection.
pub(crate) struct Session {
    conn: Conn,
}

impl Session {
    /// Connects in physical replication mode.
    pub(crate) fn connect(ci: &ConnInfo, timeout: Duration) -> Result<Session> {
        Ok(Session { conn: Conn::connect(ci, timeout)? })
    }

    /// The server, for messages.
    pub(crate) fn server(&self) -> &str {
        &self.conn.server
    }

    fn one_row(&mut self, command: &str, columns: usize) -> Result<Vec<Option<String>>> {
        let rows = self.conn.simple_query(command)?;
        match rows.into_iter().next() {
            Some(r) if r.len() >= columns => Ok(r),
            _ => {
                Err(protocol_error(&self.conn.server, format!("{command} answered without a row of {columns} columns")))
            }
        }
    }

    /// `IDENTIFY_SYSTEM`.
    pub(crate) fn identify(&mut self) -> Result<System> {
        let row = self.one_row("IDENTIFY_SYSTEM", 3)?;
        let bad = |what: &str| protocol_error(&self.conn.server, format!("IDENTIFY_SYSTEM: bad {what}"));
        let system_id = row[0].clone().filter(|s| s.parse::<u64>().is_ok()).ok_or_else(|| bad("systemid"))?;
        let timeline = row[1].as_deref().and_then(|t| t.parse().ok()).ok_or_else(|| bad("timeline"))?;
        let xlogpos = row[2].as_deref().and_then(protocol::parse_lsn).ok_or_else(|| bad("xlogpos"))?;
        Ok(System { system_id, timeline, xlogpos })
    }

    /// The server's `wal_segment_size` in bytes.
    pub(crate) fn segment_size(&mut self) -> Result<u64> {
        let row = self.one_row("SHOW wal_segment_size", 1)?;
        row[0]
            .as_deref()
            .and_then(protocol::parse_size)
            .ok_or_else(|| protocol_error(&self.conn.server, format!("wal_segment_size {:?}", row[0])))
    }

    /// Creates physical slot `name`, reserving WAL at once; one that
    /// already exists is kept.
    pub(crate) fn create_slot(&mut self, name: &str) -> Result<bool> {
        match self.conn.simple_query(&format!("CREATE_REPLICATION_SLOT {} PHYSICAL RESERVE_WAL", quote_ident(name))) {
            Ok(_) => Ok(true),
            Err(Error::Server { sqlstate, .. }) if sqlstate == "42710" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `TIMELINE_HISTORY tli`: the file's name and content.
    pub(crate) fn timeline_history(&mut self, tli: u32) -> Result<(String, Vec<u8>)> {
        let row = self.one_row(&format!("TIMELINE_HISTORY {tli}"), 2)?;
        let name = row[0].clone().unwrap_or_default();
        let content = row[1].clone().unwrap_or_default().into_bytes();
        Ok((name, content))
    }

    /// `START_REPLICATION [SLOT s] PHYSICAL lsn TIMELINE tli`.
    pub(crate) fn start(&mut self, slot: Option<&str>, tli: u32, lsn: u64) -> Result<Started> {
        let slot = slot.map(|s| format!("SLOT {} ", quote_ident(s))).unwrap_or_default();
        let cmd = format!("START_REPLICATION {slot}PHYSICAL {} TIMELINE {tli}", protocol::lsn_text(lsn));
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::query(&cmd, &mut out).map_err(|e| Error::Config(e.to_string()))?;
        self.conn.send(&out, &cmd)?;
        loop {
            let frame = self.recv(None, &cmd)?.expect("no wait, no timeout");
            match frame.first() {
                Some(b'W') => return Ok(Started::Streaming),
                _ => match self.conn.decode(frame)? {
                    Message::NoticeResponse(n) => log_notice(&self.conn.server, n.fields()),
                    Message::ErrorResponse(e) => return Err(server_error(&self.conn.server, e.fields())),
                    Message::RowDescription(_) => {
                        let (next, start) = self.next_timeline_result(&cmd)?;
                        let next = next.ok_or_else(|| protocol_error(&self.conn.server, "no next timeline"))?;
                        return Ok(Started::TimelineEnd { next: next.0, start: next.1.max(start) });
                    }
                    other => {
                        return Err(protocol_error(
                            &self.conn.server,
                            format!("{} in the answer to {cmd}", crate::pg::replication::wire::message_name(&other)),
                        ))
                    }
                },
            }
        }
    }

    fn recv(&mut self, wait: Option<Duration>, during: &str) -> Result<Option<BytesMut>> {
        self.conn.recv_frame(wait, &|| format!("streaming WAL ({during})"))
    }

    /// After the end of a copy stream: the result set naming the next
    /// timeline (absent when the server is shutting down), up to
    /// `ReadyForQuery`.
    fn next_timeline_result(&mut self, during: &str) -> Result<(Option<(u32, u64)>, u64)> {
        let mut next = None;
        loop {
            let frame = self.recv(None, during)?.expect("no wait, no timeout");
            match self.conn.decode(frame)? {
                Message::DataRow(row) => {
                    let cols = self.conn.data_row(&row)?;
                    let tli = cols.first().cloned().flatten().and_then(|t| t.parse::<u32>().ok());
                    let at = cols.get(1).cloned().flatten().and_then(|l| protocol::parse_lsn(&l));
                    match (tli, at) {
                        (Some(t), Some(l)) => next = Some((t, l)),
                        _ => return Err(protocol_error(&self.conn.server, "malformed next-timeline row")),
                    }
                }
                Message::RowDescription(_) | Message::CommandComplete(_) | Message::ParameterStatus(_) => {}
                Message::NoticeResponse(n) => log_notice(&self.conn.server, n.fields()),
                Message::ErrorResponse(e) => return Err(server_error(&self.conn.server, e.fields())),
                Message::ReadyForQuery(_) => return Ok((next, 0)),
                other => {
                    return Err(protocol_error(
                        &self.conn.server,
                        format!("{} after the end of streaming", crate::pg::replication::wire::message_name(&other)),
                    ))
                }
            }
        }
    }

    /// Whether the next message can be read without waiting.
    pub(crate) fn has_input(&self) -> bool {
        self.conn.has_input()
    }

    /// The next event of the stream, waiting at most `wait` (`None` when
    /// nothing came by then).
    pub(crate) fn next(&mut self, wait: Duration) -> Result<Option<Event>> {
        let Some(frame) = self.recv(Some(wait), "receiving")? else { return Ok(None) };
        match frame.first() {
            Some(b'd') => {
                let mut body = frame.freeze();
                body.advance(5);
                match protocol::decode(&body).map_err(|e| protocol_error(&self.conn.server, e.to_string()))? {
                    CopyMessage::XLogData { start, server_end, data } => {
                        let off = body.len() - data.len();
                        Ok(Some(Event::Data { start, server_end, data: body.slice(off..) }))
                    }
                    CopyMessage::Keepalive { server_end, reply_requested } => {
                        Ok(Some(Event::Keepalive { server_end, reply: reply_requested }))
                    }
                }
            }
            Some(b'c') => {
                // The server ends the stream: answer with our own CopyDone,
                // then read where the next timeline begins.
                self.conn.send(&protocol::copy_done(), "ending the copy stream")?;
                let (next, _) = self.next_timeline_result("the end of the timeline")?;
                Ok(Some(match next {
                    Some((next, start)) => Event::TimelineEnd { next, start },
                    None => Event::Ended,
                }))
            }
            _ => match self.conn.decode(frame)? {
                Message::NoticeResponse(n) => {
                    log_notice(&self.conn.server, n.fields());
                    Ok(Some(Event::Keepalive { server_end: 0, reply: false }))
                }
                Message::ErrorResponse(e) => Err(server_error(&self.conn.server, e.fields())),
                other => Err(protocol_error(
                    &self.conn.server,
                    format!("{} during streaming", crate::pg::replication::wire::message_name(&other)),
                )),
            },
        }
    }

    /// Sends a standby status update.
    pub(crate) fn status(&mut self, write: u64, flush: u64, reply: bool) -> Result<()> {
        let m = protocol::status_update(write, flush, 0, protocol::pg_now(), reply);
        self.conn.send(&m, "sending a standby status update")
    }

    /// Closes the connection.
    pub(crate) fn close(self) {
        self.conn.terminate();
    }
}

/// A slot name as an identifier (slot names are `[a-z0-9_]`; quoting
/// keeps anything else from being read as syntax).
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
