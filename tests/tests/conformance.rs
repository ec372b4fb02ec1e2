//! One conformance suite, run against every storage backend: a local
//! directory and S3 (moto's server on 127.0.0.1).

use bytes::Bytes;
use cairn_engine::store::{Location, Store};
use cairn_engine::Error;
use cairn_tests::data::text;
use cairn_tests::moto::Moto;
use cairn_tests::TestRepo;

async fn store_contract(store: &Store) {
    // Whole-object put/get, overwrite.
    store.put("a/one", Bytes::from_static(b"first")).await.unwrap();
    assert_eq!(&store.get("a/one").await.unwrap()[..], b"first");
    store.put("a/one", Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(&store.get("a/one").await.unwrap()[..], b"second");
    // Create-only.
    store.put_create("a/two", Bytes::from_static(b"x")).await.unwrap();
    assert!(matches!(store.put_create("a/two", Bytes::from_static(b"y")).await, Err(Error::AlreadyExists { .. })));
    assert_eq!(&store.get("a/two").await.unwrap()[..], b"x");
    // Ranges and sizes.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    store.put("b/big", Bytes::from(big.clone())).await.unwrap();
    assert_eq!(store.size("b/big").await.unwrap(), big.len() as u64);
    assert_eq!(&store.get_range("b/big", 1_000_000..1_000_100).await.unwrap()[..], &big[1_000_000..1_000_100]);
    assert!(store.get_range("b/big", 2_999_990..3_000_010).await.is_err(), "a read past the end must fail");
    // Listing is by prefix, sorted, with sizes.
    let l = store.list("a").await.unwrap();
    assert_eq!(l.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["a/one", "a/two"]);
    assert_eq!(l[0].size, 6);
    assert!(store.list("nothing-here").await.unwrap().is_empty());
    // Not found is typed and names the object.
    match store.get("a/missing").await {
        Err(Error::NotFound { what }) => assert_eq!(what, "a/missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!store.exists("a/missing").await.unwrap());
    // Delete, and deleting twice is fine.
    store.delete("a/one").await.unwrap();
    store.delete("a/one").await.unwrap();
    assert!(!store.exists("a/one").await.unwrap());
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

    let d = tempfile::tempdir().unwrap();
    let url = d.path().join("repo").to_string_lossy().into_owned();
    tokio::task::spawn_blocking(move || cli_round_trip(&TestRepo::at(d, url, Vec::new()))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_backend_via_moto() {
    let moto = Moto::start();
    moto.create_bucket("conformance");
    moto.set_env();
    let store = Store::open(&Location::parse("s3://conformance/some/prefix").unwrap(), false).unwrap();
    store_contract(&store).await;

    moto.create_bucket("cli");
    let d = tempfile::tempdir().unwrap();
    let env = moto.env();
    tokio::task::spawn_blocking(move || cli_round_trip(&TestRepo::at(d, "s3://cli/repo".into(), env))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_backend() {
    store_contract(&Store::memory()).await;
}
