//! Extracting files of a [`Layout`] under a target directory: one file or
//! subtree by range reads of only the blobs that hold it, or a whole tar by
//! streaming the entry once through [`Demux`].
//!
//! Every write goes through [`Beneath`], after [`Layout::vet`] found no
//! member that could act outside the target: nothing a snapshot holds, and
//! nothing already in the target, can make a restore touch another path.

use futures::StreamExt;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::demux::Demux;
use super::layout::{normalize, FileInfo, Layout, Location};
use super::vet::{describe, LinkRule, Refusal};
use crate::beneath::{Beneath, GroupCommit, Meta};
use crate::commands::restore::{name_output, restore_entry, restore_entry_checked, RestoreSummary, StreamCheck};
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::FileKind;
use crate::{Error, Result};

/// Files restored at once by [`Layout::extract`].
const FILES_AT_ONCE: usize = 8;
/// About how many bytes of files are in flight at once.
const BYTES_AT_ONCE: u64 = 64 << 20;
/// What one file counts against [`BYTES_AT_ONCE`] at most: a large file
/// holds its pipeline's windows, not its size.
const MAX_WEIGHT: u64 = 48 << 20;

/// What a restore keeps of a snapshot's owners and special mode bits.
///
/// The defaults follow GNU tar for tar snapshots (no owners, no setuid or
/// setgid bits, whoever restores) and keep everything for a directory
/// snapshot restored by root, which is what such a snapshot is for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// Give files their recorded owners (only root can): `None` means yes
    /// for directory snapshots, no for tar snapshots.
    pub same_owner: Option<bool>,
    /// Keep setuid and setgid bits: `None` means only for a directory
    /// snapshot restored by root.
    pub same_permissions: Option<bool>,
    /// Which symbolic links are acceptable.
    pub links: LinkRule,
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
    /// Members not extracted (device nodes, FIFOs), and why.
    pub skipped: Vec<Refusal>,
}

/// Ownership is restored only when running as root, as tar does.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

struct Policy {
    owners: bool,
    special: bool,
}

impl Policy {
    fn meta(&self, f: &FileInfo) -> Meta {
        Meta {
            mode: if self.special { f.mode & 0o7777 } else { f.mode & 0o1777 },
            owner: f.owner.filter(|_| self.owners).map(|(u, g)| (u as u32, g as u32)),
            mtime: f.mtime.map(|t| (t, f.nanos)),
        }
    }
}

impl Layout {
    /// Extracts the files at or under `path` into `to`: directories,
    /// files (written under a temporary name, fsynced, renamed), symlinks
    /// and hard links, with modes and mtimes, and owners as `opts` says.
    /// A snapshot with any member that fails [`Layout::vet`] is refused
    /// before anything is written.
    pub async fn extract(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        path: Option<&str>,
        to: &Path,
        opts: &ExtractOptions,
    ) -> Result<ExtractSummary> {
        self.extract_checked(repo, index, path, to, opts, StreamCheck::Whole).await
    }

    /// [`Layout::extract`] with a choice of the check of a whole tar's
    /// stream: `pg restore` reads every file back against
    /// `backup_manifest`, so it skips the stream's hash (every blob is
    /// still checked against its id).
    pub(crate) async fn extract_checked(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        path: Option<&str>,
        to: &Path,
        opts: &ExtractOptions,
        check: StreamCheck,
    ) -> Result<ExtractSummary> {
        let want = path.map(normalize);
        let chosen: Vec<&FileInfo> = self.list(want.as_deref());
        if chosen.is_empty() {
            return Err(Error::NotFound { what: format!("{:?} in the snapshot", want.unwrap_or_default()) });
        }
        let refusals = self.vet(&chosen, opts.links);
        if !refusals.is_empty() {
            return Err(Error::Refused {
                what: format!("to restore {} member(s) of snapshot {}", refusals.len(), self.snapshot.source.name),
                detail: describe(&refusals),
            });
        }
        let root = running_as_root();
        let dir_snapshot = self.tar_entry.is_none();
        let policy = Policy {
            owners: root && opts.same_owner.unwrap_or(dir_snapshot),
            special: opts.same_permissions.unwrap_or(dir_snapshot && root),
        };
        let b = Arc::new(Beneath::open(to)?);
        let mut sum = ExtractSummary::default();
        let mut dirs = Vec::new();
        let mut done: HashSet<&str> = HashSet::new();
        for f in chosen.iter().filter(|f| f.kind == FileKind::Dir) {
            b.dir(&f.path, true)?;
            dirs.push((f.path.as_str(), policy.meta(f)));
            done.insert(f.path.as_str());
            sum.items += 1;
        }
        let files: Vec<&FileInfo> = chosen.iter().copied().filter(|f| f.kind == FileKind::File).collect();
        // A whole tar is read once, in order, through the restore pipeline,
        // its members' bytes routed to their files; one file or subtree of
        // a tar, and a directory snapshot's files, are restored several at
        // once. Either way, files take their names in groups.
        if let (None, Some(tar)) = (&want, self.tar_entry) {
            let mut members = Vec::new();
            for f in &files {
                let Location::Tar(start) = f.at else { continue };
                members.push((start, f.size, f.path.clone(), policy.meta(f)));
            }
            members.sort_by_key(|(s, ..)| *s);
            let e = &self.snapshot.entries[tar];
            let demux =
                Demux { b: b.clone(), files: members, next: 0, pos: 0, cur: None, commits: Some(GroupCommit::start()) };
            let (s, d) = restore_entry_checked(repo, index, e, demux, 8, Arc::default(), check).await?;
            d.finish()?;
            sum.bytes_written += files.iter().map(|f| f.size).sum::<u64>();
            sum.bytes_fetched += s.bytes_fetched;
            sum.requests += s.requests;
        } else {
            let wrote = self.write_files(repo, index, &files, &b, &policy).await?;
            sum.bytes_written += wrote.bytes_written;
            sum.bytes_fetched += wrote.bytes_fetched;
            sum.requests += wrote.requests;
        }
        for f in &files {
            done.insert(f.path.as_str());
        }
        sum.items += files.len() as u64;
        for f in chosen.iter().filter(|f| !matches!(f.kind, FileKind::Dir | FileKind::File)) {
            let meta = policy.meta(f);
            match f.kind {
                FileKind::Symlink => b.symlink(&f.path, f.target.as_deref().unwrap_or_default(), &meta)?,
                FileKind::Hardlink => {
                    let t = normalize(f.target.as_deref().unwrap_or_default());
                    if done.contains(t.as_str()) {
                        b.hard_link(&t, &f.path)?;
                    } else if let Some(orig) = self.files.iter().find(|x| x.path == t && x.kind == FileKind::File) {
                        // The link's target was not chosen: give this name its bytes.
                        let mut as_file = orig.clone();
                        as_file.path = f.path.clone();
                        let wrote = self.write_files(repo, index, &[&as_file], &b, &policy).await?;
                        sum.bytes_written += wrote.bytes_written;
                        sum.bytes_fetched += wrote.bytes_fetched;
                        sum.requests += wrote.requests;
                    } else {
                        return Err(Error::NotFound { what: format!("hard link target {t:?} of {:?}", f.path) });
                    }
                }
                other => {
                    tracing::warn!("{}: {other} members are not extracted", f.path);
                    sum.skipped.push(Refusal { path: f.path.clone(), why: format!("a {other}: not extracted") });
                    continue;
                }
            }
            done.insert(f.path.as_str());
            sum.items += 1;
        }
        // Directory modes and times last: they stay 0700 while filled, and
        // creating their children changed their times.
        for (rel, meta) in dirs.iter().rev() {
            b.set_dir_meta(rel, meta)?;
        }
        Ok(sum)
    }

    /// Writes `files` several at once, each under a temporary name, and
    /// gives them their names in groups ([`GroupCommit`]). Up to
    /// [`FILES_AT_ONCE`] files are in flight, and no more than about
    /// [`BYTES_AT_ONCE`] of them (a large file's own pipeline holds up to
    /// 56 MiB), so memory stays bounded whatever the snapshot holds. After
    /// a failure the files in flight still finish (or are removed), so no
    /// temporary file is left behind; the first error is returned.
    async fn write_files(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        files: &[&FileInfo],
        b: &Beneath,
        policy: &Policy,
    ) -> Result<RestoreSummary> {
        let commits = GroupCommit::start();
        let budget = tokio::sync::Semaphore::new((BYTES_AT_ONCE >> 20) as usize);
        let mut results = futures::stream::iter(files.iter().copied())
            .map(|f| {
                let (commits, budget) = (&commits, &budget);
                async move {
                    let mib = (f.size.min(MAX_WEIGHT) >> 20) as u32 + 1;
                    let _permit = budget.acquire_many(mib).await.expect("never closed");
                    self.write_file(repo, index, f, b, &policy.meta(f), commits).await
                }
            })
            .buffer_unordered(FILES_AT_ONCE);
        let mut sum = RestoreSummary::default();
        let mut first_error = None;
        while let Some(r) = results.next().await {
            match r {
                Ok(s) => {
                    sum.bytes_written += s.bytes_written;
                    sum.bytes_fetched += s.bytes_fetched;
                    sum.requests += s.requests;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(results);
        let committed = commits.finish();
        match (first_error, committed) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(_)) => Ok(sum),
        }
    }

    /// Writes one file under a temporary name and queues it for commit.
    async fn write_file(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        f: &FileInfo,
        b: &Beneath,
        meta: &Meta,
        commits: &GroupCommit,
    ) -> Result<RestoreSummary> {
        let (partial, file) = b.create(&f.path)?;
        let w = std::io::BufWriter::with_capacity(1 << 20, file);
        // A directory snapshot's file is an entry of its own: the restore
        // pipeline streams it to disk (whole-file hash checked), whatever
        // its size; a tar member is read by ranges.
        let written = match f.at {
            Location::Entry(i) => restore_entry(repo, index, &self.snapshot.entries[i], w, 8, Arc::default()).await,
            Location::Tar(_) | Location::None => {
                let mut w = w;
                self.read_file(repo, index, f, &mut w).await.map(|s| (s, w))
            }
        };
        let (s, w) = match written {
            Ok(r) => r,
            Err(e) => {
                let e = name_output(e, partial.shown());
                partial.abandon();
                return Err(e);
            }
        };
        let file = match w.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let shown = partial.shown().to_path_buf();
                partial.abandon();
                return Err(Error::io(shown, e.into_error()));
            }
        };
        commits.push(partial, file, Some(*meta))?;
        Ok(s)
    }
}
