//! A physical-replication client that takes base backups with
//! `BASE_BACKUP`, as `pg_basebackup -Ft` does, but hands each tar archive
//! over as a byte stream instead of writing files.
//!
//! The client is synchronous (std I/O): it is meant to run on the reader
//! thread of a backup, where [`BaseBackup`] is the `Read` the chunker
//! pulls from. Servers 13 and later are supported, in both wire forms of
//! the command (see `basebackup.rs`).
//!
//! # Layout
//! - [`ConnInfo`] (`conninfo.rs`): libpq `key=value` strings and
//!   `postgres://` URLs, completed from `PG*` variables and the password
//!   file. [`Password`] redacts itself.
//! - `conn/`: the connection: TCP or Unix socket, TLS per [`SslMode`]
//!   (`socket.rs`; the rustls setup is `tls.rs`), the startup message and
//!   authentication (`auth.rs`: trust, password, md5, SCRAM-SHA-256 with
//!   `tls-server-end-point` channel binding over TLS), the server's errors
//!   and notices (`messages.rs`), framed messages (`mod.rs`).
//! - [`BaseBackupOptions`] (`options.rs`): what to ask for, and the
//!   command text in both syntaxes.
//! - [`BaseBackup`] (`basebackup.rs`): the session.
//!
//! **Invariant:** the password is written to the server's socket and
//! nowhere else: not in `Debug` output, logs, or error messages.
//!
//! # Example
//! ```no_run
//! use std::io::Read;
//! use cairn_engine::pg::replication::{BaseBackup, BaseBackupOptions, ConnInfo};
//! # fn demo() -> cairn_engine::Result<()> {
//! let conn = ConnInfo::parse("host=/var/run/postgresql user=postgres")?;
//! let mut backup = BaseBackup::start(&conn, &BaseBackupOptions::default())?;
//! while let Some(archive) = backup.next_archive()? {
//!     let mut bytes = 0u64;
//!     let mut buf = vec![0u8; 1 << 16];
//!     loop {
//!         let n = backup.read(&mut buf).map_err(|e| cairn_engine::Error::Input { offset: bytes, source: e })?;
//!         if n == 0 { break }
//!         bytes += n as u64;
//!     }
//!     println!("{}: {bytes} bytes", archive.name);
//! }
//! let manifest = backup.manifest()?;
//! let end = backup.finish()?;
//! println!("manifest {} bytes, end {:X}", manifest.len(), end.end_lsn);
//! # Ok(()) }
//! ```

mod basebackup;
pub(crate) mod conn;
mod conninfo;
mod options;
mod tls;
pub(crate) mod wire;

#[cfg(test)]
mod script_tests;

pub use basebackup::{Archive, BackupEnd, BaseBackup, MIN_SERVER_VERSION};
pub use conninfo::{ChannelBindingMode, ConnInfo, Password, SslMode};
pub use options::{BaseBackupOptions, ManifestChecksums, DEFAULT_READ_TIMEOUT, DEFAULT_START_TIMEOUT};
