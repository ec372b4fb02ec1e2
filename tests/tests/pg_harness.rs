//! Self-test of the PostgreSQL harness (`cairn_tests::pg`), with `cp` as
//! archive and restore command and no cairn involved: when this fails, the
//! harness or the machine's PostgreSQL is at fault, not cairn.

use std::fs;
use std::time::{Duration, Instant};

use cairn_tests::pg::{self, conf_string, Cluster};

const WAIT: Duration = Duration::from_secs(60);

/// Archive with `cp`, take a hot copy, keep writing, then restore the copy
/// through `restore_command`: every commit made before the last archived
/// segment comes back, on a new timeline of the same system.
#[test]
fn pg_harness_hot_copy_replays_every_archived_commit() {
    let started = Instant::now();
    let shared = pg::shared_dir();
    let arch = shared.path().join("arch");
    fs::create_dir(&arch).unwrap();
    pg::chown_to_user(&arch);

    // The archive's path reaches archive_command through the postmaster's
    // environment, which is what S3 credentials will do.
    let conf = format!("archive_mode = on\narchive_command = {}\n", conf_string("cp %p \"$HARNESS_ARCH\"/%f"));
    let mut primary = Cluster::init(shared.path(), "primary", 16, &conf);
    primary.start(&[("HARNESS_ARCH", arch.to_string_lossy().into_owned())]);
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    let first = primary.switch_wal();
    primary.sql("CREATE TABLE harness(x int); INSERT INTO harness VALUES (1);");
    let second = primary.switch_wal();
    assert!(second > first, "{second} should follow {first}");
    let a = primary.wait_archived(&second, WAIT);
    assert!(a.archived_count >= 2 && a.failed_count == 0, "{a:?}");

    let copy = shared.path().join("copy");
    primary.hot_copy(&copy);
    assert!(copy.join("backup_label").is_file());
    assert!(!copy.join("postmaster.pid").exists());
    assert_eq!(fs::read_dir(copy.join("pg_wal")).unwrap().count(), 1, "only archive_status is left in pg_wal");

    primary.pgbench(&["-c", "2", "-j", "2", "-t", "300", "-n"]);
    let history = primary.sql("SELECT count(*) FROM pgbench_history");
    assert_eq!(history, "600");
    let last = primary.switch_wal();
    primary.wait_archived(&last, WAIT);
    let system_id = primary.system_id();
    primary.stop();
    primary.stop();

    let restore =
        format!("restore_command = {}\narchive_mode = off\n", conf_string(&format!("cp {}/%f %p", arch.display())));
    let mut restored = Cluster::from_copy(copy, shared.path(), &restore);
    assert_ne!(restored.port, primary.port);
    restored.touch_recovery_signal();
    restored.start(&[]);
    restored.wait_until_promoted(WAIT);
    assert_eq!(restored.sql("SELECT count(*) FROM pgbench_history"), history);
    assert_eq!(restored.sql("SELECT x FROM harness"), "1");
    assert_eq!(restored.system_id(), system_id);
    let log = restored.log_text();
    assert!(log.contains(&format!("restored log file \"{last}\" from archive")), "{log}");
    assert!(log.contains("selected new timeline ID: 2"), "{log}");
    restored.stop();
    eprintln!("PostgreSQL harness self-test took {:?}", started.elapsed());
}
