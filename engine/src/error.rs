//! The engine's error type.
//!
//! Variants are named for what went wrong, not for the library that noticed,
//! so the CLI can map them to documented exit codes and scripts can rely on
//! them. Every variant that concerns stored data names the object.

use std::path::PathBuf;

use thiserror::Error;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
///
/// Messages say what went wrong in the engine's terms; they never name a
/// command-line flag (the CLI adds such hints).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// No key slot opens with the given password or key file.
    #[error("wrong password or key: none of the {slots} key slot(s) in the repository opens with it")]
    WrongKey {
        /// Key slots tried.
        slots: usize,
    },
    /// A secret was needed and none was given.
    #[error("no key given")]
    NoKey,
    /// The object, snapshot or repository does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The object already exists with create-only semantics.
    #[error("already exists: {what}")]
    AlreadyExists {
        /// The object.
        what: String,
    },
    /// A conditional update found the object changed (or gone) since the
    /// version it named was read.
    #[error("changed meanwhile: {what}")]
    Precondition {
        /// The object.
        what: String,
    },
    /// This writer's lease was broken by garbage collection (it was paused
    /// or cut off for longer than the lease lasts): what it wrote may
    /// reference packs that were deleted, so it must not be acknowledged.
    #[error("lease {lease} lost: {detail}")]
    LeaseLost {
        /// The lease object.
        lease: String,
        /// What happened, and what was withdrawn.
        detail: String,
    },
    /// Stored bytes failed authentication, hashing or decoding.
    #[error("corrupt {object}{}: {detail}", offset.map(|o| format!(" at offset {o}")).unwrap_or_default())]
    Corrupt {
        /// The object key (e.g. `packs/ab/ab12…`).
        object: String,
        /// Byte offset inside the object, where known.
        offset: Option<u64>,
        /// What was expected and what was found.
        detail: String,
    },
    /// A structure has a version this build does not understand.
    #[error("{object}: unsupported format version {got} (this build reads {known}); upgrade cairn")]
    UnsupportedVersion {
        /// The object.
        object: String,
        /// Version found.
        got: u64,
        /// Version understood.
        known: u64,
    },
    /// The storage backend failed; `retryable` says whether trying again may help.
    #[error("storage error on {object}: {source}")]
    Storage {
        /// The object key or prefix.
        object: String,
        /// Whether the failure looked transient.
        retryable: bool,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the input stream failed.
    #[error("reading input at byte {offset}: {source}")]
    Input {
        /// Bytes read before the failure.
        offset: u64,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The producer command failed, so its output must not become a snapshot.
    #[error("producer command {command:?} {status}; no snapshot was written")]
    ProducerFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
    },
    /// The local index is held by another process for longer than we wait.
    #[error("the local index {path} is locked by another cairn process (waited {waited_s} s)")]
    IndexBusy {
        /// The index directory.
        path: PathBuf,
        /// Seconds waited.
        waited_s: u64,
    },
    /// The local index could not be used.
    #[error("local index {path}: {detail}")]
    Index {
        /// The index directory.
        path: PathBuf,
        /// RocksDB's message.
        detail: String,
    },
    /// The request contradicts what the repository already holds: different
    /// content under an archived WAL name, or WAL from another cluster. The
    /// stored data is left untouched.
    #[error("refused: {object}: {detail}")]
    Conflict {
        /// The object or file concerned.
        object: String,
        /// What differs.
        detail: String,
    },
    /// A restore refused to write something because it would act outside
    /// its target: a member path with `..` or through a symbolic link, a
    /// duplicate, a hard link to something that is not a member, a link
    /// planted in the target. Nothing outside the target was touched.
    #[error("refused {what}: {detail}")]
    Refused {
        /// The member or path.
        what: String,
        /// Why.
        detail: String,
    },
    /// The repository location or configuration is not usable (a TLS or
    /// connection setting, a repository URL, a key file).
    #[error("{0}")]
    Config(String),
    /// A request the engine cannot carry out as given: a name that is not a
    /// WAL file name, a target directory that is not empty, an ambiguous
    /// snapshot prefix, a path that leaves its target.
    #[error("{0}")]
    InvalidInput(String),
    /// A stanza that has archived nothing in this repository.
    #[error("stanza {stanza:?} has no archived WAL in {location}")]
    UnknownStanza {
        /// The stanza asked for.
        stanza: String,
        /// The repository (no credentials).
        location: String,
    },
    /// The operation stopped because another part of it failed first (that
    /// failure is the one reported).
    #[error("{0}")]
    Cancelled(String),
    /// A database server answered a request with an error (PostgreSQL's
    /// `ErrorResponse`), or reported one while it served it. The server's
    /// own words are kept, with its SQLSTATE.
    #[error("{server}: server error {sqlstate}: {message}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Server {
        /// The server (`host:port` or the socket path).
        server: String,
        /// The five-character SQLSTATE, e.g. `57P01`.
        sqlstate: String,
        /// The primary message.
        message: String,
        /// The server's detail line, if it sent one.
        detail: Option<String>,
    },
    /// A database server did not accept our credentials, or asked for a
    /// method we do not speak. Never carries the password.
    #[error("{server}: authentication failed: {detail}")]
    AuthFailed {
        /// The server.
        server: String,
        /// The SQLSTATE, when the server sent one (`28P01`: wrong password;
        /// `28000`: no `pg_hba.conf` entry allows us).
        sqlstate: Option<String>,
        /// What went wrong, in the server's words where it gave any.
        detail: String,
    },
    /// The connection to a database server could not be made or broke off
    /// (a transfer cut short is never a complete backup).
    #[error("{server}: {during}: {source}")]
    Connection {
        /// The server.
        server: String,
        /// What we were doing, e.g. `connecting` or `reading base.tar at byte 8192`.
        during: String,
        /// Whether trying again may help (refused, reset, timed out).
        retryable: bool,
        /// The OS or TLS error.
        #[source]
        source: std::io::Error,
    },
    /// A server sent something its protocol does not allow.
    #[error("{server}: protocol violation: {detail}")]
    Protocol {
        /// The server.
        server: String,
        /// What was expected and what arrived.
        detail: String,
    },
    /// PostgreSQL's WAL archiving does not deliver: `pg_stat_archiver`
    /// shows `archive_command` failing, or an awaited segment did not
    /// reach the stanza in time.
    #[error("{server}: WAL archiving does not work: {detail}")]
    ArchiverFailing {
        /// The server.
        server: String,
        /// What was awaited, and what the archiver reports.
        detail: String,
        /// The file `archive_command` last failed on, if it failed.
        last_failed_wal: Option<String>,
        /// When it failed (the server's clock).
        last_failed_time: Option<String>,
        /// The server's `archive_command`, when this role may read it.
        archive_command: Option<String>,
    },
    /// A copy of the WAL archive in another repository has been
    /// unreachable for longer than its lag budget: `wal push` fails so that
    /// PostgreSQL keeps the WAL and tries again.
    #[error(
        "the WAL copy {copy:?} has missed {files} file(s) of stanza {stanza:?} for {behind_s} s, longer than its \
         lag budget of {budget_s} s{}",
        last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    CopyBehind {
        /// The copy's name (`[repos.NAME]`).
        copy: String,
        /// The stanza.
        stanza: String,
        /// Files it lacks.
        files: u64,
        /// How long it has lacked the oldest of them.
        behind_s: u64,
        /// The budget.
        budget_s: u64,
        /// Why it could not be reached this time.
        last_error: Option<String>,
    },
    /// A bug or a failed task inside cairn (a worker that panicked or was
    /// cancelled), not a problem with the data or the request.
    #[error("internal error: {0}")]
    Internal(String),
    /// `check` found problems; details were reported.
    #[error("check found {0} problem(s)")]
    CheckFailed(usize),
    /// A restore drill showed the backup is not usable as it stands: the
    /// restore, the temporary server, or one of the checks failed.
    #[error("drill failed in {phase}: {reason}")]
    DrillFailed {
        /// The phase that failed (`restore`, `start`, `amcheck`, …).
        phase: String,
        /// What went wrong, with the server's log lines where there are any.
        reason: String,
    },
}

/// A read that ran into the socket's read timeout (`WouldBlock` on Unix,
/// `TimedOut` elsewhere) as a `TimedOut` error that says how long nothing
/// came; any other error unchanged.
pub(crate) fn read_timed_out(e: std::io::Error, waited: std::time::Duration) -> std::io::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("nothing received from the server for {waited:?} (read timeout)"),
        ),
        _ => e,
    }
}

impl Error {
    pub(crate) fn corrupt(object: impl Into<String>, offset: Option<u64>, detail: impl Into<String>) -> Self {
        Error::Corrupt { object: object.into(), offset, detail: detail.into() }
    }

    pub(crate) fn conflict(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Conflict { object: object.into(), detail: detail.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A connection to `server` that failed while `during`; refused,
    /// reset, cut short or timed out is worth a retry.
    pub(crate) fn connection(server: impl Into<String>, during: impl Into<String>, source: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let retryable = matches!(
            source.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::TimedOut
                | K::UnexpectedEof
                | K::BrokenPipe
                | K::Interrupted
                | K::NotFound
        );
        Error::Connection { server: server.into(), during: during.into(), retryable, source }
    }

    /// Maps a decode error from `cairn-formats` onto the object it came from.
    pub(crate) fn decode(object: impl Into<String>, e: cairn_formats::repo::RepoDecodeError) -> Self {
        use cairn_formats::repo::RepoDecodeError as D;
        let object = object.into();
        match e {
            D::UnknownVersion { got, known, .. } => {
                Error::UnsupportedVersion { object, got: got.into(), known: known.into() }
            }
            other => Error::corrupt(object, None, other.to_string()),
        }
    }

    /// True when another copy of the repository may have what this store
    /// could not give: the store was unreachable (storage, connection or
    /// local I/O error) or lacks the object. See [`crate::store::Fallback`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::NotFound { .. } | Error::Storage { .. } | Error::Connection { .. } | Error::Io { .. })
    }

    /// True when the failure may go away on retry (network, throttling).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Storage { retryable: true, .. }
                | Error::IndexBusy { .. }
                | Error::Connection { retryable: true, .. }
        )
    }
}
