//! Helpers for cairn's end-to-end tests: locating the binary, throwaway
//! repositories, deterministic data generators and a real S3 API server
//! (moto) started on 127.0.0.1.

pub mod data;
pub mod moto;
pub mod repo;

pub use repo::TestRepo;
