//! Extracting files of a [`Layout`] under a target directory: one file or
//! subtree by range reads of only the blobs that hold it, or a whole tar by
//! streaming the entry once through [`Demux`].

use std::collections::HashSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::layout::{normalize, FileInfo, Layout, Location};
use crate::commands::restore::{restore_entry, restore_entry_to_path, PartialFile};
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::FileKind;
use crate::{Error, Result};

/// Joins an archive path under `root`, refusing absolute paths and `..`.
pub fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => {
                return Err(Error::InvalidInput(format!("refusing to extract {rel:?}: it leaves the target directory")))
            }
        }
    }
    Ok(out)
}

/// What an extraction did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractSummary {
    /// Files, directories and links created.
    pub items: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
    /// Bytes read from storage.
    pub bytes_fetched: u64,
    /// Range requests.
    pub requests: u64,
}

fn set_times_and_mode(path: &Path, f: &FileInfo, symlink: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = f.owner.filter(|_| running_as_root()) {
        std::os::unix::fs::lchown(path, Some(uid as u32), Some(gid as u32)).map_err(|e| Error::io(path, e))?;
    }
    if !symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(f.mode)).map_err(|e| Error::io(path, e))?;
    }
    if let Some(t) = f.mtime {
        let ft = filetime::FileTime::from_unix_time(t, f.nanos);
        let r =
            if symlink { filetime::set_symlink_file_times(path, ft, ft) } else { filetime::set_file_mtime(path, ft) };
        r.map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Ownership is restored only when running as root, as tar does.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

impl Layout {
    /// Extracts the files at or under `path` into `to`: directories,
    /// files (written under a temporary name, fsynced, renamed), symlinks
    /// and hard links, with modes and mtimes, and owners when root.
    pub async fn extract(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        path: Option<&str>,
        to: &Path,
    ) -> Result<ExtractSummary> {
        let want = path.map(normalize);
        let chosen: Vec<&FileInfo> = self.list(want.as_deref());
        if chosen.is_empty() {
            return Err(Error::NotFound { what: format!("{:?} in the snapshot", want.unwrap_or_default()) });
        }
        std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
        let mut sum = ExtractSummary::default();
        let mut dirs = Vec::new();
        let mut done: HashSet<&str> = HashSet::new();
        // A whole tar is read once, in order, through the restore pipeline
        // (whole-stream hash checked), its members' bytes routed to their
        // files; one file or subtree is read by ranges instead.
        let streamed = want.is_none() && self.tar_entry.is_some();
        if streamed {
            for f in chosen.iter().filter(|f| f.kind == FileKind::Dir) {
                let dest = safe_join(to, &f.path)?;
                std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
            }
            let mut files = Vec::new();
            for f in chosen.iter().filter(|f| f.kind == FileKind::File) {
                let Location::Tar(start) = f.at else { continue };
                files.push((start, f.size, safe_join(to, &f.path)?));
            }
            files.sort_by_key(|(s, _, _)| *s);
            let e = &self.snapshot.entries[self.tar_entry.expect("tar layout")];
            let demux = Demux { files, next: 0, pos: 0, cur: None };
            let (s, d) = restore_entry(repo, index, e, demux, 8, std::sync::Arc::default()).await?;
            d.finish()?;
            sum.bytes_written += chosen.iter().filter(|f| f.kind == FileKind::File).map(|f| f.size).sum::<u64>();
            sum.bytes_fetched += s.bytes_fetched;
            sum.requests += s.requests;
        }
        for f in &chosen {
            let dest = safe_join(to, &f.path)?;
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            match f.kind {
                FileKind::Dir => {
                    std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
                    dirs.push((dest, *f));
                }
                FileKind::Symlink => {
                    let t = f.target.as_deref().unwrap_or_default();
                    let _ = std::fs::remove_file(&dest);
                    std::os::unix::fs::symlink(t, &dest).map_err(|e| Error::io(&dest, e))?;
                    set_times_and_mode(&dest, f, true)?;
                }
                FileKind::Hardlink => {
                    let t = normalize(f.target.as_deref().unwrap_or_default());
                    let _ = std::fs::remove_file(&dest);
                    if done.contains(t.as_str()) {
                        let src = safe_join(to, &t)?;
                        std::fs::hard_link(&src, &dest).map_err(|e| Error::io(&dest, e))?;
                    } else if let Some(orig) = self.files.iter().find(|x| x.path == t && x.kind == FileKind::File) {
                        // The link's target was not chosen: give this name its bytes.
                        let mut as_file = orig.clone();
                        as_file.path = f.path.clone();
                        self.write_file(repo, index, &as_file, &dest, &mut sum).await?;
                    } else {
                        return Err(Error::NotFound { what: format!("hard link target {t:?} of {:?}", f.path) });
                    }
                }
                FileKind::File if streamed => set_times_and_mode(&dest, f, false)?,
                FileKind::File => self.write_file(repo, index, f, &dest, &mut sum).await?,
                other => {
                    tracing::warn!("{}: {other} members are not extracted", f.path);
                    continue;
                }
            }
            done.insert(f.path.as_str());
            sum.items += 1;
        }
        // Directory times last: creating their children changed them.
        for (dest, f) in dirs.iter().rev() {
            set_times_and_mode(dest, f, false)?;
        }
        Ok(sum)
    }

    async fn write_file(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        f: &FileInfo,
        dest: &Path,
        sum: &mut ExtractSummary,
    ) -> Result<()> {
        // A directory snapshot's file is an entry of its own: the restore
        // pipeline streams it to disk (whole-file hash checked), whatever
        // its size.
        if let Location::Entry(i) = f.at {
            let s = restore_entry_to_path(repo, index, &self.snapshot.entries[i], dest, 8, Default::default()).await?;
            set_times_and_mode(dest, f, false)?;
            sum.bytes_written += s.bytes_written;
            sum.bytes_fetched += s.bytes_fetched;
            sum.requests += s.requests;
            return Ok(());
        }
        let (partial, mut w) = PartialFile::create(dest, 1 << 20)?;
        let s = match self.read_file(repo, index, f, &mut w).await {
            Ok(s) => s,
            Err(e) => {
                partial.abandon();
                return Err(e);
            }
        };
        partial.commit(w)?;
        set_times_and_mode(dest, f, false)?;
        sum.bytes_written += s.bytes_written;
        sum.bytes_fetched += s.bytes_fetched;
        sum.requests += s.requests;
        Ok(())
    }
}

/// Routes a tar stream's bytes to the files its members name: a member's
/// data range, by stream offset, goes to its file; headers and padding go
/// nowhere. Files are created when their first byte arrives (empty files
/// at `finish`) and fsynced when their last has been written.
struct Demux {
    files: Vec<(u64, u64, PathBuf)>,
    next: usize,
    pos: u64,
    cur: Option<(std::fs::File, u64, usize)>,
}

fn named(p: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

impl Write for Demux {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos + buf.len() as u64;
        let mut at = self.pos;
        while at < end {
            if self.cur.is_none() {
                while self.files.get(self.next).is_some_and(|(s, l, _)| *l == 0 || s + l <= at) {
                    self.next += 1;
                }
                let Some((s, l, p)) = self.files.get(self.next) else { break };
                if *s >= end {
                    break;
                }
                let f = std::fs::File::create(p).map_err(|e| named(p, e))?;
                self.cur = Some((f, s + l, self.next));
                at = at.max(*s);
                self.next += 1;
            }
            let (f, fend, i) = self.cur.as_mut().expect("a file is open");
            let stop = (*fend).min(end);
            let piece = &buf[(at - self.pos) as usize..(stop - self.pos) as usize];
            f.write_all(piece).map_err(|e| named(&self.files[*i].2, e))?;
            at = stop;
            if at == *fend {
                let (f, _, i) = self.cur.take().expect("open");
                f.sync_all().map_err(|e| named(&self.files[i].2, e))?;
            }
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Demux {
    /// Creates the empty files; fails if a member's bytes never came.
    fn finish(self) -> Result<()> {
        if let Some((_, _, i)) = self.cur {
            let p = &self.files[i].2;
            return Err(Error::corrupt(
                p.display().to_string(),
                Some(self.pos),
                "the tar stream ended inside this file",
            ));
        }
        for (_, l, p) in &self.files {
            if *l == 0 {
                std::fs::File::create(p).and_then(|f| f.sync_all()).map_err(|e| Error::io(p, e))?;
            }
        }
        Ok(())
    }
}
