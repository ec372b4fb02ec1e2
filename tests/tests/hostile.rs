//! Hostile archives and targets: no restore — whole, `--path`, directory
//! snapshot — creates, modifies, chmods or deletes anything outside its
//! target, whatever the snapshot holds or the target already contains.
//! Each case hashes a sentinel tree around the target before and after,
//! and checks what the restore reported refusing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use cairn_tests::hostile::{dir, file, hardlink, symlink, tree_state, ustar, M};
use cairn_tests::repo::code;
use cairn_tests::TestRepo;

/// A workspace: `outside/` (the sentinel tree) beside `target/`.
struct Scene {
    _t: tempfile::TempDir,
    root: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let o = root.join("outside");
        std::fs::create_dir_all(o.join("dir")).unwrap();
        std::fs::write(o.join("victim"), b"secret").unwrap();
        std::fs::set_permissions(o.join("victim"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::set_permissions(o.join("dir"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::create_dir(root.join("target")).unwrap();
        Scene { _t: t, root }
    }

    fn outside(&self) -> PathBuf {
        self.root.join("outside")
    }

    fn target(&self) -> PathBuf {
        self.root.join("target")
    }

    /// Every path under the workspace except the target.
    fn sentinel(&self) -> Vec<String> {
        tree_state(&self.root, &self.target())
    }
}

fn backup_tar(r: &TestRepo, s: &Scene, name: &str, members: &[M]) -> String {
    let p = s.root.join(format!("{name}.tar"));
    std::fs::write(&p, ustar(members)).unwrap();
    let v = r.json(&["backup", "--kind", "tar", "--source", name, p.to_str().unwrap()]);
    v["snapshot"].as_str().unwrap().to_string()
}

/// Runs a restore that must be refused (exit 10) naming `member`, and
/// leave the sentinel tree as it was.
fn refused(r: &TestRepo, s: &Scene, args: &[&str], member: &str) {
    let before = s.sentinel();
    let o = r.run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 10, "{args:?} must be refused: {err}");
    assert!(err.contains(member), "{args:?}: the refusal names {member:?}: {err}");
    assert_eq!(s.sentinel(), before, "{args:?} changed something outside the target");
}

#[test]
fn hostile_tar_members_are_refused_in_every_restore_mode() {
    let s = Scene::new();
    let r = TestRepo::new();
    let out = s.outside();
    let victim = out.join("victim");
    let abs_victim = victim.to_str().unwrap().to_string();
    let out_dir = out.join("dir");
    let target = s.target();
    let t = target.to_str().unwrap();
    let cases: Vec<(&str, Vec<M>, &str, Option<&str>)> = vec![
        ("traversal", vec![file("ok", b"fine"), file("../outside/victim", b"pwned")], "../outside/victim", None),
        ("absolute", vec![file(&abs_victim, b"pwned")], "an absolute path", None),
        (
            "link-then-file",
            vec![symlink("a", out.to_str().unwrap()), file("a/victim", b"pwned")],
            "a/victim",
            Some("a"),
        ),
        ("link-then-dir", vec![symlink("d", out_dir.to_str().unwrap()), dir("d", 0o777)], "second member", Some("d")),
        (
            "file-then-link",
            vec![file("x", b"pwned"), symlink("x", &abs_victim), file("y", b"")],
            "second member",
            Some("x"),
        ),
        ("hardlink-out", vec![hardlink("h", &abs_victim)], "not a member", Some("h")),
        ("hardlink-up", vec![hardlink("h", "../outside/victim")], "outside the snapshot", Some("h")),
    ];
    for (name, members, says, path) in &cases {
        let id = backup_tar(&r, &s, name, members);
        if let Some(p) = path {
            refused(&r, &s, &["restore", &id, "--path", p, "--to", t], says);
        }
        refused(&r, &s, &["restore", &id, "--to", t], says);
        // Nothing at all was written for a refused snapshot.
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "{name}: the target stays empty");
    }
}

#[test]
fn links_planted_in_the_target_are_replaced_or_refused_never_followed() {
    let s = Scene::new();
    let r = TestRepo::new();
    let target = s.target();
    let t = target.to_str().unwrap();
    let id = backup_tar(&r, &s, "plain", &[file("x", b"new bytes"), dir("sub", 0o755), file("sub/y", b"y")]);
    std::os::unix::fs::symlink(s.outside().join("victim"), target.join("x")).unwrap();
    std::os::unix::fs::symlink(s.outside().join("dir"), target.join("sub")).unwrap();
    refused(&r, &s, &["restore", &id, "--to", t], "sub");
    refused(&r, &s, &["restore", &id, "--path", "sub/y", "--to", t], "sub");
    // Without the planted directory link the restore succeeds, and the
    // file link is replaced by the file, not written through.
    std::fs::remove_file(target.join("sub")).unwrap();
    let before = s.sentinel();
    r.ok(&["restore", &id, "--to", t]);
    assert_eq!(s.sentinel(), before);
    assert!(std::fs::symlink_metadata(target.join("x")).unwrap().is_file());
    assert_eq!(std::fs::read(target.join("x")).unwrap(), b"new bytes");
    assert_eq!(std::fs::read(target.join("sub/y")).unwrap(), b"y");
}

#[test]
fn a_directory_snapshot_with_a_link_named_like_a_temporary_file_cannot_redirect_a_write() {
    let s = Scene::new();
    let r = TestRepo::new();
    let src = s.root.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("x"), b"x's bytes").unwrap();
    std::fs::set_permissions(src.join("x"), std::fs::Permissions::from_mode(0o666)).unwrap();
    // The name cairn used for its temporary files before, and one that
    // sorts ahead of x so it is restored first.
    std::os::unix::fs::symlink(s.outside().join("victim"), src.join(".x.cairn-partial")).unwrap();
    let v = r.json(&["backup", "--kind", "dir", "--source", "d", src.to_str().unwrap()]);
    let id = v["snapshot"].as_str().unwrap();
    let target = s.target();
    let before = s.sentinel();
    r.ok(&["restore", id, "--to", target.to_str().unwrap()]);
    assert_eq!(s.sentinel(), before, "the victim outside kept its bytes and mode");
    assert_eq!(std::fs::read(target.join("x")).unwrap(), b"x's bytes");
    assert_eq!(std::fs::metadata(target.join("x")).unwrap().mode() & 0o777, 0o666);
    assert!(std::fs::symlink_metadata(target.join(".x.cairn-partial")).unwrap().file_type().is_symlink());
    let left: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial") && n.starts_with(".cairn-"))
        .collect();
    assert!(left.is_empty(), "no temporary file left: {left:?}");
}

#[test]
fn tar_snapshots_lose_setuid_bits_and_device_nodes_unless_asked() {
    let s = Scene::new();
    let r = TestRepo::new();
    let mut suid = file("suid", b"#!/bin/sh\n");
    suid.mode = 0o4755;
    suid.uid = 0;
    let mut sgid_dir = dir("shared", 0o2775);
    sgid_dir.uid = 0;
    let dev = M { name: "null", kind: b'3', mode: 0o666, uid: 0, body: b"", link: "" };
    let escape = file("evil\x1b[2Jname", b"e");
    let id = backup_tar(&r, &s, "suid", &[suid, sgid_dir, dev, escape]);
    let target = s.target();
    let t = target.to_str().unwrap();
    let v = r.json(&["restore", &id, "--to", t]);
    assert_eq!(std::fs::metadata(target.join("suid")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::metadata(target.join("shared")).unwrap().mode() & 0o7777, 0o775);
    assert!(std::fs::symlink_metadata(target.join("null")).is_err(), "no device node is made");
    let skipped = v["summary"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{v}");
    assert_eq!(skipped[0]["path"], "null");
    // Restored as given only when asked.
    let again = s.root.join("again");
    std::fs::create_dir(&again).unwrap();
    r.ok(&["restore", &id, "--to", again.to_str().unwrap(), "--same-permissions"]);
    assert_eq!(std::fs::metadata(again.join("suid")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::metadata(again.join("shared")).unwrap().mode() & 0o7777, 0o2775);
    // ls shows the hostile name escaped, never the raw escape sequence.
    let ls = String::from_utf8(r.ok(&["ls", &id])).unwrap();
    assert!(!ls.contains('\x1b'), "{ls:?}");
    assert!(ls.contains("evil\\u{1b}[2Jname"), "{ls}");
}

/// A directory snapshot forged with the repository's key (an attacker who
/// holds it, or a bug upstream): entries renamed to climb out, made
/// absolute, doubled, or hard-linked to a path outside. Every restore mode
/// refuses it whole; nothing outside changes.
#[test]
fn forged_directory_snapshots_are_refused() {
    use cairn_engine::store::{Location, Store};
    use cairn_engine::{Repository, Secret, Snapshot, SnapshotId};
    let s = Scene::new();
    let r = TestRepo::new();
    let src = s.root.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"payload").unwrap();
    let v = r.json(&["backup", "--kind", "dir", "--source", "d", src.to_str().unwrap()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let forge = |rename: &dyn Fn(&mut Vec<cairn_engine::Entry>)| -> String {
        rt.block_on(async {
            let store = Store::open(&Location::parse(&r.url).unwrap(), false).unwrap();
            let repo = Repository::open(store, &Secret::from_key_file(&r.key).unwrap()).await.unwrap();
            let id = SnapshotId::from_hex(v["snapshot"].as_str().unwrap()).unwrap();
            let mut snap = Snapshot::load(&repo, &id).await.unwrap();
            rename(&mut snap.entries);
            snap.save(&repo).await.unwrap().to_hex()
        })
    };
    let victim = s.outside().join("victim").display().to_string();
    type Forgery = Box<dyn Fn(&mut Vec<cairn_engine::Entry>)>;
    let cases: Vec<(&str, Forgery)> = vec![
        (
            "../outside/victim",
            Box::new(|e| e.iter_mut().filter(|e| e.name == "d/f").for_each(|e| e.name = "../outside/victim".into())),
        ),
        (
            "an absolute path",
            Box::new(move |e| e.iter_mut().filter(|e| e.name == "d/f").for_each(|e| e.name = victim.clone())),
        ),
        (
            "second member",
            Box::new(|e| {
                let dup = e.iter().find(|e| e.name == "d/f").unwrap().clone();
                e.push(dup);
            }),
        ),
    ];
    let target = s.target();
    let t = target.to_str().unwrap();
    for (says, how) in cases {
        let id = forge(&*how);
        refused(&r, &s, &["restore", &id, "--to", t], says);
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "{says}: the target stays empty");
    }
}
