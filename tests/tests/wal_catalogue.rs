//! Planning a point-in-time restore on a cold host: with thousands of WAL
//! files archived on S3 (moto), `pg restore --dry-run --latest` plans from
//! catalogue segments in a few seconds with no cache and well under a
//! second with one, and the plan is the one reading every manifest gives.
//!
//! A real PostgreSQL 15 archives a base backup and its WAL; then the test
//! adds `CAIRN_TEST_WAL_FILES` (default 2,000; the figure is
//! 20,000) synthetic segments after the last real one through the engine's
//! `put_synthetic`, which writes each manifest as a push does and runs a
//! push's catalogue step. `CAIRN_TEST_WAL_TRACE=1` prints a warm call's
//! debug log (where its time goes).

use std::time::{Duration, Instant};

use cairn_engine::wal::catseg::put_synthetic;
use cairn_engine::wal::{catalog, WalFileKind};
use cairn_engine::{Repository, Secret};
use cairn_formats::pg::{SegmentName, WalFileName};
use cairn_tests::moto::Moto;
use cairn_tests::pg::Cluster;
use futures::StreamExt;

use crate::wal::Archive;

/// A base backup through `pg_basebackup` (`pitr.rs` does the same on a
/// local repository, whose directories it then hands to the server's user).
fn basebackup(a: &Archive, src: &Cluster) -> serde_json::Value {
    let tool = cairn_tests::pg::bin_dir().join("pg_basebackup");
    let mut args: Vec<String> =
        ["backup", "--kind", "pg-base", "--stanza", "main", "--"].iter().map(|s| s.to_string()).collect();
    args.push(tool.display().to_string());
    args.extend(src.connect_args());
    args.extend(["-D", "-", "-Ft", "-X", "none", "--checkpoint=fast"].iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    a.repo.json(&refs)
}

fn files() -> u64 {
    std::env::var("CAIRN_TEST_WAL_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

/// Adds `n` segments after the newest archived one, each a copy of it
/// under the next name with its facts moved along.
async fn synthesize(repo: &Repository, n: u64) -> u64 {
    let (size, all) = catalog::archived(repo, "main").await.unwrap();
    let (last, template) = all
        .iter()
        .filter_map(|(name, m)| match name {
            WalFileName::Segment(s) if m.kind == WalFileKind::Segment => Some((*s, m.clone())),
            _ => None,
        })
        .max_by_key(|(s, _)| s.segno)
        .expect("a real segment archived");
    let seg_bytes = u64::from(size.bytes());
    let mut puts = futures::stream::iter(1..=n)
        .map(|i| {
            let mut m = template.clone();
            let segno = last.segno + i;
            m.name = SegmentName { timeline: last.timeline, segno }.format(size);
            if let Some(f) = m.facts.as_mut() {
                f.start_lsn = segno * seg_bytes;
                f.first_record = Some(segno * seg_bytes + 40);
                f.last_record = Some(segno * seg_bytes + 4000);
                f.end_of_records = segno * seg_bytes + 4100;
            }
            async move { put_synthetic(repo, "main", &m, size).await.unwrap() }
        })
        .buffered(4);
    while puts.next().await.is_some() {}
    all.len() as u64 + n
}

fn timed_plan(a: &Archive, cache: &std::path::Path, full: bool) -> (Duration, serde_json::Value) {
    let to = a.root().join("never-written");
    let args = ["--json", "pg", "restore", "--stanza", "main", "--to", to.to_str().unwrap(), "--latest", "--dry-run"];
    let mut c = a.repo.cmd(&args);
    c.env("CAIRN_CACHE_DIR", cache);
    if full {
        c.env("CAIRN_TEST_WAL_FULL_READ", "1");
    }
    let t = Instant::now();
    let o = c.output().unwrap();
    let took = t.elapsed();
    cairn_tests::repo::assert_success(&o, &args);
    (took, serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn a_cold_host_plans_from_catalogue_segments() {
    let moto = Moto::start();
    let a = Archive::new(Some(&moto));
    let mut src = Cluster::init(a.root(), "src", 16, &a.conf(false));
    let env: Vec<(&str, String)> = a.repo.env.clone();
    src.start(&env);
    let b = basebackup(&a, &src);
    assert_eq!(b["metadata"]["pg"]["wal_complete"], true, "{b}");
    src.sql("CREATE TABLE t AS SELECT 1 AS x");
    let last = src.switch_wal();
    src.wait_archived(&last, Duration::from_secs(120));
    src.stop();

    let n = files();
    let store = cairn_tests::s3::store(&a.repo.url, &moto.env());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    let total = rt.block_on(async {
        let repo = Repository::open(store, &Secret::from_key_file(&a.repo.key).unwrap()).await.unwrap();
        synthesize(&repo, n).await
    });
    eprintln!("synthesized {n} WAL files ({total} archived) in {:.1} s", started.elapsed().as_secs_f64());

    let cache = a.root().join("cold-cache");
    let (cold, plan) = timed_plan(&a, &cache, false);
    let (warm, again) = timed_plan(&a, &cache, false);
    if std::env::var_os("CAIRN_TEST_WAL_TRACE").is_some() {
        let to = a.root().join("never-written");
        let o = a
            .repo
            .cmd(&["pg", "restore", "--stanza", "main", "--to", to.to_str().unwrap(), "--latest", "--dry-run"])
            .env("CAIRN_CACHE_DIR", &cache)
            .env("RUST_LOG", "cairn_engine=debug,cairn=debug")
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    }
    let (full, reference) = timed_plan(&a, &a.root().join("unused-cache"), true);
    eprintln!(
        "pg restore --dry-run --latest with {total} WAL files on moto: cold {:.2} s, warm {:.2} s, reading every manifest {:.2} s",
        cold.as_secs_f64(),
        warm.as_secs_f64(),
        full.as_secs_f64()
    );
    assert_eq!(plan, reference, "the plan from catalogue segments is the one from every manifest");
    assert_eq!(again, reference, "the plan from the warm cache is the one from every manifest");
    assert!(plan["wal_segments"].as_u64().unwrap() > n, "{plan}");
    assert!(cold <= Duration::from_secs(5), "cold plan took {cold:?}");
    assert!(warm <= Duration::from_millis(500), "warm plan took {warm:?}");
}
