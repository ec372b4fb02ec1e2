//! Restore from either repository (issue #21, item 4): a local primary and
//! its copy on S3 (moto), named by `fallback = ["second"]` in --config.
//! With the primary's directory deleted, restores come from the secondary;
//! with the secondary's server stopped, from the primary; with one pack of
//! the primary overwritten, that pack's blobs come from the secondary and
//! the bad copy is named; `wal fetch` finds a file only the secondary
//! holds, and takes a file whose pack is corrupt in the primary from the
//! secondary. The PostgreSQL PITR through the fallback, and `pg restore
//! --dry-run` naming each part's repositories, are in `copy.rs`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_tests::data::random;
use cairn_tests::moto::Moto;
use cairn_tests::TestRepo;

use crate::copy::{copy, copy_of, copy_of_in, tree};

/// A config file naming `second` as the fallback of whatever --repo is.
pub(crate) fn fallback_config(second: &TestRepo, at: &Path) -> PathBuf {
    std::fs::create_dir_all(at).unwrap();
    let path = at.join("fallback.toml");
    std::fs::write(
        &path,
        format!(
            "fallback = [\"second\"]\n[repos.second]\nrepo = {:?}\nkey_file = {:?}\ncache_dir = {:?}\n",
            second.url,
            second.key,
            second.cache.to_str().unwrap()
        ),
    )
    .unwrap();
    path
}

/// A local primary with a stream and a directory snapshot, copied to a
/// fresh bucket of `moto`. Returns (primary, secondary, stream data, dir).
fn primary_and_copy(moto: &Moto) -> (TestRepo, TestRepo, Vec<u8>, PathBuf) {
    let p = TestRepo::with_args(&["--pack-size-mib", "1"]);
    let data = random(3 << 20, 21);
    p.backup_bytes(&data, &["--source", "stream"]);
    let files = p.dir.path().join("files");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    std::fs::write(files.join("a.bin"), random(300_000, 22)).unwrap();
    std::fs::write(files.join("sub/b.txt"), b"hello from a directory snapshot\n").unwrap();
    p.json(&["backup", "--kind", "dir", "--source", "dir", files.to_str().unwrap()]);
    let bucket = format!("fallback{}", rand::random::<u32>());
    moto.create_bucket(&bucket);
    let s = copy_of(&p, Some(format!("s3://{bucket}/cairn")), moto.env());
    let r = copy(&p, &s, &["--wal"]);
    assert_eq!(r["snapshots"], 2, "{r}");
    (p, s, data, files)
}

fn snapshot_of(r: &TestRepo, source: &str) -> String {
    let all = r.json(&["snapshots"]);
    let s = all.as_array().unwrap().iter().find(|s| s["source"]["name"] == source).unwrap();
    s["id"].as_str().unwrap()[..12].to_string()
}

/// `cairn` on the primary's --repo with the fallback config and the
/// secondary's S3 environment.
pub(crate) fn with_fallback(p: &TestRepo, s: &TestRepo, cfg: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut c = p.cmd(&all);
    for (k, v) in &s.env {
        c.env(k, v);
    }
    c.stdin(std::process::Stdio::null()).output().unwrap()
}

fn ok(o: &std::process::Output, what: &str) -> serde_json::Value {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn primary_directory_deleted_restores_from_the_secondary() {
    let t = Instant::now();
    let moto = Moto::start();
    let (p, s, data, files) = primary_and_copy(&moto);
    let (stream, dir) = (snapshot_of(&p, "stream"), snapshot_of(&p, "dir"));
    let cfg = fallback_config(&s, p.dir.path());
    std::fs::remove_dir_all(p.repo_dir()).unwrap();

    let out = p.dir.path().join("stream.out");
    let o = with_fallback(&p, &s, &cfg, &["--json", "restore", &stream, "--to", out.to_str().unwrap()]);
    ok(&o, "restore stream");
    assert!(std::fs::read(&out).unwrap() == data, "stream restored from the secondary differs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("restoring from s3://") && err.contains("unavailable"), "{err}");

    let to = p.dir.path().join("dir.out");
    ok(&with_fallback(&p, &s, &cfg, &["restore", &dir, "--to", to.to_str().unwrap()]), "restore dir");
    assert_eq!(tree(&to), tree(&files), "directory restored differs");

    // Without the fallback the same restore fails: the secondary did the work.
    let o = p.run(&["restore", &stream, "--to", p.dir.path().join("x").to_str().unwrap()]);
    assert!(!o.status.success());
    eprintln!("primary deleted: {:?}", t.elapsed());
}

#[test]
fn secondary_stopped_restores_from_the_primary() {
    let t = Instant::now();
    let moto = Moto::start();
    let (p, s, data, _) = primary_and_copy(&moto);
    let stream = snapshot_of(&p, "stream");
    let cfg = fallback_config(&s, p.dir.path());
    drop(moto);
    let out = p.dir.path().join("stream.out");
    let o = with_fallback(&p, &s, &cfg, &["--json", "restore", &stream, "--to", out.to_str().unwrap()]);
    ok(&o, "restore with the secondary stopped");
    assert!(std::fs::read(&out).unwrap() == data);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unavailable") && err.contains("s3://"), "the stopped secondary is not named: {err}");
    eprintln!("secondary stopped: {:?}", t.elapsed());
}

#[test]
fn a_corrupt_pack_in_the_primary_is_read_from_the_secondary_and_reported() {
    let t = Instant::now();
    let moto = Moto::start();
    let (p, s, data, _) = primary_and_copy(&moto);
    let stream = snapshot_of(&p, "stream");
    let cfg = fallback_config(&s, p.dir.path());
    // The largest pack holds stream data: garbage of the same length.
    let pack = p.objects("packs").into_iter().max_by_key(|f| std::fs::metadata(f).unwrap().len()).unwrap();
    let len = std::fs::metadata(&pack).unwrap().len() as usize;
    std::fs::write(&pack, random(len, 23)).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();

    // Without the fallback the restore fails on that pack.
    let out = p.dir.path().join("stream.out");
    let o = p.run(&["restore", &stream, "--to", out.to_str().unwrap()]);
    assert!(!o.status.success(), "a corrupt pack restored without a second copy");
    assert!(String::from_utf8_lossy(&o.stderr).contains(&name));

    let o = with_fallback(&p, &s, &cfg, &["--json", "restore", &stream, "--to", out.to_str().unwrap()]);
    let v = ok(&o, "restore with a corrupt pack");
    assert!(std::fs::read(&out).unwrap() == data, "restored bytes differ");
    let bad = v["repositories"]["corrupt_copies"].as_array().unwrap();
    assert!(!bad.is_empty(), "{v}");
    assert!(bad.iter().all(|c| c["object"].as_str().unwrap().ends_with(&name)), "{v}");
    assert_eq!(bad[0]["location"].as_str().unwrap(), p.url, "{v}");
    let served = v["repositories"]["served"].as_array().unwrap();
    assert!(served[1]["bytes"].as_u64().unwrap() > 0, "nothing read from the secondary: {v}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("corrupt copy") && err.contains(&name), "the corruption is not reported: {err}");
    eprintln!("corrupt pack: {:?}", t.elapsed());
}

#[test]
fn wal_fetch_finds_a_file_only_the_secondary_holds() {
    let t = Instant::now();
    let a = crate::wal::Archive::new(None);
    let seg = crate::wal::first_segment(a.root(), "one");
    let out = crate::wal::wal(&a, &["push", "--stanza", "main", seg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let moto = Moto::start();
    let bucket = format!("fallbackwal{}", rand::random::<u32>());
    moto.create_bucket(&bucket);
    let s = copy_of_in(tempfile::tempdir().unwrap(), &a.repo, Some(format!("s3://{bucket}/cairn")), moto.env());
    copy(&a.repo, &s, &["--wal"]);
    let name = "000000010000000000000001";
    let manifest = a.repo.repo_dir().join("wal/main/00000001").join(name);
    std::fs::remove_file(&manifest).unwrap();
    let cfg = fallback_config(&s, &a.root().join("fallback-conf"));
    let to = a.root().join("fetched");
    let o = a.repo.run(&["wal", "fetch", "--stanza", "main", name, to.to_str().unwrap()]);
    assert!(!o.status.success(), "the primary alone still had the file");
    let o =
        with_fallback(&a.repo, &s, &cfg, &["--json", "wal", "fetch", "--stanza", "main", name, to.to_str().unwrap()]);
    let v = ok(&o, "wal fetch through the fallback");
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(crate::wal::b3(&to), crate::wal::b3(&seg));
    eprintln!("wal fetch: {:?}", t.elapsed());
}

#[test]
fn wal_fetch_reads_a_corrupt_pack_from_the_secondary_and_reports_it() {
    let t = Instant::now();
    let a = crate::wal::Archive::new(None);
    let seg = crate::wal::first_segment(a.root(), "one");
    let out = crate::wal::wal(&a, &["push", "--stanza", "main", seg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let moto = Moto::start();
    let bucket = format!("fallbackwal{}", rand::random::<u32>());
    moto.create_bucket(&bucket);
    let s = copy_of_in(tempfile::tempdir().unwrap(), &a.repo, Some(format!("s3://{bucket}/cairn")), moto.env());
    copy(&a.repo, &s, &["--wal"]);
    // Every pack of the primary (the segment's) overwritten, same length.
    let packs = a.repo.objects("packs");
    assert!(!packs.is_empty());
    for p in &packs {
        let len = std::fs::metadata(p).unwrap().len() as usize;
        std::fs::write(p, random(len, 24)).unwrap();
    }
    let name = "000000010000000000000001";
    let to = a.root().join("fetched");
    let o = a.repo.run(&["wal", "fetch", "--stanza", "main", name, to.to_str().unwrap()]);
    assert!(!o.status.success() && !to.exists(), "a corrupt segment was delivered without a second copy");
    let cfg = fallback_config(&s, &a.root().join("fallback-conf"));
    let o =
        with_fallback(&a.repo, &s, &cfg, &["--json", "wal", "fetch", "--stanza", "main", name, to.to_str().unwrap()]);
    let v = ok(&o, "wal fetch with a corrupt pack");
    assert_eq!(crate::wal::b3(&to), crate::wal::b3(&seg));
    let bad = v["repositories"]["corrupt_copies"].as_array().unwrap();
    assert!(!bad.is_empty() && bad.iter().all(|c| c["location"] == serde_json::json!(a.repo.url)), "{v}");
    assert!(bad[0]["object"].as_str().unwrap().starts_with("packs/"), "{v}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("corrupt copy"));
    eprintln!("wal fetch, corrupt pack: {:?}", t.elapsed());
}
