use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Result};
use cairn_engine::Layout;
use cairn_engine::LocalIndex;
use cairn_engine::Snapshot;
use cairn_engine::{restore_entry, restore_entry_to_path, RestoreProgress};

use crate::common::{human_bytes, Global, Ticker};
use crate::exit;

/// Restore a snapshot's stream to a file or stdout, or files into a directory.
///
/// Every blob is authenticated and re-hashed against its id, and the whole
/// stream against the BLAKE3 in the manifest. A file target is written under
/// a temporary name, fsynced and renamed, so it is never left half-written.
///
/// A directory snapshot is restored into the directory `--to` names, with
/// modes, mtimes, symlinks and hard links (and owners when run as root).
/// Nothing is ever written outside `--to`: a snapshot with a member that
/// climbs out (`..`, an absolute path, a path through one of its own
/// symbolic links, a duplicate, a hard link to a non-member) is refused
/// before anything is written, exit 10, naming every such member; links
/// already in the target are replaced, never followed. New directories
/// stay 0700 and files 0600 until their own modes are applied at the end.
/// `--path P` restores only P (and what is under it) from a directory or
/// tar snapshot; from a tar snapshot only the blobs holding P are read.
/// A tar snapshot restored `--to` an existing directory is extracted into
/// it whole, the stream read once.
///
/// Examples:
///   cairn restore latest --source db1 --to /restore/base.tar
///   cairn restore latest --source etc --to /restore/etc
///   cairn restore 3fa2 --path weights/layer0.bin --to /tmp/out
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Snapshot id prefix (4+ hex digits) or `latest`.
    snapshot: String,
    /// With `latest`: the newest snapshot of this source.
    #[arg(long)]
    source: Option<String>,
    /// Output file, or `-` for stdout; a directory with `--path`, for a
    /// directory snapshot, or (existing) to extract a tar snapshot.
    #[arg(long, default_value = "-", value_name = "FILE|DIR")]
    to: PathBuf,
    /// Restore only this file or directory (tar and directory snapshots).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Which entry, for snapshots with several [default: the only one].
    #[arg(long)]
    entry: Option<String>,
    /// Concurrent range reads.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=128))]
    reads: u16,
    /// Give files their recorded owners (root only). The default: yes for
    /// directory snapshots, no for tar snapshots, as GNU tar.
    #[arg(long, overrides_with = "no_same_owner")]
    same_owner: bool,
    /// Leave files owned by whoever restores.
    #[arg(long)]
    no_same_owner: bool,
    /// Keep setuid and setgid bits. The default: only for directory
    /// snapshots restored by root; tar snapshots lose them.
    #[arg(long, overrides_with = "no_same_permissions")]
    same_permissions: bool,
    /// Drop setuid and setgid bits.
    #[arg(long)]
    no_same_permissions: bool,
}

fn tri(yes: bool, no: bool) -> Option<bool> {
    match (yes, no) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

impl Args {
    /// Restore of a whole single-entry snapshot.
    pub fn whole(snapshot: String, source: Option<String>, to: PathBuf) -> Args {
        Args {
            snapshot,
            source,
            to,
            path: None,
            entry: None,
            reads: 8,
            same_owner: false,
            no_same_owner: false,
            same_permissions: false,
            no_same_permissions: false,
        }
    }
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    run_kind(g, a, None).await
}

/// Restores, accepting only snapshots of source kind `kind` when given.
pub async fn run_kind(g: &Global, a: Args, kind: Option<&str>) -> Result<i32> {
    let to_stdout = a.to.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!("refusing to write binary data to a terminal: use --to FILE or redirect stdout");
    }
    let repo = g.open_for_restore().await?;
    let (id, snap) = Snapshot::resolve_kind(&repo, &a.snapshot, a.source.as_deref(), kind).await?;
    // A tar snapshot restored into an existing directory is extracted
    // (read once, in order); to a file name it is written as the tar.
    let extract_tar = a.entry.is_none()
        && !to_stdout
        && a.to.is_dir()
        && snap.entries.iter().filter(|e| e.members.is_some()).count() == 1;
    if a.path.is_some() || snap.is_file_tree() || extract_tar {
        if to_stdout {
            bail!("restoring files needs a target directory: --to DIR");
        }
        let index = LocalIndex::for_reading(&repo, &g.cache_dir(), g.lock_timeout()).await?;
        let layout = Layout::load(&repo, &index, snap).await?;
        let started = std::time::Instant::now();
        let opts = cairn_engine::ExtractOptions {
            same_owner: tri(a.same_owner, a.no_same_owner),
            same_permissions: tri(a.same_permissions, a.no_same_permissions),
            ..Default::default()
        };
        let sum = layout.extract(&repo, &index, a.path.as_deref(), &a.to, &opts).await?;
        if g.json {
            let repositories = crate::fallback::json(&repo);
            super::print_json(
                &serde_json::json!({ "snapshot": id.to_hex(), "path": a.path, "summary": sum, "repositories": repositories }),
            );
        } else if !g.quiet {
            eprintln!(
                "restored {} items ({}) from snapshot {} into {} in {:.1} s; {} read from the repository",
                sum.items,
                human_bytes(sum.bytes_written),
                id.short(),
                a.to.display(),
                started.elapsed().as_secs_f64(),
                human_bytes(sum.bytes_fetched)
            );
            crate::fallback::summary(g, &repo);
        }
        return Ok(exit::OK);
    }
    let entry = match &a.entry {
        Some(n) => snap.entries.iter().find(|e| &e.name == n),
        None if snap.entries.len() == 1 => snap.entries.first(),
        None => bail!("snapshot {} has {} entries: choose one with --entry", id.short(), snap.entries.len()),
    };
    let Some(entry) = entry else {
        bail!(cairn_engine::Error::NotFound {
            what: format!("entry {:?} in snapshot {}", a.entry.unwrap_or_default(), id.short())
        });
    };
    let index = LocalIndex::for_reading(&repo, &g.cache_dir(), g.lock_timeout()).await?;
    let progress = Arc::new(RestoreProgress::default());
    let p = progress.clone();
    let ticker =
        Ticker::start(g.show_progress(), Some(entry.size), "restore", move || p.bytes_written.load(Ordering::Relaxed));
    let result = if to_stdout {
        restore_entry(&repo, &index, entry, std::io::stdout(), a.reads.into(), progress).await.map(|(s, _)| s)
    } else {
        restore_entry_to_path(&repo, &index, entry, &a.to, a.reads.into(), progress).await
    };
    if let Some(t) = ticker {
        t.finish();
    }
    let summary = result?;
    if g.json {
        let repositories = crate::fallback::json(&repo);
        let v = serde_json::json!({ "snapshot": id.to_hex(), "entry": entry.name, "summary": summary, "repositories": repositories });
        if to_stdout {
            eprintln!("{v}");
        } else {
            super::print_json(&v);
        }
    } else if !g.quiet {
        eprintln!(
            "restored {} from snapshot {} in {:.1} s ({}/s), verified BLAKE3 {}",
            human_bytes(summary.bytes_written),
            id.short(),
            summary.duration_s,
            human_bytes((summary.bytes_written as f64 / summary.duration_s.max(1e-9)) as u64),
            &entry.blake3[..16]
        );
        crate::fallback::summary(g, &repo);
    }
    Ok(exit::OK)
}
