//! RDB features the installed Redis 7.0 cannot write (RDB 11 and 12 types,
//! modules, functions, Valkey headers, pre-3.2 encodings), built byte by
//! byte from Redis's `rdb.c`/`rdb.h`, plus the committed fixture written by
//! Redis 7.0.15, which runs without a server.

use cairn_formats::redis::{ChecksumStatus, RdbError, RdbLimits, RdbParser, RdbSummary};

const FIXTURE: &[u8] = include_bytes!("../testdata/redis/small-7.0.15.rdb");

/// Writes RDB syntax the way `rdbSave*` does.
struct Rdb(Vec<u8>);

impl Rdb {
    fn new(version: u32) -> Rdb {
        Rdb(format!("REDIS{version:04}").into_bytes())
    }
    fn op(mut self, b: u8) -> Rdb {
        self.0.push(b);
        self
    }
    fn raw(mut self, b: &[u8]) -> Rdb {
        self.0.extend_from_slice(b);
        self
    }
    fn len(mut self, n: u64) -> Rdb {
        if n < 1 << 6 {
            self.0.push(n as u8);
        } else if n < 1 << 14 {
            self.0.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]);
        } else if n <= u64::from(u32::MAX) {
            self.0.push(0x80);
            self.0.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            self.0.push(0x81);
            self.0.extend_from_slice(&n.to_be_bytes());
        }
        self
    }
    fn str(self, s: &[u8]) -> Rdb {
        self.len(s.len() as u64).raw(s)
    }
    /// A key of `rdb_type` named `name`; the value follows.
    fn key(self, rdb_type: u8, name: &str) -> Rdb {
        self.op(rdb_type).str(name.as_bytes())
    }
    /// EOF and a CRC-64 trailer (or zeros).
    fn end(self, checksum: bool) -> Vec<u8> {
        let mut b = self.op(0xff).0;
        let crc = if checksum { crc::Crc::<u64>::new(&crc::CRC_64_REDIS).checksum(&b) } else { 0 };
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }
}

/// A listpack of small strings and integers.
fn listpack(elems: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in elems {
        let start = body.len();
        match std::str::from_utf8(e)
            .ok()
            .and_then(|s| s.parse::<u8>().ok())
            .filter(|&v| v < 128 && e.len() < 4 && (e[0] != b'0' || e.len() == 1))
        {
            Some(v) => body.push(v),
            None => {
                assert!(e.len() < 64);
                body.push(0x80 | e.len() as u8);
                body.extend_from_slice(e);
            }
        }
        let l = body.len() - start;
        assert!(l < 128);
        body.push(l as u8);
    }
    let mut lp = ((body.len() + 7) as u32).to_le_bytes().to_vec();
    lp.extend_from_slice(&(elems.len() as u16).to_le_bytes());
    lp.extend_from_slice(&body);
    lp.push(0xff);
    lp
}

fn parse(bytes: &[u8]) -> Result<RdbSummary, RdbError> {
    let mut p = RdbParser::new();
    p.feed(bytes)?;
    p.finish().cloned()
}

#[test]
fn fixture_from_redis_7_0_15() {
    let s = parse(FIXTURE).unwrap();
    assert_eq!(s.version, 10);
    assert_eq!(s.server_version(), Some("7.0.15"));
    assert!(matches!(s.checksum, ChecksumStatus::Valid(_)));
    let db0 = &s.dbs[&0];
    let db2 = &s.dbs[&2];
    // What `INFO keyspace` said when the fixture was saved.
    assert_eq!((db0.keys, db0.expires, db2.keys, db2.expires), (10, 1, 1, 1));
    let k = db0.kinds;
    assert_eq!((k.strings, k.lists, k.sets, k.sorted_sets, k.hashes, k.streams), (3, 2, 2, 1, 1, 1));
}

#[test]
fn every_truncation_and_bit_flip_of_the_fixture_is_rejected() {
    for cut in 0..FIXTURE.len() {
        match parse(&FIXTURE[..cut]) {
            Err(RdbError::Truncated { offset, .. }) => assert_eq!(offset, cut as u64),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    for at in 0..FIXTURE.len() {
        for bit in 0..8 {
            let mut b = FIXTURE.to_vec();
            b[at] ^= 1 << bit;
            assert!(parse(&b).is_err(), "flip of bit {bit} at {at} not detected");
        }
    }
}

#[test]
fn rdb_11_and_12_types() {
    let lp_set = listpack(&[b"a", b"b", b"7"]);
    let v11 = Rdb::new(11).op(0xfe).len(0).key(20, "set-lp").str(&lp_set).end(true);
    let s = parse(&v11).unwrap();
    assert_eq!(s.dbs[&0].kinds.sets, 1);
    assert_eq!(s.rdb_types.get(&20), Some(&1));
    // Type 20 did not exist in RDB 10: Redis 7.0 refuses it, and so do we.
    let v10 = Rdb::new(10).key(20, "set-lp").str(&lp_set).end(true);
    assert!(matches!(parse(&v10), Err(RdbError::Invalid { offset: 9, .. })));

    // Hash with field TTLs (7.4): min expiry, then [ttl, field, value].
    let meta = Rdb::new(12).key(24, "h").raw(&1_700_000_000_000u64.to_le_bytes()).len(2);
    let meta = meta.len(0).str(b"f1").str(b"v1").len(5).str(b"f2").str(b"v2").end(true);
    assert_eq!(parse(&meta).unwrap().dbs[&0].kinds.hashes, 1);
    let too_late = Rdb::new(12).key(24, "h").raw(&1_700_000_000_000u64.to_le_bytes()).len(1);
    let too_late = too_late.len(1 << 48).str(b"f").str(b"v").end(true);
    assert!(matches!(parse(&too_late), Err(RdbError::Invalid { .. })));
    let dup = Rdb::new(12).key(24, "h").raw(&0u64.to_le_bytes()).len(2);
    let dup = dup.len(0).str(b"f").str(b"v").len(0).str(b"f").str(b"w").end(true);
    assert!(matches!(parse(&dup), Err(RdbError::Invalid { .. })));

    // Listpack hash with TTLs: 8-byte min expiry, then triplets whose TTLs
    // come first and ascend.
    let lp_ex = listpack(&[b"f1", b"v1", b"100", b"f2", b"v2", b"0"]);
    let ok = Rdb::new(12).key(25, "hx").raw(&100u64.to_le_bytes()).str(&lp_ex).end(true);
    assert_eq!(parse(&ok).unwrap().dbs[&0].kinds.hashes, 1);
    let unordered = listpack(&[b"f1", b"v1", b"0", b"f2", b"v2", b"100"]);
    let bad = Rdb::new(12).key(25, "hx").raw(&100u64.to_le_bytes()).str(&unordered).end(true);
    assert!(matches!(parse(&bad), Err(RdbError::Container { .. })));
    // The 7.4 release candidate forms (22, 23) have no min expiry.
    let pre = Rdb::new(12).key(23, "hx").str(&lp_ex).key(22, "hm").len(1).len(7).str(b"f").str(b"v").end(true);
    assert_eq!(parse(&pre).unwrap().dbs[&0].kinds.hashes, 2);
}

/// A stream of version `v` (15, 19 or 21) with one node of one entry, one
/// group whose pending list holds `group_pel` and whose consumer claims
/// `consumer_pel`.
fn stream(v: u8, group_pel: &[[u8; 16]], consumer_pel: &[[u8; 16]]) -> Vec<u8> {
    let node = listpack(&[b"1", b"0", b"1", b"f", b"0", b"2", b"0", b"0", b"v", b"4"]);
    let mut r = Rdb::new(11).key(v, "st").len(1).str(&[0u8; 16]).str(&node).len(1).len(5).len(0);
    if v >= 19 {
        r = r.len(5).len(0).len(0).len(0).len(1);
    }
    r = r.len(1).str(b"grp").len(5).len(0);
    if v >= 19 {
        r = r.len(1);
    }
    r = r.len(group_pel.len() as u64);
    for id in group_pel {
        r = r.raw(id).raw(&0u64.to_le_bytes()).len(1);
    }
    r = r.len(1).str(b"alice").raw(&0u64.to_le_bytes());
    if v >= 21 {
        r = r.raw(&0u64.to_le_bytes());
    }
    r = r.len(consumer_pel.len() as u64);
    for id in consumer_pel {
        r = r.raw(id);
    }
    r.end(true)
}

#[test]
fn streams_v1_v2_v3_and_pending_list_consistency() {
    let a = [1u8; 16];
    let b = [2u8; 16];
    for v in [15, 19, 21] {
        let s = parse(&stream(v, &[a, b], &[a, b])).unwrap_or_else(|e| panic!("stream v{v}: {e}"));
        assert_eq!(s.dbs[&0].kinds.streams, 1);
    }
    // A consumer entry missing from the group list, a group entry nobody
    // owns, and a consumer claiming one entry twice are all refused.
    for (gp, cp) in [(&[a][..], &[a, b][..]), (&[a, b][..], &[a][..]), (&[a][..], &[a, a][..])] {
        assert!(matches!(parse(&stream(21, gp, cp)), Err(RdbError::Invalid { .. })));
    }
}

#[test]
fn modules_functions_and_slot_info() {
    // Module id: the name "cairntest" in 54 bits, encoding version 3.
    const CSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let id =
        b"cairntest".iter().fold(0u64, |acc, c| acc << 6 | CSET.iter().position(|x| x == c).unwrap() as u64) << 10 | 3;
    let module_value =
        |r: Rdb| r.len(2).len(42).len(5).str(b"payload").len(4).raw(&1.5f64.to_le_bytes()).len(3).raw(&[0; 4]).len(0);
    let r = Rdb::new(10).op(0xf7).len(id).len(2).len(1);
    let r = module_value(r).op(0xf5).str(b"#!lua name=lib\n").op(0xf4).len(7).len(1).len(0);
    let r = module_value(r.key(7, "m").len(id));
    let s = parse(&r.end(true)).unwrap();
    assert_eq!(s.module_aux.get("cairntest"), Some(&1));
    assert_eq!(s.module_types.get("cairntest"), Some(&1));
    assert_eq!(s.functions, 1);
    assert_eq!(s.dbs[&0].kinds.modules, 1);

    let unknown_opcode = Rdb::new(10).key(7, "m").len(id).len(9).end(true);
    assert!(matches!(parse(&unknown_opcode), Err(RdbError::Invalid { .. })));
    let bad_when = Rdb::new(10).op(0xf7).len(id).len(1).len(1).len(0).end(true);
    assert!(matches!(parse(&bad_when), Err(RdbError::Invalid { .. })));
    assert!(matches!(parse(&Rdb::new(10).key(6, "m").end(true)), Err(RdbError::Unsupported { offset: 9, .. })));
    assert!(matches!(parse(&Rdb::new(10).op(0xf6).end(true)), Err(RdbError::Unsupported { offset: 9, .. })));
}

#[test]
fn headers_valkey_and_versions() {
    let valkey = Rdb(b"VALKEY080".to_vec()).end(true);
    assert_eq!(parse(&valkey), Err(RdbError::Valkey { version: 80 }));
    assert_eq!(parse(&Rdb::new(80).end(true)), Err(RdbError::Valkey { version: 80 }));
    assert_eq!(parse(&Rdb::new(13).end(true)), Err(RdbError::UnsupportedVersion { version: 13 }));
    assert!(matches!(parse(b"RUBBISH01\xff"), Err(RdbError::BadMagic { .. })));
    assert!(matches!(parse(b"REDIS00x1\xff"), Err(RdbError::BadMagic { .. })));
    // Valkey 8 writes RDB 11 with a valkey-ver AUX field.
    let v8 = Rdb::new(11).op(0xfa).str(b"valkey-ver").str(b"8.0.1").end(true);
    assert_eq!(parse(&v8).unwrap().server_version(), Some("8.0.1"));
    // Versions before 5 have no trailer.
    let mut v4 = Rdb::new(4).key(0, "k").str(b"v").op(0xff).0;
    assert_eq!(parse(&v4).unwrap().checksum, ChecksumStatus::Absent);
    v4.extend_from_slice(b"junk");
    assert_eq!(parse(&v4).unwrap().trailing_bytes, 4);
}

#[test]
fn old_encodings() {
    // zipmap: 1 pair "ab" -> "c" with one free byte.
    let zipmap = [1, 2, b'a', b'b', 1, 1, b'c', 0, 255];
    // ziplist of "x", "y" (list) and "f", "v" (pairs).
    let ziplist = |a: &[u8], b: &[u8]| {
        let mut body = vec![0, a.len() as u8];
        body.extend_from_slice(a);
        let tail = 10 + body.len();
        body.extend_from_slice(&[(2 + a.len()) as u8, b.len() as u8]);
        body.extend_from_slice(b);
        let mut zl = ((body.len() + 11) as u32).to_le_bytes().to_vec();
        zl.extend_from_slice(&(tail as u32).to_le_bytes());
        zl.extend_from_slice(&2u16.to_le_bytes());
        zl.extend_from_slice(&body);
        zl.push(255);
        zl
    };
    let r = Rdb::new(6).op(0xfd).raw(&100u32.to_le_bytes()).key(9, "zm").str(&zipmap);
    let r = r.key(10, "zl").str(&ziplist(b"x", b"y")).key(12, "zz").str(&ziplist(b"m", b"1"));
    let r = r.key(13, "zh").str(&ziplist(b"f", b"v")).key(14, "ql").len(1).str(&ziplist(b"x", b"y"));
    let r = r.key(3, "z").len(1).str(b"m").op(3).raw(b"1.5").key(1, "l").len(1).str(b"e");
    let s = parse(&r.end(true)).unwrap();
    let d = &s.dbs[&0];
    assert_eq!((d.keys, d.expires), (7, 1));
    assert_eq!((d.kinds.hashes, d.kinds.lists, d.kinds.sorted_sets), (2, 3, 2));
    let nan = Rdb::new(6).key(3, "z").len(1).str(b"m").op(253).end(true);
    assert!(matches!(parse(&nan), Err(RdbError::Invalid { .. })));
}

#[test]
fn empty_keys_are_skipped_like_redis_does() {
    let r = Rdb::new(10).key(1, "empty-list").len(0).key(16, "empty-hash").str(&listpack(&[])).key(0, "k").str(b"v");
    let s = parse(&r.end(true)).unwrap();
    assert_eq!(s.empty_keys_skipped, 2);
    assert_eq!(s.dbs[&0].keys, 1);
}

#[test]
fn large_values_stream_through_bounded_memory() {
    // A 20 MB raw string and a 10 MB LZF string, fed in 1 MB slices.
    let big = vec![b'z'; 20 << 20];
    let text: Vec<u8> = (0..10 << 20).map(|i| b"0123456789abcdef"[(i * 7 + i / 4096) % 16]).collect();
    let packed = lzf::compress(&text).unwrap();
    let mut r =
        Rdb::new(10).key(0, "raw").str(&big).key(0, "lzf").op(0xc3).len(packed.len() as u64).len(text.len() as u64);
    r = r.raw(&packed);
    let file = r.end(true);
    let mut p = RdbParser::new();
    for piece in file.chunks(1 << 20) {
        p.feed(piece).unwrap();
    }
    assert_eq!(p.finish().unwrap().dbs[&0].keys, 2);
    // A wrong raw length in the LZF header is caught.
    let lie =
        Rdb::new(10).key(0, "lzf").op(0xc3).len(packed.len() as u64).len(text.len() as u64 + 1).raw(&packed).end(true);
    assert!(matches!(parse(&lie), Err(RdbError::Lzf { offset: 14, .. })));
}

#[test]
fn limits_are_reported_not_exceeded() {
    let lp = listpack(&[b"a", b"1", b"b", b"2"]);
    let r = Rdb::new(10).key(16, "h").str(&lp).key(2, "s").len(3).str(b"x").str(b"y").str(b"z").end(true);
    let limits = RdbLimits { max_container_bytes: 8, max_aux_bytes: 8, max_tracked_bytes: 40 };
    let mut p = RdbParser::with_limits(limits);
    p.feed(&r).unwrap();
    let s = p.finish().unwrap();
    assert_eq!((s.unvalidated_containers, s.unchecked_keys, s.total_keys()), (1, 1, 2));
}

#[test]
fn checksum_mismatch_names_both_values() {
    let mut file = Rdb::new(10).key(0, "k").str(b"v").end(true);
    let n = file.len();
    file[n - 1] ^= 0x80;
    match parse(&file) {
        Err(RdbError::ChecksumMismatch { offset, stored, computed }) => {
            assert_eq!(offset, n as u64 - 8);
            assert_eq!(stored ^ computed, 0x80 << 56);
        }
        other => panic!("{other:?}"),
    }
}
