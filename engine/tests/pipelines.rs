//! Library-level tests of the pipelines (backup, restore, check) against the
//! memory store and the fault-injecting store, so a pipeline bug is caught
//! without the binary, and of the storage wrappers themselves.

use std::sync::Arc;
use std::time::Duration;

use cairn_engine::store::{
    conformance, Backend, BackendExt, Fault, FaultRule, Faults, Faulty, Limit, Metered, Metrics, Op, Retry,
    RetryPolicy, Store,
};
use cairn_engine::Error;
use cairn_engine::LocalIndex;
use cairn_engine::Secret;
use cairn_engine::Snapshot;
use cairn_engine::{check, ReadData};
use cairn_engine::{restore_entry, RestoreProgress};
use cairn_engine::{Backup, BackupOptions};
use cairn_engine::{InitOptions, Repository};

/// A repository on `store`, with its key file and index cache in `dir`.
async fn repo_on(store: Store, dir: &std::path::Path) -> (Arc<Repository>, Arc<LocalIndex>) {
    let secret = Secret::create_key_file(&dir.join("key")).unwrap();
    let opts = InitOptions::default().with_pack_target(1 << 20);
    let repo = Arc::new(Repository::init(store, &secret, opts).await.unwrap());
    let index = LocalIndex::for_writing(&repo, &dir.join("cache"), Duration::from_secs(5)).await.unwrap();
    (repo, Arc::new(index))
}

/// Four MiB that compress a little and deduplicate not at all.
fn data(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..4 << 20)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 {
                b'a'
            } else {
                x as u8
            }
        })
        .collect()
}

async fn restore(repo: &Repository, index: &LocalIndex, snap: &Snapshot) -> cairn_engine::Result<Vec<u8>> {
    let (_, out) =
        restore_entry(repo, index, &snap.entries[0], Vec::new(), 4, Arc::new(RestoreProgress::default())).await?;
    Ok(out)
}

fn faulty_memory() -> (Store, Arc<Faults>) {
    let faults = Faults::new();
    let f = faults.clone();
    (Store::memory().wrapped(move |b| Faulty::new(b, f)), faults)
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_restore_check_round_trip_on_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, index) = repo_on(Store::memory(), dir.path()).await;
    let bytes = data(1);
    let (_, snap) =
        Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(bytes.clone()).await.unwrap();
    assert!(snap.stats.new_chunks > 1);
    assert!(restore(&repo, &index, &snap).await.unwrap() == bytes);
    let report = check(&repo, ReadData::All).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.packs >= 2, "1 MiB packs for ~2.7 MiB stored: {}", report.packs);
}

/// A pack upload that fails for good fails the backup, and no snapshot names
/// data that never arrived; once the store works again, the same backup
/// succeeds and restores.
#[tokio::test(flavor = "multi_thread")]
async fn backup_fails_cleanly_when_pack_uploads_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty_memory();
    let (repo, index) = repo_on(store, dir.path()).await;
    faults.add(FaultRule::new(Op::Put, "packs/", Fault::Fail { retryable: false }).skip(1));
    let bytes = data(2);
    let r = Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(bytes.clone()).await;
    assert!(matches!(r, Err(Error::Storage { .. })), "{r:?}");
    assert!(faults.injected() >= 1);
    assert!(Snapshot::list(&repo).await.unwrap().is_empty(), "no snapshot after a failed upload");
    assert!(repo.store().list("index").await.unwrap().is_empty(), "no index segment names a missing pack");

    faults.clear();
    let (_, snap) =
        Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(bytes.clone()).await.unwrap();
    assert!(restore(&repo, &index, &snap).await.unwrap() == bytes);
    assert!(check(&repo, ReadData::All).await.unwrap().problems.is_empty());
}

/// A full disk under the snapshot write: the backup fails, nothing names
/// the snapshot, and the packs it left are only unreferenced (check is
/// clean about them).
#[tokio::test(flavor = "multi_thread")]
async fn backup_fails_cleanly_when_the_disk_fills_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty_memory();
    let (repo, index) = repo_on(store, dir.path()).await;
    faults.add(FaultRule::new(Op::Put, "snapshots/", Fault::NoSpace));
    let r = Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(data(3)).await;
    match r {
        Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("expected ENOSPC, got {other:?}"),
    }
    assert!(Snapshot::list(&repo).await.unwrap().is_empty());
    let report = check(&repo, ReadData::All).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Damaged bytes from the store never reach the output: a flipped bit or a
/// short body in a pack read fails the restore as corrupt, naming the pack;
/// transient failures are retried by the `Retry` wrapper and the restore
/// completes with the right bytes.
#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_damaged_reads_and_rides_out_transient_ones() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let f = faults.clone();
    let store =
        Store::memory().wrapped(move |b| Retry::new(Faulty::new(b, f), RetryPolicy::new(3, Duration::from_millis(1))));
    let (repo, index) = repo_on(store, dir.path()).await;
    let bytes = data(4);
    let (_, snap) =
        Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(bytes.clone()).await.unwrap();

    for fault in [Fault::FlipBit { offset: 100 }, Fault::Truncate] {
        faults.clear();
        faults.add(FaultRule::new(Op::Get, "packs/", fault.clone()).times(1));
        match restore(&repo, &index, &snap).await {
            Err(Error::Corrupt { object, .. }) => assert!(object.starts_with("packs/"), "{fault:?}: {object}"),
            other => panic!("{fault:?}: a damaged read must fail the restore, got {:?}", other.map(|v| v.len())),
        }
    }
    faults.clear();
    let before = faults.injected();
    faults.add(FaultRule::new(Op::Get, "packs/", Fault::Fail { retryable: true }).times(2));
    assert!(restore(&repo, &index, &snap).await.unwrap() == bytes);
    assert_eq!(faults.injected() - before, 2);
    faults.add(FaultRule::new(Op::Get, "packs/", Fault::Fail { retryable: false }).times(1));
    assert!(matches!(restore(&repo, &index, &snap).await, Err(Error::Storage { retryable: false, .. })));
}

/// `check --read-data` reports a pack whose bytes come back damaged, by name.
#[tokio::test(flavor = "multi_thread")]
async fn check_names_a_damaged_pack() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty_memory();
    let (repo, index) = repo_on(store, dir.path()).await;
    Backup::new(repo.clone(), index, BackupOptions::stream("s")).bytes(data(5)).await.unwrap();
    faults.add(FaultRule::new(Op::Get, "packs/", Fault::FlipBit { offset: 7 }).times(1));
    let report = check(&repo, ReadData::All).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let p = &report.problems[0];
    assert!(p.object.starts_with("packs/") || p.message.contains("corrupt packs/"), "{p:?}");
    assert!(p.message.contains("failed authentication"), "{p:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_wrapper_keeps_the_contract_on_memory() {
    let m = Arc::new(Metrics::default());
    let stores: Vec<(&str, Store)> = vec![
        ("memory", Store::memory()),
        ("retry", Store::memory().wrapped(|b| Retry::new(b, RetryPolicy::new(2, Duration::from_millis(1))))),
        ("limit", Store::memory().wrapped(|b| Limit::new(b, 2))),
        ("metered", Store::memory().wrapped(|b| Metered::new(b, m.clone()))),
        ("faulty", Store::memory().wrapped(|b| Faulty::new(b, Faults::new()))),
    ];
    for (name, store) in stores {
        eprintln!("contract: {name}");
        conformance::contract(&store, "").await;
        conformance::races(Arc::new(store), "").await;
    }
}

/// A create whose answer was lost is retried; the retry finds the object
/// holding its own bytes and reports success, while a create racing another
/// writer's different bytes still fails.
#[tokio::test(flavor = "multi_thread")]
async fn retry_recognises_its_own_lost_create() {
    let faults = Faults::new();
    let f = faults.clone();
    let store =
        Store::memory().wrapped(move |b| Retry::new(Faulty::new(b, f), RetryPolicy::new(3, Duration::from_millis(1))));
    faults.add(FaultRule::new(Op::Put, "leases/", Fault::LostAnswer { retryable: true }).times(1));
    store.put_create("leases/a", bytes::Bytes::from_static(b"mine")).await.unwrap();
    assert_eq!(faults.injected(), 1);
    assert_eq!(&store.get("leases/a").await.unwrap()[..], b"mine");

    store.put_create("leases/b", bytes::Bytes::from_static(b"theirs")).await.unwrap();
    faults.add(FaultRule::new(Op::Put, "leases/b", Fault::Fail { retryable: true }).times(1));
    let r = store.put_create("leases/b", bytes::Bytes::from_static(b"mine")).await;
    assert!(matches!(r, Err(Error::AlreadyExists { .. })), "{r:?}");

    // object_store resends a create answered 5xx before it reports
    // anything, so a first attempt can meet its own bytes: success too.
    let inner = Store::memory();
    inner.put_create("leases/c", bytes::Bytes::from_static(b"resent")).await.unwrap();
    let once = inner.wrapped(|b| Retry::new(b, RetryPolicy::new(0, Duration::from_millis(1))));
    once.put_create("leases/c", bytes::Bytes::from_static(b"resent")).await.unwrap();
    let r = once.put_create("leases/c", bytes::Bytes::from_static(b"other")).await;
    assert!(matches!(r, Err(Error::AlreadyExists { .. })), "{r:?}");

    // Without retries a non-retryable failure surfaces at once.
    faults.add(FaultRule::new(Op::Head, "x", Fault::Fail { retryable: false }).times(1));
    assert!(matches!(store.head("x").await, Err(Error::Storage { retryable: false, .. })));
}

/// The limiter never lets more than its bound through at once.
#[tokio::test(flavor = "multi_thread")]
async fn limit_bounds_concurrent_requests() {
    #[derive(Debug, Default)]
    struct Slow {
        now: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
    }
    #[async_trait::async_trait]
    impl Backend for Slow {
        async fn put_opts(
            &self,
            _: &str,
            _: bytes::Bytes,
            _: cairn_engine::store::PutMode,
        ) -> cairn_engine::Result<cairn_engine::store::Version> {
            use std::sync::atomic::Ordering::SeqCst;
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(n, SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.now.fetch_sub(1, SeqCst);
            Ok(cairn_engine::store::Version(String::new()))
        }
        async fn get_opts(&self, k: &str, _: Option<std::ops::Range<u64>>) -> cairn_engine::Result<bytes::Bytes> {
            Err(Error::NotFound { what: k.into() })
        }
        async fn head(&self, k: &str) -> cairn_engine::Result<cairn_engine::store::ObjectMeta> {
            Err(Error::NotFound { what: k.into() })
        }
        async fn list(&self, _: &str) -> cairn_engine::Result<Vec<cairn_engine::store::ObjectInfo>> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> cairn_engine::Result<()> {
            Ok(())
        }
    }
    let slow = Arc::new(Slow::default());
    let limited = Arc::new(Limit::new(slow.clone(), 3));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let l = limited.clone();
            tokio::spawn(async move { l.put(&format!("k{i}"), bytes::Bytes::new()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(slow.peak.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(limited.in_flight(), 0);
}

/// Metrics count requests and bytes per object kind.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_and_bytes_per_kind() {
    let m = Arc::new(Metrics::default());
    let mm = m.clone();
    let store = Store::memory().wrapped(move |b| Metered::new(b, mm));
    store.put("packs/ab/1", bytes::Bytes::from(vec![0u8; 1000])).await.unwrap();
    store.put("packs/ab/2", bytes::Bytes::from(vec![0u8; 500])).await.unwrap();
    store.get_range("packs/ab/1", 0..100).await.unwrap();
    assert!(store.get("snapshots/none").await.is_err());
    store.list("packs").await.unwrap();
    assert_eq!((m.requests("packs", Op::Put), m.bytes("packs", Op::Put)), (2, 1500));
    assert_eq!((m.requests("packs", Op::Get), m.bytes("packs", Op::Get)), (1, 100));
    assert_eq!((m.requests("snapshots", Op::Get), m.bytes("snapshots", Op::Get)), (1, 0));
    assert_eq!(m.requests("packs", Op::List), 1);
}

/// A damaged repository on disk (a local directory whose pack file had a
/// byte changed, and one whose index segment was deleted): restore refuses
/// the damaged bytes naming the pack, and check reports both problems.
#[tokio::test(flavor = "multi_thread")]
async fn damaged_local_repository_is_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let store = Store::open(&cairn_engine::store::Location::Local(root.clone()), true).unwrap();
    let (repo, index) = repo_on(store, dir.path()).await;
    let bytes = data(6);
    let (_, snap) =
        Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(bytes.clone()).await.unwrap();
    let packs: Vec<_> = repo.store().list("packs").await.unwrap();
    assert!(packs.len() >= 2);
    // One changed byte in the middle of the first pack.
    let victim = root.join(&packs[0].key);
    let mut b = std::fs::read(&victim).unwrap();
    let mid = b.len() / 3;
    b[mid] ^= 0x40;
    std::fs::write(&victim, &b).unwrap();
    match restore(&repo, &index, &snap).await {
        Err(Error::Corrupt { object, .. }) => assert_eq!(object, packs[0].key),
        other => panic!("a changed pack byte must fail the restore, got {:?}", other.map(|v| v.len())),
    }
    let report = check(&repo, ReadData::All).await.unwrap();
    assert!(report.problems.iter().any(|p| p.object == packs[0].key), "{:?}", report.problems);
    // An index segment removed: its packs become unreferenced, and the
    // snapshot's blobs are no longer listed.
    for seg in repo.store().list("index").await.unwrap() {
        std::fs::remove_file(root.join(&seg.key)).unwrap();
    }
    let report = check(&repo, ReadData::None).await.unwrap();
    assert!(report.unreferenced_packs.len() >= 2, "{:?}", report.unreferenced_packs);
    assert!(report.problems.iter().any(|p| p.object.starts_with("snapshots/")), "{:?}", report.problems);
}

/// Slow answers and a listing that has not caught up with new objects:
/// backups still complete and restore exactly; reads go by key, so a lagging
/// listing hides a new snapshot from `list` but never serves wrong bytes,
/// and an index rebuilt from such a listing refuses (not found) rather than
/// guessing; once the listing catches up everything is there.
#[tokio::test(flavor = "multi_thread")]
async fn slow_requests_and_lagging_listings_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty_memory();
    let (repo, index) = repo_on(store, dir.path()).await;
    let slow = Fault::Latency(Duration::from_millis(5));
    faults.add(FaultRule::new(Op::Get, "", slow.clone()));
    faults.add(FaultRule::new(Op::Put, "", slow));
    let first = data(11);
    let (_, a) =
        Backup::new(repo.clone(), index.clone(), BackupOptions::stream("a")).bytes(first.clone()).await.unwrap();
    assert!(restore(&repo, &index, &a).await.unwrap() == first);

    faults.add(FaultRule::new(Op::List, "", Fault::OmitNew));
    let second = data(12);
    let (id, b) =
        Backup::new(repo.clone(), index.clone(), BackupOptions::stream("b")).bytes(second.clone()).await.unwrap();
    assert!(Snapshot::list(&repo).await.unwrap().is_empty(), "the lagging listing hides every snapshot");
    assert_eq!(Snapshot::load(&repo, &id).await.unwrap().entries[0].blake3, b.entries[0].blake3, "read by key");
    assert!(restore(&repo, &index, &b).await.unwrap() == second, "this writer's index knows its packs");
    let fresh = LocalIndex::for_reading(&repo, &dir.path().join("fresh"), Duration::from_secs(5)).await.unwrap();
    match restore(&repo, &fresh, &b).await {
        Err(Error::NotFound { .. }) => {}
        other => {
            panic!("an index built from a lagging listing must not serve the snapshot: {:?}", other.map(|v| v.len()))
        }
    }

    faults.clear();
    assert_eq!(Snapshot::list(&repo).await.unwrap().len(), 2);
    let caught_up = LocalIndex::for_reading(&repo, &dir.path().join("later"), Duration::from_secs(5)).await.unwrap();
    assert!(restore(&repo, &caught_up, &b).await.unwrap() == second);
    assert!(restore(&repo, &caught_up, &a).await.unwrap() == first);
    assert!(check(&repo, ReadData::All).await.unwrap().problems.is_empty());
}
