//! The RDB decoder checked against the real thing: a `redis-server` 7 fills
//! every value type, saves with and without compression and checksums, and
//! the decoder's counts must equal what the server reports (`DBSIZE`,
//! `INFO keyspace`). Damaged copies (bit flips, truncations) must get the
//! same valid/invalid verdict from the decoder as from `redis-check-rdb`.
//!
//! The four dumps are produced once per test binary and shared.

#[path = "common/redis.rs"]
mod redis_common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cairn_formats::redis::{ChecksumStatus, KindCounts, RdbError, RdbParser, RdbSummary};
use redis_common::{check_rdb, cmd, Check, RedisServer, Rng};

/// One saved dump and how it was made.
struct Dump {
    name: &'static str,
    checksum: bool,
    bytes: Vec<u8>,
}

/// What the server said, and what the test created, to compare with.
struct Fixture {
    dumps: Vec<Dump>,
    /// `(db, keys, expires)` from `INFO keyspace`.
    keyspace: Vec<(u64, u64, u64)>,
    /// `DBSIZE` per database.
    dbsize: BTreeMap<u64, u64>,
    /// Keys of each type the test created, per database.
    kinds: BTreeMap<u64, KindCounts>,
    redis_version: String,
}

/// 1.5 MB of incompressible bytes, stored raw even with compression on.
fn random_payload() -> Vec<u8> {
    let mut rng = Rng(1);
    (0..1_500_000 / 8).flat_map(|_| rng.next().to_le_bytes()).collect()
}

/// Fills the current server with every value type in three databases and
/// returns the number of keys of each type created per database.
fn populate(server: &RedisServer) -> BTreeMap<u64, KindCounts> {
    // With this threshold, list elements of 1000 bytes or more get
    // quicklist "plain" nodes, so that RDB container kind 1 is exercised.
    server.cli(&["DEBUG", "QUICKLIST-PACKED-THRESHOLD", "1000"]);
    let mut rng = Rng(7);
    let mut c: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut kinds: BTreeMap<u64, KindCounts> = BTreeMap::new();

    // Database 0: everything.
    c.push(cmd(["SELECT", "0"]));
    let k0 = kinds.entry(0).or_default();
    for i in 0..150 {
        c.push(cmd(["SET".to_string(), format!("s:{i}"), format!("value number {i}")]));
    }
    for i in 0..50 {
        c.push(cmd(["SET".to_string(), format!("n:{i}"), (i * 7919 - 100_000).to_string()]));
    }
    c.push(vec![b"SET".to_vec(), b"big:random".to_vec(), random_payload()]);
    let text: String = (0..60_000).map(|i| format!("line {} of a compressible text\n", i % 977)).collect();
    c.push(cmd(["SET", "big:text", &text]));
    c.push(cmd(["SET", "big:int", "12345678901"]));
    c.push(cmd(["SET", "neg", "-5"]));
    k0.strings = 204;

    for i in 0..20 {
        let mut l = cmd(["RPUSH".to_string(), format!("l:small:{i}")]);
        l.extend((0..8).map(|j| format!("item {j}").into_bytes()));
        c.push(l);
    }
    for batch in 0..20 {
        let mut l = cmd(["RPUSH", "l:big"]);
        l.extend((0..1000).map(|j| format!("element {}", batch * 1000 + j).into_bytes()));
        c.push(l);
    }
    let wide = "w".repeat(2000);
    c.push(cmd(["RPUSH", "l:plain", "a", &wide, "b", &wide, &wide]));
    k0.lists = 22;

    for i in 0..20 {
        let mut h = cmd(["HSET".to_string(), format!("h:small:{i}")]);
        h.extend((0..5).flat_map(|j| [format!("f{j}").into_bytes(), format!("v{j}").into_bytes()]));
        c.push(h);
    }
    let mut h = cmd(["HSET", "h:big"]);
    for _ in 0..2000 {
        h.push(rng.name("field-").into_bytes());
        h.push(rng.name("value-").into_bytes());
    }
    c.push(h);
    k0.hashes = 21;

    let mut s = cmd(["SADD", "set:int:small"]);
    s.extend((0..50).map(|i| (i * 3 - 20).to_string().into_bytes()));
    c.push(s);
    let mut s = cmd(["SADD", "set:int:big"]);
    s.extend((0..2000).map(|_| (rng.next() >> 2).to_string().into_bytes()));
    c.push(s);
    let mut s = cmd(["SADD", "set:str:small"]);
    s.extend((0..10).map(|_| rng.name("m-").into_bytes()));
    c.push(s);
    let mut s = cmd(["SADD", "set:str:big"]);
    s.extend((0..2000).map(|_| rng.name("member-").into_bytes()));
    c.push(s);
    k0.sets = 4;

    let mut z = cmd(["ZADD", "z:small"]);
    for i in 0..10 {
        z.push(format!("{}.5", i).into_bytes());
        z.push(rng.name("zm-").into_bytes());
    }
    c.push(z);
    let mut z = cmd(["ZADD", "z:big"]);
    for _ in 0..2000 {
        z.push(format!("{}", (rng.next() % 1_000_000) as f64 / 7.0).into_bytes());
        z.push(rng.name("zmember-").into_bytes());
    }
    c.push(z);
    k0.sorted_sets = 2;

    for i in 0..500 {
        c.push(cmd([
            "XADD".to_string(),
            "st:a".into(),
            "*".into(),
            "sensor".into(),
            format!("{i}"),
            "temp".into(),
            format!("{}", i % 40),
        ]));
    }
    c.push(cmd(["XGROUP", "CREATE", "st:a", "group-alpha", "0"]));
    c.push(cmd(["XGROUP", "CREATE", "st:a", "group-beta", "0"]));
    c.push(cmd(["XREADGROUP", "GROUP", "group-alpha", "alice", "COUNT", "10", "STREAMS", "st:a", ">"]));
    c.push(cmd(["XREADGROUP", "GROUP", "group-alpha", "bob", "COUNT", "5", "STREAMS", "st:a", ">"]));
    c.push(cmd(["XGROUP", "CREATECONSUMER", "st:a", "group-alpha", "dave-idle"]));
    c.push(cmd(["XREADGROUP", "GROUP", "group-beta", "carol", "COUNT", "3", "STREAMS", "st:a", ">"]));
    for i in 0..3 {
        c.push(cmd(["XADD".to_string(), "st:trimmed".into(), "*".into(), "x".into(), i.to_string()]));
    }
    c.push(cmd(["XTRIM", "st:trimmed", "MAXLEN", "0"]));
    k0.streams = 2;

    for i in 0..30 {
        c.push(cmd(["EXPIRE".to_string(), format!("s:{i}"), "100000".into()]));
    }
    c.push(cmd(["PEXPIRE", "l:small:0", "99999999"]));
    c.push(cmd(["EXPIRE", "h:big", "100000"]));
    c.push(cmd(["EXPIRE", "st:a", "100000"]));
    c.push(cmd(["EXPIRE", "z:big", "100000"]));

    // Database 1: strings and small hashes.
    c.push(cmd(["SELECT", "1"]));
    for i in 0..100 {
        c.push(cmd(["SET".to_string(), format!("k:{i}"), format!("{i}")]));
    }
    for i in 0..10 {
        c.push(cmd([
            "HSET".to_string(),
            format!("user:{i}"),
            "name".into(),
            format!("user {i}"),
            "age".into(),
            format!("{}", 20 + i),
        ]));
    }
    for i in 0..10 {
        c.push(cmd(["EXPIRE".to_string(), format!("k:{i}"), "5000".into()]));
    }
    let k1 = kinds.entry(1).or_default();
    k1.strings = 100;
    k1.hashes = 10;

    // Database 5: sorted sets, lists and a small stream.
    c.push(cmd(["SELECT", "5"]));
    for i in 0..10 {
        c.push(cmd([
            "ZADD".to_string(),
            format!("board:{i}"),
            "1".into(),
            "a".into(),
            "2".into(),
            "b".into(),
            "3".into(),
            "c".into(),
        ]));
    }
    for i in 0..5 {
        c.push(cmd(["LPUSH".to_string(), format!("queue:{i}"), "job1".into(), "job2".into()]));
    }
    for i in 0..50 {
        c.push(cmd(["XADD".to_string(), "events".into(), "*".into(), "n".into(), i.to_string()]));
    }
    c.push(cmd(["XGROUP", "CREATE", "events", "readers", "0"]));
    c.push(cmd(["XREADGROUP", "GROUP", "readers", "r1", "COUNT", "20", "STREAMS", "events", ">"]));
    c.push(cmd(["EXPIRE", "queue:0", "100000"]));
    let k5 = kinds.entry(5).or_default();
    k5.sorted_sets = 10;
    k5.lists = 5;
    k5.streams = 1;

    server.pipe(&c);
    kinds
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut dumps = Vec::new();
        let mut expected = None;
        for checksum in [true, false] {
            let server = RedisServer::start(if checksum { &[] } else { &["--rdbchecksum", "no"] });
            let kinds = populate(&server);
            let keyspace = server.keyspace();
            let dbsize = keyspace.iter().map(|&(db, _, _)| (db, server.dbsize(db))).collect();
            let info = server.cli(&["INFO", "server"]);
            let version = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap().trim().to_string();
            for compression in [true, false] {
                server.cli(&["CONFIG", "SET", "rdbcompression", if compression { "yes" } else { "no" }]);
                let name = match (checksum, compression) {
                    (true, true) => "crc+lzf",
                    (true, false) => "crc+raw",
                    (false, true) => "nocrc+lzf",
                    (false, false) => "nocrc+raw",
                };
                dumps.push(Dump { name, checksum, bytes: server.save() });
            }
            // Both servers got the same data, so they must agree.
            let this = (keyspace, dbsize, kinds, version);
            if let Some(prev) = &expected {
                assert_eq!(prev, &this, "the two servers hold different data");
            }
            expected = Some(this);
        }
        let (keyspace, dbsize, kinds, redis_version) = expected.unwrap();
        Fixture { dumps, keyspace, dbsize, kinds, redis_version }
    })
}

fn parse_whole(bytes: &[u8]) -> Result<RdbSummary, RdbError> {
    let mut p = RdbParser::new();
    p.feed(bytes)?;
    p.finish().cloned()
}

fn parse_in_slices(bytes: &[u8], rng: &mut Rng) -> Result<RdbSummary, RdbError> {
    let mut p = RdbParser::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        // Mostly small slices, sometimes large ones.
        let max = if rng.below(4) == 0 { 200_000 } else { 100 };
        let n = (1 + rng.below(max) as usize).min(rest.len());
        p.feed(&rest[..n])?;
        rest = &rest[n..];
    }
    p.finish().cloned()
}

#[test]
fn counts_match_the_live_server() {
    let fx = fixture();
    assert!(!fx.keyspace.is_empty());
    for dump in &fx.dumps {
        let s = parse_whole(&dump.bytes).unwrap_or_else(|e| panic!("{}: {e}", dump.name));
        assert_eq!(s.version, 10, "{}: Redis 7.0 writes RDB 10", dump.name);
        assert_eq!(s.server_version(), Some(fx.redis_version.as_str()), "{}", dump.name);
        assert_eq!(s.aux_value("redis-bits"), Some("64"));
        assert!(s.aux_value("ctime").is_some() && s.aux_value("used-mem").is_some());
        assert_eq!(s.aux_value("aof-base"), Some("0"));
        match (dump.checksum, s.checksum) {
            (true, ChecksumStatus::Valid(_)) | (false, ChecksumStatus::Disabled) => {}
            other => panic!("{}: checksum {other:?}", dump.name),
        }
        let got: Vec<(u64, u64, u64)> = s.dbs.iter().map(|(&db, d)| (db, d.keys, d.expires)).collect();
        assert_eq!(got, fx.keyspace, "{}: (db, keys, expires) vs INFO keyspace", dump.name);
        for (db, d) in &s.dbs {
            assert_eq!(Some(&d.keys), fx.dbsize.get(db), "{}: DBSIZE of db {db}", dump.name);
            assert_eq!(Some(&d.kinds), fx.kinds.get(db), "{}: key types of db {db}", dump.name);
            assert_eq!(d.resize_hint, Some((d.keys, d.expires)), "{}: RESIZEDB of db {db}", dump.name);
        }
        assert_eq!(s.empty_keys_skipped, 0);
        assert_eq!(s.unvalidated_containers, 0);
        assert_eq!(s.unchecked_keys, 0);
        assert_eq!(s.rdb_len, dump.bytes.len() as u64);
        assert_eq!(s.trailing_bytes, 0);
        // The quicklist with plain nodes (18), listpack hashes (16),
        // intsets (11), zset listpacks (17) and v2 streams (19) are all
        // present, so their decoders ran.
        for t in [0, 2, 4, 5, 11, 16, 17, 18, 19] {
            assert!(s.rdb_types.contains_key(&t), "{}: no key of RDB type {t}: {:?}", dump.name, s.rdb_types);
        }
        let name = format!("cairn-{}-{}.rdb", dump.name, std::process::id());
        let check = check_rdb(std::env::temp_dir().as_path(), &name, &dump.bytes, 120);
        assert_eq!(check, Check::Valid, "{}: redis-check-rdb disagrees on the clean dump", dump.name);
    }
}

#[test]
fn slices_of_any_size_give_the_same_summary() {
    let fx = fixture();
    let mut rng = Rng(99);
    for dump in &fx.dumps {
        let whole = parse_whole(&dump.bytes).unwrap();
        for _ in 0..3 {
            assert_eq!(parse_in_slices(&dump.bytes, &mut rng).unwrap(), whole, "{}", dump.name);
        }
    }
}

/// The decoder's and `redis-check-rdb`'s verdicts on one damaged file.
fn verdicts(dir: &std::path::Path, bytes: &[u8]) -> (Result<(), String>, Check) {
    let t = std::time::Instant::now();
    let ours = parse_whole(bytes).map(|_| ()).map_err(|e| e.to_string());
    // The decoder is linear in its input: a few MB take milliseconds.
    assert!(t.elapsed().as_secs() < 5, "cairn took {:?} on a damaged dump", t.elapsed());
    (ours, check_rdb(dir, "damaged.rdb", bytes, 30))
}

#[test]
fn damaged_dumps_get_the_same_verdict_as_redis_check_rdb() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    // CAIRN_ORACLE_SEED picks other damage for longer exploratory runs.
    let seed = std::env::var("CAIRN_ORACLE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(2024);
    let mut rng = Rng(seed);
    let mut disagreements = Vec::new();
    let mut timeouts = Vec::new();
    let mut tally = BTreeMap::new();
    for dump in &fx.dumps {
        let len = dump.bytes.len();
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        // Bit flips after the 9-byte header (a flipped version digit can
        // name RDB 11 or 12, which this decoder reads and redis-check-rdb
        // 7.0 refuses: a capability difference, not damage detection).
        let mut offsets: Vec<usize> = (0..30).map(|_| 9 + rng.below((len - 9) as u64) as usize).collect();
        // Most of a dump is the 1.5 MB random string, where a flip is
        // undetectable without a checksum; aim more flips at the rest.
        let payload = random_payload();
        let start = dump.bytes.windows(64).position(|w| w == &payload[..64]).expect("random payload in dump");
        while offsets.len() < 90 {
            let off = 9 + rng.below((len - 9) as u64) as usize;
            if !(start..start + payload.len()).contains(&off) {
                offsets.push(off);
            }
        }
        // Plus the first opcodes, and the EOF opcode and trailer.
        offsets.extend([9, 10, 11, 20, len - 9, len - 8, len - 1]);
        for off in offsets {
            let bit = rng.below(8);
            let mut b = dump.bytes.clone();
            b[off] ^= 1 << bit;
            cases.push((format!("flip bit {bit} at {off}"), b));
        }
        for cut in [0, 5, 9, 10, 100, len / 3, len / 2, len - 9, len - 8, len - 1] {
            cases.push((format!("truncate to {cut}"), dump.bytes[..cut].to_vec()));
        }
        for (what, bytes) in cases {
            let (ours, theirs) = verdicts(dir.path(), &bytes);
            *tally.entry((dump.name, ours.is_ok())).or_insert(0u32) += 1;
            if dump.checksum {
                // With a checksum every flip and cut must be caught.
                assert!(ours.is_err(), "{}: {what}: not detected", dump.name);
            }
            match theirs {
                Check::TimedOut => timeouts.push(format!("{}: {what}: cairn {ours:?}", dump.name)),
                Check::Valid if ours.is_err() => {
                    disagreements.push(format!("{}: {what}: cairn {ours:?}, redis-check-rdb OK", dump.name))
                }
                Check::Invalid(report) if ours.is_ok() => {
                    disagreements.push(format!("{}: {what}: cairn OK, redis-check-rdb {report}", dump.name))
                }
                _ => {}
            }
        }
    }
    eprintln!("verdicts (dump, cairn accepted) -> cases: {tally:?}");
    // A hang of redis-check-rdb gives no verdict to compare; one in a
    // while is its bug, many would mean something else is wrong.
    eprintln!("redis-check-rdb timed out on {} cases: {timeouts:#?}", timeouts.len());
    assert!(timeouts.len() <= 2, "too many redis-check-rdb timeouts: {timeouts:#?}");
    assert!(disagreements.is_empty(), "disagreements:\n{}", disagreements.join("\n"));
}
