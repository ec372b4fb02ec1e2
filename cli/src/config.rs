//! The `--config` file: repository defaults, and the plan — one
//! `[sources.NAME]` table per thing backed up, with how to read it, its
//! objectives (RPO, RTO) and its retention rules.
//!
//! Parsing refuses unknown keys, and every error names the file, the line
//! and the key, so a typo in a cron job's config fails the first run loudly
//! instead of silently skipping a source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_engine::gc::Policy;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub repo: Option<String>,
    pub key_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub stanza: Option<String>,
    pub wal_push_ahead: Option<u32>,
    /// Names of `[repos.NAME]` tables: copies of `repo` that the restore
    /// paths read from when it is unreachable or lacks an object.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Directory for Prometheus textfile metrics: every job writes
    /// `cairn_<job>.prom` there (node_exporter's textfile collector).
    pub metrics_dir: Option<PathBuf>,
    /// Settings of `cairn drill`.
    #[serde(default)]
    pub drill: DrillConfig,
    /// `[sources.NAME]`.
    #[serde(default)]
    pub sources: BTreeMap<String, toml::Spanned<SourceConfig>>,
    /// `[repos.NAME]`: other repositories (`cairn copy --to NAME`, `cairn
    /// init --copy-from NAME`), each with its own credentials.
    #[serde(default)]
    pub repos: BTreeMap<String, RepoConfig>,
    /// `[stanzas.NAME]`: per-stanza WAL settings.
    #[serde(default)]
    pub stanzas: BTreeMap<String, StanzaConfig>,
}

/// `[stanzas.NAME]`: where a stanza's WAL goes besides `repo`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StanzaConfig {
    /// `[repos.NAME]` tables `wal push` stores every file into as well.
    #[serde(default)]
    pub copies: Vec<String>,
    /// How long a copy may miss files (unreachable) before `wal push`
    /// fails and PostgreSQL keeps the WAL [default: 1h].
    #[serde(default, deserialize_with = "duration")]
    pub lag_budget: Option<Duration>,
    /// Longest wait for a copy during one push before it counts as
    /// unreachable for that push [default: 60s].
    #[serde(default, deserialize_with = "duration")]
    pub copy_timeout: Option<Duration>,
}

/// [`StanzaConfig::lag_budget`]'s default.
pub const DEFAULT_LAG_BUDGET: Duration = Duration::from_secs(3600);
/// [`StanzaConfig::copy_timeout`]'s default.
pub const DEFAULT_COPY_TIMEOUT: Duration = Duration::from_secs(60);

/// `[repos.NAME]`: where another repository is and how to unlock it.
/// Secrets stay in files; S3 credentials come from the environment.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// A directory, file:///path or s3://bucket/prefix.
    pub repo: Option<String>,
    pub key_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    /// Where its local index cache lives [default: the top-level one].
    pub cache_dir: Option<PathBuf>,
}

/// `[drill]`: where and as whom restore drills run.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// Parent of the scratch directories [default: the system's temp dir].
    pub scratch_dir: Option<PathBuf>,
    /// Unprivileged user the temporary PostgreSQL and redis-server run as
    /// when cairn runs as root (PostgreSQL refuses root).
    pub user: Option<String>,
    /// Directory of PostgreSQL's programs (postgres, pg_ctl, pg_amcheck)
    /// [default: /usr/lib/postgresql/15/bin, else PATH].
    pub pg_bin_dir: Option<PathBuf>,
    /// The redis-server program [default: redis-server on PATH].
    pub redis_server: Option<PathBuf>,
}

/// What a source is and how `cairn run` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A PostgreSQL base backup pulled over the replication protocol (`connect`).
    PgBase,
    /// Any byte stream: a producer `command`, or a file at `path`.
    Stream,
    /// A Redis server's RDB pulled as a replica would (`url`).
    Redis,
    /// A tar stream: a producer `command`, or a file at `path`.
    Tar,
    /// A directory tree at `path`.
    Dir,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::PgBase => "pg-base",
            SourceKind::Stream => "stream",
            SourceKind::Redis => "redis",
            SourceKind::Tar => "tar",
            SourceKind::Dir => "dir",
        }
    }
}

/// `[sources.NAME]`. A table without `kind` only holds retention rules for
/// snapshots taken by hand under that source name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SourceConfig {
    pub kind: Option<SourceKind>,
    /// pg-base: libpq conninfo or postgres:// URL, without a password.
    pub connect: Option<String>,
    /// pg-base: the stanza archiving the cluster's WAL [default: the top-level `stanza`].
    pub stanza: Option<String>,
    /// pg-base: an immediate checkpoint instead of a spread one.
    #[serde(default)]
    pub fast: bool,
    /// pg-base: seconds to wait for the backup's WAL to be archived.
    pub wal_timeout: Option<u64>,
    /// stream, tar: the producer command and its arguments (run without a shell).
    pub command: Option<Vec<String>>,
    /// redis: redis://host:port or rediss:// (no password: use `redis_password_file`).
    pub url: Option<String>,
    /// redis: file holding the server's password.
    pub redis_password_file: Option<PathBuf>,
    /// stream, tar: a file to read; dir: the directory.
    pub path: Option<PathBuf>,
    /// dir: globs to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Average chunk size in KiB (64 to 4096).
    pub chunk_avg_kib: Option<u32>,
    /// zstd level (1 to 19).
    pub compression: Option<i32>,
    /// Tags every snapshot of this source gets.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Recovery point objective: the newest snapshot (for pg-base, the
    /// newest archived WAL) must be younger than this (`15min`, `6h`, `1d`).
    #[serde(default, deserialize_with = "duration")]
    pub rpo: Option<Duration>,
    /// Recovery time objective: a drill must restore and start within this.
    #[serde(default, deserialize_with = "duration")]
    pub rto: Option<Duration>,
    /// Drill: a command run against the restored copy (tar, dir, stream);
    /// it gets the restored path in `CAIRN_DRILL_PATH` and as its last argument.
    pub verify_command: Option<Vec<String>>,
    /// Drill (pg-base): an SQL file of assertions run on the restored
    /// cluster; any error fails the drill.
    pub drill_sql: Option<PathBuf>,
    /// Retention rules (`keep_daily = 7`, …), as `cairn forget` takes them.
    #[serde(flatten)]
    pub keep: Policy,
    /// Whatever else the table holds: refused in validation, naming the key
    /// (serde's `deny_unknown_fields` does not see through `flatten`).
    #[serde(flatten)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    let v = humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("duration {s:?}: {e} (use e.g. 90s, 15min, 6h, 1d)")))?;
    if v.is_zero() {
        return Err(serde::de::Error::custom(format!("duration {s:?} must be more than zero")));
    }
    Ok(Some(v))
}

/// A source validated for `cairn run`: kind and what it reads.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    pub cfg: SourceConfig,
}

/// The 1-based line of a byte offset in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

impl ConfigFile {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses and validates the text of a config file; errors name the line
    /// and the key.
    pub fn parse(text: &str) -> Result<ConfigFile> {
        let c: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| format!("line {}: ", line_of(text, s.start))).unwrap_or_default();
            anyhow::anyhow!("{line}{}", e.message())
        })?;
        if let Some(n) = c.wal_push_ahead {
            if !(1..=64).contains(&n) {
                bail!("wal_push_ahead: must be 1 to 64");
            }
        }
        if let Some(s) = &c.stanza {
            cairn_engine::wal::validate_stanza(s).context("stanza")?;
        }
        if let Some(n) = c.fallback.iter().find(|n| !c.repos.contains_key(*n)) {
            bail!("fallback: {n:?} names no [repos.{n}] table");
        }
        for (stanza, t) in &c.stanzas {
            cairn_engine::wal::validate_stanza(stanza).with_context(|| format!("[stanzas.{stanza}]"))?;
            if let Some(n) = t.copies.iter().find(|n| !c.repos.contains_key(*n)) {
                bail!("[stanzas.{stanza}]: copies: {n:?} names no [repos.{n}] table");
            }
            if let Some(n) = t.copies.iter().find(|n| cairn_engine::wal::validate_stanza(n).is_err()) {
                bail!("[stanzas.{stanza}]: copies: {n:?}: a copy's name is 1 to 64 letters, digits, '.', '_' or '-'");
            }
        }
        for (name, s) in &c.sources {
            let span = s.span();
            if let Some(key) = s.get_ref().unknown.keys().next() {
                // The key's own line when it can be found in the table's text.
                let at = text[span.clone()]
                    .match_indices(key.as_str())
                    .map(|(i, _)| span.start + i)
                    .find(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')
                    .unwrap_or(span.start);
                bail!("line {}: [sources.{name}]: unknown key `{key}`", line_of(text, at));
            }
            let line = line_of(text, span.start);
            c.validate_source(name, s.get_ref()).with_context(|| format!("line {line}: [sources.{name}]"))?;
        }
        Ok(c)
    }

    fn validate_source(&self, name: &str, s: &SourceConfig) -> Result<()> {
        s.keep.validate()?;
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '/') {
            bail!("a source name is 1 to 128 characters, without `/` or control characters");
        }
        let Some(kind) = s.kind else {
            // Retention rules only: nothing that `run` would read may be set.
            let stray = [
                ("connect", s.connect.is_some()),
                ("command", s.command.is_some()),
                ("url", s.url.is_some()),
                ("path", s.path.is_some()),
                ("rpo", s.rpo.is_some()),
                ("rto", s.rto.is_some()),
            ];
            if let Some((k, _)) = stray.iter().find(|(_, set)| *set) {
                bail!("`{k}` needs `kind` (pg-base, stream, redis, tar or dir)");
            }
            return Ok(());
        };
        let allowed: &[&str] = match kind {
            SourceKind::PgBase => &["connect", "stanza", "fast", "wal_timeout", "drill_sql"],
            SourceKind::Stream | SourceKind::Tar => &["command", "path", "verify_command"],
            SourceKind::Redis => &["url", "redis_password_file"],
            SourceKind::Dir => &["path", "exclude", "verify_command"],
        };
        let set = [
            ("connect", s.connect.is_some()),
            ("stanza", s.stanza.is_some()),
            ("fast", s.fast),
            ("wal_timeout", s.wal_timeout.is_some()),
            ("drill_sql", s.drill_sql.is_some()),
            ("command", s.command.is_some()),
            ("path", s.path.is_some()),
            ("verify_command", s.verify_command.is_some()),
            ("url", s.url.is_some()),
            ("redis_password_file", s.redis_password_file.is_some()),
            ("exclude", !s.exclude.is_empty()),
        ];
        for (k, on) in set {
            if on && !allowed.contains(&k) {
                bail!("`{k}` does not apply to kind = \"{}\"", kind.as_str());
            }
        }
        match kind {
            SourceKind::PgBase => {
                let c = s.connect.as_deref().context("kind = \"pg-base\" needs `connect`")?;
                let parsed = cairn_engine::pg::replication::ConnInfo::parse_with_env(c, &|_| None)
                    .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
                if parsed.password.is_some() {
                    bail!("connect: must not carry a password (use PGPASSWORD or PGPASSFILE)");
                }
                let stanza = s.stanza.as_ref().or(self.stanza.as_ref()).context(
                    "kind = \"pg-base\" needs `stanza` (here or at the top of the file): the WAL archive of the cluster",
                )?;
                cairn_engine::wal::validate_stanza(stanza).context("stanza")?;
            }
            SourceKind::Stream | SourceKind::Tar => match (&s.command, &s.path) {
                (Some(_), Some(_)) => bail!("give `command` or `path`, not both"),
                (None, None) => bail!("kind = \"{}\" needs `command` or `path`", kind.as_str()),
                (Some(c), None) if c.is_empty() || c[0].is_empty() => bail!("command: empty"),
                _ => {}
            },
            SourceKind::Redis => {
                let u = s.url.as_deref().context("kind = \"redis\" needs `url`")?;
                let parsed = url::Url::parse(u).map_err(|e| anyhow::anyhow!("url: {e}"))?;
                if parsed.password().is_some() {
                    bail!("url: must not carry a password (use `redis_password_file`)");
                }
            }
            SourceKind::Dir => {
                let p = s.path.as_ref().context("kind = \"dir\" needs `path`")?;
                if !p.is_absolute() {
                    bail!("path: give an absolute directory");
                }
                cairn_engine::build_excludes(&s.exclude).map_err(|e| anyhow::anyhow!("exclude: {e}"))?;
            }
        }
        if let Some(v) = &s.verify_command {
            if v.is_empty() || v[0].is_empty() {
                bail!("verify_command: empty");
            }
        }
        if let Some(k) = s.chunk_avg_kib {
            if !(64..=4096).contains(&k) {
                bail!("chunk_avg_kib: must be 64 to 4096");
            }
        }
        if let Some(l) = s.compression {
            if !(1..=19).contains(&l) {
                bail!("compression: must be 1 to 19");
            }
        }
        Ok(())
    }

    /// The stanza a pg-base source archives into.
    pub fn stanza_of(&self, s: &SourceConfig) -> Option<String> {
        s.stanza.clone().or_else(|| self.stanza.clone())
    }

    /// The sources `run`, `drill` and `status` act on: the named ones (each
    /// must exist and have a kind), or with `all` every one with a kind.
    pub fn select(&self, names: &[String], all: bool) -> Result<Vec<Source>> {
        let runnable = |name: &String| -> Result<Source> {
            let s = self.sources.get(name).with_context(|| {
                let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
                format!("no source {name:?} in the config file (it has: {})", known.join(", "))
            })?;
            let cfg = s.get_ref().clone();
            let kind =
                cfg.kind.with_context(|| format!("[sources.{name}] has no `kind`: it only holds retention rules"))?;
            Ok(Source { name: name.clone(), kind, cfg })
        };
        match (all, names.is_empty()) {
            (true, false) => bail!("give source names or --all, not both"),
            (false, true) => bail!("no source given: name one or more `[sources.NAME]` of the config file, or --all"),
            (true, true) => {
                let v: Vec<Source> = self
                    .sources
                    .iter()
                    .filter(|(_, s)| s.get_ref().kind.is_some())
                    .map(|(n, _)| runnable(n))
                    .collect::<Result<_>>()?;
                if v.is_empty() {
                    bail!("the config file has no `[sources.NAME]` with a `kind`");
                }
                Ok(v)
            }
            (false, false) => names.iter().map(runnable).collect(),
        }
    }

    /// Retention rules per source name.
    pub fn policies(&self) -> BTreeMap<String, Policy> {
        self.sources.iter().map(|(n, s)| (n.clone(), s.get_ref().keep.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", ConfigFile::parse(text).unwrap_err())
    }

    #[test]
    fn a_whole_plan_parses() {
        let c = ConfigFile::parse(
            r#"
repo = "/srv/cairn"
stanza = "main"
metrics_dir = "/var/lib/node_exporter"

[drill]
user = "postgres"

[sources.pg-main]
kind = "pg-base"
connect = "host=/run/postgresql user=postgres"
rpo = "15min"
rto = "2h"
keep_daily = 7

[sources.redis]
kind = "redis"
url = "redis://127.0.0.1:6379"
rpo = "6h"

[sources.models]
kind = "tar"
command = ["tar", "-cf", "-", "/srv/models"]
verify_command = ["tar", "-tf"]
chunk_avg_kib = 256
tags = ["daily"]

[sources.etc]
kind = "dir"
path = "/etc/app"
exclude = ["*.swp"]

[sources.manual]
keep_last = 3
"#,
        )
        .unwrap();
        let all = c.select(&[], true).unwrap();
        assert_eq!(all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["etc", "models", "pg-main", "redis"]);
        let pg = &c.sources["pg-main"].get_ref();
        assert_eq!(pg.rpo, Some(Duration::from_secs(900)));
        assert_eq!(pg.rto, Some(Duration::from_secs(7200)));
        assert_eq!(pg.keep.keep_daily, Some(7));
        assert_eq!(c.stanza_of(pg).as_deref(), Some("main"));
        assert_eq!(c.policies()["manual"].keep_last, Some(3));
        assert!(err_of(c.select(&["manual".into()], false)).contains("only holds retention rules"));
        assert!(err_of(c.select(&["nope".into()], false)).contains("no source \"nope\""));
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let e = err("repo = \"/r\"\n\n[sources.a]\nkind = \"dir\"\npath = \"/x\"\nkeep_dialy = 3\n");
        assert!(e.contains("line 6") && e.contains("unknown key `keep_dialy`"), "{e}");
        // `repos` is a table of other repositories now: a typo of `repo`
        // that needs no table still names its key, and `repos` as a string
        // is refused on its line.
        let e = err("repo = \"/r\"\nrepo_url = \"/x\"\n");
        assert!(e.contains("line 2") && e.contains("repo_url"), "{e}");
        let e = err("repo = \"/r\"\nrepos = \"/x\"\n");
        assert!(e.contains("line 2") && e.contains("expected a map"), "{e}");
        let e = err("[sources.a]\nkind = \"dir\"\npath = \"/x\"\nrpo = \"soon\"\n");
        assert!(e.contains("line 4") && e.contains("soon"), "{e}");
        let e = err("\n[sources.pg]\nkind = \"pg-base\"\nconnect = \"host=/tmp\"\n");
        assert!(e.contains("line 2") && e.contains("needs `stanza`"), "{e}");
        let e = err("[sources.pg]\nkind = \"pg-base\"\nstanza = \"s\"\nconnect = \"host=/tmp password=x\"\n");
        assert!(e.contains("password"), "{e}");
        let e = err("[sources.r]\nkind = \"redis\"\nurl = \"redis://:pw@h:1\"\n");
        assert!(e.contains("password"), "{e}");
        let e = err("[sources.t]\nkind = \"tar\"\n");
        assert!(e.contains("needs `command` or `path`"), "{e}");
        let e = err("[sources.t]\nkind = \"tar\"\npath = \"/a\"\nexclude = [\"x\"]\n");
        assert!(e.contains("`exclude` does not apply"), "{e}");
        let e = err("[sources.t]\nkind = \"zip\"\n");
        assert!(e.contains("line 2") && e.contains("zip"), "{e}");
        let e = err("[sources.t]\nrpo = \"1h\"\n");
        assert!(e.contains("needs `kind`"), "{e}");
        let e = err("[sources.d]\nkind = \"dir\"\npath = \"rel\"\n");
        assert!(e.contains("absolute"), "{e}");
        let e = err("[drill]\nusr = \"x\"\n");
        assert!(e.contains("usr"), "{e}");
    }

    #[test]
    fn repos_tables_name_other_repositories_and_refuse_unknown_keys() {
        let c = ConfigFile::parse("[repos.offsite]\nrepo = \"s3://b/p\"\nkey_file = \"/k\"\n").unwrap();
        let r = &c.repos["offsite"];
        assert_eq!((r.repo.as_deref(), r.key_file.as_deref()), (Some("s3://b/p"), Some(Path::new("/k"))));
        let e =
            format!("{:#}", ConfigFile::parse("[repos.offsite]\nrepo = \"x\"\npassword = \"hunter2\"\n").unwrap_err());
        assert!(e.contains("password") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn stanza_copies_name_repos_tables() {
        let c = ConfigFile::parse(
            "[repos.offsite]\nrepo = \"s3://b/p\"\n[stanzas.main]\ncopies = [\"offsite\"]\nlag_budget = \"30min\"\n",
        )
        .unwrap();
        assert_eq!(c.stanzas["main"].copies, ["offsite"]);
        assert_eq!(c.stanzas["main"].lag_budget, Some(Duration::from_secs(1800)));
        let e = format!("{:#}", ConfigFile::parse("[stanzas.main]\ncopies = [\"nowhere\"]\n").unwrap_err());
        assert!(e.contains("[stanzas.main]") && e.contains("[repos.nowhere]"), "{e}");
        let e = format!("{:#}", ConfigFile::parse("[stanzas.main]\nlag = \"1h\"\n").unwrap_err());
        assert!(e.contains("line 2") && e.contains("lag"), "{e}");
    }

    #[test]
    fn fallback_names_repos_tables() {
        let c = ConfigFile::parse("fallback = [\"offsite\"]\n[repos.offsite]\nrepo = \"s3://b/p\"\n").unwrap();
        assert_eq!(c.fallback, ["offsite"]);
        let e =
            format!("{:#}", ConfigFile::parse("fallback = [\"ofsite\"]\n[repos.offsite]\nrepo = \"x\"\n").unwrap_err());
        assert!(e.contains("ofsite") && e.contains("[repos.ofsite]"), "{e}");
    }
}
