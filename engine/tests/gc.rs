//! Garbage collection at library level, on the memory store: the
//! conditional-write probe refuses a store that ignores conditions, and
//! two prunes running at once leave a repository that checks clean.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_engine::gc::{self, Policies, Policy, PruneOptions};
use cairn_engine::store::{Backend, ObjectInfo, ObjectMeta, PutMode, Store, Version};
use cairn_engine::{
    check, Backup, BackupOptions, Error, GcParams, InitOptions, LocalIndex, ReadData, Repository, Secret,
};

/// A store that accepts every conditional write as a plain overwrite, as
/// some S3 servers do.
#[derive(Debug)]
struct IgnoresConditions(Arc<dyn Backend>);

#[async_trait]
impl Backend for IgnoresConditions {
    async fn put_opts(&self, key: &str, bytes: Bytes, _mode: PutMode) -> cairn_engine::Result<Version> {
        self.0.put_opts(key, bytes, PutMode::Overwrite).await
    }
    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> cairn_engine::Result<Bytes> {
        self.0.get_opts(key, range).await
    }
    async fn head(&self, key: &str) -> cairn_engine::Result<ObjectMeta> {
        self.0.head(key).await
    }
    async fn list(&self, prefix: &str) -> cairn_engine::Result<Vec<ObjectInfo>> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> cairn_engine::Result<()> {
        self.0.delete(key).await
    }
}

async fn repo_on(store: Store, dir: &Path) -> Arc<Repository> {
    let secret = Secret::create_key_file(&dir.join("key")).unwrap();
    let opts = InitOptions::default().with_pack_target(1 << 20).with_gc(GcParams { min_age_s: 0, lease_ttl_s: 30 });
    Arc::new(Repository::init(store, &secret, opts).await.unwrap())
}

async fn backup(repo: &Arc<Repository>, cache: &Path, data: Vec<u8>) {
    let index = Arc::new(LocalIndex::for_writing(repo, cache, Duration::from_secs(5)).await.unwrap());
    Backup::new(repo.clone(), index.clone(), BackupOptions::stream("s")).bytes(data).await.unwrap();
    LocalIndex::release_shared(index).await;
}

fn keep_last(n: i64) -> Policies {
    Policies { all: Some(Policy { keep_last: Some(n), ..Default::default() }), ..Default::default() }
}

fn bytes(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_refuses_a_store_that_ignores_conditional_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::memory().wrapped(IgnoresConditions);
    let repo = repo_on(store, dir.path()).await;
    let cache = dir.path().join("cache");
    backup(&repo, &cache, bytes(1)).await;
    backup(&repo, &cache, bytes(2)).await;
    gc::forget(&repo, &keep_last(1), &[], false).await.unwrap();
    let packs = repo.store().list("packs").await.unwrap().len();
    let r = gc::prune(&repo, &cache, Duration::from_secs(5), &PruneOptions::default(), &|_| {}).await;
    match r {
        Err(Error::Precondition { what }) => assert!(what.contains("ignores create-only writes"), "{what}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(repo.store().list("packs").await.unwrap().len(), packs, "nothing was deleted");
    // The honest store prunes.
    let dir2 = tempfile::tempdir().unwrap();
    let repo2 = repo_on(Store::memory(), dir2.path()).await;
    let cache2 = dir2.path().join("cache");
    backup(&repo2, &cache2, bytes(1)).await;
    backup(&repo2, &cache2, bytes(2)).await;
    gc::forget(&repo2, &keep_last(1), &[], false).await.unwrap();
    let r = gc::prune(&repo2, &cache2, Duration::from_secs(5), &PruneOptions::default(), &|_| {}).await.unwrap();
    assert!(r.swept[0].deleted_packs > 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_prunes_at_once_leave_a_clean_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_on(Store::memory(), dir.path()).await;
    let cache = dir.path().join("cache");
    for seed in 0..6 {
        backup(&repo, &cache, bytes(seed)).await;
    }
    gc::forget(&repo, &keep_last(2), &[], false).await.unwrap();
    let opts = PruneOptions::default().with_sweep_wait(Duration::from_secs(20));
    let (c1, c2) = (dir.path().join("c1"), dir.path().join("c2"));
    let (a, b) = tokio::join!(
        gc::prune(&repo, &c1, Duration::from_secs(5), &opts, &|_| {}),
        gc::prune(&repo, &c2, Duration::from_secs(5), &opts, &|_| {})
    );
    // One condemns; the other finds the state moved or nothing left; no error
    // besides "another prune moved it" is acceptable.
    for r in [&a, &b] {
        if let Err(e) = r {
            assert!(matches!(e, Error::Precondition { .. }), "{e}");
        }
    }
    let r = gc::prune(&repo, &cache, Duration::from_secs(5), &opts, &|_| {}).await.unwrap();
    assert_eq!(r.pending_packs, 0, "{r:?}");
    let report = check(&repo, ReadData::All).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.unreferenced_packs.is_empty(), "{:?}", report.unreferenced_packs);
    assert_eq!(report.snapshots, 2);
}

/// Live-blob counts kept between prunes: a prune reads only the snapshots
/// added or forgotten since the last one; a host whose counts still hold a
/// snapshot another host's prune has swept falls back to a full mark and
/// rebuilds them; `--full` agrees with the counts.
#[tokio::test(flavor = "multi_thread")]
async fn prune_reads_what_changed_and_counts_left_behind_fall_back_to_a_full_mark() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_on(Store::memory(), dir.path()).await;
    let (cache, other) = (dir.path().join("cache"), dir.path().join("other"));
    for seed in [1, 3, 5, 7] {
        backup(&repo, &cache, bytes(seed)).await;
    }
    let opts = PruneOptions::default().with_sweep_wait(Duration::from_secs(20));
    let prune = |cache: &Path, opts: &PruneOptions| {
        let (cache, opts, repo) = (cache.to_path_buf(), opts.clone(), repo.clone());
        async move { gc::prune(&repo, &cache, Duration::from_secs(5), &opts, &|_| {}).await.unwrap() }
    };
    let read = |r: &gc::PruneReport| (r.marking.clone(), r.snapshots_read);
    assert_eq!(read(&prune(&cache, &opts).await), ("counts".into(), 4), "the first prune counts everything");
    assert_eq!(read(&prune(&cache, &opts).await), ("counts".into(), 0), "nothing changed, nothing read");
    assert_eq!(read(&prune(&other, &opts).await), ("counts".into(), 4), "another host counts for itself");

    gc::forget(&repo, &keep_last(3), &[], false).await.unwrap();
    let r = prune(&cache, &opts).await;
    assert_eq!(read(&r), ("counts".into(), 1), "one snapshot forgotten, one read");
    assert!(r.swept.first().is_some_and(|s| s.deleted_packs > 0), "{r:?}");

    // The other host's counts still hold the forgotten snapshot, whose
    // trees the first host's sweep deleted.
    let r = prune(&other, &opts).await;
    assert_eq!(read(&r), ("full".into(), 3), "{r:?}");
    assert_eq!(read(&prune(&other, &opts).await), ("counts".into(), 3), "rebuilt");
    let r = prune(&other, &opts.clone().with_full(true)).await;
    assert_eq!((read(&r), r.counts_mismatch), (("full".into(), 3), Some(0)));
    let report = check(&repo, ReadData::All).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.unreferenced_packs.is_empty(), "{:?}", report.unreferenced_packs);
    assert_eq!(report.snapshots, 3);
}
