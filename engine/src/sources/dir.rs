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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
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

    fn walk(&mut self, sink: &mut PieceSink, params: ChunkerParams, seed: u64, dir: &Path, rel: &str) -> Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .map(|d| d.map(|d| d.file_name()).map_err(|e| Error::io(dir, e)))
            .collect::<Result<_>>()?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let name = name.into_string().map_err(|n| {
                Error::InvalidInput(format!(
                    "{}: file names that are not UTF-8 are not supported ({n:?})",
                    dir.display()
                ))
            })?;
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if self.excluded(&rel) {
                self.stats.excluded += 1;
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            self.one(sink, params, seed, &path, rel, &meta)?;
        }
        Ok(())
    }

    fn one(
        &mut self,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
        path: &Path,
        rel: String,
        meta: &std::fs::Metadata,
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
            return self.walk(sink, params, seed, path, under);
        }
        if ft.is_symlink() {
            self.stats.symlinks += 1;
            let t = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
            let t = t.into_os_string().into_string().map_err(|t| {
                Error::InvalidInput(format!(
                    "{}: symlink targets that are not UTF-8 are not supported ({t:?})",
                    path.display()
                ))
            })?;
            e.kind = FileKind::Symlink;
            e.target = Some(t);
            return sink.push(Piece::Reuse(Box::new(e)));
        }
        if !ft.is_file() {
            self.stats.skipped_special += 1;
            tracing::warn!("{}: not a regular file, directory or symlink; skipped", path.display());
            return Ok(());
        }
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
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        sink.chunk_stream(f, params, seed, TarMode::Off).map_err(|err| match err {
            Error::Input { source, .. } => Error::io(path, source),
            other => other,
        })?;
        sink.push(Piece::End(Box::new(e)))
    }
}

impl Feed for DirFeed {
    fn feed(
        mut self: Box<Self>,
        sink: &mut PieceSink,
        params: ChunkerParams,
        seed: u64,
    ) -> Result<Option<serde_json::Value>> {
        let root = self.root.clone();
        let meta = std::fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidInput(format!("{}: not a directory", root.display())));
        }
        self.one(sink, params, seed, &root, ".".into(), &meta)?;
        let facts = DirFacts { path: root.display().to_string(), walk: self.stats };
        Ok(Some(serde_json::json!({ "dir": facts })))
    }
}
