use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_engine::CommandSource;
use cairn_engine::DirFeed;
use cairn_engine::LocalIndex;
use cairn_engine::PgFacts;
use cairn_engine::Snapshot;
use cairn_engine::StreamSource;
use cairn_engine::TarMode;
use cairn_engine::{Backup, BackupOptions, Progress};

use crate::common::{human_bytes, Global, Ticker};
use crate::exit;

/// Back up one stream, or a directory.
///
/// The input is a file, `-` for stdin, or a producer command after `--`
/// whose stdout is read. The snapshot is written only if the producer exits
/// 0, so a truncated `pg_basebackup` never becomes a "successful" backup.
///
/// A stream whose first block is a tar header is chunked as tar: cut where
/// each large member's data starts and ends, so a file's content
/// deduplicates wherever it sits in the archive, and a member index is
/// stored so that `cairn ls`, `cairn diff` and `cairn restore --path` can
/// reach one file without reading the rest. `--kind dir PATH` stores a
/// directory tree; files unchanged since the previous snapshot of the same
/// source (size, mtime, inode, ctime) are not read again.
///
/// Examples:
///   cairn backup --source db1 dump.sql
///   pg_dump db1 | cairn backup --source db1 -
///   cairn backup --source db1 -- pg_basebackup -D - -Ft -X none
///   tar -cf - model/ | cairn backup --kind tar --source model -
///   cairn backup --kind dir --source etc --exclude '*.swp' /etc
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Groups snapshots of the same thing [default: the file name, `stdin`, or the command name].
    #[arg(long)]
    source: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// zstd level for new data (1 = fastest, 19 = smallest).
    #[arg(long, default_value_t = cairn_engine::DEFAULT_COMPRESSION_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression: i32,
    /// Packs uploaded concurrently (each holds one 16 MiB pack in memory).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    uploads: u16,
    /// What the stream is: `stream` (any bytes) or `redis-rdb` (validated
    /// while it streams: magic, version, structure, CRC-64; a truncated or
    /// corrupt dump fails the backup and leaves no snapshot; the RDB
    /// version, redis-ver and per-database key counts go into the snapshot).
    /// `tar`: a tar stream (refused unless it parses as tar; a gzip or
    /// zstd tarball is stored byte-exact and reported). `dir`: FILE is a
    /// directory to snapshot.
    #[arg(long, value_enum, default_value_t = Kind::Stream)]
    kind: Kind,
    /// With `--kind dir`: leave out paths matching this glob (matched
    /// against the path under the root and against the file name; repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Average chunk size in KiB for this source instead of the
    /// repository's (1024); min and max are a quarter and four times it.
    /// Smaller chunks cost more index entries but store less of a file
    /// that changed in small scattered places (model weights after a
    /// fine-tune: see README). Keep one value per source: data chunked
    /// with another size does not deduplicate against it.
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(64..=4096))]
    chunk_avg_kib: Option<u32>,
    /// With `--kind pg-base`: the stanza archiving the cluster's WAL [env: CAIRN_STANZA].
    #[arg(long, env = "CAIRN_STANZA")]
    stanza: Option<String>,
    /// With `--kind pg-base`: seconds to wait for the backup's WAL to be archived.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    wal_timeout: u64,
    /// With `--kind pg-base` and a producer command: the server (libpq
    /// connection string, no password; a plain SQL session) whose
    /// pg_stat_archiver is watched while the backup runs and waits for its
    /// WAL. When archive_command fails after the backup began, the producer
    /// is stopped and the backup fails at once (exit 12), instead of
    /// pg_basebackup waiting in silence for WAL that never arrives.
    #[arg(long, value_name = "CONNINFO")]
    connect: Option<String>,
    /// FILE to read, or `-` for stdin. Omit when giving a command after `--`.
    #[arg(value_name = "FILE")]
    input: Option<PathBuf>,
    /// Producer command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Stream kinds `backup` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Any byte stream.
    Stream,
    /// A Redis RDB dump.
    RedisRdb,
    /// A tar archive.
    Tar,
    /// A PostgreSQL base backup as one tar stream (`pg_basebackup -D - -Ft
    /// -X none`): checked against its backup_manifest while it streams;
    /// needs --stanza, whose WAL archive must receive the backup's WAL.
    PgBase,
    /// A directory tree.
    Dir,
}

/// A snapshot just written.
pub struct Taken {
    pub id: cairn_engine::SnapshotId,
    pub snap: Snapshot,
}

impl Taken {
    /// A base backup whose WAL did not all reach the archive in time.
    pub fn wal_incomplete(&self) -> bool {
        PgFacts::of(&self.snap).is_ok_and(|f| !f.wal_complete)
    }

    /// Records the snapshot for the job's metrics.
    pub fn record(&self) {
        let s = &self.snap.stats;
        crate::metrics::record(
            &self.snap.source.name,
            crate::metrics::Sample {
                read_bytes: s.bytes_read,
                added_bytes: s.uploaded_bytes,
                objects: s.chunks,
                ..Default::default()
            },
        );
    }
}

impl Args {
    /// The backup `cairn run` takes of a configured stream, tar or dir source.
    pub fn from_source(src: &crate::config::Source) -> Args {
        let c = &src.cfg;
        Args {
            source: Some(src.name.clone()),
            tags: c.tags.clone(),
            compression: c.compression.unwrap_or(cairn_engine::DEFAULT_COMPRESSION_LEVEL),
            uploads: 3,
            kind: match src.kind {
                crate::config::SourceKind::Tar => Kind::Tar,
                crate::config::SourceKind::Dir => Kind::Dir,
                _ => Kind::Stream,
            },
            excludes: c.exclude.clone(),
            chunk_avg_kib: c.chunk_avg_kib,
            stanza: None,
            wal_timeout: 300,
            connect: None,
            input: c.path.clone(),
            command: c.command.clone().unwrap_or_default(),
        }
    }
}

pub async fn run(g: &Global, a: Args) -> Result<i32> {
    let taken = take(g, a).await?;
    report(g, &taken);
    if taken.wal_incomplete() {
        eprintln!(
            "error: the base backup is stored (snapshot {}) but its WAL is not all archived yet: check \
             archive_command and `cairn wal show`; restores will refuse it until the WAL is there",
            taken.id.short()
        );
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}

/// Takes the backup `a` describes; records it for metrics.
pub async fn take(g: &Global, a: Args) -> Result<Taken> {
    let taken = if a.kind == Kind::Dir { take_dir(g, a).await? } else { take_stream(g, a).await? };
    taken.record();
    Ok(taken)
}

async fn take_stream(g: &Global, a: Args) -> Result<Taken> {
    if !a.excludes.is_empty() {
        anyhow::bail!("--exclude applies to --kind dir only");
    }
    if a.connect.is_some() && (a.kind != Kind::PgBase || a.command.is_empty()) {
        anyhow::bail!("--connect applies to --kind pg-base with a producer command only");
    }
    if let Some(c) = &a.connect {
        if cairn_engine::pg::replication::ConnInfo::parse_with_env(c, &|_| None)?.password.is_some() {
            anyhow::bail!("--connect must not carry a password: use PGPASSWORD or PGPASSFILE");
        }
    }
    let mut stopper = None;
    let (source, mut name, mut opts): (Box<dyn StreamSource>, String, BackupOptions) =
        match (&a.input, a.command.is_empty()) {
            (Some(_), false) => anyhow::bail!("give either FILE or a command after `--`, not both"),
            (None, true) => anyhow::bail!("nothing to back up: give FILE, `-` for stdin, or `-- CMD ARGS`"),
            (None, false) => {
                let src = CommandSource::spawn(&a.command)?;
                stopper = Some(src.stopper());
                let prog = std::path::Path::new(&a.command[0])
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut o = BackupOptions::stream(&prog);
                o.source.command = Some(a.command.clone());
                (Box::new(src), prog, o)
            }
            (Some(p), true) if p.as_os_str() == "-" => {
                (Box::new(std::io::stdin()), "stdin".into(), BackupOptions::stream("stdin"))
            }
            (Some(p), true) => {
                let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
                let meta = f.metadata().with_context(|| format!("reading {}", p.display()))?;
                let name = p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into());
                let mut o = BackupOptions::stream(&name);
                use std::os::unix::fs::MetadataExt;
                o.mode = meta.mode() & 0o7777;
                o.mtime = Some(meta.mtime());
                (Box::new(f), name, o)
            }
        };
    let source: Box<dyn StreamSource> = match a.kind {
        Kind::Stream => source,
        Kind::Tar => {
            opts.source.kind = "tar".into();
            opts.tar = TarMode::Require;
            source
        }
        Kind::RedisRdb => {
            opts.source.kind = cairn_engine::REDIS_KIND.into();
            opts.tar = TarMode::Off;
            Box::new(cairn_engine::RdbSource::new(source))
        }
        Kind::PgBase => {
            let stanza = g.stanza(a.stanza.as_ref()).context("--kind pg-base archives into a stanza")?;
            opts.source.kind = cairn_engine::PG_BASE_KIND.into();
            opts.tar = TarMode::Pg;
            if a.source.is_none() {
                name = stanza.clone();
            }
            Box::new(cairn_engine::BaseTarSource::new(source, &stanza))
        }
        Kind::Dir => unreachable!("handled above"),
    };
    opts.source.name = a.source.clone().unwrap_or(name);
    opts.tags = a.tags;
    opts.compression_level = a.compression;
    opts.upload_concurrency = a.uploads.into();
    opts.chunker = a.chunk_avg_kib.map(cairn_engine::ChunkerParams::with_average_kib);
    let size_hint =
        a.input.as_ref().filter(|p| p.as_os_str() != "-").and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len());

    let repo = g.open().await?;
    let index = Arc::new(LocalIndex::for_writing(&repo, &g.cache_dir(), g.lock_timeout()).await?);
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let ticker = Ticker::start(g.show_progress(), size_hint, "backup", move || p.bytes_read.load(Ordering::Relaxed));
    let gate = match (a.kind, a.stanza.clone().or_else(|| g.stanza_from_config.clone())) {
        (Kind::PgBase, Some(stanza)) => {
            let watch = super::pg_watch::backup_watch(g, a.connect.as_deref()).await?;
            let timeout = std::time::Duration::from_secs(a.wal_timeout);
            Some(cairn_engine::pg::wal_gate(repo.clone(), stanza, timeout, watch))
        }
        _ => None,
    };
    let notice = (a.kind == Kind::PgBase)
        .then(|| super::pg_watch::checkpoint_notice(g, progress.clone(), Some("pg_basebackup --checkpoint=fast")));
    // While the producer runs (pg_basebackup waits, at its end, for the
    // server to archive the backup's WAL), a failing archive_command
    // stops it.
    let producer_watch = match (&a.connect, stopper) {
        (Some(c), Some(stop)) if a.kind == Kind::PgBase => {
            let mut watch = super::pg_watch::backup_watch(g, Some(c)).await?;
            Some(tokio::spawn(async move {
                let e = watch.until_failing("the base backup's WAL").await;
                stop.stop();
                e
            }))
        }
        _ => None,
    };
    let mut backup = Backup::new(repo, index.clone(), opts).progress(progress);
    if let Some(gate) = gate {
        backup = backup.gate(gate);
    }
    let mut result = backup.stream(source).await;
    if let Some(n) = notice {
        n.abort();
    }
    if let Some(w) = producer_watch {
        if w.is_finished() && result.is_err() {
            // The watch stopped the producer: its failure is the cause.
            result = Err(w.await.unwrap_or_else(|e| cairn_engine::Error::Internal(format!("archiver watch: {e}"))));
        } else {
            w.abort();
        }
    }
    LocalIndex::release_shared(index).await;
    if let Some(t) = ticker {
        t.finish();
    }
    let (id, snap) = result?;
    Ok(Taken { id, snap })
}

/// `--kind dir`: a directory tree, with the previous snapshot of the same
/// source on this host as the files cache.
async fn take_dir(g: &Global, a: Args) -> Result<Taken> {
    let root = match (&a.input, a.command.is_empty()) {
        (Some(p), true) if p.as_os_str() != "-" => p.clone(),
        _ => anyhow::bail!("--kind dir takes a directory path (not stdin or a command)"),
    };
    let root = std::fs::canonicalize(&root).with_context(|| format!("opening {}", root.display()))?;
    let name = root.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into());
    let mut opts = BackupOptions::stream(&name);
    opts.source.kind = cairn_engine::DIR_KIND.into();
    opts.source.name = a.source.clone().unwrap_or(name);
    opts.tags = a.tags;
    opts.compression_level = a.compression;
    opts.upload_concurrency = a.uploads.into();
    opts.chunker = a.chunk_avg_kib.map(cairn_engine::ChunkerParams::with_average_kib);
    let excludes = cairn_engine::build_excludes(&a.excludes)?;

    let repo = g.open().await?;
    let parent = cairn_engine::previous_dir_snapshot(&repo, &opts.source.name, &root).await?;
    if let Some((pid, _)) = &parent {
        tracing::info!("files cache: snapshot {}", pid.short());
    }
    let index = Arc::new(LocalIndex::for_writing(&repo, &g.cache_dir(), g.lock_timeout()).await?);
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let ticker = Ticker::start(g.show_progress(), None, "backup", move || p.bytes_read.load(Ordering::Relaxed));
    let feed = DirFeed::new(root, excludes, parent.map(|(_, s)| s));
    let result = Backup::new(repo, index.clone(), opts).progress(progress).feed(Box::new(feed)).await;
    LocalIndex::release_shared(index).await;
    if let Some(t) = ticker {
        t.finish();
    }
    let (id, snap) = result?;
    Ok(Taken { id, snap })
}

/// Prints what was saved: one JSON line, or one human line.
pub fn report(g: &Global, Taken { id, snap }: &Taken) {
    if g.json {
        super::print_json(
            &serde_json::json!({ "snapshot": id.to_hex(), "source": snap.source.name, "kind": snap.source.kind, "time": snap.time, "stats": snap.stats, "blake3": snap.entries.first().map(|e| e.blake3.clone()), "metadata": snap.metadata }),
        );
    } else if !g.quiet {
        let s = &snap.stats;
        println!(
            "snapshot {} saved: {} read, {} new in {} of {} chunks, {} uploaded, {:.1} s ({}/s)",
            id.short(),
            human_bytes(s.bytes_read),
            human_bytes(s.new_bytes),
            s.new_chunks,
            s.chunks,
            human_bytes(s.uploaded_bytes),
            s.duration_s,
            human_bytes((s.bytes_read as f64 / s.duration_s.max(1e-9)) as u64)
        );
    }
}
