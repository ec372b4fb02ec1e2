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
    if json {
        let v = serde_json::json!({ "error": chain.join(": "), "exit_code": code });
        eprintln!("{v}");
    } else {
        eprintln!("cairn: error: {}", chain.join(": "));
    }
    code
}
