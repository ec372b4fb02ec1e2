//! Real commands under injected storage faults (`CAIRN_TEST_FAULTS`, a
//! test-only switch that puts the fault-injecting store under the
//! process's retries): for every command and every storage operation, a
//! permanent failure of the 1st, 2nd or 4th such request makes the command
//! exit non-zero unless that request was never made; a transient failure
//! is retried and the command succeeds; and afterwards everything that was
//! acknowledged restores and `check --read-data` is clean.

use std::process::Output;

use cairn_tests::data::XorShift;
use cairn_tests::repo::code;
use cairn_tests::TestRepo;

use super::wal::first_segment;

const SEG: &str = "000000010000000000000001";

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut r = XorShift(seed | 1);
    (0..n / 8).flat_map(|_| r.next_u64().to_le_bytes()).collect()
}

/// Runs `args` (with `stdin`) under `spec`; returns the output and the
/// faults the process reports having injected.
fn under(r: &TestRepo, spec: &str, args: &[String], stdin: Option<&[u8]>) -> (Output, Vec<String>) {
    let log = r.dir.path().join("faults.log");
    let _ = std::fs::remove_file(&log);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = r.cmd(&refs);
    c.env("CAIRN_TEST_FAULTS", spec).env("CAIRN_TEST_FAULTS_LOG", &log);
    let o = match stdin {
        Some(data) => cairn_tests::repo::output_with_stdin(&mut c, data),
        None => c.output().unwrap(),
    };
    let injected = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
    (o, injected)
}

#[test]
fn no_command_exits_0_after_a_permanent_storage_failure() {
    let r = TestRepo::new();
    let pg_root = cairn_tests::pg::shared_dir();
    let seg = first_segment(pg_root.path(), "pg");
    let seg_s = seg.to_str().unwrap().to_string();
    let out = r.dir.path().join("out");
    let out_s = out.to_str().unwrap().to_string();
    // What every run starts from: three snapshots and an archived segment.
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..3 {
        let d = random(3 << 20, i);
        let v = r.backup_bytes(&d, &["--source", "s"]);
        acked.push((v["snapshot"].as_str().unwrap().to_string(), d));
    }
    r.ok(&["wal", "push", "--stanza", "main", &seg_s]);

    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let mut seen = 0;
    let mut n = 10;
    for op in ["put", "get", "head", "list", "delete"] {
        for skip in [0, 1, 3] {
            n += 1;
            let data = random(2 << 20, n);
            let stanza = format!("st{n}");
            let commands: Vec<(Vec<String>, Option<&[u8]>)> = vec![
                (s(&["--json", "backup", "--source", "s", "-"]), Some(&data)),
                (s(&["restore", "latest", "--source", "s", "--to", &out_s]), None),
                (s(&["check", "--read-data"]), None),
                (s(&["wal", "push", "--stanza", &stanza, &seg_s]), None),
                (s(&["wal", "fetch", "--stanza", "main", SEG, &out_s]), None),
                (s(&["snapshots"]), None),
                (s(&["forget", "--keep-last", "3", "--prune"]), None),
            ];
            for (args, stdin) in commands {
                let is = |w: &str| args.iter().any(|a| a == w);
                let _ = std::fs::remove_file(&out);
                let spec = format!("{op}::fail:{skip}");
                let (o, injected) = under(&r, &spec, &args, stdin);
                // Best-effort clean-ups, documented as such: a lease left
                // behind expires. The command warns and succeeds.
                let tolerated = |l: &String| l.starts_with("delete leases/");
                if !injected.is_empty() && injected.iter().all(tolerated) {
                    seen += 1;
                    assert!(
                        String::from_utf8_lossy(&o.stderr).contains("WARN"),
                        "{args:?}: the failed clean-up is reported"
                    );
                } else if !injected.is_empty() {
                    seen += 1;
                    assert_ne!(
                        code(&o),
                        0,
                        "{args:?} exited 0 after a permanent {op} failure ({spec}): {injected:?}\n{}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    assert!(!out.exists() || !is("restore"), "{args:?}: a failed restore left its file");
                } else if code(&o) == 0 && is("backup") {
                    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                    acked.push((v["snapshot"].as_str().unwrap().to_string(), data.clone()));
                }
                // Transient: retried, and the command succeeds.
                let (o, injected) = under(&r, &format!("{op}::transient:{skip}:2"), &args, stdin);
                assert_eq!(
                    code(&o),
                    0,
                    "{args:?} with a transient {op} failure ({injected:?}): {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                if is("backup") {
                    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                    acked.push((v["snapshot"].as_str().unwrap().to_string(), data.clone()));
                }
            }
        }
    }
    assert!(seen > 40, "faults were injected into most runs ({seen})");
    // Nothing acknowledged was lost (forget keeps the newest three of the
    // source; the pinned-down first snapshots may be forgotten, so restore
    // what is still listed).
    let listed: Vec<String> =
        r.snapshots().iter().map(|s| s["id"].as_str().or(s["snapshot"].as_str()).unwrap().to_string()).collect();
    for (id, data) in &acked {
        if listed.iter().any(|l| l == id) {
            assert_eq!(&r.restore_bytes(id), data, "snapshot {id}");
        }
    }
    r.ok(&["check", "--read-data"]);
    r.ok(&["wal", "fetch", "--stanza", "main", SEG, &out_s]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&seg).unwrap());
}
