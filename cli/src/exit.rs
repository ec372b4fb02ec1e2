//! Exit codes. These are a contract with scripts; README.md lists them.

use cairn_engine::Error;

/// Success.
pub const OK: i32 = 0;
/// Any failure not listed below.
pub const FAILURE: i32 = 1;
// 2 is clap's usage error.
/// Wrong password or key, or none given.
pub const WRONG_KEY: i32 = 3;
/// The repository, snapshot or object does not exist.
pub const NOT_FOUND: i32 = 4;
/// Stored data is corrupt or `check` found problems.
pub const CORRUPT: i32 = 5;
/// The local index is locked by another cairn process.
pub const BUSY: i32 = 6;
/// The input was not read to a clean end (producer failed, read error).
pub const INPUT: i32 = 7;

/// Refused: conflicts with what the repository holds.
pub const CONFLICT: i32 = 8;

/// Fenced out: this writer's lease was broken by garbage collection, and
/// what it wrote was withdrawn.
pub const FENCED: i32 = 9;

/// Refused to restore: the snapshot holds members that would act outside
/// the target, or the target holds links in the way; nothing was written
/// outside it.
pub const REFUSED: i32 = 10;

/// `status`: an objective (RPO, RTO, a drill) does not hold.
pub const OBJECTIVE_MISSED: i32 = 11;

/// PostgreSQL's WAL archiving does not work: `pg check` saw no segment
/// arrive, or a base backup stopped because archive_command fails.
pub const ARCHIVING: i32 = 12;

/// `wal push`: the file is in the primary repository, but a copy of the
/// archive (`[stanzas.NAME] copies`) has been unreachable for longer than
/// its lag budget, so PostgreSQL must keep the WAL and retry.
pub const COPY_BEHIND: i32 = 13;

/// What usually makes archive_command fail, for [`Error::ArchiverFailing`].
pub const ARCHIVER_HINT: &str = "archive_command's own error is in the server's log; run it by hand as the \
     server's user to see it. `cairn wal push` needs a key file (CAIRN_KEY_FILE, --key-file or key_file in \
     --config; make one with `cairn key add --new-key-file FILE`): with only a password it refuses every segment";

/// The exit code for an error.
pub fn code_for(e: &anyhow::Error) -> i32 {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::BrokenPipe {
            return OK;
        }
    }
    match e.downcast_ref::<Error>() {
        Some(Error::WrongKey { .. } | Error::NoKey) => WRONG_KEY,
        Some(Error::NotFound { .. }) => NOT_FOUND,
        Some(Error::Corrupt { .. } | Error::CheckFailed(_)) => CORRUPT,
        Some(Error::IndexBusy { .. }) => BUSY,
        Some(Error::Conflict { .. }) => CONFLICT,
        Some(Error::LeaseLost { .. }) => FENCED,
        Some(Error::Refused { .. }) => REFUSED,
        Some(Error::ArchiverFailing { .. }) => ARCHIVING,
        Some(Error::CopyBehind { .. }) => COPY_BEHIND,
        Some(Error::ProducerFailed { .. } | Error::Input { .. }) => INPUT,
        Some(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => OK,
        _ => FAILURE,
    }
}

/// Prints the error (unless it is a quiet broken pipe) and returns its code.
pub fn report(e: &anyhow::Error, json: bool) -> i32 {
    let code = code_for(e);
    if code == OK {
        return OK;
    }
    // Engine errors already print their source; skip links that repeat.
    let mut chain: Vec<String> = Vec::new();
    for c in e.chain() {
        let m = c.to_string();
        if !chain.last().is_some_and(|p| p.contains(&m)) {
            chain.push(m);
        }
    }
    let hint = permission_hint(e).or_else(|| flag_hint(e));
    if json {
        let mut v = serde_json::json!({ "error": chain.join(": "), "exit_code": code });
        if let Some(h) = &hint {
            v["hint"] = h.clone().into();
        }
        eprintln!("{v}");
    } else {
        eprintln!("cairn: error: {}", chain.join(": "));
        if let Some(h) = &hint {
            eprintln!("cairn: hint: {h}");
        }
    }
    code
}

/// The options that address an engine error (the engine's messages never
/// name flags).
fn flag_hint(e: &anyhow::Error) -> Option<String> {
    let hint = match e.downcast_ref::<Error>()? {
        Error::ArchiverFailing { archive_command: Some(c), .. } if !c.contains("wal push") => {
            return Some(format!(
                "archive_command is {c:?}, which does not run `cairn wal push`; archive with \
                 `cairn wal push --stanza S %p` (and a key file) into this repository"
            ))
        }
        Error::ArchiverFailing { .. } => ARCHIVER_HINT,
        Error::NoKey => "set CAIRN_PASSWORD_FILE or CAIRN_KEY_FILE (or --password-file / --key-file)",
        Error::IndexBusy { .. } => "retry later or raise --lock-timeout",
        Error::UnknownStanza { .. } => "check --stanza (or `stanza` in the config file)",
        _ => return None,
    };
    Some(hint.to_string())
}

/// For a file or directory this user may not write (or read), EACCES: who
/// owns it. Inside a local repository the usual cause is one written by two
/// users, e.g. `cairn backup` as root and `archive_command` as the server's
/// user, and the hint says so.
fn permission_hint(e: &anyhow::Error) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let Some(Error::Io { path, source }) = e.downcast_ref::<Error>() else { return None };
    // Not EPERM (an immutable file, a capability): ownership is not the cause.
    if source.raw_os_error() != Some(libc::EACCES) {
        return None;
    }
    // The denied path may not exist yet (a directory being created): its
    // nearest existing ancestor is what refused.
    let (at, meta) = path.ancestors().find_map(|p| std::fs::metadata(p).ok().map(|m| (p, m)))?;
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    if meta.uid() == me {
        return Some(format!(
            "{} (mode {:o}) is this user's but not open to it; check its mode and its parents'",
            at.display(),
            meta.mode() & 0o7777
        ));
    }
    // A repository's root holds `config` and `keys/`.
    let in_repo = at.ancestors().any(|d| d.join("config").is_file() && d.join("keys").is_dir());
    let advice = if in_repo {
        "run every cairn command that writes to a local repository as one user (archive_command runs as the \
         PostgreSQL server's user), or give this user access"
    } else {
        "run cairn as that user, or give this user access"
    };
    Some(format!("{} belongs to {} and cairn runs as {}: {advice}", at.display(), user_name(meta.uid()), user_name(me)))
}

/// `name (uid N)` from /etc/passwd, or `uid N`.
fn user_name(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
    });
    match name {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(path: &std::path::Path, errno: i32) -> anyhow::Error {
        Error::Io { path: path.to_path_buf(), source: std::io::Error::from_raw_os_error(errno) }.into()
    }

    #[test]
    fn permission_hints_name_the_directory_that_refused() {
        let dir = std::env::temp_dir().join(format!("cairn-hint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A directory being created inside one of ours: ours refused.
        let hint = permission_hint(&io_error(&dir.join("packs/ab"), libc::EACCES)).unwrap();
        assert!(hint.starts_with(&format!("{} (mode ", dir.display())), "{hint}");
        assert!(hint.contains("is this user's but not open to it"), "{hint}");
        // Not a permission problem, or EPERM: no hint.
        assert_eq!(permission_hint(&io_error(&dir, libc::ENOSPC)), None);
        assert_eq!(permission_hint(&io_error(&dir, libc::EPERM)), None);
        assert_eq!(permission_hint(&anyhow::anyhow!("something else")), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(user_name(0), "root (uid 0)");
        assert_eq!(user_name(u32::MAX - 7), format!("uid {}", u32::MAX - 7));
    }

    #[test]
    fn flag_hints_name_the_options_that_help() {
        let busy = Error::IndexBusy { path: "/x".into(), waited_s: 1 }.into();
        assert_eq!(flag_hint(&busy).as_deref(), Some("retry later or raise --lock-timeout"));
        assert!(flag_hint(&Error::NoKey.into()).unwrap().contains("--key-file"));
        assert_eq!(flag_hint(&Error::NotFound { what: "x".into() }.into()), None);
        let failing = |cmd: Option<&str>| -> anyhow::Error {
            Error::ArchiverFailing {
                server: "s".into(),
                detail: "d".into(),
                last_failed_wal: None,
                last_failed_time: None,
                archive_command: cmd.map(str::to_owned),
            }
            .into()
        };
        assert_eq!(code_for(&failing(None)), ARCHIVING);
        assert_eq!(flag_hint(&failing(None)).as_deref(), Some(ARCHIVER_HINT));
        assert_eq!(flag_hint(&failing(Some("cairn wal push %p"))).as_deref(), Some(ARCHIVER_HINT));
        assert!(flag_hint(&failing(Some("false"))).unwrap().contains("\"false\", which does not run"));
    }
}
