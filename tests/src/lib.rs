//! Helpers for cairn's end-to-end tests: locating the binary, throwaway
//! repositories, deterministic data generators, S3 servers started on
//! 127.0.0.1 (moto, quick to start; Ceph's radosgw, whose conditional writes
//! are atomic) and real PostgreSQL clusters.

pub mod ceph;
pub mod data;
pub mod faultproxy;
pub mod hostile;
pub mod moto;
pub mod pg;
pub mod redis;
pub mod repo;
pub mod s3;

pub use repo::TestRepo;
