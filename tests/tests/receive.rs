//! `cairn pg receive` against a real PostgreSQL 15: as a synchronous
//! standby it loses no committed transaction when the primary dies with
//! its data directory; killed and restarted it resumes without a gap; it
//! refuses another cluster's server.
//!
//! `CAIRN_TEST_RECEIVE_UNSAFE_FLUSH=1` makes the receiver report WAL as
//! durable without storing it: the zero-loss test then fails, which shows
//! it can.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::pg::{self, Cluster};

use crate::pitr::basebackup;
use crate::wal::Archive;

/// `cairn pg receive` as the server's OS user (so that the repository
/// stays writable for archive_command's pushes), in its own process so
/// that it can be killed.
pub(crate) fn receiver(a: &Archive, src: &Cluster, extra: &[&str]) -> Child {
    let conninfo = format!("host={} port={} user=postgres application_name=cairn", src.socket_dir.display(), src.port);
    let mut args: Vec<String> = vec![
        a.bin.display().to_string(),
        "--config".into(),
        a.config().display().to_string(),
        "--json".into(),
        "pg".into(),
        "receive".into(),
        "--stanza".into(),
        "main".into(),
        "--connect".into(),
        conninfo,
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = if pg::running_as_root() {
        pg::ensure_os_user();
        let id = |flag: &str| {
            let o = Command::new("id").args([flag, pg::os_user()]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let mut c = Command::new("setpriv");
        c.args([format!("--reuid={}", id("-u")), format!("--regid={}", id("-g")), "--clear-groups".into()]);
        c.args(&args);
        c
    } else {
        let mut c = Command::new(&args[0]);
        c.args(&args[1..]);
        c
    };
    let log = std::fs::File::create(a.root().join(format!("receive-{}.log", rand::random::<u32>()))).unwrap();
    cmd.env("RUST_LOG", "cairn_engine=info").current_dir("/").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    for (k, v) in &a.repo.env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("starting cairn pg receive")
}

/// Waits until the receiver streams from `src` (as `sync` when asked).
pub(crate) fn wait_streaming(src: &Cluster, sync: bool) {
    let want = if sync { "streaming sync" } else { "streaming" };
    src.wait_for("cairn to stream", Duration::from_secs(60), |c| {
        let s =
            c.try_sql("SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = 'cairn'");
        s.is_ok_and(|s| s.starts_with(want))
    });
}

pub(crate) fn sigterm(child: &Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
}

pub(crate) fn sigkill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A marker writer: one row per transaction, ~20 ms apart, each id
/// recorded only once its INSERT returned success.
struct Markers {
    acked: Arc<Mutex<Vec<i32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Markers {
    fn start(src: &Cluster) -> Markers {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // One psql session, fed statements one at a time: `\echo` after
        // each INSERT reports that it returned.
        let mut cmd = pg::pg_command("psql", &[]);
        cmd.args(src.connect_args());
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres"]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let (a2, s2) = (acked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let mut stdin = child.stdin.take().unwrap();
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            for i in 1.. {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let stmt = format!("INSERT INTO marker VALUES ({i}, clock_timestamp());\n\\echo ok {i}\n");
                if stdin.write_all(stmt.as_bytes()).and_then(|()| stdin.flush()).is_err() {
                    break;
                }
                line.clear();
                match out.read_line(&mut line) {
                    Ok(n) if n > 0 && line.trim() == format!("ok {i}") => a2.lock().unwrap().push(i),
                    _ => break,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(stdin);
            let _ = child.kill();
            let _ = child.wait();
        });
        Markers { acked, stop, thread: Some(thread) }
    }

    fn finish(mut self) -> Vec<i32> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// pgbench in the background; its failure (the server killed) is expected.
fn pgbench(src: &Cluster, seconds: u32) -> Child {
    let mut cmd = pg::pg_command("pgbench", &[]);
    cmd.args(src.connect_args());
    cmd.args(["-n", "-c", "2", "-T", &seconds.to_string(), "postgres"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().unwrap()
}

/// Restores `--latest` into a new directory and starts it; returns it.
pub(crate) fn restore_latest(a: &Archive, name: &str) -> Cluster {
    let dir = a.root().join(name);
    let v = a.repo.json(&["pg", "restore", "--stanza", "main", "--latest", "--to", dir.to_str().unwrap()]);
    assert!(v["verified"].as_u64().unwrap() > 900, "{v}");
    let mut c = Cluster::from_copy(dir, a.root(), "archive_mode = off\nsynchronous_standby_names = ''\n");
    c.start(&a.repo.env);
    c.wait_until_promoted(Duration::from_secs(120));
    c
}

pub(crate) fn ids(c: &Cluster) -> Vec<i32> {
    c.sql("SELECT id FROM marker ORDER BY id").lines().map(|l| l.parse().unwrap()).collect()
}

/// The server a test receives from, `name` under the archive's root: the
/// archive's settings and `extra` in its configuration, pgbench's tables
/// when `bench`, the marker table, and a base backup.
pub(crate) fn source(a: &Archive, name: &str, extra: &str, bench: bool) -> Cluster {
    let mut src = Cluster::init(a.root(), name, 16, &format!("{}{extra}", a.conf(false)));
    src.start(&a.repo.env);
    if bench {
        src.pgbench(&["-i", "-s", "2", "-q"]);
    }
    src.sql("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL)");
    basebackup(a, &src);
    src
}

/// pgbench's own invariant: the accounts' balances sum to its history's deltas.
pub(crate) fn balance_holds(c: &Cluster) {
    let balance = c.sql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
    );
    let (acc, hist) = balance.split_once(' ').unwrap();
    assert_eq!(acc, hist, "pgbench's balance invariant");
}

/// The primary dies (SIGKILL, data directory deleted) `after` into a
/// marker writer and pgbench; the synchronous receiver is then killed
/// too. The restore holds every marker whose INSERT returned, and
/// pgbench's balances agree with its history.
fn zero_loss(after: Duration, s3: Option<&cairn_tests::moto::Moto>) {
    zero_loss_killing(after, s3, false)
}

/// [`zero_loss`]; with `receiver_first` the receiver is SIGKILLed just
/// before the primary (the host lost at once), so it cannot write a
/// `.stream` manifest when the connection drops: on a local repository
/// the commits acknowledged since its last one are only in the segment's
/// journal, and the restore must find them there.
fn zero_loss_killing(after: Duration, s3: Option<&cairn_tests::moto::Moto>, receiver_first: bool) {
    let a = Archive::new(s3);
    let mut src = source(&a, "src", "wal_sender_timeout = 10s\n", true);

    let mut rx = receiver(&a, &src, &["--slot", "cairn", "--create-slot", "--synchronous"]);
    wait_streaming(&src, false);
    src.sql("ALTER SYSTEM SET synchronous_standby_names = 'cairn'; SELECT pg_reload_conf()");
    wait_streaming(&src, true);

    let markers = Markers::start(&src);
    let mut bench = pgbench(&src, 120);
    std::thread::sleep(after);
    let killed_at = Instant::now();
    if receiver_first {
        sigkill(&mut rx);
    }
    src.kill_hard();
    std::fs::remove_dir_all(&src.data).unwrap();
    let acked = markers.finish();
    let _ = bench.kill();
    let _ = bench.wait();
    // The receiver dies too: only what it had made durable counts.
    sigkill(&mut rx);
    assert!(acked.len() > 20, "the marker writer committed only {} rows", acked.len());
    if receiver_first && s3.is_none() {
        let journals = cairn_tests::repo::files_under(&a.root().join("repo").join("waljournal"));
        assert_eq!(journals.len(), 1, "one segment journal is left behind: {journals:?}");
    }

    let restored = restore_latest(&a, "restored");
    let got = ids(&restored);
    let lost: Vec<i32> = acked.iter().filter(|i| got.binary_search(i).is_err()).copied().collect();
    eprintln!(
        "zero_loss ({}{}) after {after:?}: {} markers acknowledged, {} restored, {} lost; restore took {:?}",
        if s3.is_some() { "S3" } else { "local" },
        if receiver_first { ", receiver killed first" } else { "" },
        acked.len(),
        got.len(),
        lost.len(),
        killed_at.elapsed()
    );
    assert!(lost.is_empty(), "committed markers lost: {lost:?} (of {})", acked.len());
    balance_holds(&restored);
    let tx: u64 = restored.sql("SELECT count(*) FROM pgbench_history").parse().unwrap();
    assert!(tx > 0, "pgbench committed nothing");
}

#[test]
fn synchronous_receiver_loses_no_commit_when_the_primary_dies() {
    zero_loss(Duration::from_secs(4), None);
}

#[test]
fn synchronous_receiver_into_s3_loses_no_commit() {
    let moto = cairn_tests::moto::Moto::start();
    zero_loss(Duration::from_secs(4), Some(&moto));
}

#[test]
fn synchronous_receiver_loses_no_commit_at_other_moments() {
    for after in [Duration::from_millis(1500), Duration::from_secs(9)] {
        zero_loss(after, None);
    }
}

#[test]
fn synchronous_receiver_killed_with_the_primary_loses_no_commit() {
    zero_loss_killing(Duration::from_millis(5300), None, true);
}

/// Without `--synchronous` commits do not wait for the receiver: what is
/// lost when the primary and the receiver die together is at most what
/// arrived within the last flush interval (1 s here), plus what the
/// server had not sent yet.
#[test]
fn asynchronous_receiver_loses_at_most_a_flush_interval() {
    let a = Archive::new(None);
    let mut src = source(&a, "src", "", true);
    let mut rx = receiver(&a, &src, &["--slot", "cairn", "--create-slot", "--flush-interval", "1s"]);
    wait_streaming(&src, false);
    let markers = Markers::start(&src);
    let mut bench = pgbench(&src, 120);
    std::thread::sleep(Duration::from_secs(5));
    let killed = Instant::now();
    // The receiver first: dying on its own after the server, it would
    // first make durable what the lost connection left it.
    sigkill(&mut rx);
    src.kill_hard();
    let acked = markers.finish();
    let _ = bench.kill();
    let _ = bench.wait();
    let writing = killed.elapsed();
    std::fs::remove_dir_all(&src.data).unwrap();
    let restored = restore_latest(&a, "restored");
    let got = ids(&restored);
    let lost: Vec<i32> = acked.iter().filter(|i| got.binary_search(i).is_err()).copied().collect();
    // Markers are ~20 ms apart plus their commit: the rows of one second.
    let per_s = acked.len() as f64 / 5.0;
    let lost_s = lost.len() as f64 / per_s;
    eprintln!(
        "asynchronous, flush interval 1 s: {} markers acknowledged, {} lost (~{lost_s:.2} s of commits; writer stopped {writing:?} after the kill)",
        acked.len(),
        lost.len()
    );
    // Lost rows are the newest ones, and no more than 1 s of them plus a margin.
    if let Some(first) = lost.first() {
        assert!(lost.iter().all(|i| i >= first) && acked.iter().filter(|i| *i >= first).count() == lost.len());
    }
    assert!(lost_s <= 1.5, "lost {} markers, ~{lost_s:.2} s of commits", lost.len());
    balance_holds(&restored);
}

/// Killed with SIGKILL mid-stream and started again, the receiver goes on
/// from the repository's position: every segment arrives once, the
/// archive verifies, and archive_command's pushes of the same segments
/// are accepted as already archived.
#[test]
fn receiver_killed_and_restarted_resumes_without_a_gap() {
    let a = Archive::new(None);
    let mut src = source(&a, "src", "", true);
    let mut rx = receiver(&a, &src, &["--slot", "cairn", "--create-slot", "--flush-interval", "200ms"]);
    wait_streaming(&src, false);
    src.pgbench(&["-n", "-c", "2", "-t", "1500"]);
    sigkill(&mut rx);
    src.pgbench(&["-n", "-c", "2", "-t", "1500"]);
    let rx = receiver(&a, &src, &["--slot", "cairn", "--flush-interval", "200ms"]);
    wait_streaming(&src, false);
    for i in 1..=50 {
        src.sql(&format!("INSERT INTO marker VALUES ({i}, clock_timestamp())"));
    }
    let end = src.sql("SELECT pg_current_wal_flush_lsn()");
    src.wait_for("the receiver to make the last insert durable", Duration::from_secs(30), |c| {
        c.try_sql(&format!("SELECT flush_lsn >= '{end}' FROM pg_stat_replication WHERE application_name = 'cairn'"))
            .is_ok_and(|s| s == "t")
    });
    sigterm(&rx);
    let out = rx.wait_with_output().unwrap();
    assert!(out.status.success(), "pg receive after SIGTERM: {:?}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["flushes"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["received_bytes"].as_u64().unwrap() > 0, "{report}");

    let show = a.show();
    let tl = &show["timelines"][0];
    assert!(tl["gaps"].as_array().unwrap().is_empty(), "{show}");
    assert!(tl["streamed"].is_object(), "wal show reports where streamed WAL ends: {show}");
    let v = a.repo.json(&["wal", "verify", "--stanza", "main"]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");

    // The segments the archiver pushes (the same bytes) are accepted.
    let seg = src.switch_wal();
    src.wait_archived(&seg, Duration::from_secs(60));
    let arch = src.archiver();
    assert_eq!(arch.failed_count, 0, "archive_command failed: {arch:?}\n{}", src.log_tail(30));

    // Every marker is restorable from the receiver's WAL.
    src.kill_hard();
    let restored = restore_latest(&a, "restored");
    assert_eq!(ids(&restored), (1..=50).collect::<Vec<_>>());
}

/// A receiver pointed at another cluster than the stanza's is refused
/// (exit 8) before it stores anything.
#[test]
fn receiver_refuses_another_cluster() {
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&a.repo.env);
    let seg = src.switch_wal();
    src.wait_archived(&seg, Duration::from_secs(60));
    let mut other = Cluster::init(a.root(), "other", 16, "");
    other.start(&[]);
    let before: Vec<PathBuf> = cairn_tests::repo::files_under(&a.repo.repo_dir());
    let rx = receiver(&a, &other, &[]);
    let out = rx.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(8), "exit status for another cluster");
    assert_eq!(cairn_tests::repo::files_under(&a.repo.repo_dir()), before, "nothing stored");
}

/// `cairn status` reports the receive lag: the streamed segment, where it
/// ends and how long ago it was flushed, as the recovery point when it is
/// newer than the newest archived segment (archiving is paused here), and
/// as the `cairn_wal_receive_lag_seconds` gauge. A second call, with the
/// WAL catalogue cache warm, sees the receiver's later flushes. With the
/// server idle the lag stays within the status interval (the receiver's
/// heartbeat re-dates its streamed segment).
#[test]
fn status_reports_the_receive_lag() {
    let a = Archive::new(None);
    let src = source(&a, "src", "", false);
    src.sql("ALTER SYSTEM SET archive_command = ''; SELECT pg_reload_conf()");
    let config = a.root().join("status.toml");
    std::fs::write(
        &config,
        format!(
            "repo = {:?}\nkey_file = {:?}\ncache_dir = {:?}\nstanza = \"main\"\n\n[sources.pg-main]\nkind = \"pg-base\"\n\
             connect = \"host={} port={} user=postgres\"\nrpo = \"60s\"\n",
            a.repo.url,
            a.repo.key.to_str().unwrap(),
            a.root().join("status-cache").to_str().unwrap(),
            src.socket_dir.display(),
            src.port
        ),
    )
    .unwrap();
    let status = || {
        let o = a.repo.cmd(&["--config", config.to_str().unwrap(), "--json", "status"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["sources"].as_array().unwrap().iter().find(|s| s["source"] == "pg-main").unwrap().clone()
    };
    let before = status();
    assert!(before["wal_streamed"].is_null(), "nothing streamed yet: {before}");
    std::thread::sleep(Duration::from_secs(3));

    let rx = receiver(
        &a,
        &src,
        &["--slot", "cairn", "--create-slot", "--flush-interval", "200ms", "--status-interval", "1s"],
    );
    wait_streaming(&src, false);
    let durable = |n: i32| {
        src.sql(&format!("INSERT INTO marker VALUES ({n}, clock_timestamp())"));
        let end = src.sql("SELECT pg_current_wal_flush_lsn()");
        src.wait_for("the receiver to make the insert durable", Duration::from_secs(30), |c| {
            c.try_sql(&format!("SELECT flush_lsn >= '{end}' FROM pg_stat_replication WHERE application_name = 'cairn'"))
                .is_ok_and(|s| s == "t")
        });
        end
    };
    let end1 = durable(1);
    let s1 = status();
    eprintln!("status while receiving: {s1}");
    let (archive, receive) = (s1["archive_lag_s"].as_f64().unwrap(), s1["receive_lag_s"].as_f64().unwrap());
    assert!(s1["wal_streamed"].as_str().is_some_and(|w| w.len() == 24), "{s1}");
    assert!(receive < 3.0 && archive > receive + 2.0, "receive lag {receive} s, archive lag {archive} s");
    assert_eq!(s1["recovery_point_age_s"].as_f64(), Some(receive), "the streamed WAL is the recovery point: {s1}");
    assert_eq!(s1["rpo"]["ok"], true, "{s1}");
    let lsn = |s: &str| {
        let (h, l) = s.split_once('/').unwrap();
        (u64::from_str_radix(h, 16).unwrap() << 32) | u64::from_str_radix(l, 16).unwrap()
    };
    assert!(lsn(s1["wal_streamed_end_lsn"].as_str().unwrap()) >= lsn(&end1), "{s1} ends before {end1}");

    let end2 = durable(2);
    let s2 = status();
    assert!(
        lsn(s2["wal_streamed_end_lsn"].as_str().unwrap()) >= lsn(&end2),
        "{s2} ends before {end2} (a stale cache?)"
    );
    let prom = a.repo.cmd(&["--config", config.to_str().unwrap(), "status", "--prometheus"]).output().unwrap();
    let prom = String::from_utf8(prom.stdout).unwrap();
    crate::operator::promtool_check("status --prometheus", &prom);
    let gauge = prom
        .lines()
        .find_map(|l| l.strip_prefix("cairn_wal_receive_lag_seconds{source=\"pg-main\"} "))
        .unwrap_or_else(|| panic!("no receive lag gauge:\n{prom}"));
    assert!(gauge.parse::<f64>().unwrap() < 5.0, "{gauge}");
    // Idle: nothing to receive for 6 s, yet the repository is current.
    std::thread::sleep(Duration::from_secs(6));
    let idle = status();
    let lag = idle["receive_lag_s"].as_f64().unwrap();
    assert!(lag < 3.0, "receive lag {lag} s after 6 s idle (no heartbeat?): {idle}");
    assert_eq!(idle["wal_streamed_end_lsn"], s2["wal_streamed_end_lsn"], "nothing new arrived: {idle}");
    sigterm(&rx);
    let _ = rx.wait_with_output();
}

/// A time target inside the segment the receiver holds only in part
/// (archiving is paused, so nothing else has it): `pg restore
/// --target-time` plans with the streamed segment and recovery stops
/// exactly there, also between the last two commits received.
#[test]
fn time_target_inside_the_streamed_segment() {
    use crate::pitr::{between, insert_markers, marker_times};
    let a = Archive::new(None);
    let mut src = source(&a, "src", "", false);
    src.sql("ALTER SYSTEM SET archive_command = ''; SELECT pg_reload_conf()");
    let rx = receiver(&a, &src, &["--slot", "cairn", "--create-slot", "--flush-interval", "200ms"]);
    wait_streaming(&src, false);
    // (+ 1: an LSN at a segment's start names the segment before.)
    let segment = src.sql("SELECT pg_walfile_name(pg_current_wal_insert_lsn() + 1)");
    insert_markers(&src, 0..20);
    assert_eq!(src.sql("SELECT pg_walfile_name(pg_current_wal_lsn())"), segment, "one segment for every marker");
    let end = src.sql("SELECT pg_current_wal_flush_lsn()");
    src.wait_for("the receiver to make the markers durable", Duration::from_secs(30), |c| {
        c.try_sql(&format!("SELECT flush_lsn >= '{end}' FROM pg_stat_replication WHERE application_name = 'cairn'"))
            .is_ok_and(|s| s == "t")
    });
    sigterm(&rx);
    assert!(rx.wait_with_output().unwrap().status.success());
    let times = marker_times(&src);
    src.kill_hard();

    let show = a.show();
    let streamed = &show["timelines"][0]["streamed"];
    assert_eq!(streamed["segment"], segment.as_str(), "the markers are in the streamed segment: {show}");
    let last = chrono::DateTime::parse_from_rfc3339(streamed["last_commit"].as_str().unwrap()).unwrap();
    assert!(last >= times[19].1, "the streamed segment's last commit {last} is marker 19's ({:?})", times[19].1);

    for (n, want) in [(9, 0..=9), (18, 0..=18)] {
        let t = between(times[n].1, times[n + 1].1);
        let dir = a.root().join(format!("to-{n}"));
        let v = a.repo.json(&["pg", "restore", "--stanza", "main", "--to", dir.to_str().unwrap(), "--target-time", &t]);
        assert!(v["verified"].as_u64().unwrap() > 900, "{v}");
        let mut c = Cluster::from_copy(dir, a.root(), "archive_mode = off\n");
        c.start(&a.repo.env);
        c.wait_until_promoted(Duration::from_secs(120));
        assert_eq!(ids(&c), want.collect::<Vec<_>>(), "restored to {t}, between markers {n} and {}", n + 1);
        c.stop();
    }
}

/// Two receivers on one stanza (no slot keeps the second out): each
/// flush replaces only the `.stream` version its receiver wrote or read,
/// so one of them stops with exit 8 instead of shortening what the other
/// reported durable.
#[test]
fn a_second_receiver_on_the_stanza_is_stopped() {
    let a = Archive::new(None);
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    src.start(&a.repo.env);
    src.sql("CREATE TABLE marker (id int PRIMARY KEY)");
    let seg = src.switch_wal();
    src.wait_archived(&seg, Duration::from_secs(60));
    let mut first = receiver(&a, &src, &["--flush-interval", "200ms"]);
    wait_streaming(&src, false);
    src.sql("INSERT INTO marker VALUES (0)");
    std::thread::sleep(Duration::from_millis(600));
    let mut second = receiver(&a, &src, &["--flush-interval", "200ms"]);
    let started = Instant::now();
    let mut id = 1;
    let stopped = loop {
        src.sql(&format!("INSERT INTO marker VALUES ({id})"));
        id += 1;
        if let Some(s) = first.try_wait().unwrap() {
            break s;
        }
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "two receivers wrote one stanza for 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    sigkill(&mut first);
    sigkill(&mut second);
    assert_eq!(stopped.code(), Some(8), "exit status of the receiver that lost");
    let logs: String = std::fs::read_dir(a.root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("receive-"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(logs.contains("one `cairn pg receive` per stanza"), "{logs}");
    a.repo.ok(&["wal", "verify", "--stanza", "main"]);
}

/// A full disk under a synchronous receiver, the repository on a tmpfs
/// made by the test:
/// 1. 1 MiB left, then a new segment: the completed segment's journal
///    goes, and its space serves the next one's;
/// 2. full to the last byte: the segment's journal was filled with zeros
///    when made, so commits are still made durable there, while the
///    `.stream` flushes fail (the receiver reconnects and goes on);
/// 3. a new segment: the full one cannot be stored, nothing more is
///    reported durable, and commits wait;
/// 4. room again: it goes on by itself, and the restore holds every
///    acknowledged commit. The receiver never exits.
#[test]
fn synchronous_receiver_waits_out_a_full_disk() {
    let a = Archive::new(None);
    let repo = a.repo.repo_dir();
    let saved = a.root().join("repo-saved");
    let cp = |from: &std::path::Path, to: &std::path::Path| {
        let o = Command::new("cp").arg("-a").arg(format!("{}/.", from.display())).arg(to).output().unwrap();
        assert!(o.status.success(), "cp: {}", String::from_utf8_lossy(&o.stderr));
    };
    std::fs::create_dir_all(&saved).unwrap();
    cp(&repo, &saved);
    let disk = crate::fulldisk::Small::mount(&repo, 160);
    cp(&saved, &repo);
    pg::chown_to_user(&repo);

    let mut src = source(&a, "src", "wal_sender_timeout = 10s\n", false);
    let mut rx = receiver(&a, &src, &["--slot", "cairn", "--create-slot", "--synchronous"]);
    wait_streaming(&src, false);
    src.sql("ALTER SYSTEM SET synchronous_standby_names = 'cairn'; SELECT pg_reload_conf()");
    wait_streaming(&src, true);
    let markers = Markers::start(&src);
    let acked = || markers.acked.lock().unwrap().len();
    let alive = |rx: &mut Child, when: &str| assert!(rx.try_wait().unwrap().is_none(), "the receiver exited {when}");
    std::thread::sleep(Duration::from_secs(2));

    // 1.
    let ballast = disk.fill();
    let len = std::fs::metadata(&ballast).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&ballast).unwrap().set_len(len.saturating_sub(1 << 20)).unwrap();
    src.sql("SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(4));
    alive(&mut rx, "with 1 MiB left");
    // 2. A second ballast: writing the first again would free its space
    // for a moment.
    let ballast2 = repo.join("ballast2");
    let _ = Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", ballast2.display())).arg("bs=64k").output();
    let full = acked();
    std::thread::sleep(Duration::from_secs(4));
    alive(&mut rx, "on a full disk");
    assert!(acked() > full, "commits stopped although the segment's journal has room");
    // 3.
    src.sql("SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(6));
    let stalled = acked();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(acked(), stalled, "commits were acknowledged while nothing could be stored");
    alive(&mut rx, "when nothing could be stored");
    let logs: String = std::fs::read_dir(a.root())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("receive-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("No space left on device"), "the receiver's log names the cause:\n{logs}");

    // 4.
    std::fs::remove_file(&ballast).unwrap();
    std::fs::remove_file(&ballast2).unwrap();
    let until = Instant::now() + Duration::from_secs(90);
    while acked() <= stalled + 20 {
        assert!(Instant::now() < until, "commits still wait 90 s after the disk has room again");
        alive(&mut rx, "after the disk had room again");
        std::thread::sleep(Duration::from_millis(200));
    }
    src.kill_hard();
    let acked = markers.finish();
    sigkill(&mut rx);
    let restored = restore_latest(&a, "restored");
    let got = ids(&restored);
    let lost: Vec<i32> = acked.iter().filter(|i| got.binary_search(i).is_err()).copied().collect();
    eprintln!(
        "full disk: {full} acknowledged when full, {stalled} when stalled, {} in all, {} restored",
        acked.len(),
        got.len()
    );
    assert!(lost.is_empty(), "committed markers lost: {lost:?} (of {})", acked.len());
    drop(restored);
    drop(disk);
}
