//! PostgreSQL base backups as tar streams (`pg_basebackup -D - -Ft`, or an
//! archive pulled over the replication protocol).
//!
//! [`BaseTarSource`] sits between the producer and the chunker. Every byte
//! goes through untouched; beside it a [`TarParser`] follows the members,
//! a CRC-32C is kept per file, and the few small files that describe the
//! backup (`backup_label`, `backup_manifest`, `global/pg_control`,
//! `PG_VERSION`, `tablespace_map`) are kept whole. PostgreSQL writes the
//! manifest last, so the files are checked against it in `finish`, after
//! the last byte and before anything is committed: a file the manifest
//! lists with another size or CRC-32C, or does not find at all, fails the
//! backup. (Manifests that use a SHA algorithm are checked on sizes here
//! and in full by `cairn pg restore`.)

use std::collections::{HashMap, VecDeque};
use std::io::Read;

use cairn_formats::pg::{BackupManifest, ChecksumAlgorithm, Lsn};
use cairn_formats::tar::{EntryKind, TarEvent, TarParser};
use serde::{Deserialize, Serialize};

use crate::sources::StreamSource;
use crate::{Error, Result};

/// Source kind of base backup snapshots.
pub const KIND: &str = "pg-base";

/// Small files kept whole, with the most bytes each may have.
const KEEP: [(&str, usize); 5] = [
    ("backup_label", 64 << 10),
    ("backup_manifest", cairn_formats::pg::manifest::MAX_MANIFEST_LEN),
    ("global/pg_control", 64 << 10),
    ("PG_VERSION", 64),
    ("tablespace_map", 1 << 20),
];

/// What a base backup says about itself, recorded in the snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PgFacts {
    /// Stanza whose WAL archive completes this backup.
    pub stanza: String,
    /// Database system identifier (from `global/pg_control`).
    pub system_id: String,
    /// PostgreSQL major version (`PG_VERSION`).
    pub pg_version: String,
    /// Timeline the backup started on.
    pub timeline: u32,
    /// `START WAL LOCATION`.
    pub start_lsn: String,
    /// `CHECKPOINT LOCATION`.
    pub checkpoint_lsn: String,
    /// End of the WAL the backup needs (manifest `WAL-Ranges`).
    pub stop_lsn: String,
    /// `START TIME` as written by PostgreSQL.
    pub start_time: String,
    /// When the backup ended (RFC 3339): the backup history file's
    /// `STOP TIME`, or when the producer finished if that is not archived.
    pub stop_time: String,
    /// `LABEL`.
    pub label: String,
    /// Files the manifest lists (all checked).
    pub manifest_files: u64,
    /// The manifest's checksum algorithm.
    pub manifest_checksums: String,
    /// Whether every WAL segment from start to stop was in the archive
    /// when the snapshot was written.
    pub wal_complete: bool,
}

impl PgFacts {
    /// The facts of a `pg-base` snapshot.
    pub fn of(snapshot: &crate::snapshot::Snapshot) -> Result<PgFacts> {
        serde_json::from_value(snapshot.metadata.get("pg").cloned().unwrap_or_default())
            .map_err(|e| Error::corrupt("snapshot metadata", None, format!("not a usable pg-base snapshot ({e})")))
    }

    /// Start LSN as a number.
    pub fn start(&self) -> Lsn {
        self.start_lsn.parse().unwrap_or(Lsn(0))
    }

    /// Stop LSN as a number.
    pub fn stop(&self) -> Lsn {
        self.stop_lsn.parse().unwrap_or(Lsn(0))
    }
}

struct Open {
    path: String,
    start: u64,
    end: u64,
    crc: u32,
    keep: Option<Vec<u8>>,
}

/// Follows the tar archives of a base backup as their bytes pass: a
/// CRC-32C and size per file, and the small descriptive files kept whole.
#[derive(Default)]
pub struct TarChecker {
    parser: TarParser,
    prefix: String,
    offset: u64,
    open: VecDeque<Open>,
    files: HashMap<String, (u64, u32)>,
    kept: HashMap<String, Vec<u8>>,
    failed: Option<String>,
}

impl TarChecker {
    /// Starts on a new archive whose member paths sit under `prefix` in the
    /// data directory (`""` for base.tar, `pg_tblspc/<oid>/` for a
    /// tablespace's archive).
    pub fn next_archive(&mut self, prefix: &str) -> Result<()> {
        if self.offset > 0 {
            self.end_archive()?;
        }
        self.parser = TarParser::new();
        self.prefix = prefix.to_string();
        self.offset = 0;
        Ok(())
    }

    fn end_archive(&mut self) -> Result<()> {
        if let Some(f) = &self.failed {
            return Err(self.bad(format!("not a valid tar stream: {f}")));
        }
        self.parser.finish().map_err(|e| self.bad(e.to_string()))
    }

    /// Keeps `bytes` as the content of `path` (the manifest, when it comes
    /// apart from the archives).
    pub fn keep(&mut self, path: &str, bytes: Vec<u8>) {
        self.kept.insert(path.to_string(), bytes);
    }

    fn observe(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        match self.parser.feed(data) {
            Ok(events) => {
                for ev in events {
                    if let TarEvent::Member(m) = ev {
                        if m.kind != EntryKind::File {
                            continue;
                        }
                        let path = format!("{}{}", self.prefix, crate::commands::files::normalize(&m.path_lossy()));
                        let keep = KEEP.iter().find(|(p, _)| *p == path).map(|_| Vec::new());
                        self.open.push_back(Open {
                            path,
                            start: m.data_start,
                            end: m.data_start + m.data_len,
                            crc: 0,
                            keep,
                        });
                    }
                }
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                return;
            }
        }
        let (lo, hi) = (self.offset, self.offset + data.len() as u64);
        while let Some(f) = self.open.front_mut() {
            if f.start >= hi {
                break;
            }
            let s = f.start.max(lo);
            let e = f.end.min(hi);
            if e > s {
                let piece = &data[(s - lo) as usize..(e - lo) as usize];
                f.crc = crc32c::crc32c_append(f.crc, piece);
                if let Some(k) = f.keep.as_mut() {
                    let limit = KEEP.iter().find(|(p, _)| *p == f.path).map_or(0, |(_, l)| *l);
                    if k.len() + piece.len() > limit {
                        self.failed = Some(format!("{} is larger than {limit} bytes", f.path));
                        return;
                    }
                    k.extend_from_slice(piece);
                }
            }
            if f.end > hi {
                break;
            }
            let f = self.open.pop_front().expect("front exists");
            self.files.insert(f.path.clone(), (f.end - f.start, f.crc));
            if let Some(k) = f.keep {
                self.kept.insert(f.path, k);
            }
        }
        self.offset = hi;
    }

    fn bad(&self, detail: String) -> Error {
        Error::Input {
            offset: self.offset,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("base backup: {detail}")),
        }
    }

    /// After the last archive (and the manifest): every file the manifest
    /// lists must have been seen with its size and CRC-32C; returns what
    /// the backup says about itself.
    pub fn check(&mut self, stanza: &str) -> Result<PgFacts> {
        self.end_archive()?;
        let manifest = self.kept.get("backup_manifest").ok_or_else(|| {
            self.bad("the archive holds no backup_manifest (run pg_basebackup with its default --manifest-checksums, not --no-manifest)".into())
        })?;
        let manifest = BackupManifest::parse(manifest).map_err(|e| self.bad(format!("backup_manifest: {e}")))?;
        let algorithm = manifest.files.first().map_or(ChecksumAlgorithm::None, |f| f.checksum_algorithm);
        for f in &manifest.files {
            let path = f.path_lossy();
            let Some(&(size, crc)) = self.files.get(&path) else {
                return Err(self.bad(format!("{path} is in backup_manifest but not in the archive")));
            };
            if size != f.size {
                return Err(self.bad(format!("{path}: {size} bytes in the archive, backup_manifest says {}", f.size)));
            }
            if f.checksum_algorithm == ChecksumAlgorithm::Crc32c && crc.to_le_bytes().as_slice() != f.checksum {
                return Err(self.bad(format!(
                    "{path}: CRC-32C {} in the archive, backup_manifest says {}",
                    hex::encode(crc.to_le_bytes()),
                    hex::encode(&f.checksum)
                )));
            }
        }
        let label = String::from_utf8_lossy(
            self.kept
                .get("backup_label")
                .ok_or_else(|| self.bad("the archive holds no backup_label: not a base backup".into()))?,
        )
        .into_owned();
        let field = |key: &str| {
            label.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        let start_lsn = field("START WAL LOCATION:").split_whitespace().next().unwrap_or_default().to_string();
        let control = self.kept.get("global/pg_control").map(Vec::as_slice).unwrap_or_default();
        let system_id = control.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")).to_string());
        let stop = manifest.wal_ranges.iter().map(|r| r.end).max().unwrap_or(Lsn(0));
        Ok(PgFacts {
            stanza: stanza.to_string(),
            system_id: system_id.ok_or_else(|| self.bad("the archive holds no global/pg_control".into()))?,
            pg_version: self
                .kept
                .get("PG_VERSION")
                .map(|v| String::from_utf8_lossy(v).trim().to_string())
                .unwrap_or_default(),
            timeline: field("START TIMELINE:").parse().unwrap_or(1),
            start_lsn,
            checkpoint_lsn: field("CHECKPOINT LOCATION:"),
            stop_lsn: stop.to_string(),
            start_time: field("START TIME:"),
            stop_time: String::new(),
            label: field("LABEL:"),
            manifest_files: manifest.files.len() as u64,
            manifest_checksums: algorithm.name().to_string(),
            wal_complete: false,
        })
    }
}

/// A base backup as one tar stream (`pg_basebackup -D - -Ft`), checked as
/// it passes.
pub struct BaseTarSource {
    inner: Box<dyn StreamSource>,
    stanza: String,
    checker: TarChecker,
    facts: Option<PgFacts>,
}

impl BaseTarSource {
    /// Wraps a producer's stream.
    pub fn new(inner: Box<dyn StreamSource>, stanza: &str) -> BaseTarSource {
        BaseTarSource { inner, stanza: stanza.into(), checker: TarChecker::default(), facts: None }
    }
}

/// A reader that shows every byte it passes to a [`TarChecker`].
pub struct Checked<'a, R> {
    /// The bytes.
    pub inner: R,
    /// Who sees them.
    pub checker: &'a mut TarChecker,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.checker.observe(&buf[..n]);
        Ok(n)
    }
}

impl Read for BaseTarSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.checker.observe(&buf[..n]);
        Ok(n)
    }
}

impl StreamSource for BaseTarSource {
    fn finish(&mut self) -> Result<()> {
        self.inner.finish()?;
        self.facts = Some(self.checker.check(&self.stanza)?);
        Ok(())
    }

    fn metadata(&self) -> Option<serde_json::Value> {
        self.facts.as_ref().map(|f| serde_json::json!({ "pg": f }))
    }
}
