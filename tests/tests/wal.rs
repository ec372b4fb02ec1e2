//! `cairn wal push` / `wal fetch` as PostgreSQL 15's archive_command and
//! restore_command, against a real server, on a local repository and on S3
//! (moto): everything PostgreSQL archives is in the catalogue, and a
//! recovery from a file-level copy fetches every segment it needs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_tests::moto::Moto;
use cairn_tests::pg::{self, Cluster};
use cairn_tests::repo::{cairn_bin, code};
use cairn_tests::TestRepo;
use rand::{Rng, SeedableRng};

/// A repository, a key file and a config file that the PostgreSQL user can
/// read, and a copy of the binary it can execute.
pub(crate) struct Archive {
    pub(crate) repo: TestRepo,
    pub(crate) bin: PathBuf,
    config: PathBuf,
}

impl Archive {
    pub(crate) fn new(s3: Option<&Moto>) -> Archive {
        let shared = pg::shared_dir();
        let (url, env) = match s3 {
            None => (shared.path().join("repo").to_string_lossy().into_owned(), Vec::new()),
            Some(m) => {
                let bucket = format!("wal{}", rand::random::<u32>());
                m.create_bucket(&bucket);
                (format!("s3://{bucket}/cairn"), m.env())
            }
        };
        let repo = TestRepo::at(shared, url, env);
        repo.ok(&["init"]);
        let root = repo.dir.path().to_path_buf();
        let bin = root.join("cairn");
        std::fs::copy(cairn_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = root.join("cairn.toml");
        std::fs::write(
            &config,
            format!("repo = {:?}\nkey_file = {:?}\nstanza = \"main\"\n", repo.url, repo.key.to_str().unwrap()),
        )
        .unwrap();
        pg::chown_to_user(&root);
        assert_eq!(std::fs::metadata(&repo.key).unwrap().permissions().mode() & 0o777, 0o600);
        Archive { repo, bin, config }
    }

    /// The config file the PostgreSQL user's commands read.
    pub(crate) fn config(&self) -> &Path {
        &self.config
    }

    pub(crate) fn root(&self) -> &Path {
        self.repo.dir.path()
    }

    pub(crate) fn conf(&self, prefetch: bool) -> String {
        let push = format!("{} --config {} wal push %p", self.bin.display(), self.config.display());
        let spool = if prefetch {
            format!("--spool {} --prefetch 4 ", self.root().join("spool").display())
        } else {
            String::new()
        };
        let fetch = format!("{} --config {} wal fetch {spool}%f %p", self.bin.display(), self.config.display());
        format!(
            "archive_mode = on\narchive_command = {}\nrestore_command = {}\n",
            pg::conf_string(&push),
            pg::conf_string(&fetch)
        )
    }

    pub(crate) fn show(&self) -> serde_json::Value {
        let v = self.repo.json(&["wal", "show", "--stanza", "main", "--list"]);
        v.as_array().unwrap()[0].clone()
    }
}

pub(crate) fn b3(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap()).to_hex().to_string()
}

fn archive_and_recover(s3: Option<&Moto>, prefetch: bool) {
    let a = Archive::new(s3);
    let env: Vec<(&str, String)> = a.repo.env.clone();
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(prefetch));
    src.start(&env);
    src.sql("CREATE TABLE marker (id int primary key, at timestamptz default clock_timestamp())");
    src.pgbench(&["-i", "-s", "4", "-q"]);
    let copy = a.root().join("copy");
    src.hot_copy(&copy);
    src.pgbench(&["-c", "2", "-t", "1500", "-n"]);
    for i in 0..3 {
        src.sql(&format!("INSERT INTO marker (id) SELECT g FROM generate_series({}, {}) g", i * 100, i * 100 + 99));
        src.switch_wal();
    }
    src.sql("INSERT INTO marker (id) VALUES (1000)");
    let last = src.switch_wal();
    let arch = src.wait_archived(&last, Duration::from_secs(120));
    assert_eq!(arch.failed_count, 0, "archive_command failed: {}", src.log_tail(40));
    let history = src.sql("SELECT count(*) FROM pgbench_history");
    let balance = src.sql("SELECT sum(abalance) FROM pgbench_accounts");
    let markers = src.sql("SELECT count(*) FROM marker");
    assert_eq!(markers, "301");

    // Every file PostgreSQL reports archived is in the catalogue, and the
    // archive of timeline 1 has no gap.
    let show = a.show();
    let names: Vec<String> = show["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().into()).collect();
    assert_eq!(names.len() as u64, arch.archived_count, "catalogue {names:?} vs pg_stat_archiver {arch:?}");
    assert!(names.contains(&last), "{last} missing from {names:?}");
    assert_eq!(show["cluster"]["system_id"], src.system_id().to_string());
    let tl1 = &show["timelines"][0];
    assert_eq!(tl1["timeline"], 1);
    assert_eq!(tl1["gaps"].as_array().unwrap().len(), 0, "{tl1}");
    assert!(tl1["latest_commit"].is_string(), "{tl1}");
    let backups = tl1["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "the hot copy's .backup file: {tl1}");
    assert_eq!(backups[0]["LABEL"], "cairn-test");
    src.stop();
    a.repo.ok(&["wal", "verify", "--stanza", "main"]);

    // Recovery from the copy, whose pg_wal is empty: every segment comes
    // through restore_command, up to the end of the archive.
    let mut rec = Cluster::from_copy(copy, a.root(), "recovery_target_timeline = 'latest'\n");
    rec.touch_recovery_signal();
    rec.start(&env);
    rec.wait_until_promoted(Duration::from_secs(300));
    assert_eq!(rec.sql("SELECT count(*) FROM pgbench_history"), history);
    assert_eq!(rec.sql("SELECT sum(abalance) FROM pgbench_accounts"), balance);
    assert_eq!(rec.sql("SELECT count(*) FROM marker"), markers);
    let log = rec.log_text();
    let restored: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("restored log file \"").nth(1))
        .filter_map(|r| r.split('"').next())
        .collect();
    let segments: Vec<&String> = names.iter().filter(|n| n.len() == 24).collect();
    let first_needed = restored.iter().min().expect("nothing restored from the archive");
    for s in segments.iter().filter(|s| s.as_str() >= *first_needed) {
        assert!(restored.contains(&s.as_str()), "{s} was not restored; restored {restored:?}");
    }
    assert!(restored.contains(&last.as_str()), "recovery did not reach the last archived segment {last}");
    assert!(log.contains("archive recovery complete"), "{}", rec.log_tail(40));

    // The promoted cluster archives timeline 2's history file to the same stanza.
    rec.sql("SELECT pg_switch_wal()");
    rec.wait_for("00000002.history in the archive", Duration::from_secs(60), |_| {
        a.show()["names"].as_array().unwrap().iter().any(|n| n == "00000002.history")
    });
    let show = a.show();
    let tl2 = show["timelines"].as_array().unwrap().iter().find(|t| t["timeline"] == 2).cloned().unwrap();
    assert_eq!(tl2["history"][0]["timeline"], 1, "{tl2}");
    rec.stop();
    a.repo.ok(&["wal", "verify", "--stanza", "main"]);
    let check = a.repo.json(&["check"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    assert_eq!(check["unreferenced_packs"].as_array().unwrap().len(), 0, "{check}");
    assert!(check["wal_files"].as_u64().unwrap() >= arch.archived_count);
}

#[test]
fn archive_command_and_recovery_local() {
    archive_and_recover(None, false);
}

/// On S3, and with restore_command prefetching into a spool directory.
#[test]
fn archive_command_and_recovery_s3_with_prefetch() {
    let moto = Moto::start();
    archive_and_recover(Some(&moto), true);
}

/// A cluster initialised but never started: initdb leaves a complete first
/// segment in pg_wal, which is all the refusal tests need.
pub(crate) fn first_segment(root: &Path, name: &str) -> PathBuf {
    let c = Cluster::init(root, name, 16, "");
    c.data.join("pg_wal/000000010000000000000001")
}

pub(crate) fn wal(a: &Archive, args: &[&str]) -> Output {
    a.repo.run(&[&["wal"], args].concat())
}

#[test]
fn push_is_idempotent_and_refuses_conflicts() {
    let a = Archive::new(None);
    let seg = first_segment(a.root(), "one");
    let other = first_segment(a.root(), "two");
    let seg_s = seg.to_str().unwrap();
    let out = wal(&a, &["push", "--stanza", "main", seg_s]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let out = wal(&a, &["push", "--stanza", "main", "--json", seg_s]);
    assert_eq!(code(&out), 0);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["already_archived"], true, "{r}");
    let stored = a.repo.objects("wal/main/00000001");
    let stored_bytes: Vec<Vec<u8>> = stored.iter().map(|p| std::fs::read(p).unwrap()).collect();

    // Same name, one byte changed: refused, stored copy untouched.
    let dir = a.root().join("modified");
    std::fs::create_dir(&dir).unwrap();
    let modified = dir.join("000000010000000000000001");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8 << 20] ^= 1;
    std::fs::write(&modified, &bytes).unwrap();
    let out = wal(&a, &["push", "--stanza", "main", modified.to_str().unwrap()]);
    assert_eq!(code(&out), 8, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already archived with different content"));
    let now: Vec<Vec<u8>> = stored.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(now, stored_bytes);
    let dest = a.root().join("fetched");
    let out = wal(&a, &["fetch", "--stanza", "main", "000000010000000000000001", dest.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    assert_eq!(b3(&dest), b3(&seg));

    // Another cluster's segment under a new name: refused by the stanza check.
    let dir = a.root().join("other");
    std::fs::create_dir(&dir).unwrap();
    let foreign = dir.join("000000010000000000000002");
    std::fs::copy(&other, &foreign).unwrap();
    let out = wal(&a, &["push", "--stanza", "main", foreign.to_str().unwrap()]);
    assert_eq!(code(&out), 8);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("system identifier") && err.contains("another cluster"), "{err}");
    assert!(!a.root().join("repo/wal/main/00000001/000000010000000000000002").exists());

    // A truncated segment is refused; a .partial of any length is accepted.
    let short = a.root().join("short");
    std::fs::create_dir(&short).unwrap();
    std::fs::write(short.join("000000010000000000000003"), &bytes[..1 << 20]).unwrap();
    let out = wal(&a, &["push", "--stanza", "main", short.join("000000010000000000000003").to_str().unwrap()]);
    assert_eq!(code(&out), 5, "{}", String::from_utf8_lossy(&out.stderr));
    let partial = a.root().join("000000010000000000000001.partial");
    std::fs::copy(&seg, &partial).unwrap();
    assert_eq!(code(&wal(&a, &["push", "--stanza", "main", partial.to_str().unwrap()])), 0);
    let dest = a.root().join("partial.out");
    assert_eq!(
        code(&wal(&a, &["fetch", "--stanza", "main", "000000010000000000000001.partial", dest.to_str().unwrap()])),
        0
    );
    assert_eq!(b3(&dest), b3(&seg));

    // A timeline history file is parsed and kept.
    let hist = a.root().join("00000002.history");
    std::fs::write(&hist, "1\t0/1000028\tno recovery target specified\n").unwrap();
    assert_eq!(code(&wal(&a, &["push", "--stanza", "main", hist.to_str().unwrap()])), 0);
    let show = a.show();
    let tl2 = show["timelines"].as_array().unwrap().iter().find(|t| t["timeline"] == 2).cloned().unwrap();
    assert_eq!(tl2["history"][0]["switchpoint"], "0/1000028");
}

#[test]
fn incompressible_segment_spans_two_staged_packs() {
    // A real long page header followed by random bytes: nothing compresses,
    // so the sealed pieces overflow one 16 MiB pack and the push streams two
    // staged packs, committed only at the end.
    let a = Archive::new(None);
    let seg = first_segment(a.root(), "one");
    let mut bytes = std::fs::read(&seg).unwrap();
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut bytes[8192..]);
    let dir = a.root().join("random");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("000000010000000000000001");
    std::fs::write(&path, &bytes).unwrap();
    let out = wal(&a, &["push", "--stanza", "main", "--json", path.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["stored_bytes"].as_u64().unwrap() > 16 << 20, "{r}");
    let packs = a.repo.objects("packs");
    assert_eq!(packs.len(), 2, "{packs:?}");
    let staged: Vec<_> = cairn_tests::repo::files_under(&a.root().join("repo"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains('#'))
        .collect();
    assert!(staged.is_empty(), "staging files left behind: {staged:?}");
    let dest = a.root().join("fetched");
    let out = wal(&a, &["fetch", "--stanza", "main", "000000010000000000000001", dest.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b3(&dest), b3(&path));
    let out = wal(&a, &["verify", "--stanza", "main"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let check = a.repo.json(&["check", "--read-data"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
}

#[test]
fn a_64_mib_segment_is_pushed_and_fetched_in_windows() {
    // Four 16 MiB windows per file: pieces are read, sealed, written,
    // fetched and hashed across window boundaries. Its first page is real;
    // the random tail makes every window's pieces distinct.
    let a = Archive::new(None);
    let c = Cluster::init(a.root(), "big", 64, "");
    let seg = c.data.join("pg_wal/000000010000000000000001");
    let mut bytes = std::fs::read(&seg).unwrap();
    assert_eq!(bytes.len(), 64 << 20);
    rand::rngs::StdRng::seed_from_u64(64).fill(&mut bytes[8192..]);
    let dir = a.root().join("big-wal");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("000000010000000000000001");
    std::fs::write(&path, &bytes).unwrap();
    let out = wal(&a, &["push", "--stanza", "main", path.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let out = wal(&a, &["push", "--stanza", "main", "--json", path.to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["already_archived"], true, "the re-push hashes the file in windows too: {r}");
    let dest = a.root().join("fetched");
    let out = wal(&a, &["fetch", "--stanza", "main", "000000010000000000000001", dest.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(b3(&dest), b3(&path));
    assert_eq!(a.show()["cluster"]["segment_size"], 64 << 20);
    let out = wal(&a, &["verify", "--stanza", "main"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn fetch_exit_codes_tell_missing_from_failure() {
    let a = Archive::new(None);
    let seg = first_segment(a.root(), "one");
    assert_eq!(code(&wal(&a, &["push", "--stanza", "main", seg.to_str().unwrap()])), 0);
    let out_dir = a.root().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("RECOVERYHISTORY");
    let d = dest.to_str().unwrap();

    // Not archived: exit 1, and nothing is created.
    assert_eq!(code(&wal(&a, &["fetch", "--stanza", "main", "00000002.history", d])), 1);
    assert_eq!(code(&wal(&a, &["fetch", "--stanza", "main", "000000010000000000000009", d])), 1);
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);

    // Everything else: ≥ 126, so PostgreSQL stops instead of promoting.
    let failing = |what: &str, out: Output| {
        assert!(code(&out) >= 126, "{what}: exit {} ({})", code(&out), String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "{what} left a file");
    };
    failing("unknown stanza", wal(&a, &["fetch", "--stanza", "mian", "000000010000000000000001", d]));
    failing("missing argument", wal(&a, &["fetch", "--stanza", "main", "000000010000000000000001"]));
    let mut c = a.repo.cmd(&["wal", "fetch", "--stanza", "main", "000000010000000000000001", d]);
    c.env("CAIRN_REPO", a.root().join("no-such-repo"));
    failing("missing repository", c.output().unwrap());

    // S3 endpoint where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = a.repo.cmd(&["wal", "fetch", "--stanza", "main", "000000010000000000000001", d]);
    c.env("CAIRN_REPO", "s3://nowhere/cairn")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    let t = Instant::now();
    failing("unreachable store", c.output().unwrap());
    eprintln!("unreachable store failed after {:?}", t.elapsed());

    // Wrong key.
    let other_key = a.root().join("other.key");
    let mut c = a.repo.cmd(&["init"]);
    c.env("CAIRN_REPO", a.root().join("other-repo")).env("CAIRN_KEY_FILE", &other_key);
    assert!(c.output().unwrap().status.success());
    let mut c = a.repo.cmd(&["wal", "fetch", "--stanza", "main", "000000010000000000000001", d]);
    c.env("CAIRN_KEY_FILE", &other_key);
    failing("wrong key", c.output().unwrap());

    // A truncated or missing pack: a failure, not "not archived".
    let fetch_one = || wal(&a, &["fetch", "--stanza", "main", "000000010000000000000001", d]);
    let saved: Vec<_> = a.repo.objects("packs").into_iter().map(|p| (std::fs::read(&p).unwrap(), p)).collect();
    assert!(!saved.is_empty());
    for (b, p) in &saved {
        std::fs::write(p, &b[..b.len() / 2]).unwrap();
    }
    let out = fetch_one();
    assert!(String::from_utf8_lossy(&out.stderr).contains("short read"), "{}", String::from_utf8_lossy(&out.stderr));
    failing("truncated pack", out);
    for (_, p) in &saved {
        std::fs::remove_file(p).unwrap();
    }
    failing("missing pack", fetch_one());
    for (b, p) in &saved {
        std::fs::write(p, b).unwrap();
    }
    assert_eq!(code(&fetch_one()), 0, "the restored pack serves again");
    std::fs::remove_file(&dest).unwrap();

    // A corrupted pack: caught, nothing delivered.
    for p in a.repo.objects("packs") {
        let mut b = std::fs::read(&p).unwrap();
        b[100] ^= 0xff;
        std::fs::write(&p, b).unwrap();
    }
    failing("corrupt pack", wal(&a, &["fetch", "--stanza", "main", "000000010000000000000001", d]));
    let out = wal(&a, &["verify", "--stanza", "main"]);
    assert_eq!(code(&out), 5, "{}", String::from_utf8_lossy(&out.stdout));
}

/// Runs `cmd` (output discarded) and SIGKILLs it after `delay`; true when
/// it was still running, i.e. the kill landed mid-way.
fn kill_after(mut cmd: std::process::Command, delay: Duration) -> bool {
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// After a killed push: fetching the first segment of `stanza` serves
/// exactly `want`, or nothing at all (exit 1, or 126 before the stanza
/// record existed) and creates no file.
fn fetch_serves_all_or_nothing(a: &Archive, stanza: &str, round: usize, want: &[u8]) {
    let dest = a.root().join(format!("after-kill-{round}"));
    let out = wal(a, &["fetch", "--stanza", stanza, "000000010000000000000001", dest.to_str().unwrap()]);
    match code(&out) {
        0 => assert!(std::fs::read(&dest).unwrap() == want, "round {round}: wrong content served"),
        1 | 126 => assert!(!dest.exists(), "round {round}: a file was created"),
        c => panic!("round {round}: fetch exit {c}: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[test]
fn sigkill_during_push_never_serves_partial_content() {
    let a = Archive::new(None);
    let root = a.root().to_path_buf();
    let seg = first_segment(&root, "one");
    let want = std::fs::read(&seg).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    // Each round pushes the same content under a new segment name of a
    // fresh stanza, so the first push of every round is a real write.
    // The shortest of three first pushes: a single probe taken while the
    // machine was busy would put most kills after the push had finished.
    let full = (0..3)
        .map(|i| {
            let t = Instant::now();
            assert_eq!(code(&wal(&a, &["push", "--stanza", &format!("probe{i}"), seg.to_str().unwrap()])), 0);
            t.elapsed().as_millis() as u64
        })
        .min()
        .unwrap();
    let mut interrupted = 0;
    for round in 0..15 {
        let stanza = format!("kill{round}");
        let delay = Duration::from_millis(rng.gen_range(1..full.max(3)));
        if kill_after(a.repo.cmd(&["wal", "push", "--stanza", &stanza, seg.to_str().unwrap()]), delay) {
            interrupted += 1;
        }
        fetch_serves_all_or_nothing(&a, &stanza, round, &want);
        assert_eq!(code(&wal(&a, &["push", "--stanza", &stanza, seg.to_str().unwrap()])), 0, "round {round}");
        let dest2 = root.join(format!("after-repush-{round}"));
        assert_eq!(
            code(&wal(&a, &["fetch", "--stanza", &stanza, "000000010000000000000001", dest2.to_str().unwrap()])),
            0
        );
        assert!(std::fs::read(&dest2).unwrap() == want);
    }
    assert!(interrupted >= 5, "only {interrupted} of 15 kills landed mid-push (push takes {full} ms)");
    let check = a.repo.json(&["check", "--read-data"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
}

#[test]
fn prefetch_serves_only_what_the_archive_holds() {
    let a = Archive::new(None);
    let root = a.root().to_path_buf();
    let arch = root.join("arch");
    std::fs::create_dir(&arch).unwrap();
    pg::chown_to_user(&arch);
    let copy = format!("cp %p {}/%f", arch.display());
    let mut c =
        Cluster::init(&root, "src", 1, &format!("archive_mode = on\narchive_command = {}\n", pg::conf_string(&copy)));
    c.start(&[]);
    c.pgbench(&["-i", "-s", "1", "-q"]);
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));
    c.stop();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&arch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().len() == 24)
        .collect();
    segs.sort();
    assert!(segs.len() >= 6, "{segs:?}");
    for s in &segs {
        assert_eq!(code(&wal(&a, &["push", "--stanza", "main", s.to_str().unwrap()])), 0);
    }
    let spool = root.join("spool");
    let out = root.join("out");
    std::fs::create_dir(&out).unwrap();
    let name = |p: &PathBuf| p.file_name().unwrap().to_str().unwrap().to_string();
    let fetch = |n: &str| {
        let dest = out.join(n);
        let o = wal(
            &a,
            &[
                "fetch",
                "--stanza",
                "main",
                "--spool",
                spool.to_str().unwrap(),
                "--prefetch",
                "3",
                n,
                dest.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(dest).unwrap()
    };
    let wait_spooled = |n: &str| {
        let t = Instant::now();
        while !spool.join(n).exists() {
            assert!(t.elapsed() < Duration::from_secs(30), "the prefetcher did not spool {n}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A killed prefetcher left a temporary file behind: it is cleared, not
    // waited for, and the segment is prefetched all the same.
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(spool.join(format!(".{}.tmp", name(&segs[1]))), b"half a segment").unwrap();
    // The first fetch starts a prefetcher for the next three segments.
    assert!(fetch(&name(&segs[0])) == std::fs::read(&segs[0]).unwrap());
    let next = spool.join(name(&segs[1]));
    wait_spooled(&name(&segs[3]));
    let first = prefetchers(&spool);
    assert_eq!(first.len(), 1, "{first:?}");
    // A spooled copy is served by rename...
    assert!(fetch(&name(&segs[1])) == std::fs::read(&segs[1]).unwrap());
    assert!(!next.exists(), "the spooled copy was not moved into place");
    // ...and not fetched again once the prefetcher moved on.
    wait_spooled(&name(&segs[4]));
    assert!(!next.exists(), "the prefetcher fetched a served segment again");
    // ...but only when it matches the archive: a planted file is discarded.
    let planted = spool.join(name(&segs[2]));
    let mut wrong = std::fs::read(&planted).unwrap();
    wrong[4096] ^= 1;
    std::fs::write(&planted, &wrong).unwrap();
    assert!(fetch(&name(&segs[2])) == std::fs::read(&segs[2]).unwrap(), "a stale spool file was served");
    // Segments recovery has moved past are pruned from the spool.
    assert!(!spool.join(name(&segs[0])).exists());
    // The same prefetcher followed recovery: it keeps three segments ahead
    // of the last one fetched...
    wait_spooled(&name(&segs[5]));
    assert_eq!(prefetchers(&spool), first, "a prefetcher per fetch, not one that follows recovery");
    // ...and exits once recovery stops asking.
    let t = Instant::now();
    while !prefetchers(&spool).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "the prefetcher did not exit after recovery stopped asking");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A temporary file a killed prefetcher left for a segment recovery is
    // past: the next prefetcher removes it when it starts, so a fetch of
    // that segment does not wait for it.
    std::fs::write(spool.join(".want"), name(&segs[3])).unwrap();
    let stale = spool.join(format!(".{}.tmp", name(&segs[2])));
    std::fs::write(&stale, b"half a segment").unwrap();
    let mut pf = a
        .repo
        .cmd(&["wal", "prefetch", "--stanza", "main", "--ahead", "1", "--spool", spool.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while stale.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "the prefetcher left a killed one's temporary file");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(prefetchers(&spool), vec![pf.id()]);
    let t = Instant::now();
    assert!(fetch(&name(&segs[2])) == std::fs::read(&segs[2]).unwrap());
    assert!(t.elapsed() < Duration::from_secs(20), "the fetch waited for a file nobody writes");
    pf.kill().unwrap();
    pf.wait().unwrap();
    // The spool may not be inside the data directory.
    let mut cmd = a.repo.cmd(&[
        "wal",
        "fetch",
        "--stanza",
        "main",
        "--spool",
        "pg_wal/spool",
        "--prefetch",
        "2",
        &name(&segs[4]),
        "pg_wal/RECOVERYXLOG",
    ]);
    let o = cmd.current_dir(&c.data).output().unwrap();
    assert!(code(&o) >= 126, "{}", String::from_utf8_lossy(&o.stderr));
}

/// The pids of the `cairn wal prefetch` processes working on `spool`.
fn prefetchers(spool: &Path) -> Vec<u32> {
    let want = spool.as_os_str().as_encoded_bytes();
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.windows(2).any(|w| w == [b"wal".as_slice(), b"prefetch".as_slice()]) && args.contains(&want)
        })
        .collect();
    out.sort();
    out
}

/// The files a stanza's repository holds a manifest for, by name (a
/// directory repository: `repo/wal/<stanza>/<TLI>/<name>`).
pub(crate) fn manifest_names(a: &Archive, stanza: &str) -> Vec<String> {
    let mut out: Vec<String> = a
        .repo
        .objects(&format!("wal/{stanza}"))
        .iter()
        .filter(|p| p.parent().and_then(|d| d.file_name()).is_some_and(|d| d.len() == 8))
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// A private runtime directory for the push-ahead state (lock, log), owned
/// by the PostgreSQL user.
pub(crate) fn runtime_dir(a: &Archive) -> PathBuf {
    let d = a.root().join("run");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    pg::chown_to_user(&d);
    d
}

/// `archive_command = 'cairn wal push --ahead 4 %p'` under pgbench and
/// several segment switches: nothing fails, every archived file is in the
/// catalogue exactly once, the archive verifies, and the background pusher
/// did store files ahead of archive_command.
#[test]
fn push_ahead_archives_everything_once() {
    let a = Archive::new(None);
    let run = runtime_dir(&a);
    let mut env: Vec<(&str, String)> = a.repo.env.clone();
    env.push(("XDG_RUNTIME_DIR", run.to_str().unwrap().to_string()));
    let push = format!("{} --config {} wal push --ahead 4 %p", a.bin.display(), a.config.display());
    let conf = format!("archive_mode = on\narchive_command = {}\n", pg::conf_string(&push));
    let mut src = Cluster::init(a.root(), "src", 1, &conf);
    src.start(&env);
    src.pgbench(&["-i", "-s", "2", "-q"]);
    src.pgbench(&["-c", "2", "-t", "1000", "-n"]);
    for _ in 0..5 {
        src.sql("SELECT count(*) FROM pgbench_accounts");
        src.pgbench(&["-c", "1", "-t", "200", "-n"]);
        src.switch_wal();
    }
    let last = src.switch_wal();
    let arch = src.wait_archived(&last, Duration::from_secs(180));
    assert_eq!(arch.failed_count, 0, "archive_command failed: {}", src.log_tail(40));
    src.stop();
    let arch = arch.archived_count;
    // Let a pusher still running finish.
    let lock = std::fs::read_dir(run.join("cairn"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "lock"))
        .expect("no push-ahead lock file");
    let t = Instant::now();
    while std::fs::OpenOptions::new().write(true).open(&lock).unwrap().try_lock().is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "the pusher did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let show = a.show();
    let names: Vec<String> = show["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().into()).collect();
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(dedup, names, "duplicate names in the catalogue");
    assert!(names.contains(&last), "{last} missing from {names:?}");
    // Everything PostgreSQL archived is there; the pusher may have stored a
    // few more that were ready when the server stopped.
    assert!(names.len() as u64 >= arch, "catalogue {names:?} vs {arch} archived");
    assert_eq!(manifest_names(&a, "main"), names);
    assert_eq!(show["timelines"][0]["gaps"].as_array().unwrap().len(), 0, "{show}");
    a.repo.ok(&["wal", "verify", "--stanza", "main"]);
    let check = a.repo.json(&["check"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    // The background pusher's log: it stored files ahead, and nothing failed.
    let logs: Vec<PathBuf> = std::fs::read_dir(run.join("cairn"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(log.contains("pushed ahead"), "nothing was pushed ahead:\n{log}");
    assert!(!log.contains("push ahead failed") && !log.contains("ERROR"), "{log}");
}

/// A directory laid out like pg_wal holding the initdb segment, marked ready.
pub(crate) fn ready_dir(a: &Archive, seg: &Path, name: &str) -> PathBuf {
    let d = a.root().join(name);
    std::fs::create_dir_all(d.join("archive_status")).unwrap();
    std::fs::copy(seg, d.join("000000010000000000000001")).unwrap();
    std::fs::write(d.join("archive_status/000000010000000000000001.ready"), "").unwrap();
    d
}

pub(crate) fn push_ahead_cmd(a: &Archive, run: &Path, stanza: &str, dir: &Path) -> std::process::Command {
    let mut c = a.repo.cmd(&[
        "wal",
        "push-ahead",
        "--stanza",
        stanza,
        "--dir",
        dir.to_str().unwrap(),
        "000000010000000000000001",
    ]);
    c.env("XDG_RUNTIME_DIR", run).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    c
}

/// The background pusher and archive_command store the same name at the
/// same time: both succeed, one manifest wins, the content is right.
#[test]
fn push_ahead_races_archive_command() {
    let a = Archive::new(None);
    let run = runtime_dir(&a);
    let seg = first_segment(a.root(), "one");
    let want = std::fs::read(&seg).unwrap();
    let dir = ready_dir(&a, &seg, "pg_wal");
    let file = dir.join("000000010000000000000001");
    for round in 0..8 {
        let stanza = format!("race{round}");
        let bg = push_ahead_cmd(&a, &run, &stanza, &dir).spawn().unwrap();
        // Without --ahead: no waiting for the pusher, so both really store.
        let fg = wal(&a, &["push", "--stanza", &stanza, file.to_str().unwrap()]);
        let bg = bg.wait_with_output().unwrap();
        assert_eq!(code(&fg), 0, "round {round}: {}", String::from_utf8_lossy(&fg.stderr));
        assert_eq!(code(&bg), 0, "round {round}: {}", String::from_utf8_lossy(&bg.stderr));
        let bg_log = String::from_utf8_lossy(&bg.stderr);
        assert!(!bg_log.contains("failed") && !bg_log.contains("ERROR"), "{bg_log}");
        assert_eq!(manifest_names(&a, &stanza), vec!["000000010000000000000001".to_string()]);
        // archive_command's own call afterwards, with --ahead: verified.
        let out = wal(&a, &["push", "--stanza", &stanza, "--ahead", "2", "--json", file.to_str().unwrap()]);
        assert_eq!(code(&out), 0);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["already_archived"], true, "{r}");
        let dest = a.root().join(format!("race-{round}"));
        assert_eq!(
            code(&wal(&a, &["fetch", "--stanza", &stanza, "000000010000000000000001", dest.to_str().unwrap()])),
            0
        );
        assert!(std::fs::read(&dest).unwrap() == want, "round {round}: wrong content");
    }
    // The marker is PostgreSQL's: never touched.
    assert!(dir.join("archive_status/000000010000000000000001.ready").exists());
    a.repo.ok(&["wal", "verify", "--stanza", "race0"]);
}

/// `push-ahead --follow` (what `wal push --ahead` starts): one process
/// pushes what is ready, stays while PostgreSQL marks more files ready,
/// pushes those too, and exits once nothing new has been ready for a while.
#[test]
fn push_ahead_follows_archive_status_then_exits() {
    let a = Archive::new(None);
    let run = runtime_dir(&a);
    let seg = first_segment(a.root(), "one");
    let dir = ready_dir(&a, &seg, "pg_wal");
    let d = dir.to_str().unwrap();
    let mut c = a.repo.cmd(&["-v", "wal", "push-ahead", "--stanza", "main", "--follow", "2", "--dir", d]);
    c.env("XDG_RUNTIME_DIR", &run).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut pusher = c.spawn().unwrap();
    let wait_for = |name: &str| {
        let t = Instant::now();
        while !manifest_names(&a, "main").iter().any(|n| n == name) {
            assert!(t.elapsed() < Duration::from_secs(30), "{name} was not pushed ahead");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("000000010000000000000001");
    // PostgreSQL marks another file ready: the same process pushes it.
    std::fs::write(dir.join("00000002.history"), "1\t0/1000000\tno recovery target specified\n").unwrap();
    std::fs::write(dir.join("archive_status/00000002.history.ready"), "").unwrap();
    wait_for("00000002.history");
    assert!(pusher.try_wait().unwrap().is_none(), "the pusher exited instead of following archive_status");
    // Nothing new becomes ready (the archiver is stuck: both still .ready):
    // the pusher stores nothing twice and goes away.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = pusher.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the pusher did not exit once nothing was ready");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut pusher.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(log.matches("pushed ahead").count(), 2, "{log}");
    assert!(!log.contains("failed") && !log.contains("ERROR"), "{log}");
}

/// Only WAL file names, only regular files: a symbolic link in pg_wal
/// marked ready, and a ready file that is not named like WAL, are left alone.
#[test]
fn push_ahead_reads_only_wal_files_in_pg_wal() {
    let a = Archive::new(None);
    let run = runtime_dir(&a);
    let seg = first_segment(a.root(), "one");
    let dir = ready_dir(&a, &seg, "pg_wal");
    let outside = a.root().join("outside");
    std::fs::copy(&seg, &outside).unwrap();
    std::fs::remove_file(dir.join("000000010000000000000001")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("000000010000000000000001")).unwrap();
    std::fs::copy(&seg, dir.join("000000010000000000000002x")).unwrap();
    std::fs::write(dir.join("archive_status/000000010000000000000002x.ready"), "").unwrap();
    let mut c = push_ahead_cmd(&a, &run, "main", &dir);
    c.arg("000000010000000000000002x");
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    assert_eq!(manifest_names(&a, "main"), Vec::<String>::new());
}

/// The background pusher SIGKILLed at random points: nothing `wal fetch`
/// would serve wrongly, the lock is released, and archive_command's push of
/// the file succeeds.
#[test]
fn push_ahead_sigkill_leaves_nothing_served_wrongly() {
    let a = Archive::new(None);
    let run = runtime_dir(&a);
    let root = a.root().to_path_buf();
    let seg = first_segment(&root, "one");
    let want = std::fs::read(&seg).unwrap();
    let dir = ready_dir(&a, &seg, "pg_wal");
    let file = dir.join("000000010000000000000001");
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261125);
    let t = Instant::now();
    assert_eq!(code(&push_ahead_cmd(&a, &run, "probe", &dir).output().unwrap()), 0);
    let full = t.elapsed().as_millis() as u64;
    assert_eq!(manifest_names(&a, "probe").len(), 1);
    let mut interrupted = 0;
    // At least 12 rounds, and more (up to 40) until 4 kills have landed
    // mid-push: on a loaded machine a push takes longer than the probe's.
    let mut rounds = 0;
    for round in 0..40 {
        if round >= 12 && interrupted >= 4 {
            break;
        }
        rounds += 1;
        let stanza = format!("kill{round}");
        let delay = Duration::from_millis(rng.gen_range(1..full.max(3)));
        if kill_after(push_ahead_cmd(&a, &run, &stanza, &dir), delay) {
            interrupted += 1;
        }
        fetch_serves_all_or_nothing(&a, &stanza, round, &want);
        // archive_command's call: --ahead neither waits on the dead pusher
        // nor fails; the file is durable and right afterwards.
        let mut c = a.repo.cmd(&["wal", "push", "--stanza", &stanza, "--ahead", "2", file.to_str().unwrap()]);
        c.env("XDG_RUNTIME_DIR", &run);
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        let dest2 = root.join(format!("after-repush-{round}"));
        assert_eq!(
            code(&wal(&a, &["fetch", "--stanza", &stanza, "000000010000000000000001", dest2.to_str().unwrap()])),
            0
        );
        assert!(std::fs::read(&dest2).unwrap() == want);
        // The lock died with the pusher: a new one runs and finds nothing to do.
        assert_eq!(code(&push_ahead_cmd(&a, &run, &stanza, &dir).output().unwrap()), 0);
    }
    assert!(interrupted >= 4, "only {interrupted} of {rounds} kills landed mid-push (a push takes {full} ms)");
    let check = a.repo.json(&["check", "--read-data"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
}

/// A local repository another user wrote (say `cairn backup` as root, then
/// archive_command as the server's user): the push fails, stores nothing,
/// and the error says who owns what. Without root the same refusal comes
/// from a repository directory made read-only.
#[test]
fn push_into_another_users_repository_says_who_owns_it() {
    use std::os::unix::process::CommandExt;
    let a = Archive::new(None);
    let seg = first_segment(a.root(), "one");
    let repo_dir = a.root().join("repo");
    let mut c = std::process::Command::new(&a.bin);
    c.arg("--config").arg(&a.config).args(["wal", "push"]).arg(&seg);
    let want = if pg::running_as_root() {
        let chown = std::process::Command::new("chown").arg("-R").arg("root:").arg(&repo_dir).status().unwrap();
        assert!(chown.success());
        let id = |flag: &str| {
            let out = std::process::Command::new("id").args([flag, pg::os_user()]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap()
        };
        c.uid(id("-u")).gid(id("-g"));
        format!("{} belongs to root (uid 0) and cairn runs as {}", repo_dir.display(), pg::os_user())
    } else {
        std::fs::set_permissions(&repo_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        format!("{} (mode 555) is this user's but not open to it", repo_dir.display())
    };
    let out = c.output().unwrap();
    std::fs::set_permissions(&repo_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("Permission denied") && err.contains(&format!("cairn: hint: {want}")), "{err}");
    assert!(a.repo.objects("wal").is_empty(), "nothing is archived");
}
