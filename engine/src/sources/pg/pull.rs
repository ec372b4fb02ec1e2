//! `cairn pg backup --connect`: a base backup pulled over the replication
//! protocol, each archive streamed straight into the pipeline.
//!
//! Every archive (`base.tar`, one `<oid>.tar` per tablespace) becomes a
//! tar entry of the snapshot, chunked at member boundaries with a member
//! index; the manifest, which the server sends last, becomes the entry
//! `backup_manifest`. A [`TarChecker`] follows the bytes, so every file is
//! checked against the manifest before the snapshot is committed.

use serde::Serialize;

use super::base::{Checked, TarChecker};
use crate::chunker::ChunkerParams;
use crate::pg::replication::{BaseBackup, BaseBackupOptions, ConnInfo};
use crate::snapshot::{Entry, FileKind};
use crate::sources::tar::TarMode;
use crate::sources::{Feed, Piece, PieceSink};
use crate::Result;

/// A tablespace in a pulled backup.
#[derive(Debug, Clone, Serialize)]
pub struct Tablespace {
    /// Its OID (the archive is `<oid>.tar`).
    pub oid: String,
    /// Its directory on the server.
    pub location: String,
}

/// A base backup pulled from a server.
pub struct PullFeed {
    conn: ConnInfo,
    opts: BaseBackupOptions,
    stanza: String,
}

impl PullFeed {
    /// A backup of the server `conn` describes, for `stanza`.
    pub fn new(conn: ConnInfo, opts: BaseBackupOptions, stanza: &str) -> PullFeed {
        PullFeed { conn, opts, stanza: stanza.into() }
    }
}

impl Feed for PullFeed {
    fn feed(
        self: Box<Self>,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
    ) -> Result<Option<serde_json::Value>> {
        let mut bb = BaseBackup::start(&self.conn, &self.opts)?;
        let mut checker = TarChecker::default();
        let mut tablespaces = Vec::new();
        while let Some(archive) = bb.next_archive()? {
            let prefix = match &archive.tablespace_location {
                None => String::new(),
                Some(loc) => {
                    let oid = archive.name.trim_end_matches(".tar").to_string();
                    tablespaces.push(Tablespace { oid: oid.clone(), location: loc.clone() });
                    format!("pg_tblspc/{oid}/")
                }
            };
            checker.next_archive(&prefix)?;
            let reader = Checked { inner: &mut bb, checker: &mut checker };
            let (_, hints) = sink.chunk_stream(reader, params, seed, TarMode::Pg)?;
            sink.push(Piece::End(Box::new(Entry::new(archive.name.clone(), FileKind::File, 0o600, None))))?;
            sink.push_member_index(hints, params, seed)?;
        }
        let manifest = bb.manifest()?;
        sink.chunk_stream(std::io::Cursor::new(manifest.clone()), params, seed, TarMode::Off)?;
        sink.push(Piece::End(Box::new(Entry::new("backup_manifest", FileKind::File, 0o600, None))))?;
        checker.keep("backup_manifest", manifest);
        let system_id = bb.system_id();
        let end = bb.finish()?;
        let mut facts = checker.check(&self.stanza)?;
        if facts.system_id != system_id.to_string() {
            return Err(crate::Error::Config(format!(
                "the server reported system id {system_id} but its pg_control says {}",
                facts.system_id
            )));
        }
        facts.stop_lsn = cairn_formats::pg::Lsn(end.end_lsn).to_string();
        Ok(Some(serde_json::json!({ "pg": facts, "tablespaces": tablespaces })))
    }
}
