//! A throwaway repository driven through the real `cairn` binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Path of the `cairn` binary built beside this test binary
/// (`target/<profile>/cairn`), or `$CAIRN_BIN`.
pub fn cairn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..");
    let p = dir.join("cairn");
    assert!(
        p.exists(),
        "{} not found: build it first (`cargo build --release -p cairn-cli`) or set CAIRN_BIN",
        p.display()
    );
    p
}

/// A repository in a temp dir, with a key file and its own index cache.
pub struct TestRepo {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
    /// Repository location given to `--repo`.
    pub url: String,
    /// Key file.
    pub key: PathBuf,
    /// Index cache directory.
    pub cache: PathBuf,
    /// Extra environment (S3 credentials).
    pub env: Vec<(&'static str, String)>,
}

impl TestRepo {
    /// A fresh, initialised local repository.
    pub fn new() -> TestRepo {
        Self::with_args(&[])
    }

    /// A fresh local repository initialised with extra `init` arguments.
    pub fn with_args(init_args: &[&str]) -> TestRepo {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("repo").to_string_lossy().into_owned();
        let r = Self::at(dir, url, Vec::new());
        r.ok(&[&["init"], init_args].concat());
        r
    }

    /// A repository at `url` (not initialised), with files under `dir`.
    pub fn at(dir: tempfile::TempDir, url: String, env: Vec<(&'static str, String)>) -> TestRepo {
        let key = dir.path().join("key");
        let cache = dir.path().join("cache");
        TestRepo { dir, url, key, cache, env }
    }

    /// The repository directory (local repositories only).
    pub fn repo_dir(&self) -> PathBuf {
        PathBuf::from(&self.url)
    }

    /// A `cairn` command with repository, key and cache set by environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(cairn_bin());
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CAIRN_REPO", &self.url)
            .env("CAIRN_KEY_FILE", &self.key)
            .env("CAIRN_CACHE_DIR", &self.cache)
            .env("RUST_BACKTRACE", "1");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs and returns the output, whatever the status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs, feeding `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        output_with_stdin(&mut self.cmd(args), input)
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let o = self.run(args);
        assert_success(&o, args);
        o.stdout
    }

    /// Runs with `--json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        // Global flags go first: anything after `--` belongs to a producer.
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("cairn {args:?}: bad JSON ({e}): {}", String::from_utf8_lossy(&out)))
    }

    /// Backs up `data` from stdin; returns the JSON summary.
    pub fn backup_bytes(&self, data: &[u8], extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["backup", "--json"];
        args.extend_from_slice(extra);
        args.push("-");
        let o = self.run_stdin(&args, data);
        assert_success(&o, &args);
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Restores a snapshot to stdout and returns the bytes.
    pub fn restore_bytes(&self, snapshot: &str) -> Vec<u8> {
        self.ok(&["restore", snapshot, "--to", "-"])
    }

    /// Snapshot list as JSON.
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        self.json(&["snapshots"]).as_array().unwrap().clone()
    }

    /// All objects under the repository's `prefix` directory: its files,
    /// less staging files (`…#<digits>`), which are never objects.
    pub fn objects(&self, prefix: &str) -> Vec<PathBuf> {
        files_under(&self.repo_dir().join(prefix)).into_iter().filter(|p| !p.to_string_lossy().contains('#')).collect()
    }
}

/// Every file below `dir`, recursively, sorted; none if `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Panics with both output streams unless the command succeeded.
pub fn assert_success(o: &Output, args: &[&str]) {
    assert!(
        o.status.success(),
        "cairn {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(4000)]),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `cmd`, feeding `input` on stdin from a thread (so a command that
/// writes before it has read everything cannot deadlock).
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// The exit code, panicking if the process was killed.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("killed by a signal: {:?}", o.status))
}
