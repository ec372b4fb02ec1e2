//! A real PostgreSQL server for end-to-end tests: clusters in temporary
//! directories, WAL archiving through any `archive_command`, online file-level
//! base backups ("hot copies") and point-in-time restores through
//! `restore_command`.
//!
//! PostgreSQL's binaries are taken from `$CAIRN_PG_BIN`, else
//! `/usr/lib/postgresql/15/bin`. A missing installation fails the test with a
//! message naming `scripts/deps.sh`: a test that needs PostgreSQL never passes
//! without it.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as in CI),
//! every PostgreSQL program runs as the unprivileged user [`os_user`]
//! (created when missing) through `runuser`, and everything the server touches
//! must belong to that user: take directories from [`shared_dir`] and hand
//! files to the server with [`chown_to_user`]. When the tests do not run as
//! root the programs run directly, as the current user, and the ownership
//! helpers do nothing.
//!
//! # Example
//!
//! ```no_run
//! use cairn_tests::pg::{self, Cluster};
//!
//! let shared = pg::shared_dir();
//! let arch = shared.path().join("arch");
//! std::fs::create_dir(&arch).unwrap();
//! pg::chown_to_user(&arch);
//! let command = format!("cp %p {}/%f", arch.display());
//! let conf = format!("archive_mode = on\narchive_command = {}\n", pg::conf_string(&command));
//! let mut primary = Cluster::init(shared.path(), "primary", 16, &conf);
//! primary.start(&[]);
//! primary.pgbench(&["-i", "-s", "1", "-q"]);
//! let segment = primary.switch_wal();
//! primary.wait_archived(&segment, std::time::Duration::from_secs(60));
//! ```

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The unprivileged user that runs PostgreSQL when the tests run as root.
const OS_USER: &str = "cairntest";

/// How many lines of the server log a panic message carries.
const LOG_TAIL_LINES: usize = 60;

/// How long `pg_ctl` waits for a start or a stop, in seconds.
const PG_CTL_TIMEOUT_S: &str = "120";

/// The name of the OS user that runs PostgreSQL's programs when the tests run
/// as root. Without root the programs run as the current user instead.
pub fn os_user() -> &'static str {
    OS_USER
}

/// Makes sure [`os_user`] exists (creating it with `useradd --system
/// --no-create-home` when missing) if the tests run as root; does nothing
/// otherwise. Safe to call from tests running in parallel.
pub fn ensure_os_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if !running_as_root() {
            return;
        }
        let exists = || Command::new("id").arg(OS_USER).output().is_ok_and(|o| o.status.success());
        if !exists() {
            // Another test binary may create the user first: only the end
            // result matters.
            let added =
                Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/bin/sh", OS_USER]).output();
            assert!(exists(), "cannot create the unprivileged user {OS_USER} to run PostgreSQL: {added:?}");
        }
    });
}

/// True when this process runs as root, so PostgreSQL must run as [`os_user`].
pub fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    // `geteuid` would need `unsafe`, which the workspace denies; /proc/self
    // belongs to the effective user, and `id` answers where /proc is missing.
    *ROOT.get_or_init(|| match fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => String::from_utf8_lossy(&run(Command::new("id").arg("-u")).unwrap().stdout).trim() == "0",
    })
}

/// A new temporary directory under `/tmp`, owned by [`os_user`] with mode
/// 0755, so that both this process and the server can use it: clusters,
/// repositories, archives and key files live there. Removed on drop.
pub fn shared_dir() -> tempfile::TempDir {
    ensure_os_user();
    let dir = tempfile::Builder::new()
        .prefix("cairn-pg-")
        .tempdir_in("/tmp")
        .unwrap_or_else(|e| panic!("cannot create a temporary directory in /tmp: {e}"));
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    chown_to_user(dir.path());
    dir
}

/// Gives `path` and everything under it to [`os_user`] (user and group),
/// without following symbolic links. Does nothing when not running as root.
/// Modes are left alone: a key file read by `archive_command` should also be
/// made 0600 by the caller.
pub fn chown_to_user(path: &Path) {
    if running_as_root() {
        ensure_os_user();
        run(Command::new("chown").arg("-R").arg(format!("{OS_USER}:")).arg(path)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// `s` as a single-quoted `postgresql.conf` string, with quotes and
/// backslashes escaped: `conf_string("cp %p /a/%f")` is `'cp %p /a/%f'`.
pub fn conf_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The directory holding PostgreSQL's programs, checked once.
pub fn bin_dir() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::env::var_os("CAIRN_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        for tool in ["initdb", "pg_ctl", "postgres", "psql", "pgbench", "pg_controldata"] {
            assert!(
                bin.join(tool).is_file(),
                "PostgreSQL 15 is not installed: {} not found in {} — run scripts/deps.sh \
                 (or set CAIRN_PG_BIN); this test needs a real server",
                tool,
                bin.display()
            );
        }
        let out = run(Command::new(bin.join("postgres")).arg("--version")).unwrap_or_else(|e| panic!("{e}"));
        let version = String::from_utf8_lossy(&out.stdout).into_owned();
        let major: u32 = version
            .split_whitespace()
            .last()
            .and_then(|v| v.split('.').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the PostgreSQL version from {version:?}"));
        assert!(major >= 15, "PostgreSQL 15 or later is needed, found {version:?} — run scripts/deps.sh");
        bin
    })
}

/// The path of one of PostgreSQL's programs (`pg_verifybackup`, say), for
/// tools that may run as any user (they only read files).
pub fn tool(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} not found — run scripts/deps.sh (or set CAIRN_PG_BIN)", path.display());
    path
}

/// A PostgreSQL program with `env` in its environment, run as [`os_user`]
/// when we are root. Going through `env` keeps the variables intact whatever
/// `runuser` does to the environment, and the postmaster inherits them from
/// `pg_ctl`.
pub fn pg_command(tool: &str, env: &[(&str, String)]) -> Command {
    let path = bin_dir().join(tool);
    let mut cmd = if running_as_root() {
        ensure_os_user();
        let mut c = Command::new("runuser");
        c.args(["-u", OS_USER, "--", "env"]);
        c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
        c.arg(path);
        c
    } else {
        let mut c = Command::new(path);
        c.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        c
    };
    // The caller's libpq settings must not redirect the tools, and a working
    // directory the user cannot enter makes the server complain.
    for var in ["PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGDATA", "PGOPTIONS", "PGSERVICE"] {
        cmd.env_remove(var);
    }
    cmd.env("TZ", "UTC").env("PGTZ", "UTC").env("LC_ALL", "C").current_dir("/");
    cmd
}

/// Runs a command and returns its output, or a message with both streams if
/// it could not run or failed.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failure(cmd, &out))
    }
}

/// A description of a failed command.
fn failure(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port no one listens on now. The server listens on its Unix socket only,
/// where the port merely names the socket file; a fresh port keeps those
/// names distinct all the same.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("binding 127.0.0.1:0").port()
}

/// `s` quoted for `sh`.
fn shell_quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
}

/// What `pg_stat_archiver` says about WAL archiving.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archiver {
    /// Files archived successfully since the statistics were reset.
    pub archived_count: u64,
    /// The last file archived successfully.
    pub last_archived_wal: Option<String>,
    /// Failed `archive_command` runs.
    pub failed_count: u64,
    /// The file of the last failed run.
    pub last_failed_wal: Option<String>,
}

/// A PostgreSQL cluster (data directory) and, once started, its server.
///
/// The server listens only on a Unix socket in `socket_dir`, logs to `log`,
/// and is stopped (immediate mode) when the value is dropped.
#[derive(Debug)]
pub struct Cluster {
    /// The data directory.
    pub data: PathBuf,
    /// The port, which names the socket file `socket_dir/.s.PGSQL.<port>`.
    pub port: u16,
    /// The directory of the server's Unix socket.
    pub socket_dir: PathBuf,
    /// The server log, appended to by every start.
    pub log: PathBuf,
    running: bool,
}

impl Cluster {
    /// Creates a cluster in `root/name` (not started) with `initdb`: WAL
    /// segments of `wal_segsize_mib` MiB, trust authentication, superuser
    /// `postgres`. `root` must be usable by [`os_user`] (take it from
    /// [`shared_dir`]).
    ///
    /// `postgresql.conf` gets a Unix socket under `root` on a fresh port, no
    /// TCP, `wal_level = replica`, `max_wal_senders = 4`, `fsync = on` and
    /// `synchronous_commit = on`, then the caller's `conf` verbatim (later
    /// lines win), e.g. `archive_mode` and `archive_command`.
    pub fn init(root: &Path, name: &str, wal_segsize_mib: u32, conf: &str) -> Cluster {
        let root = checked_root(root);
        let data = root.join(name);
        run(pg_command("initdb", &[]).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            &format!("--wal-segsize={wal_segsize_mib}"),
        ]))
        .unwrap_or_else(|e| panic!("initdb of {}: {e}", data.display()));
        let c = Cluster::at(&root, data);
        c.append_conf(
            "wal_level = replica\nmax_wal_senders = 4\nfsync = on\nsynchronous_commit = on\n\
             log_checkpoints = on\n",
        );
        c.append_conf(conf);
        c
    }

    /// Wraps a copied data directory (from [`Cluster::hot_copy`], say) as a
    /// new cluster with its own port, socket directory under `root` and log
    /// `root/<name>.log`, and appends `conf` to its `postgresql.conf`
    /// (`restore_command`, `recovery_target_*`, `archive_mode = off`...).
    /// Settings copied from the original (its `archive_command` included)
    /// stay in force unless `conf` overrides them. Not started: touch
    /// `recovery.signal` ([`Cluster::touch_recovery_signal`]) first to
    /// recover from an archive.
    pub fn from_copy(copy: PathBuf, root: &Path, conf: &str) -> Cluster {
        let root = checked_root(root);
        assert!(copy.join("PG_VERSION").is_file(), "{} is not a PostgreSQL data directory", copy.display());
        let copy = fs::canonicalize(&copy).unwrap();
        let c = Cluster::at(&root, copy);
        c.append_conf(conf);
        c
    }

    /// A cluster for the data directory `data` with a fresh port, a socket
    /// directory and a log under `root`; writes the connection settings.
    fn at(root: &Path, data: PathBuf) -> Cluster {
        let name = data.file_name().expect("data directory name").to_string_lossy().into_owned();
        let port = free_port();
        let socket_dir = root.join(format!("{name}.sock"));
        // Unix socket paths are limited to 107 bytes.
        assert!(
            socket_dir.as_os_str().len() + ".s.PGSQL.65535".len() < 100,
            "socket directory {} is too long for a Unix socket path",
            socket_dir.display()
        );
        fs::create_dir_all(&socket_dir).unwrap();
        fs::set_permissions(&socket_dir, fs::Permissions::from_mode(0o755)).unwrap();
        chown_to_user(&socket_dir);
        let c = Cluster { data, port, log: root.join(format!("{name}.log")), socket_dir, running: false };
        c.append_conf(&format!(
            "listen_addresses = ''\nport = {port}\nunix_socket_directories = {}\n",
            conf_string(&c.socket_dir.to_string_lossy())
        ));
        c
    }

    /// Appends `text` to `postgresql.conf` (read at the next start or
    /// `SELECT pg_reload_conf()`).
    pub fn append_conf(&self, text: &str) {
        let path = self.data.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        write!(f, "\n# cairn test harness\n{text}\n").unwrap();
    }

    /// Creates an empty `recovery.signal` in the data directory: the next
    /// start recovers from the archive through `restore_command`, then
    /// promotes.
    pub fn touch_recovery_signal(&self) {
        let path = self.data.join("recovery.signal");
        fs::write(&path, b"").unwrap();
        chown_to_user(&path);
    }

    /// Whether the server was started and not stopped by this value.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Starts the server (`pg_ctl start -w`, waiting up to 120 s until it
    /// accepts connections) with `env` in the postmaster's environment, so
    /// that `archive_command` and `restore_command` see it (S3 credentials,
    /// cairn's key file...). Panics with the log tail if it does not start.
    pub fn start(&mut self, env: &[(&str, String)]) {
        assert!(!self.running, "{} is already running", self.data.display());
        let mut cmd = pg_command("pg_ctl", env);
        cmd.arg("-D").arg(&self.data).args(["-w", "-t", PG_CTL_TIMEOUT_S, "-l"]).arg(&self.log).arg("start");
        if let Err(e) = run(&mut cmd) {
            panic!("starting the server for {}: {e}\n{}", self.data.display(), self.log_report());
        }
        self.running = true;
    }

    /// Stops the server (`pg_ctl stop -m fast -w`): a shutdown checkpoint,
    /// and the archiver's last round. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = pg_command("pg_ctl", &[]);
        cmd.arg("-D").arg(&self.data).args(["-w", "-t", PG_CTL_TIMEOUT_S, "-m", "fast", "stop"]);
        if let Err(e) = run(&mut cmd) {
            panic!("stopping the server for {}: {e}\n{}", self.data.display(), self.log_report());
        }
        self.running = false;
    }

    /// Kills the server without warning: SIGKILL to the postmaster and
    /// then to each of its children (found through `/proc`), as a machine
    /// losing power would stop them. The data directory is left as is.
    pub fn kill_hard(&mut self) {
        let pid_file = fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
        let Some(pid) = pid_file.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
            panic!("no postmaster.pid in {}", self.data.display());
        };
        let children: Vec<i32> = fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                    .filter(|p| {
                        let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                        // `pid (comm) state ppid ...`; comm may hold spaces.
                        let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
                        after.split(' ').nth(1).and_then(|x| x.parse::<i32>().ok()) == Some(pid)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for p in std::iter::once(pid).chain(children) {
            let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
        }
        self.running = false;
    }

    /// The whole server log (lossily decoded; empty if there is none yet).
    pub fn log_text(&self) -> String {
        fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The log tail with a header, for panic messages.
    fn log_report(&self) -> String {
        format!("--- last {LOG_TAIL_LINES} lines of {} ---\n{}", self.log.display(), self.log_tail(LOG_TAIL_LINES))
    }

    /// Adds the connection options (socket, port, superuser) to a client.
    fn connect(&self, cmd: &mut Command) {
        cmd.args(self.connect_args());
    }

    /// `-h SOCKET_DIR -p PORT -U postgres`, for client programs.
    pub fn connect_args(&self) -> Vec<String> {
        let h = self.socket_dir.to_string_lossy().into_owned();
        vec!["-h".into(), h, "-p".into(), self.port.to_string(), "-U".into(), "postgres".into()]
    }

    /// `psql` reading a script from stdin, stopping at the first error.
    fn psql(&self) -> Command {
        let mut cmd = pg_command("psql", &[]);
        self.connect(&mut cmd);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-f", "-"]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Runs SQL (several statements allowed) in one session of database
    /// `postgres`; returns psql's unaligned, tuples-only output, trimmed, or
    /// its error output.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = self.psql();
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        let mut stdin = child.stdin.take().unwrap();
        let script = sql.as_bytes().to_vec();
        // A separate writer: psql may fill its output pipe before it has read
        // the whole script.
        let feeder = std::thread::spawn(move || stdin.write_all(&script));
        let out = child.wait_with_output().map_err(|e| format!("waiting for psql: {e}"))?;
        let fed = feeder.join().unwrap();
        if !out.status.success() {
            return Err(format!("psql failed with {}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        fed.map_err(|e| format!("writing the script to psql: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// [`Cluster::try_sql`], panicking with psql's error and the log tail.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("SQL on {} failed:\n{sql}\n{e}\n{}", self.data.display(), self.log_report()))
    }

    /// Runs `pgbench` with `args` against database `postgres`; returns its
    /// standard output. Panics with both streams on failure.
    pub fn pgbench(&self, args: &[&str]) -> String {
        let mut cmd = pg_command("pgbench", &[]);
        self.connect(&mut cmd);
        cmd.args(args).arg("postgres");
        let out = run(&mut cmd).unwrap_or_else(|e| panic!("{e}\n{}", self.log_report()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `f` every 100 ms until it returns true; after `timeout`, panics
    /// naming `what`, with the log tail.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&Cluster) -> bool) {
        let started = Instant::now();
        while !f(self) {
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what} on {}\n{}",
                    self.data.display(),
                    self.log_report()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until recovery has ended and the server accepts writes
    /// (`pg_is_in_recovery()` is false).
    pub fn wait_until_promoted(&self, timeout: Duration) {
        self.wait_for("the end of recovery", timeout, |c| {
            c.try_sql("SELECT pg_is_in_recovery()").is_ok_and(|s| s == "f")
        });
    }

    /// The archiver's statistics from `pg_stat_archiver`.
    pub fn archiver(&self) -> Archiver {
        let row = self.sql(
            "SELECT archived_count, coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') \
             FROM pg_stat_archiver",
        );
        let f: Vec<&str> = row.split('|').collect();
        assert_eq!(f.len(), 4, "unexpected pg_stat_archiver row {row:?}");
        let name = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Archiver {
            archived_count: f[0].parse().unwrap(),
            last_archived_wal: name(f[1]),
            failed_count: f[2].parse().unwrap(),
            last_failed_wal: name(f[3]),
        }
    }

    /// Waits until the segment `wal_name` (or a later one) has been archived,
    /// comparing names, which orders segments of one timeline. Panics with
    /// the log tail as soon as `archive_command` fails, or on timeout.
    /// Returns the statistics that satisfied the wait.
    pub fn wait_archived(&self, wal_name: &str, timeout: Duration) -> Archiver {
        let before = self.archiver();
        let started = Instant::now();
        loop {
            let now = self.archiver();
            if now.failed_count > before.failed_count {
                panic!(
                    "archive_command failed on {} while waiting for {wal_name} to be archived ({now:?})\n{}",
                    now.last_failed_wal.as_deref().unwrap_or("?"),
                    self.log_report()
                );
            }
            // A history file ("00000002.history") sorts before every segment;
            // a backup history file or a `.partial` counts as its segment.
            let done = now.last_archived_wal.as_deref().is_some_and(|w| w.get(..24).unwrap_or("") >= wal_name);
            if done {
                return now;
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {wal_name} to be archived ({now:?})\n{}",
                    self.log_report()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Completes the current WAL segment (`pg_switch_wal()`) and returns its
    /// name, so that it is handed to `archive_command`. With no WAL written
    /// since the last switch, returns the segment that switch completed.
    pub fn switch_wal(&self) -> String {
        self.sql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// The database system identifier from `pg_control`, which a restored
    /// copy shares with its original.
    pub fn system_id(&self) -> u64 {
        let out = run(pg_command("pg_controldata", &[]).arg(&self.data)).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("Database system identifier:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no system identifier in pg_controldata output:\n{text}"))
    }

    /// Takes an online, file-level base backup of the running server into
    /// `dest` (created; must not exist or be empty), the way a backup tool
    /// does with the low-level API:
    ///
    /// 1. in one session, `pg_backup_start('cairn-test', true)` (an
    ///    immediate checkpoint);
    /// 2. copy the data directory while the server keeps writing, leaving
    ///    out what PostgreSQL's documentation says to leave out
    ///    (`postmaster.pid`, `postmaster.opts`, the contents of `pg_wal`,
    ///    `pg_replslot`, `pg_stat_tmp` and the like, signal files);
    /// 3. `pg_backup_stop(false)` in the same session, then write its
    ///    `backup_label` (and `tablespace_map`, if any) into `dest`;
    /// 4. with archiving on, wait (up to 120 s, see
    ///    [`Cluster::wait_archived`]) until the segment holding the backup's
    ///    end has been archived.
    ///
    /// `dest/pg_wal` is left empty (with `archive_status/`), so recovery
    /// must fetch every segment through `restore_command`. `dest` ends up
    /// owned by [`os_user`] with mode 0700. Tablespaces are not copied: the
    /// `pg_tblspc` links keep pointing at the original's directories.
    pub fn hot_copy(&self, dest: &Path) {
        assert!(self.running, "hot_copy needs a running server");
        let empty = fs::read_dir(dest).map(|mut d| d.next().is_none());
        assert!(
            matches!(empty, Ok(true)) || matches!(&empty, Err(e) if e.kind() == io::ErrorKind::NotFound),
            "hot_copy destination {} exists and is not empty",
            dest.display()
        );
        fs::create_dir_all(dest).unwrap();

        // psql runs the script as it arrives; the shell command after
        // pg_backup_start tells us that the backup has started.
        let marker = self.socket_dir.join(format!("hot-copy-{:016x}.started", rand::random::<u64>()));
        let mut psql = self.psql().spawn().expect("spawning psql");
        let mut script = psql.stdin.take().unwrap();
        let begin = format!(
            "SET statement_timeout = '120s';\nSELECT pg_backup_start('cairn-test', true);\n\\! touch {}\n",
            shell_quote(marker.as_os_str())
        );
        if let Err(e) = script.write_all(begin.as_bytes()).and_then(|()| script.flush()) {
            self.abort_copy(psql, &format!("writing to psql: {e}"));
        }
        let started = Instant::now();
        while !marker.exists() {
            if !matches!(psql.try_wait(), Ok(None)) {
                self.abort_copy(psql, "psql ended before pg_backup_start returned");
            }
            if started.elapsed() > Duration::from_secs(120) {
                self.abort_copy(psql, "pg_backup_start did not return within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(&marker);

        if let Err(e) = copy_data_dir(&self.data, dest) {
            self.abort_copy(psql, &format!("copying {} to {}: {e}", self.data.display(), dest.display()));
        }

        let end =
            "SELECT 'cairn-stop|' || pg_walfile_name(lsn) || '|' || encode(convert_to(labelfile, 'UTF8'), 'hex') \
                   || '|' || encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex') FROM pg_backup_stop(false);\n";
        if let Err(e) = script.write_all(end.as_bytes()) {
            self.abort_copy(psql, &format!("writing to psql: {e}"));
        }
        drop(script);
        let out = psql.wait_with_output().expect("waiting for psql");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stop = stdout.lines().find_map(|l| l.strip_prefix("cairn-stop|"));
        let Some(stop) = stop.filter(|_| out.status.success()) else {
            panic!(
                "pg_backup_stop failed with {}:\nstdout: {stdout}\nstderr: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_report()
            );
        };
        let fields: Vec<&str> = stop.split('|').collect();
        assert_eq!(fields.len(), 3, "unexpected pg_backup_stop output {stop:?}");
        fs::write(dest.join("backup_label"), hex_decode(fields[1])).unwrap();
        let map = hex_decode(fields[2]);
        if !map.is_empty() {
            fs::write(dest.join("tablespace_map"), map).unwrap();
        }
        fs::set_permissions(dest, fs::Permissions::from_mode(0o700)).unwrap();
        chown_to_user(dest);

        if self.sql("SHOW archive_mode") != "off" {
            self.wait_archived(fields[0], Duration::from_secs(120));
        }
    }

    /// Ends a failed hot copy: closes psql's session (which aborts the
    /// backup) and panics with its output and the log tail.
    fn abort_copy(&self, psql: Child, why: &str) -> ! {
        let mut psql = psql;
        drop(psql.stdin.take());
        let _ = psql.kill();
        let out = psql.wait_with_output();
        let detail = match &out {
            Ok(o) => format!("psql {}: {}", o.status, String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("psql: {e}"),
        };
        panic!("hot_copy of {}: {why}\n{detail}\n{}", self.data.display(), self.log_report());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = pg_command("pg_ctl", &[])
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60", "-m", "immediate", "stop"])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// `root` made absolute, after checking that the server's user can write
/// there.
fn checked_root(root: &Path) -> PathBuf {
    ensure_os_user();
    let root = fs::canonicalize(root).unwrap_or_else(|e| panic!("cluster root {}: {e}", root.display()));
    if running_as_root() {
        let owner = fs::metadata(&root).unwrap().uid();
        let user = run(Command::new("id").args(["-u", OS_USER])).unwrap_or_else(|e| panic!("{e}"));
        let uid: u32 = String::from_utf8_lossy(&user.stdout).trim().parse().unwrap();
        assert!(
            owner == uid,
            "cluster root {} must belong to {OS_USER} (uid {uid}), not uid {owner}: use cairn_tests::pg::shared_dir()",
            root.display()
        );
    }
    root
}

/// Entries of a data directory's top level that a base backup leaves out.
const SKIPPED: &[&str] =
    &["postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "recovery.signal", "standby.signal"];

/// Top-level directories that a base backup keeps empty.
const EMPTIED: &[&str] =
    &["pg_wal", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];

/// Copies a live data directory for [`Cluster::hot_copy`].
fn copy_data_dir(src: &Path, dest: &Path) -> io::Result<()> {
    copy_tree(src, dest, true)?;
    let status = dest.join("pg_wal/archive_status");
    fs::create_dir_all(&status)?;
    fs::set_permissions(&status, fs::Permissions::from_mode(0o700))
}

/// Copies the tree under `src` into the existing directory `dest`, keeping
/// modes and symbolic links. Files that vanish while we copy (the server
/// removes temporary files and old segments) are no error: WAL replay
/// recreates whatever they held.
fn copy_tree(src: &Path, dest: &Path, top: bool) -> io::Result<()> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let entries = match fs::read_dir(src) {
        Err(e) if !top && gone(&e) => return Ok(()),
        r => r?,
    };
    for entry in entries {
        let entry = match entry {
            Err(e) if gone(&e) => continue,
            r => r?,
        };
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if (top && SKIPPED.contains(&name_str.as_ref()))
            || name_str == "pg_internal.init"
            || name_str.starts_with("pgsql_tmp")
        {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        let meta = match fs::symlink_metadata(&from) {
            Err(e) if gone(&e) => continue,
            r => r?,
        };
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if meta.is_dir() {
            fs::create_dir(&to)?;
            fs::set_permissions(&to, meta.permissions())?;
            if !(top && EMPTIED.contains(&name_str.as_ref())) {
                copy_tree(&from, &to, false)?;
            }
        } else if meta.is_file() {
            match fs::copy(&from, &to) {
                Err(e) if gone(&e) => {
                    let _ = fs::remove_file(&to);
                }
                r => {
                    r?;
                }
            }
        }
    }
    Ok(())
}

/// Decodes the lowercase hex that `encode(..., 'hex')` produces.
fn hex_decode(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex from the server");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex from the server")).collect()
}
