//! Entry points for the fuzz targets (`fuzz/fuzz_targets/`) and the test
//! that replays their corpora (`engine/tests/fuzz_regressions.rs`): one
//! function per target, taking the plaintext bytes of what cairn decodes
//! after decryption or reads from the network, and running them through
//! the real decode and validate paths. Network framing is fed from memory.
//!
//! Each function returns `Ok` when the input decoded (and, for the
//! replication sessions, the session ended cleanly), so that the replay
//! test can assert that valid seeds still decode. None may panic, hang or
//! allocate without bound on any input.
//!
//! Not a stable API: nothing here is for use outside cairn's own fuzzing.

use std::io::{BufReader, Read, Write};

use crate::commands::files::{Layout, LinkRule};
use crate::commands::restore::range_end;
use crate::keys::{Kdf, KeySlot, Secret};
use crate::pg::expire::ExpiryRecord;
use crate::pg::replication::conn::Conn;
use crate::pg::replication::{BaseBackup, BaseBackupOptions, ChannelBindingMode, ConnInfo, Password};
use crate::repo::Config;
use crate::repofile::RepoFile;
use crate::snapshot::{Entry, FileKind, Snapshot, SourceInfo};
use crate::sources::dir::DirFacts;
use crate::sources::pg::base::PgFacts;
use crate::sources::redis::rdb::RedisFacts;
use crate::sources::redis::sync::{handshake, PayloadReader};
use crate::sources::tar::MemberIndex;
use crate::wal::{StanzaRecord, WalManifest};
use crate::{Error, Result};

mod seeds;
pub use seeds::seeds;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]) -> Result<()>;

/// The fuzz targets, by name, with their entry points.
pub const TARGETS: &[(&str, Target)] = &[
    ("snapshot_manifest", snapshot_manifest),
    ("member_index", member_index),
    ("wal_manifest", wal_manifest),
    ("keys_config", keys_config),
    ("wal_journal", wal_journal),
    ("redis_sync", redis_sync),
    ("pg_replication", pg_replication),
    ("pg_basebackup", pg_basebackup),
];

/// A snapshot manifest (`snapshots/<id>`, opened): decoded, re-encoded and
/// decoded again; its source facts read; a directory snapshot's file list
/// built, listed and vetted as `ls` and `restore` do.
pub fn snapshot_manifest(data: &[u8]) -> Result<()> {
    let snap = Snapshot::decode("snapshots/fuzz", data)?;
    if let Err(e) = Snapshot::decode("snapshots/fuzz", &snap.encode()) {
        panic!("a decoded snapshot manifest does not decode once re-encoded: {e}");
    }
    let _ = RedisFacts::of(&snap);
    let _ = DirFacts::of(&snap);
    if let Ok(f) = PgFacts::of(&snap) {
        let _ = (f.start(), f.stop());
    }
    for e in &snap.entries {
        if let Some(m) = &e.members {
            let _ = m.as_entry(&e.name);
        }
    }
    if snap.is_file_tree() {
        files(&Layout::of_dir(snap));
    }
    Ok(())
}

/// A tar entry's member index: decoded and re-encoded; every member's
/// byte range checked against the entry as a restore does; the file list
/// built, listed and vetted.
pub fn member_index(data: &[u8]) -> Result<()> {
    let idx = MemberIndex::decode("member index of entry \"fuzz.tar\"", data)?;
    let again = MemberIndex::decode("member index", &idx.encode());
    assert!(again.as_ref().is_ok_and(|a| *a == idx), "a member index does not survive re-encoding: {again:?}");
    let mut entry = Entry::new("fuzz.tar", FileKind::File, 0o644, None);
    entry.size = 1 << 40;
    for m in &idx.members {
        let _ = range_end(&entry, m.data, m.size);
    }
    let snap = Snapshot {
        version: crate::snapshot::SNAPSHOT_VERSION,
        time: "2026-01-01T00:00:00Z".into(),
        host: "fuzz".into(),
        source: SourceInfo { kind: "stream".into(), name: "fuzz".into(), command: None },
        tags: Vec::new(),
        metadata: serde_json::Value::Null,
        entries: vec![entry],
        stats: Default::default(),
        lease: None,
        copied_from: None,
    };
    files(&Layout::of_members(snap, 0, idx));
    Ok(())
}

/// What `ls`, `ls --json` and a restore's vetting do with a file list.
fn files(layout: &Layout) {
    let all = layout.list(None);
    let _ = serde_json::to_vec(&all);
    let _ = layout.vet(&all, LinkRule::Any);
    let _ = layout.vet(&all, LinkRule::PgTablespaces);
    for f in all.iter().take(4) {
        let _ = layout.vet(&layout.list(Some(&f.path)), LinkRule::Any);
    }
}

/// A stanza's records (opened): parts separated by 0xFF bytes (never in
/// JSON), the first a stanza record, the others WAL manifests (or the
/// expiry record); each decoded, every piece reference parsed, and the
/// whole summarised as `wal show` does. `Ok` when every part decoded.
pub fn wal_manifest(data: &[u8]) -> Result<()> {
    let mut parts = data.split(|&b| b == 0xff);
    let mut first_error = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    };
    let cluster = match StanzaRecord::decode("wal/fuzz/stanza", parts.next().unwrap_or_default()) {
        Ok(rec) => {
            let _ = crate::wal::validate_stanza(&rec.stanza);
            Some(rec)
        }
        Err(e) => {
            note(Err(e));
            None
        }
    };
    let mut all = Vec::new();
    for part in parts {
        let key = "wal/fuzz/00000001/fuzz";
        match WalManifest::decode(key, part) {
            Ok(m) => {
                for p in &m.pieces {
                    let _ = p.entry();
                }
                all.push((format!("wal/fuzz/00000001/{}", m.name), m));
            }
            Err(e) => note(ExpiryRecord::decode("wal/fuzz/expiry", part).map(drop).map_err(|_| e)),
        }
    }
    match crate::wal::catalog::summarise("fuzz", cluster, &all, Vec::new(), true) {
        Ok(report) => drop(serde_json::to_vec(&report)),
        Err(e) => note(Err(e)),
    }
    first_error.map_or(Ok(()), Err)
}

/// The key a fuzzed segment journal is read as.
pub const JOURNAL_KEY: &str = "waljournal/fuzz/00000001/000000010000000000000001";

/// The repository keys fuzzed journals are sealed with (from [`KEY_FILE`]
/// as a master key).
pub fn journal_keys() -> &'static crate::crypto::Keys {
    static KEYS: std::sync::OnceLock<crate::crypto::Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| crate::crypto::Keys::derive(&crate::crypto::MasterKey(KEY_FILE)))
}

/// A segment journal (`waljournal/…`, as stored: its records sealed with
/// [`journal_keys`]) read as `wal fetch` and planning read it, and its
/// records applied to an empty segment. `Ok` when it read (an end cut
/// short by a crash is not an error).
pub fn wal_journal(data: &[u8]) -> Result<()> {
    let r = crate::wal::journal::read(journal_keys(), JOURNAL_KEY, data)?;
    let got = crate::wal::journal::tail(0, &r.records, 16 << 20);
    assert!(got.len() <= 16 << 20, "a journal's tail past the segment's size");
    Ok(())
}

/// The repository id key slots are opened for.
pub const REPO_ID: &str = "f0220000000000000000000000000000";
/// The key file the fuzz secret stands for.
pub const KEY_FILE: [u8; 32] = [0x42; 32];
/// The password the fuzz secret stands for.
pub const PASSWORD: &[u8] = b"fuzz";
/// Argon2id slots are opened only up to this memory (KiB) and these
/// passes: dearer parameters are valid, but too slow to fuzz.
const CHEAP_ARGON2: (u32, u32) = (64, 2);

/// `config` or a key slot (plaintext JSON, read before anything is
/// unlocked): decoded as each; a config's chunker sizes validated; a key
/// slot opened with a key file and with a password. `Ok` when the config
/// is valid, or the slot decoded and opening it failed with no error.
pub fn keys_config(data: &[u8]) -> Result<()> {
    let config = Config::decode("config", data).and_then(|c| {
        c.chunker.validate()?;
        let _ = c.gc();
        Ok(())
    });
    let slot = KeySlot::decode("keys/fuzz", data).and_then(|slot| {
        // What opening checks before any key derivation, for every slot.
        slot.validate("keys/fuzz")?;
        slot.open("keys/fuzz", REPO_ID, &Secret::KeyFile(KEY_FILE.into()))?;
        let cheap = match slot.kdf {
            Kdf::Argon2id { m_cost, t_cost, .. } => m_cost <= CHEAP_ARGON2.0 && t_cost <= CHEAP_ARGON2.1,
            Kdf::Blake3KeyFile => true,
        };
        if cheap {
            slot.open("keys/fuzz", REPO_ID, &Secret::Password(PASSWORD.to_vec().into()))?;
        }
        Ok(())
    });
    config.or(slot)
}

/// A server's bytes in memory; what is written to it is dropped.
struct Script<'a>(std::io::Cursor<&'a [u8]>);

impl Read for Script<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Script<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Read sizes from a seed, so that reads split the stream everywhere.
struct Sizes(u32);

impl Sizes {
    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        match (self.0 >> 16) % 8 {
            0 => 1,
            1..=4 => 1 + (self.0 >> 20) as usize % 600,
            _ => 64 << 10,
        }
    }
}

/// What a Redis server answers a replica: the first byte chooses whether
/// a password (bit 0) and a user (bit 1) are given, and seeds the read
/// sizes; the rest is the server's side of the handshake from `AUTH` to
/// `+FULLRESYNC` and the payload (`$<len>` or `$EOF:<mark>` framing),
/// read to its end. `Ok` when the payload ended as its framing says.
pub fn redis_sync(data: &[u8]) -> Result<()> {
    let Some((&flags, server)) = data.split_first() else {
        return Err(Error::InvalidInput("empty input".into()));
    };
    let capacity = if flags & 4 == 0 { 64 } else { 8 << 10 };
    let mut conn = BufReader::with_capacity(capacity, Script(std::io::Cursor::new(server)));
    let password = (flags & 1 != 0).then_some("secret");
    let user = (flags & 2 != 0).then_some("replica");
    let (payload, _id, _offset) =
        handshake(&mut conn, "fuzz:6379", std::time::Duration::from_secs(60), user, password)?;
    let mut reader = PayloadReader::new(conn, payload, "fuzz:6379");
    let mut sizes = Sizes(u32::from(flags));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = sizes.next();
        match reader.read(&mut buf[..n]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(Error::Input { offset: 0, source: e }),
        }
    }
    reader.finish()
}

/// A PostgreSQL server's side of a replication session, from the
/// authentication request on: the first byte chooses the options (bit 0
/// a password, bits 1–2 channel binding, bit 3 a manifest, bit 4
/// progress, bit 5 reading or skipping archives) and seeds the read
/// sizes. `Ok` when the backup ended cleanly.
pub fn pg_replication(data: &[u8]) -> Result<()> {
    let Some((&flags, server)) = data.split_first() else {
        return Err(Error::InvalidInput("empty input".into()));
    };
    session(flags, server.to_vec())
}

/// The copy stream of a `BASE_BACKUP` session: the first byte as for
/// [`pg_replication`], bit 6 choosing a PostgreSQL 15 (one stream, typed
/// CopyData) or 14 (one stream per tablespace) server; the rest follows
/// a canned startup, `IDENTIFY_SYSTEM` and start of the backup.
pub fn pg_basebackup(data: &[u8]) -> Result<()> {
    let Some((&flags, stream)) = data.split_first() else {
        return Err(Error::InvalidInput("empty input".into()));
    };
    let mut script = pg_prelude(flags & 64 != 0);
    script.extend_from_slice(stream);
    session(flags, script)
}

fn session(flags: u8, script: Vec<u8>) -> Result<()> {
    let mut ci = ConnInfo::parse_with_env("host=/fuzz port=5432 user=fuzz", &|_| None)?;
    ci.password = (flags & 1 != 0).then(|| Password::new("secret"));
    ci.channel_binding = match (flags >> 1) & 3 {
        0 => ChannelBindingMode::Disable,
        1 => ChannelBindingMode::Require,
        _ => ChannelBindingMode::Prefer,
    };
    let opts = BaseBackupOptions { manifest: flags & 8 != 0, progress: flags & 16 != 0, ..Default::default() };
    let mut conn = Conn::scripted(script);
    conn.startup(&ci, crate::pg::replication::conn::Session::Replication)?;
    let mut bb = BaseBackup::start_on(conn, &opts)?;
    let _ = (bb.system_id(), bb.timeline(), bb.start_lsn(), bb.server_version(), format!("{bb:?}"));
    let mut sizes = Sizes(u32::from(flags));
    let mut buf = vec![0u8; 64 << 10];
    while let Some(_archive) = bb.next_archive()? {
        if flags & 32 == 0 {
            continue;
        }
        loop {
            let n = sizes.next();
            match bb.read(&mut buf[..n]) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = bb.progress();
    }
    let _ = bb.progress();
    if opts.manifest {
        bb.manifest()?;
    }
    bb.finish().map(drop)
}

/// One backend message.
pub fn pg_message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A NUL-terminated string, as the protocol writes them.
pub(crate) fn cstr(s: &str) -> Vec<u8> {
    [s.as_bytes(), b"\0"].concat()
}

/// A `DataRow` of text columns (`None`: NULL).
pub fn pg_row(cols: &[Option<&str>]) -> Vec<u8> {
    let mut body = (cols.len() as u16).to_be_bytes().to_vec();
    for c in cols {
        match c {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
        }
    }
    pg_message(b'D', &body)
}

/// What a server says from `AuthenticationOk` to the first `CopyOutResponse`
/// of `BASE_BACKUP`: a 15 server with one tablespace, or a 14 server with
/// a tablespace besides the data directory.
pub fn pg_prelude(v15: bool) -> Vec<u8> {
    type Tablespace<'a> = (Option<&'a str>, Option<&'a str>, &'a str);
    let (version, tablespaces): (&str, &[Tablespace]) = if v15 {
        ("15.8", &[(None, None, "4")])
    } else {
        ("14.10", &[(Some("16384"), Some("/srv/ts"), "1"), (None, None, "2")])
    };
    let no_columns = pg_message(b'T', &0u16.to_be_bytes());
    let ready = pg_message(b'Z', b"I");
    let mut s = pg_message(b'R', &0u32.to_be_bytes());
    s.extend(pg_message(b'S', &[cstr("server_version"), cstr(version)].concat()));
    s.extend(pg_message(b'K', &[0u8; 8]));
    s.extend(&ready);
    s.extend(&no_columns);
    s.extend(pg_row(&[Some("7300000000000000001"), Some("3"), Some("0/3000000"), None]));
    s.extend(pg_message(b'C', &cstr("IDENTIFY_SYSTEM")));
    s.extend(&ready);
    s.extend(&no_columns);
    s.extend(pg_row(&[Some("0/2000028"), Some("3")]));
    s.extend(pg_message(b'C', &cstr("SELECT")));
    s.extend(&no_columns);
    for (oid, loc, kb) in tablespaces {
        s.extend(pg_row(&[*oid, *loc, Some(kb)]));
    }
    s.extend(pg_message(b'C', &cstr("SELECT")));
    s.extend(pg_message(b'H', &[0, 0, 0]));
    s
}
