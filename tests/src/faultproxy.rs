//! An HTTP proxy that misbehaves on purpose, put between cairn and an S3
//! server (moto): it drops connections, answers 500 or 503 SlowDown,
//! answers slowly, or cuts response bodies short, on a schedule the test
//! sets and can change while cairn runs.
//!
//! It understands just enough HTTP/1.1 for S3 clients: a request is a head
//! and a `Content-Length` (or chunked) body; each one is forwarded on a new
//! upstream connection with `Connection: close`, and the answer is read to
//! its end before the fault, if any, is applied.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to a request the schedule picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection without an answer.
    Reset,
    /// Answer with this status (500, 503) and an S3 error body, without
    /// forwarding.
    Status(u16),
    /// Forward after this delay.
    Slow(Duration),
    /// Forward, but send only half of the answer's body, then close.
    Truncate,
}

/// Which requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every request passes.
    Pass,
    /// Every request fails so.
    All(Fault),
    /// Request number n (counting from 1) fails so when n % every == 0.
    Every(u64, Fault),
}

/// The running proxy; stops accepting when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    schedule: Arc<Mutex<Schedule>>,
    requests: Arc<AtomicU64>,
    faults: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://host:port`) on a free local port.
    pub fn start(upstream: &str) -> FaultProxy {
        let up: SocketAddr = upstream.trim_start_matches("http://").parse().expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let schedule = Arc::new(Mutex::new(Schedule::Pass));
        let (requests, faults, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::default());
        let p = FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            schedule: schedule.clone(),
            requests: requests.clone(),
            faults: faults.clone(),
            stop: Arc::clone(&stop),
            port,
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (schedule, requests, faults) = (schedule.clone(), requests.clone(), faults.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, up, &schedule, &requests, &faults);
                });
            }
        });
        p
    }

    /// Changes the schedule (takes effect from the next request).
    pub fn set(&self, s: Schedule) {
        *self.schedule.lock().unwrap() = s;
    }

    /// Requests seen and faults injected so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.faults.load(Ordering::Relaxed))
    }

    /// The S3 environment for cairn through this proxy (credentials as moto's).
    pub fn env(&self, moto_env: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        moto_env
            .iter()
            .map(|(k, v)| if *k == "AWS_ENDPOINT_URL" { (*k, self.endpoint.clone()) } else { (*k, v.clone()) })
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request: its head (with `Connection: close` in place of any
/// connection header) and its body.
fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut len = 0usize;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            body.extend_from_slice(size.as_bytes());
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some((head, body)))
}

fn serve(
    client: TcpStream,
    up: SocketAddr,
    schedule: &Mutex<Schedule>,
    requests: &AtomicU64,
    faults: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    while let Some((head, body)) = read_request(&mut reader)? {
        let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
        let fault = match *schedule.lock().unwrap() {
            Schedule::Pass => None,
            Schedule::All(f) => Some(f),
            Schedule::Every(e, f) => n.is_multiple_of(e.max(1)).then_some(f),
        };
        if fault.is_some() {
            faults.fetch_add(1, Ordering::Relaxed);
        }
        match fault {
            Some(Fault::Reset) => {
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::Status(code)) => {
                let (reason, s3code) =
                    if code == 503 { ("Slow Down", "SlowDown") } else { ("Internal Error", "InternalError") };
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3code}</Code><Message>injected</Message></Error>"
                );
                write!(
                    client,
                    "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                    xml.len()
                )?;
                continue;
            }
            Some(Fault::Slow(d)) => std::thread::sleep(d),
            _ => {}
        }
        let mut upstream = TcpStream::connect(up)?;
        upstream.write_all(&head)?;
        upstream.write_all(&body)?;
        let mut answer = Vec::new();
        upstream.read_to_end(&mut answer)?;
        if fault == Some(Fault::Truncate) {
            let body_at = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(answer.len(), |p| p + 4);
            let keep = body_at + (answer.len() - body_at) / 2;
            client.write_all(&answer[..keep])?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        client.write_all(&answer)?;
        // Upstream answered with Connection: close; tell the client the
        // same only if it did, else keep serving this connection.
        let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(answer.len());
        let closes = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase().contains("connection: close");
        if closes {
            return Ok(());
        }
    }
    Ok(())
}
