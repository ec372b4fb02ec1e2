//! Push-ahead for `archive_command` (`cairn wal push --ahead N`): a
//! background `cairn` pushes the files PostgreSQL has marked ready
//! (`pg_wal/archive_status/<name>.ready`) before PostgreSQL asks for them,
//! so that its later `archive_command` call only verifies.
//!
//! # Acknowledgement stays with archive_command
//! The background pusher acknowledges nothing: it never touches
//! `archive_status` (PostgreSQL's), and PostgreSQL still calls
//! `archive_command` for every file. That call exits 0 only when the stored
//! manifest is durable and matches the file: either the pusher's receipt
//! for it still matches the file's inode, size and times, the repository
//! and the authenticated manifest (`receipt.rs`), or the call hashes
//! the file and compares size and BLAKE3 with the manifest. A pusher killed
//! mid-way leaves at most an unreferenced pack (the manifest is the commit
//! point), and a foreground push racing the background one for the same
//! name is settled by the create-only manifest.
//!
//! # What is read
//! Only names that look like WAL files (segment, `.partial`, `.history`,
//! `.backup`) are considered, only regular files directly in `pg_wal`
//! (a symbolic link there is skipped, and files are opened with
//! `O_NOFOLLOW`), and a file is skipped when its `.ready` marker is gone
//! (PostgreSQL archived it already; the segment may be recycled).
//!
//! # One pusher, following PostgreSQL
//! The pusher `wal push --ahead N` starts ([`AheadState::follow`]) keeps
//! pushing the first N ready files other than the one archive_command is
//! archiving, each once, [`PUSHERS`] at a time, and exits once nothing new
//! has been ready for [`PUSHER_IDLE`] (or after [`MAX_FOLLOW`]; the next
//! call starts another); a pusher per batch cost a process start and a
//! repository open per batch.
//!
//! # One pusher per stanza and `pg_wal`
//! State lives in a private directory (`$XDG_RUNTIME_DIR/cairn`, else
//! `<tmp>/cairn-<uid>`, mode 0700, checked to be ours): the pusher holds an
//! exclusive lock on `push-ahead-<stanza>-<hash of pg_wal>.lock` for its whole
//! life, writes the names it is pushing to `….current` (so a foreground push
//! of one of them waits for it instead of storing it twice), leaves a
//! receipt per stored file in `….receipts/` and appends its log to
//! `….log`. A foreground push writes its own name to `….claim` first,
//! and the pusher skips a claimed name (skipping is always safe: the pusher
//! acknowledges nothing). Each side writes its own file before it reads the
//! other's, so at least one of them sees the other.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::push::{push, PushOptions, PushReport};
use super::receipt::Receipts;
use super::{get_named, manifest_key_of, WalManifest};
use crate::repo::Repository;
use crate::{Error, Result};

/// How many files the pusher stores at once. One push is parallel only
/// while it seals; its start and its fsyncs leave cores idle that a second
/// push fills.
pub const PUSHERS: usize = 2;
/// How long a foreground push waits for the pusher that is storing its file.
const WAIT_FOR_PUSHER: Duration = Duration::from_secs(60);
/// How long a following pusher waits for PostgreSQL to mark another file
/// ready before it exits.
pub const PUSHER_IDLE: Duration = Duration::from_secs(10);
/// How often a following pusher looks at `archive_status`'s mtime.
const POLL_READY: Duration = Duration::from_millis(5);
/// How often it lists `archive_status` even when the mtime did not change
/// (a change within the file system's timestamp granularity).
const RELIST: Duration = Duration::from_millis(100);
/// A pusher or prefetcher exits after this long, however busy, and the next
/// call starts a fresh one: it picks up a new binary and new settings, and
/// the pusher's log is trimmed when it is opened again.
pub const MAX_FOLLOW: Duration = Duration::from_secs(600);
/// The log is started over when it grows past this.
const MAX_LOG: u64 = 1 << 20;

fn hex_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Whether `name` is named like a file PostgreSQL archives: a segment
/// (24 upper-case hex digits), `<segment>.partial`, `<TLI>.history` or
/// `<segment>.<8 hex>.backup`.
pub fn is_wal_file_name(name: &str) -> bool {
    if let Some(s) = name.strip_suffix(".partial") {
        return hex_digits(s, 24);
    }
    if let Some(s) = name.strip_suffix(".history") {
        return hex_digits(s, 8);
    }
    if let Some(s) = name.strip_suffix(".backup") {
        return s.len() == 33 && hex_digits(&s[..24], 24) && s.as_bytes()[24] == b'.' && hex_digits(&s[25..], 8);
    }
    is_segment_name(name)
}

/// Whether `name` is a segment's name (24 upper-case hex digits).
pub fn is_segment_name(name: &str) -> bool {
    hex_digits(name, 24)
}

/// Up to `max` files of `pg_wal` that PostgreSQL has marked ready for
/// archiving (`archive_status/<name>.ready`), other than `except`, in name
/// order. Only WAL file names; nothing is modified.
pub fn ready_names(pg_wal: &Path, except: &str, max: usize) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(pg_wal.join("archive_status")) else { return Vec::new() };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".ready").map(str::to_string))
        .filter(|n| n != except && is_wal_file_name(n))
        .collect();
    // .history files sort after segments of the same timeline in byte
    // order; PostgreSQL archives them first, but the order only decides what
    // is pushed ahead, not correctness.
    names.sort();
    names.truncate(max);
    names
}

/// The state files of the pusher for one stanza and `pg_wal` directory.
#[derive(Debug, Clone)]
pub struct AheadState {
    base: PathBuf,
}

/// Held by the running pusher; dropping it releases the lock.
#[derive(Debug)]
pub struct AheadLock(#[allow(dead_code)] std::fs::File);

fn private_dir() -> Result<PathBuf> {
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("cairn"),
        None => std::env::temp_dir().join(format!("cairn-{uid}")),
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| Error::io(&dir, e))?;
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{} must be a directory of this user that nobody else can read or write",
            dir.display()
        )));
    }
    Ok(dir)
}

impl AheadState {
    /// The state of the pusher for `stanza` and the `pg_wal` directory that
    /// holds `wal_file`.
    pub fn for_file(stanza: &str, wal_file: &Path) -> Result<AheadState> {
        AheadState::for_dir(stanza, &pg_wal_of(wal_file))
    }

    /// The state of the pusher for `stanza` and the directory `dir`.
    pub fn for_dir(stanza: &str, dir: &Path) -> Result<AheadState> {
        super::validate_stanza(stanza)?;
        let canon = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let h = blake3::hash(canon.as_os_str().as_encoded_bytes()).to_hex();
        Ok(AheadState { base: private_dir()?.join(format!("push-ahead-{stanza}-{}", &h[..16])) })
    }

    fn with(&self, ext: &str) -> PathBuf {
        let mut s = self.base.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    }

    /// The pusher's log file.
    pub fn log_path(&self) -> PathBuf {
        self.with(".log")
    }

    /// Opens the log for appending (0600), started over when it is large.
    pub fn open_log(&self) -> Result<std::fs::File> {
        let p = self.log_path();
        let big = std::fs::metadata(&p).map(|m| m.len() > MAX_LOG).unwrap_or(false);
        let mut o = std::fs::OpenOptions::new();
        o.create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
        if big {
            o.write(true).truncate(true);
        } else {
            o.append(true);
        }
        o.open(&p).map_err(|e| Error::io(&p, e))
    }

    fn receipts(&self) -> Receipts {
        Receipts::new(self.with(".receipts"))
    }

    /// archive_command's shortcut for a file this state's pusher stored:
    /// its report if the pusher's receipt still matches the file, the
    /// repository and the manifest (see `receipt.rs`); `None` means
    /// the file must be pushed (verified) as usual.
    pub async fn acknowledge(&self, repo: &Repository, stanza: &str, path: &Path) -> Option<PushReport> {
        let name = path.file_name()?.to_str()?;
        self.receipts().acknowledge(repo, stanza, path, name).await
    }

    /// Removes receipts nobody used for an hour (archive_command's call
    /// removes each one it reads; PostgreSQL may never ask for some files).
    /// A pusher calls this once when it starts.
    pub fn sweep_receipts(&self) -> Result<()> {
        self.receipts().sweep()
    }

    fn lock_file(&self) -> super::HelperLock {
        super::HelperLock::new(self.with(".lock"), true)
    }

    /// Whether a pusher is running (holds the lock).
    pub fn running(&self) -> bool {
        self.lock_file().held()
    }

    /// Takes the pusher lock; `None` if another pusher holds it.
    pub fn lock(&self) -> Result<Option<AheadLock>> {
        Ok(self.lock_file().take()?.map(AheadLock))
    }

    /// Announces the names being pushed.
    fn set_current(&self, names: &std::collections::BTreeSet<String>) {
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        super::write_in_place(&self.with(".current"), &text);
    }

    fn current(&self) -> Option<String> {
        std::fs::read_to_string(self.with(".current")).ok()
    }

    /// Marks `name` as being pushed by archive_command itself, so that the
    /// pusher leaves it alone. Call before [`AheadState::wait_while_pushing`].
    pub fn claim(&self, name: &str) {
        super::write_in_place(&self.with(".claim"), &format!("{name}\n"));
    }

    fn claimed(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.with(".claim")).ok()?;
        text.lines().next().map(str::to_string)
    }

    /// Waits while a running pusher is storing `name`, so that the caller
    /// verifies its copy instead of storing the file a second time.
    pub fn wait_while_pushing(&self, name: &str) {
        let t = Instant::now();
        let pushing = || self.current().is_some_and(|c| c.lines().any(|l| l == name));
        while pushing() && self.running() && t.elapsed() < WAIT_FOR_PUSHER {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Pushes `names` from `pg_wal` in order, [`PUSHERS`] at a time, with
    /// the normal push semantics, skipping files that are no longer marked
    /// ready, already have a manifest, or are not regular files. Failures
    /// are logged and the next file is tried. Returns how many files were
    /// stored. Needs tokio's multi-threaded runtime (as [`push`] does).
    pub async fn push_names(
        &self,
        repo: &Repository,
        stanza: &str,
        pg_wal: &Path,
        names: &[String],
        opts: &PushOptions,
    ) -> u64 {
        let opts = opts.clone().no_follow();
        let queue = std::sync::Mutex::new(names.iter().filter(|n| is_wal_file_name(n)));
        let inflight = std::sync::Mutex::new(std::collections::BTreeSet::new());
        let stored = std::sync::atomic::AtomicU64::new(0);
        let handle = tokio::runtime::Handle::current();
        let work = || {
            handle.block_on(async {
                // The guard is dropped inside the closure, not held over the push.
                while let Some(name) = queue.lock().ok().and_then(|mut q| q.next()) {
                    // Announced before the checks, so that archive_command's call
                    // for this name, arriving from now on, waits instead of
                    // storing it too.
                    self.announce(&inflight, name, true);
                    if self.push_announced(repo, stanza, pg_wal, name, &opts).await {
                        stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    self.announce(&inflight, name, false);
                }
            })
        };
        // Each file's push is parallel only while it seals; its start (the
        // header, the manifest lookup) and its end (fsync, the manifest)
        // leave cores idle that the next file's push fills.
        tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                for _ in 1..PUSHERS.min(names.len()) {
                    s.spawn(work);
                }
                work();
            })
        });
        stored.into_inner()
    }

    /// Adds `name` to the names in flight (or removes it) and writes them
    /// to `.current`.
    fn announce(&self, inflight: &std::sync::Mutex<std::collections::BTreeSet<String>>, name: &str, add: bool) {
        let Ok(mut set) = inflight.lock() else { return };
        if add {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
        self.set_current(&set);
    }

    /// One file of [`AheadState::push_names`]; true if it was stored.
    async fn push_announced(
        &self,
        repo: &Repository,
        stanza: &str,
        pg_wal: &Path,
        name: &str,
        opts: &PushOptions,
    ) -> bool {
        if self.claimed().as_deref() == Some(name) {
            return false;
        }
        if !pg_wal.join("archive_status").join(format!("{name}.ready")).exists() {
            return false;
        }
        let path = pg_wal.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                tracing::warn!(file = %path.display(), "not a regular file; not pushed ahead");
                return false;
            }
            Err(_) => return false,
        }
        let Some(key) = manifest_key_of(stanza, name) else { return false };
        match get_named::<WalManifest>(repo, &key).await {
            Ok(Some(_)) => return false,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%name, error = %e, "push ahead: could not read the manifest");
                return false;
            }
        }
        match push(repo, stanza, &path, opts).await {
            Ok(r) if !r.already_archived => {
                self.receipts().write(repo, &r);
                tracing::info!(%name, "pushed ahead");
                true
            }
            Ok(_) => false,
            // PostgreSQL archived and recycled it meanwhile.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(%name, error = %e, "push ahead failed; archive_command will push it");
                false
            }
        }
    }

    /// The pusher's loop for `wal push --ahead N`: keeps pushing the first
    /// `n` files PostgreSQL has marked ready (other than the one
    /// archive_command claimed), as [`AheadState::push_names`] does, each
    /// name once, and returns once nothing new has been ready for `idle`.
    /// One long-lived pusher instead of one per batch saves a process start
    /// and a repository open per batch on the cores the server needs.
    pub async fn follow(
        &self,
        repo: &Repository,
        stanza: &str,
        pg_wal: &Path,
        n: usize,
        opts: &PushOptions,
        idle: Duration,
    ) -> u64 {
        let mut stored = 0;
        let mut seen = std::collections::BTreeSet::<String>::new();
        let started = Instant::now();
        let mut busy = Instant::now();
        // archive_status is listed again only when it changed (a `.ready`
        // created, or renamed to `.done`, changes its mtime) or every
        // RELIST: a long backlog makes a listing cost.
        let status = pg_wal.join("archive_status");
        let mtime = || std::fs::metadata(&status).and_then(|m| m.modified()).ok();
        let mut listed: Option<(Option<std::time::SystemTime>, Instant)> = None;
        while pg_wal.is_dir() && started.elapsed() < MAX_FOLLOW {
            let now = mtime();
            if listed.is_some_and(|(m, at)| m == now && at.elapsed() < RELIST) {
                if busy.elapsed() >= idle {
                    break;
                }
                tokio::time::sleep(POLL_READY).await;
                continue;
            }
            listed = Some((now, Instant::now()));
            let claimed = self.claimed().unwrap_or_default();
            let ready = ready_names(pg_wal, &claimed, n);
            // PostgreSQL archives in name order: what sorts before the first
            // ready file is archived and will not be asked for again.
            if let Some(first) = ready.first() {
                seen = seen.split_off(first);
            }
            let new: Vec<String> = ready.into_iter().filter(|x| !seen.contains(x)).collect();
            if new.is_empty() {
                if busy.elapsed() >= idle {
                    break;
                }
                tokio::time::sleep(POLL_READY).await;
                continue;
            }
            stored += self.push_names(repo, stanza, pg_wal, &new, opts).await;
            seen.extend(new);
            busy = Instant::now();
            // What PostgreSQL did meanwhile.
            listed = None;
        }
        stored
    }
}

/// The directory holding `wal_file` (`.` for a bare name).
pub fn pg_wal_of(wal_file: &Path) -> PathBuf {
    wal_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_file_names() {
        for ok in [
            "000000010000000000000001",
            "0000000A00000000000000FF.partial",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
        ] {
            assert!(is_wal_file_name(ok), "{ok}");
        }
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000011",
            "000000010000000000000001x",
            "00000001000000000000000a",
            "../00000001000000000001",
            "000000010000000000000001.ready",
            "00000002.history.tmp",
            "0000000100000000000000020.0000028.backup",
            "RECOVERYXLOG",
            ".000000010000000000000001",
        ] {
            assert!(!is_wal_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn ready_names_in_order_without_the_current_file() {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("archive_status");
        std::fs::create_dir(&st).unwrap();
        for n in [
            "000000010000000000000003.ready",
            "000000010000000000000001.ready",
            "000000010000000000000002.ready",
            "000000010000000000000004.done",
            "junk.ready",
            "000000010000000000000005.ready",
        ] {
            std::fs::write(st.join(n), "").unwrap();
        }
        assert_eq!(
            ready_names(d.path(), "000000010000000000000001", 2),
            vec!["000000010000000000000002".to_string(), "000000010000000000000003".to_string()]
        );
        assert!(ready_names(&d.path().join("nowhere"), "x", 4).is_empty());
    }
}
