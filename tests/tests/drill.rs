//! Restore drills (issue #20): `cairn drill --all` restores every source of
//! a plan into scratch space and proves it usable — PostgreSQL 15 replays
//! to the end of the archive and passes `pg_amcheck` and the plan's SQL
//! assertions, redis-server loads the RDB with the recorded key counts, the
//! model tarball passes `tar -tf`, the config tree is restored — and
//! records the measured RTO that `cairn status` holds against `rto`. A
//! broken backup fails its drill naming the cause; nothing of a drill
//! (scratch directory, server process) outlives it, also when it is
//! interrupted with SIGINT or SIGTERM.

use std::process::Stdio;
use std::time::{Duration, Instant};

use cairn_tests::repo::code;

use crate::operator::{metrics_file, promtool_check, value, Plan};

/// Processes whose command line names one of this plan's scratch
/// directories (a drill's temporary servers).
fn drill_processes(p: &Plan) -> Vec<String> {
    let needle = p.scratch.to_str().unwrap().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e.file_name().to_str().unwrap().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && !cmdline.contains("--config") {
            out.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// The scratch parent holds nothing and no drill process runs.
fn assert_clean(p: &Plan, what: &str) {
    let left: Vec<_> = std::fs::read_dir(&p.scratch).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "{what}: scratch left behind: {left:?}");
    let procs = drill_processes(p);
    assert!(procs.is_empty(), "{what}: drill processes still running: {procs:?}");
}

#[test]
fn drill_all_proves_every_source_and_status_holds_the_rto() {
    let p = Plan::new();
    p.json(&["run", "--all"], 0);
    let v = p.json(&["drill", "--all"], 0);
    let records = v.as_array().unwrap();
    let names: Vec<&str> = records.iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(names, ["configs", "models", "pg-main", "redis-main"], "{v}");
    for r in records {
        let source = r["source"].as_str().unwrap();
        assert_eq!(r["ok"], true, "{r}");
        let rto = r["rto_s"].as_f64().unwrap();
        let phases = r["phases"].as_array().unwrap();
        let in_rto: f64 = phases.iter().filter(|p| p["in_rto"] == true).map(|p| p["seconds"].as_f64().unwrap()).sum();
        assert!(rto > 0.0 && (rto - in_rto).abs() < 1e-9, "{r}");
        assert!(r["rpo_s"].as_f64().unwrap() < 3600.0, "{r}");
        let m = metrics_file(&p.metrics, &format!("cairn_drill_{source}.prom"));
        promtool_check(source, &m);
        assert_eq!(value(&m, "cairn_job_exit_code", "drill", source), 0.0);
        let phase_names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
        let details = r["details"].to_string();
        match source {
            "pg-main" => {
                assert_eq!(phase_names, ["restore", "wal", "start", "connect", "amcheck", "sql", "stop"], "{r}");
                assert!(details.contains("pg_amcheck --all: no corruption"), "{r}");
                assert!(details.contains("assertions.sql: every assertion held"), "{r}");
            }
            "redis-main" => {
                assert_eq!(phase_names, ["restore", "start", "verify"], "{r}");
                assert!(details.contains("loaded 250 keys in 2 database(s)"), "{r}");
            }
            "models" => {
                assert_eq!(phase_names, ["restore", "verify"], "{r}");
                assert!(details.contains("verify_command \\\"tar\\\" succeeded"), "{r}");
            }
            _ => assert!(details.contains("restored"), "{r}"),
        }
    }
    assert_clean(&p, "after drill --all");
    // The records are in the repository, for any host.
    let listed = p.json(&["drills"], 0);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    assert_eq!(listed[2]["source"], "pg-main");
    assert_eq!(listed[2]["rto_s"], records[2]["rto_s"]);

    // status holds the last drill against rto: within an hour, fine; a
    // millisecond, missed.
    p.write_config(&[("pg-main", "rpo = \"1h\"\nrto = \"1h\"")]);
    let s = p.json(&["status", "pg-main"], 0);
    assert_eq!(s["sources"][0]["rto"]["ok"], true, "{s}");
    assert_eq!(s["sources"][0]["rto"]["measured_s"], records[2]["rto_s"], "{s}");
    p.write_config(&[("pg-main", "rpo = \"1h\"\nrto = \"1ms\"")]);
    let s = p.json(&["status", "pg-main"], 11);
    assert_eq!(s["sources"][0]["rto"]["ok"], false, "{s}");
    // A drill held to that RTO restores fine but misses the objective: 11.
    let v = p.json(&["drill", "configs"], 0);
    assert_eq!(v[0]["ok"], true);
    p.write_config(&[("configs", "rpo = \"1h\"\nrto = \"1ms\"")]);
    let v = p.json(&["drill", "configs"], 11);
    assert!(v[0]["failure"].as_str().unwrap().contains("exceeds the rto"), "{v}");
    assert_clean(&p, "after the objective drills");
}

#[test]
fn broken_backups_fail_their_drills_naming_the_cause() {
    let p = Plan::new();
    p.json(&["run", "--all"], 0);
    // Redis: the restored dump no longer matches the recorded key counts
    // (a test hook deletes one key after loading).
    let o =
        p.command(&["--json", "drill", "redis-main"], &[("CAIRN_TEST_DRILL_REDIS_DROP_KEY", "k7")]).output().unwrap();
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = v[0]["failure"].as_str().unwrap();
    assert!(
        f.contains("drill failed in verify") && f.contains("db0: 99 keys loaded, the snapshot recorded 100"),
        "{f}"
    );
    assert_clean(&p, "failed redis drill");
    // A tar whose verify_command fails.
    p.write_config(&[("models", "rpo = \"1h\"\nverify_command = [\"tar\", \"-tzf\"]")]);
    let text = std::fs::read_to_string(&p.config).unwrap().replace("verify_command = [\"tar\", \"-tf\"]\n", "");
    std::fs::write(&p.config, text).unwrap();
    let v = p.json(&["drill", "models"], 1);
    let f = v[0]["failure"].as_str().unwrap();
    assert!(f.contains("verify_command \"tar\" failed") && f.contains("gzip"), "{f}");
    assert_clean(&p, "failed tar drill");
    // PostgreSQL: a WAL segment the restore needs is gone from the archive.
    p.pg.sql("INSERT INTO marker VALUES (2, now())");
    let mut last = String::new();
    for _ in 0..3 {
        p.pg.sql("INSERT INTO marker SELECT max(id) + 1, now() FROM marker");
        last = p.pg.switch_wal();
    }
    p.pg.wait_archived(&last, Duration::from_secs(60));
    let segs: Vec<String> = crate::wal::manifest_names(&p.a, "main").into_iter().filter(|n| n.len() == 24).collect();
    let name = segs[segs.len() - 2].clone();
    std::fs::remove_file(p.a.repo.repo_dir().join("wal/main/00000001").join(&name)).unwrap();
    let v = p.json(&["drill", "pg-main"], 1);
    let f = v[0]["failure"].as_str().unwrap();
    assert!(f.contains(&name), "the failure names the missing segment {name}: {f}");
    assert_clean(&p, "failed pg drill");
    let listed = p.json(&["drills"], 0);
    assert_eq!(listed.as_array().unwrap().iter().filter(|r| r["ok"] == false).count(), 3, "{listed}");
}

#[test]
fn a_drill_to_a_target_time_recovers_to_it_and_the_sql_assertions_decide() {
    let p = Plan::new();
    p.json(&["run", "pg-main"], 0);
    std::thread::sleep(Duration::from_millis(1100));
    let target = p.pg.sql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    std::thread::sleep(Duration::from_millis(1100));
    p.pg.sql("INSERT INTO marker VALUES (2, now())");
    p.pg.wait_archived(&p.pg.switch_wal(), Duration::from_secs(60));
    // To the target: the second row is not there, and the assertions
    // (exactly one marker row) hold.
    let v = p.json(&["drill", "pg-main", "--target-time", &target], 0);
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["target"], target.as_str());
    // To the end of the archive: the second row is there, and the
    // assertions fail the drill with the server's own words.
    let v = p.json(&["drill", "pg-main"], 1);
    let f = v[0]["failure"].as_str().unwrap();
    assert!(f.contains("drill failed in sql") && f.contains("marker rows differ"), "{f}");
    assert_clean(&p, "after the target-time drills");
}

#[test]
fn as_root_a_drill_runs_its_servers_as_the_drill_user() {
    let p = Plan::new();
    assert!(cairn_tests::pg::running_as_root(), "this test checks the root path: run the suite as root, as CI does");
    p.json(&["run", "pg-main", "redis-main"], 0);
    let user = cairn_tests::pg::os_user();
    let text = std::fs::read_to_string(&p.config).unwrap().replace("[drill]\n", &format!("[drill]\nuser = {user:?}\n"));
    std::fs::write(&p.config, text).unwrap();
    // cairn itself as root: PostgreSQL refuses to run as root, so the pg
    // drill only succeeds if its server was started as the drill user.
    let o = std::process::Command::new(cairn_tests::repo::cairn_bin())
        .args(["--config", p.config.to_str().unwrap(), "--json", "drill", "pg-main", "redis-main"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().all(|r| r["ok"] == true), "{v}");
    assert_clean(&p, "root drills");
}

/// Waits until a drill process (a temporary server) runs; returns how long.
fn wait_for_server(p: &Plan, what: &str) {
    let t0 = Instant::now();
    while drill_processes(p).iter().all(|c| !c.contains(what)) {
        assert!(t0.elapsed() < Duration::from_secs(120), "no {what} started by the drill");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid of the cairn process itself (not the runuser around it).
fn cairn_pid(child: &std::process::Child) -> i32 {
    let t0 = Instant::now();
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_str().unwrap().parse::<i32>() else { continue };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let ppid: Option<i32> =
                stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|x| x.parse().ok());
            if comm.trim() == "cairn" && (pid == child.id() as i32 || ppid == Some(child.id() as i32)) {
                return pid;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "cairn did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_interrupted_drill_stops_its_server_and_removes_its_scratch() {
    let p = Plan::new();
    p.json(&["run", "pg-main", "redis-main"], 0);
    for (source, server, signal, expect) in
        [("pg-main", "postgres", "INT", 130), ("redis-main", "redis-server", "TERM", 143)]
    {
        let child = p
            .command(&["drill", source], &[])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = cairn_pid(&child);
        wait_for_server(&p, server);
        let k = std::process::Command::new("kill").args(["-s", signal, &pid.to_string()]).status().unwrap();
        assert!(k.success());
        let o = child.wait_with_output().unwrap();
        assert_eq!(code(&o), expect, "{source}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("drill interrupted"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_clean(&p, &format!("{source} interrupted"));
    }
}
