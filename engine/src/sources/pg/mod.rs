//! PostgreSQL base backups as sources: a `pg_basebackup` tar stream checked
//! against its `backup_manifest` ([`base`]), and a base backup pulled over
//! the replication protocol, one tar entry per archive ([`pull`]).

pub mod base;
pub mod pull;
