//! The command line's contract: help, exit codes, key handling, locking.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use cairn_tests::repo::{cairn_bin, code};
use cairn_tests::TestRepo;

#[test]
fn help_documents_commands_exit_codes_and_takes_no_secrets() {
    let o = std::process::Command::new(cairn_bin()).arg("--help").output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for word in ["init", "backup", "restore", "snapshots", "check", "index", "key", "stats", "Exit codes", "CAIRN_REPO"]
    {
        assert!(help.contains(word), "--help lacks {word}");
    }
    // Secrets only come from files or the environment, never argv.
    assert!(!help.contains("--password ") && !help.contains("--key "));
    let o = std::process::Command::new(cairn_bin()).args(["backup", "--nope"]).output().unwrap();
    assert_eq!(code(&o), 2);
}

#[test]
fn init_creates_a_private_key_file_and_refuses_to_reinit() {
    let repo = TestRepo::new();
    let mode = std::fs::metadata(&repo.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let o = repo.run(&["init"]);
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let key_text = std::fs::read_to_string(&repo.key).unwrap();
    let secret = key_text.trim().trim_start_matches("cairn-key-v1:");
    // The key never shows up in any output.
    let out = repo.run(&["key", "list", "-vv"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
}

#[test]
fn missing_repository_and_snapshot_exit_4() {
    let repo = TestRepo::new();
    let o = repo.cmd(&["snapshots"]).env("CAIRN_REPO", repo.dir.path().join("nope")).output().unwrap();
    assert_eq!(code(&o), 4);
    let o = repo.run(&["restore", "abcdef12", "--to", "-"]);
    assert_eq!(code(&o), 4);
    let o = repo.run(&["restore", "latest", "--to", "-"]);
    assert_eq!(code(&o), 4);
}

#[test]
fn key_slots_add_list_remove() {
    let repo = TestRepo::new();
    let k2 = repo.dir.path().join("second.key");
    let added = repo.json(&["key", "add", "--new-key-file", k2.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&k2).unwrap().permissions().mode() & 0o777, 0o600);
    let slots = repo.json(&["key", "list"]);
    assert_eq!(slots.as_array().unwrap().len(), 2);
    // The new key opens the repository on its own.
    let o = repo.cmd(&["snapshots"]).env("CAIRN_KEY_FILE", &k2).output().unwrap();
    assert_eq!(code(&o), 0);
    let first =
        slots.as_array().unwrap().iter().find(|s| s["id"] != added["id"]).unwrap()["id"].as_str().unwrap().to_string();
    let o = repo.cmd(&["key", "remove", &first]).env("CAIRN_KEY_FILE", &k2).output().unwrap();
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(code(&repo.run(&["snapshots"])), 3, "the removed key still opens the repository");
    let o = repo.cmd(&["key", "remove", added["id"].as_str().unwrap()]).env("CAIRN_KEY_FILE", &k2).output().unwrap();
    assert_ne!(code(&o), 0, "removing the last slot must be refused");
}

#[test]
fn a_second_writer_waits_then_fails_with_exit_6() {
    let repo = TestRepo::new();
    let mut slow = repo
        .cmd(&["backup", "--", "sh", "-c", "sleep 4; echo done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = repo.run_stdin(&["backup", "--lock-timeout", "1", "-"], b"second");
    assert_eq!(code(&o), 6, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("locked by another cairn process"));
    // Readers are not blocked by the writer.
    let o = repo.run(&["snapshots", "--json"]);
    assert_eq!(code(&o), 0);
    assert!(slow.wait().unwrap().success());
    assert_eq!(repo.restore_bytes("latest"), b"done\n");
}

#[test]
fn stats_and_snapshots_json() {
    let repo = TestRepo::new();
    repo.backup_bytes(b"one", &["--source", "a", "--tag", "daily"]);
    repo.backup_bytes(b"two", &["--source", "b"]);
    let s = repo.json(&["snapshots", "--source", "a"]);
    assert_eq!(s.as_array().unwrap().len(), 1);
    assert_eq!(s[0]["tags"][0], "daily");
    let st = repo.json(&["stats"]);
    assert_eq!(st["snapshots"], 2);
    assert_eq!(st["logical_bytes"], 6);
}

#[test]
fn inspect_agrees_with_gnu_tar_and_rejects_a_flipped_rdb() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tar = root.join("formats/testdata/tar/small-pax.tar");
    let o = std::process::Command::new(cairn_bin()).args(["--json", "inspect", "tar"]).arg(&tar).output().unwrap();
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ours: Vec<String> =
        v["members"].as_array().unwrap().iter().map(|m| m["path"].as_str().unwrap().to_string()).collect();
    let gnu = std::process::Command::new("tar").arg("tf").arg(&tar).output().unwrap();
    let theirs: Vec<String> = String::from_utf8(gnu.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(ours, theirs);

    // An RDB saved by redis-server 7.0.15 (formats/testdata/redis/README.md).
    let rdb = root.join("formats/testdata/redis/small-7.0.15.rdb");
    let o = std::process::Command::new(cairn_bin()).args(["--json", "inspect", "rdb"]).arg(&rdb).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["keys"], 11);
    assert_eq!(v["checksum"]["status"], "valid");
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&rdb).unwrap();
    bytes[100] ^= 1;
    let bad = dir.path().join("bad.rdb");
    std::fs::write(&bad, bytes).unwrap();
    let o = std::process::Command::new(cairn_bin()).args(["inspect", "rdb"]).arg(&bad).output().unwrap();
    assert_eq!(code(&o), 5);
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.rdb"));
}

#[test]
fn repository_files_are_private_even_under_umask_000() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("repo").to_string_lossy().into_owned();
    let repo = TestRepo::at(dir, url, Vec::new());
    let second = repo.dir.path().join("second.key");
    let run = |args: &[&str]| {
        // The loosest umask there is: any mode cairn does not ask for
        // explicitly would show.
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(cairn_bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CAIRN_REPO", &repo.url)
            .env("CAIRN_KEY_FILE", &repo.key)
            .env("CAIRN_CACHE_DIR", &repo.cache)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "cairn {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    run(&["init", "--pack-size-mib", "1"]);
    run(&["backup", "--", "sh", "-c", "head -c 3000000 /dev/urandom"]);
    run(&["key", "add", "--new-key-file", second.to_str().unwrap()]);
    run(&["pin", "latest"]);
    let mut seen = (0, 0);
    let mut todo = vec![repo.repo_dir()];
    while let Some(d) = todo.pop() {
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
        seen.0 += 1;
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
                seen.1 += 1;
            }
        }
    }
    assert!(seen.0 >= 5 && seen.1 >= 6, "too little was written to show anything: {seen:?}");
    for k in [&repo.key, &second] {
        assert_eq!(std::fs::metadata(k).unwrap().permissions().mode() & 0o777, 0o600, "{}", k.display());
    }
}

#[test]
fn a_secret_file_others_can_read_draws_one_warning() {
    let repo = TestRepo::new();
    let pw = repo.dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warning = "gives group or others access";
    let o = repo.run(&["key", "add", "--new-password-file", pw.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(code(&o), 0, "{err}");
    assert!(err.contains(warning) && err.contains(pw.to_str().unwrap()) && err.contains("0644"), "{err}");
    let with_password =
        || repo.cmd(&["snapshots"]).env_remove("CAIRN_KEY_FILE").env("CAIRN_PASSWORD_FILE", &pw).output().unwrap();
    let o = with_password();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(code(&o), 0, "{err}");
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = with_password();
    assert!(!String::from_utf8_lossy(&o.stderr).contains(warning));
    // A key file too.
    std::fs::set_permissions(&repo.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = repo.run(&["snapshots"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains(warning));
}
