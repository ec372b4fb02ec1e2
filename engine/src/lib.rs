//! cairn's engine: a streaming, content-addressed, encrypted backup engine.
//!
//! The engine owns every byte of I/O: object storage ([`store`]), the local
//! RocksDB cache ([`LocalIndex`]), the ingest pipeline ([`Backup`]) and the
//! restore pipeline ([`restore_entry`]). Byte layouts live in
//! `cairn-formats`, which does no I/O; the `cairn` binary only parses
//! arguments and calls in, through the API this file curates.
//!
//! # Layout
//! - `sources/`: what backups read ([`StreamSource`], [`Feed`]): files and
//!   producer commands, directories, tar, Redis (RDB and live), PostgreSQL
//!   base backups.
//! - `commands/`: the pipelines behind the commands: backup, restore,
//!   check, stats, files (ls, diff, restore --path), inspect.
//! - Building blocks: `chunker`, `compress`, `crypto`, `pack`, `index`
//!   (the local cache), `repo` (config, key slots, sealed objects),
//!   `repofile` (object keys, the sealed envelope, versioned files),
//!   `snapshot`.
//! - [`copy`]: `cairn copy` between copy-compatible repositories.
//! - [`store`]: the storage contract, its backends and wrappers.
//! - [`pg`]: point-in-time restore and the replication client; [`wal`]:
//!   `archive_command` / `restore_command` and the WAL catalogue (WAL
//!   bypasses the index and snapshots entirely).
//!
//! # Example
//! ```no_run
//! # async fn demo() -> cairn_engine::Result<()> {
//! use std::sync::Arc;
//! use cairn_engine::store::{Location, Store};
//! use cairn_engine::{Backup, BackupOptions, InitOptions, LocalIndex, Repository, Secret};
//! let store = Store::open(&Location::parse("/tmp/repo")?, true)?;
//! let secret = Secret::create_key_file("/tmp/repo.key".as_ref())?;
//! let repo = Arc::new(Repository::init(store, &secret, InitOptions::default()).await?);
//! let index = Arc::new(LocalIndex::for_writing(&repo, "/tmp/cache".as_ref(), std::time::Duration::from_secs(60)).await?);
//! let (id, _snap) = Backup::new(repo, index, BackupOptions::stream("greeting")).bytes(b"hello".to_vec()).await?;
//! println!("snapshot {id}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod beneath;
mod chunker;
mod commands;
mod compress;
pub mod copy;
mod crypto;
pub mod drill;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
mod ids;
mod index;
mod keyring;
mod keys;
mod ordered;
mod pack;
pub mod pg;
mod repo;
mod repofile;
mod snapshot;
mod sources;
pub mod store;
pub mod wal;

// The curated API: everything the CLI, the tests and the benchmarks use.
pub use chunker::ChunkerParams;
pub use commands::backup::{Backup, BackupOptions, CommitGate, Progress, DEFAULT_COMPRESSION_LEVEL};
pub use commands::check::{check, check_coverage, CheckCoverage, CheckRecord, CheckReport, Problem, ReadData};
pub use commands::files::{
    diff, Change, DiffReport, ExtractOptions, ExtractSummary, FileInfo, Layout, LinkRule, Refusal,
};
pub use commands::inspect;
pub use commands::restore::{restore_entry, restore_entry_to_path, RestoreProgress, RestoreSummary};
pub use commands::stats::{stats, Stats};
pub use ids::{BlobId, Id, PackId, SnapshotId, TreeId};
pub use index::{rebuild_from_packs, LocalIndex, RebuildSummary};
pub use keys::{KeySlot, Secret};
pub use repo::{Config, GcParams, InitOptions, Repository};
pub use repofile::{Kind, ObjectKey, RepoFile};
pub use snapshot::{Entry, FileKind, Snapshot, SourceInfo};
pub use sources::command::{CommandSource, Stopper};
pub use sources::dir::{
    build_excludes, previous_snapshot as previous_dir_snapshot, DirFacts, DirFeed, KIND as DIR_KIND,
};
pub use sources::pg::base::{BaseTarSource, PgFacts, KIND as PG_BASE_KIND};
pub use sources::pg::pull::PullFeed;
pub use sources::redis::rdb::{RdbSource, RedisFacts, KIND as REDIS_KIND};
pub use sources::redis::sync::{ReplicationSource, SyncOptions, TlsOptions};
pub use sources::tar::TarMode;
pub use sources::{Feed, Piece, PieceSink, StreamSource};

/// The pipeline's stages, for the stage benchmarks only.
#[doc(hidden)]
pub mod stages {
    pub use crate::chunker::StreamChunker;
    pub use crate::compress::compress;
    pub use crate::crypto::{Keys, MasterKey};
}

pub use error::{Error, Result};

/// This host's name, for snapshot and key slot records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Raises this process's soft limit on open descriptors to its hard limit
/// and returns the new soft limit.
///
/// systemd services and `runuser`/`su` sessions start with a soft limit of
/// 1,024 whatever the hard limit is; a restore keeps a few hundred files
/// open while they are synced (`beneath/group.rs`) and RocksDB keeps its
/// tables open, so the default is close enough to be reached. Raising the
/// soft limit up to the hard one needs no privilege (as Go's runtime does
/// at start-up); a failure leaves the limit as it was.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).ok()?;
    }
    getrlimit(Resource::Nofile).current
}
