//! A throwaway `redis-server` for end-to-end tests, and helpers to talk to
//! it (same shape as the one the RDB oracle tests in `formats/` use).
//!
//! The tests need the real tools: a missing binary fails the test with a
//! message saying what to install, so a machine without Redis never reports
//! a pass that checked nothing.

use std::io::Write;
use std::net::TcpListener;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn runs(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Panics with an install hint unless `tool` runs.
pub fn require_tool(tool: &str) {
    assert!(
        runs(tool, "--version"),
        "`{tool}` is required by this oracle test and was not found; install it with \
         `apt-get install -y redis-server` (Debian's package ships redis-server, \
         redis-cli and redis-check-rdb)"
    );
}

/// A throwaway PKI made with the `openssl` CLI: a CA, a server certificate
/// it signs for `127.0.0.1` and `localhost`, a client certificate it signs,
/// and an unrelated CA that signs nothing here.
pub struct TlsFiles {
    /// The directory holding the PEM files.
    pub dir: tempfile::TempDir,
}

impl TlsFiles {
    /// Generates the files (RSA 2048, valid for two days).
    pub fn generate() -> TlsFiles {
        assert!(
            runs("openssl", "version"),
            "`openssl` is required by the TLS tests and was not found; install it with `apt-get install -y openssl`"
        );
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=cairn test {ca}"),
            ]
            .into_iter()
            .chain(["-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.crt")])
            .collect::<Vec<_>>());
        }
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for who in ["server", "client"] {
            let (key, csr, crt, ext) =
                (format!("{who}.key"), format!("{who}.csr"), format!("{who}.crt"), format!("{who}.ext"));
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={who}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ]);
            run(&["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
                .into_iter()
                .chain(["-days", "2", "-extfile", &ext, "-out", &crt])
                .collect::<Vec<_>>());
        }
        TlsFiles { dir }
    }

    /// The path of one of the files, e.g. `ca.crt` or `client.key`.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

/// A `redis-server` child in its own temporary directory, killed on drop.
pub struct RedisServer {
    child: Child,
    /// The port it listens on (loopback only); with TLS, the TLS port.
    pub port: u16,
    /// Its working directory, where `dump.rdb` is written.
    pub dir: tempfile::TempDir,
    /// How `redis-cli` reaches it: host, port, TLS options.
    conn: Vec<String>,
    /// Set by [`RedisServer::set_password`]; passed to `redis-cli` in
    /// `REDISCLI_AUTH`, never in argv.
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server with persistence off and the given extra arguments
    /// (for example `["--rdbchecksum", "no"]`), and waits until it answers.
    pub fn start(extra: &[&str]) -> RedisServer {
        Self::start_in(tempfile::tempdir().expect("temp dir"), extra)
    }

    /// Starts a server in `dir`, loading `dir/dump.rdb` if there is one.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> RedisServer {
        Self::launch(dir, None, extra)
    }

    /// Starts a server that speaks only TLS (`--port 0`), with the server
    /// certificate from `tls` and clients not asked for certificates
    /// (`CONFIG SET tls-auth-clients yes` changes that).
    pub fn start_tls(tls: &TlsFiles, extra: &[&str]) -> RedisServer {
        Self::launch(tempfile::tempdir().expect("temp dir"), Some(tls), extra)
    }

    fn launch(dir: tempfile::TempDir, tls: Option<&TlsFiles>, extra: &[&str]) -> RedisServer {
        require_tool("redis-server");
        require_tool("redis-cli");
        // Ask the kernel for a free port; the tiny race with other
        // processes is acceptable for a test.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut listen: Vec<String> = vec!["--port".into(), port.to_string()];
        let mut conn: Vec<String> = vec!["-h".into(), "127.0.0.1".into(), "-p".into(), port.to_string()];
        if let Some(t) = tls {
            listen = ["--port", "0", "--tls-port", &port.to_string()]
                .into_iter()
                .chain(["--tls-cert-file", &t.path("server.crt"), "--tls-key-file", &t.path("server.key")])
                .chain(["--tls-ca-cert-file", &t.path("ca.crt"), "--tls-auth-clients", "no"])
                .map(String::from)
                .collect();
            conn.extend(["--tls", "--cacert", &t.path("ca.crt")].map(String::from));
            conn.extend(["--cert", &t.path("client.crt"), "--key", &t.path("client.key")].map(String::from));
        }
        let log = std::fs::File::create(dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(&listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        let mut server = RedisServer { child, port, dir, conn, password: None };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if server.try_cli(&["PING"]).is_some_and(|o| o.trim() == "PONG" || o.contains("NOAUTH")) {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer on port {port}: {}", server.log());
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited ({status}): {}", server.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// `redis-cli` aimed at this server, authenticated if a password is set.
    fn redis_cli(&self) -> Command {
        let mut c = Command::new("redis-cli");
        c.args(&self.conn);
        if let Some(pw) = &self.password {
            c.env("REDISCLI_AUTH", pw);
        }
        c
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = self.redis_cli().args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets `requirepass`; later [`RedisServer::cli`] and
    /// [`RedisServer::pipe`] calls authenticate.
    pub fn set_password(&mut self, password: &str) {
        assert_eq!(self.cli(&["CONFIG", "SET", "requirepass", password]).trim(), "OK");
        self.password = Some(password.to_string());
    }

    /// Runs one command with `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// Sends many commands at once through `redis-cli --pipe`, which is
    /// much faster than one process per command, and checks that none
    /// failed.
    pub fn pipe(&self, commands: &[Vec<Vec<u8>>]) {
        let mut resp = Vec::new();
        for cmd in commands {
            write!(resp, "*{}\r\n", cmd.len()).unwrap();
            for arg in cmd {
                write!(resp, "${}\r\n", arg.len()).unwrap();
                resp.extend_from_slice(arg);
                resp.extend_from_slice(b"\r\n");
            }
        }
        let mut child = self
            .redis_cli()
            .arg("--pipe")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn redis-cli --pipe");
        child.stdin.take().unwrap().write_all(&resp).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("errors: 0"), "redis-cli --pipe: {text}");
    }

    /// Runs `SAVE` and returns the bytes of the dump.
    pub fn save(&self) -> Vec<u8> {
        assert_eq!(self.cli(&["SAVE"]).trim(), "OK");
        std::fs::read(self.dir.path().join("dump.rdb")).expect("read dump.rdb")
    }

    /// `(keys, expires)` per database, from `INFO keyspace`.
    pub fn keyspace(&self) -> Vec<(u64, u64, u64)> {
        let info = self.cli(&["INFO", "keyspace"]);
        let mut out = Vec::new();
        for line in info.lines() {
            let Some(rest) = line.trim().strip_prefix("db") else { continue };
            let (db, fields) = rest.split_once(':').unwrap();
            let field = |name: &str| -> u64 {
                let f = fields.split(',').find_map(|f| f.strip_prefix(name)).unwrap();
                f.trim_start_matches('=').parse().unwrap()
            };
            out.push((db.parse().unwrap(), field("keys"), field("expires")));
        }
        out
    }

    /// `DBSIZE` of database `db`.
    pub fn dbsize(&self, db: u64) -> u64 {
        let out = self.cli(&["-n", &db.to_string(), "DBSIZE"]);
        out.trim().parse().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One command as raw arguments, for [`RedisServer::pipe`].
pub fn cmd<I, A>(args: I) -> Vec<Vec<u8>>
where
    I: IntoIterator<Item = A>,
    A: AsRef<[u8]>,
{
    args.into_iter().map(|a| a.as_ref().to_vec()).collect()
}
