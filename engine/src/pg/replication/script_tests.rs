//! The session against scripted servers on a Unix socket: the 13–14 wire
//! form (which no server on the test machines speaks), the errors a server
//! can send at awkward moments, and garbage, which must end in errors,
//! never panics. The 15+ form is also tested against real servers in
//! `tests/tests/pg_replication.rs`.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::basebackup::TAR_TRAILER;
use super::*;
use crate::fuzzing::{cstr, pg_message as msg, pg_row as row};
use crate::Error;

fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstr(tag))
}

fn no_columns() -> Vec<u8> {
    msg(b'T', &0u16.to_be_bytes())
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

fn copy_out() -> Vec<u8> {
    msg(b'H', &[0, 0, 0])
}

fn copy_done() -> Vec<u8> {
    msg(b'c', &[])
}

fn error(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in [(b'S', "ERROR"), (b'V', "ERROR"), (b'C', sqlstate), (b'M', message)] {
        body.push(t);
        body.extend_from_slice(&cstr(v));
    }
    body.push(0);
    msg(b'E', &body)
}

/// Startup, IDENTIFY_SYSTEM, and BASE_BACKUP's two result sets.
fn prelude(version: &str, tablespaces: &[(Option<&str>, Option<&str>, &str)]) -> Vec<u8> {
    [startup(version), backup_header(tablespaces)].concat()
}

/// Startup (trust) and IDENTIFY_SYSTEM's answer.
fn startup(version: &str) -> Vec<u8> {
    let mut s = msg(b'R', &0u32.to_be_bytes());
    s.extend(msg(b'S', &[cstr("server_version"), cstr(version)].concat()));
    s.extend(msg(b'K', &[0u8; 8]));
    s.extend(ready());
    s.extend(no_columns());
    s.extend(row(&[Some("7300000000000000001"), Some("3"), Some("0/3000000"), None]));
    s.extend(complete("IDENTIFY_SYSTEM"));
    s.extend(ready());
    s
}

/// BASE_BACKUP's start position and tablespace list.
fn backup_header(tablespaces: &[(Option<&str>, Option<&str>, &str)]) -> Vec<u8> {
    let mut s = no_columns();
    s.extend(row(&[Some("0/2000028"), Some("3")]));
    s.extend(complete("SELECT"));
    s.extend(no_columns());
    for (oid, loc, kb) in tablespaces {
        s.extend(row(&[*oid, *loc, Some(kb)]));
    }
    s.extend(complete("SELECT"));
    s
}

fn end_rows() -> Vec<u8> {
    [no_columns(), row(&[Some("0/3000100"), Some("3")]), complete("SELECT"), complete("BASE_BACKUP"), ready()].concat()
}

/// A one-member tar without its two trailing zero blocks.
fn unterminated_tar(name: &str, content: &[u8]) -> Vec<u8> {
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

/// Serves `script` to the first client on a socket in a new directory and
/// closes the connection; returns the settings to reach it.
fn serve(script: Vec<u8>) -> (tempfile::TempDir, ConnInfo, JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join(".s.PGSQL.5432")).unwrap();
    let handle = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut input = sock.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while input.read(&mut b).is_ok_and(|n| n > 0) {}
        });
        let _ = sock.write_all(&script);
        // The reading clone keeps the socket open: half-close it, so that
        // the client sees the end of the script.
        let _ = sock.shutdown(std::net::Shutdown::Write);
    });
    let ci = ConnInfo::parse_with_env(&format!("host={} port=5432 user=u", dir.path().display()), &|_| None).unwrap();
    (dir, ci, handle)
}

/// A stalled server: writes `parts`, each after its pause, then keeps the
/// connection open and says nothing until the client hangs up.
fn serve_then_stall(parts: Vec<(Duration, Vec<u8>)>) -> (tempfile::TempDir, ConnInfo, JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join(".s.PGSQL.5432")).unwrap();
    let handle = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut input = sock.try_clone().unwrap();
        let drain = std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while input.read(&mut b).is_ok_and(|n| n > 0) {}
        });
        for (pause, bytes) in parts {
            std::thread::sleep(pause);
            let _ = sock.write_all(&bytes);
        }
        // The drain ends when the client closes its end.
        drain.join().unwrap();
    });
    let ci = ConnInfo::parse_with_env(&format!("host={} port=5432 user=u", dir.path().display()), &|_| None).unwrap();
    (dir, ci, handle)
}

/// Asserts that `err` is a timed-out connection error that names `during`.
fn assert_timed_out(err: &Error, during: &str) {
    match err {
        Error::Connection { during: d, retryable: true, source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{err}");
            assert!(d.contains(during), "{err}");
            assert!(err.to_string().contains("nothing received from the server for"), "{err}");
        }
        other => panic!("expected a timed-out connection error {during:?}, got {other:?}"),
    }
}

fn read_all(bb: &mut BaseBackup) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    bb.read_to_end(&mut out)?;
    Ok(out)
}

fn opts() -> BaseBackupOptions {
    BaseBackupOptions { fast_checkpoint: true, ..Default::default() }
}

#[test]
fn pg14_one_stream_per_tablespace_and_added_tar_trailers() {
    let ts = unterminated_tar("PG_14_202107181/1/1", b"tablespace");
    let base = unterminated_tar("PG_VERSION", b"14\n");
    let mut s = prelude("14.10 (Debian 14.10-1)", &[(Some("16384"), Some("/srv/ts"), "1"), (None, None, "2")]);
    s.extend(copy_out());
    s.extend(msg(b'd', &ts[..700]));
    s.extend(msg(b'd', &ts[700..]));
    s.extend(copy_done());
    s.extend(copy_out());
    s.extend(msg(b'd', &base));
    s.extend(copy_done());
    s.extend(copy_out());
    s.extend(msg(b'd', b"{\"PostgreSQL-Backup-Manifest-Version\": 1}\n"));
    s.extend(copy_done());
    s.extend(end_rows());
    let (_dir, ci, server) = serve(s);

    let mut bb = BaseBackup::start(&ci, &opts()).unwrap();
    assert_eq!((bb.system_id(), bb.timeline(), bb.start_lsn()), (7300000000000000001, 3, 0x2000028));
    assert_eq!(bb.server_version(), 140010);
    let a = bb.next_archive().unwrap().unwrap();
    assert_eq!(
        a,
        Archive { name: "16384.tar".into(), tablespace_location: Some("/srv/ts".into()), estimated_size: Some(1024) }
    );
    let got = read_all(&mut bb).unwrap();
    assert_eq!(got.len(), ts.len() + TAR_TRAILER);
    assert_eq!(&got[..ts.len()], &ts[..]);
    assert!(got[ts.len()..].iter().all(|&b| b == 0));
    let a = bb.next_archive().unwrap().unwrap();
    assert_eq!((a.name.as_str(), a.tablespace_location), ("base.tar", None));
    let got = read_all(&mut bb).unwrap();
    let mut parser = cairn_formats::tar::TarParser::new();
    let events = parser.feed(&got).unwrap();
    assert!(matches!(events.last(), Some(cairn_formats::tar::TarEvent::End { .. })), "{events:?}");
    assert!(bb.next_archive().unwrap().is_none());
    assert_eq!(bb.progress(), ((ts.len() + base.len()) as u64, Some(3072)));
    assert!(bb.manifest().unwrap().starts_with(b"{\"PostgreSQL-Backup-Manifest-Version\""));
    assert_eq!(bb.finish().unwrap(), BackupEnd { end_lsn: 0x3000100, timeline: 3 });
    server.join().unwrap();
}

fn new_archive(name: &str, location: &str) -> Vec<u8> {
    msg(b'd', &[b"n".to_vec(), cstr(name), cstr(location)].concat())
}

fn data(bytes: &[u8]) -> Vec<u8> {
    msg(b'd', &[b"d", bytes].concat())
}

#[test]
fn pg15_single_stream_skipping_an_unread_archive() {
    let mut base = unterminated_tar("PG_VERSION", b"15\n");
    base.resize(base.len() + TAR_TRAILER, 0);
    let mut s = prelude("15.4", &[(Some("16385"), Some("/srv/ts"), "1"), (None, None, "2")]);
    s.extend(copy_out());
    s.extend(new_archive("16385.tar", "/srv/ts"));
    s.extend(data(&[7u8; 3000]));
    s.extend(msg(b'd', &[b"p".to_vec(), 3000u64.to_be_bytes().to_vec()].concat()));
    s.extend(new_archive("base.tar", ""));
    s.extend(data(&base[..100]));
    s.extend(data(&base[100..]));
    s.extend(msg(b'd', b"m"));
    s.extend(data(b"{\"manifest\": 1}"));
    s.extend(copy_done());
    s.extend(end_rows());
    let (_dir, ci, server) = serve(s);

    let mut bb = BaseBackup::start(&ci, &opts()).unwrap();
    assert_eq!(bb.next_archive().unwrap().unwrap().name, "16385.tar");
    let mut first = [0u8; 10];
    bb.read_exact(&mut first).unwrap();
    let a = bb.next_archive().unwrap().unwrap();
    assert_eq!((a.name.as_str(), a.estimated_size), ("base.tar", Some(2048)));
    assert_eq!(read_all(&mut bb).unwrap(), base, "15+ archives come terminated and are passed through as sent");
    assert!(bb.next_archive().unwrap().is_none());
    assert_eq!(bb.manifest().unwrap(), b"{\"manifest\": 1}");
    assert_eq!(bb.progress().0, 3000 + base.len() as u64);
    assert_eq!(bb.finish().unwrap().end_lsn, 0x3000100);
    server.join().unwrap();
}

#[test]
fn size_estimates_too_large_for_bytes_are_dropped_not_wrapped() {
    // The tablespace sizes are the server's KiB: 2^54 KiB overflowed the
    // conversion to bytes, two sizes near 2^63 the progress total (both
    // panics with overflow checks, wrong numbers without).
    let mut s =
        prelude("15.4", &[(Some("16385"), Some("/srv/ts"), "9007199254740991"), (None, None, "18014398509481984")]);
    s.extend(copy_out());
    s.extend(new_archive("base.tar", ""));
    s.extend(data(b"x"));
    s.extend(copy_done());
    s.extend(end_rows());
    let (_dir, ci, server) = serve(s);
    let opts = BaseBackupOptions { progress: true, manifest: false, ..opts() };
    let mut bb = BaseBackup::start(&ci, &opts).unwrap();
    let a = bb.next_archive().unwrap().unwrap();
    assert_eq!((a.name.as_str(), a.estimated_size), ("base.tar", None));
    assert_eq!(bb.progress(), (0, Some(9007199254740991 * 1024)));
    assert!(bb.next_archive().unwrap().is_none());
    assert_eq!(bb.finish().unwrap().end_lsn, 0x3000100);
    server.join().unwrap();
}

#[test]
fn a_checksum_failure_after_the_end_position_fails_finish() {
    let mut s = prelude("15.4", &[(None, None, "1")]);
    s.extend(copy_out());
    s.extend(new_archive("base.tar", ""));
    s.extend(data(b"x"));
    s.extend(copy_done());
    s.extend([no_columns(), row(&[Some("0/3000100"), Some("3")]), complete("SELECT")].concat());
    s.extend(error("XX001", "checksum verification failure during base backup"));
    s.extend(ready());
    let (_dir, ci, server) = serve(s);
    let mut bb = BaseBackup::start(&ci, &BaseBackupOptions { manifest: false, ..opts() }).unwrap();
    bb.next_archive().unwrap();
    assert_eq!(read_all(&mut bb).unwrap(), b"x");
    let err = bb.finish().unwrap_err();
    assert!(matches!(&err, Error::Server { sqlstate, .. } if sqlstate == "XX001"), "{err:?}");
    server.join().unwrap();
}

#[test]
fn errors_and_hangups_mid_archive_name_the_archive() {
    // An ErrorResponse in the middle of the copy.
    let mut s = prelude("15.4", &[(None, None, "1")]);
    s.extend(copy_out());
    s.extend(new_archive("base.tar", ""));
    s.extend(data(&[1u8; 5000]));
    s.extend(error("57P01", "terminating connection due to administrator command"));
    let (_dir, ci, server) = serve(s);
    let mut bb = BaseBackup::start(&ci, &opts()).unwrap();
    bb.next_archive().unwrap();
    let err = read_all(&mut bb).unwrap_err();
    assert!(err.to_string().contains("57P01"), "{err}");
    assert!(matches!(bb.manifest().unwrap_err(), Error::Server { .. }));
    assert!(matches!(bb.finish().unwrap_err(), Error::Server { sqlstate, .. } if sqlstate == "57P01"));
    server.join().unwrap();

    // The connection closes in the middle of the copy.
    let mut s = prelude("14.2", &[(None, None, "1")]);
    s.extend(copy_out());
    s.extend(msg(b'd', &[1u8; 5000]));
    let (_dir, ci, server) = serve(s);
    let mut bb = BaseBackup::start(&ci, &opts()).unwrap();
    bb.next_archive().unwrap();
    let err = read_all(&mut bb).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("reading base.tar at byte 5000"), "{err}");
    assert!(matches!(bb.finish().unwrap_err(), Error::Connection { retryable: true, .. }));
    server.join().unwrap();
}

#[test]
fn servers_before_13_are_refused() {
    let mut s = msg(b'R', &0u32.to_be_bytes());
    s.extend(msg(b'S', &[cstr("server_version"), cstr("12.17")].concat()));
    s.extend(ready());
    let (_dir, ci, server) = serve(s);
    let err = BaseBackup::start(&ci, &opts()).unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("12.17") && m.contains("13")), "{err:?}");
    server.join().unwrap();
}

#[test]
fn bad_archive_names_and_huge_messages_are_protocol_errors() {
    for bad in ["", ".hidden.tar", "../escape.tar", "a/b.tar"] {
        let mut s = prelude("15.4", &[(None, None, "1")]);
        s.extend(copy_out());
        s.extend(new_archive(bad, ""));
        let (_dir, ci, server) = serve(s);
        let mut bb = BaseBackup::start(&ci, &opts()).unwrap();
        let err = bb.next_archive().unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{bad:?}: {err:?}");
        server.join().unwrap();
    }
    // A DataRow one byte over the limit, in the answer to IDENTIFY_SYSTEM:
    // refused from its header (the half-closed socket would otherwise end
    // in a connection error).
    let mut s = msg(b'R', &0u32.to_be_bytes());
    s.extend(msg(b'S', &[cstr("server_version"), cstr("15.4")].concat()));
    s.extend(ready());
    s.extend(no_columns());
    s.push(b'D');
    s.extend_from_slice(&(64u32 << 20).to_be_bytes());
    let (_dir, ci, server) = serve(s);
    let err = BaseBackup::start(&ci, &opts()).unwrap_err();
    assert!(matches!(&err, Error::Protocol { detail, .. } if detail.contains("type 'D'")), "{err:?}");
    server.join().unwrap();
    // A 2 GiB CopyData header: refused before anything is allocated.
    let mut s = prelude("15.4", &[(None, None, "1")]);
    s.extend(copy_out());
    s.extend(b"d\x7f\xff\xff\xff");
    let (_dir, ci, server) = serve(s);
    let mut bb = BaseBackup::start(&ci, &opts()).unwrap();
    assert!(matches!(bb.next_archive().unwrap_err(), Error::Protocol { .. }));
    server.join().unwrap();
}

/// A server that accepts the connection and then says nothing, on a Unix
/// socket (no keepalives there): the read timeout ends the wait, promptly,
/// with an error that says what was awaited.
#[test]
fn a_silent_server_times_out_while_connecting() {
    let (_dir, ci, server) = serve_then_stall(vec![]);
    let t = Instant::now();
    let short_reads = opts().with_timeouts(Duration::from_millis(200), Duration::from_secs(30));
    let err = BaseBackup::start(&ci, &short_reads).unwrap_err();
    assert_timed_out(&err, "authenticating");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    server.join().unwrap();
}

/// The checkpoint before the first answer to BASE_BACKUP may take longer
/// than the read timeout (the start timeout governs it), and the read
/// timeout governs again once data flows: a server that stalls mid-archive
/// fails the read promptly, naming the archive and the byte.
#[test]
fn the_checkpoint_wait_and_the_data_have_their_own_timeouts() {
    let script = |pause| {
        let mut copy = backup_header(&[(None, None, "1")]);
        copy.extend(copy_out());
        copy.extend(new_archive("base.tar", ""));
        copy.extend(data(&[5u8; 3000]));
        vec![(Duration::ZERO, startup("15.4")), (pause, copy)]
    };
    // A 700 ms checkpoint, a 200 ms read timeout: the backup starts.
    let (_dir, ci, server) = serve_then_stall(script(Duration::from_millis(700)));
    let short_reads = opts().with_timeouts(Duration::from_millis(200), Duration::from_secs(30));
    let mut bb = BaseBackup::start(&ci, &short_reads).unwrap();
    assert_eq!(bb.next_archive().unwrap().unwrap().name, "base.tar");
    let mut got = vec![0u8; 3000];
    bb.read_exact(&mut got).unwrap();
    let t = Instant::now();
    let err = bb.read(&mut got).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert_timed_out(&bb.finish().unwrap_err(), "reading base.tar at byte 3000");
    server.join().unwrap();

    // A checkpoint that outlasts the start timeout.
    let (_dir, ci, server) = serve_then_stall(script(Duration::from_secs(60)));
    let t = Instant::now();
    let short_start = opts().with_timeouts(Duration::from_secs(30), Duration::from_millis(300));
    let err = BaseBackup::start(&ci, &short_start).unwrap_err();
    assert_timed_out(&err, "waiting for the backup to start (checkpoint)");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The server thread sleeps out its pause; it is not waited for.
    drop(server);
}

/// The manifest is held in memory: one larger than the limit is a
/// protocol error (and fails the session), one of exactly the limit is not.
#[test]
fn an_oversized_manifest_is_refused() {
    for (limit, ok) in [(1200, true), (1199, false)] {
        let mut s = prelude("15.4", &[(None, None, "1")]);
        s.extend(copy_out());
        s.extend(new_archive("base.tar", ""));
        s.extend(data(b"x"));
        s.extend(msg(b'd', b"m"));
        for _ in 0..3 {
            s.extend(data(&[b' '; 400]));
        }
        s.extend(copy_done());
        s.extend(end_rows());
        let (_dir, ci, server) = serve(s);
        let mut bb = BaseBackup::start(&ci, &opts()).unwrap();
        assert_eq!(bb.manifest_limit, cairn_formats::pg::manifest::MAX_MANIFEST_LEN);
        bb.manifest_limit = limit;
        bb.next_archive().unwrap();
        match bb.manifest() {
            Ok(m) => assert!(ok && m.len() == 1200, "limit {limit}: {} bytes accepted", m.len()),
            Err(e) => {
                assert!(!ok, "limit {limit}: {e}");
                assert!(
                    matches!(&e, Error::Protocol { detail, .. } if detail.contains("larger than 1199 bytes")),
                    "{e:?}"
                );
                assert!(matches!(bb.finish().unwrap_err(), Error::Protocol { .. }));
            }
        }
        server.join().unwrap();
    }
}

/// Random bytes in place of the copy stream, or spliced into a good
/// session, end in errors, never in a panic.
#[test]
fn garbage_from_the_server_never_panics() {
    let mut good = prelude("15.4", &[(None, None, "1")]);
    good.extend(copy_out());
    good.extend(new_archive("base.tar", ""));
    good.extend(data(&unterminated_tar("f", b"abc")));
    good.extend(msg(b'd', b"m"));
    good.extend(data(b"{}"));
    good.extend(copy_done());
    good.extend(end_rows());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..150 {
        let mut s = good.clone();
        match round % 3 {
            0 => {
                let at = rng.gen_range(0..s.len());
                s.truncate(at);
            }
            1 => {
                for _ in 0..rng.gen_range(1..8) {
                    let at = rng.gen_range(0..s.len());
                    s[at] = rng.gen();
                }
            }
            _ => {
                let at = rng.gen_range(0..s.len());
                let junk: Vec<u8> = (0..rng.gen_range(1..200)).map(|_| rng.gen()).collect();
                s.splice(at..at, junk);
            }
        }
        let (_dir, ci, server) = serve(s);
        if let Ok(mut bb) = BaseBackup::start(&ci, &opts()) {
            while let Ok(Some(_)) = bb.next_archive() {
                let _ = read_all(&mut bb);
            }
            let _ = bb.manifest();
            let _ = bb.finish();
        }
        server.join().unwrap();
    }
}
