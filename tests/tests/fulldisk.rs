//! A full disk, for real: size-limited tmpfs mounts (made by the test, as
//! root) hold the repository and the restore target. Backup, `wal push`,
//! restore and `wal fetch` fail with an error naming the path, leave
//! nothing a later read trusts (`check --read-data` is clean, nothing half
//! written takes a real name), and succeed once there is room again.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_tests::data::XorShift;
use cairn_tests::repo::code;
use cairn_tests::TestRepo;

use super::wal::first_segment;

/// A tmpfs of `mib` MiB at `dir`, unmounted on drop.
pub(crate) struct Small {
    dir: PathBuf,
}

impl Small {
    pub(crate) fn mount(dir: &Path, mib: u32) -> Small {
        assert!(
            is_root(),
            "the full-disk tests mount tmpfs file systems and must run as root (CI does); run `make test` as root"
        );
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "mount tmpfs at {}: {}", dir.display(), String::from_utf8_lossy(&o.stderr));
        Small { dir: dir.to_path_buf() }
    }

    fn resize(&self, mib: u32) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m"), "tmpfs"])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "remount {}: {}", self.dir.display(), String::from_utf8_lossy(&o.stderr));
    }

    /// Fills the file system to the last byte with a ballast file.
    pub(crate) fn fill(&self) -> PathBuf {
        let p = self.dir.join("ballast");
        let _ = Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", p.display())).arg("bs=64k").output();
        p
    }
}

impl Drop for Small {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut r = XorShift(seed | 1);
    (0..n / 8).flat_map(|_| r.next_u64().to_le_bytes()).collect()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_full_repository_fails_cleanly_and_recovers() {
    let work = tempfile::tempdir().unwrap();
    let fs = Small::mount(&work.path().join("fs"), 16);
    let repo = fs.dir.join("repo");
    let r = TestRepo::at(work, repo.to_string_lossy().into_owned(), Vec::new());
    r.ok(&["init"]);
    let small = random(1 << 20, 1);
    let first = r.backup_bytes(&small, &["--source", "small"]);

    // 24 MiB of incompressible data cannot fit in 16 MiB.
    let big = random(24 << 20, 2);
    let o = r.run_stdin(&["backup", "--source", "big", "-"], &big);
    let err = stderr(&o);
    assert_ne!(code(&o), 0, "{err}");
    assert!(err.contains("No space left") || err.contains("space"), "names the cause: {err}");
    assert!(err.contains(fs.dir.to_str().unwrap()), "names the path: {err}");
    assert_eq!(r.snapshots().len(), 1, "no snapshot for the failed backup");
    r.ok(&["check", "--read-data"]);
    assert_eq!(r.restore_bytes(first["snapshot"].as_str().unwrap()), small);

    // wal push into a full repository: refused with the path, never 0.
    let pg_root = cairn_tests::pg::shared_dir();
    let seg = first_segment(pg_root.path(), "pg");
    let ballast = fs.fill();
    let o = r.run(&["wal", "push", "--stanza", "main", seg.to_str().unwrap()]);
    let err = stderr(&o);
    assert_ne!(code(&o), 0, "wal push must not acknowledge on a full disk: {err}");
    assert!(err.contains(fs.dir.to_str().unwrap()), "names the path: {err}");
    std::fs::remove_file(&ballast).unwrap();
    r.ok(&["check", "--read-data"]);

    // Room again: both succeed, and what they stored reads back.
    fs.resize(96);
    let again = r.run_stdin(&["--json", "backup", "--source", "big", "-"], &big);
    cairn_tests::repo::assert_success(&again, &["backup", "big"]);
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(r.restore_bytes(v["snapshot"].as_str().unwrap()), big);
    r.ok(&["wal", "push", "--stanza", "main", seg.to_str().unwrap()]);
    let back = r.dir.path().join("back");
    r.ok(&["wal", "fetch", "--stanza", "main", "000000010000000000000001", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&seg).unwrap());
    r.ok(&["check", "--read-data"]);
}

#[test]
fn a_full_restore_target_fails_cleanly_and_recovers() {
    let r = TestRepo::new();
    let data = random(12 << 20, 3);
    let snap = r.backup_bytes(&data, &["--source", "data"]);
    let id = snap["snapshot"].as_str().unwrap();
    let pg_root = cairn_tests::pg::shared_dir();
    let seg = first_segment(pg_root.path(), "pg");
    r.ok(&["wal", "push", "--stanza", "main", seg.to_str().unwrap()]);

    let fs = Small::mount(&r.dir.path().join("target"), 4);
    let out = fs.dir.join("data.bin");
    let o = r.run(&["restore", id, "--to", out.to_str().unwrap()]);
    let err = stderr(&o);
    assert_ne!(code(&o), 0, "{err}");
    assert!(err.contains(fs.dir.to_str().unwrap()) && err.contains("space"), "names the path and cause: {err}");
    assert!(!out.exists(), "no half-written file under the real name");
    let left: Vec<_> = std::fs::read_dir(&fs.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the temporary file was removed: {left:?}");

    // wal fetch is restore_command: any failure but "not archived" is 126+.
    let pg_wal = fs.dir.join("RECOVERYXLOG");
    let ballast = fs.fill();
    let o = r.run(&["wal", "fetch", "--stanza", "main", "000000010000000000000001", pg_wal.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(
        code(&o) >= 126,
        "wal fetch onto a full disk exits {} (never 1, which means not archived): {err}",
        code(&o)
    );
    assert!(err.contains(fs.dir.to_str().unwrap()), "names the path: {err}");
    assert!(!pg_wal.exists(), "no partial segment under the name PostgreSQL reads");
    std::fs::remove_file(&ballast).unwrap();

    fs.resize(64);
    r.ok(&["restore", id, "--to", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    r.ok(&["wal", "fetch", "--stanza", "main", "000000010000000000000001", pg_wal.to_str().unwrap()]);
    assert_eq!(std::fs::read(&pg_wal).unwrap(), std::fs::read(&seg).unwrap());
}

/// A directory snapshot's files are restored several at once and take
/// their names in groups: when the target fills up half-way, the restore
/// fails naming the path, every file that has its name is complete, no
/// temporary file is left anywhere, and the same restore succeeds once
/// there is room.
#[test]
fn a_directory_restore_onto_a_full_disk_leaves_only_complete_files() {
    let r = TestRepo::new();
    let src = r.dir.path().join("src");
    let mut want = std::collections::BTreeMap::new();
    for i in 0..160u64 {
        let rel = format!("d{}/f{i:03}", i % 5);
        let bytes = random(16 << 10 | (i as usize % 7) << 12, i + 1);
        std::fs::create_dir_all(src.join(format!("d{}", i % 5))).unwrap();
        std::fs::write(src.join(&rel), &bytes).unwrap();
        want.insert(rel, bytes);
    }
    let snap: serde_json::Value = serde_json::from_slice(&r.ok(&[
        "--json",
        "backup",
        "--kind",
        "dir",
        "--source",
        "tree",
        src.to_str().unwrap(),
    ]))
    .unwrap();
    let id = snap["snapshot"].as_str().unwrap();

    // 160 files of 16-40 KiB do not fit in 2 MiB.
    let fs = Small::mount(&r.dir.path().join("target"), 2);
    let out = fs.dir.join("tree");
    let o = r.run(&["restore", id, "--to", out.to_str().unwrap()]);
    let err = stderr(&o);
    assert_ne!(code(&o), 0, "{err}");
    assert!(err.contains(fs.dir.to_str().unwrap()) && err.contains("space"), "names the path and cause: {err}");
    let mut named = 0;
    for d in 0..5 {
        let Ok(entries) = std::fs::read_dir(out.join(format!("d{d}"))) else { continue };
        for e in entries {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains(".partial"), "a temporary file was left: d{d}/{name}");
            let rel = format!("d{d}/{name}");
            assert_eq!(std::fs::read(out.join(&rel)).unwrap(), want[&rel], "{rel} has its name, so it is complete");
            named += 1;
        }
    }
    assert!(named < want.len(), "the disk was full before the end ({named} files)");

    fs.resize(64);
    let again = fs.dir.join("tree2");
    r.ok(&["restore", id, "--to", again.to_str().unwrap()]);
    for (rel, bytes) in &want {
        assert_eq!(&std::fs::read(again.join(rel)).unwrap(), bytes, "{rel}");
    }
}
