//! What to ask the server for: [`BaseBackupOptions`], and the
//! `BASE_BACKUP` command text in the two syntaxes (13–14: bare keywords;
//! 15+: a parenthesized option list).

use std::time::Duration;

/// Default [`BaseBackupOptions::read_timeout`].
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Default [`BaseBackupOptions::start_timeout`] (pgBackRest's `db-timeout`).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(1800);

/// The first server version with the single-stream protocol, the
/// parenthesized option syntax, and properly terminated tar archives.
pub(super) const NEW_PROTOCOL_VERSION: u32 = 150000;

/// Checksum algorithm for the files listed in `backup_manifest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestChecksums {
    /// No per-file checksums (sizes are still listed).
    None,
    /// CRC-32C: cheap, catches accidents (PostgreSQL's default).
    #[default]
    Crc32c,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ManifestChecksums {
    fn keyword(self) -> &'static str {
        match self {
            ManifestChecksums::None => "NONE",
            ManifestChecksums::Crc32c => "CRC32C",
            ManifestChecksums::Sha224 => "SHA224",
            ManifestChecksums::Sha256 => "SHA256",
            ManifestChecksums::Sha384 => "SHA384",
            ManifestChecksums::Sha512 => "SHA512",
        }
    }
}

/// What to ask the server for: [`BaseBackupOptions::default`], then the
/// `with_…` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BaseBackupOptions {
    /// The backup label, recorded in `backup_label` (single quotes allowed).
    pub label: String,
    /// Start with an immediate checkpoint instead of a spread one (which
    /// may take up to `checkpoint_timeout * checkpoint_completion_target`).
    pub fast_checkpoint: bool,
    /// Ask the server for a `backup_manifest`.
    pub manifest: bool,
    /// The manifest's per-file checksums.
    pub manifest_checksums: ManifestChecksums,
    /// Ask the server to estimate each tablespace's size first (one extra
    /// directory walk), so that [`super::BaseBackup::progress`] has a total.
    pub progress: bool,
    /// Let the server wait, before it ends the backup, until the last WAL
    /// segment the backup needs has been archived (`WAIT true`, the
    /// server's default). Right when WAL is archived separately: the backup
    /// only completes once it is restorable from the archive. With
    /// `archive_mode = off` the server only logs a notice.
    pub wait_for_wal_archive: bool,
    /// Let the server verify page checksums as it reads (when the cluster
    /// has them); failures fail the backup at its end.
    pub verify_checksums: bool,
    /// Put a `tablespace_map` file in `base.tar` instead of the
    /// `pg_tblspc` symbolic links, as `pg_basebackup -Ft` does.
    pub tablespace_map: bool,
    /// Limit the server's send rate, in kB/s (32 to 1048576).
    pub max_rate_kb: Option<u32>,
    /// The longest the server may stay silent while connecting and while
    /// the backup streams, before the session fails with a `TimedOut`
    /// connection error (a stalled server, which TCP keepalives do not
    /// notice and a Unix socket never reports). Archive data flows without
    /// pauses; the one long silence is at the end, while the server waits
    /// for the last WAL segment to be archived
    /// ([`BaseBackupOptions::wait_for_wal_archive`]), and there it warns
    /// after 60, 120, 240, 480 … seconds, each warning counting as data.
    pub read_timeout: Duration,
    /// The longest wait for the backup to start after `BASE_BACKUP`: the
    /// server says nothing until its checkpoint is done, and a spread one
    /// takes up to `checkpoint_timeout * checkpoint_completion_target`.
    pub start_timeout: Duration,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        BaseBackupOptions {
            label: "cairn base backup".to_owned(),
            fast_checkpoint: false,
            manifest: true,
            manifest_checksums: ManifestChecksums::Crc32c,
            progress: true,
            wait_for_wal_archive: true,
            verify_checksums: true,
            tablespace_map: true,
            max_rate_kb: None,
            read_timeout: DEFAULT_READ_TIMEOUT,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }
}

impl BaseBackupOptions {
    /// The backup label.
    pub fn with_label(mut self, label: impl Into<String>) -> BaseBackupOptions {
        self.label = label.into();
        self
    }

    /// An immediate checkpoint (`true`) or a spread one.
    pub fn with_fast_checkpoint(mut self, fast: bool) -> BaseBackupOptions {
        self.fast_checkpoint = fast;
        self
    }

    /// The read timeout while data flows, and the wait for the start
    /// (checkpoint).
    pub fn with_timeouts(mut self, read: Duration, start: Duration) -> BaseBackupOptions {
        self.read_timeout = read;
        self.start_timeout = start;
        self
    }

    /// Whether the server waits for the backup's last WAL segment to be
    /// archived before it ends the backup (`WAIT`); see
    /// [`BaseBackupOptions::wait_for_wal_archive`]. `false` when the
    /// caller watches the archive itself, as `cairn pg backup` does.
    pub fn with_wait_for_wal_archive(mut self, wait: bool) -> BaseBackupOptions {
        self.wait_for_wal_archive = wait;
        self
    }

    /// The server's send rate limit in kB/s, or none.
    pub fn with_max_rate_kb(mut self, rate: Option<u32>) -> BaseBackupOptions {
        self.max_rate_kb = rate;
        self
    }
}

/// `server_version` as a number: "15.8 (Debian 15.8-1)" → 150008,
/// "16beta1" → 160000, "9.6.24" → 90624.
pub(super) fn parse_server_version(v: &str) -> Option<u32> {
    let token = v.split_whitespace().next()?;
    let mut parts = token.split('.');
    let num = |s: Option<&str>| -> Option<u32> {
        let digits: String = s?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let major = num(parts.next())?;
    if major >= 10 {
        Some(major * 10000 + num(parts.next()).unwrap_or(0))
    } else {
        Some(major * 10000 + num(parts.next()).unwrap_or(0) * 100 + num(parts.next()).unwrap_or(0))
    }
}

/// `s` as a single-quoted literal of the replication grammar, where a quote
/// is doubled and a backslash is an ordinary character.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The `BASE_BACKUP` command in the syntax `version` understands.
pub(super) fn base_backup_command(opts: &BaseBackupOptions, version: u32) -> String {
    let new = version >= NEW_PROTOCOL_VERSION;
    let mut o: Vec<String> = vec![format!("LABEL {}", quote(&opts.label))];
    if opts.progress {
        o.push("PROGRESS".into());
    }
    if opts.fast_checkpoint {
        o.push(if new { "CHECKPOINT 'fast'".into() } else { "FAST".into() });
    }
    if new {
        o.push(format!("WAIT {}", opts.wait_for_wal_archive));
    } else if !opts.wait_for_wal_archive {
        o.push("NOWAIT".into());
    }
    if let Some(rate) = opts.max_rate_kb {
        o.push(format!("MAX_RATE {rate}"));
    }
    if opts.tablespace_map {
        o.push("TABLESPACE_MAP".into());
    }
    if !opts.verify_checksums {
        o.push(if new { "VERIFY_CHECKSUMS false".into() } else { "NOVERIFY_CHECKSUMS".into() });
    }
    if opts.manifest {
        o.push("MANIFEST 'yes'".into());
        o.push(format!("MANIFEST_CHECKSUMS '{}'", opts.manifest_checksums.keyword()));
    } else {
        o.push("MANIFEST 'no'".into());
    }
    if new {
        format!("BASE_BACKUP ({})", o.join(", "))
    } else {
        format!("BASE_BACKUP {}", o.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(parse_server_version("15.8 (Debian 15.8-1.pgdg120+1)"), Some(150008));
        assert_eq!(parse_server_version("16beta1"), Some(160000));
        assert_eq!(parse_server_version("13.0"), Some(130000));
        assert_eq!(parse_server_version("9.6.24"), Some(90624));
        assert_eq!(parse_server_version(""), None);
    }

    #[test]
    fn commands_in_both_syntaxes() {
        let opts = BaseBackupOptions { label: "it's".into(), fast_checkpoint: true, ..Default::default() };
        assert_eq!(
            base_backup_command(&opts, 150004),
            "BASE_BACKUP (LABEL 'it''s', PROGRESS, CHECKPOINT 'fast', WAIT true, TABLESPACE_MAP, MANIFEST 'yes', \
             MANIFEST_CHECKSUMS 'CRC32C')"
        );
        let opts = BaseBackupOptions {
            wait_for_wal_archive: false,
            verify_checksums: false,
            max_rate_kb: Some(1024),
            manifest_checksums: ManifestChecksums::Sha256,
            ..Default::default()
        };
        assert_eq!(
            base_backup_command(&opts, 140010),
            "BASE_BACKUP LABEL 'cairn base backup' PROGRESS NOWAIT MAX_RATE 1024 TABLESPACE_MAP NOVERIFY_CHECKSUMS \
             MANIFEST 'yes' MANIFEST_CHECKSUMS 'SHA256'"
        );
    }
}
