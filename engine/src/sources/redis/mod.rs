//! Redis sources: an RDB stream validated as it is stored ([`rdb`]), and a
//! live pull from a running server over the replication protocol ([`sync`]).

pub mod rdb;
pub mod sync;
