//! What the RDB decoder reports about a file.
//!
//! The engine stores these facts as the snapshot's source metadata (RDB
//! version, `redis-ver`, replication id and offset, key counts), and the
//! oracle tests compare them with what the live server said (`DBSIZE`,
//! `INFO keyspace`).

use std::collections::BTreeMap;

/// Whether the CRC-64 trailer was checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// The trailer has not been reached yet.
    #[default]
    Pending,
    /// RDB versions before 5 have no trailer.
    Absent,
    /// The trailer is zero: the server ran with `rdbchecksum no`, so bit
    /// flips inside string payloads cannot be detected.
    Disabled,
    /// The trailer matches the CRC-64/Jones of everything before it.
    Valid(u64),
}

/// How many keys of each logical type a database holds. Encodings (listpack
/// or hash table, quicklist or ziplist) are folded into their type; the raw
/// RDB type codes are in [`RdbSummary::rdb_types`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    /// Plain strings (type 0).
    pub strings: u64,
    /// Lists (1, 10, 14, 18).
    pub lists: u64,
    /// Sets (2, 11, 20).
    pub sets: u64,
    /// Sorted sets (3, 5, 12, 17).
    pub sorted_sets: u64,
    /// Hashes, with or without field TTLs (4, 9, 13, 16, 22 to 25).
    pub hashes: u64,
    /// Streams (15, 19, 21).
    pub streams: u64,
    /// Module values (7).
    pub modules: u64,
}

impl KindCounts {
    pub(crate) fn add(&mut self, rdb_type: u8) {
        let slot = match rdb_type {
            0 => &mut self.strings,
            1 | 10 | 14 | 18 => &mut self.lists,
            2 | 11 | 20 => &mut self.sets,
            3 | 5 | 12 | 17 => &mut self.sorted_sets,
            4 | 9 | 13 | 16 | 22..=25 => &mut self.hashes,
            15 | 19 | 21 => &mut self.streams,
            _ => &mut self.modules,
        };
        *slot += 1;
    }
}

/// Per-database facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Keys stored (what `DBSIZE` said when the file was written).
    pub keys: u64,
    /// Keys with an expiry time (the `expires=` of `INFO keyspace`).
    pub expires: u64,
    /// Keys per logical type.
    pub kinds: KindCounts,
    /// The `RESIZEDB` hint (keys, expires) the writer announced, if any.
    /// It is only a hint; `keys` and `expires` are what was counted.
    pub resize_hint: Option<(u64, u64)>,
}

/// Everything the decoder learned about an RDB file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdbSummary {
    /// The RDB format version from the header (10 for Redis 7.0, 11 for
    /// 7.2, 12 for 7.4 and 8.x).
    pub version: u32,
    /// AUX fields in file order (`redis-ver`, `redis-bits`, `ctime`,
    /// `used-mem`, `repl-id`, `repl-offset`, `aof-base`, ...), decoded as
    /// lossy UTF-8. Integer-encoded values are given in decimal.
    pub aux: Vec<(String, String)>,
    /// AUX fields whose key or value exceeded the aux size limit and so
    /// were skipped instead of kept.
    pub oversized_aux: u64,
    /// Databases by number.
    pub dbs: BTreeMap<u64, DbStats>,
    /// Keys per raw RDB type code, for reports that care about encodings.
    pub rdb_types: BTreeMap<u8, u64>,
    /// Module values per module type name (the 9-character name encoded in
    /// the module id).
    pub module_types: BTreeMap<String, u64>,
    /// Module AUX blocks per module type name.
    pub module_aux: BTreeMap<String, u64>,
    /// Function libraries (`FUNCTION2` opcodes).
    pub functions: u64,
    /// Keys whose value was empty. Redis skips these when loading (old
    /// versions could write them), so they are not in `dbs`.
    pub empty_keys_skipped: u64,
    /// Encoded containers larger than the container limit: streamed and
    /// counted, but their inner structure was not checked.
    pub unvalidated_containers: u64,
    /// Keys whose uniqueness checks (set members, hash fields, stream
    /// pending entries) were abandoned because they exceeded
    /// [`RdbLimits::max_tracked_bytes`](super::RdbLimits::max_tracked_bytes).
    pub unchecked_keys: u64,
    /// The checksum result.
    pub checksum: ChecksumStatus,
    /// Length of the RDB proper, trailer included, once it is complete.
    pub rdb_len: u64,
    /// Bytes after the trailer. Redis ignores them; a backup tool may not
    /// want to.
    pub trailing_bytes: u64,
}

impl RdbSummary {
    /// The value of an AUX field, if present.
    pub fn aux_value(&self, key: &str) -> Option<&str> {
        self.aux.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The server version that wrote the file (`redis-ver`, or `valkey-ver`
    /// for Valkey 8, which still writes Redis-format files).
    pub fn server_version(&self) -> Option<&str> {
        self.aux_value("redis-ver").or_else(|| self.aux_value("valkey-ver"))
    }

    /// The replication id, which with [`repl_offset`](Self::repl_offset)
    /// tells which point of a replication history the file captures.
    pub fn repl_id(&self) -> Option<&str> {
        self.aux_value("repl-id")
    }

    /// The replication offset, if present and numeric.
    pub fn repl_offset(&self) -> Option<i64> {
        self.aux_value("repl-offset")?.parse().ok()
    }

    /// Keys in all databases.
    pub fn total_keys(&self) -> u64 {
        self.dbs.values().map(|d| d.keys).sum()
    }

    /// Keys with an expiry time in all databases.
    pub fn total_expires(&self) -> u64 {
        self.dbs.values().map(|d| d.expires).sum()
    }
}

/// The name Redis's `rdb.h` gives an RDB value type code, or `None` for a
/// code that is not a value type.
pub fn rdb_type_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "string",
        1 => "list",
        2 => "set",
        3 => "zset",
        4 => "hash",
        5 => "zset_2",
        6 => "module_pre_ga",
        7 => "module_2",
        9 => "hash_zipmap",
        10 => "list_ziplist",
        11 => "set_intset",
        12 => "zset_ziplist",
        13 => "hash_ziplist",
        14 => "list_quicklist",
        15 => "stream_listpacks",
        16 => "hash_listpack",
        17 => "zset_listpack",
        18 => "list_quicklist_2",
        19 => "stream_listpacks_2",
        20 => "set_listpack",
        21 => "stream_listpacks_3",
        22 => "hash_metadata_pre_ga",
        23 => "hash_listpack_ex_pre_ga",
        24 => "hash_metadata",
        25 => "hash_listpack_ex",
        _ => return None,
    })
}

/// Decodes the 9-character module type name from the upper 54 bits of a
/// module id (`moduleTypeNameByID` in Redis).
pub(crate) fn module_name(id: u64) -> String {
    const CSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = id >> 10;
    let mut name = [0u8; 9];
    for slot in name.iter_mut().rev() {
        *slot = CSET[(id & 63) as usize];
        id >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}
