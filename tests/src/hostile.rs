//! Hand-built tar archives for hostile-input tests: members with `..`,
//! absolute names, links that lead out, duplicates — what every tar writer
//! worth using refuses to write.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Every path under `root` except `except` (and what is under it), with
/// its type, mode, owner, mtime, link target and content hash: compare
/// before and after a restore to show nothing outside its target changed.
pub fn tree_state(root: &Path, except: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p == except {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&p).unwrap().display())
        } else if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_string()
        } else {
            format!("file {}", blake3::hash(&std::fs::read(&p).unwrap()).to_hex())
        };
        out.push(format!("{} {what} {:o} {}:{} {}", p.display(), m.mode(), m.uid(), m.gid(), m.mtime()));
    }
    out.sort();
    out
}

/// One ustar member.
pub struct M<'a> {
    /// Name as written (at most 100 bytes).
    pub name: &'a str,
    /// Type flag: `b'0'` file, `b'1'` hard link, `b'2'` symlink, `b'3'` char device, `b'5'` directory.
    pub kind: u8,
    /// Mode bits, setuid included.
    pub mode: u32,
    /// Owner and group id.
    pub uid: u32,
    /// Content.
    pub body: &'a [u8],
    /// Link target.
    pub link: &'a str,
}

/// A regular file.
pub fn file<'a>(name: &'a str, body: &'a [u8]) -> M<'a> {
    M { name, kind: b'0', mode: 0o644, uid: 1000, body, link: "" }
}

/// A directory.
pub fn dir(name: &str, mode: u32) -> M<'_> {
    M { name, kind: b'5', mode, uid: 1000, body: b"", link: "" }
}

/// A symbolic link.
pub fn symlink<'a>(name: &'a str, to: &'a str) -> M<'a> {
    M { name, kind: b'2', mode: 0o777, uid: 1000, body: b"", link: to }
}

/// A hard link.
pub fn hardlink<'a>(name: &'a str, to: &'a str) -> M<'a> {
    M { name, kind: b'1', mode: 0o644, uid: 1000, body: b"", link: to }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}\0", v, w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// The member blocks of `members`, names and link targets written as given.
pub fn members(members: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut h = [0u8; 512];
        assert!(m.name.len() <= 100 && m.link.len() <= 100, "keep test names short");
        h[..m.name.len()].copy_from_slice(m.name.as_bytes());
        octal(&mut h[100..108], u64::from(m.mode));
        octal(&mut h[108..116], u64::from(m.uid));
        octal(&mut h[116..124], u64::from(m.uid));
        octal(&mut h[124..136], m.body.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = m.kind;
        h[157..157 + m.link.len()].copy_from_slice(m.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(m.body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out
}

/// A whole ustar archive of `ms`.
pub fn ustar(ms: &[M]) -> Vec<u8> {
    let mut out = members(ms);
    out.resize(out.len() + 1024, 0);
    out
}

/// `tar` (plain ustar/GNU members, octal sizes) with `ms` inserted
/// before its end-of-archive blocks.
pub fn append(tar: &[u8], ms: &[M]) -> Vec<u8> {
    let mut pos = 0;
    while pos + 512 <= tar.len() && tar[pos..pos + 512].iter().any(|&b| b != 0) {
        let field = std::str::from_utf8(&tar[pos + 124..pos + 136]).unwrap();
        let size = u64::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap();
        pos += 512 + (size as usize).div_ceil(512) * 512;
    }
    let mut out = tar[..pos].to_vec();
    out.extend(members(ms));
    out.resize(out.len() + 1024, 0);
    out
}
