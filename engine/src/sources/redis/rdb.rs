//! Redis RDB sources: a dump is validated while it streams into the
//! pipeline (magic, version, structure, CRC-64), so a truncated or corrupt
//! file fails the backup and leaves no snapshot, and what the parser learnt
//! (RDB version, `redis-ver`, replication id and offset, keys per database)
//! goes into the snapshot's metadata.

use std::io::Read;

use cairn_formats::redis::{ChecksumStatus, RdbParser, RdbSummary};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sources::StreamSource;
use crate::{Error, Result};

/// The snapshot source kind for RDB files.
pub const KIND: &str = "redis-rdb";

/// Wraps a source; every byte read is also fed to an [`RdbParser`].
pub struct RdbSource<S> {
    inner: S,
    parser: RdbParser,
    offset: u64,
}

impl<S: StreamSource> RdbSource<S> {
    /// Validates `inner` as an RDB stream.
    pub fn new(inner: S) -> Self {
        RdbSource { inner, parser: RdbParser::new(), offset: 0 }
    }
}

fn invalid(detail: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not a valid RDB stream: {detail}"))
}

impl<S: StreamSource> Read for RdbSource<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.parser.feed(&buf[..n]).map_err(invalid)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl<S: StreamSource> StreamSource for RdbSource<S> {
    fn finish(&mut self) -> Result<()> {
        self.inner.finish()?;
        self.parser
            .finish()
            .map(|_| ())
            .map_err(|e| Error::Input { offset: self.offset, source: invalid(format!("{e} (truncated?)")) })
    }

    fn metadata(&self) -> Option<Value> {
        let mut v = self.parser.finish().ok().map(summary_json)?;
        // What the source knows (replication id and offset from a live
        // pull) adds to, and wins over, what the file says.
        if let (Some(obj), Some(Value::Object(inner))) = (v.as_object_mut(), self.inner.metadata()) {
            obj.extend(inner);
        }
        Some(v)
    }
}

/// What a Redis snapshot records about its RDB file (the snapshot's
/// metadata), and what `cairn inspect rdb` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisFacts {
    /// Bytes of the RDB file.
    pub bytes: u64,
    /// RDB format version.
    pub rdb_version: u32,
    /// The `redis-ver` aux field.
    pub redis_ver: Option<String>,
    /// Replication id (aux field, or the live pull's).
    pub repl_id: Option<String>,
    /// Replication offset (aux field, or the live pull's).
    pub repl_offset: Option<i64>,
    /// Every aux field.
    #[serde(default)]
    pub aux: BTreeMap<String, String>,
    /// Per database (by number).
    #[serde(default)]
    pub databases: BTreeMap<String, DbFacts>,
    /// Keys in all databases.
    pub keys: u64,
    /// The trailing CRC-64.
    pub checksum: ChecksumFacts,
}

/// One database of an RDB file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbFacts {
    /// Keys.
    pub keys: u64,
    /// Keys with an expiry.
    pub expires: u64,
    /// String values.
    pub strings: u64,
    /// Lists.
    pub lists: u64,
    /// Sets.
    pub sets: u64,
    /// Sorted sets.
    pub sorted_sets: u64,
    /// Hashes.
    pub hashes: u64,
    /// Streams.
    pub streams: u64,
    /// Module values.
    pub modules: u64,
}

/// The RDB file's checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumFacts {
    /// `valid`, `disabled` (written as zero), `absent` (old versions) or
    /// `pending`.
    pub status: String,
    /// The CRC-64, hex, when valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64: Option<String>,
}

impl RedisFacts {
    /// The facts of a parsed RDB file.
    pub fn from_summary(s: &RdbSummary) -> RedisFacts {
        let (status, crc64) = match s.checksum {
            ChecksumStatus::Valid(c) => ("valid", Some(format!("{c:016x}"))),
            ChecksumStatus::Disabled => ("disabled", None),
            ChecksumStatus::Absent => ("absent", None),
            ChecksumStatus::Pending => ("pending", None),
        };
        let databases = s
            .dbs
            .iter()
            .map(|(db, d)| {
                let k = &d.kinds;
                let facts = DbFacts {
                    keys: d.keys,
                    expires: d.expires,
                    strings: k.strings,
                    lists: k.lists,
                    sets: k.sets,
                    sorted_sets: k.sorted_sets,
                    hashes: k.hashes,
                    streams: k.streams,
                    modules: k.modules,
                };
                (db.to_string(), facts)
            })
            .collect();
        let get = |k: &str| s.aux.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        RedisFacts {
            bytes: s.rdb_len,
            rdb_version: s.version,
            redis_ver: get("redis-ver"),
            repl_id: get("repl-id"),
            repl_offset: get("repl-offset").and_then(|v| v.parse::<i64>().ok()),
            aux: s.aux.iter().cloned().collect(),
            databases,
            keys: s.dbs.values().map(|d| d.keys).sum::<u64>(),
            checksum: ChecksumFacts { status: status.into(), crc64 },
        }
    }

    /// The facts of a Redis snapshot; `None` for other kinds or unreadable
    /// metadata.
    pub fn of(snapshot: &crate::snapshot::Snapshot) -> Option<RedisFacts> {
        (snapshot.source.kind == KIND).then(|| serde_json::from_value(snapshot.metadata.clone()).ok()).flatten()
    }
}

/// [`RedisFacts`] as JSON, for snapshot metadata and `cairn inspect rdb`.
pub fn summary_json(s: &RdbSummary) -> Value {
    serde_json::to_value(RedisFacts::from_summary(s)).expect("facts serialize")
}
