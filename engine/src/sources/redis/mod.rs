//! Redis sources: an RDB stream validated as it is stored ([`rdb`]), and a
//! live pull from a running server over the replication protocol ([`sync`]),
//! optionally inside TLS (`tls.rs`, whose [`sync::TlsOptions`] configures it).

pub mod rdb;
pub mod sync;
mod tls;
