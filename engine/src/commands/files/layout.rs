//! [`Layout`]: the files of a tar or directory snapshot, with where each
//! file's bytes live, for `ls`, `diff` and `restore --path`.

use std::io::Write;

use serde::Serialize;

use cairn_formats::repo::ChunkRef;

use crate::commands::restore::{range_end, refs_in_range, restore_entry, restore_range, RestoreSummary};
use crate::ids::Id;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::{FileKind, Snapshot};
use crate::sources::tar::MemberIndex;
use crate::{Error, Result};

/// One file of a snapshot, as `ls` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileInfo {
    /// Path relative to the snapshot's root, without `./` or a trailing `/`.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
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
    pub(super) nanos: u32,
    #[serde(skip)]
    pub(super) at: Location,
    /// The archive named it with a leading `/`.
    #[serde(skip)]
    pub(super) absolute: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Location {
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
    pub(super) tar_entry: Option<usize>,
    /// The tar entry's chunk list with offsets, read once when needed.
    pub(super) tar_refs: tokio::sync::OnceCell<Vec<(u64, ChunkRef)>>,
}

/// Strips `./`, leading and trailing slashes.
pub fn normalize(p: &str) -> String {
    let mut s = p;
    while let Some(r) = s.strip_prefix("./") {
        s = r;
    }
    s.trim_matches('/').to_string()
}

pub(super) fn selected(path: &str, want: Option<&str>) -> bool {
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
        if snapshot.source.kind == crate::sources::dir::KIND {
            return Ok(Self::of_dir(snapshot));
        }
        let Some(i) = snapshot.entries.iter().position(|e| e.members.is_some()) else {
            return Err(Error::InvalidInput(format!(
                "this {} snapshot has no file list: only tar snapshots (and streams recognised as tar) and directory snapshots have one",
                snapshot.source.kind
            )));
        };
        Self::load_tar(repo, index, snapshot, i).await
    }

    /// The files of a directory snapshot (its entries).
    pub(crate) fn of_dir(snapshot: Snapshot) -> Layout {
        let files = snapshot
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| FileInfo {
                path: if e.name == "." { String::new() } else { e.name.clone() },
                kind: e.kind,
                mode: e.mode,
                mtime: e.mtime,
                size: e.size,
                target: e.target.clone(),
                owner: e.owner.map(|(u, g)| (u64::from(u), u64::from(g))),
                nanos: e.mtime_nanos.unwrap_or(0),
                at: if e.kind == FileKind::File { Location::Entry(i) } else { Location::None },
                absolute: e.name.starts_with('/'),
            })
            .collect();
        Layout { snapshot, files, tar_entry: None, tar_refs: Default::default() }
    }

    /// The files of tar entry `i` of `snapshot` (from its member index).
    pub async fn load_tar(repo: &Repository, index: &LocalIndex, snapshot: Snapshot, i: usize) -> Result<Layout> {
        let e = &snapshot.entries[i];
        let m = e.members.as_ref().ok_or_else(|| {
            Error::InvalidInput(format!("entry {:?} has no member index (it was not stored as tar)", e.name))
        })?;
        let (_, bytes) =
            restore_entry(repo, index, &m.as_entry(&e.name), Vec::new(), 4, std::sync::Arc::default()).await?;
        let idx = MemberIndex::decode(&format!("member index of entry {:?}", e.name), &bytes)?;
        Ok(Self::of_members(snapshot, i, idx))
    }

    /// The files of tar entry `i` of `snapshot`, listed by `idx`.
    pub(crate) fn of_members(snapshot: Snapshot, i: usize, idx: MemberIndex) -> Layout {
        let files = idx
            .members
            .into_iter()
            .map(|m| FileInfo {
                absolute: m.path.starts_with('/'),
                path: normalize(&m.path),
                kind: m.kind,
                mode: m.mode,
                mtime: Some(m.mtime),
                size: m.size,
                target: m.link,
                owner: Some((m.uid, m.gid)),
                nanos: 0,
                at: if m.kind == FileKind::File { Location::Tar(m.data) } else { Location::None },
            })
            .collect();
        Layout { snapshot, files, tar_entry: Some(i), tar_refs: Default::default() }
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
    pub(super) async fn chunk_ids(
        &self,
        repo: &Repository,
        index: &LocalIndex,
        f: &FileInfo,
    ) -> Result<Vec<(Id, u32)>> {
        if f.size == 0 {
            return Ok(Vec::new());
        }
        let (e, start) = match f.at {
            Location::Tar(start) => {
                // Every member's chunks come from one list, read once.
                let e = &self.snapshot.entries[self.tar_entry.expect("tar layout")];
                let all = self.tar_refs.get_or_try_init(|| refs_in_range(repo, index, e, 0, e.size)).await?;
                let end = range_end(e, start, f.size)?;
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
