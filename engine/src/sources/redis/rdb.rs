//! Redis RDB sources: a dump is validated while it streams into the
//! pipeline (magic, version, structure, CRC-64), so a truncated or corrupt
//! file fails the backup and leaves no snapshot, and what the parser learnt
//! (RDB version, `redis-ver`, replication id and offset, keys per database)
//! goes into the snapshot's metadata.

use std::io::Read;

use cairn_formats::redis::{ChecksumStatus, RdbParser, RdbSummary};
use serde_json::{json, Value};

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

/// The facts about an RDB file, as recorded in snapshots and printed by
/// `cairn inspect rdb`.
pub fn summary_json(s: &RdbSummary) -> Value {
    let checksum = match s.checksum {
        ChecksumStatus::Valid(c) => json!({ "status": "valid", "crc64": format!("{c:016x}") }),
        ChecksumStatus::Disabled => json!({ "status": "disabled" }),
        ChecksumStatus::Absent => json!({ "status": "absent" }),
        ChecksumStatus::Pending => json!({ "status": "pending" }),
    };
    let dbs: serde_json::Map<String, Value> = s
        .dbs
        .iter()
        .map(|(db, d)| {
            let k = &d.kinds;
            (
                db.to_string(),
                json!({ "keys": d.keys, "expires": d.expires, "strings": k.strings, "lists": k.lists, "sets": k.sets,
                        "sorted_sets": k.sorted_sets, "hashes": k.hashes, "streams": k.streams, "modules": k.modules }),
            )
        })
        .collect();
    let aux: serde_json::Map<String, Value> =
        s.aux.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let get = |k: &str| s.aux.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    json!({
        "bytes": s.rdb_len,
        "rdb_version": s.version,
        "redis_ver": get("redis-ver"),
        "repl_id": get("repl-id"),
        "repl_offset": get("repl-offset").and_then(|v| v.parse::<i64>().ok()),
        "aux": aux,
        "databases": dbs,
        "keys": s.dbs.values().map(|d| d.keys).sum::<u64>(),
        "checksum": checksum,
    })
}
