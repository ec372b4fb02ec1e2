//! Files inside snapshots: listing, diffing and extracting the members of
//! a tar snapshot or the entries of a directory snapshot.
//!
//! Both kinds are seen through one [`Layout`]: a list of [`FileInfo`] with
//! where each file's bytes live — a byte range of the tar stream (found in
//! the member index) or a directory entry's own content. Extracting one
//! file reads only the blobs that hold it.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use cairn_formats::repo::ChunkRef;

use crate::ids::Id;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::restore::{refs_in_range, restore_entry, restore_entry_to_path, restore_range, PartialFile, RestoreSummary};
use crate::snapshot::Snapshot;
use crate::tarstream::MemberIndex;
use crate::{Error, Result};

/// One file of a snapshot, as `ls` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileInfo {
    /// Path relative to the snapshot's root, without `./` or a trailing `/`.
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink`, …
    pub kind: String,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: Option<i64>,
    /// Bytes of content.
    pub size: u64,
    /// Link target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Owner and group ids, where recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<(u64, u64)>,
    #[serde(skip)]
    nanos: u32,
    #[serde(skip)]
    at: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    /// Bytes `start..start + size` of the tar entry.
    Tar(u64),
    /// A directory snapshot's entry, by position.
    Entry(usize),
    /// No content.
    None,
}

/// The files of one snapshot.
pub struct Layout {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Its files in snapshot order.
    pub files: Vec<FileInfo>,
    /// For a tar snapshot, which entry is the tar stream.
    tar_entry: Option<usize>,
    /// The tar entry's chunk list with offsets, read once when needed.
    tar_refs: tokio::sync::OnceCell<Vec<(u64, ChunkRef)>>,
}

/// Strips `./`, leading and trailing slashes.
pub fn normalize(p: &str) -> String {
    let mut s = p;
    while let Some(r) = s.strip_prefix("./") {
        s = r;
    }
    s.trim_matches('/').to_string()
}

fn selected(path: &str, want: Option<&str>) -> bool {
    match want {
        None => true,
        Some("") => true,
        Some(w) => path == w || path.strip_prefix(w).is_some_and(|r| r.starts_with('/')),
    }
}

impl Layout {
    /// Reads what is needed to list `snapshot`: nothing for a directory
    /// snapshot, the member index for a tar snapshot.
    pub async fn load(repo: &Repository, index: &LocalIndex, snapshot: Snapshot) -> Result<Layout> {
        if snapshot.source.kind == crate::dirsource::KIND {
            let files = snapshot
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| FileInfo {
                    path: if e.name == "." { String::new() } else { e.name.clone() },
                    kind: e.kind.clone(),
                    mode: e.mode,
                    mtime: e.mtime,
                    size: e.size,
                    target: e.target.clone(),
                    owner: e.owner.map(|(u, g)| (u64::from(u), u64::from(g))),
                    nanos: e.mtime_nanos.unwrap_or(0),
                    at: if e.kind == "file" { Location::Entry(i) } else { Location::None },
                })
                .collect();
            return Ok(Layout { snapshot, files, tar_entry: None, tar_refs: Default::default() });
        }
        let Some(i) = snapshot.entries.iter().position(|e| e.members.is_some()) else {
            return Err(Error::Config(format!(
                "this {} snapshot has no file list: only tar snapshots (backed up with --kind tar, or a stream \
                 recognised as tar) and directory snapshots have one",
                snapshot.source.kind
            )));
        };
        Self::load_tar(repo, index, snapshot, i).await
    }

    /// The files of tar entry `i` of `snapshot` (from its member index).
    pub async fn load_tar(repo: &Repository, index: &LocalIndex, snapshot: Snapshot, i: usize) -> Result<Layout> {
        let e = &snapshot.entries[i];
        let m = e.members.as_ref().ok_or_else(|| {
            Error::Config(format!("entry {:?} has no member index (it was not stored as tar)", e.name))
        })?;
        let (_, bytes) =
            restore_entry(repo, index, &m.as_entry(&e.name), Vec::new(), 4, std::sync::Arc::default()).await?;
        let idx = MemberIndex::decode(&format!("member index of entry {:?}", e.name), &bytes)?;
        let files = idx
            .members
            .into_iter()
            .map(|m| FileInfo {
                path: normalize(&m.path),
                kind: m.kind.clone(),
                mode: m.mode,
                mtime: Some(m.mtime),
                size: m.size,
                target: m.link,
                owner: Some((m.uid, m.gid)),
                nanos: 0,
                at: if m.kind == "file" { Location::Tar(m.data) } else { Location::None },
            })
            .collect();
        Ok(Layout { snapshot, files, tar_entry: Some(i), tar_refs: Default::default() })
    }

    /// Files at or under `path` (all with `None`).
    pub fn list(&self, path: Option<&str>) -> Vec<&FileInfo> {
        let want = path.map(normalize);
        self.files.iter().filter(|f| selected(&f.path, want.as_deref())).collect()
    }

    /// Writes one file's bytes to `out` (a directory entry is held in
    /// memory on the way: extraction streams those to disk instead).
    pub async fn read_file<W: Write>(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        f: &FileInfo,
        out: &mut W,
    ) -> Result<RestoreSummary> {
        match f.at {
            Location::Tar(start) => {
                let e = &self.snapshot.entries[self.tar_entry.expect("tar layout")];
                restore_range(repo, index, e, start, f.size, out, 8).await
            }
            Location::Entry(i) => {
                let e = &self.snapshot.entries[i];
                let (s, buf) = restore_entry(repo, index, e, Vec::new(), 8, std::sync::Arc::default()).await?;
                out.write_all(&buf).map_err(|e| Error::io("<restore output>", e))?;
                Ok(s)
            }
            Location::None => Ok(RestoreSummary::default()),
        }
    }

    /// The chunks (id, length) holding one file's bytes, in order.
    async fn chunk_ids(&self, repo: &Repository, index: &LocalIndex, f: &FileInfo) -> Result<Vec<(Id, u32)>> {
        if f.size == 0 {
            return Ok(Vec::new());
        }
        let (e, start) = match f.at {
            Location::Tar(start) => {
                // Every member's chunks come from one list, read once.
                let e = &self.snapshot.entries[self.tar_entry.expect("tar layout")];
                let all = self.tar_refs.get_or_try_init(|| refs_in_range(repo, index, e, 0, e.size)).await?;
                let end = start + f.size;
                let first = all.partition_point(|(at, r)| at + u64::from(r.len) <= start);
                return Ok(all[first..]
                    .iter()
                    .take_while(|(at, _)| *at < end)
                    .map(|(_, r)| (Id(r.id), r.len))
                    .collect());
            }
            Location::Entry(i) => (&self.snapshot.entries[i], 0),
            Location::None => return Ok(Vec::new()),
        };
        Ok(refs_in_range(repo, index, e, start, start + f.size)
            .await?
            .into_iter()
            .map(|(_, r)| (Id(r.id), r.len))
            .collect())
    }
}

/// Joins an archive path under `root`, refusing absolute paths and `..`.
pub fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => return Err(Error::Config(format!("refusing to extract {rel:?}: it leaves the target directory"))),
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
            for f in chosen.iter().filter(|f| f.kind == "dir") {
                let dest = safe_join(to, &f.path)?;
                std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
            }
            let mut files = Vec::new();
            for f in chosen.iter().filter(|f| f.kind == "file") {
                let Location::Tar(start) = f.at else { continue };
                files.push((start, f.size, safe_join(to, &f.path)?));
            }
            files.sort_by_key(|(s, _, _)| *s);
            let e = &self.snapshot.entries[self.tar_entry.expect("tar layout")];
            let demux = Demux { files, next: 0, pos: 0, cur: None };
            let (s, d) = restore_entry(repo, index, e, demux, 8, std::sync::Arc::default()).await?;
            d.finish()?;
            sum.bytes_written += chosen.iter().filter(|f| f.kind == "file").map(|f| f.size).sum::<u64>();
            sum.bytes_fetched += s.bytes_fetched;
            sum.requests += s.requests;
        }
        for f in &chosen {
            let dest = safe_join(to, &f.path)?;
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            match f.kind.as_str() {
                "dir" => {
                    std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
                    dirs.push((dest, *f));
                }
                "symlink" => {
                    let t = f.target.as_deref().unwrap_or_default();
                    let _ = std::fs::remove_file(&dest);
                    std::os::unix::fs::symlink(t, &dest).map_err(|e| Error::io(&dest, e))?;
                    set_times_and_mode(&dest, f, true)?;
                }
                "hardlink" => {
                    let t = normalize(f.target.as_deref().unwrap_or_default());
                    let _ = std::fs::remove_file(&dest);
                    if done.contains(t.as_str()) {
                        let src = safe_join(to, &t)?;
                        std::fs::hard_link(&src, &dest).map_err(|e| Error::io(&dest, e))?;
                    } else if let Some(orig) = self.files.iter().find(|x| x.path == t && x.kind == "file") {
                        // The link's target was not chosen: give this name its bytes.
                        let mut as_file = orig.clone();
                        as_file.path = f.path.clone();
                        self.write_file(repo, index, &as_file, &dest, &mut sum).await?;
                    } else {
                        return Err(Error::NotFound { what: format!("hard link target {t:?} of {:?}", f.path) });
                    }
                }
                "file" if streamed => set_times_and_mode(&dest, f, false)?,
                "file" => self.write_file(repo, index, f, &dest, &mut sum).await?,
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

/// One difference between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Path.
    pub path: String,
    /// `added`, `removed`, `changed` (content) or `metadata` (mode, mtime,
    /// owner or link target only).
    pub change: &'static str,
    /// Size in the first snapshot.
    pub size_a: Option<u64>,
    /// Size in the second snapshot.
    pub size_b: Option<u64>,
    /// Bytes of the second snapshot's content that are in no chunk of the
    /// first snapshot (what storing the change cost before compression).
    pub new_bytes: u64,
}

/// Differences between two snapshots' files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// Each difference, by path.
    pub changes: Vec<Change>,
    /// Counts.
    pub added: u64,
    /// Files only in the first snapshot.
    pub removed: u64,
    /// Files whose content differs.
    pub changed: u64,
    /// Files whose metadata alone differs.
    pub metadata: u64,
    /// Sum of `new_bytes`.
    pub new_bytes: u64,
}

/// Compares two snapshots file by file. Content is compared by chunk ids
/// (tar members smaller than the minimum chunk, which share chunks with
/// their neighbours, are read and compared byte for byte).
pub async fn diff(repo: &Repository, index: &LocalIndex, a: &Layout, b: &Layout) -> Result<DiffReport> {
    let old: HashMap<&str, &FileInfo> = a.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let new_paths: HashSet<&str> = b.files.iter().map(|f| f.path.as_str()).collect();
    let mut known: HashSet<Id> = HashSet::new();
    for f in &a.files {
        known.extend(a.chunk_ids(repo, index, f).await?.into_iter().map(|(id, _)| id));
    }
    let mut r = DiffReport::default();
    for f in &b.files {
        // Bytes of the file's chunks that the first snapshot lacks (at most
        // the file's size: a chunk shared with a neighbour counts once).
        let new_bytes = |ids: &[(Id, u32)], size: u64| {
            ids.iter().filter(|(i, _)| !known.contains(i)).map(|(_, l)| u64::from(*l)).sum::<u64>().min(size)
        };
        match old.get(f.path.as_str()) {
            None => {
                let ids = b.chunk_ids(repo, index, f).await?;
                let nb = new_bytes(&ids, f.size);
                r.changes.push(Change {
                    path: f.path.clone(),
                    change: "added",
                    size_a: None,
                    size_b: Some(f.size),
                    new_bytes: nb,
                });
            }
            Some(o) => {
                let same_content = o.kind == f.kind
                    && o.size == f.size
                    && o.target == f.target
                    && same_bytes(repo, index, a, o, b, f).await?;
                if !same_content {
                    let ids = b.chunk_ids(repo, index, f).await?;
                    let nb = new_bytes(&ids, f.size);
                    r.changes.push(Change {
                        path: f.path.clone(),
                        change: "changed",
                        size_a: Some(o.size),
                        size_b: Some(f.size),
                        new_bytes: nb,
                    });
                } else if o.mode != f.mode || o.mtime != f.mtime || o.owner != f.owner {
                    r.changes.push(Change {
                        path: f.path.clone(),
                        change: "metadata",
                        size_a: Some(o.size),
                        size_b: Some(f.size),
                        new_bytes: 0,
                    });
                }
            }
        }
    }
    for f in &a.files {
        if !new_paths.contains(f.path.as_str()) {
            r.changes.push(Change {
                path: f.path.clone(),
                change: "removed",
                size_a: Some(f.size),
                size_b: None,
                new_bytes: 0,
            });
        }
    }
    r.changes.sort_by(|x, y| x.path.cmp(&y.path));
    for c in &r.changes {
        match c.change {
            "added" => r.added += 1,
            "removed" => r.removed += 1,
            "changed" => r.changed += 1,
            _ => r.metadata += 1,
        }
        r.new_bytes += c.new_bytes;
    }
    Ok(r)
}

async fn same_bytes(
    repo: &Repository,
    index: &LocalIndex,
    a: &Layout,
    fa: &FileInfo,
    b: &Layout,
    fb: &FileInfo,
) -> Result<bool> {
    if fa.at == Location::None || fb.at == Location::None {
        return Ok(fa.at == fb.at);
    }
    if let (Location::Entry(i), Location::Entry(j)) = (&fa.at, &fb.at) {
        return Ok(a.snapshot.entries[*i].blake3 == b.snapshot.entries[*j].blake3);
    }
    // A member of at least the minimum chunk size has chunks of its own
    // (forced cuts), so equal chunk lists mean equal bytes. A smaller one
    // may share chunks with its neighbours, which can change while it does
    // not: compare its bytes.
    if fa.size >= u64::from(repo.config().chunker.min_size) {
        let (ia, ib) = (a.chunk_ids(repo, index, fa).await?, b.chunk_ids(repo, index, fb).await?);
        return Ok(ia == ib);
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    a.read_file(repo, index, fa, &mut x).await?;
    b.read_file(repo, index, fb, &mut y).await?;
    Ok(x == y)
}
