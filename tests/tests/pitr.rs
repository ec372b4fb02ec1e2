//! PostgreSQL base backups and point-in-time restore against a real
//! PostgreSQL 15: a marker row every ~100 ms, restores to times between
//! rows, to an LSN, to a restore point, to the end of the archive and on a
//! promoted timeline 2 hold exactly the rows committed by the target; a
//! target the archive cannot reach is refused before anything is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_tests::pg::{self, Cluster};
use cairn_tests::repo::code;

use crate::wal::Archive;

/// `INSERT`s rows `ids` one transaction at a time, ~100 ms apart.
pub(crate) fn insert_markers(c: &Cluster, ids: std::ops::Range<i32>) {
    for i in ids {
        c.sql(&format!("INSERT INTO marker VALUES ({i}, clock_timestamp())"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Marker times (RFC 3339, µs) by id.
pub(crate) fn marker_times(c: &Cluster) -> Vec<(i32, chrono::DateTime<chrono::Utc>)> {
    c.sql("SELECT id || ' ' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM marker ORDER BY id")
        .lines()
        .map(|l| {
            let (id, t) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), chrono::DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&chrono::Utc))
        })
        .collect()
}

pub(crate) fn between(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> String {
    (a + (b - a) / 2).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

struct Restores<'a> {
    a: &'a Archive,
    n: u32,
}

impl Restores<'_> {
    fn dir(&mut self) -> PathBuf {
        self.n += 1;
        self.a.root().join(format!("r{}", self.n))
    }

    /// `cairn pg restore` into a new directory; returns it.
    fn restore(&mut self, target: &[&str]) -> PathBuf {
        let dir = self.dir();
        let mut args = vec!["pg", "restore", "--stanza", "main", "--to", dir.to_str().unwrap()];
        args.extend_from_slice(target);
        let v = self.a.repo.json(&args);
        assert!(v["verified"].as_u64().unwrap() > 900, "every file checked against backup_manifest: {v}");
        dir
    }

    /// Starts PostgreSQL on a restored directory, waits for the end of
    /// recovery, returns the marker ids.
    fn start(&self, dir: PathBuf, archive: bool) -> (Cluster, Vec<i32>) {
        let conf = if archive { "" } else { "archive_mode = off\n" };
        let mut c = Cluster::from_copy(dir, self.a.root(), conf);
        c.start(&[]);
        c.wait_until_promoted(Duration::from_secs(120));
        let ids = c.sql("SELECT id FROM marker ORDER BY id").lines().map(|l| l.parse().unwrap()).collect();
        (c, ids)
    }

    /// Restores to `target` and starts PostgreSQL there.
    fn run(&mut self, target: &[&str], archive: bool) -> (Cluster, Vec<i32>) {
        let d = self.restore(target);
        self.start(d, archive)
    }

    /// A refused restore: exit 4, the reason in stderr, nothing written.
    fn refused(&mut self, target: &[&str], reason: &str) {
        let dir = self.dir();
        let mut args = vec!["pg", "restore", "--stanza", "main", "--to", dir.to_str().unwrap()];
        args.extend_from_slice(target);
        let o = self.a.repo.run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 4, "{args:?}: {err}");
        assert!(err.contains(reason), "{args:?}: expected {reason:?} in {err}");
        assert!(!dir.exists(), "a refused restore created {}", dir.display());
    }
}

fn ids(r: std::ops::RangeInclusive<i32>) -> Vec<i32> {
    r.collect()
}

/// A base backup through `pg_basebackup`, into a local repository or S3.
pub(crate) fn basebackup(a: &Archive, src: &Cluster) -> serde_json::Value {
    let tool = pg::bin_dir().join("pg_basebackup");
    let mut args: Vec<String> =
        ["backup", "--kind", "pg-base", "--stanza", "main", "--"].iter().map(|s| s.to_string()).collect();
    args.push(tool.display().to_string());
    args.extend(src.connect_args());
    args.extend(["-D", "-", "-Ft", "-X", "none", "--checkpoint=fast"].iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = a.repo.json(&refs);
    // The backup ran as this (root) user; archive_command runs as the
    // server's: pack directories it created must stay writable for pushes.
    // (An S3 repository has no directories to hand over.)
    if !a.repo.url.starts_with("s3://") {
        pg::chown_to_user(&a.repo.repo_dir());
    }
    v
}

fn verify_backup(dir: &Path) {
    pg::chown_to_user(dir);
    let mut c = pg::pg_command("pg_verifybackup", &[]);
    c.args(["-n", "-i", "postgresql.auto.conf", "-i", "recovery.signal"]).arg(dir);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn point_in_time_restores_hold_exactly_the_committed_rows() {
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&[]);
    src.pgbench(&["-i", "-s", "1", "-q"]);
    src.sql("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL)");

    // An unreachable target before any backup exists.
    let mut r = Restores { a: &a, n: 0 };
    let first = src.switch_wal();
    src.wait_archived(&first, Duration::from_secs(120));
    r.refused(&["--latest"], "no base backup");

    let b = basebackup(&a, &src);
    assert_eq!(b["kind"], "pg-base", "{b}");
    let pg = &b["metadata"]["pg"];
    assert_eq!(pg["wal_complete"], true, "{b}");
    assert_eq!(pg["system_id"], src.system_id().to_string(), "{b}");
    assert_eq!(pg["timeline"], 1);
    assert!(pg["manifest_files"].as_u64().unwrap() > 900, "{b}");
    // Tar-aware: the member index lists the data directory.
    let ls = a.repo.json(&["ls", b["snapshot"].as_str().unwrap(), "global/pg_control"]);
    assert_eq!(ls["files"][0]["size"], 8192, "{ls}");

    // One file, and the plain tar, straight from the snapshot.
    let one = a.root().join("one");
    a.repo.ok(&["restore", b["snapshot"].as_str().unwrap(), "--path", "PG_VERSION", "--to", one.to_str().unwrap()]);
    assert_eq!(std::fs::read(one.join("PG_VERSION")).unwrap(), std::fs::read(src.data.join("PG_VERSION")).unwrap());
    let base_tar = a.root().join("base.tar");
    a.repo.ok(&["restore", b["snapshot"].as_str().unwrap(), "--to", base_tar.to_str().unwrap()]);
    let listed = std::process::Command::new("tar").arg("-tf").arg(&base_tar).output().unwrap();
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).lines().any(|l| l == "backup_manifest"));

    // Incremental by construction: a second base backup of the unchanged
    // cluster, pulled over the replication protocol, stores a small
    // fraction of its size.
    let conninfo = format!("host={} port={} user=postgres", src.socket_dir.display(), src.port);
    let b2 = a.repo.json(&["pg", "backup", "--stanza", "main", "--connect", &conninfo, "--fast"]);
    assert_eq!(b2["metadata"]["pg"]["wal_complete"], true, "{b2}");
    let o = a.repo.run(&["pg", "backup", "--stanza", "main", "--connect", &format!("{conninfo} password=hunter2")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(code(&o), 0);
    assert!(err.contains("must not carry a password") && !err.contains("hunter2"), "{err}");
    assert_eq!(b2["metadata"]["pg"]["system_id"], src.system_id().to_string(), "{b2}");
    let (size, up) = (b2["stats"]["bytes_read"].as_u64().unwrap(), b2["stats"]["uploaded_bytes"].as_u64().unwrap());
    eprintln!("second base backup: {up} bytes uploaded for {size} bytes read");
    assert!(up * 10 < size, "a second base backup uploaded {up} of {size} bytes");

    std::thread::sleep(Duration::from_millis(1200)); // past the backup's STOP TIME second
    insert_markers(&src, 0..15);
    src.sql("SELECT pg_create_restore_point('after_14')");
    insert_markers(&src, 15..17);
    let xid_17 = src.sql("BEGIN; INSERT INTO marker VALUES (17, clock_timestamp()); SELECT txid_current(); COMMIT;");
    std::thread::sleep(Duration::from_millis(100));
    insert_markers(&src, 18..21);
    let lsn_after_20 = src.sql("SELECT pg_current_wal_lsn()");
    insert_markers(&src, 21..30);
    src.switch_wal();
    insert_markers(&src, 30..31);
    let last = src.switch_wal();
    src.wait_archived(&last, Duration::from_secs(120));
    let times = marker_times(&src);
    assert_eq!(times.len(), 31);

    // The plan, without writing anything.
    let t10 = between(times[10].1, times[11].1);
    let dry = r.dir();
    let plan = a.repo.json(&[
        "pg",
        "restore",
        "--stanza",
        "main",
        "--to",
        dry.to_str().unwrap(),
        "--target-time",
        &t10,
        "--dry-run",
    ]);
    assert_eq!(plan["snapshot"], b2["snapshot"], "the newest backup before the target: {plan}");
    assert!(plan["settings"].to_string().contains("recovery_target_time"), "{plan}");
    assert!(!dry.exists());

    // To a time between two rows: exactly the rows committed before it.
    let d = r.restore(&["--target-time", &t10]);
    verify_backup(&d);
    assert_eq!(r.start(d, false).1, ids(0..=10));
    let t3 = between(times[3].1, times[4].1);
    assert_eq!(r.run(&["--target-time", &t3], false).1, ids(0..=3));
    // To an LSN, a restore point, and the end of the archive.
    assert_eq!(r.run(&["--target-lsn", &lsn_after_20], false).1, ids(0..=20));
    assert_eq!(r.run(&["--target-name", "after_14"], false).1, ids(0..=14));
    assert_eq!(r.run(&["--target-xid", &xid_17], false).1, ids(0..=17));
    assert_eq!(r.run(&["--latest"], false).1, ids(0..=30));

    // Unreachable targets are refused before anything is written.
    let before = (times[0].1 - chrono::Duration::hours(1)).to_rfc3339();
    r.refused(&["--target-time", &before], "before the oldest usable base backup");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    r.refused(&["--target-time", &future], "no commit after");
    r.refused(&["--target-name", "no_such_point"], "not archived yet");

    // Timeline 2: restore to row 5 and promote, write on the new timeline,
    // archive it; a restore on timeline 2 holds rows 0..=5 and the new ones.
    let (tl2, got) = r.run(&["--target-time", &between(times[5].1, times[6].1)], true);
    assert_eq!(got, ids(0..=5));
    assert_eq!(tl2.sql("SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    insert_markers(&tl2, 100..105);
    let last2 = tl2.switch_wal();
    tl2.wait_archived(&last2, Duration::from_secs(120));
    drop(tl2);
    let (_, got) = r.run(&["--latest", "--target-timeline", "2"], false);
    assert_eq!(got, [ids(0..=5), ids(100..=104)].concat());
    // Timeline 1 is still reachable when asked for.
    let (_, got) = r.run(&["--latest", "--target-timeline", "1"], false);
    assert_eq!(got, ids(0..=30));

    // A gap: the segment holding rows 0..=29 goes missing while the one
    // after it (row 30) is still archived.
    let seg_x = src.sql(&format!("SELECT pg_walfile_name('{lsn_after_20}')"));
    let victim = a.repo.repo_dir().join("wal/main/00000001").join(&seg_x);
    std::fs::remove_file(&victim).unwrap_or_else(|e| panic!("{}: {e}", victim.display()));
    r.refused(&["--latest", "--target-timeline", "1"], "(a gap)");
    let show = a.show();
    let tl1 = show["timelines"].as_array().unwrap().iter().find(|t| t["timeline"] == 1).unwrap().clone();
    assert_eq!(tl1["gaps"][0]["missing"], 1, "wal show reports the gap: {tl1}");
    r.refused(&["--target-time", &between(times[28].1, times[29].1), "--target-timeline", "1"], "(a gap)");
    drop(src);
}

/// A corrupted pack is caught during restore, and nothing is left that
/// PostgreSQL could start on.
#[test]
fn corrupted_backup_is_caught_during_restore() {
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&[]);
    src.pgbench(&["-i", "-s", "1", "-q"]);
    basebackup(&a, &src);
    let last = src.switch_wal();
    src.wait_archived(&last, Duration::from_secs(120));
    drop(src);
    let packs = a.repo.objects("packs");
    let biggest = packs.iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = std::fs::read(biggest).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(biggest, bytes).unwrap();
    let dir = a.root().join("restored");
    let o = a.repo.run(&["pg", "restore", "--stanza", "main", "--to", dir.to_str().unwrap(), "--latest"]);
    assert_eq!(code(&o), 5, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.join("recovery.signal").exists());
}

fn lsn_of(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn archived_names(a: &Archive) -> Vec<String> {
    let v = a.repo.json(&["wal", "show", "--stanza", "main", "--list"]);
    v[0]["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
}

/// Four base backups with a marker writer; expiry keeps two backups and a
/// window shorter than them. A time inside the window restores exactly;
/// one before it is refused naming the retention; the WAL removed is
/// exactly the WAL before the oldest kept backup's start.
#[test]
fn expiry_keeps_two_backups_and_a_shorter_pitr_window() {
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&[]);
    src.sql("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL)");
    let mut backups = Vec::new();
    for i in 0..4 {
        insert_markers(&src, i * 10..i * 10 + 10);
        src.switch_wal();
        backups.push(basebackup(&a, &src));
        std::thread::sleep(Duration::from_millis(2600)); // well past the STOP TIME second
    }
    insert_markers(&src, 40..50);
    let last = src.switch_wal();
    src.wait_archived(&last, Duration::from_secs(120));
    let times = marker_times(&src);
    let pg = |i: usize, k: &str| backups[i]["metadata"]["pg"][k].as_str().unwrap().to_string();
    let stop =
        |i: usize| chrono::DateTime::parse_from_rfc3339(&pg(i, "stop_time")).unwrap().with_timezone(&chrono::Utc);
    // A target inside the window, between two rows written after the third
    // backup and before the fourth: recovery starts from the third.
    let target = times[34].1 + (times[35].1 - times[34].1) / 2;
    assert!(
        target > stop(2) + chrono::Duration::seconds(2) && target < stop(3) + chrono::Duration::seconds(1),
        "timing: target {target}, stops {} {}",
        stop(2),
        stop(3)
    );
    let window_s = (chrono::Utc::now() - target).num_seconds() + 1;
    let window = format!("{window_s}s");

    let before = archived_names(&a);
    let b3_start = lsn_of(&pg(2, "start_lsn"));
    let seg = 16u64 << 20;
    let expected: Vec<String> = before
        .iter()
        .filter(|n| n.len() == 24 && n.starts_with("00000001"))
        .filter(|n| {
            let segno =
                u64::from_str_radix(&n[8..16], 16).unwrap() * 0x100 + u64::from_str_radix(&n[16..], 16).unwrap();
            (segno + 1) * seg <= b3_start
        })
        .cloned()
        .collect();
    assert!(expected.len() >= 4, "the run archived WAL before the third backup: {expected:?}");

    let args = ["pg", "expire", "--stanza", "main", "--retain-full", "2", "--pitr-window", &window];
    let dry = a.repo.json(&[&args[..], &["--dry-run"]].concat());
    let ids_of = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|b| b["snapshot"].as_str().unwrap().to_string()).collect()
    };
    let snap = |i: usize| backups[i]["snapshot"].as_str().unwrap().to_string();
    assert_eq!(ids_of(&dry["kept"]), vec![snap(3), snap(2)], "{dry}");
    assert_eq!(ids_of(&dry["removed"]), vec![snap(1), snap(0)], "{dry}");
    let mut removed: Vec<String> =
        dry["wal_removed_names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    removed.sort();
    assert_eq!(removed, expected, "the WAL removed is exactly what precedes the third backup's start");
    assert_eq!(archived_names(&a), before, "a dry run removes nothing");
    assert_eq!(a.repo.snapshots().len(), 4);

    let done = a.repo.json(&args);
    assert_eq!(done["wal_removed_names"], dry["wal_removed_names"]);
    let after = archived_names(&a);
    let expect_after: Vec<String> = before.iter().filter(|n| !expected.contains(n)).cloned().collect();
    assert_eq!(after, expect_after);
    assert_eq!(a.repo.snapshots().len(), 2);
    let show = a.show();
    // The third backup is consistent within the second after its STOP TIME.
    let from = (stop(2) + chrono::Duration::seconds(1)).to_rfc3339();
    assert_eq!(show["retention"]["restorable_from"], from, "the third backup's end: {show}");
    let tl1 = show["timelines"].as_array().unwrap().iter().find(|t| t["timeline"] == 1).unwrap().clone();
    assert_eq!(tl1["gaps"].as_array().unwrap().len(), 0, "no gap inside the window: {tl1}");
    let verify = a.repo.run(&["wal", "verify", "--stanza", "main"]);
    assert_eq!(code(&verify), 0, "{}", String::from_utf8_lossy(&verify.stdout));
    // The space comes back with prune; everything left still checks.
    a.repo.ok(&["prune"]);

    let mut r = Restores { a: &a, n: 0 };
    let t = target.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let want: Vec<i32> = times.iter().filter(|(_, at)| *at <= target).map(|(i, _)| *i).collect();
    assert_eq!(r.run(&["--target-time", &t], false).1, want, "a time inside the window");
    let late = between(times[44].1, times[45].1);
    assert_eq!(r.run(&["--target-time", &late], false).1, ids(0..=44));
    // Before the window: refused, naming the retention, nothing written.
    let early = between(times[12].1, times[13].1);
    r.refused(&["--target-time", &early], "retention");
    let c = a.repo.run(&["check"]);
    assert_eq!(code(&c), 0, "{}", String::from_utf8_lossy(&c.stdout));
    drop(src);
}

/// After a point-in-time restore promoted timeline 2 from a point between
/// two timeline-1 backups, expiry follows timeline 2's history: the
/// timeline-1 backup past the switch is off that history and kept whole,
/// and a restore of timeline 2's latest still works.
#[test]
fn expiry_follows_the_newest_timeline_history() {
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&[]);
    src.sql("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL)");
    let b1 = basebackup(&a, &src);
    std::thread::sleep(Duration::from_millis(1200));
    insert_markers(&src, 0..10);
    let times = marker_times(&src);
    src.switch_wal();
    insert_markers(&src, 10..20);
    let b2 = basebackup(&a, &src);
    let last = src.switch_wal();
    src.wait_archived(&last, Duration::from_secs(120));
    drop(src);
    // Timeline 2 branches at row 4, before b2.
    let mut r = Restores { a: &a, n: 0 };
    let (tl2, got) = r.run(&["--target-time", &between(times[4].1, times[5].1)], true);
    assert_eq!(got, ids(0..=4));
    insert_markers(&tl2, 100..105);
    std::thread::sleep(Duration::from_millis(2500));
    let b3 = basebackup(&a, &tl2);
    insert_markers(&tl2, 105..110);
    let last = tl2.switch_wal();
    tl2.wait_archived(&last, Duration::from_secs(120));
    drop(tl2);
    let (_, before) = r.run(&["--latest", "--target-timeline", "2"], false);
    // A window that begins just before b3 was consistent: on timeline 2's
    // history the newest backup before it is b1 (b2 is on timeline 1 past
    // the switch).
    let b3_stop = chrono::DateTime::parse_from_rfc3339(b3["metadata"]["pg"]["stop_time"].as_str().unwrap()).unwrap();
    let window = (chrono::Utc::now() - b3_stop.with_timezone(&chrono::Utc)).num_seconds() + 1;
    let v = a.repo.json(&[
        "pg",
        "expire",
        "--stanza",
        "main",
        "--retain-full",
        "1",
        "--pitr-window",
        &format!("{window}s"),
    ]);
    let reasons = |b: &serde_json::Value| -> String {
        let id = b["snapshot"].as_str().unwrap();
        let row = v["kept"].as_array().unwrap().iter().find(|k| k["snapshot"] == id);
        row.map(|k| k["reasons"].to_string()).unwrap_or_else(|| "removed".into())
    };
    assert!(reasons(&b3).contains("newest"), "{v}");
    assert!(reasons(&b1).contains("start of the PITR window"), "{v}");
    assert!(reasons(&b2).contains("another timeline"), "{v}");
    // Timeline 2 still restores to its end.
    let (_, got) = r.run(&["--latest", "--target-timeline", "2"], false);
    assert!(before.starts_with(&[ids(0..=4), ids(100..=104)].concat()), "before expiry: {before:?}");
    assert_eq!(got, before, "expiry lost nothing timeline 2's end needs");
    let verify = a.repo.run(&["wal", "verify", "--stanza", "main"]);
    assert_eq!(code(&verify), 0, "{}", String::from_utf8_lossy(&verify.stdout));
}

/// A base backup whose tar was tampered with (links that lead out of
/// PGDATA, a file through one of them) is refused by `pg restore` before
/// anything is written, naming the members; nothing outside changes.
#[test]
fn a_hostile_base_backup_is_refused_and_nothing_outside_changes() {
    use cairn_tests::hostile::{append, file, symlink, tree_state};
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&[]);
    let mut c = pg::pg_command("pg_basebackup", &[]);
    c.args(src.connect_args()).args(["-D", "-", "-Ft", "-X", "none", "--checkpoint=fast"]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&o.stderr));

    let outside = a.root().join("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("victim"), b"secret").unwrap();
    let (out_s, dir_s) = (outside.display().to_string(), outside.join("dir").display().to_string());
    let tar = append(&o.stdout, &[symlink("ext", &out_s), file("ext/victim", b"pwned"), symlink("pg_wal2", &dir_s)]);
    let path = a.root().join("hostile.tar");
    std::fs::write(&path, tar).unwrap();
    let b = a.repo.json(&["backup", "--kind", "pg-base", "--stanza", "main", "--", "cat", path.to_str().unwrap()]);
    assert_eq!(b["metadata"]["pg"]["wal_complete"], true, "{b}");

    let before = tree_state(&outside, Path::new("/nonexistent"));
    let to = a.root().join("restored");
    let o = a.repo.run(&["pg", "restore", "--stanza", "main", "--latest", "--to", to.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), 10, "{err}");
    for member in ["\"ext\"", "\"ext/victim\"", "\"pg_wal2\""] {
        assert!(err.contains(member), "the refusal names {member}: {err}");
    }
    assert_eq!(tree_state(&outside, Path::new("/nonexistent")), before);
    assert!(std::fs::read_dir(&to).map_or(true, |mut d| d.next().is_none()), "nothing was restored");
}

/// A tablespace is restored where `--tablespace-map` sends it (the plan
/// says where, `tablespace_map` is rewritten to match), never into a
/// directory that already holds files, and PostgreSQL reads its table.
#[test]
fn tablespaces_restore_where_mapped_and_never_into_occupied_directories() {
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&[]);
    let location = a.root().join("ts1");
    std::fs::create_dir(&location).unwrap();
    pg::chown_to_user(&location);
    let location = std::fs::canonicalize(&location).unwrap().display().to_string();
    src.sql(&format!(
        "CREATE TABLESPACE ts1 LOCATION {};\n\
         CREATE TABLE in_ts1 TABLESPACE ts1 AS SELECT g, md5(g::text) AS h FROM generate_series(1, 5000) g;",
        pg::conf_string(&location)
    ));
    let oid = src.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
    let conninfo = format!("host={} port={} user=postgres", src.socket_dir.display(), src.port);
    let b = a.repo.json(&["pg", "backup", "--stanza", "main", "--connect", &conninfo, "--fast"]);
    assert_eq!(b["metadata"]["pg"]["wal_complete"], true, "{b}");
    let last = src.switch_wal();
    src.wait_archived(&last, Duration::from_secs(120));

    let mapped = a.root().join("ts1-restored");
    let to = a.root().join("restored");
    let map = format!("{oid}={}", mapped.display());
    let base = ["pg", "restore", "--stanza", "main", "--latest", "--to", to.to_str().unwrap()];
    let plan = a.repo.json(&[&base[..], &["--tablespace-map", &map, "--dry-run"]].concat());
    assert_eq!(plan["tablespaces"][0]["oid"], oid.as_str(), "{plan}");
    assert_eq!(plan["tablespaces"][0]["server_location"], location.as_str(), "{plan}");
    assert_eq!(plan["tablespaces"][0]["restore_to"], mapped.to_str().unwrap(), "{plan}");
    let o = a.repo.run(&[&base[..], &["--tablespace-map", &format!("{oid}=relative/dir")]].concat());
    assert_eq!(code(&o), 2, "a relative directory is a usage error: {}", String::from_utf8_lossy(&o.stderr));

    // Occupied: refused before anything is written.
    std::fs::create_dir(&mapped).unwrap();
    std::fs::write(mapped.join("precious"), b"keep me").unwrap();
    let o = a.repo.run(&[&base[..], &["--tablespace-map", &map]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(code(&o), 0, "{err}");
    assert!(err.contains("not empty") && err.contains(&oid), "{err}");
    assert!(!to.exists(), "nothing was written");
    assert_eq!(std::fs::read(mapped.join("precious")).unwrap(), b"keep me");
    std::fs::remove_file(mapped.join("precious")).unwrap();

    // A restore_command with a quote and backslashes (in a shell comment,
    // so it still runs) reaches PostgreSQL exactly as given.
    let default = plan["settings"].as_array().unwrap().iter().find(|s| s[0] == "restore_command").unwrap()[1].clone();
    let command = format!("{} # o'brien \\ c:\\temp\\new ''", default.as_str().unwrap());
    let v = a.repo.json(&[&base[..], &["--tablespace-map", &map, "--restore-command", &command]].concat());
    assert!(v["verified"].as_u64().unwrap() > 900, "tablespace files checked too: {v}");
    let written = std::fs::read_to_string(to.join("tablespace_map")).unwrap();
    assert_eq!(written.trim(), format!("{oid} {}", mapped.display()));
    let mut c = Cluster::from_copy(to.clone(), a.root(), "archive_mode = off\n");
    c.start(&[]);
    c.wait_until_promoted(Duration::from_secs(120));
    assert_eq!(c.sql("SELECT count(*) FROM in_ts1"), "5000");
    assert_eq!(c.sql("SHOW restore_command"), command);
    assert_eq!(std::fs::read_link(to.join("pg_tblspc").join(&oid)).unwrap(), mapped);
}
