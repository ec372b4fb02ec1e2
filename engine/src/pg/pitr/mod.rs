//! Point-in-time restore: plan from the catalogue, then restore.
//!
//! [`plan`] reads only sealed manifests (snapshots and the WAL catalogue)
//! and answers, before a byte is written: which base backup, which
//! timeline path, and which WAL segments recovery will ask for — and
//! whether every one of them is archived. A target the archive cannot
//! reach (before the oldest usable backup, after the newest WAL, beyond a
//! gap) is refused with the reason. [`restore`] then extracts the backup,
//! checks every file against its `backup_manifest`, and writes
//! `recovery.signal` and the recovery settings.
//!
//! # Layout
//! - this file: what a restore is decided as ([`Target`], [`Action`],
//!   [`Plan`], [`TablespacePlan`]), shared by both halves.
//! - `target.rs`: a target as the user writes it ([`parse_time`]) and as
//!   PostgreSQL reads it (the `recovery_target_*` settings).
//! - `archive.rs`: the WAL catalogue of a stanza as planning walks it
//!   (segments, timeline histories).
//! - `planning.rs`: [`plan`]: the backup, the timeline path, every segment to
//!   the target, or the reason there is no way.
//! - `apply.rs`: [`restore`]: extract, check against `backup_manifest`,
//!   then the recovery settings, last.

mod apply;
mod archive;
mod planning;
mod target;

use serde::Serialize;

use crate::sources::pg::base::PgFacts;
use crate::{Error, Result};

pub use apply::{restore, RestoreOptions, RestoreReport};
pub use planning::plan;
pub use target::parse_time;

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// After the last commit at or before this time (Unix microseconds).
    Time(i64),
    /// At this LSN.
    Lsn(u64),
    /// After this transaction's commit.
    Xid(u32),
    /// At this restore point.
    Name(String),
    /// The end of the archive.
    Latest,
}

/// What to do when the target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// End recovery and open for writes on a new timeline.
    Promote,
    /// Pause (inspect with a read-only server, then promote by hand).
    Pause,
    /// Shut down.
    Shutdown,
}

impl Action {
    fn conf(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Pause => "pause",
            Action::Shutdown => "shutdown",
        }
    }
}

/// A restore, decided.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The stanza.
    pub stanza: String,
    /// The base backup's snapshot id.
    pub snapshot: String,
    /// What that backup recorded.
    pub backup: PgFacts,
    /// The target.
    pub target: Target,
    /// The timeline recovery follows.
    pub timeline: u32,
    /// Timelines on the way and where each begins: `(timeline, begin LSN)`.
    pub path: Vec<(u32, String)>,
    /// First and last WAL file recovery will ask for.
    pub first_wal: String,
    /// The last one (for `latest`, the newest contiguous segment).
    pub last_wal: String,
    /// Segments recovery will fetch.
    pub wal_segments: u64,
    /// Their names, in order, then the history file of every timeline
    /// after the first on the path (what a drill stages for recovery).
    #[serde(skip)]
    pub wal_files: Vec<String>,
    /// The settings written to `postgresql.auto.conf`.
    pub settings: Vec<(String, String)>,
    /// The backup's tablespaces and where each is restored.
    pub tablespaces: Vec<TablespacePlan>,
}

/// Where a tablespace of the backup is restored.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TablespacePlan {
    /// Its OID (the archive is `<oid>.tar`).
    pub oid: String,
    /// Its directory on the server the backup was taken from, as the
    /// server reported it.
    pub server_location: String,
    /// Where this restore writes it: the server's location unless mapped.
    pub restore_to: std::path::PathBuf,
}

impl Plan {
    /// Sends tablespace `oid` to `dir` instead of the server's location
    /// (`--tablespace-map OID=DIR`); `tablespace_map` is rewritten to
    /// match. Every destination must be absolute.
    pub fn map_tablespaces(&mut self, map: &[(String, std::path::PathBuf)]) -> Result<()> {
        for (oid, dir) in map {
            let Some(t) = self.tablespaces.iter_mut().find(|t| &t.oid == oid) else {
                let known: Vec<&str> = self.tablespaces.iter().map(|t| t.oid.as_str()).collect();
                return Err(Error::InvalidInput(format!(
                    "tablespace {oid} is not in backup {} (it has {known:?})",
                    &self.snapshot[..12]
                )));
            };
            t.restore_to = dir.clone();
        }
        for t in &self.tablespaces {
            if !t.restore_to.is_absolute() {
                return Err(Error::InvalidInput(format!(
                    "tablespace {} would be restored to {:?}, which is not an absolute path; map it to one",
                    t.oid, t.restore_to
                )));
            }
        }
        Ok(())
    }
}
