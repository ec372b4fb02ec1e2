//! The replication client (`cairn_engine::pg::replication`) against a real
//! PostgreSQL server: `BASE_BACKUP` over the Unix socket and TCP, password
//! methods, tablespaces, TLS, and a session that the server ends early.
//! The engine API is called directly; the archives it hands out must be
//! tar files GNU tar extracts, and `pg_verifybackup` must accept the
//! result with the manifest the server sent.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_engine::pg::replication::{Archive, BackupEnd, BaseBackup, BaseBackupOptions, ConnInfo};
use cairn_engine::Error;
use cairn_formats::tar::{TarEvent, TarParser};
use cairn_tests::pg::{self, conf_string, Cluster};

/// Settings for a server that also listens on 127.0.0.1.
const TCP: &str = "listen_addresses = '127.0.0.1'\n";

/// Parses a connection string with no `PG*` variables at all, except those
/// in `env`: the tests never change the process environment, which other
/// tests in this binary read concurrently.
fn conninfo(s: &str, env: &[(&str, &str)]) -> ConnInfo {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ConnInfo::parse_with_env(s, &move |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
}

fn socket_conn(c: &Cluster, user: &str) -> String {
    format!("host={} port={} user={user}", c.socket_dir.display(), c.port)
}

fn tcp_conn(c: &Cluster, host: &str, user: &str, sslmode: &str) -> String {
    format!("host={host} port={} user={user} sslmode={sslmode} application_name=cairn-test", c.port)
}

fn options() -> BaseBackupOptions {
    BaseBackupOptions::default().with_label("cairn 'test'").with_fast_checkpoint(true)
}

/// One archive as received.
struct Received {
    archive: Archive,
    file: PathBuf,
    len: u64,
    members: Vec<String>,
}

/// A whole backup as received.
struct Taken {
    archives: Vec<Received>,
    manifest: Vec<u8>,
    end: BackupEnd,
    system_id: u64,
    start_lsn: u64,
    progress: (u64, Option<u64>),
}

/// Runs a backup to its end: every archive is written to `out/<name>` and
/// fed, in the pieces `Read` hands out, to cairn's `TarParser`, which must
/// reach the end-of-archive marker.
fn take(conn: &ConnInfo, out: &Path) -> Taken {
    fs::create_dir_all(out).unwrap();
    let mut bb = BaseBackup::start(conn, &options()).unwrap_or_else(|e| panic!("starting the backup: {e}"));
    let mut archives = Vec::new();
    while let Some(archive) = bb.next_archive().unwrap() {
        let path = out.join(&archive.name);
        let mut file = fs::File::create(&path).unwrap();
        let mut parser = TarParser::new();
        let mut members = Vec::new();
        let mut ended = false;
        let mut buf = vec![0u8; 50_000];
        let mut len = 0u64;
        loop {
            let n = bb.read(&mut buf).unwrap_or_else(|e| panic!("reading {}: {e}", archive.name));
            if n == 0 {
                break;
            }
            len += n as u64;
            file.write_all(&buf[..n]).unwrap();
            for ev in parser.feed(&buf[..n]).unwrap_or_else(|e| panic!("{} is not a tar: {e}", archive.name)) {
                match ev {
                    TarEvent::Member(m) => members.push(String::from_utf8_lossy(&m.path).into_owned()),
                    TarEvent::End { .. } => ended = true,
                }
            }
        }
        parser.finish().unwrap_or_else(|e| panic!("{} ends early: {e}", archive.name));
        assert!(ended, "{} has no end-of-archive marker", archive.name);
        archives.push(Received { archive, file: path, len, members });
    }
    let manifest = bb.manifest().unwrap();
    let (system_id, start_lsn) = (bb.system_id(), bb.start_lsn());
    let progress = bb.progress();
    let end = bb.finish().unwrap_or_else(|e| panic!("finishing the backup: {e}"));
    Taken { archives, manifest, end, system_id, start_lsn, progress }
}

/// Extracts the archives with GNU tar (tablespaces under
/// `pg_tblspc/<oid>`), writes `backup_manifest`, and runs
/// `pg_verifybackup -n` (no WAL: it is archived separately).
fn verify(taken: &Taken, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for r in &taken.archives {
        let target = match &r.archive.tablespace_location {
            None => dir.to_path_buf(),
            Some(_) => dir.join("pg_tblspc").join(r.archive.name.trim_end_matches(".tar")),
        };
        fs::create_dir_all(&target).unwrap();
        let out = Command::new("tar").arg("-xf").arg(&r.file).arg("-C").arg(&target).output().unwrap();
        assert!(out.status.success(), "tar -xf {}: {}", r.file.display(), String::from_utf8_lossy(&out.stderr));
    }
    let manifest = dir.join("backup_manifest");
    fs::write(&manifest, &taken.manifest).unwrap();
    let out = Command::new(pg::tool("pg_verifybackup")).arg("-n").arg("-m").arg(&manifest).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "pg_verifybackup failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_base(taken: &Taken, cluster: &Cluster) {
    assert_eq!(taken.system_id, cluster.system_id());
    assert!(taken.end.end_lsn > taken.start_lsn, "end {:X} <= start {:X}", taken.end.end_lsn, taken.start_lsn);
    assert_eq!(taken.end.timeline, 1);
    let base = taken.archives.iter().find(|r| r.archive.name == "base.tar").expect("a base.tar");
    assert_eq!(base.archive.tablespace_location, None);
    for member in ["PG_VERSION", "global/pg_control", "backup_label"] {
        assert!(base.members.iter().any(|m| m == member), "base.tar lacks {member}");
    }
    // Every archive ends with the two zero blocks of a tar trailer.
    for r in &taken.archives {
        let bytes = fs::read(&r.file).unwrap();
        assert_eq!(bytes.len() as u64, r.len);
        assert!(bytes.len() >= 1024 && bytes[bytes.len() - 1024..].iter().all(|&b| b == 0), "{}", r.archive.name);
    }
    let (done, total) = taken.progress;
    assert!(total.is_some_and(|t| t > 0), "no size estimate: {total:?}");
    assert!(done > 0 && done <= taken.archives.iter().map(|r| r.len).sum::<u64>(), "progress {done}");
    let manifest = String::from_utf8_lossy(&taken.manifest);
    assert!(manifest.contains("\"PostgreSQL-Backup-Manifest-Version\""), "{}", &manifest[..manifest.len().min(200)]);
    assert!(manifest.contains("\"Checksum-Algorithm\": \"CRC32C\""), "manifest checksums are not CRC32C");
}

/// BASE_BACKUP of a pgbench cluster, once over the Unix socket and once over
/// TCP: tar archives that TarParser and GNU tar read, and a data directory
/// that pg_verifybackup accepts against the server's manifest.
#[test]
fn pg_replication_base_backup_over_socket_and_tcp_verifies() {
    let started = Instant::now();
    let shared = pg::shared_dir();
    let mut c = Cluster::init(shared.path(), "primary", 16, TCP);
    c.start(&[]);
    c.pgbench(&["-i", "-s", "2", "-q"]);

    let taken = take(&conninfo(&socket_conn(&c, "postgres"), &[]), &shared.path().join("sock"));
    assert_eq!(taken.archives.len(), 1);
    check_base(&taken, &c);
    verify(&taken, &shared.path().join("sock-restore"));

    // sslmode=prefer against a server without TLS: a plain connection.
    let conn = conninfo(&tcp_conn(&c, "127.0.0.1", "postgres", "prefer"), &[]);
    let taken2 = take(&conn, &shared.path().join("tcp"));
    check_base(&taken2, &c);
    assert!(taken2.start_lsn > taken.end.end_lsn, "the second backup starts after the first ended");
    verify(&taken2, &shared.path().join("tcp-restore"));
    eprintln!("socket and TCP backups verified in {:?}", started.elapsed());
}

/// md5 and SCRAM-SHA-256 roles from pg_hba.conf, passwords from PGPASSWORD
/// and a password file; a wrong or missing password is a typed
/// authentication error that never shows the password.
#[test]
fn pg_replication_md5_and_scram_passwords() {
    let shared = pg::shared_dir();
    let mut c = Cluster::init(shared.path(), "auth", 16, TCP);
    c.start(&[]);
    let md5_pw = format!("md5-{:016x}", rand::random::<u64>());
    let scram_pw = format!("scram-{:016x}", rand::random::<u64>());
    // The passwords travel to psql on its standard input, not in argv.
    c.sql(&format!(
        "SET password_encryption = 'md5'; CREATE ROLE rep_md5 LOGIN REPLICATION PASSWORD '{md5_pw}';\n\
         SET password_encryption = 'scram-sha-256'; CREATE ROLE rep_scram LOGIN REPLICATION PASSWORD '{scram_pw}';"
    ));
    assert!(c.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'rep_md5'").starts_with("md5"));
    assert!(c.sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'rep_scram'").starts_with("SCRAM-SHA-256$"));
    fs::write(
        c.data.join("pg_hba.conf"),
        "local all postgres trust\n\
         local replication rep_md5 md5\n\
         host replication rep_md5 127.0.0.1/32 md5\n\
         local replication rep_scram scram-sha-256\n\
         host replication rep_scram 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    c.stop();
    c.start(&[]);

    let drain = |conn: &ConnInfo| {
        let mut bb = BaseBackup::start(conn, &options()).unwrap_or_else(|e| panic!("{conn:?}: {e}"));
        let mut archives = 0;
        while bb.next_archive().unwrap().is_some() {
            archives += 1;
            std::io::copy(&mut bb, &mut std::io::sink()).unwrap();
        }
        assert!(!bb.manifest().unwrap().is_empty());
        bb.finish().unwrap();
        assert_eq!(archives, 1);
    };
    drain(&conninfo(&socket_conn(&c, "rep_md5"), &[("PGPASSWORD", &md5_pw)]));
    drain(&conninfo(&tcp_conn(&c, "127.0.0.1", "rep_md5", "disable"), &[("PGPASSWORD", &md5_pw)]));
    drain(&conninfo(&tcp_conn(&c, "127.0.0.1", "rep_scram", "disable"), &[("PGPASSWORD", &scram_pw)]));
    // A libpq password file: a socket connection matches "localhost", a
    // replication connection the database "replication".
    let passfile = shared.path().join("pgpass");
    fs::write(&passfile, format!("localhost:{}:replication:rep_scram:{scram_pw}\n", c.port)).unwrap();
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600)).unwrap();
    let passfile = passfile.to_string_lossy().into_owned();
    drain(&conninfo(&socket_conn(&c, "rep_scram"), &[("PGPASSFILE", &passfile)]));

    for (conn, user, method) in [
        (socket_conn(&c, "rep_md5"), "rep_md5", "md5"),
        (tcp_conn(&c, "127.0.0.1", "rep_scram", "disable"), "rep_scram", "scram"),
    ] {
        let wrong = format!("wrong-{:016x}", rand::random::<u64>());
        let err = BaseBackup::start(&conninfo(&conn, &[("PGPASSWORD", &wrong)]), &options()).unwrap_err();
        let msg = err.to_string();
        match &err {
            Error::AuthFailed { sqlstate, .. } => assert_eq!(sqlstate.as_deref(), Some("28P01"), "{method}: {msg}"),
            other => panic!("{method}: expected an authentication error, got {other:?}"),
        }
        assert!(msg.contains(user) && !msg.contains(&wrong), "{method}: {msg}");
        assert!(!format!("{err:?}").contains(&wrong), "{method}: {err:?}");

        let err = BaseBackup::start(&conninfo(&conn, &[]), &options()).unwrap_err();
        assert!(
            matches!(&err, Error::AuthFailed { sqlstate: None, detail, .. } if detail.contains("PGPASSWORD")),
            "{method} without a password: {err:?}"
        );
    }
    // Channel binding needs TLS.
    let s = format!("{} channel_binding=require", tcp_conn(&c, "127.0.0.1", "rep_scram", "disable"));
    let err = BaseBackup::start(&conninfo(&s, &[("PGPASSWORD", &scram_pw)]), &options()).unwrap_err();
    assert!(matches!(&err, Error::AuthFailed { detail, .. } if detail.contains("not encrypted")), "{err:?}");
    // No pg_hba.conf line for this role: also an authentication error.
    let err = BaseBackup::start(&conninfo(&socket_conn(&c, "postgres"), &[]), &options()).unwrap_err();
    assert!(matches!(&err, Error::AuthFailed { sqlstate: Some(s), .. } if s == "28000"), "{err:?}");
    // sslmode=require against a server without TLS.
    let conn = conninfo(&tcp_conn(&c, "127.0.0.1", "rep_md5", "require"), &[("PGPASSWORD", &md5_pw)]);
    let err = BaseBackup::start(&conn, &options()).unwrap_err();
    assert!(matches!(&err, Error::Connection { .. }) && err.to_string().contains("does not accept TLS"), "{err:?}");
}

/// A tablespace comes as a second archive, `<oid>.tar`, with its location;
/// `base.tar` carries `tablespace_map`; the whole verifies.
#[test]
fn pg_replication_tablespace_archive() {
    let shared = pg::shared_dir();
    let mut c = Cluster::init(shared.path(), "ts", 16, "");
    c.start(&[]);
    let location = shared.path().join("ts1");
    fs::create_dir(&location).unwrap();
    fs::set_permissions(&location, fs::Permissions::from_mode(0o700)).unwrap();
    pg::chown_to_user(&location);
    let location = fs::canonicalize(&location).unwrap().to_string_lossy().into_owned();
    c.sql(&format!(
        "CREATE TABLESPACE ts1 LOCATION {};\n\
         CREATE TABLE in_ts1 TABLESPACE ts1 AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g;",
        conf_string(&location)
    ));
    let oid = c.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");

    let taken = take(&conninfo(&socket_conn(&c, "postgres"), &[]), &shared.path().join("out"));
    let names: Vec<&str> = taken.archives.iter().map(|r| r.archive.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"base.tar"), "{names:?}");
    let ts = taken.archives.iter().find(|r| r.archive.name == format!("{oid}.tar")).expect("the tablespace archive");
    assert_eq!(ts.archive.tablespace_location.as_deref(), Some(location.as_str()));
    assert!(ts.members.iter().any(|m| m.starts_with("PG_15_") || m.starts_with("PG_1")), "{:?}", ts.members);
    check_base(&taken, &c);
    let base = taken.archives.iter().find(|r| r.archive.name == "base.tar").unwrap();
    assert!(base.members.iter().any(|m| m == "tablespace_map"), "base.tar lacks tablespace_map");
    verify(&taken, &shared.path().join("restore"));
    let map = fs::read_to_string(shared.path().join("restore/tablespace_map")).unwrap();
    assert_eq!(map.trim(), format!("{oid} {location}"));
}

/// Runs openssl in `dir`, panicking with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (scripts/deps.sh installs it): {e}"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for `localhost` signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let days = ["-days", "2"];
    // Two self-signed CAs: ours, and one the server's certificate is not
    // signed by.
    for (name, cn) in [("ca", "/CN=cairn test CA"), ("other", "/CN=someone else")] {
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &crt, "-subj", cn, days[0],
                days[1],
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    fs::write(
        dir.join("server.ext"),
        "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
            days[0],
            days[1],
        ],
    );
    fs::set_permissions(dir.join("server.key"), fs::Permissions::from_mode(0o600)).unwrap();
    pg::chown_to_user(dir);
}

/// sslmode=require, verify-ca and verify-full against a server with
/// `ssl = on`: the walsender reports TLS, a certificate for another name
/// fails verify-full only, and an unknown CA fails both verify modes.
/// SCRAM over TLS binds to the channel (SCRAM-SHA-256-PLUS).
#[test]
fn pg_replication_tls_modes() {
    let shared = pg::shared_dir();
    let certs = shared.path().join("certs");
    make_certificates(&certs);
    let conf = format!(
        "{TCP}ssl = on\nssl_cert_file = {}\nssl_key_file = {}\n",
        conf_string(&certs.join("server.crt").to_string_lossy()),
        conf_string(&certs.join("server.key").to_string_lossy())
    );
    let mut c = Cluster::init(shared.path(), "tls", 16, &conf);
    fs::write(
        c.data.join("pg_hba.conf"),
        "local all postgres trust\n\
         hostssl replication rep_scram 127.0.0.1/32 scram-sha-256\n\
         host replication postgres 127.0.0.1/32 trust\n",
    )
    .unwrap();
    c.start(&[]);
    let scram_pw = format!("scram-{:016x}", rand::random::<u64>());
    c.sql(&format!("CREATE ROLE rep_scram LOGIN REPLICATION PASSWORD '{scram_pw}';"));
    let ca = certs.join("ca.crt").to_string_lossy().into_owned();
    let other = certs.join("other.crt").to_string_lossy().into_owned();

    let conn = conninfo(&tcp_conn(&c, "127.0.0.1", "postgres", "require"), &[]);
    let mut bb = BaseBackup::start(&conn, &options()).unwrap();
    assert!(bb.encrypted());
    let ssl = c.sql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_replication r USING (pid)");
    assert_eq!(ssl, "t", "the walsender's connection is not encrypted");
    while bb.next_archive().unwrap().is_some() {
        std::io::copy(&mut bb, &mut std::io::sink()).unwrap();
    }
    assert!(!bb.manifest().unwrap().is_empty());
    bb.finish().unwrap();

    let accepted = [
        format!("{} sslrootcert={ca}", tcp_conn(&c, "127.0.0.1", "postgres", "verify-ca")),
        format!("{} sslrootcert={ca}", tcp_conn(&c, "localhost", "postgres", "verify-full")),
        // libpq: require with a root certificate checks the chain.
        format!("{} sslrootcert={ca}", tcp_conn(&c, "127.0.0.1", "postgres", "require")),
    ];
    for s in &accepted {
        let bb = BaseBackup::start(&conninfo(s, &[]), &options()).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert!(bb.encrypted(), "{s}");
    }
    // SCRAM-SHA-256-PLUS: bound to this TLS channel (the server checks the
    // certificate hash we send), which channel_binding=require insists on.
    let s = format!("{} channel_binding=require", tcp_conn(&c, "127.0.0.1", "rep_scram", "require"));
    let bb = BaseBackup::start(&conninfo(&s, &[("PGPASSWORD", &scram_pw)]), &options())
        .unwrap_or_else(|e| panic!("{s}: {e}"));
    assert!(bb.encrypted());
    drop(bb);
    let s = format!("{} channel_binding=require", tcp_conn(&c, "127.0.0.1", "postgres", "require"));
    let err = BaseBackup::start(&conninfo(&s, &[]), &options()).unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed { detail, .. } if detail.contains("without channel binding")),
        "trust auth with channel_binding=require: {err:?}"
    );

    let refused = [
        (format!("{} sslrootcert={ca}", tcp_conn(&c, "127.0.0.1", "postgres", "verify-full")), "name"),
        (format!("{} sslrootcert={other}", tcp_conn(&c, "127.0.0.1", "postgres", "verify-ca")), "issuer"),
        (format!("{} sslrootcert={other}", tcp_conn(&c, "localhost", "postgres", "verify-full")), "issuer"),
    ];
    for (s, why) in &refused {
        let err = BaseBackup::start(&conninfo(s, &[]), &options()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, Error::Connection { retryable: false, .. }) && msg.contains("TLS handshake"),
            "{s}: {err:?}"
        );
        assert!(msg.to_lowercase().contains(why), "{s}: {msg}");
    }
}

/// The walsender's process id, once the backup shows in pg_stat_replication.
fn walsender_pid(c: &Cluster) -> String {
    let started = Instant::now();
    loop {
        let pid = c.sql("SELECT pid FROM pg_stat_replication");
        if !pid.is_empty() {
            return pid;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no walsender in pg_stat_replication");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads `n` bytes of the current archive.
fn read_some(bb: &mut BaseBackup, n: usize) {
    let mut buf = vec![0u8; n];
    bb.read_exact(&mut buf).unwrap();
}

/// A server that ends the session mid-copy: terminated by an administrator
/// (an ErrorResponse: typed server error with SQLSTATE 57P01), then killed
/// outright (the socket just closes: a connection error that names the
/// archive and the byte offset). Neither can be finished.
#[test]
fn pg_replication_session_cut_short() {
    let shared = pg::shared_dir();
    let mut c = Cluster::init(shared.path(), "cut", 16, "");
    c.start(&[]);
    c.pgbench(&["-i", "-s", "2", "-q"]);
    let conn = conninfo(&socket_conn(&c, "postgres"), &[]);
    // The server sends at most 1 MB/s, so the copy is still going when it is cut.
    let slow = options().with_max_rate_kb(Some(1024));

    let mut bb = BaseBackup::start(&conn, &slow).unwrap();
    assert_eq!(bb.next_archive().unwrap().unwrap().name, "base.tar");
    read_some(&mut bb, 100_000);
    let pid = walsender_pid(&c);
    assert_eq!(c.sql(&format!("SELECT pg_terminate_backend({pid})")), "t");
    let err = std::io::copy(&mut bb, &mut std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("57P01"), "{err}");
    let err = bb.finish().unwrap_err();
    assert!(matches!(&err, Error::Server { sqlstate, .. } if sqlstate == "57P01"), "{err:?}");

    let mut bb = BaseBackup::start(&conn, &slow).unwrap();
    assert_eq!(bb.next_archive().unwrap().unwrap().name, "base.tar");
    read_some(&mut bb, 100_000);
    let pid = walsender_pid(&c);
    let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(killed.success());
    let err = std::io::copy(&mut bb, &mut std::io::sink()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("reading base.tar at byte ") && msg.contains("closed the connection"), "{msg}");
    match bb.next_archive().unwrap_err() {
        Error::Connection { during, .. } => assert!(during.starts_with("reading base.tar at byte "), "{during}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
    let err = bb.finish().unwrap_err();
    assert!(matches!(&err, Error::Connection { .. }), "{err:?}");
}
