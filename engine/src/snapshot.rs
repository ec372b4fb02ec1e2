//! Snapshot manifests: what was backed up, and the trees that rebuild it.

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::ids::{SnapshotId, TreeId};
use crate::repo::{ObjectKind, Repository};
use crate::repofile::{ObjectKey, RepoFile};
use crate::{Error, Result};

/// Version of the snapshot manifest JSON.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A reference to one tree blob and what it covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeRef {
    /// The tree blob (64 hex digits in the manifest).
    pub tree: TreeId,
    /// Chunk references in the tree.
    pub chunks: u64,
    /// Plaintext bytes those chunks hold.
    pub bytes: u64,
}

/// What an entry or a tar member is. Stored as its lower-case name;
/// a name this build does not know reads as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A regular file, or a stream.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (its target in `target`).
    Symlink,
    /// Another name of a file stored earlier (its path in `target`).
    Hardlink,
    /// A character device (tar only; not extracted).
    Char,
    /// A block device (tar only; not extracted).
    Block,
    /// A FIFO (tar only; not extracted).
    Fifo,
    /// Anything else.
    #[serde(other)]
    Other,
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: `ls` aligns kinds in a column.
        f.pad(match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Hardlink => "hardlink",
            FileKind::Char => "char",
            FileKind::Block => "block",
            FileKind::Fifo => "fifo",
            FileKind::Other => "other",
        })
    }
}

/// One entry of a snapshot (a plain stream has exactly one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Name inside the snapshot (e.g. `stdin`, `base.tar`).
    pub name: String,
    /// `file` for streams.
    pub kind: FileKind,
    /// Unix mode bits.
    pub mode: u32,
    /// Modification time (Unix seconds), where the source had one.
    pub mtime: Option<i64>,
    /// Plaintext size.
    pub size: u64,
    /// Plain BLAKE3 of the content (comparable with `b3sum`).
    pub blake3: String,
    /// The content, in order.
    pub content: Vec<TreeRef>,
    /// Sub-second part of `mtime` (directory snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_nanos: Option<u32>,
    /// Owner and group ids (directory snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<(u32, u32)>,
    /// Symlink target, or for a `hardlink` entry the path of the entry it
    /// links to (earlier in the same snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What the files cache compares (inode, ctime seconds and nanos) to
    /// decide that a file is unchanged without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<FileStat>,
    /// For a tar stream: the member index (path → byte range), stored as
    /// a JSON document of its own (see `MemberIndex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MembersRef>,
}

impl Entry {
    /// An entry with no content yet (the pipeline fills in content, size
    /// and hash).
    pub fn new(name: impl Into<String>, kind: FileKind, mode: u32, mtime: Option<i64>) -> Entry {
        Entry {
            name: name.into(),
            kind,
            mode,
            mtime,
            size: 0,
            blake3: String::new(),
            content: Vec::new(),
            mtime_nanos: None,
            owner: None,
            target: None,
            stat: None,
            members: None,
        }
    }
}

/// Change-detection facts of a file, for the files cache.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileStat {
    /// Device id.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Status change time, seconds.
    pub ctime: i64,
    /// Status change time, nanoseconds.
    pub ctime_nanos: u32,
}

/// Where a tar entry's member index is stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MembersRef {
    /// Members listed.
    pub count: u64,
    /// Bytes of the encoded index.
    pub size: u64,
    /// Plain BLAKE3 of the encoded index.
    pub blake3: String,
    /// The encoded index's chunks.
    pub content: Vec<TreeRef>,
}

impl MembersRef {
    /// The index as an [`Entry`], so the ordinary restore pipeline reads it.
    pub fn as_entry(&self, of: &str) -> Entry {
        let mut e = Entry::new(format!("{of} (member index)"), FileKind::File, 0o600, None);
        e.size = self.size;
        e.blake3 = self.blake3.clone();
        e.content = self.content.clone();
        e
    }
}

/// Where a snapshot came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceInfo {
    /// `stream`, and later `pg-base`, `redis-rdb`, `tar`, `dir`.
    pub kind: String,
    /// A name that groups snapshots of the same thing (`--source`).
    pub name: String,
    /// The producer command line, when one was run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

/// Counters recorded when the snapshot was taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackupStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Chunks cut.
    pub chunks: u64,
    /// Chunks not already in the repository.
    pub new_chunks: u64,
    /// Plaintext bytes of those new chunks.
    pub new_bytes: u64,
    /// Bytes written to storage (packs, index segments).
    pub uploaded_bytes: u64,
    /// Packs written.
    pub packs: u64,
    /// Wall time in seconds.
    pub duration_s: f64,
}

/// A snapshot manifest (`snapshots/<id>`, sealed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Always `SNAPSHOT_VERSION`.
    pub version: u32,
    /// When the backup started (RFC 3339, UTC).
    pub time: String,
    /// Host that took it.
    pub host: String,
    /// Source.
    pub source: SourceInfo,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Kind-specific metadata (e.g. PostgreSQL LSNs); empty for streams.
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// Content.
    pub entries: Vec<Entry>,
    /// Counters.
    pub stats: BackupStats,
    /// The garbage-collection lease the writer held when it committed
    /// (`leases/<id>`): a later GC withdraws a snapshot that references a
    /// swept pack only when its lease was broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// The snapshot (hex id) of another repository that `cairn copy`
    /// re-sealed this one from; absent otherwise (a byte-for-byte copy
    /// keeps the source's id instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<String>,
}

impl RepoFile for Snapshot {
    const VERSION: u32 = SNAPSHOT_VERSION;
    type Id = SnapshotId;
    fn key(id: &SnapshotId) -> ObjectKey {
        ObjectKey::Snapshot(*id)
    }
}

impl Snapshot {
    /// Whether this snapshot restores as a tree of files (a directory
    /// snapshot) rather than as one stream per entry. One file or subtree
    /// of a tar snapshot also restores as files, by path.
    pub fn is_file_tree(&self) -> bool {
        self.source.kind == crate::sources::dir::KIND
    }

    /// Seals and stores the manifest; returns its id.
    pub async fn save(&self, repo: &Repository) -> Result<SnapshotId> {
        repo.put_object(ObjectKind::Snapshot, &self.encode()).await.map(SnapshotId)
    }

    /// Loads one manifest.
    pub async fn load(repo: &Repository, id: &SnapshotId) -> Result<Snapshot> {
        let plain = repo.get_object(ObjectKind::Snapshot, &id.0).await?;
        Self::decode(&Self::key(id).to_string(), &plain)
    }

    /// The id of every manifest in the store, unread.
    pub async fn ids(repo: &Repository) -> Result<Vec<SnapshotId>> {
        Ok(repo.list_ids(ObjectKind::Snapshot).await?.into_iter().map(|(id, _)| SnapshotId(id)).collect())
    }

    /// Loads every manifest, oldest first.
    pub async fn list(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let mut all: Vec<(SnapshotId, Snapshot)> = futures::stream::iter(Self::ids(repo).await?)
            .map(|id| async move { Ok::<_, Error>((id, Snapshot::load(repo, &id).await?)) })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(all)
    }

    /// Resolves `latest` or an id prefix (at least 4 hex characters),
    /// optionally among snapshots of one source. A prefix loads only the
    /// snapshot it names, so one unreadable manifest does not block others.
    pub async fn resolve(repo: &Repository, spec: &str, source: Option<&str>) -> Result<(SnapshotId, Snapshot)> {
        Self::resolve_kind(repo, spec, source, None).await
    }

    /// [`Snapshot::resolve`] among snapshots of one source kind
    /// (`redis-rdb`, …); a prefix naming another kind is refused.
    pub async fn resolve_kind(
        repo: &Repository,
        spec: &str,
        source: Option<&str>,
        kind: Option<&str>,
    ) -> Result<(SnapshotId, Snapshot)> {
        let wanted =
            |s: &Snapshot| source.is_none_or(|n| s.source.name == n) && kind.is_none_or(|k| s.source.kind == k);
        if spec == "latest" {
            let all = Self::list(repo).await?;
            return all.into_iter().rfind(|(_, s)| wanted(s)).ok_or_else(|| Error::NotFound {
                what: format!(
                    "a {}snapshot{}",
                    kind.map(|k| format!("{k} ")).unwrap_or_default(),
                    source.map(|n| format!(" of source {n:?}")).unwrap_or_default()
                ),
            });
        }
        if spec.len() < 4 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "{spec:?} is neither `latest` nor a snapshot id prefix (4+ hex digits)"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let hits: Vec<SnapshotId> =
            Self::ids(repo).await?.into_iter().filter(|id| id.to_hex().starts_with(&spec)).collect();
        match hits.as_slice() {
            [] => Err(Error::NotFound { what: format!("snapshot {spec}") }),
            [id] => {
                let snap = Snapshot::load(repo, id).await?;
                if !wanted(&snap) {
                    return Err(Error::NotFound {
                        what: format!(
                            "snapshot {spec} of {} (it is a {} snapshot of {:?})",
                            [kind.map(|k| format!("kind {k}")), source.map(|n| format!("source {n:?}"))]
                                .into_iter()
                                .flatten()
                                .collect::<Vec<_>>()
                                .join(" and "),
                            snap.source.kind,
                            snap.source.name
                        ),
                    });
                }
                Ok((*id, snap))
            }
            _ => Err(Error::InvalidInput(format!("snapshot prefix {spec} is ambiguous ({} matches)", hits.len()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_kinds_keep_their_names_and_pad() {
        for (k, name) in [(FileKind::File, "file"), (FileKind::Dir, "dir"), (FileKind::Hardlink, "hardlink")] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("{name:?}"));
            assert_eq!(k.to_string(), name);
        }
        assert_eq!(serde_json::from_str::<FileKind>("\"socket\"").unwrap(), FileKind::Other);
        assert_eq!(format!("{:<8}|", FileKind::Dir), "dir     |", "ls aligns kinds in a column");
    }
}
