//! [`ReplicationSource`] against fake servers on 127.0.0.1 that misbehave:
//! endless reply lines, silence at each step. Each must end in a typed
//! error that names the server, promptly.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// The replies to a handshake without AUTH: PING, two REPLCONFs, PSYNC.
const HANDSHAKE: &[u8] = b"+PONG\r\n+OK\r\n+OK\r\n+FULLRESYNC 0123456789012345678901234567890123456789 42\r\n";

/// What the fake server does once its script is written.
enum Then {
    /// Writes this byte for ever (until the client hangs up).
    Endless(u8),
    /// Says nothing until the client hangs up.
    Silence,
}

/// A server that ignores what the client sends (each reply is written
/// before the client asks, which a client reading line by line cannot
/// tell), writes `parts`, each after its pause, then does `then`.
fn fake(parts: Vec<(Duration, Vec<u8>)>, then: Then, timeout: Duration) -> (SyncOptions, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
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
        if let Then::Endless(byte) = then {
            let block = [byte; 8192];
            while sock.write_all(&block).is_ok() {}
        }
        // The drain ends when the client closes its end.
        drain.join().unwrap();
    });
    (SyncOptions { addr, user: None, password: None, timeout, tls: None }, handle)
}

fn now(bytes: &[u8]) -> Vec<(Duration, Vec<u8>)> {
    vec![(Duration::ZERO, bytes.to_vec())]
}

/// A reply line that never ends, as the first reply and as the payload
/// header, is refused after `MAX_LINE` bytes; a line of exactly
/// `MAX_LINE` bytes is still read (and here refused for what it says).
#[test]
fn endless_reply_lines_are_refused() {
    for script in [&b"+"[..], &[HANDSHAKE, b"$"].concat()] {
        let (opts, server) = fake(now(script), Then::Endless(b'7'), Duration::from_secs(10));
        let t = Instant::now();
        let err = ReplicationSource::connect(&opts).err().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        match &err {
            Error::Protocol { server, detail } => {
                assert_eq!(server, &format!("redis {}", opts.addr));
                assert!(detail.contains(&format!("longer than {MAX_LINE} bytes")), "{err}");
            }
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
    }
    let longest = [&b"-"[..], &vec![b'E'; MAX_LINE - 3], b"\r\n"].concat();
    assert_eq!(longest.len(), MAX_LINE);
    let (opts, server) = fake(now(&longest), Then::Silence, Duration::from_secs(10));
    let err = ReplicationSource::connect(&opts).err().unwrap();
    assert!(matches!(&err, Error::Config(m) if m.contains("PING refused: -EEE")), "{err:?}");
    server.join().unwrap();
}

/// A server that accepts and then says nothing: the read timeout ends the
/// wait with a retryable, timed-out connection error.
#[test]
fn a_silent_server_times_out() {
    let (opts, server) = fake(vec![], Then::Silence, Duration::from_millis(200));
    let t = Instant::now();
    let err = ReplicationSource::connect(&opts).err().unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200) && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    match &err {
        Error::Connection { server, during, retryable: true, source } => {
            assert_eq!(server, &format!("redis {}", opts.addr));
            assert_eq!(during, "waiting for the server");
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
            assert!(source.to_string().contains("nothing received from the server for 200ms"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

/// Silence in the middle of the RDB: the read fails with `TimedOut`,
/// naming the server and the bytes received, and the source is not
/// complete.
#[test]
fn a_server_silent_mid_payload_times_out() {
    let script = [HANDSHAKE, b"$1000\r\n", &[0u8; 10]].concat();
    let (opts, server) = fake(now(&script), Then::Silence, Duration::from_millis(200));
    let mut src = ReplicationSource::connect(&opts).unwrap();
    let mut got = Vec::new();
    let t = Instant::now();
    let err = src.read_to_end(&mut got).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("redis {}: reading the RDB after 10 bytes", opts.addr)), "{text}");
    assert!(text.contains("nothing received from the server for 200ms"), "{text}");
    assert_eq!(got.len(), 10);
    assert!(src.finish().is_err());
    drop(src);
    server.join().unwrap();
}

/// Keepalive newlines while the server prepares the RDB count as data: a
/// preparation longer than the timeout, with keepalives more often than
/// it, succeeds.
#[test]
fn keepalives_keep_a_slow_server_alive() {
    let mut parts = now(HANDSHAKE);
    parts.extend((0..8).map(|_| (Duration::from_millis(100), b"\n".to_vec())));
    parts.push((Duration::from_millis(100), b"$3\r\nabc".to_vec()));
    let (opts, server) = fake(parts, Then::Silence, Duration::from_millis(300));
    let mut src = ReplicationSource::connect(&opts).unwrap();
    let mut got = Vec::new();
    src.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abc");
    src.finish().unwrap();
    drop(src);
    server.join().unwrap();
}
