//! `cairn wal push|fetch|show|verify`: PostgreSQL continuous archiving.

use std::path::PathBuf;

use anyhow::Result;
use cairn_engine::wal::{self, FetchOutcome, PushOptions};
use clap::Subcommand;

use crate::common::{human_bytes, Global};
use crate::exit;

/// `archive_command` and `restore_command` for PostgreSQL, and the WAL catalogue.
///
/// Set up PostgreSQL with a key file (no password KDF runs per call) and a
/// config file, so that no secret and no long option list is in
/// postgresql.conf:
///
///   archive_command = 'cairn --config /etc/cairn/main.toml wal push %p'
///   restore_command = 'cairn --config /etc/cairn/main.toml wal fetch %f %p'
///
/// with /etc/cairn/main.toml holding
///
///   repo = "s3://bucket/cairn"   # or a directory
///   key_file = "/etc/cairn/main.key"
///   stanza = "main"
#[derive(Debug, Subcommand)]
#[command(verbatim_doc_comment)]
pub enum Command {
    Push(PushArgs),
    Fetch(FetchArgs),
    Show(ShowArgs),
    Verify(VerifyArgs),
    #[command(hide = true)]
    Prefetch(PrefetchArgs),
    #[command(hide = true)]
    PushAhead(PushAheadArgs),
}

#[derive(Debug, clap::Args)]
pub struct StanzaArg {
    /// The archive of one PostgreSQL cluster [env: CAIRN_STANZA, or `stanza` in --config].
    #[arg(long, env = "CAIRN_STANZA")]
    stanza: Option<String>,
}

impl StanzaArg {
    fn get(&self, g: &Global) -> Result<String> {
        g.stanza(self.stanza.as_ref())
    }
}

/// Archive one WAL file (archive_command = 'cairn wal push %p').
///
/// Exits 0 only once the file is durable in the repository. Pushing a file
/// that is already archived with identical content exits 0 without writing;
/// different content under an archived name exits 8 and leaves the stored
/// copy untouched. The first segment records the cluster's system
/// identifier, segment size and page size in the stanza; a segment from any
/// other cluster is refused (exit 8). Segments, .partial, .history and
/// .backup files are accepted. Needs a key file: archive_command runs every
/// few seconds and must not run a password KDF each time.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    #[command(flatten)]
    stanza: StanzaArg,
    /// zstd level, 1..=19.
    #[arg(long, default_value_t = cairn_engine::wal::push::DEFAULT_WAL_COMPRESSION_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression: i32,
    /// Also make sure a background `cairn` is pushing up to N other files
    /// that PostgreSQL has marked ready (pg_wal/archive_status/*.ready), so
    /// that their own archive_command calls only verify them: by the
    /// pusher's receipt while the file's inode, size and times are those it
    /// stored, else by hashing it. It keeps following archive_status and
    /// exits 10 s after nothing new is ready. Every call still exits 0 only
    /// when its file is durable and matches the archive; archive_status is
    /// never modified. The pusher's log is
    /// $XDG_RUNTIME_DIR/cairn/push-ahead-*.log (else /tmp/cairn-UID/)
    /// [env: CAIRN_WAL_PUSH_AHEAD, or `wal_push_ahead = N` in --config].
    #[arg(long, value_name = "N", env = "CAIRN_WAL_PUSH_AHEAD", hide_env = true, value_parser = clap::value_parser!(u32).range(1..=64))]
    ahead: Option<u32>,
    /// The file (%p).
    path: PathBuf,
}

/// Push files marked ready in DIR (started by `wal push --ahead`).
#[derive(Debug, clap::Args)]
pub struct PushAheadArgs {
    #[command(flatten)]
    stanza: StanzaArg,
    #[arg(long, default_value_t = cairn_engine::wal::push::DEFAULT_WAL_COMPRESSION_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression: i32,
    /// The pg_wal directory.
    #[arg(long)]
    dir: PathBuf,
    /// Keep pushing the first N ready files, other than the one
    /// archive_command is archiving, until none is new for 10 s (what
    /// `wal push --ahead N` starts).
    #[arg(long, value_name = "N", conflicts_with = "names", required_unless_present = "names",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    follow: Option<u32>,
    /// Push these files, then exit.
    names: Vec<String>,
}

/// Restore one WAL file (restore_command = 'cairn wal fetch %f %p').
///
/// Exit 0: delivered, verified and durable at DEST (written to a temporary
/// name, fsynced, renamed). Exit 1: the archive does not have this file (the
/// normal end of recovery, or a .history probe; nothing is created). Exit
/// 126 for every other failure (storage unreachable, corrupt object, wrong
/// key, unknown stanza, bad arguments), so that PostgreSQL stops instead of
/// ending recovery early.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    #[command(flatten)]
    stanza: StanzaArg,
    /// Spool directory for prefetched segments; must be outside the data
    /// directory, and on the same file system as pg_wal so that serving a
    /// spooled segment is a rename [env: CAIRN_WAL_SPOOL].
    #[arg(long, env = "CAIRN_WAL_SPOOL", value_name = "DIR", requires = "prefetch")]
    spool: Option<PathBuf>,
    /// After each fetch, make sure a background `cairn` keeps the next N
    /// segments in --spool. It follows recovery from fetch to fetch and exits
    /// 10 s after recovery stops asking. A spooled segment is served only
    /// after its size and BLAKE3 match the archive's manifest.
    #[arg(long, value_name = "N", requires = "spool", value_parser = clap::value_parser!(u32).range(1..=256))]
    prefetch: Option<u32>,
    /// Also fsync the delivered file and its directory before exiting 0.
    /// PostgreSQL does not need it: a file it keeps takes its pg_wal name
    /// through its own durable rename (fsync of the file, then of the
    /// directory), and one it only reads is fetched again after a crash.
    /// Without it the file is still complete and verified before it
    /// appears under its name.
    #[arg(long)]
    fsync: bool,
    /// The WAL file name (%f).
    name: String,
    /// Where to write it (%p).
    dest: PathBuf,
}

/// Keep the segments after the one recovery fetched last in a spool directory
/// (started by `wal fetch --prefetch`; exits when recovery stops asking).
#[derive(Debug, clap::Args)]
pub struct PrefetchArgs {
    #[command(flatten)]
    stanza: StanzaArg,
    #[arg(long)]
    spool: PathBuf,
    /// How many segments to keep spooled ahead.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    ahead: u32,
}

/// Show what a stanza's archive holds: per timeline, the archived ranges, gaps,
/// the earliest and latest commit times, restore points, backups and history.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Only this stanza [default: every stanza].
    #[arg(long, env = "CAIRN_STANZA")]
    stanza: Option<String>,
    /// Also list every archived file name.
    #[arg(long)]
    list: bool,
}

/// Read back every archived file of a stanza and check it: authentication,
/// blob ids, size and BLAKE3, and the segment facts recorded at push.
/// Exits 5 if anything is wrong.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    stanza: StanzaArg,
}

/// Exit status of `wal fetch` for anything but "not archived".
pub const FETCH_FAILED: i32 = 126;

pub async fn run(g: &Global, c: Command) -> Result<i32> {
    match c {
        Command::Push(a) => push(g, a).await,
        Command::Fetch(a) => fetch(g, a).await,
        Command::Show(a) => show(g, a).await,
        Command::Verify(a) => verify(g, a).await,
        Command::Prefetch(a) => prefetch(g, a).await,
        Command::PushAhead(a) => push_ahead(g, a).await,
    }
}

fn require_key_file(g: &Global) -> Result<()> {
    if g.key_file.is_none() && g.password_file.is_some() {
        anyhow::bail!(
            "wal push/fetch need a key file (--key-file, CAIRN_KEY_FILE or key_file in --config): a password would run \
             Argon2 on every archive_command call; create one with `cairn key add --new-key-file FILE`"
        );
    }
    Ok(())
}

async fn push(g: &Global, a: PushArgs) -> Result<i32> {
    let stanza = a.stanza.get(g)?;
    require_key_file(g)?;
    let mut state = None;
    if let Some(n) = a.ahead.or(g.wal_push_ahead_from_config) {
        // Push-ahead is an optimisation: a failure to start it is logged,
        // never a failed archive_command.
        match ahead(g, &stanza, &a, n) {
            Ok(s) => state = Some(s),
            Err(e) => tracing::warn!(error = %e, "could not start the push-ahead process"),
        }
    }
    let repo = g.open().await?;
    let opts = PushOptions::default().with_compression(a.compression);
    let copies = copies_of(g, &stanza)?;
    let receipt = match &state {
        Some(s) if copies.is_none() => s.acknowledge(&repo, &stanza, &a.path).await,
        _ => None,
    };
    let mut outcomes = None;
    let r = match (receipt, copies) {
        (Some(r), _) => r,
        (None, None) => wal::push(&repo, &stanza, &a.path, &opts).await?,
        (None, Some((copies, policy))) => {
            let (r, o) = wal::copies::push_everywhere(&repo, &stanza, &a.path, &opts, copies, policy).await?;
            outcomes = Some(o);
            r
        }
    };
    crate::metrics::record(
        &stanza,
        crate::metrics::Sample { read_bytes: r.size, added_bytes: r.stored_bytes, objects: 1, ..Default::default() },
    );
    if g.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(o) = &outcomes {
            v["copies"] = serde_json::to_value(o)?;
        }
        super::print_json(&v);
    } else if g.verbose > 0 {
        let what = match (r.already_archived, r.receipt) {
            (true, true) => "already archived (pushed ahead)",
            (true, false) => "already archived",
            _ => "archived",
        };
        eprintln!("{} {what} ({}, {} stored)", r.name, human_bytes(r.size), human_bytes(r.stored_bytes));
        for o in outcomes.iter().flatten() {
            match (&o.error, o.behind) {
                (None, 0) if o.caught_up > 0 => {
                    eprintln!("  copy {}: stored; caught up {} file(s)", o.name, o.caught_up)
                }
                (None, 0) => eprintln!("  copy {}: stored", o.name),
                (_, n) => eprintln!("  copy {}: {n} file(s) behind for {} s", o.name, o.lag_s),
            }
        }
    }
    Ok(exit::OK)
}

/// The copies `[stanzas.NAME] copies` names for `stanza`, ready to open,
/// and their policy; `None` when it names none.
fn copies_of(g: &Global, stanza: &str) -> Result<Option<(Vec<wal::copies::WalCopy>, wal::copies::CopiesPolicy)>> {
    use cairn_engine::store::{Location, Store};
    let Some(t) = g.config_file.as_ref().and_then(|c| c.stanzas.get(stanza)).filter(|t| !t.copies.is_empty()) else {
        return Ok(None);
    };
    let mut copies = Vec::new();
    for name in &t.copies {
        let (location, secret, cache) =
            crate::common::other_credentials(g, Some(name), None, &format!("WAL copy {name}"))?;
        let open = Box::pin(async move {
            let store = Store::open(&Location::parse(&location)?, false)?;
            Ok(std::sync::Arc::new(cairn_engine::Repository::open(store, &secret).await?))
        });
        let catch_up = cairn_engine::copy::CopyOptions {
            sources: Vec::new(),
            snapshots: Vec::new(),
            with_snapshots: false,
            wal: true,
            stanza: Some(stanza.to_string()),
            transfers: 8,
            cache_dir: g.cache_dir(),
            target_cache_dir: cache,
            lock_timeout: g.lock_timeout(),
        };
        copies.push(wal::copies::WalCopy { name: name.clone(), open, catch_up });
    }
    let policy = wal::copies::CopiesPolicy {
        lag_budget: t.lag_budget.unwrap_or(crate::config::DEFAULT_LAG_BUDGET),
        timeout: t.copy_timeout.unwrap_or(crate::config::DEFAULT_COPY_TIMEOUT),
    };
    Ok(Some((copies, policy)))
}

/// Before `a.path` is pushed: claims it (a running pusher skips it), waits
/// if the pusher is storing that very file (so it is verified, not stored
/// twice), and starts a pusher that follows the next `n` ready files when
/// none runs.
fn ahead(g: &Global, stanza: &str, a: &PushArgs, n: u32) -> Result<wal::AheadState> {
    use std::os::unix::process::CommandExt;
    let state = wal::AheadState::for_file(stanza, &a.path)?;
    let name = a.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    state.claim(name);
    state.wait_while_pushing(name);
    if state.running() {
        return Ok(state);
    }
    let dir = wal::ahead::pg_wal_of(&a.path);
    if wal::ahead::ready_names(&dir, name, n as usize).is_empty() {
        return Ok(state);
    }
    let log = state.open_log()?;
    let mut c = g.self_command()?;
    c.args(["-v", "wal", "push-ahead", "--stanza", stanza, "--compression"])
        .arg(a.compression.to_string())
        .arg("--follow")
        .arg(n.to_string())
        .arg("--dir")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0);
    c.spawn()?;
    Ok(state)
}

async fn push_ahead(g: &Global, a: PushAheadArgs) -> Result<i32> {
    let stanza = a.stanza.get(g)?;
    let state = wal::AheadState::for_dir(&stanza, &a.dir)?;
    let Some(_lock) = state.lock()? else {
        return Ok(exit::OK);
    };
    if let Err(e) = state.sweep_receipts() {
        tracing::warn!(error = %e, "could not remove old receipts");
    }
    let repo = g.open().await?;
    let opts = PushOptions::default().with_compression(a.compression).no_follow();
    let n = match a.follow {
        Some(n) => state.follow(&repo, &stanza, &a.dir, n as usize, &opts, wal::ahead::PUSHER_IDLE).await,
        None => state.push_names(&repo, &stanza, &a.dir, &a.names, &opts).await,
    };
    tracing::info!(stored = n, "push-ahead done");
    Ok(exit::OK)
}

async fn fetch(g: &Global, a: FetchArgs) -> Result<i32> {
    let stanza = a.stanza.get(g)?;
    require_key_file(g)?;
    let spool = match &a.spool {
        Some(dir) => Some(open_spool(dir)?),
        None => None,
    };
    let repo = g.open_for_restore().await?;
    let durability = if a.fsync { wal::Durability::Fsync } else { wal::Durability::Rename };
    match wal::fetch(&repo, &stanza, &a.name, &a.dest, spool.as_ref(), durability).await? {
        FetchOutcome::Delivered { size, .. } => {
            if g.json {
                let repositories = crate::fallback::json(&repo);
                super::print_json(
                    &serde_json::json!({ "name": a.name, "delivered": true, "size": size, "repositories": repositories }),
                );
            }
            if let (Some(s), Some(n)) = (&spool, a.prefetch) {
                s.prune_before(&a.name);
                s.set_want(&a.name);
                if !s.prefetcher_running() {
                    if let Err(e) = start_prefetcher(g, &stanza, &a, n) {
                        tracing::warn!(error = %e, "could not start the prefetcher");
                    }
                }
            }
            Ok(exit::OK)
        }
        FetchOutcome::NotArchived => {
            if g.json {
                super::print_json(&serde_json::json!({ "name": a.name, "delivered": false }));
            }
            tracing::info!(name = %a.name, "not in the archive");
            Ok(exit::FAILURE)
        }
    }
}

/// Opens the spool, refusing one inside the data directory (the working
/// directory PostgreSQL runs restore_command in).
fn open_spool(dir: &std::path::Path) -> Result<wal::Spool> {
    let spool = wal::Spool::open(dir)?;
    let (Ok(d), Ok(cwd)) = (dir.canonicalize(), std::env::current_dir().and_then(|c| c.canonicalize())) else {
        return Ok(spool);
    };
    if cwd.join("PG_VERSION").exists() && d.starts_with(&cwd) {
        anyhow::bail!("--spool {} is inside the data directory {}; put it outside PGDATA", d.display(), cwd.display());
    }
    Ok(spool)
}

/// Starts `cairn wal prefetch` in the background, which keeps the `n`
/// segments after the one recovery fetched last in the spool. It runs
/// detached (own process group, no stdio) and outlives this process.
fn start_prefetcher(g: &Global, stanza: &str, a: &FetchArgs, n: u32) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut c = g.self_command()?;
    c.args(["wal", "prefetch", "--stanza", stanza, "--ahead", &n.to_string(), "--spool"])
        .arg(a.spool.as_ref().expect("spool is set"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    c.spawn()?;
    Ok(())
}

async fn prefetch(g: &Global, a: PrefetchArgs) -> Result<i32> {
    let stanza = a.stanza.get(g)?;
    let spool = wal::Spool::open(&a.spool)?;
    let Some(_lock) = spool.lock()? else {
        return Ok(exit::OK);
    };
    let repo = g.open_for_restore().await?;
    let Some(rec) = wal::load_stanza(&repo, &stanza).await? else { return Ok(exit::OK) };
    let size = cairn_formats::pg::SegmentSize::new(rec.segment_size.into())?;
    spool.follow(repo, &stanza, size, a.ahead as usize, wal::spool::PREFETCH_IDLE).await?;
    Ok(exit::OK)
}

async fn show(g: &Global, a: ShowArgs) -> Result<i32> {
    let repo = g.open().await?;
    let stanzas = match a.stanza.or_else(|| g.stanza_from_config.clone()) {
        Some(s) => vec![s],
        None => wal::list_stanzas(&repo).await?,
    };
    let mut reports = Vec::new();
    for s in &stanzas {
        let mut r = wal::show(&repo, s, a.list).await?;
        // Configured copies that lack nothing are shown too, at lag 0.
        let configured = g.config_file.as_ref().and_then(|c| c.stanzas.get(s)).map(|t| t.copies.clone());
        for name in configured.unwrap_or_default() {
            if !r.copies.iter().any(|c| c.name == name) {
                r.copies.push(wal::copies::CopyLag { name, ..Default::default() });
            }
        }
        r.copies.sort_by(|a, b| a.name.cmp(&b.name));
        reports.push(r);
    }
    if g.json {
        super::print_json(&reports);
        return Ok(exit::OK);
    }
    if reports.is_empty() {
        println!("no WAL archived in this repository");
    }
    for r in &reports {
        print_stanza(r);
    }
    Ok(exit::OK)
}

fn print_stanza(r: &wal::StanzaReport) {
    match &r.cluster {
        Some(c) => println!(
            "stanza {}: PostgreSQL {}, system {}, {} segments; {} files, {}",
            r.stanza,
            c.postgresql,
            c.system_id,
            human_bytes(c.segment_size.into()),
            r.files,
            human_bytes(r.bytes)
        ),
        None => println!("stanza {}: {} files, {}", r.stanza, r.files, human_bytes(r.bytes)),
    }
    for c in &r.copies {
        match &c.since {
            Some(since) => {
                println!("  copy {}: {} file(s) behind, the oldest since {since} ({} s)", c.name, c.behind, c.lag_s)
            }
            None => println!("  copy {}: up to date", c.name),
        }
    }
    for t in &r.timelines {
        println!("  timeline {}: {} segments", t.timeline, t.segments);
        for h in &t.history {
            println!("    from timeline {} at {} ({})", h.timeline, h.switchpoint, h.reason);
        }
        for x in &t.ranges {
            println!("    {} .. {} ({} segments, {} .. {})", x.first, x.last, x.segments, x.start_lsn, x.end_lsn);
        }
        for gap in &t.gaps {
            println!("    GAP: {} segment(s) missing after {} (before {})", gap.missing, gap.after, gap.before);
        }
        if let (Some(a), Some(b)) = (&t.earliest_commit, &t.latest_commit) {
            println!("    commits from {a} to {b}");
        }
        for p in &t.restore_points {
            println!("    restore point {:?} at {} ({})", p.name, p.lsn, p.time.as_deref().unwrap_or("?"));
        }
        for b in &t.backups {
            let get = |k: &str| b.get(k).map(String::as_str).unwrap_or("?");
            println!(
                "    base backup {:?}: start {}, stop {}",
                get("LABEL"),
                get("START WAL LOCATION"),
                get("STOP WAL LOCATION")
            );
        }
        if let Some(st) = &t.streamed {
            println!(
                "    streamed: {} ({} bytes) up to {}, last commit {}, flushed {:.1} s ago",
                st.segment,
                st.bytes,
                st.end_lsn,
                st.last_commit.as_deref().unwrap_or("none"),
                st.age_s
            );
        }
        for p in &t.partial {
            println!("    partial: {p}");
        }
        for s in &t.stopped_early {
            println!("    note: valid WAL ends before the end of {s}");
        }
    }
    for p in &r.problems {
        println!("  PROBLEM {}: {}", p.object, p.message);
    }
    if let Some(names) = &r.names {
        for n in names {
            println!("  {n}");
        }
    }
}

async fn verify(g: &Global, a: VerifyArgs) -> Result<i32> {
    let stanza = a.stanza.get(g)?;
    let repo = g.open().await?;
    let r = wal::verify(&repo, &stanza).await?;
    if g.json {
        super::print_json(&r);
    } else {
        for p in &r.problems {
            println!("{}: {}", p.object, p.message);
        }
        g.info(format!(
            "{}: {} files, {} read back, {} problem(s)",
            r.stanza,
            r.files,
            human_bytes(r.bytes),
            r.problems.len()
        ));
    }
    if r.problems.is_empty() {
        Ok(exit::OK)
    } else {
        Err(cairn_engine::Error::CheckFailed(r.problems.len()).into())
    }
}
