//! `cairn redis …`: Redis-specific commands.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::common::Global;

#[derive(Debug, Subcommand)]
pub enum Command {
    Backup(BackupArgs),
    Restore(RestoreArgs),
}

/// Pull an RDB straight from a running server over the replication protocol
/// (as a replica would: PSYNC full resynchronisation, disk-based or
/// diskless), validate it while it streams, and store it as a redis-rdb
/// snapshot; no temporary file. The snapshot records repl-id and offset,
/// redis-ver, the RDB version and per-database key counts.
///
/// The server's password comes from REDISCLI_AUTH (as for redis-cli) or
/// --redis-password-file, so it need not be in argv; one in the URL works
/// but is visible to other users of this machine. (--password-file and
/// CAIRN_PASSWORD_FILE are the repository's password, as everywhere.)
///
/// TLS: a rediss:// URL or --tls. The server's certificate is checked
/// against --tls-ca-file (or the system's roots) and the URL's host (or
/// --tls-server-name); --tls-cert-file and --tls-key-file present a client
/// certificate to servers with tls-auth-clients.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// redis://[user[:password]@]host:port, or rediss:// for TLS
    #[arg(long)]
    url: String,
    /// Connect with TLS (implied by rediss://).
    #[arg(long)]
    tls: bool,
    /// PEM file of the CA certificates that sign the server's certificate
    /// [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), for servers that authenticate clients.
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Name the server's certificate must carry, and the SNI sent
    /// [default: the URL's host].
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// File holding the Redis server's password (one trailing newline
    /// ignored); not the repository's (--password-file).
    #[arg(long, value_name = "FILE")]
    redis_password_file: Option<PathBuf>,
    /// Seconds without any byte from the server (keepalives count) before giving up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Groups snapshots of the same server [default: host:port].
    #[arg(long)]
    source: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Average chunk size in KiB for this source (default: the repository's,
    /// 1024). Smaller chunks keep more of a dump whose keys change in
    /// scattered places; keep one value per source.
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(64..=4096))]
    chunk_avg_kib: Option<u32>,
}

/// Restore an RDB snapshot (taken with `cairn backup --kind redis-rdb`) to a
/// file or stdout; every blob and the whole file are verified on the way.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot id prefix, or `latest` (the newest redis-rdb snapshot).
    snapshot: String,
    /// With `latest`: the newest snapshot of this source.
    #[arg(long)]
    source: Option<String>,
    /// Output file (e.g. a server's dump.rdb), or `-` for stdout.
    #[arg(long, default_value = "-", value_name = "FILE")]
    to: PathBuf,
}

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    match c {
        Command::Backup(a) => backup(g, a).await,
        Command::Restore(a) => {
            let args = super::restore::Args::whole(a.snapshot, a.source, a.to);
            super::restore::run_kind(g, args, Some(cairn_engine::REDIS_KIND)).await
        }
    }
}

impl BackupArgs {
    /// The backup `cairn run` takes of a configured redis source.
    pub fn from_source(src: &crate::config::Source) -> BackupArgs {
        let c = &src.cfg;
        BackupArgs {
            url: c.url.clone().unwrap_or_default(),
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
            redis_password_file: c.redis_password_file.clone(),
            timeout: 60,
            source: Some(src.name.clone()),
            tags: c.tags.clone(),
            chunk_avg_kib: c.chunk_avg_kib,
        }
    }
}

async fn backup(g: &Global, a: BackupArgs) -> Result<i32> {
    let taken = take(g, a).await?;
    let (id, snap) = (&taken.id, &taken.snap);
    if g.json {
        super::print_json(&serde_json::json!({
            "snapshot": id.to_hex(), "source": snap.source.name, "time": snap.time, "stats": snap.stats,
            "blake3": snap.entries[0].blake3, "metadata": snap.metadata,
        }));
    } else if !g.quiet {
        println!(
            "snapshot {} saved: {} RDB, {} new, {} keys",
            id.short(),
            crate::common::human_bytes(snap.stats.bytes_read),
            crate::common::human_bytes(snap.stats.new_bytes),
            cairn_engine::RedisFacts::of(snap).map_or_else(|| "?".to_string(), |f| f.keys.to_string())
        );
    }
    Ok(crate::exit::OK)
}

/// Pulls and stores one RDB; records it for metrics.
pub async fn take(g: &Global, a: BackupArgs) -> Result<super::backup::Taken> {
    use cairn_engine::LocalIndex;
    use cairn_engine::{Backup, BackupOptions, Progress};
    use cairn_engine::{ReplicationSource, SyncOptions, TlsOptions};
    use std::sync::Arc;

    let tls = TlsOptions::new()
        .with_ca_file(a.tls_ca_file)
        .with_cert_file(a.tls_cert_file)
        .with_key_file(a.tls_key_file)
        .with_server_name(a.tls_server_name);
    let timeout = std::time::Duration::from_secs(a.timeout);
    let opts = SyncOptions::from_url(&a.url, a.tls, tls, a.redis_password_file.as_deref(), timeout)?;
    let addr = opts.addr.clone();

    let repo = g.open().await?;
    let index = Arc::new(LocalIndex::for_writing(&repo, &g.cache_dir(), g.lock_timeout()).await?);
    let source = tokio::task::spawn_blocking(move || ReplicationSource::connect(&opts)).await??;
    let mut bopts = BackupOptions::stream("dump.rdb");
    bopts.source.kind = cairn_engine::REDIS_KIND.into();
    bopts.source.name = a.source.unwrap_or_else(|| addr.clone());
    bopts.tags = a.tags;
    bopts.tar = cairn_engine::TarMode::Off;
    bopts.chunker = a.chunk_avg_kib.map(cairn_engine::ChunkerParams::with_average_kib);
    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let ticker = crate::common::Ticker::start(g.show_progress(), None, "redis", move || {
        p.bytes_read.load(std::sync::atomic::Ordering::Relaxed)
    });
    let result = Backup::new(repo, index.clone(), bopts)
        .progress(progress)
        .stream(Box::new(cairn_engine::RdbSource::new(source)))
        .await;
    cairn_engine::LocalIndex::release_shared(index).await;
    if let Some(t) = ticker {
        t.finish();
    }
    let (id, snap) = result?;
    let taken = super::backup::Taken { id, snap };
    taken.record();
    Ok(taken)
}
