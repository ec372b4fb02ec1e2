//! cairn's engine: a streaming, content-addressed, encrypted backup engine.
//!
//! The engine owns every byte of I/O: object storage ([`store`]), the local
//! RocksDB cache ([`index`]), the ingest pipeline ([`backup`]) and the
//! restore pipeline ([`restore`]). Byte layouts live in `cairn-formats`,
//! which does no I/O; the `cairn` binary only parses arguments and calls in.
//!
//! # Layout
//! - [`repo`]: `config`, unlocking via key slots ([`keys`]), sealed objects.
//! - [`crypto`]: master key, derived sub-keys, XChaCha20-Poly1305.
//! - [`chunker`], [`compress`], [`pack`]: chunking, compression, packs.
//! - [`index`]: the local index cache and its rebuild.
//! - [`snapshot`]: manifests and tree references.
//! - [`backup`], [`restore`], [`check`], [`stats`]: the commands.
//! - [`pg`]: clients for a running PostgreSQL server (base backups over
//!   the replication protocol).
//! - [`wal`]: PostgreSQL `archive_command` / `restore_command` and the WAL
//!   catalogue; WAL bypasses the index and snapshots entirely.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> cairn_engine::Result<()> {
//! use std::sync::Arc;
//! use cairn_engine::{backup, index::LocalIndex, keys::Secret, repo::*, store::*};
//! let store = Store::open(&Location::parse("/tmp/repo")?, true)?;
//! let secret = Secret::create_key_file("/tmp/repo.key".as_ref())?;
//! let repo = Arc::new(Repository::init(store, &secret, InitOptions::default()).await?);
//! let index = Arc::new(LocalIndex::for_writing(&repo, "/tmp/cache".as_ref(), std::time::Duration::from_secs(60)).await?);
//! let (id, _snap) = backup::backup_bytes(repo, index, b"hello".to_vec(), backup::BackupOptions::stream("greeting")).await?;
//! println!("snapshot {id}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod chunker;
pub mod commands;
pub mod compress;
pub mod crypto;
mod error;
pub mod ids;
pub mod index;
pub mod keys;
pub mod pack;
pub mod pg;
pub mod repo;
pub mod snapshot;
pub mod sources;
pub mod store;
pub mod wal;

pub use commands::{backup, check, files, inspect, restore, stats};

pub use error::{Error, Result};

/// This host's name, for snapshot and key slot records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
