//! Directory snapshots: a config tree round-trips with contents, modes,
//! mtimes, symlinks and hard links; the next snapshot reads only the file
//! that changed (files cache).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_tests::TestRepo;

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos);
    std::fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}

/// A config tree: 302 small files (300 settings, a secret, an empty file) in nested directories, secrets 0600,
/// symlinks (relative, absolute, dangling), a hard link, an empty file and
/// an empty directory.
fn make_tree(root: &Path) {
    for d in 0..10 {
        let dir = root.join(format!("svc{d}/conf.d"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..30 {
            let p = dir.join(format!("{f:02}-setting.conf"));
            std::fs::write(&p, format!("# service {d} file {f}\nkey_{f} = {}\n", d * 1000 + f).repeat(f + 1)).unwrap();
            set_mtime(&p, 1_700_000_000 + (d * 100 + f) as i64, 123_456_789);
        }
    }
    let secret = root.join("svc0/secret.key");
    std::fs::write(&secret, b"-----BEGIN PRIVATE KEY-----\nnot really\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("conf.d/01-setting.conf", root.join("svc1/current")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("svc2/host")).unwrap();
    std::os::unix::fs::symlink("does-not-exist", root.join("svc3/dangling")).unwrap();
    std::fs::hard_link(root.join("svc4/conf.d/00-setting.conf"), root.join("svc4/same-as-00")).unwrap();
    std::fs::write(root.join("svc5/empty"), b"").unwrap();
    std::fs::create_dir(root.join("svc6/empty-dir")).unwrap();
    std::fs::set_permissions(root.join("svc6"), std::fs::Permissions::from_mode(0o750)).unwrap();
}

/// (relative path, kind, mode, mtime, content or link target) for a tree.
fn describe(root: &Path) -> Vec<(String, String, u32, i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let (kind, body) = if m.file_type().is_symlink() {
            ("symlink", std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes())
        } else if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            stack.extend(names.into_iter().map(|n| rel.join(n)));
            ("dir", Vec::new())
        } else {
            ("file", std::fs::read(&p).unwrap())
        };
        // Directory mtimes and symlink modes are compared too, except the
        // root's (the test created the restore target).
        let (mtime, nsec) = if rel.as_os_str().is_empty() { (0, 0) } else { (m.mtime(), m.mtime_nsec()) };
        out.push((rel.display().to_string(), kind.to_string(), m.mode() & 0o7777, mtime, nsec, body));
    }
    out.sort();
    out
}

#[test]
fn config_tree_round_trips_and_rereads_only_changes() {
    let r = TestRepo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("etc");
    make_tree(&src);
    let root = src.to_str().unwrap();

    let s1 = r.json(&["backup", "--kind", "dir", "--source", "etc", root]);
    let walk = &s1["metadata"]["dir"]["walk"];
    assert_eq!(walk["files"], 302, "{s1}");
    assert_eq!(walk["files_read"], 302, "{s1}");
    assert_eq!(walk["symlinks"], 3);
    assert_eq!(walk["hardlinks"], 1);

    // Round trip: every path, kind, mode, mtime (with nanoseconds), byte and link target.
    let out = work.path().join("restored");
    r.ok(&["restore", s1["snapshot"].as_str().unwrap(), "--to", out.to_str().unwrap()]);
    assert_eq!(describe(&out), describe(&src));
    let a = std::fs::metadata(out.join("svc4/conf.d/00-setting.conf")).unwrap();
    let b = std::fs::metadata(out.join("svc4/same-as-00")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link restored as a link");

    // Unchanged tree: nothing is read.
    let s2 = r.json(&["backup", "--kind", "dir", "--source", "etc", root]);
    assert_eq!(s2["metadata"]["dir"]["walk"]["files_read"], 0, "{s2}");
    assert_eq!(s2["metadata"]["dir"]["walk"]["files_unchanged"], 302, "{s2}");
    assert_eq!(s2["stats"]["new_chunks"], 0, "{s2}");

    // Edit one file: only it is read, and only its bytes are new.
    let edited = src.join("svc7/conf.d/12-setting.conf");
    let body = b"# service 7 file 12\nkey_12 = changed by an operator\n";
    std::fs::write(&edited, body).unwrap();
    let s3 = r.json(&["backup", "--kind", "dir", "--source", "etc", root]);
    assert_eq!(s3["metadata"]["dir"]["walk"]["files_read"], 1, "{s3}");
    assert_eq!(s3["metadata"]["dir"]["walk"]["files_unchanged"], 301, "{s3}");
    assert_eq!(s3["stats"]["new_bytes"], body.len(), "{s3}");

    // Same size and mtime but different bytes: the ctime gives it away.
    let victim = src.join("svc8/conf.d/05-setting.conf");
    let old = std::fs::read(&victim).unwrap();
    let m = std::fs::metadata(&victim).unwrap();
    let mut flipped = old.clone();
    flipped[0] = b'!';
    std::fs::write(&victim, &flipped).unwrap();
    set_mtime(&victim, m.mtime(), m.mtime_nsec() as u32);
    let s4 = r.json(&["backup", "--kind", "dir", "--source", "etc", root]);
    assert_eq!(s4["metadata"]["dir"]["walk"]["files_read"], 1, "{s4}");

    // diff and ls see the same.
    let d = r.json(&["diff", s1["snapshot"].as_str().unwrap(), s4["snapshot"].as_str().unwrap()]);
    let changed: Vec<&str> = d["diff"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "changed")
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["svc7/conf.d/12-setting.conf", "svc8/conf.d/05-setting.conf"], "{d}");
    let ls = r.json(&["ls", s4["snapshot"].as_str().unwrap(), "svc0"]);
    let secret = ls["files"].as_array().unwrap().iter().find(|f| f["path"] == "svc0/secret.key").unwrap();
    assert_eq!(secret["mode"], 0o600);

    // One subtree, then the newest state in full.
    let part = work.path().join("part");
    r.ok(&["restore", s4["snapshot"].as_str().unwrap(), "--path", "svc8", "--to", part.to_str().unwrap()]);
    assert_eq!(std::fs::read(part.join("svc8/conf.d/05-setting.conf")).unwrap(), flipped);
    assert!(!part.join("svc7").exists());
    let full = work.path().join("full");
    r.ok(&["restore", s4["snapshot"].as_str().unwrap(), "--to", full.to_str().unwrap()]);
    assert_eq!(describe(&full), describe(&src));
    r.ok(&["check", "--read-data"]);
}

#[test]
fn excludes_leave_paths_out() {
    let r = TestRepo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("app");
    std::fs::create_dir_all(src.join("cache/deep")).unwrap();
    std::fs::write(src.join("cache/deep/blob"), b"x").unwrap();
    std::fs::write(src.join("app.conf"), b"a = 1\n").unwrap();
    std::fs::write(src.join("app.conf.swp"), b"junk").unwrap();
    let s = r.json(&["backup", "--kind", "dir", "--exclude", "*.swp", "--exclude", "cache", src.to_str().unwrap()]);
    assert_eq!(s["metadata"]["dir"]["walk"]["excluded"], 2, "{s}");
    let ls = r.json(&["ls", s["snapshot"].as_str().unwrap()]);
    let paths: Vec<&str> = ls["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["", "app.conf"]);
}

/// A file swapped for a symbolic link to a secret while the walk runs
/// (root backs up a user's directory; the user flips names as fast as
/// they can): the walk records what it opened, so the secret's bytes never
/// land in the snapshot under the user's file name.
#[test]
fn a_file_swapped_for_a_link_during_the_walk_never_stores_the_link_target() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let r = TestRepo::new();
    let work = tempfile::tempdir().unwrap();
    let secret = work.path().join("shadow");
    let secret_bytes = b"root:$6$only-root-may-read-this$:19000:0:99999:7:::\n".repeat(4);
    std::fs::write(&secret, &secret_bytes).unwrap();
    let src = work.path().join("home");
    let spare = work.path().join("spare");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&spare).unwrap();
    const NAMES: usize = 200;
    for i in 0..NAMES {
        std::fs::write(spare.join(format!("h{i}")), format!("user file {i}\n")).unwrap();
        std::fs::hard_link(spare.join(format!("h{i}")), src.join(format!("f{i}"))).unwrap();
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, src, spare) = (stop.clone(), src.clone(), spare.clone());
        std::thread::spawn(move || {
            // Swap each name between the user's file and a link to the
            // secret by atomic renames over it, so the name never
            // disappears, round and round.
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..NAMES {
                    let name = src.join(format!("f{i}"));
                    let (link, tmp) = (spare.join(format!("l{i}")), spare.join(format!("t{i}")));
                    std::os::unix::fs::symlink(&secret, &link).unwrap();
                    std::fs::rename(&link, &name).unwrap();
                    std::fs::hard_link(spare.join(format!("h{i}")), &tmp).unwrap();
                    std::fs::rename(&tmp, &name).unwrap();
                    flips += 1;
                }
            }
            flips
        })
    };
    let (mut ids, mut failed) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let o = r.run(&["--json", "backup", "--kind", "dir", "--source", "home", src.to_str().unwrap()]);
        match serde_json::from_slice::<serde_json::Value>(&o.stdout) {
            Ok(v) if o.status.success() => ids.push(v["snapshot"].as_str().unwrap().to_string()),
            _ => failed.push(String::from_utf8_lossy(&o.stderr).into_owned()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(flipper.join().unwrap() > 1000, "the names were flipped while the backups ran");
    for id in &ids {
        let out = work.path().join(format!("r-{id}"));
        r.ok(&["restore", id, "--to", out.to_str().unwrap()]);
        for e in std::fs::read_dir(&out).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_file() {
                let got = std::fs::read(&p).unwrap();
                assert_ne!(got, secret_bytes, "{}: snapshot {id} stored the secret under a user's name", p.display());
            }
        }
    }
    // A name that changes kind between two looks is looked at again, so
    // the walk neither follows it nor gives up.
    assert!(failed.is_empty(), "{} of 15 backups failed: {failed:?}", failed.len());
}

/// `cairn restore` of `id` into `out` with the descriptor limit set by
/// `prlimit --nofile=SOFT:HARD`.
fn restore_with_nofile(r: &TestRepo, id: &str, out: &Path, limit: &str) -> std::process::Output {
    let mut plain = r.cmd(&["restore", id, "--to", out.to_str().unwrap()]);
    // A slow disk: the committer's queue fills up, so every descriptor it
    // may hold is open at once.
    plain.env("CAIRN_TEST_SLOW_COMMIT_MS", "100");
    let mut c = std::process::Command::new("prlimit");
    c.arg(format!("--nofile={limit}")).arg("--").arg(plain.get_program()).args(plain.get_args());
    c.env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.stdin(std::process::Stdio::null()).output().expect("prlimit (util-linux) runs")
}

/// A restore of thousands of files stays within the 1,024 descriptors that
/// systemd services and `runuser` sessions get by default (a drill once
/// failed with EMFILE restoring a PostgreSQL data directory), and raises a
/// lower soft limit to the hard one.
#[test]
fn a_restore_of_many_files_fits_the_default_descriptor_limit() {
    let r = TestRepo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("many");
    for d in 0..4 {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1500 {
            std::fs::write(dir.join(format!("{f:04}")), format!("{d}/{f}\n").repeat(1 + f % 7)).unwrap();
        }
    }
    let s = r.json(&["backup", "--kind", "dir", "--source", "many", src.to_str().unwrap()]);
    let id = s["snapshot"].as_str().unwrap();
    for (n, limit) in [(0, "700:700"), (1, "64:20000")] {
        let out = work.path().join(format!("out{n}"));
        let o = restore_with_nofile(&r, id, &out, limit);
        assert!(
            o.status.success(),
            "restore of 6,000 files with --nofile={limit}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(describe(&out), describe(&src), "--nofile={limit}");
    }
}
