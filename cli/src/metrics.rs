//! Prometheus text-format metrics of a job, for node_exporter's textfile
//! collector.
//!
//! A command records what it did per source ([`record`]); when it ends,
//! [`write`] renders one file per source (or everything into
//! `--metrics-file`) and renames it into place, so the collector never
//! reads half a file. The file of a failed run keeps the last success time
//! of the file it replaces, so an alert on "no success for 26 h" works with
//! one file per job and source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// What a job did for one source.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Bytes read from the source (or from the repository, for `check`).
    pub read_bytes: u64,
    /// Bytes the job added to the repository.
    pub added_bytes: u64,
    /// Objects processed: chunks for backups, segments for `wal push`,
    /// packs for `check`, snapshots for `forget`.
    pub objects: u64,
    /// The source's own outcome when a job runs several (`run --all`).
    pub exit_code: Option<i32>,
    /// The source's own duration when a job runs several.
    pub duration: Option<Duration>,
}

static SAMPLES: Mutex<BTreeMap<String, Sample>> = Mutex::new(BTreeMap::new());

/// Records (adds to) what the running job did for `source`.
pub fn record(source: &str, s: Sample) {
    let mut m = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let e = m.entry(source.to_string()).or_default();
    e.read_bytes += s.read_bytes;
    e.added_bytes += s.added_bytes;
    e.objects += s.objects;
    e.exit_code = s.exit_code.or(e.exit_code);
    e.duration = s.duration.or(e.duration);
}

/// Where a job's metrics go.
#[derive(Debug, Clone)]
pub enum Target {
    /// `--metrics-file`: every source's series in this one file.
    File(PathBuf),
    /// `metrics_dir`: `cairn_<job>[_<source>].prom` per source.
    Dir(PathBuf),
}

fn now_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A label value escaped per the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A file-name-safe form of a source name.
fn file_part(v: &str) -> String {
    v.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

const FAMILIES: &[(&str, &str)] = &[
    ("cairn_job_last_run_timestamp_seconds", "When the job last ended (Unix time)."),
    ("cairn_job_last_success_timestamp_seconds", "When the job last ended successfully (Unix time)."),
    ("cairn_job_duration_seconds", "How long the job's last run took."),
    ("cairn_job_success", "1 if the job's last run succeeded, else 0."),
    ("cairn_job_exit_code", "The exit code of the job's last run."),
    ("cairn_job_read_bytes", "Bytes the last run read from its source (from the repository, for check)."),
    ("cairn_job_added_bytes", "Bytes the last run added to the repository."),
    ("cairn_job_objects", "Objects the last run processed: chunks, WAL segments, packs or snapshots."),
];

/// One source's series.
struct Series {
    source: String,
    values: [Option<f64>; 8],
}

fn render(job: &str, series: &[Series]) -> String {
    let mut out = String::new();
    for (i, (name, help)) in FAMILIES.iter().enumerate() {
        if series.iter().all(|s| s.values[i].is_none()) {
            continue;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for s in series {
            if let Some(v) = s.values[i] {
                out.push_str(&format!("{name}{{job=\"{}\",source=\"{}\"}} {v}\n", label(job), label(&s.source)));
            }
        }
    }
    out
}

/// The last success time a previous file recorded for `source`.
fn previous_success(path: &Path, job: &str, source: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let prefix =
        format!("cairn_job_last_success_timestamp_seconds{{job=\"{}\",source=\"{}\"}} ", label(job), label(source));
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// Writes `text` to `path` atomically (a temporary file in the same
/// directory, renamed); 0644, since node_exporter runs as its own user.
/// Not fsynced: after a crash the next run rewrites it, and `wal push`
/// should not pay a flush for it.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("metrics file has no name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.with_context(|| format!("writing metrics file {}", path.display()))
}

/// Writes the job's metrics: one series per recorded source (or one with
/// `source=""` when the job recorded none).
pub fn write(target: &Target, job: &str, code: i32, started: SystemTime, ended: SystemTime) -> Result<()> {
    let mut samples: Vec<(String, Sample)> =
        std::mem::take(&mut *SAMPLES.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
    if samples.is_empty() {
        samples.push((String::new(), Sample::default()));
    }
    let total = ended.duration_since(started).unwrap_or_default();
    let series_of = |source: &str, s: &Sample, path: &Path| {
        let code = s.exit_code.unwrap_or(code);
        let success = if code == 0 { Some(now_s(ended)) } else { previous_success(path, job, source) };
        Series {
            source: source.to_string(),
            values: [
                Some(now_s(ended)),
                success,
                Some(s.duration.unwrap_or(total).as_secs_f64()),
                Some(if code == 0 { 1.0 } else { 0.0 }),
                Some(code as f64),
                Some(s.read_bytes as f64),
                Some(s.added_bytes as f64),
                Some(s.objects as f64),
            ],
        }
    };
    match target {
        Target::File(path) => {
            let series: Vec<Series> = samples.iter().map(|(src, s)| series_of(src, s, path)).collect();
            write_atomic(path, &render(job, &series))
        }
        Target::Dir(dir) => {
            for (src, s) in &samples {
                let name = if src.is_empty() {
                    format!("cairn_{job}.prom")
                } else {
                    format!("cairn_{job}_{}.prom", file_part(src))
                };
                let path = dir.join(name);
                write_atomic(&path, &render(job, &[series_of(src, s, &path)]))?;
            }
            Ok(())
        }
    }
}

/// Gauge families built up series by series, rendered with one HELP and
/// TYPE line each (`status --prometheus`).
#[derive(Debug, Default)]
pub struct Families {
    order: Vec<&'static str>,
    families: BTreeMap<&'static str, (&'static str, Vec<String>)>,
}

impl Families {
    /// Adds one series of gauge `name`.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        let f = self.families.entry(name).or_insert_with(|| {
            self.order.push(name);
            (help, Vec::new())
        });
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        let l = if l.is_empty() { String::new() } else { format!("{{{}}}", l.join(",")) };
        f.1.push(format!("{name}{l} {v}"));
    }

    /// The text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for name in &self.order {
            let (help, lines) = &self.families[name];
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_keeps_the_last_success_time() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::Dir(dir.path().to_path_buf());
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        record("db \"1\"", Sample { read_bytes: 10, added_bytes: 4, objects: 2, ..Default::default() });
        write(&t, "backup", 0, t0, t0 + Duration::from_secs(3)).unwrap();
        let path = dir.path().join("cairn_backup_db__1_.prom");
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.contains("cairn_job_read_bytes{job=\"backup\",source=\"db \\\"1\\\"\"} 10\n"), "{first}");
        assert!(first.contains("cairn_job_duration_seconds{job=\"backup\",source=\"db \\\"1\\\"\"} 3\n"), "{first}");
        record("db \"1\"", Sample::default());
        write(&t, "backup", 5, t0 + Duration::from_secs(60), t0 + Duration::from_secs(61)).unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        assert!(second
            .contains("cairn_job_last_success_timestamp_seconds{job=\"backup\",source=\"db \\\"1\\\"\"} 1000003\n"));
        assert!(second.contains("cairn_job_exit_code{job=\"backup\",source=\"db \\\"1\\\"\"} 5\n"), "{second}");
        assert!(second.contains("cairn_job_success{job=\"backup\",source=\"db \\\"1\\\"\"} 0\n"), "{second}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
