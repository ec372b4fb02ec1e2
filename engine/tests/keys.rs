//! Key slots at library level: two `key remove`s running at once, each
//! taking away the second-to-last slot, never leave the repository with
//! no slot.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_engine::store::{Backend, ObjectInfo, ObjectMeta, PutMode, Store, Version};
use cairn_engine::{Error, InitOptions, Repository, Secret};

/// Holds each delete of a key slot until another one is waiting too (or
/// two seconds have passed): the interleaving in which both removals have
/// looked at the slots before either deletes.
#[derive(Debug)]
struct DeletesMeet {
    inner: Arc<dyn Backend>,
    waiting: AtomicUsize,
}

#[async_trait]
impl Backend for DeletesMeet {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> cairn_engine::Result<Version> {
        self.inner.put_opts(key, bytes, mode).await
    }
    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> cairn_engine::Result<Bytes> {
        self.inner.get_opts(key, range).await
    }
    async fn head(&self, key: &str) -> cairn_engine::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> cairn_engine::Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> cairn_engine::Result<()> {
        if key.starts_with("keys/") {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            for _ in 0..100 {
                if self.waiting.load(Ordering::SeqCst) >= 2 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.inner.delete(key).await
    }
}

fn key(b: u8) -> Secret {
    Secret::KeyFile(zeroize::Zeroizing::new([b; 32]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_removals_never_leave_zero_slots() {
    let plain = Store::memory();
    let first = Repository::init(plain.clone(), &key(1), InitOptions::default()).await.unwrap();
    let second = first.add_key(&key(2)).await.unwrap();
    let slots = first.key_slots().await.unwrap();
    assert_eq!(slots.len(), 2);
    let ids = [slots.into_iter().find(|(id, _)| *id != second).unwrap().0, second];

    let gated = plain.clone().wrapped(|inner| DeletesMeet { inner, waiting: AtomicUsize::new(0) });
    let a = Repository::open(gated.clone(), &key(1)).await.unwrap();
    let b = Repository::open(gated, &key(2)).await.unwrap();
    let (ra, rb) = tokio::join!(a.remove_key(&ids[0]), b.remove_key(&ids[1]));

    let left = first.key_slots().await.unwrap();
    assert!(!left.is_empty(), "both removals succeeded: no key slot is left ({ra:?}, {rb:?})");
    let removed = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(removed + left.len(), 2, "{ra:?} {rb:?}");
    for r in [&ra, &rb] {
        if let Err(e) = r {
            assert!(matches!(e, Error::InvalidInput(m) if m.contains("last key slot")), "{e}");
        }
    }
    // What is left still opens the repository.
    let survivor = if left[0].0 == ids[0] { key(1) } else { key(2) };
    Repository::open(plain.clone(), &survivor).await.unwrap();
    // And no announcement of a removal is left behind.
    assert!(plain.list("key-removals").await.unwrap().is_empty());
}
