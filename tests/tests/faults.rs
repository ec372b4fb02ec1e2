//! The WAL pipelines (`wal push`, `wal fetch`) through the engine's API on a
//! local directory wrapped in the fault-injecting store: whatever the store
//! does wrong, nothing is acknowledged that is not durable, no wrong byte is
//! delivered, and a retry once the store works completes the job.
//! (Backup, restore and check get the same treatment in
//! `engine/tests/pipelines.rs`.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_engine::store::{BackendExt, Fault, FaultRule, Faults, Faulty, Location, Op, Retry, RetryPolicy, Store};
use cairn_engine::wal::{fetch, manifest_key, push, Durability, FetchOutcome, PushOptions};
use cairn_engine::Error;
use cairn_engine::Secret;
use cairn_engine::{InitOptions, Repository};

use cairn_tests::pg;

use super::wal::first_segment;

const STANZA: &str = "main";
const NAME: &str = "000000010000000000000001";

/// A repository in `dir/repo` reached through a fault-injecting store.
async fn faulty_repo(dir: &Path, retries: u32) -> (Repository, Arc<Faults>) {
    let store = Store::open(&Location::Local(dir.join("repo")), true).unwrap();
    let secret = Secret::create_key_file(&dir.join("key")).unwrap();
    let faults = Faults::new();
    let f = faults.clone();
    let store =
        store.wrapped(move |b| Retry::new(Faulty::new(b, f), RetryPolicy::new(retries, Duration::from_millis(1))));
    (Repository::init(store, &secret, InitOptions::default()).await.unwrap(), faults)
}

fn manifest() -> String {
    manifest_key(STANZA, 1, NAME)
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_push_acknowledges_only_durable_files() {
    let dir = pg::shared_dir();
    let seg = first_segment(dir.path(), "pg");
    let (repo, faults) = faulty_repo(dir.path(), 0).await;
    let opts = PushOptions::default();

    // The pack upload fails: the push fails and no manifest names the file.
    faults.add(FaultRule::new(Op::Put, "packs/", Fault::Fail { retryable: false }));
    let r = push(&repo, STANZA, &seg, &opts).await;
    assert!(matches!(r, Err(Error::Storage { .. })), "{r:?}");
    assert!(!repo.store().exists(&manifest()).await.unwrap(), "no manifest without its pack");

    // The disk fills under the manifest: the push fails, nothing is named.
    faults.clear();
    faults.add(FaultRule::new(Op::Put, "wal/main/0", Fault::NoSpace));
    let r = push(&repo, STANZA, &seg, &opts).await;
    assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    assert!(!repo.store().exists(&manifest()).await.unwrap());

    // The manifest lands but its answer is lost: the push fails (PostgreSQL
    // keeps the file and asks again), and the next push finds the same
    // content archived and succeeds.
    faults.clear();
    faults.add(FaultRule::new(Op::Put, "wal/main/0", Fault::LostAnswer { retryable: false }));
    assert!(push(&repo, STANZA, &seg, &opts).await.is_err());
    assert!(repo.store().exists(&manifest()).await.unwrap());
    faults.clear();
    let again = push(&repo, STANZA, &seg, &opts).await.unwrap();
    assert!(again.already_archived);

    let out = dir.path().join("out");
    let got = fetch(&repo, STANZA, NAME, &out, None, Durability::Fsync).await.unwrap();
    assert!(matches!(got, FetchOutcome::Delivered { .. }));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&seg).unwrap(), "the fetched segment is the pushed one");
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_fetch_never_delivers_damaged_bytes() {
    let dir = pg::shared_dir();
    let seg = first_segment(dir.path(), "pg");
    let (repo, faults) = faulty_repo(dir.path(), 2).await;
    push(&repo, STANZA, &seg, &PushOptions::default()).await.unwrap();
    let want = std::fs::read(&seg).unwrap();
    let out = dir.path().join("pg_wal_dest");

    for fault in [Fault::FlipBit { offset: 4096 }, Fault::Truncate, Fault::Fail { retryable: false }] {
        faults.clear();
        faults.add(FaultRule::new(Op::Get, "packs/", fault.clone()).times(1));
        let r = fetch(&repo, STANZA, NAME, &out, None, Durability::Fsync).await;
        assert!(r.is_err(), "{fault:?}: a damaged or failed read must fail the fetch, got {r:?}");
        if !matches!(fault, Fault::Fail { .. }) {
            assert!(matches!(r, Err(Error::Corrupt { .. })), "{fault:?}: {r:?}");
        }
        assert!(!out.exists(), "{fault:?}: nothing is created at the destination");
    }
    // Transient failures are ridden out by the retry wrapper.
    faults.clear();
    let before = faults.injected();
    faults.add(FaultRule::new(Op::Get, "packs/", Fault::Fail { retryable: true }).times(2));
    assert!(matches!(
        fetch(&repo, STANZA, NAME, &out, None, Durability::Fsync).await.unwrap(),
        FetchOutcome::Delivered { .. }
    ));
    assert_eq!(faults.injected() - before, 2);
    assert!(std::fs::read(&out).unwrap() == want);
}
