//! Helpers for cairn's end-to-end tests: locating the binary, throwaway
//! repositories, deterministic data generators, a real S3 API server
//! (moto) started on 127.0.0.1 and real PostgreSQL clusters.

pub mod data;
pub mod moto;
pub mod pg;
pub mod redis;
pub mod repo;

pub use repo::TestRepo;
