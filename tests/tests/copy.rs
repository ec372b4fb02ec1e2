//! `cairn copy` (issue #21, items 1 and 2): into a repository made with
//! `init --copy-from`, packs move byte for byte; a second run copies
//! nothing; a local primary's snapshots and WAL copied to S3 (moto) restore
//! from the secondary alone (a PITR too, and again through `fallback` with
//! --repo naming the deleted primary, whose `pg restore --dry-run` names
//! the secondary for every part); SIGKILL at random points leaves a target that
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
pub(crate) fn config_for(repo: &TestRepo, at: &Path) -> PathBuf {
    let path = at.join(format!("repo-{}.toml", rand::random::<u32>()));
    let cache = repo.cache.to_str().unwrap();
    std::fs::write(&path, format!("repo = {:?}\nkey_file = {:?}\ncache_dir = {cache:?}\n", repo.url, repo.key))
        .unwrap();
    path
}

/// A repository at `url` made copy-compatible with `source`.
pub(crate) fn copy_of(source: &TestRepo, url: Option<String>, env: Vec<(&'static str, String)>) -> TestRepo {
    copy_of_in(tempfile::tempdir().unwrap(), source, url, env)
}

/// The same, with its key and cache in `dir`.
pub(crate) fn copy_of_in(
    dir: tempfile::TempDir,
    source: &TestRepo,
    url: Option<String>,
    env: Vec<(&'static str, String)>,
) -> TestRepo {
    let url = url.unwrap_or_else(|| dir.path().join("repo").to_string_lossy().into_owned());
    let r = TestRepo::at(dir, url, env);
    let cfg = config_for(source, r.dir.path());
    let v = r.json(&["init", "--copy-from-config", cfg.to_str().unwrap()]);
    assert!(v["copy_of"].is_string(), "{v}");
    r
}

/// `cairn copy` from `src` to `dst` (with `dst`'s environment, for S3).
pub(crate) fn copy_cmd(src: &TestRepo, dst: &TestRepo, extra: &[&str]) -> Command {
    let cfg = config_for(dst, src.dir.path());
    let mut args = vec!["--json", "copy", "--to-config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut c = src.cmd(&args);
    for (k, v) in &dst.env {
        c.env(k, v);
    }
    c
}

pub(crate) fn copy(src: &TestRepo, dst: &TestRepo, extra: &[&str]) -> serde_json::Value {
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
pub(crate) fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()))
        .collect()
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
    let metrics = dst.dir.path().join("copy.prom");
    let all = copy(&src, &dst, &["--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!((all["snapshots"].as_u64(), all["snapshots_present"].as_u64()), (Some(1), Some(1)), "{all}");
    // The copy job's metrics hold what it reported.
    let m = std::fs::read_to_string(&metrics).unwrap();
    crate::operator::promtool_check("copy metrics", &m);
    let objects = all["packs"].as_u64().unwrap() + all["snapshots"].as_u64().unwrap();
    assert!(m.contains(&format!("cairn_job_objects{{job=\"copy\",source=\"\"}} {objects}\n")), "{m}");
    assert!(m.contains("cairn_job_success{job=\"copy\",source=\"\"} 1\n"), "{m}");

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
    let latest_a =
        &src.snapshots().iter().find(|s| s["source"]["name"] == "a").unwrap()["id"].as_str().unwrap().to_string();
    assert!(dst.restore_bytes(&latest_a[..12]) == a);

    // Credentials never on the command line: a bare location is refused.
    let o = src.run(&["copy", "--to", &TestRepo::new().url]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no credentials"));
}

/// A source worth killing a copy of: 36 MiB in 1 MiB packs, four snapshots.
fn kill_source() -> TestRepo {
    let src = TestRepo::with_args(&["--pack-size-mib", "1"]);
    for i in 0..4 {
        let mut data = random(6 << 20, 100 + i);
        data.extend(text(3 << 20, 100 + i));
        src.backup_bytes(&data, &["--source", &format!("s{i}")]);
    }
    src
}

/// Kills `cairn copy` into fresh targets at random points until `wanted`
/// kills landed; after each, the target must check clean and a re-run must
/// copy exactly the packs that were not there yet. Returns the problems
/// seen (stopping at the first when `stop_at_first`).
fn kill_loop(src: &TestRepo, wanted: usize, unsafe_order: bool, stop_at_first: bool) -> Vec<String> {
    let t = Instant::now();
    let probe = copy_of(src, None, Vec::new());
    let full = copy(src, &probe, &["--transfers", "2"]);
    let full_ms = t.elapsed().as_millis() as u64;
    let all_packs = packs_of(&probe);
    let n_snaps = full["snapshots"].as_u64().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261203 + u64::from(unsafe_order));
    let (mut kills, mut attempts, mut problems) = (0, 0, Vec::new());
    // Kills that left none, some, or all of the packs in the target.
    let mut phases = [0u32; 3];
    while kills < wanted {
        attempts += 1;
        assert!(attempts < wanted * 4, "could not land {wanted} kills mid-copy in {attempts} attempts");
        let dst = copy_of(src, None, Vec::new());
        let mut cmd = copy_cmd(src, &dst, &["--transfers", "2"]);
        if unsafe_order {
            cmd.env("CAIRN_TEST_UNSAFE_COPY_ORDER", "1");
        }
        let delay = Duration::from_millis(rng.gen_range(1..full_ms.max(3)));
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        while started.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_some() {
            continue;
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        kills += 1;
        let check = dst.run(&["check"]);
        if !check.status.success() {
            problems.push(format!(
                "kill {kills} at {delay:?}: target does not check clean: {}",
                String::from_utf8_lossy(&check.stdout)
            ));
            if stop_at_first {
                return problems;
            }
        }
        let before = packs_of(&dst);
        phases[usize::from(!before.is_empty()) + usize::from(before.len() == all_packs.len())] += 1;
        let rerun = copy(src, &dst, &[]);
        let copied = rerun["packs"].as_u64().unwrap();
        let missing = all_packs.keys().filter(|p| !before.contains_key(*p)).count() as u64;
        if copied != missing {
            problems.push(format!("kill {kills}: the re-run copied {copied} packs, {missing} were missing"));
        }
        if rerun["snapshots"].as_u64().unwrap() + rerun["snapshots_present"].as_u64().unwrap() != n_snaps {
            problems.push(format!("kill {kills}: re-run {rerun}"));
        }
        if packs_of(&dst) != all_packs || ids(&dst) != ids(src) {
            problems.push(format!("kill {kills}: after the re-run the target differs from a full copy"));
        }
        let again = copy(src, &dst, &[]);
        if again["packs"] != 0 || again["snapshots"] != 0 || again["index_segments"] != 0 {
            problems.push(format!("kill {kills}: a third run still copied: {again}"));
        }
        let check = dst.run(&["check"]);
        if !check.status.success() {
            problems.push(format!("kill {kills}: after the re-run: {}", String::from_utf8_lossy(&check.stdout)));
        }
    }
    eprintln!(
        "{kills} kills in {attempts} attempts (uninterrupted copy: {full_ms} ms); they left no packs {}, some {}, \
         all {} times",
        phases[0], phases[1], phases[2]
    );
    if phases[1] < 3 {
        problems.push(format!("only {} kills landed while packs were being copied", phases[1]));
    }
    problems
}

#[test]
fn sigkill_during_copy_at_random_points() {
    let src = kill_source();
    let problems = kill_loop(&src, 20, false, false);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The kill test can fail: with manifests written before their packs
/// (a test-only switch), a kill leaves a target that does not check clean.
#[test]
fn sigkill_catches_manifests_written_before_their_packs() {
    let src = kill_source();
    let problems = kill_loop(&src, 20, true, true);
    assert!(!problems.is_empty(), "20 kills with the unsafe order went unnoticed");
    eprintln!("caught, as it must be: {}", problems[0]);
}

/// Restores every snapshot of `r` under `out/<id>` and fetches every WAL
/// file named in `wal` under `out/wal/`.
fn restore_all(r: &TestRepo, out: &Path, wal: &[String]) {
    for id in ids(r) {
        let to = out.join(&id);
        let o = r.run(&["restore", &id, "--to", to.to_str().unwrap()]);
        assert!(o.status.success(), "restore {id}: {}", String::from_utf8_lossy(&o.stderr));
    }
    std::fs::create_dir_all(out.join("wal")).unwrap();
    for name in wal {
        let to = out.join("wal").join(name);
        let o = r.run(&["wal", "fetch", "--stanza", "main", name, to.to_str().unwrap()]);
        assert!(o.status.success(), "wal fetch {name}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn local_primary_copied_to_s3_restores_from_the_secondary_alone() {
    use cairn_tests::pg::Cluster;
    let a = crate::wal::Archive::new(None);
    let mut pg = Cluster::init(a.root(), "src", 16, &a.conf(false));
    pg.start(&[]);
    pg.pgbench(&["-i", "-s", "2", "-q"]);
    crate::pitr::basebackup(&a, &pg);
    pg.sql("CREATE TABLE copied AS SELECT generate_series(1, 1000) AS i");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(120));
    drop(pg);

    let stream = random(3 << 20, 7);
    a.repo.backup_bytes(&stream, &["--source", "stream"]);
    let files = a.root().join("files");
    for i in 0..20u64 {
        let d = files.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), text(50_000 + i as usize * 1000, i)).unwrap();
    }
    a.repo.json(&["backup", "--kind", "dir", "--source", "dir", files.to_str().unwrap()]);
    let tarball = a.root().join("files.tar");
    let st = Command::new("tar").arg("-cf").arg(&tarball).arg("-C").arg(&files).arg(".").status().unwrap();
    assert!(st.success());
    a.repo.json(&["backup", "--kind", "tar", "--source", "tar", tarball.to_str().unwrap()]);
    let redis = cairn_tests::redis::RedisServer::start(&[]);
    assert_eq!(redis.cli(&["DEBUG", "POPULATE", "20000"]).trim(), "OK");
    let rdb = redis.save();
    let dump = redis.dir.path().join("dump.rdb");
    a.repo.json(&["backup", "--kind", "redis-rdb", "--source", "redis", dump.to_str().unwrap()]);
    let kinds: Vec<String> =
        a.repo.snapshots().iter().map(|s| s["source"]["kind"].as_str().unwrap().to_string()).collect();
    for k in ["pg-base", "stream", "dir", "tar", "redis-rdb"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} snapshot: {kinds:?}");
    }
    let wal = crate::wal::manifest_names(&a, "main");
    assert!(wal.len() >= 3, "{wal:?}");

    let moto = Moto::start();
    let bucket = format!("copy{}", rand::random::<u32>());
    moto.create_bucket(&bucket);
    // In a directory PostgreSQL's user can read: the PITR below fetches
    // WAL from this repository.
    let dst = copy_of_in(cairn_tests::pg::shared_dir(), &a.repo, Some(format!("s3://{bucket}/cairn")), moto.env());
    let t = Instant::now();
    let first = copy(&a.repo, &dst, &["--wal"]);
    eprintln!("local -> S3 copy: {first} in {:?}", t.elapsed());
    assert_eq!(first["snapshots"], 5, "{first}");
    assert_eq!(first["wal_manifests"].as_u64().unwrap(), wal.len() as u64, "{first}");
    assert_eq!(first["stanzas"], 1, "{first}");
    let again = copy(&a.repo, &dst, &["--wal"]);
    for k in ["packs", "snapshots", "wal_manifests", "stanzas", "index_segments"] {
        assert_eq!(again[k], 0, "second copy, {k}: {again}");
    }
    assert_eq!(again["wal_present"].as_u64().unwrap(), wal.len() as u64);

    let from_primary = a.root().join("from-primary");
    restore_all(&a.repo, &from_primary, &wal);
    // A target that is not copy-compatible gets the same, re-sealed.
    let other = TestRepo::new();
    let r = copy(&a.repo, &other, &["--wal"]);
    assert_eq!((r["resealed"].as_bool(), r["snapshots"].as_u64()), (Some(true), Some(5)), "{r}");
    assert_eq!(r["wal_manifests"].as_u64().unwrap(), wal.len() as u64, "{r}");
    let again = copy(&a.repo, &other, &["--wal"]);
    for k in ["packs", "snapshots", "wal_manifests", "stanzas"] {
        assert_eq!(again[k], 0, "second re-sealing copy, {k}: {again}");
    }
    let resealed = a.root().join("resealed");
    for snap in other.snapshots() {
        let (id, from) = (snap["id"].as_str().unwrap(), snap["copied_from"].as_str().unwrap());
        let to = resealed.join(from);
        other.ok(&["restore", id, "--to", to.to_str().unwrap()]);
        assert!(tree(&to) == tree(&from_primary.join(from)), "re-sealed snapshot {from} restores differently");
    }
    for name in &wal {
        let to = resealed.join(name);
        other.ok(&["wal", "fetch", "--stanza", "main", name, to.to_str().unwrap()]);
        assert!(std::fs::read(&to).unwrap() == std::fs::read(from_primary.join("wal").join(name)).unwrap());
    }
    assert!(other.run(&["check", "--read-data"]).status.success());

    // Restore from either (item 4): the dry-run plan says where each part is.
    let cfg = crate::fallback::fallback_config(&dst, &a.root().join("fallback-conf"));
    let pitr_dry = |what: &str| {
        let to = a.root().join("dry-run-target");
        let args =
            ["--json", "pg", "restore", "--stanza", "main", "--to", to.to_str().unwrap(), "--latest", "--dry-run"];
        let o = crate::fallback::with_fallback(&a.repo, &dst, &cfg, &args);
        assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["sources"].clone()
    };
    let both = pitr_dry("dry run, both repositories");
    assert_eq!(both["base_backup"], serde_json::json!([a.repo.url, dst.url]), "{both}");
    assert_eq!(both["last_wal"], serde_json::json!([a.repo.url, dst.url]), "{both}");

    std::fs::remove_dir_all(a.repo.repo_dir()).unwrap();
    assert!(!a.repo.run(&["snapshots"]).status.success(), "the primary is gone");
    let secondary_only = pitr_dry("dry run, primary deleted");
    for part in ["base_backup", "first_wal", "last_wal"] {
        assert_eq!(secondary_only[part], serde_json::json!([dst.url]), "{part}: {secondary_only}");
    }

    let from_secondary = dst.dir.path().join("from-secondary");
    restore_all(&dst, &from_secondary, &wal);
    let (p, s) = (tree(&from_primary), tree(&from_secondary));
    assert!(p.len() > wal.len() + 20, "{} files restored", p.len());
    assert_eq!(p.keys().collect::<Vec<_>>(), s.keys().collect::<Vec<_>>());
    for (path, bytes) in &p {
        assert!(s[path] == *bytes, "{} differs between primary and secondary", path.display());
    }
    let stream_id = dst.snapshots().into_iter().find(|s| s["source"]["name"] == "stream").unwrap();
    assert!(dst.restore_bytes(&stream_id["id"].as_str().unwrap()[..12]) == stream);
    let redis_id = dst.snapshots().into_iter().find(|s| s["source"]["name"] == "redis").unwrap();
    assert!(dst.restore_bytes(&redis_id["id"].as_str().unwrap()[..12]) == rdb, "the RDB restores byte-identical");
    // And through the fallback, --repo naming the deleted primary.
    let rdb_out = a.root().join("fallback-dump.rdb");
    let args = ["redis", "restore", &redis_id["id"].as_str().unwrap()[..12], "--to", rdb_out.to_str().unwrap()];
    let o = crate::fallback::with_fallback(&a.repo, &dst, &cfg, &args);
    assert!(o.status.success(), "redis restore through the fallback: {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&rdb_out).unwrap() == rdb, "the RDB restores byte-identical through the fallback");
    let dir_id = dst.snapshots().into_iter().find(|s| s["source"]["name"] == "dir").unwrap();
    assert!(tree(&from_secondary.join(dir_id["id"].as_str().unwrap())) == tree(&files));
    // The secondary's WAL readers see the copied manifests: same files, no gaps.
    let show = dst.json(&["wal", "show", "--stanza", "main"]);
    assert_eq!(show[0]["files"].as_u64().unwrap(), wal.len() as u64, "{show}");
    assert_eq!(show[0]["timelines"][0]["gaps"], serde_json::json!([]), "{show}");
    let check = dst.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // A point-in-time restore from the secondary alone, replayed by
    // PostgreSQL 15 with its restore_command fetching from S3.
    let pgdata = dst.dir.path().join("pitr");
    let bin = a.root().join("cairn");
    let fetch =
        format!("{} --repo {} --key-file {} wal fetch --stanza main %f %p", bin.display(), dst.url, dst.key.display());
    let v = dst.json(&[
        "pg",
        "restore",
        "--stanza",
        "main",
        "--latest",
        "--restore-command",
        &fetch,
        "--to",
        pgdata.to_str().unwrap(),
    ]);
    assert!(v["verified"].as_u64().unwrap() > 100, "{v}");
    cairn_tests::pg::chown_to_user(dst.dir.path());
    let mut c = Cluster::from_copy(pgdata, dst.dir.path(), "archive_mode = off\n");
    let env: Vec<(&str, String)> = moto.env();
    c.start(&env);
    c.wait_until_promoted(Duration::from_secs(120));
    assert_eq!(c.sql("SELECT count(*), sum(i) FROM copied").trim(), "1000|500500");

    // The same PITR through the fallback (item 4): --repo and the
    // restore_command name the deleted primary, `fallback` the secondary.
    let pitr_cfg = a.root().join("fallback-conf").join("pitr.toml");
    let fallback_part = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&pitr_cfg, format!("repo = {:?}\nkey_file = {:?}\n{fallback_part}", a.repo.url, a.repo.key))
        .unwrap();
    let pgdata = dst.dir.path().join("pitr-fallback");
    let fetch = format!("{} --config {} wal fetch --stanza main %f %p", bin.display(), pitr_cfg.display());
    let args = ["--json", "pg", "restore", "--stanza", "main", "--latest", "--restore-command", &fetch, "--to"];
    let o =
        crate::fallback::with_fallback(&a.repo, &dst, &pitr_cfg, &[&args[..], &[pgdata.to_str().unwrap()]].concat());
    assert!(o.status.success(), "pg restore through the fallback: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["repositories"]["served"][0]["location"], serde_json::json!(dst.url), "{v}");
    cairn_tests::pg::chown_to_user(dst.dir.path());
    cairn_tests::pg::chown_to_user(a.root());
    let mut c = Cluster::from_copy(pgdata, dst.dir.path(), "archive_mode = off\n");
    c.start(&env);
    c.wait_until_promoted(Duration::from_secs(120));
    assert_eq!(c.sql("SELECT count(*), sum(i) FROM copied").trim(), "1000|500500", "PITR through the fallback");
}

#[test]
fn incompatible_copy_reseals_and_restores_identically() {
    let src = TestRepo::with_args(&["--pack-size-mib", "1"]);
    let a = random(3 << 20, 11);
    let mut b = a[..1 << 20].to_vec();
    b.extend(text(2 << 20, 12));
    src.backup_bytes(&a, &["--source", "a"]);
    src.backup_bytes(&b, &["--source", "b"]);
    let files = src.dir.path().join("files");
    for i in 0..10u64 {
        std::fs::create_dir_all(files.join(format!("d{}", i % 3))).unwrap();
        std::fs::write(files.join(format!("d{}/f{i}", i % 3)), text(30_000 + i as usize, i)).unwrap();
    }
    src.json(&["backup", "--kind", "dir", "--source", "dir", files.to_str().unwrap()]);
    let dst = TestRepo::new();
    let dry = copy(&src, &dst, &["--dry-run"]);
    assert_eq!((dry["resealed"].as_bool(), dry["snapshots"].as_u64()), (Some(true), Some(3)), "{dry}");
    let first = copy(&src, &dst, &[]);
    assert_eq!((first["resealed"].as_bool(), first["snapshots"].as_u64()), (Some(true), Some(3)), "{first}");
    // Re-sealed: no pack is shared, snapshot ids differ.
    let (sp, dp) = (packs_of(&src), packs_of(&dst));
    assert!(dp.keys().all(|p| !sp.contains_key(p)), "a pack was copied as is into an incompatible repository");
    let again = copy(&src, &dst, &[]);
    assert_eq!((again["packs"].as_u64(), again["snapshots"].as_u64()), (Some(0), Some(0)), "{again}");
    assert_eq!(again["snapshots_present"], 3, "{again}");
    let snaps = dst.snapshots();
    let by = |n: &str| snaps.iter().find(|s| s["source"]["name"] == n).unwrap()["id"].as_str().unwrap().to_string();
    assert!(dst.restore_bytes(&by("a")[..12]) == a);
    assert!(dst.restore_bytes(&by("b")[..12]) == b);
    let out = dst.dir.path().join("out");
    dst.ok(&["restore", &by("dir"), "--to", out.to_str().unwrap()]);
    assert!(tree(&out) == tree(&files), "the directory snapshot restores identically");
    let check = dst.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
