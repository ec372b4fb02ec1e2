//! S3 that misbehaves: cairn talks to moto through [`FaultProxy`], which
//! drops connections, answers 500 and 503 SlowDown, answers slowly and cuts
//! bodies short. Whatever it does, `wal push` never exits 0 without a
//! durable manifest (checked by fetching straight from moto), `wal fetch`
//! exits 126 or more (never 1, "not archived") while the store is
//! unreachable, and backups complete or fail cleanly; transient faults are
//! retried and the commands succeed.

use std::time::Duration;

use cairn_tests::faultproxy::{Fault, FaultProxy, Schedule};
use cairn_tests::moto::Moto;
use cairn_tests::repo::code;
use cairn_tests::TestRepo;

use super::wal::first_segment;

const SEG: &str = "000000010000000000000001";

/// The same repository seen straight (`direct`) and through the proxy.
struct Pair {
    direct: TestRepo,
    flaky: TestRepo,
    proxy: FaultProxy,
    _moto: Moto,
}

fn pair() -> Pair {
    let moto = Moto::start();
    let bucket = format!("faults{}", rand::random::<u32>());
    moto.create_bucket(&bucket);
    let url = format!("s3://{bucket}/cairn");
    let direct = TestRepo::at(tempfile::tempdir().unwrap(), url.clone(), moto.env());
    direct.ok(&["init"]);
    let proxy = FaultProxy::start(&moto.endpoint);
    let flaky = TestRepo::at(tempfile::tempdir().unwrap(), url, proxy.env(&moto.env()));
    std::fs::copy(&direct.key, &flaky.key).unwrap();
    Pair { direct, flaky, proxy, _moto: moto }
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn wal_push_through_failing_s3_acknowledges_only_durable_files() {
    let p = pair();
    let pg_root = cairn_tests::pg::shared_dir();
    let seg = first_segment(pg_root.path(), "pg");
    let want = std::fs::read(&seg).unwrap();
    let transient = [
        Schedule::Every(2, Fault::Status(503)),
        Schedule::Every(3, Fault::Reset),
        Schedule::Every(2, Fault::Truncate),
        Schedule::Every(3, Fault::Status(500)),
        Schedule::Every(2, Fault::Slow(Duration::from_millis(300))),
    ];
    let permanent = [Schedule::All(Fault::Reset), Schedule::All(Fault::Status(503))];
    for (i, s) in transient.iter().chain(&permanent).enumerate() {
        let stanza = format!("s{i}");
        p.proxy.set(*s);
        let o = p.flaky.run(&["wal", "push", "--stanza", &stanza, seg.to_str().unwrap()]);
        p.proxy.set(Schedule::Pass);
        let back = p.direct.dir.path().join(format!("back{i}"));
        let f = p.direct.run(&["wal", "fetch", "--stanza", &stanza, SEG, back.to_str().unwrap()]);
        if code(&o) == 0 {
            assert_eq!(code(&f), 0, "{s:?}: push exited 0, so the file must be durable: {}", err(&f));
            assert_eq!(std::fs::read(&back).unwrap(), want, "{s:?}");
        } else {
            // Not acknowledged: absent, or whole; never damaged.
            if code(&f) == 0 {
                assert_eq!(std::fs::read(&back).unwrap(), want, "{s:?}");
            }
        }
        if transient.contains(s) {
            assert_eq!(code(&o), 0, "{s:?}: a transient fault is retried: {}", err(&o));
        } else {
            assert_ne!(code(&o), 0, "{s:?}: a store that never answers cannot acknowledge");
        }
    }
    let (requests, faults) = p.proxy.counts();
    assert!(faults * 4 > requests, "faults were injected: {faults} of {requests}");
    p.direct.ok(&["check", "--read-data"]);
}

#[test]
fn wal_fetch_from_unreachable_s3_exits_126_never_1() {
    let p = pair();
    let pg_root = cairn_tests::pg::shared_dir();
    let seg = first_segment(pg_root.path(), "pg");
    p.direct.ok(&["wal", "push", "--stanza", "main", seg.to_str().unwrap()]);
    let to = p.flaky.dir.path().join("RECOVERYXLOG");
    for s in [Schedule::All(Fault::Reset), Schedule::All(Fault::Status(503)), Schedule::All(Fault::Status(500))] {
        p.proxy.set(s);
        let o = p.flaky.run(&["wal", "fetch", "--stanza", "main", SEG, to.to_str().unwrap()]);
        assert!(code(&o) >= 126, "{s:?}: exit {} ({})", code(&o), err(&o));
        assert!(!to.exists(), "{s:?}: nothing delivered");
        // A name that is not archived is still "not archived" only when
        // the store can say so: unreachable, it is a failure too.
        let o = p.flaky.run(&["wal", "fetch", "--stanza", "main", "000000010000000000000009", to.to_str().unwrap()]);
        assert!(code(&o) >= 126, "{s:?}: a missing file on an unreachable store exits {}", code(&o));
    }
    // Bodies cut short: retried, or refused; never wrong bytes.
    p.proxy.set(Schedule::Every(2, Fault::Truncate));
    let o = p.flaky.run(&["wal", "fetch", "--stanza", "main", SEG, to.to_str().unwrap()]);
    if code(&o) == 0 {
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&seg).unwrap());
        std::fs::remove_file(&to).unwrap();
    } else {
        assert!(code(&o) >= 126, "{}", err(&o));
    }
    p.proxy.set(Schedule::Pass);
    p.flaky.ok(&["wal", "fetch", "--stanza", "main", SEG, to.to_str().unwrap()]);
    assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&seg).unwrap());
}

#[test]
fn backups_through_failing_s3_complete_or_fail_cleanly() {
    let p = pair();
    let mut rng = cairn_tests::data::XorShift(7);
    let transient =
        [Schedule::Every(3, Fault::Status(503)), Schedule::Every(4, Fault::Reset), Schedule::Every(3, Fault::Truncate)];
    for (i, s) in transient.iter().chain(&[Schedule::All(Fault::Status(500))]).enumerate() {
        let data: Vec<u8> = (0..(6 << 20) / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
        let before = p.direct.snapshots().len();
        p.proxy.set(*s);
        let o = p.flaky.run_stdin(&["--json", "backup", "--source", &format!("b{i}"), "-"], &data);
        p.proxy.set(Schedule::Pass);
        if transient.contains(s) {
            assert_eq!(code(&o), 0, "{s:?}: a transient fault is retried: {}", err(&o));
        }
        if code(&o) == 0 {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(p.direct.restore_bytes(v["snapshot"].as_str().unwrap()), data, "{s:?}");
        } else {
            assert_eq!(p.direct.snapshots().len(), before, "{s:?}: a failed backup leaves no snapshot");
        }
        // Through the proxy, a restore under truncation is right or refused.
        if code(&o) == 0 {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            p.proxy.set(Schedule::Every(2, Fault::Truncate));
            let out = p.flaky.dir.path().join(format!("r{i}"));
            let r = p.flaky.run(&["restore", v["snapshot"].as_str().unwrap(), "--to", out.to_str().unwrap()]);
            p.proxy.set(Schedule::Pass);
            if code(&r) == 0 {
                assert_eq!(std::fs::read(&out).unwrap(), data, "{s:?}: restored under truncation");
            } else {
                assert!(!out.exists(), "{s:?}: a failed restore leaves no file: {}", err(&r));
            }
        }
    }
    p.direct.ok(&["check", "--read-data"]);
}
