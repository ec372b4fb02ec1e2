//! The [`Backend`] contract as test functions (as object_store's
//! `integration.rs`): every backend and every wrapper is run through them by
//! the project's tests — local directories and S3 in `tests/`, memory and
//! each wrapper in `engine/tests/`. They panic on the first broken promise.
//!
//! Each function writes only under the key prefix `p` it is given (`""` or
//! ending in `/`), so one store can be checked several times.

use bytes::Bytes;

use super::backend::{Backend, BackendExt, PutMode};
use crate::Error;

/// Everything single-threaded: put, overwrite, create-only, compare-and-swap,
/// ranges, sizes, listing, typed errors, delete.
pub async fn contract(store: &dyn Backend, p: &str) {
    basics(store, p).await;
    conditional_update(store, p).await;
}

/// Whole objects, create-only, ranges, listing, not-found and delete.
pub async fn basics(store: &dyn Backend, p: &str) {
    let k = |s: &str| format!("{p}{s}");
    // Whole-object put/get, overwrite.
    store.put(&k("a/one"), Bytes::from_static(b"first")).await.unwrap();
    assert_eq!(&store.get(&k("a/one")).await.unwrap()[..], b"first");
    store.put(&k("a/one"), Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(&store.get(&k("a/one")).await.unwrap()[..], b"second");
    // Create-only.
    store.put_create(&k("a/two"), Bytes::from_static(b"x")).await.unwrap();
    assert!(matches!(store.put_create(&k("a/two"), Bytes::from_static(b"y")).await, Err(Error::AlreadyExists { .. })));
    assert_eq!(&store.get(&k("a/two")).await.unwrap()[..], b"x");
    // Ranges and sizes.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    store.put(&k("b/big"), Bytes::from(big.clone())).await.unwrap();
    assert_eq!(store.size(&k("b/big")).await.unwrap(), big.len() as u64);
    assert_eq!(&store.get_range(&k("b/big"), 1_000_000..1_000_100).await.unwrap()[..], &big[1_000_000..1_000_100]);
    assert!(store.get_range(&k("b/big"), 2_999_990..3_000_010).await.is_err(), "a read past the end must fail");
    // Listing is by prefix, sorted, with sizes and store times.
    let l = store.list(&k("a")).await.unwrap();
    assert_eq!(l.iter().map(|o| o.key.clone()).collect::<Vec<_>>(), [k("a/one"), k("a/two")]);
    assert_eq!(l[0].size, 6);
    let age = std::time::SystemTime::now().duration_since(l[0].modified).unwrap_or_default();
    assert!(age < std::time::Duration::from_secs(600), "a fresh object's store time is recent: {age:?}");
    assert!(store.list(&k("nothing-here")).await.unwrap().is_empty());
    // From an offset: only keys after it, sorted, at most `limit`; the
    // offset need not exist, and a name followed by `0` sorts after the
    // name's own `.suffix` keys (the WAL catalogue relies on both).
    for name in ["s/A1", "s/A1.partial", "s/A2", "s/B"] {
        store.put(&k(name), Bytes::from_static(b"y")).await.unwrap();
    }
    let after = |off: &str, limit| {
        let (prefix, off) = (k("s"), k(off));
        async move { store.list_after(&prefix, &off, limit).await.unwrap().into_iter().map(|o| o.key).collect::<Vec<_>>() }
    };
    assert_eq!(after("s/A1", None).await, [k("s/A1.partial"), k("s/A2"), k("s/B")]);
    assert_eq!(after("s/A10", None).await, [k("s/A2"), k("s/B")]);
    assert_eq!(after("s/", Some(2)).await, [k("s/A1"), k("s/A1.partial")]);
    assert!(after("s/C", None).await.is_empty());
    // Not found is typed and names the object.
    match store.get(&k("a/missing")).await {
        Err(Error::NotFound { what }) => assert_eq!(what, k("a/missing")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!store.exists(&k("a/missing")).await.unwrap());
    // Delete, and deleting twice is fine.
    store.delete(&k("a/one")).await.unwrap();
    store.delete(&k("a/one")).await.unwrap();
    assert!(!store.exists(&k("a/one")).await.unwrap());
    // Many at once, missing ones included.
    let many: Vec<String> = (0..40).map(|i| k(&format!("m/{i:02}"))).collect();
    for key in &many[..30] {
        store.put(key, Bytes::from_static(b"x")).await.unwrap();
    }
    store.delete_many(&many).await.unwrap();
    assert!(store.list(&k("m/")).await.unwrap().is_empty(), "every listed key is gone");
    store.delete_many(&many).await.unwrap();
    store.delete_many(&[]).await.unwrap();
}

/// Compare-and-swap: an update naming the current version wins and yields a
/// new one; a stale version, or a missing object, is refused and changes
/// nothing.
pub async fn conditional_update(store: &dyn Backend, p: &str) {
    let k = |s: &str| format!("{p}{s}");
    let v1 = store.put_opts(&k("cas/lease"), Bytes::from_static(b"v1"), PutMode::Create).await.unwrap();
    assert_eq!(store.head(&k("cas/lease")).await.unwrap().version, v1, "head reports the version the put returned");
    let v2 = store.put_opts(&k("cas/lease"), Bytes::from_static(b"v2"), PutMode::Update(v1.clone())).await.unwrap();
    assert_ne!(v1, v2, "an update yields a new version");
    assert_eq!(&store.get(&k("cas/lease")).await.unwrap()[..], b"v2");
    match store.put_opts(&k("cas/lease"), Bytes::from_static(b"stale"), PutMode::Update(v1)).await {
        Err(Error::Precondition { what }) => assert_eq!(what, k("cas/lease")),
        other => panic!("an update naming a replaced version must be refused, got {other:?}"),
    }
    assert_eq!(&store.get(&k("cas/lease")).await.unwrap()[..], b"v2", "a refused update changes nothing");
    let missing = store.put_opts(&k("cas/missing"), Bytes::from_static(b"x"), PutMode::Update(v2)).await;
    assert!(matches!(missing, Err(Error::Precondition { .. })), "update of a missing object: {missing:?}");
    assert!(!store.exists(&k("cas/missing")).await.unwrap());
}

/// Many writers race: exactly one create-only put of a key wins, and
/// exactly one of several updates naming the same version. Only for
/// backends whose conditional writes are atomic (not moto: see
/// shared/s3/README.md).
pub async fn races(store: std::sync::Arc<dyn Backend>, p: &str) {
    for round in 0..20 {
        let key = format!("{p}race/{round}");
        let tasks: Vec<_> = (0..8u8)
            .map(|w| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move { store.put_create(&key, Bytes::from(vec![w; 64])).await })
            })
            .collect();
        let mut winners = Vec::new();
        for (w, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(()) => winners.push(w as u8),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => panic!("racing create failed oddly: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one create wins, got {winners:?}");
        assert_eq!(store.get(&key).await.unwrap(), Bytes::from(vec![winners[0]; 64]), "the winner's bytes stay");

        let base = store.head(&key).await.unwrap().version;
        let tasks: Vec<_> = (0..8u8)
            .map(|w| {
                let (store, key, base) = (store.clone(), key.clone(), base.clone());
                tokio::spawn(async move {
                    store.put_opts(&key, Bytes::from(vec![100 + w; 64]), PutMode::Update(base)).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for (w, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(_) => won.push(100 + w as u8),
                Err(Error::Precondition { .. }) => {}
                Err(e) => panic!("racing update failed oddly: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one update wins, got {won:?}");
        assert_eq!(store.get(&key).await.unwrap(), Bytes::from(vec![won[0]; 64]));
    }
}
