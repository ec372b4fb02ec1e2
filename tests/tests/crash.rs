//! SIGKILL during `cairn backup` at random points never damages the
//! repository: it checks clean, every earlier snapshot restores, and the
//! next backup succeeds.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_tests::data::{random, text};
use cairn_tests::TestRepo;
use rand::{Rng, SeedableRng};

#[test]
fn sigkill_during_backup_at_random_points() {
    let repo = TestRepo::with_args(&["--pack-size-mib", "1"]);
    let base = text(4 << 20, 77);
    let b0 = repo.backup_bytes(&base, &["--source", "base"]);
    let mut survivors: Vec<(String, Vec<u8>)> = vec![(b0["snapshot"].as_str().unwrap().into(), base)];

    // Kill delays are drawn across the length of an uninterrupted backup of
    // the same size, so kills land in every phase: start-up, index open,
    // chunking, uploads, the index segment and the snapshot write.
    let t = Instant::now();
    let mut probe = random(12 << 20, 0);
    probe.extend(text(8 << 20, 0));
    repo.backup_bytes(&probe, &["--source", "probe"]);
    survivors.push((repo.snapshots().last().unwrap()["id"].as_str().unwrap().into(), probe));
    let full = t.elapsed().as_millis() as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261121);
    let mut kills = 0;
    let mut attempts = 0;
    while kills < 20 {
        attempts += 1;
        assert!(attempts < 80, "could not land 20 kills mid-backup in 80 attempts");
        let mut data = random(12 << 20, attempts);
        data.extend(text(8 << 20, attempts));
        let delay = Duration::from_millis(rng.gen_range(1..full.max(3)));
        let mut child = repo
            .cmd(&["backup", "--json", "--source", "crash", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = data.clone();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let t = Instant::now();
        while t.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            unsafe_kill(child.id());
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        let _ = feeder.join();
        if finished && out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            survivors.push((v["snapshot"].as_str().unwrap().into(), data));
        }
        // After every kill: structure checks clean and old snapshots restore.
        let check = repo.run(&["check"]);
        assert!(
            check.status.success(),
            "check after kill {kills} ({delay:?}): {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    for (id, data) in &survivors {
        assert!(repo.restore_bytes(&id[..12]) == *data, "snapshot {id} changed after crashes");
    }
    let last = text(6 << 20, 999);
    let b = repo.backup_bytes(&last, &["--source", "after"]);
    assert!(repo.restore_bytes(b["snapshot"].as_str().unwrap()) == last);
    let check = repo.run(&["check", "--read-data"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}

fn unsafe_kill(pid: u32) {
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}
