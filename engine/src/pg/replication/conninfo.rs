//! Connection settings in libpq's two spellings, `key=value` pairs and
//! `postgres://` URLs, completed from libpq's environment variables and
//! password file the way `psql` and `pg_basebackup` complete them.
//!
//! The password never appears in a `Debug` or `Display` output nor in an
//! error message: a conninfo string that fails to parse is never quoted
//! whole, only the key at fault.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::{Error, Result};

/// A password, zeroed on drop, shown as `<redacted>` by `Debug`.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Password {
        Password(Zeroizing::new(password.into()))
    }

    /// The password itself, to be written to the server and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// libpq's `sslmode`: whether to use TLS and how far to trust the server's
/// certificate. Unix-socket connections never use TLS, whatever the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without checking its certificate
    /// (libpq's default). A server that refuses TLS gets a plain connection.
    Prefer,
    /// Insist on TLS, without checking the certificate — unless a root
    /// certificate is given (`sslrootcert`), in which case the chain is
    /// checked as with [`SslMode::VerifyCa`], as libpq does.
    Require,
    /// Insist on TLS and check that the server's certificate chains to
    /// `sslrootcert`.
    VerifyCa,
    /// As [`SslMode::VerifyCa`], and check that the certificate names the
    /// host we connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err(bad("sslmode=allow is not supported; use prefer or disable")),
            other => {
                return Err(bad(format!(
                    "invalid sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    /// Whether a server without TLS is refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

/// libpq's `channel_binding`: whether SCRAM authentication binds itself to
/// the TLS connection (`SCRAM-SHA-256-PLUS` with `tls-server-end-point`),
/// which proves that the server holding the password verifier is the one
/// at the other end of the TLS channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBindingMode {
    /// Never.
    Disable,
    /// When TLS is on and the server offers it (the default).
    Prefer,
    /// Refuse to authenticate any other way: no TLS, no SCRAM (trust, md5,
    /// password) or no `-PLUS` mechanism all fail.
    Require,
}

/// Where and how to connect to a PostgreSQL server.
///
/// Built by [`ConnInfo::parse`]; fields left out of the string come from
/// libpq's environment variables (`PGHOST`, `PGPORT`, `PGUSER`,
/// `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`,
/// `PGCONNECT_TIMEOUT`, `PGCHANNELBINDING`), then libpq's defaults.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// A host name or IP address, or — starting with `/` — the directory
    /// holding the server's Unix socket.
    pub host: String,
    /// An IP address to connect to instead of resolving `host` (libpq's
    /// `hostaddr`); `host` still names the server for certificate checks.
    pub hostaddr: Option<String>,
    /// TCP port, or the number in the socket file name `.s.PGSQL.<port>`.
    pub port: u16,
    /// Role name.
    pub user: String,
    /// Database name. A physical replication connection is not bound to a
    /// database; this only selects password file entries, which libpq
    /// matches against `replication` when it is unset.
    pub dbname: Option<String>,
    /// Password, from the string, `PGPASSWORD`, or the password file
    /// (`passfile`, `PGPASSFILE`, `~/.pgpass`), in that order.
    pub password: Option<Password>,
    /// TLS policy.
    pub sslmode: SslMode,
    /// PEM file of trusted root certificates for `verify-ca` and
    /// `verify-full` (default `~/.postgresql/root.crt`).
    pub sslrootcert: Option<PathBuf>,
    /// Shown in `pg_stat_activity` and `pg_stat_replication`.
    pub application_name: String,
    /// Gives up connecting (per address) after this long.
    pub connect_timeout: Option<Duration>,
    /// SCRAM channel binding policy.
    pub channel_binding: ChannelBindingMode,
}

/// The keys [`ConnInfo::parse`] understands.
const KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "dbname",
    "password",
    "passfile",
    "sslmode",
    "sslrootcert",
    "application_name",
    "connect_timeout",
    "channel_binding",
];

fn bad(detail: impl fmt::Display) -> Error {
    Error::Config(format!("PostgreSQL connection string: {detail}"))
}

impl ConnInfo {
    /// Parses `host=/tmp port=5432 user=x sslmode=disable` or
    /// `postgres://user@host:port/db?sslmode=require`, completing it from the
    /// process environment.
    pub fn parse(s: &str) -> Result<ConnInfo> {
        ConnInfo::parse_with_env(s, &|k| std::env::var(k).ok())
    }

    /// [`ConnInfo::parse`] with the environment given as a lookup function,
    /// so that callers (and tests) need not change the process environment.
    pub fn parse_with_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ConnInfo> {
        ConnInfo::parse_inner(s, env, None)
    }

    /// [`ConnInfo::parse`] for a plain SQL session rather than physical
    /// replication: the database defaults to `postgres` (a replication
    /// connection string rarely names one), and the password file is
    /// searched for that database, not `replication`.
    pub fn parse_sql(s: &str) -> Result<ConnInfo> {
        ConnInfo::parse_inner(s, &|k| std::env::var(k).ok(), Some("postgres"))
    }

    fn parse_inner(s: &str, env: &dyn Fn(&str) -> Option<String>, default_db: Option<&str>) -> Result<ConnInfo> {
        let s = s.trim();
        let pairs = if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            parse_url(s)?
        } else {
            parse_pairs(s)?
        };
        // A stray word after `password=` may be part of a mistyped password:
        // then unknown keys are not quoted back.
        let has_password = pairs.iter().any(|(k, _)| k == "password");
        let mut given: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            if !KEYS.contains(&k.as_str()) {
                let which = if has_password { "an unknown key".to_owned() } else { format!("unknown key {k:?}") };
                return Err(bad(format!("{which} (known: {})", KEYS.join(", "))));
            }
            // As in libpq, a later setting of a key wins.
            given.retain(|(g, _)| *g != k);
            given.push((k, v));
        }
        let get = |key: &str, var: &str| -> Option<String> {
            given.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).or_else(|| env(var)).filter(|v| !v.is_empty())
        };

        let host = get("host", "PGHOST").unwrap_or_else(default_host);
        if host.contains(',') {
            return Err(bad("several hosts are not supported; give one"));
        }
        let hostaddr = get("hostaddr", "PGHOSTADDR");
        let port = match get("port", "PGPORT") {
            None => 5432,
            Some(p) => p.parse().map_err(|_| bad(format!("invalid port {p:?}")))?,
        };
        let user = get("user", "PGUSER")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "postgres".to_owned());
        let dbname = get("dbname", "PGDATABASE").or_else(|| default_db.map(str::to_owned));
        let sslmode = match get("sslmode", "PGSSLMODE") {
            None => SslMode::Prefer,
            Some(m) => SslMode::parse(&m)?,
        };
        let sslrootcert = get("sslrootcert", "PGSSLROOTCERT").map(PathBuf::from);
        let application_name = get("application_name", "PGAPPNAME").unwrap_or_else(|| "cairn".to_owned());
        let connect_timeout = match get("connect_timeout", "PGCONNECT_TIMEOUT") {
            None => None,
            Some(t) => match t.parse::<u64>() {
                Ok(0) => None,
                // libpq treats 1 as 2 seconds: one second is too short to be meant.
                Ok(n) => Some(Duration::from_secs(n.max(2))),
                Err(_) => return Err(bad(format!("invalid connect_timeout {t:?}"))),
            },
        };

        let channel_binding = match get("channel_binding", "PGCHANNELBINDING").as_deref() {
            None | Some("prefer") => ChannelBindingMode::Prefer,
            Some("disable") => ChannelBindingMode::Disable,
            Some("require") => ChannelBindingMode::Require,
            Some(other) => {
                return Err(bad(format!("invalid channel_binding {other:?}: expected disable, prefer or require")))
            }
        };

        let mut ci = ConnInfo {
            host,
            hostaddr,
            port,
            user,
            dbname,
            password: None,
            sslmode,
            sslrootcert,
            application_name,
            connect_timeout,
            channel_binding,
        };
        ci.password = match given.iter().find(|(k, _)| k == "password") {
            Some((_, p)) => Some(Password::new(p.clone())),
            None => match env("PGPASSWORD").filter(|p| !p.is_empty()) {
                Some(p) => Some(Password::new(p)),
                None => {
                    let file = get("passfile", "PGPASSFILE")
                        .map(PathBuf::from)
                        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
                    match file {
                        Some(f) => password_from_file(&f, &ci)?,
                        None => None,
                    }
                }
            },
        };
        Ok(ci)
    }

    /// Whether `host` names a Unix socket directory.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/') && self.hostaddr.is_none()
    }

    /// The socket file for a Unix-socket connection.
    pub fn socket_path(&self) -> PathBuf {
        Path::new(&self.host).join(format!(".s.PGSQL.{}", self.port))
    }

    /// How errors and logs name the server: `host:port`, or the socket path.
    pub fn server_name(&self) -> String {
        if self.is_unix_socket() {
            self.socket_path().display().to_string()
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// libpq's compiled-in socket directory differs between builds; Debian's
/// is `/var/run/postgresql`, upstream's `/tmp`.
fn default_host() -> String {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql".to_owned()
    } else {
        "/tmp".to_owned()
    }
}

/// Splits libpq's `key = value` form: values may be single-quoted, and a
/// backslash escapes the next character in either form.
fn parse_pairs(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(format!("missing \"=\" after key number {}", out.len() + 1)));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(bad(format!("unterminated quoted value of key number {}", out.len() + 1))),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(bad(format!("unterminated quoted value of key number {}", out.len() + 1))),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        value.push(e);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str, what: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(format!("bad %-escape in {what}")))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("{what} is not UTF-8")))
}

/// `postgres[ql]://[user[:password]@][host][:port][/dbname][?key=value&...]`.
fn parse_url(s: &str) -> Result<Vec<(String, String)>> {
    let rest = s.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut out = Vec::new();
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hp)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.push(("user".to_owned(), percent_decode(user, "the user name")?));
            }
            if let Some(p) = password {
                out.push(("password".to_owned(), percent_decode(p, "the password")?));
            }
            hp
        }
        None => authority,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unterminated [ in the URL's host"))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if !host.is_empty() {
        out.push(("host".to_owned(), percent_decode(host, "the host")?));
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        out.push(("port".to_owned(), p.to_owned()));
    }
    if let Some(db) = path.filter(|d| !d.is_empty()) {
        out.push(("dbname".to_owned(), percent_decode(db, "the database name")?));
    }
    for kv in query.unwrap_or_default().split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| bad("URL parameter without \"=\""))?;
        let k = percent_decode(k, "a URL parameter name")?;
        let v = percent_decode(v, &format!("the URL parameter {k:?}"))?;
        out.push((k, v));
    }
    Ok(out)
}

/// Looks `ci` up in a `~/.pgpass`-style file: lines of
/// `host:port:database:user:password`, `*` matching anything, `\` escaping
/// `:` and `\`. Like libpq, a socket connection matches `localhost`, a
/// replication connection matches the database `replication`, and a file
/// that others may read is ignored with a warning.
fn password_from_file(path: &Path, ci: &ConnInfo) -> Result<Option<Password>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        _ => return Ok(None),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "password file has group or world access; permissions should be u=rw (0600) or less; ignoring it"
        );
        return Ok(None);
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
    let host = if ci.host.starts_with('/') { "localhost" } else { ci.host.as_str() };
    let port = ci.port.to_string();
    let db = ci.dbname.as_deref().unwrap_or("replication");
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], host)
            && matches(&fields[1], &port)
            && matches(&fields[2], db)
            && matches(&fields[3], &ci.user)
        {
            return Ok(Some(Password::new(fields[4].as_str())));
        }
    }
    Ok(None)
}

/// Splits one password file line on unescaped colons; the fifth field (the
/// password) runs to the end of the line.
fn split_pgpass_line(line: &str) -> Vec<Zeroizing<String>> {
    let mut fields = vec![Zeroizing::new(String::new())];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let last = fields.len() - 1;
        match c {
            '\\' => {
                if let Some(e) = chars.next() {
                    fields[last].push(e);
                }
            }
            ':' if fields.len() < 5 => fields.push(Zeroizing::new(String::new())),
            c => fields[last].push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn key_value_form_with_quotes_and_escapes() {
        let ci = ConnInfo::parse_with_env(
            "host=/tmp port = 5433 user='a b' application_name=x\\ y sslmode=disable password='it''s'",
            &no_env,
        );
        // libpq has no '' escape inside quotes: the second quote ends the value.
        assert!(ci.is_err());
        let ci = ConnInfo::parse_with_env(
            "host=/tmp port = 5433 user='a b' application_name=x\\ y sslmode=disable password='it\\'s'",
            &no_env,
        )
        .unwrap();
        assert_eq!((ci.host.as_str(), ci.port, ci.user.as_str()), ("/tmp", 5433, "a b"));
        assert_eq!(ci.application_name, "x y");
        assert_eq!(ci.sslmode, SslMode::Disable);
        assert_eq!(ci.password.as_ref().unwrap().expose(), "it's");
        assert!(ci.is_unix_socket());
        assert_eq!(ci.server_name(), "/tmp/.s.PGSQL.5433");
        assert!(!format!("{ci:?}").contains("it's"), "Debug shows the password");
    }

    #[test]
    fn url_form() {
        let ci = ConnInfo::parse_with_env(
            "postgresql://rep:s%40cret@db.example:6543/app?sslmode=verify-full&sslrootcert=/ca.pem&application_name=t",
            &no_env,
        )
        .unwrap();
        assert_eq!((ci.host.as_str(), ci.port, ci.user.as_str()), ("db.example", 6543, "rep"));
        assert_eq!(ci.dbname.as_deref(), Some("app"));
        assert_eq!(ci.password.unwrap().expose(), "s@cret");
        assert_eq!(ci.sslmode, SslMode::VerifyFull);
        assert_eq!(ci.sslrootcert.as_deref(), Some(Path::new("/ca.pem")));
        let ci = ConnInfo::parse_with_env("postgres://%2Fvar%2Frun%2Fpostgresql:5432", &no_env).unwrap();
        assert_eq!(ci.host, "/var/run/postgresql");
        let ci = ConnInfo::parse_with_env("postgres://[::1]:7000", &no_env).unwrap();
        assert_eq!((ci.host.as_str(), ci.port), ("::1", 7000));
        assert_eq!(ci.server_name(), "[::1]:7000");
    }

    #[test]
    fn errors_never_quote_the_password() {
        for s in [
            "password=hunter2 bogus=1",
            "password=hunter2 port=x",
            "postgres://u:hunter2@h:notaport",
            "password=hunter hunter2=x",
            "password=hunter hunter2 x=y",
            "password='hunter2",
        ] {
            let e = ConnInfo::parse_with_env(s, &no_env).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn environment_fills_the_gaps_and_the_string_wins() {
        let env = |k: &str| match k {
            "PGHOST" => Some("10.1.2.3".to_owned()),
            "PGPORT" => Some("6000".to_owned()),
            "PGUSER" => Some("envuser".to_owned()),
            "PGPASSWORD" => Some("from-env".to_owned()),
            "PGSSLMODE" => Some("require".to_owned()),
            _ => None,
        };
        let ci = ConnInfo::parse_with_env("port=7000", &env).unwrap();
        assert_eq!((ci.host.as_str(), ci.port, ci.user.as_str()), ("10.1.2.3", 7000, "envuser"));
        assert_eq!(ci.password.unwrap().expose(), "from-env");
        assert_eq!(ci.sslmode, SslMode::Require);
    }

    #[test]
    fn password_file_matching_like_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:nope\nlocalhost:5432:replication:rep:pa\\:ss\\\\word\n*:*:*:*:fallback:with:colons\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = file.to_string_lossy().into_owned();
        let env = move |k: &str| (k == "PGPASSFILE").then(|| path.clone());
        let ci = ConnInfo::parse_with_env("host=/tmp user=rep", &env).unwrap();
        assert_eq!(ci.password.unwrap().expose(), "pa:ss\\word");
        let ci = ConnInfo::parse_with_env("host=h2 user=rep", &env).unwrap();
        assert_eq!(ci.password.unwrap().expose(), "fallback:with:colons");
        // A file others can read is ignored.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ConnInfo::parse_with_env("host=/tmp user=rep", &env).unwrap().password.is_none());
    }
}
