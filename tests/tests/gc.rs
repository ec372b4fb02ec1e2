//! Retention and garbage collection through the real binary: forget with
//! policies, pins and config-file rules; prune reclaiming space; a paused
//! backup fenced out by its lease; SIGKILL at random points of forget and
//! prune.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::data::random;
use cairn_tests::repo::{assert_success, code};
use cairn_tests::TestRepo;

/// A repository whose GC runs with short clocks: packs may be condemned
/// at any age and leases expire after `ttl` seconds.
fn gc_repo(ttl: u64) -> TestRepo {
    TestRepo::with_args(&["--pack-size-mib", "1", "--gc-min-age", "0", "--lease-ttl", &ttl.to_string()])
}

fn snapshot_ids(r: &TestRepo) -> BTreeSet<String> {
    r.snapshots().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn check_clean(r: &TestRepo) -> serde_json::Value {
    let o = r.run(&["--json", "check", "--read-data"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(code(&o), 0, "check found problems: {v}");
    v
}

fn dir_bytes(r: &TestRepo, prefix: &str) -> u64 {
    r.objects(prefix).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

#[test]
fn forget_and_prune_reclaim_what_retention_drops() {
    let r = gc_repo(30);
    let mut kept_data = Vec::new();
    for v in 0..6u64 {
        // Each version keeps half of the previous one and adds new data.
        let mut d = random(1 << 20, 100 + v / 2);
        d.extend(random(1 << 20, 1000 + v));
        let j = r.backup_bytes(&d, &["--source", "model", "--chunk-avg-kib", "64"]);
        kept_data.push((j["snapshot"].as_str().unwrap().to_string(), d));
    }
    let all = snapshot_ids(&r);
    assert_eq!(all.len(), 6);
    // Pin the oldest.
    r.ok(&["pin", &kept_data[0].0[..12]]);

    // A dry run lists decisions and changes nothing at all.
    let before: Vec<_> = cairn_tests::repo::files_under(&r.repo_dir());
    let plan = r.json(&["forget", "--keep-last", "2", "--dry-run"]);
    let rows = plan["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let keep: BTreeSet<&str> = rows.iter().filter(|x| x["keep"] == true).map(|x| x["id"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> = [&kept_data[0].0, &kept_data[4].0, &kept_data[5].0].iter().map(|s| s.as_str()).collect();
    assert_eq!(keep, want, "the two newest and the pinned one");
    let pinned = rows.iter().find(|x| x["id"] == kept_data[0].0.as_str()).unwrap();
    assert_eq!(pinned["reasons"][0], "pinned");
    let dry = r.json(&["prune", "--dry-run"]);
    assert_eq!(dry["condemned_packs"], 0, "nothing is unreferenced yet: {dry}");
    assert_eq!(cairn_tests::repo::files_under(&r.repo_dir()), before, "dry runs write nothing");

    let packs_before = dir_bytes(&r, "packs");
    let f = r.json(&["forget", "--keep-last", "2"]);
    assert_eq!(f["removed"], 3);
    // Idempotent: a second run removes nothing more.
    assert_eq!(r.json(&["forget", "--keep-last", "2"])["removed"], 0);
    let dry = r.json(&["prune", "--dry-run"]);
    let condemn = dry["condemned_packs"].as_u64().unwrap();
    assert!(condemn > 0, "{dry}");
    let p = r.json(&["prune"]);
    assert_eq!(p["condemned_packs"].as_u64().unwrap(), condemn, "the dry run told the truth: {p}");
    assert_eq!(p["swept"][0]["deleted_packs"].as_u64().unwrap(), condemn, "{p}");
    let packs_after = dir_bytes(&r, "packs");
    assert!(packs_after < packs_before, "{packs_after} < {packs_before}");
    assert_eq!(packs_before - packs_after, p["swept"][0]["deleted_bytes"].as_u64().unwrap());

    // What retention kept restores byte for byte; the rest is gone.
    for (i, (id, data)) in kept_data.iter().enumerate() {
        if [0, 4, 5].contains(&i) {
            assert_eq!(&r.restore_bytes(&id[..12]), data, "version {i}");
        } else {
            assert!(!snapshot_ids(&r).contains(id));
        }
    }
    let c = check_clean(&r);
    assert_eq!(c["unreferenced_packs"].as_array().unwrap().len(), 0, "{c}");
    // A backup after the prune deduplicates only against what is left.
    let j = r.backup_bytes(&kept_data[2].1, &["--source", "model", "--chunk-avg-kib", "64"]);
    assert_eq!(r.restore_bytes(j["snapshot"].as_str().unwrap()), kept_data[2].1);
    check_clean(&r);

    // Unpinned, the oldest goes on the next forget; prune again is clean.
    r.ok(&["unpin", &kept_data[0].0[..12]]);
    assert_eq!(r.json(&["forget", "--keep-last", "2"])["removed"], 2);
    r.json(&["prune"]);
    let c = check_clean(&r);
    assert_eq!(c["snapshots"], 2);
}

#[test]
fn config_file_rules_make_forget_need_no_flags() {
    let r = gc_repo(30);
    for v in 0..4u64 {
        r.backup_bytes(&random(300_000, v), &["--source", "configs"]);
        r.backup_bytes(&random(300_000, 50 + v), &["--source", "other"]);
    }
    let cfg = r.dir.path().join("cairn.toml");
    std::fs::write(&cfg, "[sources.configs]\nkeep_last = 1\nkeep_within = \"1h\"\n").unwrap();
    let cfgs = cfg.to_str().unwrap();
    // keep_within 1h keeps all four (taken seconds apart); keep_last alone one.
    let j = r.json(&["--config", cfgs, "forget", "--dry-run"]);
    assert!(j["rows"].as_array().unwrap().iter().all(|x| x["keep"] == true), "{j}");
    std::fs::write(&cfg, "[sources.configs]\nkeep_last = 1\n").unwrap();
    let j = r.json(&["--config", cfgs, "forget", "--prune"]);
    assert_eq!(j["removed"], 3, "{j}");
    let sources: Vec<String> =
        r.snapshots().iter().map(|s| s["source"]["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(sources.iter().filter(|s| *s == "configs").count(), 1);
    assert_eq!(sources.iter().filter(|s| *s == "other").count(), 4, "no rule for it: kept whole");
    check_clean(&r);
    // Unknown keys and bad values are refused, naming the file.
    std::fs::write(&cfg, "[sources.configs]\nkeep_dayly = 1\n").unwrap();
    let o = r.run(&["--config", cfgs, "forget"]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("keep_dayly"), "{}", String::from_utf8_lossy(&o.stderr));
    // No rule anywhere: refused rather than doing nothing silently.
    let o = r.run(&["forget"]);
    assert_ne!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no retention rule"));
}

/// One run of the paused-writer scenario: snapshot A holds data D; backup
/// W of D (deduplicating against A's packs) is stopped after reading D;
/// A is forgotten and a prune condemns and sweeps A's packs, waiting for
/// W's lease to expire; W resumes. Returns W's exit code and the check.
fn paused_writer_run(unfenced: bool) -> (i32, std::process::Output, TestRepo) {
    let mut r = gc_repo(2);
    if unfenced {
        r.env.push(("CAIRN_TEST_UNSAFE_NO_FENCING", "1".into()));
    }
    let d = random(3 << 20, 7);
    let input = r.dir.path().join("d.bin");
    std::fs::write(&input, &d).unwrap();
    let a = r.backup_bytes(&d, &["--source", "x"]);
    // The producer writes D, then waits: W has deduplicated D by then.
    let script = format!("cat {}; sleep 6", input.display());
    let w = r
        .cmd(&["backup", "--source", "x", "--json", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = w.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    r.ok(&["forget", a["snapshot"].as_str().unwrap()]);
    let p = r.json(&["prune", "--sweep-wait", "20"]);
    if !unfenced {
        // The sweep waited for the paused writer's lease until it expired.
        assert_eq!(p["swept"][0]["broken_leases"].as_array().unwrap().len(), 1, "{p}");
    }
    assert!(p["swept"][0]["deleted_packs"].as_u64().unwrap() > 0, "A's packs were deleted: {p}");
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let out = w.wait_with_output().unwrap();
    let wcode = code(&out);
    let check = r.run(&["--json", "check"]);
    (wcode, check, r)
}

#[test]
fn a_backup_paused_past_its_lease_is_fenced_out() {
    let (wcode, check, r) = paused_writer_run(false);
    assert_eq!(wcode, 9, "the paused backup must fail as fenced out");
    assert_eq!(code(&check), 0, "{}", String::from_utf8_lossy(&check.stdout));
    assert!(snapshot_ids(&r).is_empty(), "no snapshot references the deleted packs");
    // The next prune collects what the fenced writer left.
    r.json(&["prune"]);
    let c = check_clean(&r);
    assert_eq!(c["packs"], 0, "{c}");
}

/// The same run with the fencing switched off loses data: the writer
/// acknowledges a snapshot whose packs are gone. This is what shows the
/// test above can fail.
#[test]
fn without_fencing_the_paused_backup_commits_a_dangling_snapshot() {
    let (wcode, check, r) = paused_writer_run(true);
    assert_eq!(wcode, 0, "unfenced, the writer acknowledges");
    assert_eq!(code(&check), 5, "and check finds the snapshot's blobs gone");
    let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert!(v["problems"].to_string().contains("needs blob"), "{v}");
    let id = snapshot_ids(&r).into_iter().next().unwrap();
    assert_ne!(code(&r.run(&["restore", &id, "--to", "-"])), 0, "its restore fails loudly");
}

/// Runs `c`, SIGKILLing it after `delay` unless it ended; returns its exit
/// code and how long it ran, or `None` when killed.
fn kill_after(mut c: Command, delay: Duration) -> Option<(i32, Duration)> {
    let mut child = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while started.elapsed() < delay {
        if let Some(s) = child.try_wait().unwrap() {
            return Some((s.code().unwrap_or(-1), started.elapsed()));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

#[test]
fn sigkill_at_random_points_of_forget_and_prune_leaves_a_clean_repository() {
    let r = gc_repo(30);
    let mut rng = cairn_tests::data::XorShift(42);
    let mut live: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut killed, mut points) = (0, 0);
    let mut typical = [Duration::from_millis(40); 2];
    for round in 0..26u64 {
        for k in 0..2 {
            let d = random(600_000, round * 10 + k);
            let j = r.backup_bytes(&d, &["--source", "s", "--chunk-avg-kib", "64"]);
            live.push((j["snapshot"].as_str().unwrap().to_string(), d));
        }
        for (op, args) in [&["forget", "--keep-last", "3"][..], &["prune", "--sweep-wait", "5"][..]].iter().enumerate()
        {
            points += 1;
            // A point drawn uniformly over how long the last whole run took.
            let delay = Duration::from_micros(rng.next_u64() % (typical[op].as_micros() as u64 + 1));
            match kill_after(r.cmd(args), delay) {
                None => killed += 1,
                Some((0, took)) => typical[op] = took,
                Some((c, _)) => panic!("round {round}: {args:?} exited {c}"),
            }
        }
        // Whatever was interrupted: the repository checks clean and every
        // snapshot still listed restores.
        let c = r.run(&["--json", "check"]);
        assert_eq!(code(&c), 0, "round {round}: {}", String::from_utf8_lossy(&c.stdout));
        let present = snapshot_ids(&r);
        for (id, d) in live.iter().filter(|(id, _)| present.contains(id)) {
            assert_eq!(&r.restore_bytes(id), d, "round {round}: snapshot {id}");
        }
        live.retain(|(id, _)| present.contains(id));
    }
    assert!(points >= 50 && killed >= 20, "{killed} of {points} runs were killed");
    // A re-run completes the work: three snapshots left, no garbage.
    let o = r.run(&["forget", "--keep-last", "3"]);
    assert_success(&o, &["forget"]);
    r.json(&["prune"]);
    let c = check_clean(&r);
    assert_eq!(c["snapshots"], 3);
    assert_eq!(c["unreferenced_packs"].as_array().unwrap().len(), 0, "{c}");
    let dry = r.json(&["prune", "--dry-run"]);
    assert_eq!(dry["condemned_packs"], 0, "{dry}");
    assert_eq!(dry["pending_packs"], 0, "{dry}");
}

/// Backs up v1 (4 MiB) and v2, in which every other 128 KiB region
/// changed, then forgets v1: each of v1's packs is about half unused.
/// Returns the backup arguments, v2's summary and v2.
fn half_forgotten(r: &TestRepo, seed: u64) -> ([&'static str; 4], serde_json::Value, Vec<u8>) {
    let v1 = random(4 << 20, seed);
    let mut v2 = v1.clone();
    for (i, region) in v2.chunks_mut(128 << 10).enumerate() {
        if i % 2 == 1 {
            region.copy_from_slice(&random(region.len(), seed * 1000 + i as u64));
        }
    }
    let args = ["--source", "m", "--chunk-avg-kib", "64"];
    let a = r.backup_bytes(&v1, &args);
    let b = r.backup_bytes(&v2, &args);
    r.ok(&["forget", a["snapshot"].as_str().unwrap()]);
    (args, b, v2)
}

#[test]
fn prune_repacks_mostly_unused_packs_and_keeps_what_is_live() {
    let r = gc_repo(30);
    let (args, b, v2) = half_forgotten(&r, 77);
    let dry = r.json(&["prune", "--dry-run"]);
    let would = dry["repack"]["packs"].as_u64().unwrap();
    assert!(would > 0, "{dry}");
    // A byte budget smaller than one pack repacks nothing and says so.
    let capped = r.json(&["prune", "--dry-run", "--max-repack-size", "1K"]);
    assert_eq!(capped["repack"]["packs"], 0, "{capped}");
    assert_eq!(capped["repack"]["packs_left"].as_u64().unwrap(), would, "{capped}");
    let before = dir_bytes(&r, "packs");
    let p = r.json(&["prune"]);
    assert_eq!(p["repack"]["packs"].as_u64().unwrap(), would, "{p}");
    assert!(p["repack"]["packs_written"].as_u64().unwrap() > 0, "{p}");
    let after = dir_bytes(&r, "packs");
    assert!(after < before, "repacking reclaimed space: {after} < {before}");
    assert_eq!(r.restore_bytes(b["snapshot"].as_str().unwrap()), v2);
    let c = check_clean(&r);
    assert_eq!(c["unreferenced_packs"].as_array().unwrap().len(), 0, "{c}");
    // What is left is all live: nothing more to repack or condemn.
    let again = r.json(&["prune", "--dry-run"]);
    assert_eq!(again["repack"]["packs"], 0, "{again}");
    assert_eq!(again["condemned_packs"], 0, "{again}");
    // And a backup of v2 again deduplicates completely against the new packs.
    let j = r.backup_bytes(&v2, &args);
    assert_eq!(j["stats"]["new_chunks"], 0, "{j}");
}

#[test]
fn a_damaged_live_blob_leaves_its_pack_alone_and_the_rest_is_collected() {
    let r = gc_repo(30);
    half_forgotten(&r, 91);
    // Damage every blob of a pack chosen for repacking, live and dead
    // alike: one byte in every 32 up to the trailer, so no blob (41 bytes
    // at least, sealed) escapes. (Every 32 KiB, a pack whose few live
    // blobs were small sometimes kept them whole, and which tied pack is
    // chosen first varies with the order segments are read.)
    let dry = r.json(&["prune", "--dry-run"]);
    let victim = r.repo_dir().join(dry["repack"]["chosen"][0].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let tail = bytes.len() - cairn_formats::repo::PACK_TAIL_LEN;
    let trailer = u32::from_le_bytes(bytes[tail..tail + 4].try_into().unwrap()) as usize;
    for at in (0..tail - trailer).step_by(32) {
        bytes[at] ^= 0x10;
    }
    std::fs::write(&victim, &bytes).unwrap();
    let o = r.run(&["--json", "prune"]);
    assert_eq!(
        code(&o),
        5,
        "problems make prune exit 5: {} {} DRY {dry}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = p["problems"].to_string();
    assert!(problems.contains("not repacked"), "{p}");
    assert!(p["repack"]["packs"].as_u64().unwrap() > 0, "the other packs were repacked: {p}");
    assert!(victim.exists(), "the damaged pack is left whole");
}
