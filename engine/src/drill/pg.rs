//! The PostgreSQL drill: plan and restore as `cairn pg restore` does, into
//! scratch; stage the WAL recovery needs beside it; start a temporary
//! server on it (unprivileged, no TCP — its socket lives in the scratch
//! directory — `archive_mode=off`, so the copy can never archive into the
//! real repository) and wait until recovery has ended; then `pg_amcheck
//! --all` and the operator's SQL assertions.
//!
//! The WAL is staged (fetched by cairn into the scratch directory, the
//! server's `restore_command` a plain `cp`) rather than fetched by `cairn
//! wal fetch` per segment, so the temporary server needs neither the
//! repository's key nor network access: only the drill user's rights on
//! its own scratch directory. Staging is timed as its own phase and counts
//! towards the recovery time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::guard::{command_as, log_tail, RunAs, Scratch, Server, Signal};
use super::{failed, Measured, Timeline};
use crate::index::LocalIndex;
use crate::pg::pitr::{self, Action, Target};
use crate::repo::Repository;
use crate::wal::{Durability, FetchOutcome};
use crate::Result;

/// Where PostgreSQL's programs are.
#[derive(Debug, Clone)]
pub struct PgTools {
    /// The directory holding `postgres`, `psql`, `pg_isready`, `pg_amcheck`.
    pub bin_dir: PathBuf,
}

impl PgTools {
    fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// What to drill.
#[derive(Debug, Clone)]
pub struct PgDrill {
    /// The stanza.
    pub stanza: String,
    /// `Latest`, or `Time`.
    pub target: Target,
    /// An SQL file of assertions run on the recovered cluster.
    pub sql: Option<PathBuf>,
    /// The programs.
    pub tools: PgTools,
    /// The user the server runs as (when cairn runs as root).
    pub run_as: Option<RunAs>,
    /// The longest recovery may take before the drill gives up.
    pub timeout: Duration,
    /// Where the WAL catalogue cache is.
    pub cache_dir: Option<PathBuf>,
}

/// Runs a PostgreSQL drill in `scratch`, timing each phase into `tl` and
/// recording what it measured into `m` as it goes (kept when a later phase
/// fails).
pub async fn pg(
    repo: &Repository,
    index: &LocalIndex,
    d: &PgDrill,
    scratch: &Scratch,
    tl: &mut Timeline,
    m: &mut Measured,
) -> Result<()> {
    let root = scratch.path();
    let data = root.join("data");
    let wal_dir = root.join("wal");
    let restore_command = format!("cp {} \"%p\"", sh_quote(&format!("{}/%f", wal_dir.display()))?);
    let (stop_time, plan) = tl
        .phase("restore", true, async {
            let (mut plan, snap) = pitr::plan(
                repo,
                &d.stanza,
                d.target.clone(),
                None,
                Action::Promote,
                &restore_command,
                d.cache_dir.as_deref(),
            )
            .await
            .map_err(|e| failed("restore", format!("planning the restore: {e}")))?;
            m.snapshot = Some(plan.snapshot.clone());
            // Tablespaces go beneath the scratch directory, never to the
            // server's own locations.
            let map: Vec<(String, PathBuf)> =
                plan.tablespaces.iter().map(|t| (t.oid.clone(), root.join("tblspc").join(&t.oid))).collect();
            plan.map_tablespaces(&map)?;
            let stop_time = DateTime::parse_from_rfc3339(&plan.backup.stop_time).ok().map(|t| t.with_timezone(&Utc));
            let report = pitr::restore(repo, index, plan, snap, &data, &pitr::RestoreOptions::default())
                .await
                .map_err(|e| failed("restore", e.to_string()))?;
            m.details.push(format!(
                "restored base backup {} ({} files, {} bytes, {} checked against backup_manifest)",
                &report.plan.snapshot[..12],
                report.files,
                report.bytes,
                report.verified
            ));
            Ok((stop_time, report.plan))
        })
        .await?;
    let owner = owner_name(&data.join("PG_VERSION"));
    tl.phase("wal", true, stage_wal(repo, &d.stanza, &plan.wal_files, &wal_dir)).await?;
    m.details.push(format!("staged {} WAL files ({} .. {})", plan.wal_files.len(), plan.first_wal, plan.last_wal));
    if let Some(u) = &d.run_as {
        u.chown_tree(root)?;
    }
    let port = 20000 + (rand::random::<u16>() % 40000);
    let conf = write_conf(root, &data, port)?;
    let mut server = tl.phase("start", true, start(d, root, &data, &conf, port)).await?;
    let conn = Conn { tools: &d.tools, socket_dir: root.to_path_buf(), port };
    let candidates = [owner, d.run_as.as_ref().map(|u| u.name.clone()), Some("postgres".into())];
    let user = tl.phase("connect", false, conn.superuser(&candidates)).await.map_err(|e| with_log(e, &server))?;
    let replayed = conn.query(&user, "SELECT coalesce(pg_last_xact_replay_timestamp()::text, '')").await?;
    m.recovered_to = parse_pg_time(&replayed).or_else(|| last_completed(server.log())).or(stop_time);
    if let Some(t) = m.recovered_to {
        m.details.push(format!("recovered to {}", t.to_rfc3339()));
    }
    tl.phase("amcheck", false, conn.amcheck(&user)).await.map_err(|e| with_log(e, &server))?;
    m.details.push("pg_amcheck --all: no corruption".into());
    if let Some(sql) = &d.sql {
        tl.phase("sql", false, conn.run_file(&user, sql)).await?;
        m.details.push(format!("{}: every assertion held", sql.display()));
    }
    tl.phase("stop", false, async {
        server.stop(Duration::from_secs(60));
        Ok(())
    })
    .await?;
    Ok(())
}

fn with_log(e: crate::Error, server: &Server) -> crate::Error {
    match e {
        crate::Error::DrillFailed { phase, reason } => {
            failed(&phase, format!("{reason}\n--- server log (last lines) ---\n{}", server.log_tail(15)))
        }
        e => e,
    }
}

fn sh_quote(s: &str) -> Result<String> {
    if s.contains(['\'', '\n', '\0']) {
        return Err(failed("restore", format!("scratch path {s:?} cannot be quoted for restore_command")));
    }
    Ok(format!("'{s}'"))
}

/// The name of the user owning `p` (the restored cluster's original owner,
/// usually its bootstrap superuser).
fn owner_name(p: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    super::guard::user_name(std::fs::metadata(p).ok()?.uid())
}

/// Fetches every WAL file recovery needs into `dir`, eight at a time.
async fn stage_wal(repo: &Repository, stanza: &str, names: &[String], dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).map_err(|e| crate::Error::io(dir.display().to_string(), e))?;
    let mut fetched = futures::stream::iter(names.iter().map(|name| async move {
        let dest = dir.join(name);
        (name, crate::wal::fetch(repo, stanza, name, &dest, None, Durability::Rename).await)
    }))
    .buffer_unordered(8);
    while let Some((name, r)) = fetched.next().await {
        match r {
            Ok(FetchOutcome::Delivered { .. }) => {}
            Ok(_) => return Err(failed("wal", format!("WAL file {name} of stanza {stanza} is not archived"))),
            Err(e) => return Err(failed("wal", format!("fetching WAL file {name}: {e}"))),
        }
    }
    Ok(())
}

/// The drill's configuration file: the restored `postgresql.conf` if the
/// backup holds one, then what keeps the copy private and harmless.
fn write_conf(root: &Path, data: &Path, port: u16) -> Result<PathBuf> {
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let hba = root.join("drill_hba.conf");
    let ident = root.join("drill_ident.conf");
    let conf = root.join("drill.conf");
    let write =
        |p: &Path, text: &str| std::fs::write(p, text).map_err(|e| crate::Error::io(p.display().to_string(), e));
    write(&hba, "# cairn drill: only local connections, to the scratch socket\nlocal all all trust\n")?;
    write(&ident, "")?;
    let text = format!(
        "# cairn drill: the restored settings, then the drill's own\n\
         include_if_exists {restored}\n\
         data_directory = {data}\n\
         hba_file = {hba}\n\
         ident_file = {ident}\n\
         port = {port}\n\
         listen_addresses = ''\n\
         unix_socket_directories = {sock}\n\
         archive_mode = off\n\
         hot_standby = off\n\
         primary_conninfo = ''\n\
         logging_collector = off\n\
         log_destination = 'stderr'\n\
         ssl = off\n\
         external_pid_file = ''\n",
        restored = q(&data.join("postgresql.conf"))?,
        data = q(data)?,
        hba = q(&hba)?,
        ident = q(&ident)?,
        sock = q(root)?,
    );
    write(&conf, &text)?;
    Ok(conf)
}

/// Starts the server and waits until it accepts connections, which with
/// `hot_standby = off` is once recovery has ended.
async fn start(d: &PgDrill, root: &Path, data: &Path, conf: &Path, port: u16) -> Result<Server> {
    let mut cmd = command_as(d.run_as.as_ref(), &d.tools.tool("postgres"));
    cmd.arg("-D").arg(data).arg("-c").arg(format!("config_file={}", conf.display())).current_dir(root);
    // SIGINT: PostgreSQL's fast shutdown.
    let mut server = Server::spawn("postgres", cmd, &root.join("postgres.log"), Signal::INT)?;
    let t0 = Instant::now();
    loop {
        if let Some(status) = server.exited() {
            return Err(failed(
                "start",
                format!("postgres exited ({status}) before recovery ended:\n{}", server.log_tail(20)),
            ));
        }
        let ready = Command::new(d.tools.tool("pg_isready"))
            .args(["-q", "-h"])
            .arg(root)
            .args(["-p", &port.to_string(), "-d", "postgres"])
            .status()
            .map_err(|e| failed("start", format!("running pg_isready: {e}")))?;
        if ready.success() {
            return Ok(server);
        }
        if t0.elapsed() > d.timeout {
            return Err(failed(
                "start",
                format!("recovery did not end within {} s:\n{}", d.timeout.as_secs(), log_tail(server.log(), 20)),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The temporary server, spoken to with its own client programs (killed
/// if the drill is dropped while one runs).
struct Conn<'a> {
    tools: &'a PgTools,
    socket_dir: PathBuf,
    port: u16,
}

impl Conn<'_> {
    fn command(&self, tool: &str, user: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(self.tools.tool(tool));
        c.arg("-h").arg(&self.socket_dir).args(["-p", &self.port.to_string(), "-U", user]);
        c.env_remove("PGPASSWORD").env_remove("PGSERVICE").env("PGCONNECT_TIMEOUT", "10");
        c.stdin(std::process::Stdio::null()).kill_on_drop(true);
        c
    }

    async fn output(&self, phase: &str, mut c: tokio::process::Command) -> Result<String> {
        let program = c.as_std().get_program().to_os_string();
        let out = c.output().await.map_err(|e| failed(phase, format!("running {program:?}: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let both = format!("{}\n{}", text.trim(), err.trim());
            let lines: Vec<&str> = both.trim().lines().collect();
            return Err(failed(
                phase,
                format!("{program:?} failed ({}):\n{}", out.status, lines[..lines.len().min(20)].join("\n")),
            ));
        }
        Ok(text)
    }

    /// Runs one query as `user`; its single value.
    async fn query(&self, user: &str, sql: &str) -> Result<String> {
        let mut c = self.command("psql", user);
        c.args(["-X", "-A", "-t", "-d", "postgres", "-c", sql]);
        Ok(self.output("connect", c).await?.trim().to_string())
    }

    /// The first of `candidates` that is a superuser of the restored
    /// cluster (its bootstrap superuser is usually the data directory's
    /// original owner). A candidate whose connection fails is tried again
    /// for a few seconds (a server under load can be slow to take its
    /// first sessions); the last error is kept for the failure message.
    async fn superuser(&self, candidates: &[Option<String>]) -> Result<String> {
        let mut names: Vec<&String> = Vec::new();
        for c in candidates.iter().flatten() {
            if !names.contains(&c) {
                names.push(c);
            }
        }
        let mut last_error = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut connected = false;
            for c in &names {
                match self.query(c, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").await {
                    Ok(v) if v == "t" => {
                        if self.query(c, "SELECT pg_is_in_recovery()").await? != "f" {
                            return Err(failed("start", "the server accepts connections but is still in recovery"));
                        }
                        return Ok((*c).clone());
                    }
                    Ok(_) => connected = true,
                    Err(e) => last_error = e.to_string(),
                }
            }
            // Every candidate connected and none is a superuser, or time is up.
            if connected && !last_error.contains("could not connect") || Instant::now() > deadline {
                return Err(failed(
                    "connect",
                    format!(
                        "none of the roles {names:?} is a superuser of the restored cluster (last error: {last_error})"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn amcheck(&self, user: &str) -> Result<()> {
        let mut c = self.command("pg_amcheck", user);
        c.args(["--all", "--install-missing"]);
        self.output("amcheck", c).await.map(drop)
    }

    async fn run_file(&self, user: &str, sql: &Path) -> Result<()> {
        let mut c = self.command("psql", user);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-f"]).arg(sql);
        self.output("sql", c).await.map(drop)
    }
}

/// PostgreSQL's text form of a timestamptz (`2026-12-03 02:50:01.12+00`).
fn parse_pg_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

/// "last completed transaction was at log time …", from the server's log.
fn last_completed(log: &Path) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find_map(|l| l.split("last completed transaction was at log time ").nth(1))?;
    parse_pg_time(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postgres_timestamps() {
        let t = parse_pg_time("2026-12-03 02:50:01.123456+00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-03T02:50:01.123456+00:00");
        assert_eq!(parse_pg_time("2026-12-03 04:50:01+02").unwrap().to_rfc3339(), "2026-12-03T02:50:01+00:00");
        assert_eq!(parse_pg_time(""), None);
    }

    #[test]
    fn quoting_refuses_what_it_cannot_quote() {
        assert_eq!(sh_quote("/tmp/a b").unwrap(), "'/tmp/a b'");
        assert!(sh_quote("/tmp/it's").is_err());
    }
}
