mod drills;
mod repo;

use std::collections::BTreeMap;

use anyhow::Result;
use cairn_engine::{Snapshot, SnapshotId};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::common::{human_bytes, Global};
use crate::config::{Source, SourceKind};
use crate::exit;

/// Whether every configured objective holds.
///
/// Per source of the --config file: the newest snapshot and its age; for
/// pg-base also the newest archived WAL segment (its push time is the
/// recovery point: nothing newer is in the repository) and, when `cairn pg
/// receive` streams into the stanza, the streamed segment's last flush
/// (the receive lag; the recovery point when it is newer) — the recovery
/// point's age is compared with `rpo`. The last restore drill and its
/// measured RTO are compared with `rto` (a source with an `rto` and no
/// successful drill fails). Then the repository's size and growth, the
/// last `check` (when, where, what it read, what it found), the share of
/// packs read by checks in the last --coverage-days, and how far the
/// rotation of `check --read-data-subset` has got.
///
/// Exit 0 when every objective holds and the last check found no problem,
/// 11 otherwise (so `status` can be an alert), other codes as for any command. --prometheus prints
/// the objective gauges in Prometheus text format instead; --metrics-file
/// FILE writes them there (atomically) as well.
///
/// Examples:
///   cairn --config /etc/cairn/cairn.toml status
///   cairn --config /etc/cairn/cairn.toml status --json | jq '.sources[] | select(.ok | not)'
///   cairn --config /etc/cairn/cairn.toml --metrics-file /var/lib/node_exporter/cairn_status.prom status
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Only these sources [default: every source with a `kind`].
    #[arg(value_name = "NAME")]
    names: Vec<String>,
    /// Print the objective gauges in Prometheus text format.
    #[arg(long, conflicts_with = "json")]
    prometheus: bool,
    /// Window of the check coverage share, in days.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    coverage_days: u32,
}

/// One objective's state.
#[derive(Debug, Serialize)]
struct Objective {
    /// The objective, seconds.
    objective_s: f64,
    /// What was measured, seconds (none: nothing to measure yet).
    measured_s: Option<f64>,
    ok: bool,
}

#[derive(Debug, Serialize)]
struct SourceStatus {
    source: String,
    kind: SourceKind,
    snapshots: u64,
    last_snapshot: Option<String>,
    last_snapshot_time: Option<String>,
    last_snapshot_age_s: Option<f64>,
    /// pg-base: the newest archived WAL segment.
    wal_newest: Option<String>,
    /// pg-base: when it was pushed.
    wal_pushed: Option<String>,
    /// pg-base: seconds since the newest archived segment was pushed.
    archive_lag_s: Option<f64>,
    /// pg-base: the segment `cairn pg receive` holds in part (the newest
    /// `.stream` object).
    #[serde(skip_serializing_if = "Option::is_none")]
    wal_streamed: Option<String>,
    /// pg-base: where the streamed WAL durable in the repository ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    wal_streamed_end_lsn: Option<String>,
    /// pg-base: when the receiver last made what it received durable.
    #[serde(skip_serializing_if = "Option::is_none")]
    wal_streamed_flushed: Option<String>,
    /// pg-base: seconds since then (the receive lag). A receiver flushes
    /// only when WAL arrives: on an idle server it grows, as the archive
    /// lag does, though nothing is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    receive_lag_s: Option<f64>,
    /// pg-base: how far each copy of the stanza's archive
    /// (`[stanzas.NAME] copies`) is behind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    wal_copies: Vec<cairn_engine::wal::copies::CopyLag>,
    /// The recovery point's age: for pg-base the archive lag or the
    /// receive lag, whichever is smaller, else the newest snapshot's age.
    recovery_point_age_s: Option<f64>,
    rpo: Option<Objective>,
    last_drill: Option<DrillStatus>,
    rto: Option<Objective>,
    /// Bytes its snapshots added in the last 24 hours.
    added_24h_bytes: u64,
    ok: bool,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DrillStatus {
    time: String,
    ok: bool,
    rto_s: f64,
    failure: Option<String>,
}

fn age_s(now: DateTime<Utc>, rfc3339: &str) -> Option<f64> {
    let t = DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some((now - t.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0)
}

fn objective(limit: Option<std::time::Duration>, measured: Option<f64>) -> Option<Objective> {
    let l = limit?.as_secs_f64();
    Some(Objective { objective_s: l, measured_s: measured, ok: measured.is_some_and(|m| m <= l) })
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let cfg = g.config_file()?;
    let sources = cfg.select(&a.names, a.names.is_empty())?;
    let repo = g.open().await?;
    let now = Utc::now();
    let snapshots = Snapshot::list(&repo).await?;
    let mut by_source: BTreeMap<&str, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in &snapshots {
        by_source.entry(s.1.source.name.as_str()).or_default().push(s);
    }
    let drills = drills::records(&repo).await?;
    let mut out = Vec::new();
    for src in &sources {
        out.push(source_status(g, &repo, cfg, src, by_source.get(src.name.as_str()), &drills, now).await?);
    }
    let repo_status = repo::status(&repo, &snapshots, now, a.coverage_days).await?;
    let ok = out.iter().all(|s| s.ok) && repo_status.problems.is_empty();
    if let Some(f) = &g.metrics_file {
        crate::metrics::write_atomic(f, &prometheus(&out, &repo_status))?;
    }
    if a.prometheus {
        print!("{}", prometheus(&out, &repo_status));
    } else if g.json {
        crate::cmd::print_json(
            &serde_json::json!({ "ok": ok, "time": now.to_rfc3339(), "sources": out, "repository": repo_status }),
        );
    } else {
        print_human(&out, &repo_status);
    }
    Ok(if ok { exit::OK } else { exit::OBJECTIVE_MISSED })
}

async fn source_status(
    g: &Global,
    repo: &cairn_engine::Repository,
    cfg: &crate::config::ConfigFile,
    src: &Source,
    snaps: Option<&Vec<&(SnapshotId, Snapshot)>>,
    drills: &[drills::DrillSummary],
    now: DateTime<Utc>,
) -> Result<SourceStatus> {
    let snaps: &[&(SnapshotId, Snapshot)] = snaps.map(Vec::as_slice).unwrap_or(&[]);
    let newest = snaps.iter().max_by(|a, b| a.1.time.cmp(&b.1.time));
    let added_24h_bytes = snaps
        .iter()
        .filter(|s| age_s(now, &s.1.time).is_some_and(|a| a <= 86_400.0))
        .map(|s| s.1.stats.uploaded_bytes)
        .sum();
    let mut st = SourceStatus {
        source: src.name.clone(),
        kind: src.kind,
        snapshots: snaps.len() as u64,
        last_snapshot: newest.map(|s| s.0.to_hex()),
        last_snapshot_time: newest.map(|s| s.1.time.clone()),
        last_snapshot_age_s: newest.and_then(|s| age_s(now, &s.1.time)),
        wal_newest: None,
        wal_pushed: None,
        archive_lag_s: None,
        wal_streamed: None,
        wal_streamed_end_lsn: None,
        wal_streamed_flushed: None,
        receive_lag_s: None,
        wal_copies: Vec::new(),
        recovery_point_age_s: None,
        rpo: None,
        last_drill: None,
        rto: None,
        added_24h_bytes,
        ok: true,
        problems: Vec::new(),
    };
    st.recovery_point_age_s = st.last_snapshot_age_s;
    if st.snapshots == 0 {
        st.problems.push("no snapshot yet".into());
    }
    if src.kind == SourceKind::PgBase {
        let stanza = cfg.stanza_of(&src.cfg).expect("validated: a pg-base source has a stanza");
        let cache = g.cache_dir();
        let (size, files) = cairn_engine::wal::archived_with(repo, &stanza, Some(&cache)).await?;
        // Streamed segments come as their segment's name with a manifest
        // of their own name (`<segment>.stream`).
        fn streamed(m: &cairn_engine::wal::WalManifest) -> Option<&str> {
            cairn_engine::wal::stream::segment_of_stream(&m.name)
        }
        let segments = files.iter().filter(|(n, _)| matches!(n, cairn_formats::pg::WalFileName::Segment(_)));
        let newest_wal =
            segments.clone().filter(|(_, m)| streamed(m).is_none()).max_by(|a, b| a.1.pushed.cmp(&b.1.pushed));
        let newest_stream = segments.filter(|(_, m)| streamed(m).is_some()).max_by(|a, b| a.1.pushed.cmp(&b.1.pushed));
        if let Some((_, m)) = newest_wal {
            st.wal_newest = Some(m.name.clone());
            st.wal_pushed = Some(m.pushed.clone());
            st.archive_lag_s = age_s(now, &m.pushed);
            st.recovery_point_age_s = st.archive_lag_s;
        }
        if let Some((n, m)) = newest_stream {
            let cairn_formats::pg::WalFileName::Segment(seg) = n else { unreachable!("filtered to segments") };
            let start = seg.segno.saturating_mul(u64::from(size.bytes()));
            let end = start.saturating_add(m.size);
            st.wal_streamed = streamed(m).map(str::to_string);
            st.wal_streamed_end_lsn = Some(format!("{:X}/{:X}", end >> 32, end & 0xffff_ffff));
            st.wal_streamed_flushed = Some(m.pushed.clone());
            st.receive_lag_s = age_s(now, &m.pushed);
            if let Some(r) = st.receive_lag_s {
                if st.archive_lag_s.is_none_or(|a| r < a) {
                    st.recovery_point_age_s = Some(r);
                }
            }
        }
        if newest_wal.is_none() && newest_stream.is_none() {
            st.problems.push(format!("no WAL archived in stanza {stanza:?}"));
        }
        if let Some(t) = cfg.stanzas.get(&stanza) {
            let budget = t.lag_budget.unwrap_or(crate::config::DEFAULT_LAG_BUDGET).as_secs();
            for name in &t.copies {
                let lag = cairn_engine::wal::copies::lag_of(repo, name, &stanza).await?;
                if lag.lag_s > budget {
                    st.problems.push(format!(
                        "WAL copy {name} lacks {} file(s) since {} s, beyond its lag budget of {budget} s",
                        lag.behind, lag.lag_s
                    ));
                }
                st.wal_copies.push(lag);
            }
        }
    }
    st.rpo = objective(src.cfg.rpo, st.recovery_point_age_s);
    if let Some(d) = drills.iter().rev().find(|d| d.source == src.name) {
        st.last_drill =
            Some(DrillStatus { time: d.time.clone(), ok: d.ok, rto_s: d.rto_s, failure: d.failure.clone() });
    }
    let last_good = drills.iter().rev().find(|d| d.source == src.name && d.ok);
    st.rto = objective(src.cfg.rto, last_good.map(|d| d.rto_s));
    if let Some(o) = &st.rpo {
        if !o.ok {
            st.problems.push(match o.measured_s {
                Some(m) => format!("recovery point is {} old, RPO is {}", secs(m), secs(o.objective_s)),
                None => format!("no recovery point to meet the RPO of {}", secs(o.objective_s)),
            });
        }
    }
    if let Some(o) = &st.rto {
        if !o.ok {
            st.problems.push(match o.measured_s {
                Some(m) => format!("last successful drill took {}, RTO is {}", secs(m), secs(o.objective_s)),
                None => format!("no successful drill proves the RTO of {}", secs(o.objective_s)),
            });
        }
    }
    if st.last_drill.as_ref().is_some_and(|d| !d.ok) {
        st.problems.push("the last drill failed".into());
    }
    st.ok = st.problems.is_empty();
    Ok(st)
}

/// A duration for people: `42 s`, `17 min`, `3.5 h`, `2.0 d`.
fn secs(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

fn print_human(out: &[SourceStatus], r: &repo::RepoStatus) {
    for s in out {
        println!("{} ({}): {}", s.source, s.kind.as_str(), if s.ok { "ok" } else { "NOT OK" });
        match (&s.last_snapshot, s.last_snapshot_age_s) {
            (Some(id), Some(age)) => println!("  last snapshot   {} ({} ago)", &id[..8], secs(age)),
            _ => println!("  last snapshot   none"),
        }
        if let (Some(w), Some(lag)) = (&s.wal_newest, s.archive_lag_s) {
            println!("  newest WAL      {w} (pushed {} ago)", secs(lag));
        }
        if let (Some(w), Some(end), Some(lag)) = (&s.wal_streamed, &s.wal_streamed_end_lsn, s.receive_lag_s) {
            println!("  streamed WAL    {w} to {end} (flushed {} ago)", secs(lag));
        }
        for c in &s.wal_copies {
            match c.behind {
                0 => println!("  WAL copy        {}: up to date", c.name),
                n => println!("  WAL copy        {}: {n} file(s) behind for {}", c.name, secs(c.lag_s as f64)),
            }
        }
        if let Some(o) = &s.rpo {
            let m = o.measured_s.map_or("-".into(), secs);
            println!("  RPO             {m} of {} {}", secs(o.objective_s), if o.ok { "ok" } else { "MISSED" });
        }
        match &s.last_drill {
            Some(d) => {
                println!("  last drill      {} {}, RTO {}", d.time, if d.ok { "ok" } else { "FAILED" }, secs(d.rto_s))
            }
            None => println!("  last drill      none"),
        }
        if let Some(o) = &s.rto {
            let m = o.measured_s.map_or("-".into(), secs);
            println!("  RTO             {m} of {} {}", secs(o.objective_s), if o.ok { "ok" } else { "MISSED" });
        }
        for p in &s.problems {
            println!("  problem: {p}");
        }
    }
    println!(
        "repository: {} in {} packs, {} added in 24 h, {} in 7 d",
        human_bytes(r.pack_bytes),
        r.packs,
        human_bytes(r.added_24h_bytes),
        human_bytes(r.added_7d_bytes)
    );
    r.print_check();
    for p in &r.problems {
        println!("  problem: {p}");
    }
}

/// The objective gauges, in Prometheus text format.
fn prometheus(out: &[SourceStatus], r: &repo::RepoStatus) -> String {
    let mut m = crate::metrics::Families::default();
    for s in out {
        let l = [("source", s.source.as_str())];
        if let Some(a) = s.recovery_point_age_s {
            m.gauge("cairn_recovery_point_age_seconds", "Age of the newest recovery point.", &l, a);
        }
        if let Some(o) = &s.rpo {
            m.gauge("cairn_rpo_seconds", "The recovery point objective.", &l, o.objective_s);
        }
        if let Some(a) = s.archive_lag_s {
            m.gauge(
                "cairn_wal_archive_lag_seconds",
                "Seconds since the newest archived WAL segment was pushed.",
                &l,
                a,
            );
        }
        if let Some(a) = s.receive_lag_s {
            m.gauge(
                "cairn_wal_receive_lag_seconds",
                "Seconds since cairn pg receive last made streamed WAL durable.",
                &l,
                a,
            );
        }
        for c in &s.wal_copies {
            let l = [("source", s.source.as_str()), ("copy", c.name.as_str())];
            m.gauge(
                "cairn_wal_copy_lag_seconds",
                "Seconds a copy of the WAL archive has lacked files pushed to the primary (0: up to date).",
                &l,
                c.lag_s as f64,
            );
            m.gauge("cairn_wal_copy_behind_files", "WAL files a copy of the archive lacks.", &l, c.behind as f64);
        }
        if let Some(d) = &s.last_drill {
            m.gauge("cairn_drill_last_rto_seconds", "Measured RTO of the last drill.", &l, d.rto_s);
            m.gauge("cairn_drill_last_success", "1 if the last drill succeeded.", &l, f64::from(u8::from(d.ok)));
        }
        if let Some(o) = &s.rto {
            m.gauge("cairn_rto_seconds", "The recovery time objective.", &l, o.objective_s);
        }
        m.gauge("cairn_objectives_met", "1 if every objective of the source holds.", &l, f64::from(u8::from(s.ok)));
    }
    m.gauge("cairn_repository_pack_bytes", "Bytes in packs.", &[], r.pack_bytes as f64);
    m.gauge(
        "cairn_repository_added_24h_bytes",
        "Bytes snapshots added in the last 24 hours.",
        &[],
        r.added_24h_bytes as f64,
    );
    r.check_gauges(&mut m);
    m.render()
}
