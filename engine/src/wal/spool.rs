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
//! # One prefetcher at a time
//! `.prefetch.pid` is created with `create_new`; a prefetcher whose process
//! no longer exists is replaced. A fetch that finds the segment it wants
//! being written (`.NAME.tmp`) by a live prefetcher waits for it instead of
//! fetching it twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::fetch::{deliver_from, fetch_to_temp};
use super::{get_named, manifest_key, WalManifest};
use crate::repo::Repository;
use crate::{Error, Result};

const LOCK: &str = ".prefetch.pid";
/// How long a fetch waits for a prefetcher that is writing its segment.
const WAIT_FOR_PREFETCHER: Duration = Duration::from_secs(60);

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Spool {
    /// Opens (creating, mode 0700) a spool directory.
    pub fn open(dir: &Path) -> Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Spool { dir: dir.to_path_buf() })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn temp(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.tmp"))
    }

    /// The pid of a live prefetcher, if any.
    pub fn prefetcher(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join(LOCK)).ok()?.trim().parse().ok()?;
        pid_alive(pid).then_some(pid)
    }

    /// Takes the prefetcher lock for this process; `false` if another live
    /// prefetcher holds it.
    pub fn lock(&self) -> Result<bool> {
        let lock = self.dir.join(LOCK);
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
                Ok(mut f) => {
                    use std::io::Write;
                    write!(f, "{}", std::process::id()).map_err(|e| Error::io(&lock, e))?;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if self.prefetcher().is_some() {
                        return Ok(false);
                    }
                    let _ = std::fs::remove_file(&lock);
                }
                Err(e) => return Err(Error::io(&lock, e)),
            }
        }
        Ok(false)
    }

    /// Releases the lock taken by [`Spool::lock`].
    pub fn unlock(&self) {
        let _ = std::fs::remove_file(self.dir.join(LOCK));
    }

    /// Serves `name` from the spool when a verified copy is there (waiting
    /// for a live prefetcher that is writing it). `Ok(false)`: not served;
    /// fetch it directly.
    pub async fn take(&self, key: &str, m: &WalManifest, dest: &Path) -> Result<bool> {
        let spooled = self.path(&m.name);
        let t = Instant::now();
        while !spooled.exists() && self.temp(&m.name).exists() && self.prefetcher().is_some() {
            if t.elapsed() > WAIT_FOR_PREFETCHER {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !spooled.exists() {
            return Ok(false);
        }
        let ok = tokio::task::block_in_place(|| -> std::io::Result<bool> {
            let mut h = blake3::Hasher::new();
            let n = h.update_reader(std::fs::File::open(&spooled)?)?.count();
            Ok(n == m.size && h.finalize().to_hex().as_str() == m.blake3)
        })
        .unwrap_or(false);
        if !ok {
            tracing::warn!(file = %spooled.display(), %key, "spooled file does not match the archive; fetching directly");
            let _ = std::fs::remove_file(&spooled);
            return Ok(false);
        }
        deliver_from(&spooled, dest)?;
        Ok(true)
    }

    /// Removes spooled segments that sort before `name` (recovery has moved
    /// past them) and leftovers of killed prefetchers that are not in use.
    pub fn prune_before(&self, name: &str) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        for e in rd.flatten() {
            let f = e.file_name();
            let Some(f) = f.to_str() else { continue };
            if f.len() == 24 && f < name {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Fetches `names` into the spool, `concurrency` at a time (each on its
    /// own task, so one file's fsync overlaps the next one's decoding),
    /// stopping at the first one the archive does not have. Files are fsynced
    /// before they are renamed into the spool, so a later fetch only renames.
    pub async fn fill(
        &self,
        repo: std::sync::Arc<Repository>,
        stanza: &str,
        names: &[String],
        concurrency: usize,
    ) -> Result<u64> {
        let mut done = 0;
        let mut jobs = futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let (spool, repo, stanza) = (self.clone(), repo.clone(), stanza.to_string());
                async move {
                    let r = tokio::spawn(async move { spool.fill_one(&repo, &stanza, &name).await }).await;
                    r.unwrap_or_else(|e| Err(Error::Config(format!("prefetch task failed: {e}"))))
                }
            })
            .buffered(concurrency.max(1));
        while let Some(r) = jobs.next().await {
            match r {
                Ok(true) => done += 1,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "prefetch failed");
                    break;
                }
            }
        }
        Ok(done)
    }

    async fn fill_one(&self, repo: &Repository, stanza: &str, name: &str) -> Result<bool> {
        if self.path(name).exists() {
            return Ok(true);
        }
        let tli = u32::from_str_radix(name.get(..8).unwrap_or(""), 16).map_err(|_| Error::Config(name.into()))?;
        let key = manifest_key(stanza, tli, name);
        let Some(m) = get_named::<WalManifest>(repo, &key).await? else {
            return Ok(false);
        };
        let tmp = self.temp(name);
        let r = fetch_to_temp(repo, &key, &m, &tmp).await;
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r?;
        std::fs::rename(&tmp, self.path(name)).map_err(|e| Error::io(self.path(name), e))?;
        Ok(true)
    }
}
