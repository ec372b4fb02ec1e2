//! Check coverage over time (issue #20): the repository remembers which
//! packs checks have read, so four runs of `check --read-data-subset 25%`
//! read every pack exactly once, whichever host (here: whichever cache
//! directory) runs them, a fifth run starts the next round with the packs
//! read longest ago, and `status` shows the coverage.

use std::collections::BTreeSet;

use cairn_tests::data::random;
use cairn_tests::repo::{assert_success, code};
use cairn_tests::TestRepo;

use crate::operator::promtool_check;

/// `cairn --json check --read-data-subset 25%`, with its own cache
/// directory (another host, as far as local state goes) on odd runs.
fn quarter_check(repo: &TestRepo, run: usize, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    args.extend(["check", "--read-data-subset", "25%"]);
    let mut c = repo.cmd(&args);
    if run % 2 == 1 {
        c.env("CAIRN_CACHE_DIR", repo.dir.path().join(format!("other-host-{run}")));
    }
    let o = c.output().unwrap();
    assert_success(&o, &args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "run {run}: {v}");
    v
}

fn read_packs(v: &serde_json::Value) -> Vec<String> {
    v["read_packs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

#[test]
fn four_quarter_checks_read_every_pack_exactly_once_and_status_shows_it() {
    let repo = TestRepo::with_args(&["--pack-size-mib", "1"]);
    // Fourteen backups of distinct data (`random` ignores a seed's low
    // bit): each writes a pack of its own.
    for i in 0..14 {
        repo.backup_bytes(&random(256 << 10, 100 + 2 * i), &["--source", "data"]);
    }
    let root = repo.repo_dir();
    let packs: BTreeSet<String> =
        repo.objects("packs").iter().map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into_owned()).collect();
    let n = packs.len();
    // With more than 9 packs, three runs of ceil(n/4) leave some for the
    // fourth, so "exactly once in four runs" is what must happen.
    assert!(n >= 12, "{n} packs");
    let quarter = n.div_ceil(4);

    let metrics = repo.dir.path().join("check.prom");
    let mut seen = Vec::new();
    let mut first = Vec::new();
    for run in 0..4 {
        let extra = ["--metrics-file", metrics.to_str().unwrap()];
        let v = quarter_check(&repo, run, if run == 0 { &extra } else { &[] });
        let read = read_packs(&v);
        assert_eq!(v["packs"], n, "run {run}: {v}");
        assert_eq!(v["coverage"]["round"], 1, "run {run}: {v}");
        assert_eq!(read.len(), if run < 3 { quarter } else { n - 3 * quarter }, "run {run}: {v}");
        assert_eq!(v["coverage"]["read_in_round"], seen.len() + read.len(), "run {run}: {v}");
        if run == 0 {
            first.clone_from(&read);
            let text = std::fs::read_to_string(&metrics).unwrap();
            promtool_check("check --metrics-file", &text);
            let objects = format!("cairn_job_objects{{job=\"check\",source=\"\"}} {quarter}\n");
            assert!(text.contains(&objects), "{text}");
        }
        seen.extend(read);
    }
    seen.sort();
    assert_eq!(seen, packs.iter().cloned().collect::<Vec<_>>(), "every pack read exactly once in four runs");

    // The fifth run starts round 2 with the packs read longest ago.
    let v = quarter_check(&repo, 4, &[]);
    assert_eq!(v["coverage"]["round"], 2, "{v}");
    assert_eq!(read_packs(&v), first, "{v}");
    assert_eq!(v["coverage"]["read_in_round"], quarter, "{v}");

    // `status` (it needs a plan): every pack was read within the window.
    let config = repo.dir.path().join("plan.toml");
    let plan = format!(
        "repo = {:?}\nkey_file = {:?}\ncache_dir = {:?}\n\n[sources.data]\nkind = \"stream\"\ncommand = [\"true\"]\n",
        repo.url,
        repo.key.to_str().unwrap(),
        repo.cache.to_str().unwrap()
    );
    std::fs::write(&config, plan).unwrap();
    let status = |args: &[&str]| {
        let mut c = repo.cmd(&["--config", config.to_str().unwrap()]);
        c.args(args).env_remove("CAIRN_REPO");
        c.output().unwrap()
    };
    let o = status(&["--json", "status"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &s["repository"];
    assert_eq!(r["check_coverage"], 1.0, "{s}");
    assert_eq!(r["check_round"], 2, "{s}");
    assert_eq!(r["check_round_to_go"], n - quarter, "{s}");
    assert_eq!(r["last_check"]["packs_read"], quarter, "{s}");
    assert_eq!(r["last_check"]["problems"], 0, "{s}");
    let o = status(&["status"]);
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(human.contains("check coverage  100% of"), "{human}");
    let o = status(&["status", "--prometheus"]);
    let prom = String::from_utf8(o.stdout).unwrap();
    promtool_check("status --prometheus", &prom);
    assert!(prom.contains("\ncairn_check_coverage_ratio 1\n"), "{prom}");
    assert!(prom.contains("\ncairn_check_problems 0\n"), "{prom}");
}
