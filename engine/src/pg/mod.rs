//! Clients for a running PostgreSQL server.

pub mod replication;
