//! Opening an S3 [`Store`] inside the test process, for engine-level tests
//! against moto or Ceph.
//!
//! cairn takes its S3 settings from the `AWS_*` variables when a store is
//! opened, and tests of one process run in parallel against different
//! servers: the variables are set and the store opened under one lock, so
//! no test opens its store with another test's endpoint.

use std::sync::Mutex;

use cairn_engine::store::{Location, Store};

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Opens `url` (`s3://bucket/prefix`) with the server's environment `env`
/// (`Moto::env`, `Ceph::env`).
pub fn store(url: &str, env: &[(&'static str, String)]) -> Store {
    let _held = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    Store::open(&Location::parse(url).unwrap(), false).unwrap_or_else(|e| panic!("opening {url}: {e}"))
}
