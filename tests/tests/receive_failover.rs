//! `cairn pg receive` when the server changes under it, against a real
//! PostgreSQL 15: a standby it streams from is promoted (timeline 2 is
//! followed, its history stored, and a restore reaches the rows written
//! after the promotion), and the server is restarted while it runs (it
//! reconnects and goes on without a gap or a duplicate).

use std::process::Child;
use std::time::{Duration, Instant};

use cairn_tests::pg::{self, Cluster};

use crate::receive::{balance_holds, ids, receiver, restore_latest, sigterm, source, wait_streaming};
use crate::wal::Archive;

/// Inserts markers `ids`, one transaction each.
fn insert(c: &Cluster, ids: std::ops::RangeInclusive<i32>) {
    let sql: String = ids.map(|i| format!("INSERT INTO marker VALUES ({i}, clock_timestamp());\n")).collect();
    c.sql(&sql);
}

/// Waits until the receiver (`application_name = 'cairn'`) reports
/// everything `c` has flushed as durable; panics with the receiver's log.
fn wait_durable(a: &Archive, c: &Cluster) {
    let end = c.sql("SELECT pg_current_wal_flush_lsn()");
    let started = Instant::now();
    let sql = format!("SELECT flush_lsn >= '{end}' FROM pg_stat_replication WHERE application_name = 'cairn'");
    while !c.try_sql(&sql).is_ok_and(|s| s == "t") {
        if started.elapsed() > Duration::from_secs(60) {
            panic!("the receiver did not make {end} durable within 60 s\n{}\n{}", receiver_logs(a), c.log_tail(40));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The receivers' logs (`receive-*.log` beside the repository).
fn receiver_logs(a: &Archive) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(a.root()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("receive-") {
            out += &format!("--- {name} ---\n{}", std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// SIGTERM, then the receiver's JSON report (it must exit 0).
fn stop(rx: Child) -> serde_json::Value {
    sigterm(&rx);
    let out = rx.wait_with_output().unwrap();
    assert!(out.status.success(), "pg receive after SIGTERM: {:?}", out.status);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn verify_clean(a: &Archive) {
    let v = a.repo.json(&["wal", "verify", "--stanza", "main"]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
}

/// A failover while receiving from a standby: the primary stops, the
/// standby is promoted and written to. The receiver ends timeline 1 at
/// the switch point, stores `00000002.history` and streams timeline 2;
/// `wal show` has both timelines without gaps, and `pg restore --latest`
/// follows the history to the rows written after the promotion.
///
/// Regression: the receiver used to refuse timeline 2 on the connection
/// that announced it ("holds WAL of timeline 2, newer than the server's
/// timeline 1": the check used `IDENTIFY_SYSTEM`'s timeline from before
/// the promotion) and then exit 8.
#[test]
fn receiver_follows_a_promoted_standby_onto_timeline_2() {
    follows_a_promotion(None);
}

#[test]
fn receiver_into_s3_follows_a_promoted_standby() {
    let moto = cairn_tests::moto::Moto::start();
    follows_a_promotion(Some(&moto));
}

fn follows_a_promotion(s3: Option<&cairn_tests::moto::Moto>) {
    let a = Archive::new(s3);
    let mut primary = source(&a, "primary", "", false);

    // A streaming standby of the primary (no archiving of its own: what
    // the repository holds of timeline 2 comes from the receiver).
    let dir = a.root().join("standby");
    let mut bb = pg::pg_command("pg_basebackup", &[]);
    bb.args(primary.connect_args()).arg("-D").arg(&dir).args(["-R", "-X", "stream", "--checkpoint=fast"]);
    let o = bb.output().unwrap();
    assert!(o.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&o.stderr));
    let mut standby = Cluster::from_copy(dir, a.root(), "archive_mode = off\nhot_standby = on\n");
    standby.start(&a.repo.env);
    // The archive reaches past where the standby's WAL begins, so that the
    // receiver's first position (after the newest archived segment) is WAL
    // the standby has.
    insert(&primary, 1..=10);
    let seg = primary.switch_wal();
    primary.wait_archived(&seg, Duration::from_secs(60));
    let replayed = primary.sql("SELECT pg_current_wal_flush_lsn()");
    standby.wait_for("the standby to replay the primary's WAL", Duration::from_secs(60), |c| {
        c.try_sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{replayed}'")).is_ok_and(|s| s == "t")
    });

    let rx = receiver(&a, &standby, &["--slot", "cairn", "--create-slot", "--flush-interval", "200ms"]);
    wait_streaming(&standby, false);
    insert(&primary, 11..=60);
    primary.pgbench(&["-i", "-s", "1", "-q"]);
    primary.pgbench(&["-n", "-c", "2", "-t", "300"]);
    insert(&primary, 61..=80);

    // Failover: the primary goes (a clean stop sends the standby all it
    // wrote), the standby is promoted and written to on timeline 2.
    primary.stop();
    standby.sql("SELECT pg_promote()");
    standby.wait_until_promoted(Duration::from_secs(60));
    assert_eq!(standby.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    insert(&standby, 81..=120);
    // Timeline 2's switch segment completes (it is stored whole); the
    // rest ends in a streamed segment.
    standby.switch_wal();
    standby.pgbench(&["-n", "-c", "2", "-t", "300"]);
    insert(&standby, 121..=150);
    wait_durable(&a, &standby);
    let report = stop(rx);
    assert_eq!(report["timeline"], 2, "{report}");
    eprintln!("timeline switch ({}): receiver {report}", if s3.is_some() { "S3" } else { "local" });

    let show = a.show();
    let tls = show["timelines"].as_array().unwrap();
    let tl = |n: u64| tls.iter().find(|t| t["timeline"] == n).unwrap_or_else(|| panic!("no timeline {n}: {show}"));
    for n in [1, 2] {
        assert!(tl(n)["gaps"].as_array().unwrap().is_empty(), "timeline {n} has gaps: {show}");
    }
    assert_eq!(tl(2)["history"][0]["timeline"], 1, "timeline 2's history names its parent: {show}");
    assert!(tl(2)["streamed"].is_object(), "timeline 2 ends in a streamed segment: {show}");
    let names: Vec<&str> = show["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(names.contains(&"00000002.history"), "the receiver stored timeline 2's history: {names:?}");
    // Timeline 2's first segment is the switch segment, right after
    // timeline 1's last whole one.
    let first2 = tl(2)["ranges"][0]["first"].as_str().unwrap().to_string();
    let last1 = tl(1)["ranges"].as_array().unwrap().last().unwrap()["last"].as_str().unwrap().to_string();
    let segno = |n: &str| u64::from_str_radix(&n[8..24], 16).unwrap();
    assert_eq!(segno(&first2), segno(&last1) + 1, "timeline 2 starts where timeline 1's whole segments end: {show}");
    verify_clean(&a);

    standby.kill_hard();
    let restored = restore_latest(&a, "restored");
    assert_eq!(ids(&restored), (1..=150).collect::<Vec<_>>(), "every row, before and after the promotion");
    balance_holds(&restored);
}

/// The server restarted under a running receiver (`pg_ctl stop -m fast`,
/// a pause, start): the receiver reconnects with backoff and goes on from
/// where it was. With archiving paused, everything after the base backup
/// is the receiver's: `wal show` has no gap, `wal verify` is clean (a
/// byte received twice would have conflicted), and the restore holds the
/// rows written before and after the restart.
#[test]
fn receiver_survives_a_server_restart() {
    let a = Archive::new(None);
    let mut src = source(&a, "src", "", true);
    // An empty archive_command pauses archiving (WAL is kept).
    src.sql("ALTER SYSTEM SET archive_command = ''; SELECT pg_reload_conf()");

    let rx = receiver(&a, &src, &["--slot", "cairn", "--create-slot", "--flush-interval", "200ms"]);
    wait_streaming(&src, false);
    insert(&src, 1..=50);
    src.pgbench(&["-n", "-c", "2", "-t", "1000"]);
    insert(&src, 51..=60);

    src.stop();
    // Down for long enough that attempts fail and back off (1 s, 2 s...).
    std::thread::sleep(Duration::from_secs(5));
    src.start(&a.repo.env);
    wait_streaming(&src, false);
    insert(&src, 61..=100);
    src.pgbench(&["-n", "-c", "2", "-t", "1000"]);
    insert(&src, 101..=120);
    wait_durable(&a, &src);
    let report = stop(rx);
    eprintln!("server restart: receiver {report}");
    assert!(report["reconnects"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["timeline"], 1, "{report}");

    let show = a.show();
    let tl = &show["timelines"][0];
    assert!(tl["gaps"].as_array().unwrap().is_empty(), "{show}");
    assert!(tl["streamed"].is_object(), "{show}");
    verify_clean(&a);

    src.kill_hard();
    let restored = restore_latest(&a, "restored");
    assert_eq!(ids(&restored), (1..=120).collect::<Vec<_>>(), "rows from before and after the restart");
    balance_holds(&restored);
}
