//! Group commit of restored files.
//!
//! A file restored on its own is fsynced, renamed and its directory
//! fsynced: three waits on the disk for every file, one after the other.
//! A PostgreSQL data directory has about a thousand files, a directory
//! snapshot can have millions, and those waits were most of a restore's
//! time (pgbase.py scale 50: 1,964 fsyncs, done one by one).
//!
//! [`GroupCommit`] keeps every promise of [`Partial::commit`] — a file
//! takes its name only once its bytes and metadata are durable, and its
//! directory entry is made durable before the commit is reported done —
//! but for many files at once: the writer hands finished files to a
//! committer thread and goes on writing; the committer takes whatever has
//! queued up, fsyncs those files on several threads at once (the disk
//! gets a queue of work instead of one request at a time), renames them,
//! and fsyncs each of their directories once. While one batch syncs, the
//! next one queues, so batches grow exactly as large as the disk is slow.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use super::{Meta, Partial};
use crate::{Error, Result};

/// Files that may wait in the queue. Each queued or batched file holds
/// two descriptors (the file and its directory), so at most
/// `2 × (QUEUED + BATCH + 1)` are open here: 514, half of the soft limit
/// of 1,024 descriptors that systemd services and `runuser` sessions get
/// by default, leaving the rest to the index and the network.
const QUEUED: usize = 128;
/// The most files synced in one batch.
const BATCH: usize = 128;
/// Threads issuing fsyncs of one batch at once.
const SYNCERS: usize = 8;

/// Test-only: milliseconds the committer waits before each batch, as a
/// slow disk makes it wait, so that the queue fills and the test of the
/// descriptor bound sees every file the bound allows held open.
const SLOW_DISK_ENV: &str = "CAIRN_TEST_SLOW_COMMIT_MS";

type Item = (Partial, File, Option<Meta>);

/// A committer thread for restored files; see the module documentation.
///
/// Dropping it without [`GroupCommit::finish`] still commits what was
/// queued (and waits for it), so an error on the writer's side never
/// leaves a synced file without its name or a temporary file behind.
#[derive(Debug)]
pub struct GroupCommit {
    tx: Option<mpsc::SyncSender<Item>>,
    worker: Option<JoinHandle<Result<u64>>>,
    failed: Arc<AtomicBool>,
}

impl GroupCommit {
    /// Starts the committer thread.
    pub fn start() -> GroupCommit {
        let (tx, rx) = mpsc::sync_channel::<Item>(QUEUED);
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let worker = std::thread::Builder::new()
            .name("cairn-commit".into())
            .spawn(move || run(rx, &flag))
            .expect("spawn committer");
        GroupCommit { tx: Some(tx), worker: Some(worker), failed }
    }

    /// Queues a fully written file for commit with `meta`. Blocks while
    /// the queue is full. After a commit has failed, the file is removed
    /// and this returns an error: the caller stops, and
    /// [`GroupCommit::finish`] names the file that failed.
    pub fn push(&self, partial: Partial, file: File, meta: Option<Meta>) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            partial.abandon();
            return Err(stopped());
        }
        let tx = self.tx.as_ref().expect("open until finish");
        if let Err(mpsc::SendError((p, _, _))) = tx.send((partial, file, meta)) {
            p.abandon();
            return Err(stopped());
        }
        Ok(())
    }

    /// Waits until every queued file is committed; returns how many were,
    /// or the first error (files queued after it were removed).
    pub fn finish(mut self) -> Result<u64> {
        self.join()
    }

    fn join(&mut self) -> Result<u64> {
        drop(self.tx.take());
        match self.worker.take() {
            Some(w) => w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok(0),
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        if self.worker.is_some() {
            let _ = self.join();
        }
    }
}

fn stopped() -> Error {
    Error::io("<restore>", std::io::Error::other("an earlier file failed to commit"))
}

fn run(rx: mpsc::Receiver<Item>, failed: &AtomicBool) -> Result<u64> {
    let mut committed = 0u64;
    let mut first_error = None;
    let slow = std::env::var(SLOW_DISK_ENV).ok().and_then(|v| v.parse().ok()).map(std::time::Duration::from_millis);
    while let Ok(item) = rx.recv() {
        let mut batch = vec![item];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(i) => batch.push(i),
                Err(_) => break,
            }
        }
        if first_error.is_some() {
            batch.into_iter().for_each(|(p, ..)| p.abandon());
            continue;
        }
        if let Some(wait) = slow {
            std::thread::sleep(wait);
        }
        match commit_batch(batch) {
            Ok(n) => committed += n,
            Err(e) => {
                failed.store(true, Ordering::Release);
                first_error = Some(e);
            }
        }
    }
    first_error.map_or(Ok(committed), Err)
}

/// Syncs every file of the batch (on up to [`SYNCERS`] threads), then
/// renames them all and fsyncs each distinct directory once. Any failure
/// removes the batch's files that have not taken their names.
fn commit_batch(batch: Vec<Item>) -> Result<u64> {
    let next = AtomicUsize::new(0);
    let error: Mutex<Option<Error>> = Mutex::new(None);
    let threads = SYNCERS.min(batch.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((p, f, meta)) = batch.get(i) else { break };
                if let Err(e) = p.sync(f, meta.as_ref()) {
                    error.lock().expect("not poisoned").get_or_insert(e);
                    break;
                }
            });
        }
    });
    if let Some(e) = error.into_inner().expect("not poisoned") {
        batch.into_iter().for_each(|(p, ..)| p.abandon());
        return Err(e);
    }
    let n = batch.len() as u64;
    let mut dirs: Vec<((u64, u64), OwnedFd, std::path::PathBuf)> = Vec::new();
    let mut items = batch.into_iter();
    while let Some((p, f, _)) = items.next() {
        drop(f);
        let shown = p.shown().to_path_buf();
        let dir = match p.rename() {
            Ok(d) => d,
            Err(e) => {
                items.for_each(|(p, ..)| p.abandon());
                return Err(e);
            }
        };
        let st = rustix::fs::fstat(&dir).map_err(|e| Error::io(&shown, e.into()))?;
        let key = (st.st_dev, st.st_ino);
        if !dirs.iter().any(|(k, ..)| *k == key) {
            dirs.push((key, dir, shown));
        }
    }
    for (_, dir, shown) in &dirs {
        rustix::fs::fsync(dir).map_err(|e| Error::io(shown, e.into()))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beneath::Beneath;
    use std::io::Write;

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = walkdir(dir);
        v.sort();
        v
    }

    fn walkdir(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.extend(walkdir(&e.path()).into_iter().map(|r| format!("{rel}/{r}")));
            } else {
                out.push(rel);
            }
        }
        out
    }

    #[test]
    fn every_queued_file_takes_its_name_with_its_bytes_and_mode() {
        let t = tempfile::tempdir().unwrap();
        let b = Beneath::open(t.path()).unwrap();
        let g = GroupCommit::start();
        let mut want = Vec::new();
        for i in 0..700 {
            let rel = format!("d{}/f{i}", i % 7);
            let (p, mut f) = b.create(&rel).unwrap();
            f.write_all(rel.as_bytes()).unwrap();
            g.push(p, f, Some(Meta { mode: 0o640, owner: None, mtime: Some((1_000_000 + i, 0)) })).unwrap();
            want.push(rel);
        }
        assert_eq!(g.finish().unwrap(), 700);
        want.sort();
        assert_eq!(names(t.path()), want, "no temporary file is left, every file has its name");
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        for rel in &want {
            let m = std::fs::metadata(t.path().join(rel)).unwrap();
            assert_eq!(std::fs::read_to_string(t.path().join(rel)).unwrap(), *rel);
            assert_eq!(m.permissions().mode() & 0o7777, 0o640);
            assert!(m.mtime() >= 1_000_000);
        }
    }

    #[test]
    fn after_a_failed_commit_later_files_are_removed_and_the_error_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let b = Beneath::open(t.path()).unwrap();
        let g = GroupCommit::start();
        // A rename onto a non-empty directory fails.
        std::fs::create_dir_all(t.path().join("taken/inside")).unwrap();
        let (p, f) = b.create("taken").unwrap();
        g.push(p, f, None).unwrap();
        // Wait until the committer has met the failure.
        let mut refused = false;
        for i in 0..2000 {
            let (p, f) = b.create(&format!("later{i}")).unwrap();
            if g.push(p, f, None).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(refused, "a push after the failure is refused");
        let err = g.finish().unwrap_err();
        assert!(err.to_string().contains("taken"), "{err}");
        let left = names(t.path());
        assert!(left.iter().all(|n| !n.contains(".partial")), "no temporary file is left: {left:?}");
    }
}
