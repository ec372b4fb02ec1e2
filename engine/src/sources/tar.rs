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
//! The members (path, kind, mode, mtime, size, owner, link target, header
//! and data offsets) are kept as the stream passes and stored after it as
//! a JSON document of their own ([`MemberIndex`]), so one file can be
//! listed, diffed or restored without reading the rest of the archive.

use std::collections::VecDeque;

use cairn_formats::tar::{EntryKind, TarEvent, TarParser};
use serde::{Deserialize, Serialize};

use crate::chunker::CutHints;
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
    /// The first bytes, until there are enough to decide.
    head: Vec<u8>,
    decided: bool,
    parser: Option<TarParser>,
    cuts: VecDeque<u64>,
    members: Vec<Member>,
    compressed: Option<&'static str>,
    fell_back: Option<String>,
}

impl TarHints {
    /// Hints for `mode`; members with at least `min_member` data bytes are
    /// cut around (the chunker's minimum size).
    pub fn new(mode: TarMode, min_member: u64) -> TarHints {
        TarHints {
            mode,
            min_member,
            head: Vec::new(),
            decided: mode == TarMode::Off,
            parser: None,
            cuts: VecDeque::new(),
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
        if self.mode == TarMode::Require {
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
                        if m.data_len >= self.min_member {
                            self.cuts.push_back(m.data_start);
                            self.cuts.push_back(m.data_start + m.data_len);
                        }
                        self.members.push(Member {
                            path: m.path_lossy().into_owned(),
                            kind: kind_of(m.kind),
                            mode: m.mode,
                            mtime: m.mtime,
                            uid: m.uid,
                            gid: m.gid,
                            size: m.data_len,
                            header: m.header_offset,
                            data: m.data_start,
                            link: m.link_target.as_deref().map(|t| String::from_utf8_lossy(t).into_owned()),
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
        if self.mode == TarMode::Require && self.compressed.is_none() {
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
