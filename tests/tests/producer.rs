//! A producer command that fails never becomes a snapshot.

use cairn_tests::repo::code;
use cairn_tests::TestRepo;

#[test]
fn failing_producer_creates_no_snapshot() {
    let repo = TestRepo::new();
    let o = repo.run(&["backup", "--", "sh", "-c", "head -c 10M /dev/urandom; exit 3"]);
    assert_eq!(code(&o), 7, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exited with status 3"));
    assert!(repo.snapshots().is_empty());

    let o = repo.run(&["backup", "--", "sh", "-c", "head -c 1M /dev/zero; kill -9 $$"]);
    assert_eq!(code(&o), 7);
    assert!(String::from_utf8_lossy(&o.stderr).contains("signal 9"));
    assert!(repo.snapshots().is_empty());

    let o = repo.run(&["backup", "--", "/nonexistent/producer"]);
    assert_ne!(code(&o), 0);
    assert!(repo.snapshots().is_empty());
}

#[test]
fn successful_producer_is_recorded() {
    let repo = TestRepo::new();
    let v = repo.json(&["backup", "--", "sh", "-c", "printf 'hello from a producer'"]);
    assert_eq!(v["source"], "sh");
    let snaps = repo.snapshots();
    assert_eq!(snaps[0]["source"]["command"][0], "sh");
    assert_eq!(repo.restore_bytes("latest"), b"hello from a producer");
}
