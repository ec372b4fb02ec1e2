//! `cairn copy` (issue #21, items 1 and 2): into a repository made with
//! `init --copy-from`, packs move byte for byte; a second run copies
//! nothing; a local primary's snapshots and WAL copied to S3 (moto) restore
//! from the secondary alone; SIGKILL at random points leaves a target that
//! checks clean, and the re-run copies only what is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::data::{random, text};
use cairn_tests::moto::Moto;
use cairn_tests::repo::files_under;
use cairn_tests::TestRepo;
use rand::{Rng, SeedableRng};

/// A config file naming `repo` and its key, for `--to-config` and
/// `--copy-from-config`.
fn config_for(repo: &TestRepo, at: &Path) -> PathBuf {
    let path = at.join(format!("repo-{}.toml", rand::random::<u32>()));
    let cache = repo.cache.to_str().unwrap();
    std::fs::write(&path, format!("repo = {:?}\nkey_file = {:?}\ncache_dir = {cache:?}\n", repo.url, repo.key)).unwrap();
    path
}

/// A repository at `url` made copy-compatible with `source`.
fn copy_of(source: &TestRepo, url: Option<String>, env: Vec<(&'static str, String)>) -> TestRepo {
    let dir = tempfile::tempdir().unwrap();
    let url = url.unwrap_or_else(|| dir.path().join("repo").to_string_lossy().into_owned());
    let r = TestRepo::at(dir, url, env);
    let cfg = config_for(source, r.dir.path());
    let v = r.json(&["init", "--copy-from-config", cfg.to_str().unwrap()]);
    assert!(v["copy_of"].is_string(), "{v}");
    r
}

/// `cairn copy` from `src` to `dst` (with `dst`'s environment, for S3).
fn copy_cmd(src: &TestRepo, dst: &TestRepo, extra: &[&str]) -> Command {
    let cfg = config_for(dst, src.dir.path());
    let mut args = vec!["--json", "copy", "--to-config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut c = src.cmd(&args);
    for (k, v) in &dst.env {
        c.env(k, v);
    }
    c
}

fn copy(src: &TestRepo, dst: &TestRepo, extra: &[&str]) -> serde_json::Value {
    let o = copy_cmd(src, dst, extra).stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "copy {extra:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every pack file of a local repository, by name, with its bytes' BLAKE3.
fn packs_of(r: &TestRepo) -> BTreeMap<String, String> {
    r.objects("packs")
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, blake3::hash(&std::fs::read(p).unwrap()).to_hex().to_string())
        })
        .collect()
}

/// Every file under `dir` (relative path → content).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir).into_iter().map(|p| (p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap())).collect()
}

fn ids(r: &TestRepo) -> Vec<String> {
    r.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn compatible_copy_moves_packs_byte_for_byte_and_a_second_run_copies_nothing() {
    let src = TestRepo::with_args(&["--pack-size-mib", "1"]);
    let a = random(3 << 20, 1);
    let b = text(2 << 20, 2);
    src.backup_bytes(&a, &["--source", "a"]);
    src.backup_bytes(&b, &["--source", "b"]);
    let dst = copy_of(&src, None, Vec::new());

    // Only source b first: a dry run says what, and the copy does exactly that.
    let dry = copy(&src, &dst, &["--dry-run", "--source", "b"]);
    assert!(dst.objects("packs").is_empty() && dst.objects("snapshots").is_empty(), "a dry run wrote");
    let first = copy(&src, &dst, &["--source", "b"]);
    assert_eq!(first["snapshots"], 1, "{first}");
    for k in ["snapshots", "packs", "pack_bytes", "index_segments"] {
        assert_eq!(dry[k], first[k], "dry run vs copy, {k}: {dry} / {first}");
    }
    let all = copy(&src, &dst, &[]);
    assert_eq!((all["snapshots"].as_u64(), all["snapshots_present"].as_u64()), (Some(1), Some(1)), "{all}");

    // Byte for byte: every target pack is a source pack, same name, same bytes.
    let (sp, dp) = (packs_of(&src), packs_of(&dst));
    assert!(!dp.is_empty());
    for (name, h) in &dp {
        assert_eq!(sp.get(name), Some(h), "target pack {name} is not a byte copy of the source's");
    }
    assert_eq!(ids(&src), ids(&dst), "snapshots keep their ids");
    let again = copy(&src, &dst, &[]);
    assert_eq!((again["packs"].as_u64(), again["snapshots"].as_u64()), (Some(0), Some(0)), "{again}");
    assert!(dst.run(&["check", "--read-data"]).status.success());
    let latest_a = &src.snapshots().iter().find(|s| s["source"]["name"] == "a").unwrap()["id"].as_str().unwrap().to_string();
    assert!(dst.restore_bytes(&latest_a[..12]) == a);

    // A repository that is not copy-compatible is refused, naming why.
    let other = TestRepo::new();
    let o = copy_cmd(&src, &other, &[]).output().unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("not copy-compatible") && e.contains("--copy-from"), "{e}");
    // Credentials never on the command line: a bare location is refused.
    let o = src.run(&["copy", "--to", &other.url]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no credentials"));
}
