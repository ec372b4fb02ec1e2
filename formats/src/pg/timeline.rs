//! Timeline history files (`TTTTTTTT.history`).
//!
//! When a server is promoted it starts a new timeline and writes a history
//! file naming every ancestor timeline and the LSN where each one was left.
//! Recovery follows these files to decide which segment name (which
//! timeline) holds the WAL for a given LSN, so cairn parses them to answer
//! "what can I restore to" per timeline. Each line is
//!
//! ```text
//! <parent tli, decimal><TAB><switchpoint X/Y><TAB><reason>
//! ```
//!
//! and, as in PostgreSQL's `readTimeLineHistory`, blank lines and lines
//! whose first non-blank character is `#` are ignored, timeline ids must
//! increase, and every id must be below the timeline the file belongs to.

use super::Lsn;

/// One ancestor timeline in a history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistoryEntry {
    /// The ancestor timeline.
    pub timeline: u32,
    /// Where WAL left that timeline: the first LSN of the next one.
    pub switchpoint: Lsn,
    /// The free-text reason PostgreSQL recorded (for example "no recovery
    /// target specified"), without the separating tab; empty if absent.
    pub reason: String,
}

/// Why a history file was rejected; `line` is 1-based, as an editor shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineHistoryError {
    /// A line does not have the `tli<TAB>X/Y<TAB>reason` shape.
    #[error("timeline history line {line}: {reason}: {text:?}")]
    Syntax {
        /// The line number.
        line: usize,
        /// What was expected.
        reason: &'static str,
        /// The line as found (lossily decoded).
        text: String,
    },
    /// Timeline ids do not increase from one line to the next.
    #[error("timeline history line {line}: timeline {got} does not follow timeline {previous} (ids must increase)")]
    NotIncreasing {
        /// The line number.
        line: usize,
        /// The previous line's timeline.
        previous: u32,
        /// This line's timeline.
        got: u32,
    },
    /// A switchpoint lies before the previous line's switchpoint.
    #[error("timeline history line {line}: switchpoint {got} is before the previous switchpoint {previous}")]
    SwitchpointBackwards {
        /// The line number.
        line: usize,
        /// The previous line's switchpoint.
        previous: Lsn,
        /// This line's switchpoint.
        got: Lsn,
    },
    /// An entry names a timeline at or after the file's own.
    #[error("timeline history line {line}: timeline {got} is not below the file's timeline {file_timeline}")]
    NotAncestor {
        /// The line number.
        line: usize,
        /// The entry's timeline.
        got: u32,
        /// The timeline the history file belongs to.
        file_timeline: u32,
    },
}

/// Parses a history file's bytes. `file_timeline` is the timeline from the
/// file's name (`00000003.history` → 3), when known; every entry must be an
/// ancestor of it.
pub fn parse_timeline_history(
    text: &[u8],
    file_timeline: Option<u32>,
) -> Result<Vec<TimelineHistoryEntry>, TimelineHistoryError> {
    let mut entries: Vec<TimelineHistoryEntry> = Vec::new();
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let trimmed = trim_start(raw);
        if trimmed.is_empty() || trimmed.first() == Some(&b'#') {
            continue;
        }
        let entry = parse_line(trimmed, line)?;
        if let Some(prev) = entries.last() {
            if entry.timeline <= prev.timeline {
                return Err(TimelineHistoryError::NotIncreasing { line, previous: prev.timeline, got: entry.timeline });
            }
            if entry.switchpoint < prev.switchpoint {
                return Err(TimelineHistoryError::SwitchpointBackwards {
                    line,
                    previous: prev.switchpoint,
                    got: entry.switchpoint,
                });
            }
        }
        if let Some(file_timeline) = file_timeline.filter(|&t| entry.timeline >= t) {
            return Err(TimelineHistoryError::NotAncestor { line, got: entry.timeline, file_timeline });
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    s.get(start..).unwrap_or(&[])
}

/// Parses one non-comment line (leading blanks already removed).
fn parse_line(s: &[u8], line: usize) -> Result<TimelineHistoryEntry, TimelineHistoryError> {
    let syntax = |reason| TimelineHistoryError::Syntax { line, reason, text: String::from_utf8_lossy(s).into_owned() };
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let timeline = std::str::from_utf8(s.get(..digits).unwrap_or(&[]))
        .ok()
        .and_then(|d| d.parse::<u32>().ok())
        .ok_or_else(|| syntax("expected a numeric timeline id"))?;
    let rest = s.get(digits..).unwrap_or(&[]);
    let after_tli = trim_start(rest);
    if after_tli.len() == rest.len() {
        return Err(syntax("expected whitespace after the timeline id"));
    }
    let lsn_len = after_tli.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(after_tli.len());
    let switchpoint = std::str::from_utf8(after_tli.get(..lsn_len).unwrap_or(&[]))
        .ok()
        .and_then(|t| t.parse::<Lsn>().ok())
        .ok_or_else(|| syntax("expected a switchpoint location X/Y"))?;
    let tail = after_tli.get(lsn_len..).unwrap_or(&[]);
    // The writer puts exactly one tab before the reason; keep the rest as is.
    let reason = tail.strip_prefix(b"\t").unwrap_or(tail);
    Ok(TimelineHistoryEntry { timeline, switchpoint, reason: String::from_utf8_lossy(reason).into_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_postgres_writes() {
        let text =
            b"1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tbefore 2024-01-01 00:00:00+00\n";
        let entries = parse_timeline_history(text, Some(3)).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].timeline, 1);
        assert_eq!(entries[0].switchpoint, Lsn(0x300_0158));
        assert_eq!(entries[0].reason, "no recovery target specified");
        assert_eq!(entries[1].reason, "before 2024-01-01 00:00:00+00");
    }

    #[test]
    fn rejects_with_line_numbers() {
        let err = parse_timeline_history(b"1\t0/1\tx\n\n1\t0/2\ty\n", None).unwrap_err();
        assert_eq!(err, TimelineHistoryError::NotIncreasing { line: 3, previous: 1, got: 1 });
        let err = parse_timeline_history(b"x\t0/1\n", None).unwrap_err();
        assert!(matches!(err, TimelineHistoryError::Syntax { line: 1, .. }));
        let err = parse_timeline_history(b"1\tzz\n", None).unwrap_err();
        assert!(err.to_string().contains("line 1"));
        let err = parse_timeline_history(b"1\t0/1\n2\t0/2\n", Some(2)).unwrap_err();
        assert!(matches!(err, TimelineHistoryError::NotAncestor { line: 2, got: 2, .. }));
    }
}
