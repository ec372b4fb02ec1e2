//! Tar-aware chunking and the member index of a tar snapshot.
//!
//! A tar stream is fed to [`TarParser`] as the chunker reads it. For every
//! member whose data is at least one minimum chunk long, the chunker is
//! told to cut where the data starts and where it ends, so that member's
//! content chunks exactly as it would on its own, wherever it sits in the
//! archive: a file inserted at the front of an archive, or a member that
//! moved, costs only its own bytes. Smaller members (and the headers
//! between members) are left to FastCDC: forcing cuts around every small
//! file would multiply the per-chunk overhead on archives of many small
//! files without helping dedup, which FastCDC already resynchronises.
//!
//! # Relation files
//! PostgreSQL never shifts bytes inside a relation file: it rewrites 8 KiB
//! pages in place. Content-defined chunks of ~1 MiB all change when updates
//! land a few pages apart, so in a base backup ([`TarMode::Pg`]) a relation
//! file's data is cut every [`RELATION_CHUNK`] bytes from its start instead,
//! and a changed page costs one such chunk. The member index records it
//! (`fixed_chunks`); restores read chunks alike either way.
//!
//! The size was chosen by measurement (`benches/peers/pgbase.py --scale 50
//! --pgbackrest-process-max 2`, one run per size, 808 MB database; the
//! second backup follows `pgbench -c 2 -t 2000`, after which pgBackRest's
//! incremental stored 34.9 MB):
//!
//! | chunk | 1st upload | 2nd upload | restore | backup CPU |
//! |---|---|---|---|---|
//! | 8 KiB | 83.6 MB | 14.0 MB | 4.77 s | 3.92 s |
//! | 16 KiB | 60.3 MB | 15.9 MB | 4.16 s | 3.27 s |
//! | 32 KiB | 47.7 MB | 20.2 MB | 3.36 s | 2.96 s |
//! | 64 KiB | 41.2 MB | 25.0 MB | 3.19 s | 2.77 s |
//! | 128 KiB | 38.6 MB | 29.4 MB | 3.19 s | 2.45 s |
//! | FastCDC, 1 MiB (before) | 34.8 MB | 36.6 MB | 3.42 s | 3.06 s |
//!
//! Each chunk is compressed on its own, and pgbench's pages compress about
//! 20-fold only together: below 64 KiB the first backup grows fast and the
//! restore slows, for a second backup that shrinks slowly.
//!
//! The members (path, kind, mode, mtime, size, owner, link target, header
//! and data offsets) are kept as the stream passes and stored after it as
//! a JSON document of their own ([`MemberIndex`]), so one file can be
//! listed, diffed or restored without reading the rest of the archive.

use std::collections::VecDeque;

use cairn_formats::tar::{EntryKind, TarEvent, TarParser};
use serde::{Deserialize, Serialize};

use crate::chunker::{ChunkerParams, CutHints};
use crate::snapshot::FileKind;
use crate::{Error, Result};

/// Version of the member index JSON.
pub const MEMBER_INDEX_VERSION: u32 = 1;

/// Whether a stream is treated as tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarMode {
    /// Never.
    Off,
    /// When the first block has a ustar magic and a valid checksum; a
    /// stream that later turns out not to parse falls back to plain
    /// chunking (it is still stored byte-exact).
    Detect,
    /// Always: a stream that is not a well-formed tar fails the backup.
    Require,
    /// Always, and the tar is a PostgreSQL base backup: its relation files
    /// (numbered file nodes, their forks and segments, in database
    /// directories and `global/`) of at least the chunker's minimum size
    /// are cut into 64 KiB chunks at fixed offsets from the file's start
    /// instead of content-defined ones.
    Pg,
}

/// The size of the fixed chunks of PostgreSQL relation files: a multiple of
/// every page size PostgreSQL can be built with (at most 32 KiB), so every
/// cut falls on a page boundary.
pub(crate) const RELATION_CHUNK: u64 = 64 << 10;

/// Whether `path` (as a base backup's tar names it) is a relation file: a
/// numeric file node, optionally with a fork suffix (`_fsm`, `_vm`,
/// `_init`) and a segment number (`.1`, `.2`, …), in a database directory
/// (`base/<oid>/`, a tablespace's `<version dir>/<oid>/`) or in `global/`.
pub(crate) fn is_relation_file(path: &str) -> bool {
    let mut parts = path.trim_start_matches("./").rsplit('/');
    let (Some(name), Some(dir)) = (parts.next(), parts.next()) else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (stem, segment) = match name.split_once('.') {
        Some((stem, seg)) => (stem, Some(seg)),
        None => (name, None),
    };
    let node = ["_fsm", "_vm", "_init"].iter().find_map(|f| stem.strip_suffix(f)).unwrap_or(stem);
    digits(node) && segment.is_none_or(digits) && (digits(dir) || dir == "global")
}

/// One member in the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// Path as stored in the archive (invalid UTF-8 replaced).
    pub path: String,
    /// What the member is.
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Owner and group ids.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Data bytes (the size field).
    pub size: u64,
    /// Stream offset of the member's first header block.
    pub header: u64,
    /// Stream offset of its first data byte.
    pub data: u64,
    /// Link target of symlinks and hard links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Set when the data was cut into chunks of this many bytes at fixed
    /// offsets from its start (PostgreSQL relation files); content-defined
    /// chunks otherwise. Restores do not need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_chunks: Option<u64>,
}

/// The member index of one tar entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberIndex {
    /// Always [`MEMBER_INDEX_VERSION`].
    pub version: u32,
    /// Members in archive order.
    pub members: Vec<Member>,
}

impl MemberIndex {
    /// Encodes the index.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("member index serializes")
    }

    /// Decodes an index read back from `object` (for error messages).
    pub fn decode(object: &str, bytes: &[u8]) -> Result<MemberIndex> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(object, None, format!("member index is not JSON: {e}")))?;
        let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
        if version != u64::from(MEMBER_INDEX_VERSION) {
            return Err(Error::UnsupportedVersion {
                object: object.into(),
                got: version,
                known: MEMBER_INDEX_VERSION.into(),
            });
        }
        serde_json::from_value(v).map_err(|e| Error::corrupt(object, None, format!("member index field: {e}")))
    }
}

fn kind_of(k: EntryKind) -> FileKind {
    match k {
        EntryKind::File => FileKind::File,
        EntryKind::HardLink => FileKind::Hardlink,
        EntryKind::Symlink => FileKind::Symlink,
        EntryKind::CharDevice => FileKind::Char,
        EntryKind::BlockDevice => FileKind::Block,
        EntryKind::Directory => FileKind::Dir,
        EntryKind::Fifo => FileKind::Fifo,
        EntryKind::Other(_) => FileKind::Other,
    }
}

/// How a stream that is not plain tar looked at its start.
fn compressed_magic(first: &[u8]) -> Option<&'static str> {
    match first {
        [0x1f, 0x8b, ..] => Some("gzip"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        [b'B', b'Z', b'h', ..] => Some("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some("xz"),
        _ => None,
    }
}

/// Whether a 512-byte block is a ustar/GNU header with a valid checksum.
fn looks_like_tar(block: &[u8]) -> bool {
    if block.len() < 512 || &block[257..262] != b"ustar" {
        return false;
    }
    let stored = std::str::from_utf8(&block[148..156]).ok().map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '));
    let Some(stored) = stored.and_then(|s| u32::from_str_radix(s, 8).ok()) else {
        return false;
    };
    let sum: u32 =
        block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
    sum == stored
}

/// [`CutHints`] from a tar stream, and the members seen.
pub struct TarHints {
    mode: TarMode,
    min_member: u64,
    /// Whether relation files get fixed cuts ([`TarMode::Pg`]).
    fixed_cuts: bool,
    /// The first bytes, until there are enough to decide.
    head: Vec<u8>,
    decided: bool,
    parser: Option<TarParser>,
    cuts: VecDeque<u64>,
    /// Data ranges cut at fixed offsets: each piece between two cuts in
    /// them is one chunk.
    fixed: VecDeque<(u64, u64)>,
    members: Vec<Member>,
    compressed: Option<&'static str>,
    fell_back: Option<String>,
}

impl TarHints {
    /// Hints for `mode` and the chunker's `params`: members with at least
    /// `min_size` data bytes are cut around. Relation files get fixed cuts
    /// only when a fixed chunk fits in `max_size` (it always does through
    /// the CLI): a larger one would be chunked by content after all, and
    /// differently depending on where the reads fall.
    pub fn new(mode: TarMode, params: ChunkerParams) -> TarHints {
        TarHints {
            mode,
            min_member: u64::from(params.min_size),
            fixed_cuts: mode == TarMode::Pg && RELATION_CHUNK <= u64::from(params.max_size),
            head: Vec::new(),
            decided: mode == TarMode::Off,
            parser: None,
            cuts: VecDeque::new(),
            fixed: VecDeque::new(),
            members: Vec::new(),
            compressed: None,
            fell_back: None,
        }
    }

    /// Whether the stream is being chunked as tar.
    pub fn is_tar(&self) -> bool {
        self.parser.is_some()
    }

    /// The member index, once the stream has ended (`None` if it was not tar).
    pub fn into_index(self) -> Option<MemberIndex> {
        self.parser.map(|_| MemberIndex { version: MEMBER_INDEX_VERSION, members: self.members })
    }

    /// What was learnt, for the snapshot metadata.
    pub fn metadata(&self) -> Option<serde_json::Value> {
        if let Some(c) = self.compressed {
            return Some(serde_json::json!({ "compressed": c }));
        }
        if let Some(why) = &self.fell_back {
            return Some(serde_json::json!({ "tar": { "chunked_as_tar": false, "why": why } }));
        }
        self.parser.as_ref().map(|_| serde_json::json!({ "tar": { "members": self.members.len() } }))
    }

    fn fail(&mut self, offset: u64, detail: String) -> Result<()> {
        if self.mode != TarMode::Detect {
            return Err(Error::Input {
                offset,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a valid tar stream: {detail}"),
                ),
            });
        }
        tracing::warn!("stream stops parsing as tar ({detail}); the rest is chunked as plain bytes");
        self.parser = None;
        self.cuts.clear();
        self.fixed.clear();
        self.members.clear();
        self.fell_back = Some(detail);
        Ok(())
    }

    fn feed(&mut self, data: &[u8]) -> Result<()> {
        let Some(p) = self.parser.as_mut() else { return Ok(()) };
        match p.feed(data) {
            Ok(events) => {
                for ev in events {
                    if let TarEvent::Member(m) = ev {
                        let path = m.path_lossy().into_owned();
                        let mut fixed_chunks = None;
                        if m.data_len >= self.min_member {
                            let (start, end) = (m.data_start, m.data_start + m.data_len);
                            self.cuts.push_back(start);
                            if self.fixed_cuts && m.kind == EntryKind::File && is_relation_file(&path) {
                                self.cuts.extend((start + RELATION_CHUNK..end).step_by(RELATION_CHUNK as usize));
                                self.fixed.push_back((start, end));
                                fixed_chunks = Some(RELATION_CHUNK);
                            }
                            self.cuts.push_back(end);
                        }
                        self.members.push(Member {
                            path,
                            kind: kind_of(m.kind),
                            mode: m.mode,
                            mtime: m.mtime,
                            uid: m.uid,
                            gid: m.gid,
                            size: m.data_len,
                            header: m.header_offset,
                            data: m.data_start,
                            link: m.link_target.as_deref().map(|t| String::from_utf8_lossy(t).into_owned()),
                            fixed_chunks,
                        });
                    }
                }
                Ok(())
            }
            Err(e) => {
                let at = p.offset();
                self.fail(at, e.to_string())
            }
        }
    }
}

impl CutHints for TarHints {
    fn observe(&mut self, _offset: u64, data: &[u8]) -> Result<()> {
        if self.decided {
            return self.feed(data);
        }
        let want = 512 - self.head.len().min(512);
        self.head.extend_from_slice(&data[..want.min(data.len())]);
        if self.head.len() < 512 {
            return Ok(());
        }
        self.decide()?;
        self.feed(&data[want..])
    }

    fn next_cut_after(&mut self, pos: u64) -> Option<u64> {
        while self.cuts.front().is_some_and(|&c| c <= pos) {
            self.cuts.pop_front();
        }
        self.cuts.front().copied()
    }

    fn whole_until_cut(&mut self, pos: u64) -> bool {
        while self.fixed.front().is_some_and(|&(_, end)| end <= pos) {
            self.fixed.pop_front();
        }
        self.fixed.front().is_some_and(|&(start, _)| start <= pos)
    }

    fn end(&mut self, offset: u64) -> Result<()> {
        if !self.decided {
            self.decide()?;
        }
        let Some(p) = self.parser.as_ref() else { return Ok(()) };
        if let Err(e) = p.finish() {
            self.fail(offset, e.to_string())?;
        }
        Ok(())
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

impl TarHints {
    /// Looks at the first block (or all of a shorter stream) and starts
    /// parsing if it is tar.
    fn decide(&mut self) -> Result<()> {
        self.decided = true;
        let head = std::mem::take(&mut self.head);
        if looks_like_tar(&head) {
            self.parser = Some(TarParser::new());
            return self.feed(&head);
        }
        self.compressed = compressed_magic(&head);
        if let Some(c) = self.compressed {
            tracing::warn!(
                "the stream is {c}-compressed: it is stored byte-exact, but compressed bytes deduplicate poorly \
                 across versions; back up the uncompressed tar instead"
            );
        }
        if self.mode != TarMode::Detect && self.compressed.is_none() {
            return Err(Error::Input {
                offset: 0,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a tar stream: the first block is not a ustar header with a valid checksum",
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::tests::pseudo_random;
    use crate::chunker::StreamChunker;
    use std::process::Command;

    #[test]
    fn relation_files_are_told_from_the_rest_of_a_data_directory() {
        for p in [
            "base/16384/16385",
            "./base/1/1259_fsm",
            "base/5/2619_vm",
            "base/16384/16385_init",
            "base/5/16390.1",
            "base/5/16390_vm.12",
            "global/1262",
            "PG_15_202209061/16384/16400",
        ] {
            assert!(is_relation_file(p), "{p}");
        }
        for p in [
            "global/pg_control",
            "global/pg_filenode.map",
            "base/16384/pg_filenode.map",
            "base/16384/PG_VERSION",
            "PG_VERSION",
            "16385",
            "pg_wal/000000010000000000000001",
            "pg_xact/0000",
            "base/16384/t3_16400",
            "base/abc/123",
            "base/16384/16385.",
            "base/16384/16385_xyz",
            "base/16384/_fsm",
        ] {
            assert!(!is_relation_file(p), "{p}");
        }
    }

    /// A base backup's tar, written by GNU tar: a relation file of 18 chunks
    /// and 5 pages, a shared catalog's segment, and files that are not
    /// relations.
    fn data_directory_tar() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let files: [(&str, usize); 4] = [
            ("base/16384/16385", 18 * (64 << 10) + 5 * 8192),
            ("global/1262.1", 300 << 10),
            ("pg_xact/0000", 700 << 10),
            ("backup_label", 200),
        ];
        for (i, (name, len)) in files.iter().enumerate() {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, pseudo_random(*len, 7 + i as u64)).unwrap();
        }
        let out = dir.path().join("base.tar");
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        let s = Command::new("tar").arg("-cf").arg(&out).arg("-C").arg(dir.path()).args(&names).status().unwrap();
        assert!(s.success(), "GNU tar failed");
        std::fs::read(out).unwrap()
    }

    /// Chunk boundaries (stream offsets) and the member index of `tar`.
    fn chunk(tar: &[u8], mode: TarMode, params: ChunkerParams) -> (Vec<u64>, MemberIndex) {
        let hints = TarHints::new(mode, params);
        let mut ch = StreamChunker::new(tar, params, 42).with_hints(Box::new(hints));
        let mut cuts = Vec::new();
        let mut at = 0u64;
        loop {
            let batch = ch.next_batch(8 << 20).unwrap();
            if batch.is_empty() {
                break;
            }
            for c in batch {
                at += c.len() as u64;
                cuts.push(at);
            }
        }
        assert_eq!(at, tar.len() as u64);
        let hints = ch.take_hints().unwrap().into_any().downcast::<TarHints>().unwrap();
        (cuts, hints.into_index().unwrap())
    }

    #[test]
    fn relation_files_are_cut_on_page_boundaries_from_their_start() {
        let tar = data_directory_tar();
        let small = ChunkerParams { min_size: 16 << 10, avg_size: 64 << 10, max_size: 256 << 10 };
        for params in [ChunkerParams::default(), small] {
            let (cuts, index) = chunk(&tar, TarMode::Pg, params);
            for m in &index.members {
                let inside: Vec<u64> =
                    cuts.iter().filter(|&&c| c > m.data && c < m.data + m.size).map(|&c| c - m.data).collect();
                if is_relation_file(&m.path) {
                    assert_eq!(m.fixed_chunks, Some(RELATION_CHUNK), "{}", m.path);
                    // Every 64 KiB from the file's start, so on 8 KiB pages.
                    let want: Vec<u64> = (1..m.size.div_ceil(RELATION_CHUNK)).map(|k| k * RELATION_CHUNK).collect();
                    assert_eq!(inside, want, "{} with {params:?}", m.path);
                    assert!(inside.iter().all(|c| c % 8192 == 0));
                    assert!(cuts.contains(&m.data) && cuts.contains(&(m.data + m.size)), "{}", m.path);
                } else {
                    assert_eq!(m.fixed_chunks, None, "{}", m.path);
                }
            }
            // The other large file keeps content-defined chunks.
            let xact = index.members.iter().find(|m| m.path == "pg_xact/0000").unwrap();
            let inner = cuts.iter().filter(|&&c| c > xact.data && c < xact.data + xact.size).count();
            if params == small {
                assert!(inner >= 3, "{inner} content-defined cuts in 700 KiB with a 64 KiB average");
            }
        }
        // A fixed chunk larger than the largest chunk would be cut by
        // content anyway: no fixed cuts then.
        let tiny = ChunkerParams { min_size: 4 << 10, avg_size: 16 << 10, max_size: 32 << 10 };
        let (_, index) = chunk(&tar, TarMode::Pg, tiny);
        assert!(index.members.iter().all(|m| m.fixed_chunks.is_none()));
        // A plain tar snapshot of the same bytes chunks by content.
        let (_, index) = chunk(&tar, TarMode::Require, ChunkerParams::default());
        assert!(index.members.iter().all(|m| m.fixed_chunks.is_none()));
    }

    #[test]
    fn a_changed_page_changes_one_chunk_of_its_relation_file() {
        let tar = data_directory_tar();
        let index = chunk(&tar, TarMode::Pg, ChunkerParams::default()).1;
        let rel = index.members.iter().find(|m| m.path == "base/16384/16385").unwrap();
        // Page 20 rewritten in place, as PostgreSQL does.
        let mut changed = tar.clone();
        let page = (rel.data + 20 * 8192) as usize;
        changed[page..page + 8192].copy_from_slice(&pseudo_random(8192, 99));
        let chunks_of = |t: &[u8]| -> std::collections::HashSet<Vec<u8>> {
            let (cuts, _) = chunk(t, TarMode::Pg, ChunkerParams::default());
            let mut prev = 0;
            cuts.iter()
                .map(|&c| {
                    let b = t[prev as usize..c as usize].to_vec();
                    prev = c;
                    b
                })
                .collect()
        };
        let (before, after) = (chunks_of(&tar), chunks_of(&changed));
        let new: Vec<usize> = after.difference(&before).map(Vec::len).collect();
        assert_eq!(new, [RELATION_CHUNK as usize], "only the 64 KiB chunk holding the page is new");
    }
}
