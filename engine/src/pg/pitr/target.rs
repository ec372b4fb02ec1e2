//! Recovery targets in and out: a time as the user writes it, and the
//! `recovery_target_*` settings PostgreSQL reads. Kept apart from planning
//! because both ends speak someone else's format (RFC 3339 and
//! PostgreSQL's own timestamp syntax), and a mistake here moves the point
//! recovery stops at without any error.

use cairn_formats::pg::Lsn;

use super::{Action, Target};
use crate::{Error, Result};

/// A time for messages (RFC 3339, microseconds).
pub(super) fn time_text(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| us.to_string())
}

/// A time as PostgreSQL's settings take it (`YYYY-MM-DD HH:MM:SS.ffffff+00`).
fn pg_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// Parses an RFC 3339 time (or `YYYY-MM-DD HH:MM:SS[.frac][+TZ]`).
pub fn parse_time(s: &str) -> Result<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map_err(|e| {
            Error::InvalidInput(format!("target time {s:?}: {e} (use RFC 3339, e.g. 2026-11-25T10:00:00Z)"))
        })?;
    Ok(t.timestamp_micros())
}

/// The `postgresql.auto.conf` settings that make recovery stop at `target`.
pub(super) fn recovery_settings(
    target: &Target,
    tli: u32,
    action: Action,
    restore_command: &str,
) -> Vec<(String, String)> {
    let mut settings = vec![
        ("restore_command".to_string(), restore_command.to_string()),
        ("recovery_target_timeline".to_string(), tli.to_string()),
    ];
    match target {
        Target::Time(t) => settings.push(("recovery_target_time".into(), pg_time(*t))),
        Target::Lsn(l) => settings.push(("recovery_target_lsn".into(), Lsn(*l).to_string())),
        Target::Xid(x) => settings.push(("recovery_target_xid".into(), x.to_string())),
        Target::Name(n) => settings.push(("recovery_target_name".into(), n.clone())),
        Target::Latest => {}
    }
    if *target != Target::Latest {
        settings.push(("recovery_target_action".into(), action.conf().into()));
    }
    settings
}
