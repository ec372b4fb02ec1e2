//! What a drill must always undo: its scratch directory and the temporary
//! servers it started. Both are guards, so a drill that fails, returns
//! early or is dropped (the CLI drops it on SIGINT and SIGTERM) stops its
//! server and removes its scratch space on the way out.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rustix::process::Pid;
pub use rustix::process::Signal;

use crate::{Error, Result};

/// A drill's private directory, removed when dropped (unless kept).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// Makes `parent/cairn-drill-<source>-<random>` (0700, owned by the
    /// drill user when one is given, so its servers can write there).
    pub fn create(parent: &Path, source: &str, run_as: Option<&RunAs>) -> Result<Scratch> {
        let safe: String =
            source.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        let path = parent.join(format!("cairn-drill-{safe}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent.display().to_string(), e))?;
        std::fs::create_dir(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let s = Scratch { path, keep: false };
        s.set_mode(&s.path, 0o700)?;
        if let Some(u) = run_as {
            u.chown(&s.path)?;
        }
        Ok(s)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place (`--keep-scratch`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    fn set_mode(&self, p: &Path, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(p.display().to_string(), e))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // A restored data directory can hold read-only directories (modes
        // from the backup): make them writable before removing.
        make_removable(&self.path);
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the drill's scratch directory");
        }
    }
}

fn make_removable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = std::fs::symlink_metadata(p) else { return };
    if m.is_dir() {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                make_removable(&e.path());
            }
        }
    }
}

/// The unprivileged user temporary servers run as when cairn runs as root.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// The user's name.
    pub name: String,
    uid: u32,
    gid: u32,
}

/// `id OPTION USER`'s answer (the system's user database, NSS included).
fn id(option: &str, user: &str) -> Option<String> {
    let o = Command::new("id").args([option, "--", user]).stdin(std::process::Stdio::null()).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The name of user `uid`, if the user database knows it.
pub fn user_name(uid: u32) -> Option<String> {
    id("-nu", &uid.to_string())
}

impl RunAs {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<RunAs> {
        let num = |opt| id(opt, name).and_then(|v| v.parse::<u32>().ok());
        let (Some(uid), Some(gid)) = (num("-u"), num("-g")) else {
            return Err(Error::Config(format!("drill user {name:?} does not exist on this host")));
        };
        if uid == 0 {
            return Err(Error::Config(format!("drill user {name:?} is root; PostgreSQL refuses to run as root")));
        }
        Ok(RunAs { name: name.to_string(), uid, gid })
    }

    /// Whether cairn itself runs as root (and so needs a [`RunAs`]).
    pub fn running_as_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Gives `p` to the user.
    pub fn chown(&self, p: &Path) -> Result<()> {
        std::os::unix::fs::lchown(p, Some(self.uid), Some(self.gid)).map_err(|e| Error::io(p.display().to_string(), e))
    }

    /// Gives everything beneath `p` (not following links) to the user.
    pub fn chown_tree(&self, p: &Path) -> Result<()> {
        self.chown(p)?;
        let m = std::fs::symlink_metadata(p).map_err(|e| Error::io(p.display().to_string(), e))?;
        if m.is_dir() {
            for e in std::fs::read_dir(p).map_err(|e| Error::io(p.display().to_string(), e))? {
                let e = e.map_err(|e| Error::io(p.display().to_string(), e))?;
                self.chown_tree(&e.path())?;
            }
        }
        Ok(())
    }
}

/// A command for `program`, run as `run_as` when given: through util-linux
/// `setpriv`, which sets the user and group and clears root's supplementary
/// groups before it execs the program (same process id).
pub fn command_as(run_as: Option<&RunAs>, program: &Path) -> Command {
    match run_as {
        None => Command::new(program),
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", u.uid))
                .arg(format!("--regid={}", u.gid))
                .args(["--clear-groups", "--"])
                .arg(program);
            c
        }
    }
}

/// A temporary server, stopped when dropped: `stop` (a polite signal,
/// then SIGKILL after a grace period) if it was not stopped already.
#[derive(Debug)]
pub struct Server {
    what: &'static str,
    child: Option<Child>,
    polite: Signal,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` in its own process group (a Ctrl-C in the terminal
    /// reaches cairn, which stops the server in order, not the server
    /// directly); its output goes to `log`.
    pub fn spawn(what: &'static str, mut cmd: Command, log: &Path, polite: Signal) -> Result<Server> {
        let out = std::fs::File::create(log).map_err(|e| Error::io(log.display().to_string(), e))?;
        let err = out.try_clone().map_err(|e| Error::io(log.display().to_string(), e))?;
        cmd.stdin(std::process::Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().map_err(|e| Error::DrillFailed {
            phase: "start".into(),
            reason: format!("{what}: cannot run {:?}: {e}", cmd.get_program()),
        })?;
        Ok(Server { what, child: Some(child), polite, log: log.to_path_buf() })
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `Some(status)` once the server has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last `n` lines of the server's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// The server's log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Stops the server: the polite signal, up to `grace` to exit, then
    /// SIGKILL to its whole process group.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        let pid = Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, self.polite);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(server = self.what, pid = ?pid, "did not stop in time; killing it");
        let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// The last `n` lines of a file.
pub fn log_tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
