//! Oracle tests against a real PostgreSQL: cairn's WAL scan must agree with
//! `pg_waldump` on every completed segment, a real `backup_manifest` must
//! verify (and stop verifying when a byte changes), and a real promotion's
//! timeline history file and mixed-timeline segment must decode.
//!
//! PostgreSQL's binaries are taken from `$CAIRN_PG_BIN`, else
//! `/usr/lib/postgresql/15/bin`. A missing binary fails the test loudly: a
//! test that needs PostgreSQL never passes without it. PostgreSQL refuses to
//! run as root, so when the tests run as root the server and client tools run
//! as the unprivileged user `cairntest` (created if absent).

#[path = "common/pg.rs"]
mod pg_common;

use pg_common::{assert_segment_matches_waldump, parse_waldump, Dumped};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use cairn_formats::pg::{
    parse_timeline_history, scan_segment, BackupManifest, ChecksumAlgorithm, FileChecker, Lsn, ManifestError, ScanEnd,
    ScanOptions, SegmentName, SegmentSize, WalFileName, XactKind,
};

const OS_USER: &str = "cairntest";

/// The PostgreSQL installation and the user to run it as.
struct Pg {
    bin: PathBuf,
    run_as: Option<&'static str>,
}

impl Pg {
    fn locate() -> Pg {
        let bin = std::env::var_os("CAIRN_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        for tool in
            ["initdb", "pg_ctl", "psql", "pgbench", "pg_waldump", "pg_basebackup", "pg_verifybackup", "pg_controldata"]
        {
            assert!(
                bin.join(tool).is_file(),
                "PostgreSQL binary {tool} not found in {}: install PostgreSQL 15 \
                 (apt-get install postgresql-15) or set CAIRN_PG_BIN; this test needs a real server",
                bin.display()
            );
        }
        let euid = run(Command::new("id").arg("-u"));
        let run_as = if String::from_utf8_lossy(&euid.stdout).trim() == "0" {
            let exists = || Command::new("id").arg(OS_USER).output().is_ok_and(|o| o.status.success());
            if !exists() {
                // Tests run in parallel: another one may create the user first.
                let added = Command::new("useradd").args(["-r", "-M", "-s", "/bin/sh", OS_USER]).output();
                assert!(exists(), "cannot create the unprivileged user {OS_USER} to run PostgreSQL: {added:?}");
            }
            Some(OS_USER)
        } else {
            None
        };
        Pg { bin, run_as }
    }

    /// A PostgreSQL program, run as the unprivileged user when we are root.
    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        cmd.env("TZ", "UTC").env("PGTZ", "UTC").env("LC_ALL", "C");
        cmd
    }

    fn chown(&self, path: &Path) {
        if let Some(user) = self.run_as {
            run(Command::new("chown").args(["-R", user]).arg(path));
        }
    }
}

/// Runs a command, panicking with its output if it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A running cluster in a temporary directory, stopped on drop.
struct Cluster<'a> {
    pg: &'a Pg,
    root: PathBuf,
    data: PathBuf,
    port: u16,
    running: bool,
}

impl<'a> Cluster<'a> {
    fn init(pg: &'a Pg, root: &Path, name: &str, wal_segsize_mib: u32) -> Cluster<'a> {
        let data = root.join(name);
        run(pg.cmd("initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            &format!("--wal-segsize={wal_segsize_mib}"),
        ]));
        let mut conf = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(
            "\nlisten_addresses = ''\nmax_prepared_transactions = 5\nwal_keep_size = '4GB'\n\
             fsync = off\nmax_wal_size = '4GB'\nlog_min_messages = warning\n",
        );
        fs::write(data.join("postgresql.conf"), conf).unwrap();
        let mut c = Cluster { pg, root: root.to_owned(), data, port: 5432, running: false };
        c.start();
        c
    }

    fn start(&mut self) {
        let opts = format!("-p {} -k {}", self.port, self.root.display());
        let log = self.root.join(format!("{}.log", self.port));
        run(self
            .pg
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(log)
            .arg("start"));
        self.running = true;
    }

    fn stop(&mut self) {
        run(self.pg.cmd("pg_ctl").arg("-D").arg(&self.data).args(["-w", "-m", "fast", "stop"]));
        self.running = false;
    }

    fn conn(&self, cmd: &mut Command) {
        cmd.arg("-h").arg(&self.root).args(["-p", &self.port.to_string(), "-U", "postgres"]);
    }

    /// Runs SQL (several statements allowed) and returns psql's output.
    fn sql(&self, sql: &str) -> String {
        let mut cmd = self.pg.cmd("psql");
        self.conn(&mut cmd);
        cmd.args(["-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-f", "-"]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn psql");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "psql failed on {sql}:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn pgbench(&self, args: &[&str]) {
        let mut cmd = self.pg.cmd("pgbench");
        self.conn(&mut cmd);
        cmd.args(args).arg("postgres");
        run(&mut cmd);
    }

    fn system_id(&self) -> u64 {
        let out = run(self.pg.cmd("pg_controldata").arg(&self.data));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("Database system identifier:")).expect("system id");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg.cmd("pg_ctl").arg("-D").arg(&self.data).args(["-w", "-m", "immediate", "stop"]).output();
        }
    }
}

/// SQL that produces every record shape the scan must handle.
fn workload(c: &Cluster<'_>, big_message: usize) {
    c.pgbench(&["-i", "-s", "1", "-q"]);
    c.pgbench(&["-c", "2", "-j", "2", "-t", "300", "-n"]);
    c.sql(
        "CREATE TABLE cairn_big(id int, t text);
         ALTER TABLE cairn_big ALTER t SET STORAGE EXTERNAL;
         INSERT INTO cairn_big SELECT g, repeat(md5(g::text), 700) FROM generate_series(1, 40) g;
         CHECKPOINT;
         UPDATE cairn_big SET id = id + 1;
         UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = 0;",
    );
    for i in 0..5 {
        c.sql(&format!(
            "BEGIN; INSERT INTO cairn_big VALUES ({i}, 'kept'); COMMIT;
             BEGIN; INSERT INTO cairn_big VALUES ({i}, 'rolled back'); ROLLBACK;
             BEGIN; INSERT INTO cairn_big VALUES ({i}, 'a'); SAVEPOINT s;
                    INSERT INTO cairn_big VALUES ({i}, 'b'); RELEASE s; COMMIT;
             BEGIN; INSERT INTO cairn_big VALUES ({i}, 'p'); PREPARE TRANSACTION 'c{i}';
             COMMIT PREPARED 'c{i}';
             BEGIN; INSERT INTO cairn_big VALUES ({i}, 'q'); PREPARE TRANSACTION 'r{i}';
             ROLLBACK PREPARED 'r{i}';"
        ));
    }
    c.sql("SELECT pg_create_restore_point('cairn_before_switch'); SELECT pg_switch_wal();");
    c.sql(&format!("SELECT pg_logical_emit_message(true, 'cairn', repeat('x', {big_message}));"));
    c.pgbench(&["-c", "2", "-j", "2", "-t", "200", "-n"]);
    c.sql("SELECT pg_create_restore_point('cairn_after_bench');");
}

/// Runs `pg_waldump` over `first..=last_seg` and parses every record line.
/// Reading runs into the unfinished segment, where the dump ends at the end
/// of WAL; that one error is expected.
fn waldump(pg: &Pg, wal_dir: &Path, first: &str, last: &str, last_start: Lsn) -> Vec<Dumped> {
    let out = pg.cmd("pg_waldump").arg("-p").arg(wal_dir).args([first, last]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let marker = "invalid record length at ";
        let at = stderr.find(marker).map(|i| &stderr[i + marker.len()..]);
        let lsn: Option<Lsn> = at.and_then(|a| a.split(':').next()).and_then(|l| l.parse().ok());
        assert!(lsn.is_some_and(|l| l >= last_start), "pg_waldump stopped before the unfinished segment: {stderr}");
    }
    parse_waldump(&String::from_utf8_lossy(&out.stdout))
}

/// What the comparison covered, so the test can insist it was not vacuous.
#[derive(Default, Debug)]
struct Coverage {
    segments: usize,
    records: u64,
    commits: usize,
    aborts: usize,
    prepared: usize,
    restore_points: usize,
    switches: usize,
    crossing: usize,
    continuation_only: usize,
    mixed_timeline: usize,
}

/// Scans every completed segment of `tli` in `wal_dir` and compares it with
/// `pg_waldump`'s records starting in the same segment.
fn compare_with_waldump(
    pg: &Pg,
    wal_dir: &Path,
    tli: u32,
    size: SegmentSize,
    sysid: u64,
    in_progress: &str,
) -> Coverage {
    let mut names: Vec<String> = fs::read_dir(wal_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| matches!(WalFileName::parse(n, size), Ok(WalFileName::Segment(s)) if s.timeline == tli))
        .filter(|n| n.as_str() < in_progress)
        .collect();
    names.sort();
    assert!(names.len() >= 2, "expected several completed segments, found {names:?}");
    let Ok(WalFileName::Segment(last)) = WalFileName::parse(in_progress, size) else { panic!("{in_progress}") };
    let dumped = waldump(pg, wal_dir, &names[0], in_progress, last.start_lsn(size).unwrap());
    let mut cov = Coverage::default();
    let mut scan_micros = 0u128;
    for name in &names {
        let Ok(WalFileName::Segment(seg)) = WalFileName::parse(name, size) else { unreachable!() };
        let (start, end) = (seg.start_lsn(size).unwrap(), seg.end_lsn(size).unwrap());
        let bytes = fs::read(wal_dir.join(name)).unwrap();
        let opts = ScanOptions {
            start: Some(start),
            timeline: Some(tli),
            system_id: Some(sysid),
            segment_size: Some(size.bytes()),
            block_size: None,
        };
        let t = Instant::now();
        let s = scan_segment(&bytes, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        scan_micros += t.elapsed().as_micros();
        match &s.end {
            ScanEnd::Complete => {}
            ScanEnd::Switch { tail_zeroed, .. } => {
                assert!(tail_zeroed, "{name}: bytes after the switch record");
                cov.switches += 1;
            }
            ScanEnd::Stopped { error } => panic!("{name}: completed segment stopped early: {error}"),
        }
        let here: Vec<&Dumped> = dumped.iter().filter(|d| d.lsn >= start && d.lsn < end).collect();
        assert_segment_matches_waldump(name, &s, &here);
        if s.crossing.is_some() {
            cov.crossing += 1;
        }
        if s.first_record.is_none() {
            cov.continuation_only += 1;
        }
        if s.header.timeline != s.last_timeline {
            cov.mixed_timeline += 1;
        }
        cov.segments += 1;
        cov.records += here.len() as u64;
        for x in &s.xacts {
            match x.kind {
                XactKind::Commit => cov.commits += 1,
                XactKind::Abort => cov.aborts += 1,
                _ => cov.prepared += 1,
            }
        }
        cov.restore_points += s.restore_points.len();
    }
    eprintln!(
        "compared {} segments of {} ({} records) with pg_waldump; cairn scanned {:.1} MiB/ms ({} us per segment)",
        cov.segments,
        size,
        cov.records,
        (cov.segments as f64 * f64::from(size.bytes()) / f64::from(1 << 20)) / (scan_micros as f64 / 1000.0),
        scan_micros / cov.segments as u128
    );
    cov
}

/// Finishes WAL: switches so every segment with data is complete, and
/// returns the name of the segment now being written (where the shutdown
/// checkpoint will go).
fn finish_wal(c: &Cluster<'_>, tli: u32, size: SegmentSize) -> String {
    c.sql("SELECT pg_switch_wal();");
    let lsn: Lsn = c.sql("SELECT pg_current_wal_insert_lsn();").parse().unwrap();
    SegmentName::containing(tli, lsn, size).format(size)
}

/// Verifies a plain-format base backup against its manifest with cairn, then
/// checks that cairn and `pg_verifybackup` both catch tampering.
fn check_base_backup(pg: &Pg, backup: &Path, algorithm: ChecksumAlgorithm, sysid: u64) {
    let manifest_bytes = fs::read(backup.join("backup_manifest")).unwrap();
    let manifest = BackupManifest::parse(&manifest_bytes).unwrap();
    assert!(manifest.version == 1 || manifest.system_id == Some(sysid));
    assert!(manifest.files.len() > 100, "a real backup lists many files");
    assert!(!manifest.wal_ranges.is_empty());
    for r in &manifest.wal_ranges {
        assert!(r.timeline == 1 && r.start <= r.end, "{r:?}");
    }
    let check = |f: &cairn_formats::pg::ManifestFile| {
        let bytes = fs::read(backup.join(String::from_utf8(f.path.clone()).unwrap())).unwrap();
        let mut checker = FileChecker::new(f);
        for chunk in bytes.chunks(8191) {
            checker.update(chunk);
        }
        checker.finish()
    };
    for f in &manifest.files {
        assert_eq!(f.checksum_algorithm, algorithm);
        check(f).unwrap_or_else(|e| panic!("{e}"));
    }
    run(pg.cmd("pg_verifybackup").args(["-n", "-q"]).arg(backup));

    // One changed byte in a file: both name the path.
    let victim = manifest.files.iter().filter(|f| f.path.starts_with(b"base/")).max_by_key(|f| f.size).unwrap();
    let victim_path = backup.join(victim.path_lossy());
    let original = fs::read(&victim_path).unwrap();
    let mut changed = original.clone();
    changed[original.len() / 2] ^= 0x20;
    fs::write(&victim_path, &changed).unwrap();
    let err = check(victim).unwrap_err();
    assert!(
        matches!(err, ManifestError::FileChecksumMismatch { ref path, .. } if *path == victim.path_lossy()),
        "{err}"
    );
    assert!(err.to_string().contains(&victim.path_lossy()));
    let out = pg.cmd("pg_verifybackup").args(["-n", "-q"]).arg(backup).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(&victim.path_lossy()));
    fs::write(&victim_path, &changed[..changed.len() - 1]).unwrap();
    let err = check(victim).unwrap_err();
    assert!(matches!(err, ManifestError::FileSizeMismatch { ref path, .. } if *path == victim.path_lossy()), "{err}");
    fs::write(&victim_path, &original).unwrap();
    check(victim).unwrap();

    // An edited manifest line breaks the manifest checksum.
    let text = String::from_utf8(manifest_bytes.clone()).unwrap();
    let line = text.lines().find(|l| l.contains("\"Path\": \"PG_VERSION\"")).unwrap();
    let edited = text.replacen(line, &line.replacen("\"Size\": 3", "\"Size\": 4", 1), 1);
    assert_ne!(edited, text);
    assert!(matches!(BackupManifest::parse(edited.as_bytes()), Err(ManifestError::ManifestChecksumMismatch { .. })));
    // With the checksum recomputed too, the file check names the path.
    let body_end = edited.rfind("\"Manifest-Checksum\"").unwrap();
    let digest = cairn_formats::pg::manifest::manifest_checksum(edited.as_bytes()).unwrap();
    let resealed = format!("{}\"Manifest-Checksum\": \"{}\"}}\n", &edited[..body_end], hex_lower(&digest));
    let m = BackupManifest::parse(resealed.as_bytes()).unwrap();
    let err = check(m.file(b"PG_VERSION").unwrap()).unwrap_err();
    assert_eq!(err, ManifestError::FileSizeMismatch { path: "PG_VERSION".into(), expected: 4, got: 3 });
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn temp_root(pg: &Pg) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("cairn-pg-oracle-").tempdir().unwrap();
    pg.chown(dir.path());
    dir
}

#[test]
fn waldump_agrees_with_scan_on_16mib_segments_and_manifest_verifies() {
    let pg = Pg::locate();
    let started = Instant::now();
    let tmp = temp_root(&pg);
    let mut c = Cluster::init(&pg, tmp.path(), "data", 16);
    let sysid = c.system_id();
    // 40 MB: one record that covers at least one whole segment.
    workload(&c, 40_000_000);
    let backup = tmp.path().join("backup");
    let mut cmd = pg.cmd("pg_basebackup");
    c.conn(&mut cmd);
    run(cmd.arg("-D").arg(&backup).args(["-Fp", "-X", "stream", "-c", "fast", "--no-sync"]));
    let in_progress = finish_wal(&c, 1, SegmentSize::DEFAULT);
    c.stop();
    let cov = compare_with_waldump(&pg, &c.data.join("pg_wal"), 1, SegmentSize::DEFAULT, sysid, &in_progress);
    assert!(cov.commits > 500 && cov.aborts >= 5 && cov.prepared >= 10, "{cov:?}");
    assert!(cov.restore_points >= 2 && cov.switches >= 2, "{cov:?}");
    assert!(cov.crossing >= 2 && cov.continuation_only >= 1, "{cov:?}");
    check_base_backup(&pg, &backup, ChecksumAlgorithm::Crc32c, sysid);
    eprintln!("16 MiB oracle test took {:?}", started.elapsed());
}

#[test]
fn waldump_agrees_on_1mib_segments_across_a_promotion() {
    let pg = Pg::locate();
    let started = Instant::now();
    let tmp = temp_root(&pg);
    let size = SegmentSize::new(1 << 20).unwrap();
    let mut c = Cluster::init(&pg, tmp.path(), "data", 1);
    let sysid = c.system_id();
    workload(&c, 3_000_000);
    let backup = tmp.path().join("standby");
    let mut cmd = pg.cmd("pg_basebackup");
    c.conn(&mut cmd);
    run(cmd.arg("-D").arg(&backup).args([
        "-Fp",
        "-X",
        "stream",
        "-c",
        "fast",
        "--no-sync",
        "--manifest-checksums=SHA256",
    ]));
    let in_progress = finish_wal(&c, 1, size);
    c.stop();
    let cov = compare_with_waldump(&pg, &c.data.join("pg_wal"), 1, size, sysid, &in_progress);
    assert!(cov.commits > 300 && cov.aborts >= 5 && cov.crossing >= 5 && cov.continuation_only >= 1, "{cov:?}");
    check_base_backup(&pg, &backup, ChecksumAlgorithm::Sha256, sysid);

    // Promote a standby made from the backup, after giving it the primary's
    // later WAL up to the shutdown checkpoint in the unfinished segment:
    // timeline 2 then begins inside a segment whose first pages are copied
    // from timeline 1.
    let wal = backup.join("pg_wal");
    for entry in fs::read_dir(c.data.join("pg_wal")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let is_segment = matches!(WalFileName::parse(&name, size), Ok(WalFileName::Segment(_)));
        if is_segment && name <= in_progress && !wal.join(&name).exists() {
            fs::copy(c.data.join("pg_wal").join(&name), wal.join(&name)).unwrap();
        }
    }
    fs::write(backup.join("standby.signal"), b"").unwrap();
    pg.chown(&backup);
    let mut standby =
        Cluster { pg: &pg, root: tmp.path().to_owned(), data: backup.clone(), port: 5433, running: false };
    standby.start();
    run(pg.cmd("pg_ctl").arg("-D").arg(&backup).args(["-w", "promote"]));
    standby.sql("BEGIN; CREATE TABLE after_promotion(x int); INSERT INTO after_promotion VALUES (1); COMMIT;");
    standby.pgbench(&["-c", "2", "-j", "2", "-t", "300", "-n"]);
    let in_progress = finish_wal(&standby, 2, size);
    standby.stop();
    let history = fs::read(wal.join("00000002.history")).expect("promotion writes 00000002.history");
    let entries = parse_timeline_history(&history, Some(2)).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].timeline, 1);
    assert!(!entries[0].reason.is_empty());
    let switch_seg = SegmentName::containing(2, entries[0].switchpoint, size);
    let cov = compare_with_waldump(&pg, &wal, 2, size, sysid, &in_progress);
    eprintln!("timeline 2: {cov:?}, switchpoint {}", entries[0].switchpoint);
    // The old timeline's copy of the switch segment is what a `.partial`
    // holds: valid WAL up to the switchpoint, then nothing.
    let old = SegmentName { timeline: 1, segno: switch_seg.segno };
    let partial = scan_segment(&fs::read(wal.join(old.format(size))).unwrap(), &ScanOptions::default()).unwrap();
    assert_eq!(partial.end_of_records, entries[0].switchpoint);
    assert!(
        matches!(partial.end, ScanEnd::Stopped { error: cairn_formats::pg::WalError::EndOfWal { .. } }),
        "{:?}",
        partial.end
    );
    assert_ne!(entries[0].switchpoint, switch_seg.start_lsn(size).unwrap());
    assert_eq!(cov.mixed_timeline, 1, "{cov:?}");
    assert!(cov.commits >= 1, "{cov:?}");
    eprintln!("1 MiB oracle test took {:?}", started.elapsed());
}

/// Regenerates the committed fixture in `formats/testdata/pg/`: one real
/// 1 MiB PostgreSQL segment ending in a switch (stored without its zero
/// tail) and `pg_waldump`'s output for it. Run by hand:
/// `cargo test -p cairn-formats --release --test pg_oracle -- --ignored regenerate_fixtures`.
#[test]
#[ignore = "rewrites formats/testdata/pg; run by hand"]
fn regenerate_fixtures() {
    let pg = Pg::locate();
    let tmp = temp_root(&pg);
    let size = SegmentSize::new(1 << 20).unwrap();
    let mut c = Cluster::init(&pg, tmp.path(), "data", 1);
    // Catalog work goes into the previous segment, to keep the fixture small.
    let sql = "CREATE TABLE fixture(id int, t text); SELECT pg_switch_wal(); SELECT pg_current_wal_insert_lsn();";
    let lsn: Lsn = c.sql(sql).lines().last().unwrap().parse().unwrap();
    let seg = SegmentName::containing(1, lsn, size);
    c.sql(
        "BEGIN; INSERT INTO fixture VALUES (1, 'kept'); COMMIT;
         BEGIN; INSERT INTO fixture VALUES (2, 'rolled back'); ROLLBACK;
         BEGIN; INSERT INTO fixture VALUES (3, 'a'); SAVEPOINT s; INSERT INTO fixture VALUES (4, 'b'); RELEASE s; COMMIT;
         BEGIN; INSERT INTO fixture VALUES (5, 'p'); PREPARE TRANSACTION 'fx1'; COMMIT PREPARED 'fx1';
         BEGIN; INSERT INTO fixture VALUES (6, 'q'); PREPARE TRANSACTION 'fx2'; ROLLBACK PREPARED 'fx2';
         SELECT pg_create_restore_point('cairn_fixture');
         SELECT pg_logical_emit_message(true, 'cairn', repeat('x', 20000));
         CHECKPOINT;
         UPDATE fixture SET t = t || '!';
         SELECT pg_switch_wal();",
    );
    c.stop();
    let name = seg.format(size);
    let wal = c.data.join("pg_wal");
    let bytes = fs::read(wal.join(&name)).unwrap();
    let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let out = run(pg.cmd("pg_waldump").arg("-p").arg(&wal).arg(&name));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pg");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("{name}.1mib.head")), &bytes[..used]).unwrap();
    // Long descriptions (the logical message's payload in hex) are cut; the
    // tests read only the start of each line.
    let dump: String = String::from_utf8(out.stdout).unwrap().lines().map(|l| format!("{:.240}\n", l)).collect();
    fs::write(dir.join(format!("{name}.1mib.waldump")), &dump).unwrap();
    eprintln!("wrote {name}: {used} bytes before the zero tail, {} pg_waldump lines", dump.lines().count());
}
