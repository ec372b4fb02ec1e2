//! The operator's day (issue #20): one config file describes a plan — a
//! PostgreSQL 15 cluster archiving through cairn, a Redis server, a model
//! tarball and a config directory — and `cairn run --all` backs up all
//! four; `cairn status` exits 0 while every objective holds and 11 once a
//! source's RPO is exceeded; every job's metrics file, and `status
//! --prometheus`, pass `promtool check metrics` and hold the values the job
//! reported.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cairn_tests::pg::{self, Cluster};
use cairn_tests::redis::{cmd, require_tool, RedisServer};
use cairn_tests::repo::{cairn_bin, code};

use crate::wal::Archive;

/// A plan on disk: the config file and the directories it names.
pub(crate) struct Plan {
    pub(crate) a: Archive,
    pub(crate) pg: Cluster,
    pub(crate) redis: RedisServer,
    pub(crate) config: PathBuf,
    pub(crate) metrics: PathBuf,
    pub(crate) model: PathBuf,
    pub(crate) etc: PathBuf,
    /// The drills' scratch parent (`[drill] scratch_dir`).
    pub(crate) scratch: PathBuf,
    /// The pg-main source's `drill_sql`.
    pub(crate) drill_sql: PathBuf,
}

impl Plan {
    /// Starts PostgreSQL (archiving through cairn) and Redis, writes a
    /// model and a config directory, and a config file with `extra` added
    /// to every source's table.
    pub(crate) fn new() -> Plan {
        require_tool("promtool");
        let a = Archive::new(None);
        let mut pg = Cluster::init(a.root(), "db", 16, &a.conf(false));
        pg.start(&[]);
        pg.sql("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz); INSERT INTO marker VALUES (1, now())");
        let redis = RedisServer::start(&[]);
        let mut cmds = Vec::new();
        for db in 0..2 {
            cmds.push(cmd(["SELECT".to_string(), db.to_string()]));
            for i in 0..(100 + db * 50) {
                cmds.push(cmd(["SET".to_string(), format!("k{i}"), format!("value {i} of db {db}")]));
            }
        }
        redis.pipe(&cmds);
        let model = a.root().join("model");
        std::fs::create_dir_all(model.join("weights")).unwrap();
        std::fs::write(model.join("weights/layer0.bin"), cairn_tests::data::random(3 << 20, 7)).unwrap();
        std::fs::write(model.join("config.json"), b"{\"layers\": 1}\n").unwrap();
        let etc = a.root().join("etc");
        std::fs::create_dir_all(etc.join("conf.d")).unwrap();
        std::fs::write(etc.join("app.conf"), b"listen = 8080\n").unwrap();
        std::fs::write(etc.join("conf.d/extra.conf"), b"debug = false\n").unwrap();
        std::fs::write(etc.join("app.conf.swp"), b"editor junk").unwrap();
        let metrics = a.root().join("metrics");
        std::fs::create_dir_all(&metrics).unwrap();
        let config = a.root().join("plan.toml");
        let scratch = a.root().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let drill_sql = a.root().join("assertions.sql");
        std::fs::write(
            &drill_sql,
            "DO $$ BEGIN IF (SELECT count(*) FROM marker) <> 1 THEN RAISE EXCEPTION 'marker rows differ'; END IF; END $$;\n",
        )
        .unwrap();
        let p = Plan { a, pg, redis, config, metrics, model, etc, scratch, drill_sql };
        p.write_config(&[]);
        pg::chown_to_user(p.a.root());
        p
    }

    /// Writes the config file; `overrides` are (source, `key = value`)
    /// lines that replace the default `rpo`.
    pub(crate) fn write_config(&self, overrides: &[(&str, &str)]) {
        let rpo = |s: &str| {
            overrides.iter().find(|(n, _)| *n == s).map_or("rpo = \"1h\"".to_string(), |(_, l)| l.to_string())
        };
        let text = format!(
            r#"repo = {repo:?}
key_file = {key:?}
cache_dir = {cache:?}
stanza = "main"
metrics_dir = {metrics:?}

[drill]
scratch_dir = {scratch:?}
pg_bin_dir = {pg_bin:?}

[sources.pg-main]
kind = "pg-base"
connect = "host={sock} port={port} user=postgres"
fast = true
wal_timeout = 120
drill_sql = {drill_sql:?}
{pg_rpo}

[sources.redis-main]
kind = "redis"
url = "redis://127.0.0.1:{redis_port}"
{redis_rpo}

[sources.models]
kind = "tar"
command = ["tar", "-cf", "-", "-C", {model_parent:?}, "model"]
chunk_avg_kib = 256
tags = ["daily"]
verify_command = ["tar", "-tf"]
{models_rpo}

[sources.configs]
kind = "dir"
path = {etc:?}
exclude = ["*.swp"]
{configs_rpo}
"#,
            repo = self.a.repo.url,
            key = self.a.repo.key.to_str().unwrap(),
            cache = self.a.root().join("plan-cache").to_str().unwrap(),
            metrics = self.metrics.to_str().unwrap(),
            scratch = self.scratch.to_str().unwrap(),
            pg_bin = pg::bin_dir().to_str().unwrap(),
            drill_sql = self.drill_sql.to_str().unwrap(),
            sock = self.pg.socket_dir.display(),
            port = self.pg.port,
            pg_rpo = rpo("pg-main"),
            redis_port = self.redis.port,
            redis_rpo = rpo("redis-main"),
            model_parent = self.model.parent().unwrap().to_str().unwrap(),
            models_rpo = rpo("models"),
            etc = self.etc.to_str().unwrap(),
            configs_rpo = rpo("configs"),
        );
        std::fs::write(&self.config, text).unwrap();
        pg::chown_to_user(&self.config);
    }

    /// `cairn --config PLAN ARGS` as the PostgreSQL user (its
    /// archive_command writes the same local repository, whose directories
    /// are private to their owner).
    pub(crate) fn cairn(&self, args: &[&str]) -> Output {
        self.command(args, &[]).stdin(Stdio::null()).output().unwrap()
    }

    /// The command `cairn` runs, with `env` added.
    pub(crate) fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = if pg::running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", pg::os_user(), "--"]).arg(cairn_bin());
            c
        } else {
            Command::new(cairn_bin())
        };
        c.arg("--config").arg(&self.config).args(args).env_clear();
        c.env("PATH", std::env::var_os("PATH").unwrap_or_default()).current_dir("/");
        c.envs(env.iter().copied());
        c
    }

    /// Runs with `--json`, asserting `expect` as the exit code.
    pub(crate) fn json(&self, args: &[&str], expect: i32) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.cairn(&a);
        assert_eq!(
            code(&o),
            expect,
            "cairn {args:?}: {}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("cairn {args:?}: bad JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
    }
}

/// `promtool check metrics` on `text`; panics with its complaints.
pub(crate) fn promtool_check(what: &str, text: &str) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool rejects {what}: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The value of the series `name{job="J",source="S"}` in a metrics file.
pub(crate) fn value(text: &str, name: &str, job: &str, source: &str) -> f64 {
    let prefix = format!("{name}{{job=\"{job}\",source=\"{source}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .parse()
        .unwrap()
}

pub(crate) fn metrics_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn run_all_backs_up_every_source_and_status_follows_the_rpo() {
    let p = Plan::new();
    let v = p.json(&["run", "--all"], 0);
    let results = v.as_array().unwrap();
    let names: Vec<&str> = results.iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!(names, ["configs", "models", "pg-main", "redis-main"], "{v}");
    for r in results {
        assert_eq!(r["ok"], true, "{r}");
        let source = r["source"].as_str().unwrap();
        // The metrics file of each source passes promtool and holds what
        // the job reported.
        let m = metrics_file(&p.metrics, &format!("cairn_run_{source}.prom"));
        promtool_check(source, &m);
        assert_eq!(value(&m, "cairn_job_success", "run", source), 1.0);
        assert_eq!(value(&m, "cairn_job_exit_code", "run", source), 0.0);
        assert_eq!(value(&m, "cairn_job_read_bytes", "run", source), r["stats"]["bytes_read"].as_f64().unwrap(), "{m}");
        assert_eq!(value(&m, "cairn_job_added_bytes", "run", source), r["stats"]["uploaded_bytes"].as_f64().unwrap());
        let d = value(&m, "cairn_job_duration_seconds", "run", source);
        assert!((d - r["duration_s"].as_f64().unwrap()).abs() < 1e-6, "{d} vs {r}");
    }
    // What each snapshot holds, by kind.
    let snaps = p.json(&["snapshots"], 0);
    let by = |source: &str| -> serde_json::Value {
        snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"]["name"] == source)
            .unwrap_or_else(|| panic!("{source}: {snaps}"))
            .clone()
    };
    assert_eq!(by("pg-main")["source"]["kind"], "pg-base");
    assert_eq!(by("redis-main")["source"]["kind"], "redis-rdb");
    assert_eq!(by("models")["tags"], serde_json::json!(["daily"]));
    let ls = String::from_utf8_lossy(&p.cairn(&["ls", by("configs")["id"].as_str().unwrap()]).stdout).into_owned();
    assert!(ls.contains("conf.d/extra.conf") && !ls.contains(".swp"), "{ls}");

    // Every objective holds.
    let s = p.json(&["status"], 0);
    assert_eq!(s["ok"], true, "{s}");
    let pg_status = s["sources"].as_array().unwrap().iter().find(|x| x["source"] == "pg-main").unwrap();
    assert!(pg_status["wal_newest"].as_str().is_some_and(|w| w.len() == 24), "{pg_status}");
    assert!(pg_status["archive_lag_s"].as_f64().unwrap() < 3600.0, "{pg_status}");
    let prom = String::from_utf8(p.cairn(&["status", "--prometheus"]).stdout).unwrap();
    promtool_check("status --prometheus", &prom);
    assert!(prom.contains("cairn_objectives_met{source=\"configs\"} 1"), "{prom}");

    // A shorter RPO than the configs' snapshot age: status says so and
    // exits 11; the other sources stay ok.
    std::thread::sleep(Duration::from_millis(2100));
    p.write_config(&[("configs", "rpo = \"1s\"")]);
    let s = p.json(&["status"], 11);
    for x in s["sources"].as_array().unwrap() {
        let missed = x["source"] == "configs";
        assert_eq!(x["ok"], !missed, "{x}");
        if missed {
            assert_eq!(x["rpo"]["ok"], false, "{x}");
            assert!(x["problems"][0].as_str().unwrap().contains("RPO is 1 s"), "{x}");
        }
    }
    let prom = String::from_utf8(p.cairn(&["status", "--prometheus"]).stdout).unwrap();
    assert!(prom.contains("cairn_objectives_met{source=\"configs\"} 0"), "{prom}");
    // Running the source again brings it back within its RPO.
    let v = p.json(&["run", "configs"], 0);
    assert_eq!(v[0]["ok"], true);
    p.json(&["status", "configs"], 0);
}

#[test]
fn a_failing_source_fails_run_and_its_metrics_but_not_the_others() {
    let p = Plan::new();
    // Redis goes away: its source fails, the others are still backed up.
    let port = p.redis.port;
    p.redis.cli(&["SHUTDOWN", "NOSAVE"]);
    let o = p.cairn(&["--json", "run", "configs", "redis-main"]);
    assert_eq!(code(&o), 1, "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[1]["ok"], false, "{v}");
    assert!(v[1]["error"].as_str().unwrap().contains(&port.to_string()), "the error names the server: {v}");
    let m = metrics_file(&p.metrics, "cairn_run_redis-main.prom");
    promtool_check("failed run", &m);
    assert_eq!(value(&m, "cairn_job_success", "run", "redis-main"), 0.0);
    assert_eq!(value(&m, "cairn_job_exit_code", "run", "redis-main"), 1.0);
    assert!(!m.contains("cairn_job_last_success_timestamp_seconds"), "never succeeded: {m}");
    // An unknown key in the plan is refused with its line, before anything runs.
    let text = std::fs::read_to_string(&p.config).unwrap().replace("exclude = ", "exclued = ");
    std::fs::write(&p.config, &text).unwrap();
    let o = p.cairn(&["run", "--all"]);
    let err = String::from_utf8_lossy(&o.stderr);
    let line = text.lines().position(|l| l.starts_with("exclued")).unwrap() + 1;
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains(&format!("line {line}")) && err.contains("unknown key `exclued`"), "{err}");
}
