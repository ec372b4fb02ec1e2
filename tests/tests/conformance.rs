//! One conformance suite, run against every storage backend: a local
//! directory and S3 (moto's server, and Ceph's radosgw, on 127.0.0.1).

use std::sync::Arc;
use std::time::Duration;

use cairn_engine::store::{
    conformance, Fault, FaultRule, Faults, Faulty, Limit, Location, Metered, Metrics, Op, Retry, RetryPolicy, Store,
};
use cairn_tests::ceph::Ceph;
use cairn_tests::data::text;
use cairn_tests::moto::Moto;
use cairn_tests::{s3, TestRepo};

/// The contract, on the store itself and through every wrapper at once.
async fn store_contract(store: &Store) {
    conformance::contract(store, "").await;
    let (faults, metrics) = (Faults::new(), Arc::new(Metrics::default()));
    let wrapped = store.clone().wrapped(|b| {
        let b = Faulty::new(Metered::new(b, metrics.clone()), faults.clone());
        Retry::new(Limit::new(b, 4), RetryPolicy::new(3, Duration::from_millis(10)))
    });
    // Transient failures of the first three puts are absorbed by the retries.
    faults.add(FaultRule::new(Op::Put, "", Fault::Fail { retryable: true }).times(3));
    conformance::contract(&wrapped, "wrapped/").await;
    assert_eq!(faults.injected(), 3);
    assert!(metrics.requests("other", Op::Put) > 0 && metrics.bytes("other", Op::Put) > 3_000_000);
}

/// The same CLI round trip on any backend.
fn cli_round_trip(repo: &TestRepo) {
    repo.ok(&["init", "--pack-size-mib", "1"]);
    let data = text(5 << 20, 11);
    let b = repo.backup_bytes(&data, &[]);
    assert!(repo.restore_bytes(b["snapshot"].as_str().unwrap()) == data);
    let again = repo.backup_bytes(&data, &[]);
    assert_eq!(again["stats"]["new_chunks"], 0);
    repo.ok(&["check", "--read-data"]);
    std::fs::remove_dir_all(&repo.cache).unwrap();
    repo.ok(&["index", "rebuild"]);
    assert!(repo.restore_bytes("latest") == data);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_directory_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::parse(dir.path().to_str().unwrap()).unwrap(), false).unwrap();
    store_contract(&store).await;
    assert!(std::fs::read(dir.path().join("a/two")).unwrap() == b"x", "local objects are plain files");
    // Local conditional writes are atomic (link, and a directory lock around
    // compare-and-swap), so racing writers are checked here.
    conformance::races(Arc::new(store), "").await;

    let d = tempfile::tempdir().unwrap();
    let url = d.path().join("repo").to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || cli_round_trip(&TestRepo::at(d, url, Vec::new()))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_backend_via_moto() {
    let moto = Moto::start();
    moto.create_bucket("conformance");
    let store = s3::store("s3://conformance/some/prefix", &moto.env());
    store_contract(&store).await;
    // No races here: moto's conditional writes are not atomic.

    moto.create_bucket("cli");
    let d = tempfile::tempdir().unwrap();
    let env = moto.env();
    tokio::task::spawn_blocking(move || cli_round_trip(&TestRepo::at(d, "s3://cli/repo".into(), env))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_backend_via_ceph() {
    let ceph = tokio::task::spawn_blocking(Ceph::start).await.unwrap();
    ceph.create_bucket("conformance-ceph");
    let store = s3::store("s3://conformance-ceph/some/prefix", &ceph.env());
    store_contract(&store).await;
    // radosgw's conditional writes are atomic (compare-and-swap with the
    // unquoted ETag cairn sends), so racing writers are checked here.
    conformance::races(Arc::new(store), "").await;

    ceph.create_bucket("cli-ceph");
    let d = tempfile::tempdir().unwrap();
    let env = ceph.env();
    tokio::task::spawn_blocking(move || cli_round_trip(&TestRepo::at(d, "s3://cli-ceph/repo".into(), env)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_backend() {
    store_contract(&Store::memory()).await;
    conformance::races(Arc::new(Store::memory()), "").await;
}
