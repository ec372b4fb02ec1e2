//! A flipped byte anywhere in a pack, index segment or snapshot is detected
//! and the object is named; a wrong key gets its own exit code.

use std::path::Path;

use cairn_tests::data::{random, text};
use cairn_tests::repo::code;
use cairn_tests::TestRepo;

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

fn key_of(repo: &TestRepo, path: &Path) -> String {
    path.strip_prefix(repo.repo_dir()).unwrap().to_string_lossy().into_owned()
}

fn repo_with_data() -> (TestRepo, Vec<u8>, String) {
    let repo = TestRepo::with_args(&["--pack-size-mib", "1"]);
    let mut data = text(3 << 20, 5);
    data.extend(random(2 << 20, 6));
    let b = repo.backup_bytes(&data, &[]);
    (repo, data, b["snapshot"].as_str().unwrap().to_string())
}

#[test]
fn every_sampled_pack_byte_flip_is_named_by_check() {
    let (repo, _, _) = repo_with_data();
    let pack = repo.objects("packs")[0].clone();
    let len = std::fs::metadata(&pack).unwrap().len();
    let name = key_of(&repo, &pack);
    let mut offsets: Vec<u64> = (0..16).map(|i| i * len / 16).collect();
    offsets.extend(len - 12..len);
    for off in offsets {
        flip(&pack, off);
        let o = repo.run(&["check", "--read-data"]);
        assert_eq!(code(&o), 5, "flip at {off} of {name} not detected");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(&name), "check output does not name {name}: {out}");
        flip(&pack, off);
    }
    repo.ok(&["check", "--read-data"]);
}

#[test]
fn restore_of_a_tampered_blob_fails_naming_the_pack() {
    let (repo, data, snap) = repo_with_data();
    // Flip a byte inside the first blob of every pack: whichever pack the
    // restore reads first, it must fail and say which.
    for p in repo.objects("packs") {
        flip(&p, 100);
    }
    let o = repo.run(&["restore", &snap[..8], "--to", "-"]);
    assert_eq!(code(&o), 5, "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("packs/") && err.contains("failed authentication"), "{err}");
    assert!(o.stdout.len() < data.len());
}

#[test]
fn tampered_index_segment_is_named() {
    let (repo, _, snap) = repo_with_data();
    let seg = repo.objects("index")[0].clone();
    let name = key_of(&repo, &seg);
    flip(&seg, 40);
    let o = repo.run(&["check"]);
    assert_eq!(code(&o), 5);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&name));
    // A host without a cached index must read the segment, and refuses it.
    std::fs::remove_dir_all(&repo.cache).unwrap();
    let o = repo.run(&["restore", &snap[..8], "--to", "-"]);
    assert_eq!(code(&o), 5);
    assert!(String::from_utf8_lossy(&o.stderr).contains(&name), "{}", String::from_utf8_lossy(&o.stderr));
    // The packs still hold everything: a rebuild from their trailers recovers,
    // and registers the packs the unreadable segment named in a new segment.
    let o = repo.run(&["--json", "index", "rebuild"]);
    assert_eq!(code(&o), 5, "the unreadable segment is still reported");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["registered_packs"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["unreadable"][0].as_str().unwrap().contains(&name));
    repo.ok(&["restore", &snap[..8], "--to", "-"]);
    std::fs::remove_file(&seg).unwrap();
    std::fs::remove_dir_all(&repo.cache).unwrap();
    repo.ok(&["restore", &snap[..8], "--to", "-"]);
    repo.ok(&["check", "--read-data"]);
}

#[test]
fn tampered_snapshot_is_named() {
    let (repo, _, snap) = repo_with_data();
    let path = repo.repo_dir().join("snapshots").join(&snap);
    let name = format!("snapshots/{snap}");
    for off in [0u64, 30, std::fs::metadata(&path).unwrap().len() - 1] {
        flip(&path, off);
        let o = repo.run(&["check"]);
        assert_eq!(code(&o), 5);
        assert!(String::from_utf8_lossy(&o.stdout).contains(&name));
        let o = repo.run(&["restore", &snap[..8], "--to", "-"]);
        assert!(matches!(code(&o), 5 | 1), "restore of a tampered snapshot: {:?}", o.status);
        assert!(String::from_utf8_lossy(&o.stderr).contains(&name));
        flip(&path, off);
    }
}

#[test]
fn wrong_key_or_password_exits_3() {
    let (repo, _, _) = repo_with_data();
    let other = repo.dir.path().join("other.key");
    let o = repo.cmd(&["snapshots"]).env("CAIRN_KEY_FILE", &other).output().unwrap();
    assert_eq!(code(&o), 1, "a missing key file is an I/O error");
    let o2 = TestRepo::new();
    let o = repo.cmd(&["snapshots"]).env("CAIRN_KEY_FILE", &o2.key).output().unwrap();
    assert_eq!(code(&o), 3, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong password or key"));

    let pw = repo.dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    repo.ok(&["key", "add", "--new-password-file", pw.to_str().unwrap()]);
    let ok = repo.cmd(&["snapshots"]).env_remove("CAIRN_KEY_FILE").env("CAIRN_PASSWORD_FILE", &pw).output().unwrap();
    assert_eq!(code(&ok), 0, "{}", String::from_utf8_lossy(&ok.stderr));
    std::fs::write(&pw, "wrong horse\n").unwrap();
    let bad = repo.cmd(&["snapshots"]).env_remove("CAIRN_KEY_FILE").env("CAIRN_PASSWORD_FILE", &pw).output().unwrap();
    assert_eq!(code(&bad), 3);
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("wrong horse"), "the secret leaked into an error");
    let none = repo.cmd(&["snapshots"]).env_remove("CAIRN_KEY_FILE").output().unwrap();
    assert_eq!(code(&none), 3);
}

#[test]
fn a_hostile_key_slot_is_skipped_and_a_changed_config_is_refused() {
    let repo = TestRepo::new();
    repo.backup_bytes(b"kept", &[]);
    let pw = repo.dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    repo.ok(&["key", "add", "--new-password-file", pw.to_str().unwrap()]);
    // What anyone with write access could add: a slot whose Argon2id asks
    // for 4 TiB, named to be tried first.
    let hostile = serde_json::json!({
        "version": 2, "kdf": { "algorithm": "argon2id", "m_cost": u32::MAX, "t_cost": 3, "p_cost": 2 },
        "salt": "00".repeat(16), "sealed": "00".repeat(72), "created": "", "host": "",
    });
    std::fs::write(repo.repo_dir().join("keys/0000000000000000"), hostile.to_string()).unwrap();
    let o = repo.cmd(&["snapshots"]).env_remove("CAIRN_KEY_FILE").env("CAIRN_PASSWORD_FILE", &pw).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 0, "{err}");
    assert!(err.contains("keys/0000000000000000") && err.contains("m_cost"), "no warning names the slot: {err}");

    // A garbage collection minimum age of zero, written by someone without the key.
    let config = repo.repo_dir().join("config");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed =
        text.replacen("\"pack_target\"", "\"gc\": {\"min_age_s\": 0, \"lease_ttl_s\": 600}, \"pack_target\"", 1);
    std::fs::write(&config, changed).unwrap();
    let o = repo.run(&["snapshots"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 5, "{err}");
    assert!(err.contains("corrupt config") && err.contains("authentication failed"), "{err}");
    std::fs::write(&config, text).unwrap();
    repo.ok(&["snapshots"]);
}
