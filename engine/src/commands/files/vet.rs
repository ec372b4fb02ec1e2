//! Vetting a snapshot's file list before anything is extracted: every
//! member that could make a restore act outside its target, or act twice
//! on one name, is listed, and the restore refuses to start.
//!
//! [`crate::beneath::Beneath`] already makes it impossible to write through
//! a link at run time; vetting turns that last line of defence into a clear
//! refusal that names every hostile member up front, so a restore never
//! stops half-way through a hostile archive.

use std::collections::HashMap;
use std::path::{Component, Path};

use serde::Serialize;

use super::layout::{normalize, FileInfo, Layout};
use crate::snapshot::FileKind;

/// A member a restore will not extract, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refusal {
    /// The member's path as the snapshot names it.
    pub path: String,
    /// Why it is refused.
    pub why: String,
}

/// Which symbolic links a restore accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkRule {
    /// Any symbolic link (it is created, never followed).
    #[default]
    Any,
    /// Only `pg_tblspc/<oid>`: a PostgreSQL data directory has no others.
    PgTablespaces,
}

impl LinkRule {
    fn allows(self, path: &str) -> bool {
        match self {
            LinkRule::Any => true,
            LinkRule::PgTablespaces => path
                .strip_prefix("pg_tblspc/")
                .is_some_and(|oid| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit())),
        }
    }
}

fn leaves(path: &str) -> bool {
    Path::new(path).components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_)))
}

impl Layout {
    /// Every reason not to extract `chosen` (members of this layout).
    pub fn vet(&self, chosen: &[&FileInfo], links: LinkRule) -> Vec<Refusal> {
        let mut out = Vec::new();
        let mut refuse = |f: &FileInfo, why: String| out.push(Refusal { path: f.path.clone(), why });
        // Position and kind of each path in the whole snapshot.
        let mut first: HashMap<&str, (usize, FileKind)> = HashMap::new();
        for (i, f) in self.files.iter().enumerate() {
            first.entry(f.path.as_str()).or_insert((i, f.kind));
        }
        let at: HashMap<*const FileInfo, usize> =
            self.files.iter().enumerate().map(|(i, f)| (f as *const FileInfo, i)).collect();
        let mut seen: HashMap<&str, FileKind> = HashMap::new();
        for f in chosen {
            if f.absolute {
                refuse(f, "an absolute path".into());
            }
            if leaves(&f.path) {
                refuse(f, "the path climbs out with `..`".into());
                continue;
            }
            if f.path.is_empty() && f.kind != FileKind::Dir {
                refuse(f, format!("a {} named like the target directory itself", f.kind));
            }
            if let Some(k) = seen.insert(f.path.as_str(), f.kind) {
                if !(k == FileKind::Dir && f.kind == FileKind::Dir) {
                    refuse(f, format!("a second member with this path (a {k} came first)"));
                }
            }
            let mut prefix = Path::new(&f.path).parent();
            while let Some(p) = prefix.and_then(Path::to_str).filter(|p| !p.is_empty()) {
                if let Some((_, k)) = first.get(p).filter(|(_, k)| *k != FileKind::Dir) {
                    refuse(f, format!("its parent {p:?} is a {k} in the snapshot; restores never write through one"));
                    break;
                }
                prefix = Path::new(p).parent();
            }
            match f.kind {
                FileKind::Symlink if !links.allows(&f.path) => {
                    refuse(f, "a symbolic link where this kind of restore allows none".into())
                }
                FileKind::Hardlink => {
                    let t = normalize(f.target.as_deref().unwrap_or_default());
                    let here = at.get(&(*f as *const FileInfo)).copied().unwrap_or(usize::MAX);
                    match first.get(t.as_str()) {
                        _ if t.is_empty() || leaves(&t) => {
                            refuse(f, format!("a hard link to {t:?}, outside the snapshot"))
                        }
                        Some((i, FileKind::File)) if *i < here => {}
                        Some((_, k)) => refuse(f, format!("a hard link to {t:?}, a {k} or a later member")),
                        None => refuse(f, format!("a hard link to {t:?}, which is not a member of the snapshot")),
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// The refusals as one message (the first few, and how many more).
pub fn describe(refusals: &[Refusal]) -> String {
    let mut s: Vec<String> = refusals.iter().take(8).map(|r| format!("{:?}: {}", r.path, r.why)).collect();
    if refusals.len() > 8 {
        s.push(format!("and {} more", refusals.len() - 8));
    }
    s.join("; ")
}
