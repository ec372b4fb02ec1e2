//! The Redis drill: the snapshot's RDB restored into scratch (its BLAKE3
//! checked as it is written), a temporary `redis-server` loading it — no
//! TCP, a Unix socket in the scratch directory, no saving — and each
//! database's key count compared with what the snapshot recorded when the
//! RDB was parsed at backup time. Redis itself is the oracle: it refuses a
//! file it cannot load, and counts what it loaded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::guard::{command_as, RunAs, Scratch, Server, Signal};
use super::{failed, Measured, Timeline};
use crate::commands::restore::{restore_entry_to_path, RestoreProgress};
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::sources::redis::rdb::RedisFacts;
use crate::Result;

/// What to drill.
#[derive(Debug, Clone)]
pub struct RedisDrill {
    /// The snapshot (the source's newest, chosen by the caller).
    pub snapshot: (crate::ids::SnapshotId, Snapshot),
    /// The `redis-server` program.
    pub redis_server: PathBuf,
    /// The user the server runs as (when cairn runs as root).
    pub run_as: Option<RunAs>,
    /// The longest loading may take.
    pub timeout: Duration,
    /// Test only: a key deleted after loading, so the counts disagree.
    pub drop_key: Option<String>,
}

/// Runs a Redis drill in `scratch`.
pub async fn redis(
    repo: &Repository,
    index: &LocalIndex,
    d: &RedisDrill,
    scratch: &Scratch,
    tl: &mut Timeline,
    m: &mut Measured,
) -> Result<()> {
    let (id, snap) = &d.snapshot;
    m.restoring(id, snap);
    let facts = RedisFacts::of(snap)
        .ok_or_else(|| failed("restore", format!("snapshot {} records no Redis facts", id.short())))?;
    let root = scratch.path();
    let rdb = root.join("dump.rdb");
    tl.phase("restore", true, async {
        let [entry] = snap.entries.as_slice() else {
            return Err(failed(
                "restore",
                format!("snapshot {} has {} entries, not one RDB", id.short(), snap.entries.len()),
            ));
        };
        restore_entry_to_path(repo, index, entry, &rdb, 8, Arc::new(RestoreProgress::default()))
            .await
            .map_err(|e| failed("restore", e.to_string()))?;
        if let Some(u) = &d.run_as {
            u.chown_tree(root)?;
        }
        Ok(())
    })
    .await?;
    let sock = root.join("redis.sock");
    let server = tl.phase("start", true, start(d, root, &sock)).await?;
    let counts = tl
        .phase("verify", false, async {
            if let Some(k) = &d.drop_key {
                call(&sock, &["DEL", k])?;
            }
            let info = call(&sock, &["INFO", "keyspace"])?;
            compare(&facts, &keyspace(&info))
        })
        .await
        .map_err(|e| match e {
            crate::Error::DrillFailed { phase, reason } => {
                failed(&phase, format!("{reason}\n--- redis log (last lines) ---\n{}", server.log_tail(10)))
            }
            e => e,
        })?;
    m.details.push(format!("redis-server loaded {} keys in {} database(s), as recorded", counts.0, counts.1));
    drop(server);
    Ok(())
}

async fn start(d: &RedisDrill, root: &Path, sock: &Path) -> Result<Server> {
    let mut cmd = command_as(d.run_as.as_ref(), &d.redis_server);
    cmd.args(["--port", "0", "--unixsocket"])
        .arg(sock)
        .args(["--unixsocketperm", "700", "--dir"])
        .arg(root)
        .args(["--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--daemonize", "no"])
        .current_dir(root);
    let mut server = Server::spawn("redis-server", cmd, &root.join("redis.log"), Signal::TERM)?;
    let t0 = Instant::now();
    loop {
        if let Some(status) = server.exited() {
            return Err(failed("start", format!("redis-server exited ({status}):\n{}", server.log_tail(20))));
        }
        // PING answers -LOADING while the RDB is still being read.
        if call(sock, &["PING"]).is_ok_and(|r| r == "PONG") {
            return Ok(server);
        }
        if t0.elapsed() > d.timeout {
            return Err(failed("start", format!("redis-server did not load within {} s", d.timeout.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one command; its reply (a simple string, an integer, or a bulk
/// string's contents). An error reply is an error.
fn call(sock: &Path, args: &[&str]) -> Result<String> {
    let io = |e: std::io::Error| failed("verify", format!("talking to redis-server at {}: {e}", sock.display()));
    let mut s = UnixStream::connect(sock).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(io)?;
    let line = line.trim_end();
    match line.split_at(line.len().min(1)) {
        ("+", v) | (":", v) => Ok(v.to_string()),
        ("-", e) => Err(failed("verify", format!("redis-server answered {args:?} with an error: {e}"))),
        ("$", n) => {
            let n: i64 = n.parse().map_err(|_| failed("verify", format!("bad bulk length {n:?}")))?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0u8; n as usize + 2];
            std::io::Read::read_exact(&mut r, &mut buf).map_err(io)?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        _ => Err(failed("verify", format!("unexpected reply {line:?}"))),
    }
}

/// `INFO keyspace` → keys per database number.
fn keyspace(info: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in info.lines() {
        let Some((db, rest)) = l.trim().split_once(':') else { continue };
        let Some(n) = db.strip_prefix("db") else { continue };
        let keys = rest.split(',').find_map(|kv| kv.strip_prefix("keys=")).and_then(|v| v.parse().ok());
        if let Some(k) = keys {
            out.insert(n.to_string(), k);
        }
    }
    out
}

/// Every database's loaded key count against the recorded one. A key with
/// an expiry may have expired since the backup, so a database may hold up
/// to its `expires` keys fewer; never more, never any other shortfall.
fn compare(facts: &RedisFacts, loaded: &BTreeMap<String, u64>) -> Result<(u64, usize)> {
    let mut problems = Vec::new();
    for (db, f) in &facts.databases {
        let got = loaded.get(db).copied().unwrap_or(0);
        if got > f.keys || got + f.expires < f.keys {
            problems.push(format!(
                "db{db}: {got} keys loaded, the snapshot recorded {} ({} with expiry)",
                f.keys, f.expires
            ));
        }
    }
    for (db, got) in loaded {
        if !facts.databases.contains_key(db) && *got > 0 {
            problems.push(format!("db{db}: {got} keys loaded, the snapshot recorded none"));
        }
    }
    if !problems.is_empty() {
        return Err(failed("verify", format!("key counts differ from the snapshot's: {}", problems.join("; "))));
    }
    Ok((loaded.values().sum(), loaded.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_keyspace() {
        let k = keyspace("# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n");
        assert_eq!(k, BTreeMap::from([("0".into(), 10), ("3".into(), 1)]));
    }
}
