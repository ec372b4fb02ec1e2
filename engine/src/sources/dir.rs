//! Directory snapshots: a walk of a tree, one snapshot entry per file,
//! directory, symlink and hard link.
//!
//! Regular files are chunked one by one through the ordinary pipeline
//! (each file's content is its own entry, so it deduplicates wherever it
//! moves). The **files cache** is the previous snapshot of the same source
//! on this host: a file whose size, mtime (with nanoseconds), device,
//! inode and ctime all match its entry there is not opened at all; its
//! entry, with the content references already in the repository, is
//! passed through. A `chmod`, a rename or an edit changes the ctime, so
//! any change to a file's bytes or metadata makes it read again.
//!
//! Keeping the cache in the repository rather than on the host means it
//! survives a lost cache directory and needs no invalidation: if the
//! previous snapshot is gone, every file is read.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::ids::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::{Entry, FileKind, FileStat, Snapshot};
use crate::sources::tar::TarMode;
use crate::sources::{Feed, Piece, PieceSink};
use crate::{Error, Result};

/// Source kind of directory snapshots.
pub const KIND: &str = "dir";

/// What a directory walk found and did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct DirStats {
    /// Regular files (including those the cache knew).
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Extra names of files already stored (hard links).
    pub hardlinks: u64,
    /// Files opened and read.
    pub files_read: u64,
    /// Files the files cache knew unchanged (not opened).
    pub files_unchanged: u64,
    /// Sockets, FIFOs and devices, which are not backed up.
    pub skipped_special: u64,
    /// Paths left out by an exclude pattern.
    pub excluded: u64,
}

/// What a directory snapshot records about its walk (`metadata.dir`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirFacts {
    /// The directory backed up, as an absolute path.
    pub path: String,
    /// What the walk found and did.
    #[serde(default)]
    pub walk: DirStats,
}

impl DirFacts {
    /// The facts of a directory snapshot; `None` for other kinds.
    pub fn of(snapshot: &Snapshot) -> Option<DirFacts> {
        (snapshot.source.kind == KIND)
            .then(|| serde_json::from_value(snapshot.metadata.get("dir")?.clone()).ok())
            .flatten()
    }
}

/// The files cache for a backup of `root` as source `name` on this host:
/// the newest directory snapshot of the same source, host and path.
pub async fn previous_snapshot(repo: &Repository, name: &str, root: &Path) -> Result<Option<(SnapshotId, Snapshot)>> {
    let host = crate::hostname();
    let root = root.display().to_string();
    Ok(Snapshot::list(repo)
        .await?
        .into_iter()
        .rev()
        .find(|(_, s)| s.source.name == name && s.host == host && DirFacts::of(s).is_some_and(|f| f.path == root)))
}

/// Exclude patterns (globs, matched against the path relative to the root
/// and against the file name).
pub fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| Error::InvalidInput(format!("exclude pattern {p:?}: {e}")))?);
    }
    b.build().map_err(|e| Error::InvalidInput(format!("exclude patterns: {e}")))
}

/// Feeds a directory tree into the backup pipeline.
pub struct DirFeed {
    root: PathBuf,
    excludes: GlobSet,
    cache: HashMap<String, Entry>,
    stats: DirStats,
    links: HashMap<(u64, u64), String>,
}

impl DirFeed {
    /// A walk of `root`; `parent` is the files cache (the previous
    /// snapshot of this source), if any.
    pub fn new(root: PathBuf, excludes: GlobSet, parent: Option<Snapshot>) -> DirFeed {
        let cache = parent.map(|p| p.entries.into_iter().map(|e| (e.name.clone(), e)).collect()).unwrap_or_default();
        DirFeed { root, excludes, cache, stats: DirStats::default(), links: HashMap::new() }
    }

    fn excluded(&self, rel: &str) -> bool {
        if self.excludes.is_empty() {
            return false;
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.excludes.is_match(rel) || self.excludes.is_match(name)
    }

    /// Walks the directory open as `dir` (shown as `shown`). Every child is
    /// opened relative to that handle with `O_NOFOLLOW` and described by
    /// `fstat` of what was opened, so a file swapped for a symbolic link
    /// between two steps is never followed: what is read is what is
    /// recorded.
    fn walk(
        &mut self,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
        dir: &OwnedFd,
        shown: &Path,
        rel: &str,
    ) -> Result<()> {
        let mut names = Vec::new();
        for d in rustix::fs::Dir::read_from(dir).map_err(|e| errno(shown, e))? {
            let d = d.map_err(|e| errno(shown, e))?;
            let n = d.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(std::ffi::OsStr::from_bytes(n).to_os_string());
            }
        }
        names.sort();
        for name in names {
            let path = shown.join(&name);
            let name_s = name.to_str().map(str::to_string).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{}: file names that are not UTF-8 are not supported ({name:?})",
                    shown.display()
                ))
            })?;
            let rel = if rel.is_empty() { name_s } else { format!("{rel}/{name_s}") };
            if self.excluded(&rel) {
                self.stats.excluded += 1;
                continue;
            }
            self.child(sink, params, seed, dir, &name, &path, rel)?;
        }
        Ok(())
    }

    /// One name in directory `dir`: looked at without following it, then
    /// opened `O_NOFOLLOW`; if it changed kind in between it is looked at
    /// again (a few times, then the backup fails naming it).
    #[allow(clippy::too_many_arguments)]
    fn child(
        &mut self,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
        dir: &OwnedFd,
        name: &std::ffi::OsStr,
        path: &Path,
        rel: String,
    ) -> Result<()> {
        for _ in 0..4 {
            let at =
                match rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
                    Ok(fd) => fd,
                    // Removed during the walk: like tar, leave it out.
                    Err(rustix::io::Errno::NOENT) => return Ok(()),
                    Err(e) => return Err(errno(path, e)),
                };
            let meta = std::fs::File::from(at).metadata().map_err(|e| Error::io(path, e))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                // A link read back as something else changed meanwhile.
                match rustix::fs::readlinkat(dir, name, Vec::new()) {
                    Ok(t) => return self.one(sink, params, seed, path, rel, &meta, Walked::Link(t)),
                    Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(errno(path, e)),
                }
            }
            let opened = if ft.is_dir() {
                Opened::Dir(OFlags::RDONLY | OFlags::DIRECTORY)
            } else if ft.is_file() {
                Opened::File(OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)
            } else {
                Opened::Other
            };
            let handle = match opened {
                Opened::Dir(f) | Opened::File(f) => {
                    match rustix::fs::openat(dir, name, f | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
                        Ok(fd) => Some(std::fs::File::from(fd)),
                        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::NOENT) => continue,
                        Err(e) => return Err(errno(path, e)),
                    }
                }
                Opened::Other => None,
            };
            return match handle {
                Some(h) => {
                    let hm = h.metadata().map_err(|e| Error::io(path, e))?;
                    if (hm.dev(), hm.ino()) != (meta.dev(), meta.ino()) {
                        continue;
                    }
                    self.one(sink, params, seed, path, rel, &hm, Walked::Open(h))
                }
                None => self.one(sink, params, seed, path, rel, &meta, Walked::Special),
            };
        }
        Err(Error::io(path, std::io::Error::other("kept changing kind while being backed up")))
    }

    #[allow(clippy::too_many_arguments)]
    fn one(
        &mut self,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
        path: &Path,
        rel: String,
        meta: &std::fs::Metadata,
        found: Walked,
    ) -> Result<()> {
        let ft = meta.file_type();
        let mut e = Entry::new(rel.clone(), FileKind::File, meta.mode() & 0o7777, Some(meta.mtime()));
        e.mtime_nanos = Some(meta.mtime_nsec() as u32);
        e.owner = Some((meta.uid(), meta.gid()));
        if ft.is_dir() {
            self.stats.dirs += 1;
            e.kind = FileKind::Dir;
            sink.push(Piece::Reuse(Box::new(e)))?;
            let under = if rel == "." { "" } else { rel.as_str() };
            let Walked::Open(h) = found else { unreachable!("directories are opened") };
            return self.walk(sink, params, seed, &OwnedFd::from(h), path, under);
        }
        if let Walked::Link(t) = found {
            self.stats.symlinks += 1;
            let t = t.into_string().map_err(|t| {
                Error::InvalidInput(format!(
                    "{}: symlink targets that are not UTF-8 are not supported ({t:?})",
                    path.display()
                ))
            })?;
            e.kind = FileKind::Symlink;
            e.target = Some(t);
            return sink.push(Piece::Reuse(Box::new(e)));
        }
        let Walked::Open(f) = found.filter_file(ft.is_file()) else {
            self.stats.skipped_special += 1;
            tracing::warn!("{}: not a regular file, directory or symlink; skipped", path.display());
            return Ok(());
        };
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                self.stats.hardlinks += 1;
                e.kind = FileKind::Hardlink;
                e.target = Some(first.clone());
                return sink.push(Piece::Reuse(Box::new(e)));
            }
            self.links.insert((meta.dev(), meta.ino()), rel.clone());
        }
        self.stats.files += 1;
        e.stat = Some(FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: meta.ctime(),
            ctime_nanos: meta.ctime_nsec() as u32,
        });
        if let Some(old) = self.cache.get(&rel) {
            let same = old.kind == FileKind::File
                && old.size == meta.len()
                && old.mtime == e.mtime
                && old.mtime_nanos == e.mtime_nanos
                && old.stat == e.stat;
            if same {
                self.stats.files_unchanged += 1;
                e.size = old.size;
                e.blake3 = old.blake3.clone();
                e.content = old.content.clone();
                return sink.push(Piece::Reuse(Box::new(e)));
            }
        }
        self.stats.files_read += 1;
        sink.chunk_stream(f, params, seed, TarMode::Off).map_err(|err| match err {
            Error::Input { source, .. } => Error::io(path, source),
            other => other,
        })?;
        sink.push(Piece::End(Box::new(e)))
    }
}

/// What looking at a name found: an open handle (directory or regular
/// file), a link's target, or something not backed up.
enum Walked {
    Open(std::fs::File),
    Link(std::ffi::CString),
    Special,
}

impl Walked {
    fn filter_file(self, is_file: bool) -> Walked {
        match self {
            Walked::Open(f) if is_file => Walked::Open(f),
            Walked::Link(t) => Walked::Link(t),
            _ => Walked::Special,
        }
    }
}

enum Opened {
    Dir(OFlags),
    File(OFlags),
    Other,
}

fn errno(path: &Path, e: rustix::io::Errno) -> Error {
    Error::io(path, std::io::Error::from(e))
}

impl Feed for DirFeed {
    fn feed(
        mut self: Box<Self>,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
    ) -> Result<Option<serde_json::Value>> {
        let root = self.root.clone();
        // The root is the operator's path, followed if it is a link.
        let fd = match rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOTDIR) => {
                return Err(Error::InvalidInput(format!("{}: not a directory", root.display())))
            }
            Err(e) => return Err(errno(&root, e)),
        };
        let h = std::fs::File::from(fd);
        let meta = h.metadata().map_err(|e| Error::io(&root, e))?;
        self.one(sink, params, seed, &root, ".".into(), &meta, Walked::Open(h))?;
        let facts = DirFacts { path: root.display().to_string(), walk: self.stats };
        Ok(Some(serde_json::json!({ "dir": facts })))
    }
}
