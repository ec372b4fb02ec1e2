//! `cairn pg check` and the archiver watch of `cairn pg backup`, against a
//! real PostgreSQL 15: with cairn as archive_command the switched segment
//! arrives in the stanza; with archive_command failing (cairn given a
//! password file instead of a key file, as a new user would; then `false`)
//! `pg check`, `pg backup` and `backup --kind pg-base --connect` stop
//! within seconds naming the archiver's failure, instead of waiting out
//! their timeouts (issue #20 item 6).

use std::time::{Duration, Instant};

use cairn_tests::pg::{self, Cluster};
use cairn_tests::repo::code;

use crate::wal::Archive;

fn conninfo(c: &Cluster) -> String {
    format!("host={} port={} user=postgres", c.socket_dir.display(), c.port)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn pg_check_confirms_that_the_switched_segment_reaches_the_stanza() {
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&a.repo.env);
    src.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let started = Instant::now();
    let v = a.repo.json(&["pg", "check", "--stanza", "main", "--connect", &conninfo(&src), "--timeout", "60s"]);
    let took = started.elapsed();
    let segment = v["segment"].as_str().unwrap_or_else(|| panic!("no segment in {v}")).to_owned();
    assert_eq!(segment.len(), 24, "{v}");
    assert_eq!(v["stanza"], "main", "{v}");
    assert!(v["archiver"]["archived_count"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["archiver"]["failed_count"], 0, "{v}");
    // The segment it names is in the repository as soon as it returns.
    let show = a.show();
    let names: Vec<&str> = show["names"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    assert!(names.contains(&segment.as_str()), "{segment} not in the stanza: {names:?}");
    // A second check completes a later segment, and says so in words.
    let o = a.repo.run(&["pg", "check", "--stanza", "main", "--connect", &conninfo(&src)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(code(&o), 0, "{out}{}", stderr(&o));
    assert!(out.starts_with("archiving works:") && out.contains("reached stanza \"main\""), "{out}");
    let second = out.split("segment ").nth(1).and_then(|s| s.split(' ').next()).unwrap();
    assert!(second > segment.as_str(), "{second} should follow {segment}");
    eprintln!("pg check: first round trip {took:?}");
}

#[test]
fn failing_archive_command_stops_pg_check_and_pg_backup_within_seconds() {
    let a = Archive::new(None);
    // As a new user would: cairn with a password file instead of a key file.
    // `wal push` refuses every segment (a password would run Argon2 per
    // segment), so nothing ever reaches the stanza.
    let root = a.root();
    let password = root.join("password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();
    let config = root.join("password.toml");
    std::fs::write(&config, format!("repo = {:?}\nstanza = \"main\"\n", a.repo.url)).unwrap();
    pg::chown_to_user(root);
    let push = format!("{} --config {} wal push %p", a.bin.display(), config.display());
    let conf = format!("archive_mode = on\narchive_command = {}\n", pg::conf_string(&push));
    let mut src = Cluster::init(root, "src", 16, &conf);
    src.start(&[("CAIRN_PASSWORD_FILE", password.display().to_string())]);
    src.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let ci = conninfo(&src);

    let started = Instant::now();
    let o = a.repo.run(&["pg", "check", "--stanza", "main", "--connect", &ci, "--timeout", "90s"]);
    let took = started.elapsed();
    let err = stderr(&o);
    assert_eq!(code(&o), 12, "{err}");
    assert!(took < Duration::from_secs(30), "pg check took {took:?} of its 90 s: {err}");
    eprintln!("pg check failed in {took:?}:\n{err}");
    let arch = src.archiver();
    let failed = arch.last_failed_wal.clone().unwrap_or_else(|| panic!("no failure in {arch:?}"));
    assert!(err.contains("archive_command failed") && err.contains(&format!("last on {failed} at ")), "{err}");
    assert!(err.contains("hint:") && err.contains("needs a key file"), "{err}");
    assert!(src.log_text().contains("need a key file"), "the server log should hold wal push's own error");

    // pg backup: the base backup streams, then its WAL never comes; the
    // watch ends the wait at once and no snapshot is written.
    let started = Instant::now();
    let o = a.repo.run(&["pg", "backup", "--stanza", "main", "--connect", &ci, "--fast", "--wal-timeout", "90"]);
    let took = started.elapsed();
    let err = stderr(&o);
    assert_eq!(code(&o), 12, "{err}");
    assert!(took < Duration::from_secs(30), "pg backup took {took:?} of its 90 s --wal-timeout: {err}");
    eprintln!("pg backup failed in {took:?}:\n{err}");
    let failed = src.archiver().last_failed_wal.unwrap();
    assert!(err.contains("archive_command failed") && err.contains(&format!("last on {failed} at ")), "{err}");
    assert!(a.repo.snapshots().is_empty(), "no snapshot without its WAL");

    // backup --kind pg-base: pg_basebackup waits (WAIT true) for the server
    // to archive the WAL; the watch stops it.
    let mut args: Vec<String> = ["backup", "--kind", "pg-base", "--stanza", "main", "--connect", &ci, "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(pg::bin_dir().join("pg_basebackup").display().to_string());
    args.extend(src.connect_args());
    args.extend(["-D", "-", "-Ft", "-X", "none", "--checkpoint=fast"].iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let o = a.repo.run(&refs);
    let took = started.elapsed();
    let err = stderr(&o);
    assert_eq!(code(&o), 12, "{err}");
    assert!(took < Duration::from_secs(30), "backup --kind pg-base took {took:?}: {err}");
    eprintln!("backup --kind pg-base failed in {took:?}:\n{err}");
    assert!(err.contains("archive_command failed"), "{err}");
    assert!(a.repo.snapshots().is_empty(), "no snapshot without its WAL");

    // archive_command = false: the hint names what is wrong with it.
    src.append_conf("archive_command = 'false'\n");
    src.sql("SELECT pg_reload_conf()");
    src.wait_for("archive_command = false", Duration::from_secs(30), |c| c.sql("SHOW archive_command") == "false");
    let o = a.repo.run(&["pg", "check", "--stanza", "main", "--connect", &ci, "--timeout", "90s"]);
    let err = stderr(&o);
    assert_eq!(code(&o), 12, "{err}");
    assert!(err.contains("archive_command failed"), "{err}");
    assert!(err.contains("does not run `cairn wal push`"), "{err}");
}

/// A spread checkpoint (no `--fast`) makes `pg backup` wait before any data
/// comes; it says so, and names `--fast`, instead of sitting silent.
#[test]
fn pg_backup_says_it_waits_for_a_spread_checkpoint() {
    let a = Archive::new(None);
    let conf = format!("{}checkpoint_timeout = '30s'\ncheckpoint_completion_target = 0.9\n", a.conf(false));
    let mut src = Cluster::init(a.root(), "src", 16, &conf);
    src.start(&a.repo.env);
    // About 60 MiB of dirty buffers (shared_buffers is 128 MiB) for the
    // checkpoint to spread over 27 s.
    src.sql("CREATE TABLE filler AS SELECT 0 AS x WHERE false");
    src.sql("INSERT INTO filler SELECT g FROM generate_series(1, 1700000) g");
    let started = Instant::now();
    let o = a.repo.run(&["pg", "backup", "--stanza", "main", "--connect", &conninfo(&src)]);
    let took = started.elapsed();
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "{err}");
    assert!(err.contains("cairn: waiting for the server's checkpoint before the backup starts ("), "{took:?}: {err}");
    assert!(err.contains("--fast"), "{err}");
    eprintln!("pg backup without --fast took {took:?}:\n{err}");
}
