//! Options shared by every command, secrets, and progress display.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_engine::store::{Location, Store};
use cairn_engine::Repository;
use cairn_engine::Secret;
use clap::Args;

/// Global options.
#[derive(Debug, Args)]
pub struct Global {
    /// TOML file: defaults for repo, key_file, password_file, cache_dir,
    /// stanza, wal_push_ahead and fallback (options and environment variables take
    /// precedence), `metrics_dir`, and the plan: `[sources.NAME]` tables
    /// that `cairn run`, `drill`, `status` and `forget` act on (see
    /// docs/CONFIG.md).
    #[arg(long, env = "CAIRN_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repository: a directory, file:///path, or s3://bucket/prefix (S3
    /// credentials and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL).
    #[arg(long, short = 'r', env = "CAIRN_REPO", global = true)]
    pub repo: Option<String>,
    /// File holding the repository password (one trailing newline ignored).
    /// Secrets are never taken on the command line.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Key file (created by `cairn init --key-file` or `cairn key add`); no
    /// password KDF, suited to archive_command and cron jobs.
    #[arg(long, env = "CAIRN_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Where the local index cache lives [default: $XDG_CACHE_HOME/cairn or ~/.cache/cairn].
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Seconds to wait for another cairn process holding the local index.
    #[arg(long, default_value_t = 60, global = true, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// Machine-readable JSON on stdout (errors as JSON on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress and no informational messages.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Write the job's Prometheus metrics to FILE (text format, replaced
    /// atomically; for node_exporter's textfile collector). Without it,
    /// jobs write to `metrics_dir` from --config when that is set.
    #[arg(long, env = "CAIRN_METRICS_FILE", global = true, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// More log output (-v info, -vv debug); also RUST_LOG.
    #[arg(long, short, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// A copy of the repository (`[repos.NAME]` of --config, filled by
    /// `cairn copy`) that `restore`, `wal fetch`, `pg restore` and `redis
    /// restore` read from when --repo is unreachable or lacks an object;
    /// repeatable, asked in order [default: `fallback` of --config].
    #[arg(long = "fallback", global = true, value_name = "NAME")]
    pub fallback: Vec<String>,
    /// `stanza` from the config file.
    #[arg(skip)]
    pub stanza_from_config: Option<String>,
    /// `wal_push_ahead` from the config file (`wal push --ahead`).
    #[arg(skip)]
    pub wal_push_ahead_from_config: Option<u32>,
    /// Retention rules per source, from `[sources.NAME]` in the config file.
    #[arg(skip)]
    pub policies_from_config: std::collections::BTreeMap<String, cairn_engine::gc::Policy>,
    /// The whole --config file, when one was given.
    #[arg(skip)]
    pub config_file: Option<std::sync::Arc<crate::config::ConfigFile>>,
}

impl Global {
    /// This binary, with this invocation's --config, --repo and --key-file,
    /// for the background helpers (`wal prefetch`, `wal push-ahead`).
    pub fn self_command(&self) -> Result<std::process::Command> {
        let mut c = std::process::Command::new(std::env::current_exe().context("locating the cairn binary")?);
        if let Some(cfg) = &self.config {
            c.arg("--config").arg(cfg);
        }
        if let Some(r) = &self.repo {
            c.arg("--repo").arg(r);
        }
        if let Some(k) = &self.key_file {
            c.arg("--key-file").arg(k);
        }
        for f in &self.fallback {
            c.arg("--fallback").arg(f);
        }
        // Object-store credentials go only where the repository is one.
        if !self.repo.as_deref().is_some_and(|r| r.starts_with("s3://")) {
            for (k, _) in std::env::vars_os() {
                if k.to_str().is_some_and(|k| k.starts_with("AWS_")) {
                    c.env_remove(k);
                }
            }
        }
        Ok(c)
    }

    /// The stanza: the one given as an option (or CAIRN_STANZA), else the
    /// --config file's; checked for a valid name.
    pub fn stanza(&self, given: Option<&String>) -> Result<String> {
        let s = given
            .or(self.stanza_from_config.as_ref())
            .cloned()
            .context("no stanza given: use --stanza, CAIRN_STANZA or `stanza = \"…\"` in the --config file")?;
        cairn_engine::wal::validate_stanza(&s)?;
        Ok(s)
    }

    /// Fills options not given on the command line or in the environment
    /// from the --config file.
    pub fn apply_config(&mut self) -> Result<()> {
        let Some(path) = &self.config else { return Ok(()) };
        let c = crate::config::ConfigFile::load(path)?;
        self.repo = self.repo.take().or_else(|| c.repo.clone());
        self.key_file = self.key_file.take().or_else(|| c.key_file.clone());
        self.password_file = self.password_file.take().or_else(|| c.password_file.clone());
        self.cache_dir = self.cache_dir.take().or_else(|| c.cache_dir.clone());
        if self.fallback.is_empty() {
            self.fallback = c.fallback.clone();
        }
        self.stanza_from_config = c.stanza.clone();
        self.wal_push_ahead_from_config = c.wal_push_ahead;
        self.policies_from_config = c.policies();
        self.config_file = Some(Arc::new(c));
        Ok(())
    }

    /// The --config file, for commands that act on its sources.
    pub fn config_file(&self) -> Result<&crate::config::ConfigFile> {
        self.config_file
            .as_deref()
            .context("this command works from a config file's `[sources.NAME]`: give --config FILE or set CAIRN_CONFIG")
    }

    pub fn location(&self) -> Result<Location> {
        let s = self.repo.as_deref().context("no repository given: use --repo or set CAIRN_REPO")?;
        Ok(Location::parse(s)?)
    }

    pub fn secret(&self) -> Result<Secret> {
        match (&self.key_file, &self.password_file) {
            (Some(k), _) => Ok(Secret::from_key_file(k)?),
            (None, Some(p)) => Ok(Secret::from_password_file(p)?),
            (None, None) => Err(cairn_engine::Error::NoKey.into()),
        }
    }

    pub async fn open(&self) -> Result<Arc<Repository>> {
        let store = Store::open(&self.location()?, false)?;
        Ok(Arc::new(Repository::open(store, &self.secret()?).await?))
    }

    /// The repository for a restore path: --repo read together with its
    /// `--fallback` copies (see [`crate::fallback`]).
    pub async fn open_for_restore(&self) -> Result<Arc<Repository>> {
        crate::fallback::open(self).await
    }

    pub fn cache_dir(&self) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(x).join("cairn");
        }
        match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".cache").join("cairn"),
            None => PathBuf::from(".cairn-cache"),
        }
    }

    pub fn lock_timeout(&self) -> Duration {
        Duration::from_secs(self.lock_timeout)
    }

    /// Progress bars only on a terminal, and never with --json or --quiet.
    pub fn show_progress(&self) -> bool {
        !self.json && !self.quiet && std::io::stderr().is_terminal()
    }

    /// Informational lines go to stderr unless --quiet or --json.
    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.quiet && !self.json {
            eprintln!("{msg}");
        }
    }
}

pub fn init_tracing(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// A progress bar fed from an atomic counter by a ticker task.
pub struct Ticker {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    pub fn start(
        enabled: bool,
        total: Option<u64>,
        prefix: &str,
        read: impl Fn() -> u64 + Send + 'static,
    ) -> Option<Ticker> {
        if !enabled {
            return None;
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{prefix} {spinner} {bytes} {bytes_per_sec} {elapsed}"
        };
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("template").progress_chars("=> "));
        bar.set_prefix(prefix.to_string());
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                b.set_position(read());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Some(Ticker { bar, task })
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// A name from a snapshot, safe to print on a terminal: control
/// characters (C0, DEL, C1, which could move the cursor or rewrite the
/// screen) become escapes, and a backslash is doubled so the escapes are
/// unambiguous. Plain names come back unchanged.
pub fn escape_name(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// Another repository than --repo (the target of `copy`, the source of
/// `init --copy-from`), opened with its own credentials: `name` is a
/// `[repos.NAME]` table of the --config file, or a location whose key comes
/// from `config` (a config file of its own: `repo`, `key_file`,
/// `password_file`, `cache_dir`). Returns the repository and its cache
/// directory.
pub async fn open_other(
    g: &Global,
    name: Option<&str>,
    config: Option<&std::path::Path>,
    what: &str,
) -> Result<(Arc<Repository>, PathBuf)> {
    let (location, secret, cache_dir) = other_credentials(g, name, config, what)?;
    let store = Store::open(&Location::parse(&location)?, false)?;
    let repo = Repository::open(store, &secret).await.with_context(|| format!("{what}: opening {location}"))?;
    Ok((Arc::new(repo), cache_dir))
}

/// Where another repository is, its secret and its cache directory; see
/// [`open_other`].
pub fn other_credentials(
    g: &Global,
    name: Option<&str>,
    config: Option<&std::path::Path>,
    what: &str,
) -> Result<(String, Secret, PathBuf)> {
    let table = name.and_then(|n| g.config_file.as_ref().and_then(|c| c.repos.get(n)).cloned());
    let rc = match (table, config) {
        (Some(_), Some(_)) => anyhow::bail!("{what}: give a [repos.NAME] table or a config file, not both"),
        (Some(t), None) => t,
        (None, Some(path)) => {
            let c = crate::config::ConfigFile::load(path)?;
            crate::config::RepoConfig {
                repo: name.map(str::to_string).or(c.repo),
                key_file: c.key_file,
                password_file: c.password_file,
                cache_dir: c.cache_dir,
            }
        }
        (None, None) => anyhow::bail!(
            "{what}: no credentials for {}: name a [repos.NAME] table of --config, or give its own config file \
             (keys are never taken on the command line)",
            name.unwrap_or("it")
        ),
    };
    let location = rc.repo.as_deref().with_context(|| format!("{what}: no repository location (`repo`)"))?;
    let secret = match (&rc.key_file, &rc.password_file) {
        (Some(k), _) => Secret::from_key_file(k)?,
        (None, Some(p)) => Secret::from_password_file(p)?,
        (None, None) => anyhow::bail!("{what}: no `key_file` or `password_file` for {location}"),
    };
    Ok((location.to_string(), secret, rc.cache_dir.unwrap_or_else(|| g.cache_dir())))
}

#[cfg(test)]
mod escape_tests {
    use super::escape_name;

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        assert_eq!(escape_name("plain/name.txt"), "plain/name.txt");
        assert_eq!(escape_name("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape_name("l1\nl2\\"), "l1\\nl2\\\\");
        assert_eq!(escape_name("c1\u{9b}x"), "c1\\u{9b}x");
        assert!(!escape_name("\x07\x7f\u{85}").chars().any(char::is_control));
    }
}
