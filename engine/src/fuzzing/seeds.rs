//! Valid inputs for every fuzz target, made with the real encoders (or
//! as a server writes them): the seed corpora committed under
//! `engine/testdata/fuzz-seeds/`, and what the replay test checks still
//! decodes.

use serde_json::json;

use super::{pg_message, pg_prelude, pg_row, KEY_FILE, PASSWORD, REPO_ID};
use crate::crypto::MasterKey;
use crate::keys::{Kdf, KeySlot, Secret};
use crate::repo::{Config, GcParams, REPO_VERSION};
use crate::sources::tar::{Member, MemberIndex, MEMBER_INDEX_VERSION};

/// Every seed: target, file name, bytes. Each decodes (its target returns
/// `Ok`).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| out.push((target, format!("ok-{name}"), bytes));
    for (name, s) in snapshots() {
        add("snapshot_manifest", name, serde_json::to_vec(&s).expect("json"));
    }
    add("member_index", "members", member_index().encode());
    add("member_index", "empty", MemberIndex { version: MEMBER_INDEX_VERSION, members: Vec::new() }.encode());
    add("wal_manifest", "stanza", wal_records());
    add("keys_config", "config", config());
    add("wal_journal", "records", journal());
    add("wal_journal", "zeros", vec![0; 4096]);
    add("keys_config", "slot-key-file", key_slot(false));
    add("keys_config", "slot-password", key_slot(true));
    for (name, flags, script) in redis() {
        add("redis_sync", name, [&[flags][..], &script].concat());
    }
    for (name, flags, v15, stream) in pg_streams() {
        add("pg_basebackup", name, [&[flags | if v15 { 64 } else { 0 }][..], &stream].concat());
        add("pg_replication", name, [&[flags][..], &pg_prelude(v15), &stream].concat());
    }
    let md5 = [pg_message(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]), pg_prelude(true), pg_streams().remove(0).3].concat();
    add("pg_replication", "md5", [&[1 | 8 | 16 | 32][..], &md5].concat());
    out
}

fn tree(n: u8) -> serde_json::Value {
    json!({ "tree": hex::encode([n; 32]), "chunks": 2, "bytes": 300_000 })
}

fn entry(name: &str, kind: &str, size: u64) -> serde_json::Value {
    json!({
        "name": name, "kind": kind, "mode": 0o644, "mtime": 1_767_225_600, "size": size,
        "blake3": hex::encode([7u8; 32]), "content": if size > 0 { vec![tree(1)] } else { vec![] },
    })
}

fn snapshot(kind: &str, metadata: serde_json::Value, entries: Vec<serde_json::Value>) -> serde_json::Value {
    json!({
        "version": 1, "time": "2026-01-01T00:00:00.000000Z", "host": "db1",
        "source": { "kind": kind, "name": "seed", "command": ["pg_dump", "-Fc"] },
        "tags": ["nightly"], "metadata": metadata, "entries": entries,
        "stats": { "bytes_read": 300_000, "chunks": 2, "new_chunks": 1, "new_bytes": 100_000,
                   "uploaded_bytes": 100_200, "packs": 1, "duration_s": 0.25 },
        "lease": "0123456789abcdef",
    })
}

fn snapshots() -> Vec<(&'static str, serde_json::Value)> {
    let mut tar = entry("stdin", "file", 300_000);
    tar["members"] = json!({ "count": 3, "size": 400, "blake3": hex::encode([9u8; 32]), "content": [tree(2)] });
    let mut file = entry("etc/passwd", "file", 300_000);
    file["owner"] = json!([0, 0]);
    file["mtime_nanos"] = json!(5);
    file["stat"] = json!({ "dev": 2049, "ino": 77, "ctime": 1_767_225_600, "ctime_nanos": 1 });
    let mut link = entry("etc/localtime", "symlink", 0);
    link["target"] = json!("/usr/share/zoneinfo/UTC");
    let mut hard = entry("etc/passwd.bak", "hardlink", 0);
    hard["target"] = json!("etc/passwd");
    let dir = vec![entry(".", "dir", 0), entry("etc", "dir", 0), file, link, hard, entry("../escape", "file", 0)];
    let walk = json!({ "path": "/srv", "walk": { "files": 2, "dirs": 2, "symlinks": 1, "hardlinks": 1 } });
    let pg = json!({ "pg": {
        "stanza": "main", "system_id": "7300000000000000001", "pg_version": "16", "timeline": 1,
        "start_lsn": "0/2000028", "checkpoint_lsn": "0/2000060", "stop_lsn": "0/2000138",
        "start_time": "2026-01-01 00:00:00 UTC", "stop_time": "2026-01-01T00:00:05Z", "label": "cairn",
        "manifest_files": 900, "manifest_checksums": "CRC32C", "wal_complete": true } });
    let redis = json!({
        "bytes": 300_000, "rdb_version": 11, "redis_ver": "7.2.4", "repl_id": "ab", "repl_offset": 0,
        "aux": { "redis-bits": "64" },
        "databases": { "0": { "keys": 3, "expires": 1, "strings": 1, "lists": 1, "sets": 1, "sorted_sets": 0,
                              "hashes": 0, "streams": 0, "modules": 0 } },
        "keys": 3, "checksum": { "status": "valid", "crc64": "0123456789abcdef" } });
    vec![
        ("stream", snapshot("stream", json!(null), vec![entry("stdin", "file", 300_000)])),
        ("tar", snapshot("stream", json!({ "tar": { "members": 3 } }), vec![tar])),
        ("dir", snapshot("dir", json!({ "dir": walk }), dir)),
        ("pg-base", snapshot("pg-base", pg, vec![entry("base.tar", "file", 300_000)])),
        ("redis", snapshot("redis-rdb", redis, vec![entry("dump.rdb", "file", 300_000)])),
    ]
}

fn member_index() -> MemberIndex {
    let m = |path: &str, kind, size, header, link: Option<&str>| Member {
        path: path.into(),
        kind,
        mode: 0o644,
        mtime: 1_767_225_600,
        uid: 1000,
        gid: 1000,
        size,
        header,
        data: header + 512,
        link: link.map(Into::into),
        fixed_chunks: None,
    };
    use crate::snapshot::FileKind as K;
    MemberIndex {
        version: MEMBER_INDEX_VERSION,
        members: vec![
            m("./data/", K::Dir, 0, 0, None),
            m("./data/a.bin", K::File, 700, 512, None),
            m("./data/b", K::Hardlink, 0, 2048, Some("data/a.bin")),
            m("./pg_tblspc/16384", K::Symlink, 0, 2560, Some("/srv/ts")),
            m("/etc/shadow", K::File, 1, 3072, None),
        ],
    }
}

fn wal_records() -> Vec<u8> {
    let stanza = json!({
        "version": 1, "stanza": "main", "system_id": "7300000000000000001", "segment_size": 16_777_216,
        "block_size": 8192, "wal_magic": 0xD116, "postgresql": 17, "created": "2026-01-01T00:00:00Z", "host": "db1" });
    let piece = |n: u8| {
        json!({ "pack": hex::encode([n; 32]), "id": hex::encode([n + 1; 32]), "offset": 0,
                "stored_len": 1000, "raw_len": 2_097_152, "zstd": true })
    };
    let facts = json!({
        "postgresql": 17, "system_id": "7300000000000000001", "timeline": 1, "start_lsn": 16_777_216,
        "first_record": 16_777_256, "last_record": 33_554_000, "end_of_records": 33_554_200, "records": 900,
        "commits": 3, "aborts": 1,
        "first_commit": { "lsn": 16_777_300, "time_us": 1_767_225_600_000_000i64, "xid": 740 },
        "last_commit": { "lsn": 33_554_000, "time_us": 1_767_225_660_000_000i64, "xid": 742 },
        "commit_xids": [740, 742],
        "restore_points": [{ "name": "before-migration", "lsn": 20_000_000, "time_us": 1_767_225_630_000_000i64 }],
        "end": "switch", "stopped": null });
    let manifest = |name: &str, kind: &str| {
        json!({ "version": 1, "name": name, "kind": kind, "size": 16_777_216, "blake3": hex::encode([3u8; 32]),
                "pushed": "2026-01-01T00:01:00Z", "host": "db1", "pieces": [piece(4), piece(6)],
                "facts": if kind == "segment" || kind == "partial" { facts.clone() } else { json!(null) },
                "history": if kind == "history" {
                    json!([{ "timeline": 1, "switchpoint": 50_331_648, "reason": "no recovery target specified" }])
                } else { json!(null) },
                "backup": if kind == "backup" { json!({ "START WAL LOCATION": "0/2000028", "LABEL": "cairn" }) }
                          else { json!(null) } })
    };
    let parts = [
        stanza,
        manifest("000000010000000000000001", "segment"),
        manifest("000000010000000000000002", "segment"),
        manifest("000000010000000000000005", "segment"),
        manifest("000000010000000000000006.partial", "partial"),
        manifest("00000002.history", "history"),
        manifest("000000010000000000000002.00000028.backup", "backup"),
    ];
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0xff);
        }
        out.extend(serde_json::to_vec(p).expect("json"));
    }
    out
}

fn config() -> Vec<u8> {
    let c = Config {
        version: REPO_VERSION,
        id: REPO_ID.into(),
        created: "2026-01-01T00:00:00Z".into(),
        chunker: Default::default(),
        pack_target: crate::repo::DEFAULT_PACK_TARGET,
        gc: Some(GcParams::default()),
        copy_of: None,
    };
    serde_json::to_vec_pretty(&c).expect("config serializes")
}

fn key_slot(password: bool) -> Vec<u8> {
    let (secret, kdf) = if password {
        (Secret::Password(PASSWORD.to_vec().into()), Kdf::Argon2id { m_cost: 8, t_cost: 1, p_cost: 1 })
    } else {
        (Secret::KeyFile(KEY_FILE.into()), Kdf::Blake3KeyFile)
    };
    let slot =
        KeySlot::create_with(crate::keys::KEY_SLOT_VERSION, REPO_ID, &MasterKey([5; 32]), &secret, kdf, Some(&[0; 32]))
            .expect("seed key slot");
    serde_json::to_vec_pretty(&slot).expect("slot serializes")
}

fn redis() -> Vec<(&'static str, u8, Vec<u8>)> {
    let rdb = [&b"REDIS0011\xfa\x09redis-ver\x057.2.4\xfe\x00\xfb\x01\x00\x00\x01k\x01v\xff"[..], &[0u8; 8]].concat();
    let id = "8f2c9e4d1b7a6c5e3f0d9a8b7c6e5f4d3c2b1a09";
    let mark = "0123456789abcdef0123456789abcdef01234567";
    let handshake = |auth: bool| {
        let mut s = String::new();
        if auth {
            s.push_str("+OK\r\n");
        }
        s.push_str(&format!("+PONG\r\n+OK\r\n+OK\r\n+FULLRESYNC {id} 0\r\n\n\n"));
        s.into_bytes()
    };
    let disk = [handshake(false), format!("${}\r\n", rdb.len()).into_bytes(), rdb.clone()].concat();
    let diskless = [handshake(true), format!("$EOF:{mark}\r\n").into_bytes(), rdb.clone(), mark.into()].concat();
    let old = format!("+PONG\r\n+OK\r\n-ERR Unrecognized REPLCONF option: rdb-only\r\n+FULLRESYNC {id} 42\r\n$0\r\n");
    vec![("disk", 0, disk), ("diskless-auth", 3 | 4, diskless), ("no-rdb-only", 8, old.into_bytes())]
}

/// A tar member's header and data, without the end-of-archive blocks.
fn tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h.extend_from_slice(content);
    h.resize(h.len().div_ceil(512) * 512, 0);
    h
}

/// After the prelude: the copy stream and the end of the session, for a
/// 15 and a 14 server (flags, 15?, bytes).
fn pg_streams() -> Vec<(&'static str, u8, bool, Vec<u8>)> {
    let manifest = b"{\"PostgreSQL-Backup-Manifest-Version\": 1}\n".to_vec();
    let end = [
        pg_message(b'T', &0u16.to_be_bytes()),
        pg_row(&[Some("0/3000100"), Some("3")]),
        pg_message(b'C', b"SELECT\0"),
        pg_message(b'C', b"BASE_BACKUP\0"),
        pg_message(b'Z', b"I"),
    ]
    .concat();
    let typed = |kind: u8, body: &[u8]| pg_message(b'd', &[&[kind][..], body].concat());
    let base = tar("PG_VERSION", b"15\n");
    let v15 = [
        typed(b'n', b"base.tar\0\0"),
        typed(b'd', &base[..700]),
        typed(b'p', &700u64.to_be_bytes()),
        typed(b'd', &base[700..]),
        typed(b'm', b""),
        typed(b'd', &manifest),
        pg_message(b'c', b""),
        end.clone(),
    ]
    .concat();
    let ts = tar("PG_14_202107181/1/1", b"tablespace");
    let v14 = [
        pg_message(b'd', &ts),
        pg_message(b'c', b""),
        pg_message(b'H', &[0, 0, 0]),
        pg_message(b'd', &tar("PG_VERSION", b"14\n")),
        pg_message(b'c', b""),
        pg_message(b'H', &[0, 0, 0]),
        pg_message(b'd', &manifest),
        pg_message(b'c', b""),
        end,
    ]
    .concat();
    vec![("v15", 8 | 16 | 32, true, v15.clone()), ("v15-skip", 8, true, v15), ("v14", 8 | 16 | 32, false, v14)]
}

/// A segment journal as the receiver writes it: three records (the third
/// overlapping the second, as after a re-sent stretch), then zeros.
fn journal() -> Vec<u8> {
    use crate::wal::journal::{header, record};
    let (keys, key, id) = (super::journal_keys(), super::JOURNAL_KEY, [7u8; crate::wal::journal::ID_LEN]);
    let mut out = header(&id);
    for (seq, (offset, bytes)) in [(0u64, &b"abc"[..]), (3, b"defg"), (5, b"fghij")].into_iter().enumerate() {
        out.extend(record(keys, key, &id, seq as u64, offset, bytes));
    }
    out.extend([0u8; 64]);
    out
}
