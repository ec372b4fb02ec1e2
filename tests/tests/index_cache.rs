//! The local index is only a cache: deleting or corrupting it loses nothing.

use cairn_tests::data::{random, text};
use cairn_tests::TestRepo;

#[test]
fn deleting_the_index_loses_nothing() {
    let repo = TestRepo::new();
    let mut data = text(6 << 20, 1);
    data.extend(random(3 << 20, 2));
    let b = repo.backup_bytes(&data, &[]);
    let snap = b["snapshot"].as_str().unwrap();

    std::fs::remove_dir_all(&repo.cache).unwrap();
    assert!(repo.restore_bytes(snap) == data);
    // Dedup works against the rebuilt index.
    std::fs::remove_dir_all(&repo.cache).unwrap();
    let again = repo.backup_bytes(&data, &[]);
    assert_eq!(again["stats"]["new_chunks"], 0, "{again}");
    assert_eq!(again["stats"]["packs"], 0);
}

#[test]
fn a_corrupt_index_is_rebuilt() {
    let repo = TestRepo::new();
    let data = text(5 << 20, 3);
    let b = repo.backup_bytes(&data, &[]);
    let snap = b["snapshot"].as_str().unwrap();
    // Garble every file of the RocksDB directory.
    let files = cairn_tests::repo::files_under(&repo.cache);
    assert!(!files.is_empty());
    for p in files {
        std::fs::write(&p, b"garbage").unwrap();
    }
    assert!(repo.restore_bytes(snap) == data);
    let again = repo.backup_bytes(&data, &[]);
    assert_eq!(again["stats"]["new_chunks"], 0);
}

#[test]
fn rebuild_from_pack_trailers_alone() {
    let repo = TestRepo::new();
    let data = text(5 << 20, 4);
    let snap = repo.backup_bytes(&data, &[])["snapshot"].as_str().unwrap().to_string();
    let r = repo.json(&["index", "rebuild"]);
    assert!(r["packs"].as_u64().unwrap() >= 1);
    assert!(r["blobs"].as_u64().unwrap() >= 2, "data and tree blobs: {r}");
    assert!(repo.restore_bytes(&snap) == data);
    let again = repo.backup_bytes(&data, &[]);
    assert_eq!(again["stats"]["new_chunks"], 0);
}
