//! Prefetching for `restore_command`: a spool directory (outside PGDATA)
//! that a background `cairn wal prefetch` fills with the segments recovery
//! will ask for next, so that a fetch only has to verify and rename.
//!
//! # Never stale
//! A spooled file is only a candidate. Before it is served, the file's size
//! and BLAKE3 are compared with the manifest read from the repository at
//! that moment; anything else (a file from an earlier archive, a file left
//! half-written by a killed prefetcher) is deleted and the segment fetched
//! directly.
//!
//! # One prefetcher at a time, kept running
//! A prefetcher holds an exclusive lock on `.prefetch.lock` for its whole
//! life (released by the kernel when it exits, however it exits). A fetch
//! that finds the segment it wants being written (`.NAME.tmp`) while a
//! prefetcher holds the lock waits for it instead of fetching it twice.
//!
//! Each delivering fetch records its segment's name in `.want`; the
//! prefetcher ([`Spool::follow`]) keeps the N segments after it spooled
//! and stays up while recovery keeps asking, so a segment costs one
//! process start (the fetch), not two. Recovery reads segments back to
//! back and two cores are shared with it: a prefetcher started per segment
//! spent about a fifth of the CPU per segment on starting and opening the
//! repository. At the first segment the archive does not have it stops
//! fetching until `.want` moves; it exits once `.want` has not moved for
//! [`PREFETCH_IDLE`] (or after [`super::ahead::MAX_FOLLOW`]; the next fetch
//! starts another).
//!
//! # Trust
//! The spool must belong to this user and not be writable by others; only
//! regular files are served (a symbolic link or FIFO planted there is
//! discarded), and spooled files are created 0600.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_formats::pg::{SegmentName, SegmentSize, WalFileName};

use super::fetch::{deliver_from, write_temp, Check, Durability};
use super::{get_named, manifest_key, WalManifest};
use crate::repo::Repository;
use crate::{Error, Result};

const LOCK: &str = ".prefetch.lock";
/// The name of the segment recovery fetched last.
const WANT: &str = ".want";
/// How long a prefetcher waits for recovery to ask for another segment.
pub const PREFETCH_IDLE: Duration = Duration::from_secs(10);
/// How often a waiting prefetcher looks at `.want` (a stat and a small read).
const POLL_WANT: Duration = Duration::from_millis(2);
/// How often a fetch that waits for the prefetcher at its segment looks.
const POLL_TMP: Duration = Duration::from_millis(1);
/// How long a fetch waits for a prefetcher that is writing its segment.
const WAIT_FOR_PREFETCHER: Duration = Duration::from_secs(60);

/// What [`Spool::write_one`] did.
enum Spooled {
    /// The segment is spooled already.
    Already,
    /// Written to the temporary file, to be fsynced and renamed.
    Written(std::fs::File, PathBuf),
    /// The archive does not have it.
    NotArchived,
}

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// Held by the running prefetcher; dropping it releases the lock.
#[derive(Debug)]
pub struct PrefetchLock(#[allow(dead_code)] std::fs::File);

impl Spool {
    /// Opens (creating, mode 0700) a spool directory; refuses one that
    /// belongs to another user or that others can write to.
    pub fn open(dir: &Path) -> Result<Spool> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(dir, e))?;
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(meta.uid());
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(Error::Config(format!(
                "spool {} must belong to this user and not be writable by group or others",
                dir.display()
            )));
        }
        Ok(Spool { dir: dir.to_path_buf() })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn temp(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.tmp"))
    }

    fn lock_file(&self) -> super::HelperLock {
        super::HelperLock::new(self.dir.join(LOCK), false)
    }

    /// Whether a prefetcher is running (holds the lock).
    pub fn prefetcher_running(&self) -> bool {
        self.lock_file().held()
    }

    /// Takes the prefetcher lock; `None` if another prefetcher holds it.
    pub fn lock(&self) -> Result<Option<PrefetchLock>> {
        Ok(self.lock_file().take()?.map(PrefetchLock))
    }

    /// Serves `name` from the spool when a verified copy is there (waiting
    /// for a live prefetcher that is writing it). `Ok(false)`: not served;
    /// fetch it directly.
    pub async fn take(&self, key: &str, m: &WalManifest, dest: &Path, durability: Durability) -> Result<bool> {
        let spooled = self.path(&m.name);
        let t = Instant::now();
        while !spooled.exists() && self.temp(&m.name).exists() && self.prefetcher_running() {
            if t.elapsed() > WAIT_FOR_PREFETCHER {
                break;
            }
            tokio::time::sleep(POLL_TMP).await;
        }
        match std::fs::symlink_metadata(&spooled) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                tracing::warn!(file = %spooled.display(), "not a regular file; discarded");
                let _ = std::fs::remove_file(&spooled);
                return Ok(false);
            }
            Err(_) => return Ok(false),
        }
        let ok = tokio::task::block_in_place(|| -> Result<bool> {
            let f = std::fs::File::open(&spooled).map_err(|e| Error::io(&spooled, e))?;
            let size = f.metadata().map_err(|e| Error::io(&spooled, e))?.len();
            Ok(size == m.size && super::window::hash_file(&f, &spooled, size)? == m.blake3)
        })
        .unwrap_or(false);
        if !ok {
            tracing::warn!(file = %spooled.display(), %key, "spooled file does not match the archive; fetching directly");
            let _ = std::fs::remove_file(&spooled);
            return Ok(false);
        }
        deliver_from(&spooled, dest, durability)?;
        Ok(true)
    }

    /// Removes the segments' temporary files (`.NAME.tmp`).
    fn remove_temps(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        for e in rd.flatten() {
            let f = e.file_name();
            let Some(name) = f.to_str().and_then(|f| f.strip_prefix('.')?.strip_suffix(".tmp")) else { continue };
            if super::ahead::is_segment_name(name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes spooled segments that sort before `name` (recovery has moved
    /// past them) and, when no prefetcher runs, leftovers of killed ones.
    pub fn prune_before(&self, name: &str) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        let idle = !self.prefetcher_running();
        for e in rd.flatten() {
            let f = e.file_name();
            let Some(f) = f.to_str() else { continue };
            let stale_tmp = idle && f.starts_with('.') && f.ends_with(".tmp");
            if (f.len() == 24 && f < name) || stale_tmp {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Records `name` as the segment recovery fetched last, for the
    /// prefetcher. Best effort: a prefetcher that misses it only prefetches
    /// less.
    pub fn set_want(&self, name: &str) {
        super::write_in_place(&self.dir.join(WANT), &format!("{name}\n"));
    }

    /// The name in `.want`, if it is a segment's.
    fn want_name(&self) -> Option<String> {
        let s = std::fs::read_to_string(self.dir.join(WANT)).ok()?;
        let s = s.trim();
        super::ahead::is_segment_name(s).then(|| s.to_string())
    }

    /// The segment recovery fetched last, if `.want` names one.
    fn want(&self, size: SegmentSize) -> Option<SegmentName> {
        match WalFileName::parse(&self.want_name()?, size) {
            Ok(WalFileName::Segment(seg)) => Some(seg),
            _ => None,
        }
    }

    /// The prefetcher's loop: keeps the `ahead` segments after the one named
    /// in `.want` in the spool while recovery keeps asking; returns once
    /// `.want` has not moved for `idle` or the spool directory is gone.
    pub async fn follow(
        &self,
        repo: std::sync::Arc<Repository>,
        stanza: &str,
        size: SegmentSize,
        ahead: usize,
        idle: Duration,
    ) -> Result<()> {
        let mut last: Option<SegmentName> = None;
        let started = Instant::now();
        let mut moved = Instant::now();
        // The want for which a fill stopped short (the archive ends there,
        // or a fetch failed): nothing more is tried until recovery moves.
        let mut stalled: Option<SegmentName> = None;
        // What this prefetcher spooled: a fetch serves a segment by moving it
        // out of the spool just before it records the name in `.want`.
        let mut spooled = std::collections::BTreeSet::new();
        // Whether everything after the current want is spooled already.
        let mut settled = false;
        // This process holds the lock: a temporary file here is a killed
        // prefetcher's, and a fetch would wait for it.
        self.remove_temps();
        loop {
            if !self.dir.is_dir() || started.elapsed() >= super::ahead::MAX_FOLLOW {
                return Ok(());
            }
            let want = self.want(size);
            if want != last {
                if want < last {
                    // Recovery started over: what was served may be asked for again.
                    spooled.clear();
                }
                last = want;
                moved = Instant::now();
                settled = false;
            }
            if let Some(w) = want.filter(|w| !settled && stalled != Some(*w)) {
                let w_name = w.format(size);
                spooled = spooled.split_off(&w_name);
                let missing: Vec<String> = names_after(w, size, ahead)
                    .into_iter()
                    .filter(|n| !spooled.contains(n) && std::fs::symlink_metadata(self.path(n)).is_err())
                    .collect();
                if !missing.is_empty() {
                    let done = self.fill(repo.clone(), stanza, &missing).await? as usize;
                    spooled.extend(missing[..done].iter().cloned());
                    if done < missing.len() {
                        stalled = Some(w);
                    }
                    // Idle is counted from the last work, not from the last
                    // move: a slow fill must not end the prefetcher.
                    moved = Instant::now();
                    continue;
                }
                settled = true;
            }
            if moved.elapsed() >= idle {
                return Ok(());
            }
            tokio::time::sleep(POLL_WANT).await;
        }
    }

    /// Fetches `names` into the spool in order, stopping at the first one
    /// the archive does not have, and skipping those recovery has fetched
    /// meanwhile (`.want` at or past them); returns how many of the first
    /// names are spooled or skipped. One file decodes at a time (the pool already spreads one
    /// file over every core, and recovery waits for the first name), while
    /// the files decoded before it are fsynced and renamed into the spool on
    /// the blocking pool, so that a later fetch only renames.
    pub async fn fill(&self, repo: std::sync::Arc<Repository>, stanza: &str, names: &[String]) -> Result<u64> {
        let mut syncs = Vec::new();
        for name in names {
            if self.want_name().is_some_and(|w| name.as_str() <= w.as_str()) {
                syncs.push(None);
                continue;
            }
            match self.write_one(&repo, stanza, name).await {
                Ok(Spooled::Already) => syncs.push(None),
                Ok(Spooled::Written(f, tmp)) => {
                    let dest = self.path(name);
                    syncs.push(Some(tokio::task::spawn_blocking(move || {
                        let r = f.sync_all().and_then(|()| std::fs::rename(&tmp, &dest));
                        if r.is_err() {
                            let _ = std::fs::remove_file(&tmp);
                        }
                        r.map_err(|e| Error::io(&dest, e))
                    })));
                }
                Ok(Spooled::NotArchived) => break,
                Err(e) => {
                    tracing::warn!(error = %e, %name, "prefetch failed");
                    break;
                }
            }
        }
        let mut done = 0;
        let mut failed = false;
        for s in syncs {
            let r = match s {
                None => Ok(()),
                Some(h) => h.await.unwrap_or_else(|e| Err(Error::Internal(format!("prefetch task failed: {e}")))),
            };
            match r {
                Ok(()) if !failed => done += 1,
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "prefetch failed");
                    failed = true;
                }
            }
        }
        Ok(done)
    }

    /// Writes `name` to its temporary file, not yet fsynced.
    async fn write_one(&self, repo: &Repository, stanza: &str, name: &str) -> Result<Spooled> {
        if self.path(name).exists() {
            return Ok(Spooled::Already);
        }
        let tli = u32::from_str_radix(name.get(..8).unwrap_or(""), 16)
            .map_err(|_| Error::InvalidInput(format!("{name:?} is not a WAL file name")))?;
        let key = manifest_key(stanza, tli, name);
        let Some(m) = get_named::<WalManifest>(repo, &key).await? else {
            return Ok(Spooled::NotArchived);
        };
        let tmp = self.temp(name);
        // The prefetcher holds the lock: a file there is a killed one's.
        let _ = std::fs::remove_file(&tmp);
        // Pieces authenticate; the hash that proves the content is the
        // whole file's, checked in `take` when the copy is served.
        let f = write_temp(repo, &key, &m, &tmp, Check::Authentic, Durability::Fsync).await?;
        Ok(Spooled::Written(f, tmp))
    }
}

/// The names of the `n` segments after `seg` on its timeline.
pub fn names_after(mut seg: SegmentName, size: SegmentSize, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let Some(next) = seg.next() else { break };
        names.push(next.format(size));
        seg = next;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_after_carry_into_the_next_log_file() {
        let size = SegmentSize::new(16 << 20).unwrap();
        let Ok(WalFileName::Segment(seg)) = WalFileName::parse("000000020000000A000000FE", size) else { panic!() };
        assert_eq!(
            names_after(seg, size, 3),
            ["000000020000000A000000FF", "000000020000000B00000000", "000000020000000B00000001"]
        );
        assert!(names_after(seg, size, 0).is_empty());
    }
}
