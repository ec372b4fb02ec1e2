//! A real S3 server whose conditional writes are atomic: Ceph's radosgw,
//! with one monitor and one in-memory OSD, on 127.0.0.1.
//!
//! moto answers conditional writes correctly but not atomically (see
//! shared/s3/README.md), so race and fencing tests run here. The cluster
//! takes about 15 s to start, so a test process starts one, the first time
//! a test asks, and every test of the process shares it: each test uses its
//! own buckets. `scripts/ceph.sh` starts it in a temp directory and stops
//! it, removing the directory, within a second of this process exiting.
//!
//! `make test` installs Ceph (scripts/deps.sh, as root). A missing install
//! is a test failure with a clear message, never a silent pass.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// The test process's Ceph cluster.
#[derive(Debug)]
pub struct Ceph {
    /// `http://127.0.0.1:PORT`, radosgw's S3 endpoint.
    pub endpoint: String,
    /// The cluster's directory (configuration, keys, logs, pid files).
    pub dir: PathBuf,
}

/// The shared cluster, or why it could not start (reported to every test
/// that asks, without trying again).
static CLUSTER: OnceLock<Result<Ceph, String>> = OnceLock::new();

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ceph.sh")
}

/// Runs `scripts/ceph.sh ARGS`; its stdout, or its stderr as the error.
fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(script())
        .args(args)
        .env("CEPH_OWNER_PID", std::process::id().to_string())
        .output()
        .map_err(|e| format!("running {}: {e}", script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/ceph.sh {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn boot() -> Result<Ceph, String> {
    let dir = tempfile::Builder::new().prefix("cairn-ceph-").tempdir().map_err(|e| e.to_string())?.keep();
    let t = Instant::now();
    let endpoint = run(&["start", dir.to_str().unwrap()]).map_err(|e| {
        // The script printed the end of each log and stopped what it started.
        let _ = std::fs::remove_dir_all(&dir);
        format!("{e}\nCeph (radosgw, ceph-mon, ceph-osd) is needed: `make test` installs it via scripts/deps.sh")
    })?;
    eprintln!("ceph: {endpoint} up in {:.1} s", t.elapsed().as_secs_f64());
    Ok(Ceph { endpoint, dir })
}

impl Ceph {
    /// The process's cluster, started on first use; concurrent callers
    /// wait for that one start.
    pub fn start() -> &'static Ceph {
        match CLUSTER.get_or_init(boot) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// Creates a bucket; fails if it exists (a name another test uses).
    pub fn create_bucket(&self, name: &str) {
        if let Err(e) = run(&["bucket", self.dir.to_str().unwrap(), name]) {
            panic!("{e}");
        }
    }

    /// Environment for a cairn process talking to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }
}
