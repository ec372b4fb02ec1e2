//! [`Demux`]: a whole tar stream's bytes routed to the files its members
//! name, for [`super::Layout::extract`].

use std::io::Write;
use std::sync::Arc;

use crate::beneath::{Beneath, GroupCommit, Meta, Partial};
use crate::{Error, Result};

/// Routes a tar stream's bytes to the files its members name: a member's
/// data range, by stream offset, goes to its file; headers and padding go
/// nowhere. Files are created when their first byte arrives (empty files
/// at `finish`) under a temporary name, and take their name, owner, mode
/// and times once their last byte has been written and fsynced, in groups
/// ([`GroupCommit`]).
pub(super) struct Demux {
    pub(super) b: Arc<Beneath>,
    pub(super) files: Vec<(u64, u64, String, Meta)>,
    pub(super) next: usize,
    pub(super) pos: u64,
    pub(super) cur: Option<(Partial, std::fs::File, u64, usize)>,
    pub(super) commits: Option<GroupCommit>,
}

fn as_io(e: Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Write for Demux {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos + buf.len() as u64;
        let mut at = self.pos;
        while at < end {
            if self.cur.is_none() {
                while self.files.get(self.next).is_some_and(|(s, l, ..)| *l == 0 || s + l <= at) {
                    self.next += 1;
                }
                let Some((s, l, rel, _)) = self.files.get(self.next) else { break };
                if *s >= end {
                    break;
                }
                let (p, f) = self.b.create(rel).map_err(as_io)?;
                self.cur = Some((p, f, s + l, self.next));
                at = at.max(*s);
                self.next += 1;
            }
            let (p, f, fend, _) = self.cur.as_mut().expect("a file is open");
            let stop = (*fend).min(end);
            let piece = &buf[(at - self.pos) as usize..(stop - self.pos) as usize];
            f.write_all(piece).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.shown().display())))?;
            at = stop;
            if at == *fend {
                let (p, f, _, i) = self.cur.take().expect("open");
                self.commits().push(p, f, Some(self.files[i].3)).map_err(as_io)?;
            }
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Demux {
    fn drop(&mut self) {
        if let Some((p, ..)) = self.cur.take() {
            p.abandon();
        }
    }
}

impl Demux {
    fn commits(&self) -> &GroupCommit {
        self.commits.as_ref().expect("until finish")
    }

    /// Creates the empty files and waits for every file's commit; fails
    /// if a member's bytes never came.
    pub(super) fn finish(mut self) -> Result<()> {
        if let Some((p, _, _, _)) = self.cur.take() {
            let shown = p.shown().display().to_string();
            p.abandon();
            return Err(Error::corrupt(shown, Some(self.pos), "the tar stream ended inside this file"));
        }
        for (_, l, rel, meta) in &self.files {
            if *l == 0 {
                let (p, f) = self.b.create(rel)?;
                self.commits().push(p, f, Some(*meta))?;
            }
        }
        self.commits.take().expect("until finish").finish().map(drop)
    }
}
