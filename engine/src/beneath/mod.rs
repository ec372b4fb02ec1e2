//! [`Beneath`]: everything a restore writes goes through a handle on its
//! target directory, by relative paths resolved one component at a time
//! without following symbolic links.
//!
//! A restore runs as root on the machine it protects and writes what a
//! snapshot holds, so neither the snapshot nor whatever already sits in the
//! target may steer a write elsewhere: a member `a -> /etc` followed by
//! `a/passwd`, a planted `.x.cairn-partial -> /etc/shadow`, a directory
//! replaced by a link between two steps. Each intermediate directory is
//! opened `O_DIRECTORY | O_NOFOLLOW` relative to its parent's handle (a
//! symbolic link there is an error, never a detour); files are created
//! `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, under an unpredictable name
//! and renamed into place; owner, mode and times are set on the open
//! handle (`fchown`, `fchmod`, `futimens`) or, for a link itself, with
//! `AT_SYMLINK_NOFOLLOW`. New directories are created 0700 and keep that
//! mode until the caller applies the real one at the end, so a restore
//! that fails half-way leaves nothing readable by others.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::{Error, Result};

mod group;
pub use group::GroupCommit;

/// Owner, permission bits and modification time to give a restored item,
/// already filtered by the caller's policy (setuid bits, ownership).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Owner and group, or `None` to leave them as created.
    pub owner: Option<(u32, u32)>,
    /// Modification time (Unix seconds, nanoseconds), also used as access time.
    pub mtime: Option<(i64, u32)>,
}

/// A handle on a restore's target directory.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
    shown: PathBuf,
}

/// A file being written under a temporary name in its directory; it takes
/// its real name only in [`Partial::commit`].
#[derive(Debug)]
pub struct Partial {
    dir: OwnedFd,
    tmp: Vec<u8>,
    name: Vec<u8>,
    shown: PathBuf,
}

fn io(path: &Path, e: Errno) -> Error {
    Error::io(path, std::io::Error::from(e))
}

/// The components of a relative member path; `..`, a root or a prefix is refused.
fn components(rel: &str) -> Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(Error::Refused {
                    what: rel.to_string(),
                    detail: "the path leaves the target directory".into(),
                })
            }
        }
    }
    Ok(out)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Beneath {
    /// Opens the target directory, creating it (and missing parents) with
    /// mode 0700 first. The target path itself is the operator's and is
    /// resolved normally; nothing beneath it is.
    pub fn open(root: &Path) -> Result<Beneath> {
        if !root.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(|e| Error::io(root, e))?;
        }
        let fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io(root, e))?;
        Ok(Beneath { root: fd, shown: root.to_path_buf() })
    }

    /// The path a member will have, for messages.
    pub fn shown(&self, rel: &str) -> PathBuf {
        let c = components(rel).unwrap_or_default();
        c.iter().fold(self.shown.clone(), |p, n| p.join(n))
    }

    /// Opens directory `rel` (the target itself for `""`), creating missing
    /// directories with mode 0700 when `create`. A symbolic link or a
    /// non-directory anywhere on the way is refused.
    pub fn dir(&self, rel: &str, create: bool) -> Result<OwnedFd> {
        let parts = components(rel)?;
        let mut cur = rustix::io::dup(&self.root).map_err(|e| io(&self.shown, e))?;
        let mut shown = self.shown.clone();
        for n in parts {
            shown.push(n);
            cur = match rustix::fs::openat(&cur, n, dir_flags(), Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, n, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io(&shown, e)),
                    }
                    rustix::fs::openat(&cur, n, dir_flags(), Mode::empty()).map_err(|e| refuse_or(&shown, e))?
                }
                Err(e) => return Err(refuse_or(&shown, e)),
            };
        }
        Ok(cur)
    }

    /// The directory holding `rel` (created when `create`) and `rel`'s last
    /// component.
    fn parent<'a>(&self, rel: &'a str, create: bool) -> Result<(OwnedFd, &'a OsStr)> {
        let parts = components(rel)?;
        let Some((name, _)) = parts.split_last() else {
            return Err(Error::Refused { what: rel.to_string(), detail: "an empty name".into() });
        };
        let parent = Path::new(rel).parent().and_then(Path::to_str).unwrap_or("");
        let name: &'a OsStr = name;
        Ok((self.dir(parent, create)?, name))
    }

    /// Creates a file that becomes `rel` on [`Partial::commit`]: written
    /// under `.cairn-<random>.partial` in the same directory, created
    /// exclusively, not following links, mode 0600.
    pub fn create(&self, rel: &str) -> Result<(Partial, File)> {
        let (dir, name) = self.parent(rel, true)?;
        let shown = self.shown(rel);
        for _ in 0..8 {
            let tmp = format!(".cairn-{:016x}.partial", rand::random::<u64>()).into_bytes();
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(&dir, OsStr::from_bytes(&tmp), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    let p = Partial { dir, tmp, name: name.as_bytes().to_vec(), shown };
                    return Ok((p, File::from(fd)));
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(io(&shown, e)),
            }
        }
        Err(Error::io(&shown, std::io::Error::other("could not pick a temporary name")))
    }

    /// Writes a small file whole (fsynced, renamed into place, directory
    /// fsynced), with `meta` applied on its handle.
    pub fn write(&self, rel: &str, bytes: &[u8], meta: Option<&Meta>) -> Result<()> {
        let (p, mut f) = self.create(rel)?;
        if let Err(e) = std::io::Write::write_all(&mut f, bytes) {
            p.abandon();
            return Err(Error::io(self.shown(rel), e));
        }
        p.commit(f, meta)
    }

    /// Opens regular file `rel` for reading, or `None` if it does not exist.
    pub fn read_file(&self, rel: &str) -> Result<Option<File>> {
        let (dir, name) = match self.parent(rel, false) {
            Ok(p) => p,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let shown = self.shown(rel);
        match rustix::fs::openat(&dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(|e| io(&shown, e))?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
                    return Err(Error::Refused {
                        what: shown.display().to_string(),
                        detail: "not a regular file".into(),
                    });
                }
                Ok(Some(File::from(fd)))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(refuse_or(&shown, e)),
        }
    }

    /// Creates symbolic link `rel` pointing at `target` (which is stored,
    /// never followed), replacing a non-directory of that name.
    pub fn symlink(&self, rel: &str, target: &str, meta: &Meta) -> Result<()> {
        let (dir, name) = self.parent(rel, true)?;
        let shown = self.shown(rel);
        remove_non_dir(&dir, name, &shown)?;
        rustix::fs::symlinkat(target, &dir, name).map_err(|e| io(&shown, e))?;
        if let Some((u, g)) = meta.owner {
            rustix::fs::chownat(&dir, name, Some(uid(u)), Some(gid(g)), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io(&shown, e))?;
        }
        if let Some(t) = meta.mtime {
            rustix::fs::utimensat(&dir, name, &times(t), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io(&shown, e))?;
        }
        Ok(())
    }

    /// Makes `rel` a hard link to the already restored `existing` (a link
    /// named `existing` is linked itself, not followed).
    pub fn hard_link(&self, existing: &str, rel: &str) -> Result<()> {
        let (sdir, sname) = self.parent(existing, false)?;
        let (dir, name) = self.parent(rel, true)?;
        let shown = self.shown(rel);
        remove_non_dir(&dir, name, &shown)?;
        rustix::fs::linkat(&sdir, sname, &dir, name, AtFlags::empty()).map_err(|e| io(&shown, e))
    }

    /// Applies `meta` to directory `rel` (`""`: the target itself).
    pub fn set_dir_meta(&self, rel: &str, meta: &Meta) -> Result<()> {
        let fd = self.dir(rel, false)?;
        apply(fd.as_fd(), meta, &self.shown(rel))
    }

    /// Applies `meta` to regular file `rel`.
    pub fn set_file_meta(&self, rel: &str, meta: &Meta) -> Result<()> {
        let Some(f) = self.read_file(rel)? else {
            return Err(Error::io(self.shown(rel), std::io::Error::from(std::io::ErrorKind::NotFound)));
        };
        apply(f.as_fd(), meta, &self.shown(rel))
    }
}

/// A symbolic link met on the way is a refusal, named as such.
fn refuse_or(shown: &Path, e: Errno) -> Error {
    match e {
        Errno::LOOP | Errno::NOTDIR => Error::Refused {
            what: shown.display().to_string(),
            detail: "is a symbolic link or not a directory; restores never follow links".into(),
        },
        e => io(shown, e),
    }
}

fn remove_non_dir(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io(shown, e)),
    }
}

fn uid(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}

fn gid(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

fn times((s, ns): (i64, u32)) -> Timestamps {
    let t = Timespec { tv_sec: s, tv_nsec: ns.into() };
    Timestamps { last_access: t, last_modification: t }
}

/// Owner first (a chown clears setuid bits), then mode, then times.
fn apply(fd: BorrowedFd<'_>, meta: &Meta, shown: &Path) -> Result<()> {
    if let Some((u, g)) = meta.owner {
        rustix::fs::fchown(fd, Some(uid(u)), Some(gid(g))).map_err(|e| io(shown, e))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode & 0o7777)).map_err(|e| io(shown, e))?;
    if let Some(t) = meta.mtime {
        rustix::fs::futimens(fd, &times(t)).map_err(|e| io(shown, e))?;
    }
    Ok(())
}

impl Partial {
    /// The path the file will have, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Fsyncs `file`, applies `meta` on its handle, renames it into place
    /// (replacing a file or link of that name, never following it) and
    /// fsyncs the directory.
    pub fn commit(self, file: File, meta: Option<&Meta>) -> Result<()> {
        if let Err(e) = self.sync(&file, meta) {
            self.abandon();
            return Err(e);
        }
        drop(file);
        let shown = self.shown.clone();
        let dir = self.rename()?;
        rustix::fs::fsync(&dir).map_err(|e| io(&shown, e))
    }

    /// The first half of [`Partial::commit`]: applies `meta` on the handle
    /// and fsyncs the file. The caller abandons the partial on an error.
    pub fn sync(&self, file: &File, meta: Option<&Meta>) -> Result<()> {
        if let Some(m) = meta {
            apply(file.as_fd(), m, &self.shown)?;
        }
        file.sync_all().map_err(|e| Error::io(&self.shown, e))
    }

    /// The second half: renames the synced file into place and returns its
    /// directory, which the caller fsyncs (once for many files). On an
    /// error the temporary file is removed.
    pub fn rename(self) -> Result<OwnedFd> {
        let r = rustix::fs::renameat(&self.dir, OsStr::from_bytes(&self.tmp), &self.dir, OsStr::from_bytes(&self.name));
        match r {
            Ok(()) => Ok(self.dir),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.dir, OsStr::from_bytes(&self.tmp), AtFlags::empty());
                Err(io(&self.shown, e))
            }
        }
    }

    /// Removes the temporary file after a failure.
    pub fn abandon(self) {
        let _ = rustix::fs::unlinkat(&self.dir, OsStr::from_bytes(&self.tmp), AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_link_on_the_way_is_refused_and_nothing_outside_changes() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("a")).unwrap();
        let b = Beneath::open(&target).unwrap();
        assert!(matches!(b.create("a/passwd"), Err(Error::Refused { .. })));
        assert!(matches!(b.dir("a/x", true), Err(Error::Refused { .. })));
        assert!(matches!(
            b.set_dir_meta("a", &Meta { mode: 0o777, owner: None, mtime: None }),
            Err(Error::Refused { .. })
        ));
        assert!(matches!(b.read_file("a"), Err(Error::Refused { .. })));
        assert!(matches!(b.create("../x"), Err(Error::Refused { .. })));
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn a_file_replaces_a_planted_link_instead_of_writing_through_it() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let target = t.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&victim, target.join("x")).unwrap();
        std::os::unix::fs::symlink(&victim, target.join(".x.cairn-partial")).unwrap();
        let b = Beneath::open(&target).unwrap();
        b.write("x", b"new", Some(&Meta { mode: 0o4755, owner: None, mtime: Some((1_000_000, 5)) })).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        let m = std::fs::symlink_metadata(target.join("x")).unwrap();
        assert!(m.is_file());
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777, 0o644);
        // Links are made and replaced without being followed.
        b.symlink("x", "/etc/shadow", &Meta { mode: 0o777, owner: None, mtime: None }).unwrap();
        b.hard_link("x", "y").unwrap();
        assert!(std::fs::symlink_metadata(target.join("y")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn new_directories_and_files_are_private_until_their_mode_is_applied() {
        let t = tempfile::tempdir().unwrap();
        let b = Beneath::open(&t.path().join("r")).unwrap();
        let (p, f) = b.create("d/e/f").unwrap();
        let tmp_mode = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(tmp_mode, 0o600);
        assert_eq!(std::fs::metadata(t.path().join("r/d/e")).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(t.path().join("r")).unwrap().permissions().mode() & 0o777, 0o700);
        p.commit(f, None).unwrap();
        b.set_dir_meta("d", &Meta { mode: 0o755, owner: None, mtime: None }).unwrap();
        assert_eq!(std::fs::metadata(t.path().join("r/d")).unwrap().permissions().mode() & 0o777, 0o755);
    }
}
