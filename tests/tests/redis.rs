//! `cairn backup --kind redis-rdb` and `cairn redis restore` against a real
//! redis-server 7: the restored dump passes `redis-check-rdb`, and a fresh
//! server loading it reports the same `DEBUG DIGEST` and per-database key
//! counts as the source did at backup time; damaged dumps leave no snapshot.
//! Live pulls (`cairn redis backup --url`) are checked the same way, with
//! diskless and disk-based sync, over TLS, and for deduplication.

use cairn_tests::redis::{cmd, RedisServer, TlsFiles};
use cairn_tests::repo::code;
use cairn_tests::TestRepo;

/// Every type, TTLs, several databases, and `n` extra string keys.
fn populate(s: &RedisServer, n: u64) {
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = vec![
        cmd([&b"SET"[..], b"big", &big]),
        cmd(["SET", "int", "12345"]),
        cmd(["SET", "neg", "-7"]),
        cmd(["RPUSH", "list", "a", "b", "c"]),
        cmd(["HSET", "hash", "f1", "v1", "f2", "v2"]),
        cmd(["SADD", "set", "x", "y", "z"]),
        cmd(["SADD", "intset", "1", "2", "3"]),
        cmd(["ZADD", "zset", "1", "one", "2.5", "two"]),
        cmd(["XADD", "stream", "*", "k", "v"]),
        cmd(["XGROUP", "CREATE", "stream", "g1", "0"]),
        cmd(["SET", "ttl", "v", "EX", "100000"]),
    ];
    for i in 0..2000 {
        c.push(cmd(["RPUSH", "biglist", &format!("item-{i}")]));
        c.push(cmd(["HSET", "bighash", &format!("f{i}"), &format!("v{i}")]));
        c.push(cmd(["ZADD", "bigzset", &i.to_string(), &format!("m{i}")]));
        c.push(cmd(["SADD", "bigset", &format!("s{i}")]));
    }
    c.push(cmd(["SELECT", "1"]));
    c.push(cmd(["SET", "in-db1", "v"]));
    c.push(cmd(["SELECT", "5"]));
    c.push(cmd(["HSET", "in-db5", "f", "v"]));
    c.push(cmd(["EXPIRE", "in-db5", "100000"]));
    s.pipe(&c);
    if n > 0 {
        assert_eq!(s.cli(&["DEBUG", "POPULATE", &n.to_string()]).trim(), "OK");
    }
}

fn digest(s: &RedisServer) -> String {
    s.cli(&["DEBUG", "DIGEST"]).trim().to_string()
}

#[test]
fn rdb_round_trip_through_a_fresh_server() {
    let repo = TestRepo::new();
    let src = RedisServer::start(&[]);
    populate(&src, 1_000_000);
    let want_digest = digest(&src);
    let want_keyspace = src.keyspace();
    let dump = src.dir.path().join("dump.rdb");
    let rdb_len = src.save().len() as u64;

    let b = repo.json(&["backup", "--kind", "redis-rdb", "--source", "cache", dump.to_str().unwrap()]);
    let snaps = repo.json(&["snapshots"]);
    let meta = &snaps[0]["metadata"];
    assert_eq!(snaps[0]["source"]["kind"], "redis-rdb");
    let total: u64 = want_keyspace.iter().map(|(_, k, _)| k).sum();
    assert_eq!(meta["keys"].as_u64().unwrap(), total, "{meta}");
    for (db, keys, expires) in &want_keyspace {
        assert_eq!(meta["databases"][db.to_string()]["keys"].as_u64().unwrap(), *keys, "db {db}: {meta}");
        assert_eq!(meta["databases"][db.to_string()]["expires"].as_u64().unwrap(), *expires, "db {db}");
    }
    assert!(meta["redis_ver"].as_str().unwrap().starts_with('7'), "{meta}");
    assert_eq!(meta["checksum"]["status"], "valid");

    // Restore into a fresh server's directory; redis-check-rdb and the
    // server itself are the oracles.
    let dir = tempfile::tempdir().unwrap();
    let restored = dir.path().join("dump.rdb");
    repo.ok(&["redis", "restore", "latest", "--to", restored.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&restored).unwrap().len(), rdb_len);
    let check = std::process::Command::new("redis-check-rdb").arg(&restored).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && report.contains("RDB looks OK"), "{report}");
    let fresh = RedisServer::start_in(dir, &[]);
    assert_eq!(digest(&fresh), want_digest);
    assert_eq!(fresh.keyspace(), want_keyspace);

    // A slowly changing dataset: the next backup adds little. Redis writes
    // keys in hash-table order (seeded at random per server start), so each
    // changed key dirties the chunk it happens to land in, and the header's
    // AUX fields and the trailing CRC-64 dirty one chunk each. With content-
    // defined cuts a change can move at most the next cut too: so at most
    // 2 new chunks per changed key, plus 2.
    let changes = 5;
    src.pipe(&(0..changes).map(|i| cmd(["SET", &format!("key:{}", i * 199_999), "changed"])).collect::<Vec<_>>());
    let rdb2 = src.save().len() as u64;
    let b2 = repo.json(&["backup", "--kind", "redis-rdb", "--source", "cache", dump.to_str().unwrap()]);
    let new_bytes = b2["stats"]["new_bytes"].as_u64().unwrap();
    let (new_chunks, chunks) = (b2["stats"]["new_chunks"].as_u64().unwrap(), b2["stats"]["chunks"].as_u64().unwrap());
    eprintln!(
        "RDB {rdb_len} bytes, first backup new {} bytes; second RDB {rdb2} bytes, new {new_bytes} bytes ({:.1} %), \
         {new_chunks} of {chunks} chunks",
        b["stats"]["new_bytes"],
        100.0 * new_bytes as f64 / rdb2 as f64
    );
    assert!(new_chunks <= 2 * changes + 2 && new_chunks < chunks, "{new_chunks} of {chunks} chunks were new");
}

#[test]
fn damaged_rdb_leaves_no_snapshot() {
    let repo = TestRepo::new();
    let src = RedisServer::start(&[]);
    populate(&src, 20_000);
    let rdb = src.save();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", rdb[..rdb.len() / 2].to_vec()),
        ("missing checksum", rdb[..rdb.len() - 8].to_vec()),
        ("flipped byte", {
            let mut b = rdb.clone();
            let at = b.len() / 3;
            b[at] ^= 0x40;
            b
        }),
        ("not an RDB", b"REDIS is not what this is".to_vec()),
    ];
    for (what, bytes) in cases {
        let path = dir.path().join("dump.rdb");
        std::fs::write(&path, &bytes).unwrap();
        let out = repo.run(&["backup", "--kind", "redis-rdb", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 7, "{what}: {err}");
        assert!(err.contains("not a valid RDB stream"), "{what}: {err}");
        // Also through a pipe.
        let out = repo.run_stdin(&["backup", "--kind", "redis-rdb", "-"], &bytes);
        assert_eq!(code(&out), 7, "{what} via stdin");
    }
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 0);
    // The intact dump is accepted.
    let path = dir.path().join("dump.rdb");
    std::fs::write(&path, &rdb).unwrap();
    repo.ok(&["backup", "--kind", "redis-rdb", path.to_str().unwrap()]);
}

fn restore_and_compare(repo: &TestRepo, src_digest: &str, src_keyspace: &[(u64, u64, u64)]) {
    let dir = tempfile::tempdir().unwrap();
    let restored = dir.path().join("dump.rdb");
    repo.ok(&["redis", "restore", "latest", "--to", restored.to_str().unwrap()]);
    let check = std::process::Command::new("redis-check-rdb").arg(&restored).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && report.contains("RDB looks OK"), "{report}");
    let fresh = RedisServer::start_in(dir, &[]);
    assert_eq!(digest(&fresh), src_digest);
    assert_eq!(fresh.keyspace(), src_keyspace);
}

/// Asserts that a live backup's snapshot metadata counts the keys and
/// expiring keys of every database in `keyspace`.
fn assert_counts(v: &serde_json::Value, keyspace: &[(u64, u64, u64)]) {
    let meta = &v["metadata"];
    let total: u64 = keyspace.iter().map(|(_, k, _)| k).sum();
    assert_eq!(meta["keys"].as_u64().unwrap(), total, "{meta}");
    for (db, keys, expires) in keyspace {
        assert_eq!(meta["databases"][db.to_string()]["keys"].as_u64().unwrap(), *keys, "db {db}: {meta}");
        assert_eq!(meta["databases"][db.to_string()]["expires"].as_u64().unwrap(), *expires, "db {db}: {meta}");
    }
}

/// The full dataset (every type, TTLs, three databases, > 1M keys) pulled
/// live from a password-protected server, once with diskless sync and once
/// disk-based, each restored and checked against the source; then a few
/// changed keys and a third pull, which must deduplicate against the first
/// two. One server serves all three: populating it dominates the run time.
#[test]
fn live_pull_disk_based_and_diskless() {
    let repo = TestRepo::new();
    let mut src = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    populate(&src, 1_000_000);
    src.set_password("s3cret-pw");
    let url = format!("redis://127.0.0.1:{}", src.port);
    let pwfile = repo.dir.path().join("redis-password");
    std::fs::write(&pwfile, "s3cret-pw\n").unwrap();
    let live_backup = |what: &str| -> serde_json::Value {
        let mut c =
            repo.cmd(&["--json", "redis", "backup", "--url", &url, "--redis-password-file", pwfile.to_str().unwrap()]);
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {text}");
        assert!(!text.contains("s3cret-pw"), "the password was printed");
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let (want, keyspace) = (digest(&src), src.keyspace());
    assert!(keyspace.iter().map(|(_, k, _)| k).sum::<u64>() > 1_000_000, "{keyspace:?}");
    assert_eq!(keyspace.len(), 3, "{keyspace:?}");
    let mut first = None;
    for (diskless, transfer) in [("yes", "diskless"), ("no", "disk")] {
        assert_eq!(src.cli(&["CONFIG", "SET", "repl-diskless-sync", diskless]).trim(), "OK");
        let v = live_backup(transfer);
        assert_eq!(v["metadata"]["transfer"], transfer, "{v}");
        assert_eq!(v["metadata"]["repl_id"].as_str().unwrap().len(), 40, "{v}");
        assert!(v["metadata"]["redis_ver"].as_str().unwrap().starts_with('7'), "{v}");
        assert_counts(&v, &keyspace);
        first.get_or_insert(v["stats"]["new_bytes"].clone());
        // A fresh server without requirepass loads the restored dump.
        restore_and_compare(&repo, &want, &keyspace);
    }

    // Successive live backups of a slowly changing dataset deduplicate,
    // bounded as for files (rdb_round_trip_through_a_fresh_server): each
    // changed key dirties its chunk and at most the next cut, and the
    // header's AUX fields (repl-id, repl-offset, ctime) and the trailing
    // CRC-64 dirty one chunk each.
    let changes = 5;
    src.pipe(&(0..changes).map(|i| cmd(["SET", &format!("key:{}", i * 199_999), "changed"])).collect::<Vec<_>>());
    let (want, keyspace) = (digest(&src), src.keyspace());
    let v = live_backup("after changes");
    let (new_chunks, chunks) = (v["stats"]["new_chunks"].as_u64().unwrap(), v["stats"]["chunks"].as_u64().unwrap());
    eprintln!(
        "live RDB {} bytes, first pull new {} bytes; after {changes} changes new {} bytes, {new_chunks} of {chunks} chunks",
        v["stats"]["bytes_read"], first.unwrap(), v["stats"]["new_bytes"]
    );
    assert!(new_chunks <= 2 * changes + 2 && new_chunks < chunks, "{new_chunks} of {chunks} chunks were new");
    assert_counts(&v, &keyspace);
    restore_and_compare(&repo, &want, &keyspace);

    // Wrong or missing password: a clear error, no snapshot.
    let before = repo.json(&["snapshots"]).as_array().unwrap().len();
    let out = repo.run(&["redis", "backup", "--url", &url]);
    assert_ne!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires a password"));
    let mut c = repo.cmd(&["redis", "backup", "--url", &url]);
    let out = c.env("REDISCLI_AUTH", "wrong-pw").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong-pw"));
    let mut c = repo.cmd(&["redis", "backup", "--url", &url]);
    assert!(c.env("REDISCLI_AUTH", "s3cret-pw").output().unwrap().status.success());
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), before + 1);
}

/// The repository password given the documented way (`CAIRN_PASSWORD_FILE`,
/// no key file) and the Redis password in the URL: each goes where it
/// belongs. Regression test: while the Redis password file was also called
/// `--password-file`, the repository's was sent to Redis (WRONGPASS).
#[test]
fn live_pull_with_url_password_and_repository_password_file() {
    let repo = TestRepo::new();
    let mut src = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    populate(&src, 0);
    src.set_password("redis-pw");
    let (want, keyspace) = (digest(&src), src.keyspace());
    let repo_pw = repo.dir.path().join("repository-password");
    std::fs::write(&repo_pw, "repository-pw\n").unwrap();
    repo.ok(&["key", "add", "--new-password-file", repo_pw.to_str().unwrap()]);

    let url = format!("redis://:redis-pw@127.0.0.1:{}", src.port);
    let mut c = repo.cmd(&["--json", "redis", "backup", "--url", &url]);
    let out = c.env_remove("CAIRN_KEY_FILE").env("CAIRN_PASSWORD_FILE", &repo_pw).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("repository-pw") && !err.contains("WRONGPASS"), "{err}");
    assert_counts(&serde_json::from_slice(&out.stdout).unwrap(), &keyspace);
    restore_and_compare(&repo, &want, &keyspace);
}

/// `rediss://` against a server that speaks only TLS: the server's
/// certificate is verified against `--tls-ca-file` and the host name, a
/// client certificate is presented when the server demands one, and every
/// refusal is a clear error that leaves no snapshot.
#[test]
fn live_pull_over_tls() {
    let repo = TestRepo::new();
    let tls = TlsFiles::generate();
    let src = RedisServer::start_tls(&tls, &["--repl-diskless-sync-delay", "0"]);
    populate(&src, 20_000);
    let (want, keyspace) = (digest(&src), src.keyspace());
    let url = format!("rediss://127.0.0.1:{}", src.port);
    let ca = tls.path("ca.crt");

    let v = repo.json(&["redis", "backup", "--url", &url, "--tls-ca-file", &ca]);
    assert_counts(&v, &keyspace);
    restore_and_compare(&repo, &want, &keyspace);
    // --tls with a redis:// URL; the certificate's DNS name instead of its IP.
    let plain_url = format!("redis://127.0.0.1:{}", src.port);
    repo.ok(&["redis", "backup", "--url", &plain_url, "--tls", "--tls-ca-file", &ca, "--tls-server-name", "localhost"]);
    let snapshots = || repo.json(&["snapshots"]).as_array().unwrap().len();
    assert_eq!(snapshots(), 2);

    let refused = |args: &[&str], want_err: &str| {
        let out = repo.run(&[&["redis", "backup", "--url"], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(code(&out), 0, "{args:?}: {err}");
        assert!(err.contains(want_err), "{args:?}: {err}");
        eprintln!("refused as expected: {}", err.trim());
    };
    // A CA that did not sign the server's certificate, the system's roots
    // (which know nothing of the test CA), a name the certificate does not
    // carry, and plain text to a TLS-only port.
    refused(&[&url, "--tls-ca-file", &tls.path("other-ca.crt")], "invalid peer certificate");
    refused(&[&url], "TLS");
    refused(&[&url, "--tls-ca-file", &ca, "--tls-server-name", "elsewhere.example"], "invalid peer certificate");
    refused(&[&plain_url], &format!("redis 127.0.0.1:{}", src.port));
    refused(&[&url, "--tls-ca-file", &tls.path("server.key")], "no CERTIFICATE section");

    // The server now demands client certificates.
    assert_eq!(src.cli(&["CONFIG", "SET", "tls-auth-clients", "yes"]).trim(), "OK");
    refused(&[&url, "--tls-ca-file", &ca], "redis 127.0.0.1");
    assert_eq!(snapshots(), 2);
    let (cert, key) = (tls.path("client.crt"), tls.path("client.key"));
    repo.ok(&[
        "redis",
        "backup",
        "--url",
        &url,
        "--tls-ca-file",
        &ca,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
    ]);
    assert_eq!(snapshots(), 3);
    restore_and_compare(&repo, &want, &keyspace);
}

/// A server that completes the handshake, sends part of a real RDB and
/// drops the connection, the way a server killed mid-transfer does; in
/// both payload forms.
#[test]
fn server_dying_mid_transfer_leaves_no_snapshot() {
    use std::io::{BufRead, BufReader, Write};
    let repo = TestRepo::new();
    let src = RedisServer::start(&[]);
    populate(&src, 20_000);
    let rdb = src.save();
    for form in ["length", "eof-mark"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bytes = rdb.clone();
        let server = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let mut r = BufReader::new(sock.try_clone().unwrap());
            let mut w = sock;
            // AUTH-less handshake: PING, REPLCONF ×2, PSYNC; each command is a RESP array.
            for reply in ["+PONG", "+OK", "+OK", "+FULLRESYNC 0123456789012345678901234567890123456789 42"] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let n: usize = line.trim()[1..].parse().unwrap();
                for _ in 0..2 * n {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                }
                write!(w, "{reply}\r\n").unwrap();
            }
            w.write_all(b"\n\n").unwrap(); // keepalives
            if form == "length" {
                write!(w, "${}\r\n", bytes.len()).unwrap();
            } else {
                w.write_all(b"$EOF:abcdefghijabcdefghijabcdefghijabcdefghij\r\n").unwrap();
            }
            w.write_all(&bytes[..bytes.len() / 2]).unwrap();
            // Dropping the socket here is the server dying.
        });
        let out = repo.run(&["redis", "backup", "--url", &format!("redis://127.0.0.1:{port}")]);
        server.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 7, "{form}: {err}");
        assert!(err.contains("connection closed") || err.contains("not a valid RDB"), "{form}: {err}");
    }
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 0);
}

/// A real redis-server killed (SIGKILL) while it streams the RDB to a live
/// backup (diskless sync, so the dump goes straight to the socket): the
/// backup fails with a clear error and leaves no snapshot.
#[test]
fn real_server_killed_mid_transfer_leaves_no_snapshot() {
    let repo = TestRepo::new();
    let src = RedisServer::start(&["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]);
    populate(&src, 20_000);
    // Slow the server's RDB writer down (50 µs a key: about a second for
    // the dump), so the kill lands in the middle of the transfer.
    src.cli(&["CONFIG", "SET", "rdb-key-save-delay", "50"]);
    let url = format!("redis://127.0.0.1:{}", src.port);
    let child = repo
        .cmd(&["redis", "backup", "--url", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(src);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 7, "{err}");
    assert!(err.contains("before the end of the RDB"), "{err}");
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 0);
}
