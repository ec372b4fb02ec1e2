//! The user-visible commands that run pipelines over a repository: one
//! module per command, each with its options and its report.
//!
//! WAL archiving (`wal push`, `wal fetch`, `wal show`) and point-in-time
//! restore live with PostgreSQL in [`crate::wal`] and [`crate::pg`].

pub mod backup;
pub mod check;
pub mod files;
pub mod inspect;
pub mod restore;
pub mod stats;
