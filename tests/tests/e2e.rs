//! cairn's end-to-end tests, compiled into one binary. Each module pins one
//! promise made in README.md, using the real `cairn` binary and real
//! storage (a local directory, moto's S3 server and Ceph's radosgw on
//! 127.0.0.1).

mod check_coverage;
mod cli;
mod conformance;
mod copy;
mod crash;
mod deploy;
mod dirsnap;
mod drill;
mod fallback;
mod faults;
mod fulldisk;
mod gc;
mod gc_stress;
mod hostile;
mod index_cache;
mod injected;
mod operator;
mod pg_check;
mod pg_chunks;
mod pg_harness;
mod pg_replication;
mod pitr;
mod producer;
mod receive;
mod receive_failover;
mod redis;
mod roundtrip;
mod s3faults;
mod tamper;
mod tar;
mod wal;
mod wal_catalogue;
mod wal_copies;
mod wal_receipt;
