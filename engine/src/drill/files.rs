//! The tar, dir and stream drill: the snapshot restored into scratch — a
//! directory snapshot as its tree, a tar or stream snapshot as the files
//! it stored (each checked against its BLAKE3 as it is written) — then the
//! operator's `verify_command` run on what was restored (`tar -tf`, a
//! model loader, a config linter): its exit status decides.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::guard::Scratch;
use super::{failed, Measured, Timeline};
use crate::commands::files::{ExtractOptions, Layout};
use crate::commands::restore::{restore_entry_to_path, RestoreProgress};
use crate::ids::SnapshotId;
use crate::index::LocalIndex;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::Result;

/// What to drill.
#[derive(Debug, Clone)]
pub struct FilesDrill {
    /// The snapshot (the source's newest, chosen by the caller).
    pub snapshot: (SnapshotId, Snapshot),
    /// Run on the restored path (given as its last argument and in
    /// `CAIRN_DRILL_PATH`); a non-zero exit fails the drill.
    pub verify_command: Option<Vec<String>>,
}

/// Runs a tar, dir or stream drill in `scratch`.
pub async fn files(
    repo: &Repository,
    index: &LocalIndex,
    d: &FilesDrill,
    scratch: &Scratch,
    tl: &mut Timeline,
    m: &mut Measured,
) -> Result<()> {
    let (id, snap) = &d.snapshot;
    m.restoring(id, snap);
    let restored = tl.phase("restore", true, restore(repo, index, snap, scratch.path(), m)).await?;
    if let Some(cmd) = &d.verify_command {
        tl.phase("verify", false, verify(cmd, &restored, scratch.path())).await?;
        m.details.push(format!("verify_command {:?} succeeded on {}", cmd[0], restored.display()));
    }
    Ok(())
}

/// Restores into `root/restore`; returns the path the verify command gets:
/// the tree for a directory snapshot, the file for a one-entry snapshot,
/// else the directory of entries.
async fn restore(
    repo: &Repository,
    index: &LocalIndex,
    snap: &Snapshot,
    root: &Path,
    m: &mut Measured,
) -> Result<PathBuf> {
    let dir = root.join("restore");
    std::fs::create_dir(&dir).map_err(|e| crate::Error::io(dir.display().to_string(), e))?;
    let fail = |e: crate::Error| failed("restore", e.to_string());
    if snap.source.kind == crate::sources::dir::KIND {
        let layout = Layout::load(repo, index, snap.clone()).await.map_err(fail)?;
        let opts = ExtractOptions { same_owner: Some(false), ..Default::default() };
        let sum = layout.extract(repo, index, None, &dir, &opts).await.map_err(fail)?;
        m.details.push(format!("restored {} items ({} bytes)", sum.items, sum.bytes_written));
        return Ok(dir);
    }
    let mut bytes = 0;
    let mut last = dir.clone();
    for (i, e) in snap.entries.iter().enumerate() {
        // Entry names are the producer's; the file is named by position so
        // no name can point outside the scratch directory.
        let safe: String = e
            .name
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
            .collect();
        last = dir.join(format!("{i:03}-{}", safe.trim_start_matches('.')));
        let s = restore_entry_to_path(repo, index, e, &last, 8, Arc::new(RestoreProgress::default()))
            .await
            .map_err(fail)?;
        bytes += s.bytes_written;
    }
    m.details.push(format!("restored {} entries ({bytes} bytes), every BLAKE3 matching", snap.entries.len()));
    Ok(if snap.entries.len() == 1 { last } else { dir })
}

/// Runs the verify command (killed if the drill is dropped meanwhile).
async fn verify(cmd: &[String], path: &Path, cwd: &Path) -> Result<()> {
    let out = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg(path)
        .env("CAIRN_DRILL_PATH", path)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| failed("verify", format!("cannot run verify_command {:?}: {e}", cmd[0])))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.trim().lines().collect();
    Err(failed(
        "verify",
        format!(
            "verify_command {:?} failed ({}) on {}:\n{}",
            cmd[0],
            out.status,
            path.display(),
            lines[lines.len().saturating_sub(10)..].join("\n")
        ),
    ))
}
