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

#[test]
fn producers_do_not_inherit_cairns_secrets() {
    let repo = TestRepo::new();
    let o = repo
        .cmd(&["--json", "backup", "--source", "env", "--", "env"])
        .env("AWS_SECRET_ACCESS_KEY", "s3cr3t-key-material")
        .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
        .env("HOME_FOR_PRODUCER", "kept")
        .output()
        .unwrap();
    cairn_tests::repo::assert_success(&o, &["backup", "--", "env"]);
    let env = String::from_utf8(repo.restore_bytes("latest")).unwrap();
    assert!(env.contains("HOME_FOR_PRODUCER=kept"), "the rest of the environment passes: {env}");
    for gone in ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "CAIRN_KEY_FILE", "CAIRN_REPO", "s3cr3t"] {
        assert!(!env.contains(gone), "{gone} reached the producer: {env}");
    }
}

#[test]
fn pg_restore_refuses_a_restore_command_wal_fetch_would_refuse() {
    let repo = TestRepo::new();
    let pw = repo.dir.path().join("pw");
    std::fs::write(&pw, "a password\n").unwrap();
    let to = repo.dir.path().join("pgdata");
    let o = repo
        .cmd(&["pg", "restore", "--stanza", "main", "--latest", "--to", to.to_str().unwrap()])
        .env_remove("CAIRN_KEY_FILE")
        .env("CAIRN_PASSWORD_FILE", &pw)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(code(&o), 0, "{err}");
    assert!(err.contains("needs a key file"), "{err}");
    assert!(!to.exists(), "nothing was written");
}
