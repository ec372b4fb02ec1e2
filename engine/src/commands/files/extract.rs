//! Extracting files of a [`Layout`] under a target directory: one file or
//! subtree by range reads of only the blobs that hold it, or a whole tar by
//! streaming the entry once through [`Demux`].
//!
//! Every write goes through [`Beneath`], after [`Layout::vet`] found no
//! member that could act outside the target: nothing a snapshot holds, and
//! nothing already in the target, can make a restore touch another path.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::layout::{normalize, FileInfo, Layout, Location};
use super::vet::{describe, LinkRule, Refusal};
use crate::beneath::{Beneath, Meta, Partial};
use crate::commands::restore::{name_output, restore_entry, restore_entry_beneath};
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::FileKind;
use crate::{Error, Result};

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
        // A whole tar is read once, in order, through the restore pipeline
        // (whole-stream hash checked), its members' bytes routed to their
        // files; one file or subtree is read by ranges instead.
        let streamed = want.is_none() && self.tar_entry.is_some();
        if streamed {
            for f in chosen.iter().filter(|f| f.kind == FileKind::Dir) {
                b.dir(&f.path, true)?;
            }
            let mut files = Vec::new();
            for f in chosen.iter().filter(|f| f.kind == FileKind::File) {
                let Location::Tar(start) = f.at else { continue };
                files.push((start, f.size, f.path.clone(), policy.meta(f)));
            }
            files.sort_by_key(|(s, ..)| *s);
            let e = &self.snapshot.entries[self.tar_entry.expect("tar layout")];
            let demux = Demux { b: b.clone(), files, next: 0, pos: 0, cur: None };
            let (s, d) = restore_entry(repo, index, e, demux, 8, Arc::default()).await?;
            d.finish()?;
            sum.bytes_written += chosen.iter().filter(|f| f.kind == FileKind::File).map(|f| f.size).sum::<u64>();
            sum.bytes_fetched += s.bytes_fetched;
            sum.requests += s.requests;
        }
        for f in &chosen {
            let meta = policy.meta(f);
            match f.kind {
                FileKind::Dir => {
                    b.dir(&f.path, true)?;
                    dirs.push((f.path.as_str(), meta));
                }
                FileKind::Symlink => b.symlink(&f.path, f.target.as_deref().unwrap_or_default(), &meta)?,
                FileKind::Hardlink => {
                    let t = normalize(f.target.as_deref().unwrap_or_default());
                    if done.contains(t.as_str()) {
                        b.hard_link(&t, &f.path)?;
                    } else if let Some(orig) = self.files.iter().find(|x| x.path == t && x.kind == FileKind::File) {
                        // The link's target was not chosen: give this name its bytes.
                        let mut as_file = orig.clone();
                        as_file.path = f.path.clone();
                        self.write_file(repo, index, &as_file, &b, &policy.meta(&as_file), &mut sum).await?;
                    } else {
                        return Err(Error::NotFound { what: format!("hard link target {t:?} of {:?}", f.path) });
                    }
                }
                FileKind::File if streamed => {}
                FileKind::File => self.write_file(repo, index, f, &b, &meta, &mut sum).await?,
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

    async fn write_file(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        f: &FileInfo,
        b: &Beneath,
        meta: &Meta,
        sum: &mut ExtractSummary,
    ) -> Result<()> {
        // A directory snapshot's file is an entry of its own: the restore
        // pipeline streams it to disk (whole-file hash checked), whatever
        // its size.
        if let Location::Entry(i) = f.at {
            let s = restore_entry_beneath(
                repo,
                index,
                &self.snapshot.entries[i],
                b,
                &f.path,
                Some(meta),
                8,
                Arc::default(),
            )
            .await?;
            sum.bytes_written += s.bytes_written;
            sum.bytes_fetched += s.bytes_fetched;
            sum.requests += s.requests;
            return Ok(());
        }
        let (partial, file) = b.create(&f.path)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let s = match self.read_file(repo, index, f, &mut w).await {
            Ok(s) => s,
            Err(e) => {
                let e = name_output(e, partial.shown());
                partial.abandon();
                return Err(e);
            }
        };
        let file = w.into_inner().map_err(|e| Error::io(partial.shown(), e.into_error()))?;
        partial.commit(file, Some(meta))?;
        sum.bytes_written += s.bytes_written;
        sum.bytes_fetched += s.bytes_fetched;
        sum.requests += s.requests;
        Ok(())
    }
}

/// Routes a tar stream's bytes to the files its members name: a member's
/// data range, by stream offset, goes to its file; headers and padding go
/// nowhere. Files are created when their first byte arrives (empty files
/// at `finish`) under a temporary name, and take their name, owner, mode
/// and times once their last byte has been written and fsynced.
struct Demux {
    b: Arc<Beneath>,
    files: Vec<(u64, u64, String, Meta)>,
    next: usize,
    pos: u64,
    cur: Option<(Partial, std::fs::File, u64, usize)>,
}

fn as_io(e: Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Write for Demux {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos + buf.len() as u64;
        let mut at = self.pos;
        while at < end {
            if self.cur.is_none() {
                while self.files.get(self.next).is_some_and(|(s, l, ..)| *l == 0 || s + l <= at) {
                    self.next += 1;
                }
                let Some((s, l, rel, _)) = self.files.get(self.next) else { break };
                if *s >= end {
                    break;
                }
                let (p, f) = self.b.create(rel).map_err(as_io)?;
                self.cur = Some((p, f, s + l, self.next));
                at = at.max(*s);
                self.next += 1;
            }
            let (p, f, fend, _) = self.cur.as_mut().expect("a file is open");
            let stop = (*fend).min(end);
            let piece = &buf[(at - self.pos) as usize..(stop - self.pos) as usize];
            f.write_all(piece).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.shown().display())))?;
            at = stop;
            if at == *fend {
                let (p, f, _, i) = self.cur.take().expect("open");
                p.commit(f, Some(&self.files[i].3)).map_err(as_io)?;
            }
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Demux {
    fn drop(&mut self) {
        if let Some((p, ..)) = self.cur.take() {
            p.abandon();
        }
    }
}

impl Demux {
    /// Creates the empty files; fails if a member's bytes never came.
    fn finish(mut self) -> Result<()> {
        if let Some((p, _, _, _)) = self.cur.take() {
            let shown = p.shown().display().to_string();
            p.abandon();
            return Err(Error::corrupt(shown, Some(self.pos), "the tar stream ended inside this file"));
        }
        for (_, l, rel, meta) in &self.files {
            if *l == 0 {
                self.b.write(rel, b"", Some(meta))?;
            }
        }
        Ok(())
    }
}
