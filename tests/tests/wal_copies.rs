//! Archiving to two places (issue #21, item 3): a stanza whose
//! `[stanzas.main] copies = ["offsite"]` names an S3 copy (moto) of the
//! local primary, with real PostgreSQL 15 archiving through `cairn wal
//! push`. While the copy's server is stopped (SIGSTOP: connections hang,
//! as with a host that went away; a killed moto would lose its buckets),
//! archiving to the primary goes on with `failed_count` 0 and `wal show`
//! reports the lag; past the lag budget the push fails, so PostgreSQL keeps
//! the WAL; once the server is back, the next push catches the copy up
//! without a manual step, and the copy then holds every archived file.
//! Killed for good (connections refused), the copy again does not stop
//! archiving.

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_tests::moto::Moto;
use cairn_tests::pg::{self, Cluster};
use cairn_tests::TestRepo;

use crate::copy::copy_of_in;
use crate::wal::Archive;

const BUDGET_S: u64 = 30;

/// The archived names a repository's `wal show --list` gives.
fn names(r: &TestRepo) -> Vec<String> {
    let v = r.json(&["wal", "show", "--stanza", "main", "--list"]);
    let mut n: Vec<String> =
        v[0]["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    n.sort();
    n
}

/// `wal show` of the primary through the two-place config: its `copies`.
fn copies(a: &Archive, cfg: &Path) -> serde_json::Value {
    let v = a.repo.json(&["--config", cfg.to_str().unwrap(), "wal", "show", "--stanza", "main"]);
    v[0]["copies"].clone()
}

#[test]
fn a_stopped_copy_does_not_stop_archiving_and_catches_up_when_back() {
    let t = Instant::now();
    let moto = Moto::start();
    let a = Archive::new(None);
    let bucket = format!("walcopies{}", rand::random::<u32>());
    moto.create_bucket(&bucket);
    let s = copy_of_in(pg::shared_dir(), &a.repo, Some(format!("s3://{bucket}/cairn")), moto.env());
    pg::chown_to_user(s.dir.path());
    let cfg = a.root().join("two-places.toml");
    std::fs::write(
        &cfg,
        format!(
            "repo = {:?}\nkey_file = {:?}\nstanza = \"main\"\ncache_dir = {:?}\n\n[repos.offsite]\nrepo = {:?}\n\
             key_file = {:?}\ncache_dir = {:?}\n\n[stanzas.main]\ncopies = [\"offsite\"]\nlag_budget = \"{BUDGET_S}s\"\n\
             copy_timeout = \"2s\"\n\n[sources.pg]\nkind = \"pg-base\"\nconnect = \"host=/nonexistent\"\n",
            a.repo.url,
            a.repo.key,
            a.root().join("pg-cache"),
            s.url,
            s.key,
            s.cache
        ),
    )
    .unwrap();
    pg::chown_to_user(a.root());
    let push = format!("{} --config {} wal push %p", a.bin.display(), cfg.display());
    let conf = format!("archive_mode = on\narchive_command = {}\n", pg::conf_string(&push));
    let env = moto.env();
    let mut src = Cluster::init(a.root(), "src", 1, &conf);
    src.start(&env);
    src.sql("CREATE TABLE marker (id int primary key)");

    // Both places reachable: every file is in both.
    for i in 0..2 {
        src.sql(&format!("INSERT INTO marker VALUES ({i})"));
        src.switch_wal();
    }
    let last = src.switch_wal();
    let arch = src.wait_archived(&last, Duration::from_secs(60));
    assert_eq!(arch.failed_count, 0, "{}", src.log_tail(30));
    assert_eq!(names(&s), names(&a.repo), "the copy holds what the primary holds");
    assert_eq!(copies(&a, &cfg)[0]["behind"], 0);

    // The copy's server stops: archiving to the primary goes on.
    moto.pause();
    let paused = Instant::now();
    let mut missed = Vec::new();
    for i in 10..13 {
        src.sql(&format!("INSERT INTO marker VALUES ({i})"));
        missed.push(src.switch_wal());
        let arch = src.wait_archived(missed.last().unwrap(), Duration::from_secs(60));
        assert!(paused.elapsed() < Duration::from_secs(BUDGET_S), "too slow to stay within the budget");
        assert_eq!(arch.failed_count, 0, "archiving stopped within the budget: {}", src.log_tail(30));
    }
    let primary_names = names(&a.repo);
    for m in &missed {
        assert!(primary_names.contains(m), "{m} is not in the primary");
    }
    let lag = copies(&a, &cfg);
    assert_eq!(lag[0]["name"], "offsite", "{lag}");
    assert!(lag[0]["behind"].as_u64().unwrap() >= 3, "wal show does not report the lag: {lag}");
    let text = String::from_utf8(a.repo.ok(&["--config", cfg.to_str().unwrap(), "wal", "show"])).unwrap();
    assert!(text.contains("copy offsite:") && text.contains("behind"), "{text}");
    eprintln!("lag while stopped: {lag}");
    // `status` shows it too (and is not ok for lack of a base backup here).
    let o = a.repo.run(&["--config", cfg.to_str().unwrap(), "--json", "status"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &st["sources"][0]["wal_copies"][0];
    assert!(c["name"] == "offsite" && c["behind"].as_u64().unwrap() >= 3, "status: {st}");

    // Past the budget the push fails: PostgreSQL keeps the segment. (The
    // first miss was recorded a copy timeout, 2 s, after the pause.)
    std::thread::sleep(Duration::from_secs(BUDGET_S + 4).saturating_sub(paused.elapsed()));
    src.sql("INSERT INTO marker VALUES (20)");
    let refused = src.switch_wal();
    src.wait_for("archive_command to fail past the lag budget", Duration::from_secs(60), |c| {
        c.archiver().failed_count > 0
    });
    let arch = src.archiver();
    assert_eq!(arch.last_failed_wal.as_deref(), Some(refused.as_str()), "{arch:?}");
    let ready = src.data.join("pg_wal/archive_status").join(format!("{refused}.ready"));
    assert!(ready.exists(), "PostgreSQL no longer keeps {refused}");
    assert!(src.log_text().contains("lag budget"), "the failure does not say why: {}", src.log_tail(20));

    // Back: the next push catches the copy up, with no manual step.
    moto.resume();
    src.sql("INSERT INTO marker VALUES (30)");
    let after = src.switch_wal();
    let arch = src.wait_archived(&after, Duration::from_secs(120));
    assert!(!ready.exists(), "{refused} was never archived");
    let (p, c) = (names(&a.repo), names(&s));
    assert_eq!(c, p, "the copy did not catch up");
    for m in missed.iter().chain([&refused, &after]) {
        assert!(c.contains(m), "{m} is not in the copy");
    }
    assert_eq!(copies(&a, &cfg)[0]["behind"], 0, "markers left after the catch-up");
    assert!(a.repo.objects("walbehind").is_empty(), "markers left in the primary");
    s.ok(&["wal", "verify", "--stanza", "main"]);

    // The copy's server killed (connections refused, not hanging):
    // archiving to the primary goes on, and the copy is behind.
    drop(moto);
    src.sql("INSERT INTO marker VALUES (40)");
    let gone = src.switch_wal();
    let after_kill = src.wait_archived(&gone, Duration::from_secs(60));
    assert_eq!(
        after_kill.failed_count,
        arch.failed_count,
        "a refused connection failed the push: {}",
        src.log_tail(20)
    );
    assert!(names(&a.repo).contains(&gone));
    let lag = copies(&a, &cfg);
    assert!(lag[0]["behind"].as_u64().unwrap() >= 1, "{lag}");
    src.stop();
    a.repo.ok(&["wal", "verify", "--stanza", "main"]);
    eprintln!("failed_count {} (the refused push), {:?} in all", arch.failed_count, t.elapsed());
}
