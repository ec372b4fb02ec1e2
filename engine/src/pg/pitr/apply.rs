//! Carrying out a plan: the backup's archives extracted beneath the data
//! directory and each tablespace's directory, every file checked against
//! `backup_manifest`, then `tablespace_map`, the recovery settings and
//! `recovery.signal`. The settings come last so that a restore that failed
//! part-way leaves a directory PostgreSQL will not start by mistake.

use std::path::Path;

use cairn_formats::pg::{BackupManifest, FileChecker};
use serde::Serialize;

use super::{Plan, TablespacePlan};
use crate::beneath::{Beneath, Meta};
use crate::commands::files::{ExtractOptions, ExtractSummary, Layout, LinkRule};
use crate::commands::restore::{restore_entry_beneath, StreamCheck};
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::{Error, Result};

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The plan carried out.
    pub plan: Plan,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files checked against `backup_manifest`.
    pub verified: u64,
}

/// Quotes a value for postgresql.conf: inside single quotes a quote is
/// doubled and a backslash escaped, as PostgreSQL's configuration parser
/// reads them; a line break cannot be represented and is refused.
fn conf_quote(key: &str, v: &str) -> Result<String> {
    if v.contains(['\n', '\r', '\0']) {
        return Err(Error::InvalidInput(format!(
            "{key}: a line break or NUL cannot be written to postgresql.auto.conf"
        )));
    }
    Ok(format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''")))
}

/// A `tablespace_map` line's path, escaped as PostgreSQL writes it.
fn map_escape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '\n' | '\r' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How `pg restore` treats existing directories.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Extract into tablespace directories that are not empty.
    pub allow_nonempty_tablespaces: bool,
}

fn read_all(b: &Beneath, rel: &str) -> Result<Option<Vec<u8>>> {
    let Some(mut f) = b.read_file(rel)? else { return Ok(None) };
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v).map_err(|e| Error::io(b.shown(rel), e))?;
    Ok(Some(v))
}

/// Carries out a plan into `pgdata`, which must be missing or empty.
///
/// Everything is written beneath `pgdata` (and each tablespace's
/// directory) through `Beneath`; the only symbolic links the backup may
/// hold are `pg_tblspc/<oid>`, and none is followed. Directories stay 0700
/// and files 0600 until their own modes are applied at the end.
///
/// The steps: the destinations are checked, the archives extracted
/// (`extract_all`), every file checked against `backup_manifest`
/// (`verify`), and the recovery files written last (`write_recovery`).
pub async fn restore(
    repo: &Repository,
    index: &LocalIndex,
    plan: Plan,
    snapshot: Snapshot,
    pgdata: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    check_destinations(&plan, pgdata, opts)?;
    let b = Beneath::open(pgdata)?;
    let (sum, roots) = extract_all(repo, index, &plan, &snapshot, pgdata, &b).await?;
    let checked = verify(&b, &roots)?;
    write_recovery(&b, &plan, &roots)?;
    Ok(RestoreReport { plan, files: sum.items, bytes: sum.bytes_written, verified: checked })
}

/// Each tablespace's restored directory, opened.
type Roots<'a> = Vec<(&'a TablespacePlan, Beneath)>;

/// Refuses a data directory that is not empty, and a tablespace directory
/// that is relative or (unless allowed) not empty.
fn check_destinations(plan: &Plan, pgdata: &Path, opts: &RestoreOptions) -> Result<()> {
    if std::fs::read_dir(pgdata).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::InvalidInput(format!("{}: not empty; restore into a new directory", pgdata.display())));
    }
    for t in &plan.tablespaces {
        if !t.restore_to.is_absolute() {
            return Err(Error::InvalidInput(format!(
                "tablespace {}: {:?} is not an absolute path",
                t.oid, t.restore_to
            )));
        }
        if !opts.allow_nonempty_tablespaces && std::fs::read_dir(&t.restore_to).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::InvalidInput(format!(
                "tablespace {}'s directory {} is not empty",
                t.oid,
                t.restore_to.display()
            )));
        }
    }
    Ok(())
}

/// Extracts the data directory's archive into `b` (`pgdata`), each
/// tablespace's into its directory, and `backup_manifest`; makes `pg_wal`.
async fn extract_all<'p>(
    repo: &Repository,
    index: &LocalIndex,
    plan: &'p Plan,
    snapshot: &Snapshot,
    pgdata: &Path,
    b: &Beneath,
) -> Result<(ExtractSummary, Roots<'p>)> {
    // A PostgreSQL data directory holds no setuid files and no links but
    // the tablespaces'; its files belong to the server's user, kept when
    // root restores.
    let xopts =
        ExtractOptions { same_owner: Some(true), same_permissions: Some(false), links: LinkRule::PgTablespaces };
    // `verify` reads every file back against backup_manifest afterwards.
    let check = StreamCheck::LengthOnly;
    let manifest_entry = snapshot.entries.iter().find(|e| e.name == "backup_manifest" && e.members.is_none()).cloned();
    // The data directory's archive: a pulled backup sends the tablespaces'
    // archives first and `base.tar` last.
    let is_tablespace = |name: &str| plan.tablespaces.iter().any(|t| name == format!("{}.tar", t.oid));
    let base = snapshot
        .entries
        .iter()
        .position(|e| e.members.is_some() && e.name == "base.tar")
        .or_else(|| snapshot.entries.iter().position(|e| e.members.is_some() && !is_tablespace(&e.name)))
        .ok_or_else(|| Error::corrupt("snapshot", None, "no archive of the data directory"))?;
    let mut sum = Layout::load_tar(repo, index, snapshot.clone(), base)
        .await?
        .extract_checked(repo, index, None, pgdata, &xopts, check)
        .await?;
    let mut roots = Vec::new();
    for t in &plan.tablespaces {
        let Some(i) = snapshot.entries.iter().position(|e| e.name == format!("{}.tar", t.oid)) else {
            return Err(Error::corrupt("snapshot", None, format!("tablespace {} has no archive", t.oid)));
        };
        let l = Layout::load_tar(repo, index, snapshot.clone(), i).await?;
        let s = l.extract_checked(repo, index, None, &t.restore_to, &xopts, check).await?;
        sum.items += s.items;
        sum.bytes_written += s.bytes_written;
        roots.push((t, Beneath::open(&t.restore_to)?));
    }
    if let Some(e) = manifest_entry {
        restore_entry_beneath(repo, index, &e, b, "backup_manifest", None, 4, Default::default()).await?;
    }
    for d in ["pg_wal", "pg_wal/archive_status"] {
        b.dir(d, true)?;
    }
    Ok((sum, roots))
}

/// Checks every file against `backup_manifest`, read without following
/// links; returns how many were checked.
fn verify(b: &Beneath, roots: &Roots<'_>) -> Result<u64> {
    let mbytes = read_all(b, "backup_manifest")?
        .ok_or_else(|| Error::NotFound { what: format!("{}", b.shown("backup_manifest").display()) })?;
    let manifest =
        BackupManifest::parse(&mbytes).map_err(|e| Error::corrupt("backup_manifest", None, e.to_string()))?;
    tokio::task::block_in_place(|| -> Result<u64> {
        use rayon::prelude::*;
        manifest.files.par_iter().try_for_each(|f| -> Result<()> {
            let rel = f.path_lossy();
            // Tablespace files live in their own directories until
            // PostgreSQL links them in from tablespace_map.
            let in_tablespace = rel
                .strip_prefix("pg_tblspc/")
                .and_then(|r| r.split_once('/'))
                .and_then(|(oid, rest)| roots.iter().find(|(t, _)| t.oid == oid).map(|(_, root)| (root, rest)));
            let (root, rel) = in_tablespace.unwrap_or((b, rel.as_str()));
            let shown = root.shown(rel);
            let mut file = root.read_file(rel)?.ok_or_else(|| Error::NotFound { what: shown.display().to_string() })?;
            let mut c = FileChecker::new(f);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| Error::io(&shown, e))?;
                if n == 0 {
                    break;
                }
                c.update(&buf[..n]);
            }
            c.finish().map_err(|e| Error::corrupt(shown.display().to_string(), None, e.to_string()))
        })?;
        Ok(manifest.files.len() as u64)
    })
}

/// Writes `tablespace_map` (when a tablespace moved), the recovery
/// settings and `recovery.signal`, then the modes and owners of what
/// cairn made.
fn write_recovery(b: &Beneath, plan: &Plan, roots: &Roots<'_>) -> Result<()> {
    // What PostgreSQL reads is owned like PG_VERSION (the server's user).
    let owner = match b.read_file("PG_VERSION")? {
        Some(f) if running_as_root() => {
            let m = f.metadata().map_err(|e| Error::io(b.shown("PG_VERSION"), e))?;
            Some((std::os::unix::fs::MetadataExt::uid(&m), std::os::unix::fs::MetadataExt::gid(&m)))
        }
        _ => None,
    };
    // Mapped tablespaces: the map as PostgreSQL will read it, written
    // after the backup's own was checked against the manifest.
    if plan.tablespaces.iter().any(|t| t.restore_to.as_os_str() != t.server_location.as_str()) {
        let mut map = String::new();
        for t in &plan.tablespaces {
            let to = t.restore_to.to_str().ok_or_else(|| {
                Error::InvalidInput(format!("tablespace {}: {:?} is not valid UTF-8", t.oid, t.restore_to))
            })?;
            map.push_str(&format!("{} {}\n", t.oid, map_escape(to)));
        }
        b.write("tablespace_map", map.as_bytes(), Some(&Meta { mode: 0o600, owner, mtime: None }))?;
    }
    // Recovery settings last: a restore that failed above leaves no
    // recovery.signal, so the directory cannot be started by mistake.
    let file_meta = Meta { mode: 0o600, owner, mtime: None };
    let mut text =
        read_all(b, "postgresql.auto.conf")?.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
    text.push_str(&format!("\n# Added by cairn pg restore (snapshot {})\n", plan.snapshot));
    for (k, v) in &plan.settings {
        text.push_str(&format!("{k} = {}\n", conf_quote(k, v)?));
    }
    b.write("postgresql.auto.conf", text.as_bytes(), Some(&file_meta))?;
    b.write("recovery.signal", b"", Some(&file_meta))?;
    if let Some(o) = owner {
        // The data directory itself and what cairn made are not members
        // of the archive.
        let dir_meta = Meta { mode: 0o700, owner: Some(o), mtime: None };
        for d in ["pg_wal/archive_status", "pg_wal", ""] {
            b.set_dir_meta(d, &dir_meta)?;
        }
        for (_, root) in roots {
            root.set_dir_meta("", &dir_meta)?;
        }
        b.set_file_meta("backup_manifest", &file_meta)?;
    } else {
        b.set_dir_meta("", &Meta { mode: 0o700, owner: None, mtime: None })?;
    }
    Ok(())
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
