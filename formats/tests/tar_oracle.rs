//! The tar parser checked against GNU tar: archives in `gnu`, `pax` and
//! `ustar` format are built from a directory with long names, long link
//! targets, non-ASCII names, fractional mtimes, big ids, links, a FIFO and a
//! device; every member's path, type, size, ids, mtime, link target and
//! header block must match `tar -R -tv`, every file's data range must hold
//! exactly that file's bytes, and feeding the archive in random slices must
//! give the same events as feeding it whole.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cairn_formats::tar::{EntryKind, TarEvent, TarMember, TarParser};
use proptest::prelude::*;

/// Panics with an install hint unless GNU tar runs.
fn require_gnu_tar() {
    let out = Command::new("tar").arg("--version").output();
    let ok = out.as_ref().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"));
    assert!(ok, "GNU tar is required by this oracle test; install it with `apt-get install -y tar`");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Fills `root` with the test tree; `portable` leaves out what ustar
/// cannot store (a 120-byte name component, a 150-byte link target, a uid
/// above 2097151).
fn build_tree(root: &Path, portable: bool) {
    let p = |rel: &str| root.join(rel);
    std::fs::create_dir_all(p("dir/sub")).unwrap();
    std::fs::write(p("dir/empty"), b"").unwrap();
    let mut x: u64 = 42;
    let data: Vec<u8> = (0..70_000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    std::fs::write(p("dir/data.bin"), &data).unwrap();
    std::fs::write(p("dir/café-ü.txt"), "non-ASCII name\n").unwrap();
    let deep = format!("{}/{}", "p".repeat(60), "q".repeat(60));
    std::fs::create_dir_all(p(&deep)).unwrap();
    std::fs::write(p(&format!("{deep}/r.txt")), b"deep path, split into ustar prefix and name\n").unwrap();
    symlink("dir/data.bin", p("link-short")).unwrap();
    std::fs::hard_link(p("dir/data.bin"), p("hard")).unwrap();
    run(Command::new("mkfifo").arg(p("fifo")));
    std::fs::write(p("dir/sub/fraction"), b"mtime with nanoseconds\n").unwrap();
    run(Command::new("touch").args(["-d", "2021-05-06 07:08:09.123456789"]).arg(p("dir/sub/fraction")));
    run(Command::new("touch").args(["-h", "-d", "1999-12-31 23:59:59"]).arg(p("link-short")));
    if !portable {
        std::fs::write(p(&format!("dir/{}", "n".repeat(120))), b"long name\n").unwrap();
        symlink("t".repeat(150), p("link-long")).unwrap();
        std::fs::write(p("bigid"), b"owned by a large uid\n").unwrap();
        run(Command::new("chown").args(["3000000:3000001"]).arg(p("bigid")));
    }
}

/// An archive and where its files came from.
struct Archive {
    format: &'static str,
    bytes: Vec<u8>,
    path: PathBuf,
    root: PathBuf,
}

fn archives() -> &'static Vec<Archive> {
    static ARCHIVES: OnceLock<(tempfile::TempDir, Vec<Archive>)> = OnceLock::new();
    &ARCHIVES
        .get_or_init(|| {
            require_gnu_tar();
            let dir = tempfile::tempdir().unwrap();
            let mut out = Vec::new();
            for (format, portable) in [("gnu", false), ("pax", false), ("ustar", true)] {
                let root = dir.path().join(format!("tree-{format}"));
                build_tree(&root, portable);
                let path = dir.path().join(format!("{format}.tar"));
                // /dev/null adds a character device without needing mknod.
                run(Command::new("tar")
                    .arg(format!("--format={format}"))
                    .arg("-cf")
                    .arg(&path)
                    .arg("-C")
                    .arg(&root)
                    .arg(".")
                    .args(["-C", "/", "dev/null"]));
                out.push(Archive { format, bytes: std::fs::read(&path).unwrap(), path, root });
            }
            (dir, out)
        })
        .1
}

fn parse_whole(bytes: &[u8]) -> Vec<TarEvent> {
    let mut p = TarParser::new();
    let events = p.feed(bytes).unwrap();
    p.finish().unwrap();
    events
}

/// One line of `tar -R -tv`.
#[derive(Debug)]
struct Listed {
    block: u64,
    mode: String,
    ids: String,
    size: String,
    time: String,
    path: Vec<u8>,
    target: Option<Vec<u8>>,
}

/// Runs GNU tar's listing with block numbers; returns the members and the
/// block of the end-of-archive marker.
fn gnu_listing(path: &Path) -> (Vec<Listed>, u64) {
    let out = Command::new("tar")
        .args(["--utc", "--full-time", "--numeric-owner", "--quoting-style=literal", "-R", "-tvf"])
        .arg(path)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -tv: {}", String::from_utf8_lossy(&out.stderr));
    let mut listed = Vec::new();
    let mut end = None;
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_prefix(b"block ").expect("block number");
        let colon = line.iter().position(|&b| b == b':').unwrap();
        let block: u64 = std::str::from_utf8(&line[..colon]).unwrap().parse().unwrap();
        let mut rest = &line[colon + 2..];
        if rest == b"** Block of NULs **" {
            end = Some(block);
            continue;
        }
        // mode, owner/group, size (or "major,minor"), date, time, then the name.
        let mut fields = Vec::new();
        for _ in 0..5 {
            let start = rest.iter().position(|&b| b != b' ').unwrap();
            rest = &rest[start..];
            let len = rest.iter().position(|&b| b == b' ').unwrap();
            fields.push(String::from_utf8(rest[..len].to_vec()).unwrap());
            rest = &rest[len + 1..];
        }
        // GNU tar pads the time column; no test name starts with a space.
        let rest = &rest[rest.iter().position(|&b| b != b' ').unwrap_or(rest.len())..];
        let split = |sep: &[u8]| {
            rest.windows(sep.len()).position(|w| w == sep).map(|i| (rest[..i].to_vec(), rest[i + sep.len()..].to_vec()))
        };
        let (name, target) = match split(b" -> ").or_else(|| split(b" link to ")) {
            Some((n, t)) => (n, Some(t)),
            None => (rest.to_vec(), None),
        };
        listed.push(Listed {
            block,
            mode: fields[0].clone(),
            ids: fields[1].clone(),
            size: fields[2].clone(),
            time: format!("{} {}", fields[3], fields[4]),
            path: name,
            target,
        });
    }
    (listed, end.expect("end-of-archive marker in listing"))
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn members(events: &[TarEvent]) -> Vec<&TarMember> {
    events
        .iter()
        .filter_map(|e| match e {
            TarEvent::Member(m) => Some(m),
            TarEvent::End { .. } => None,
        })
        .collect()
}

#[test]
fn members_match_gnu_tar_listing() {
    for a in archives() {
        let events = parse_whole(&a.bytes);
        let ours = members(&events);
        let (theirs, end_block) = gnu_listing(&a.path);
        assert_eq!(ours.len(), theirs.len(), "{}: member count", a.format);
        assert_eq!(events.last(), Some(&TarEvent::End { offset: end_block * 512 }), "{}", a.format);
        for (m, l) in ours.iter().zip(&theirs) {
            let what = format!("{}: {}", a.format, m.path_lossy());
            assert_eq!(m.path, l.path, "{what}: path");
            let kind = match m.kind {
                EntryKind::File => '-',
                EntryKind::Directory => 'd',
                EntryKind::Symlink => 'l',
                EntryKind::HardLink => 'h',
                EntryKind::CharDevice => 'c',
                EntryKind::BlockDevice => 'b',
                EntryKind::Fifo => 'p',
                EntryKind::Other(t) => t as char,
            };
            assert_eq!(Some(kind), l.mode.chars().next(), "{what}: type");
            assert_eq!(format!("{}/{}", m.uid, m.gid), l.ids, "{what}: ids");
            match m.device {
                Some((major, minor)) => assert_eq!(format!("{major},{minor}"), l.size, "{what}: device"),
                None => assert_eq!(m.size.to_string(), l.size, "{what}: size"),
            }
            // GNU tar prints the fraction of pax times without trailing zeros.
            let mut time = utc(m.mtime);
            if m.mtime_nanos != 0 {
                time = format!("{time}.{:09}", m.mtime_nanos).trim_end_matches('0').to_string();
            }
            assert_eq!(time, l.time, "{what}: mtime");
            assert_eq!(m.link_target, l.target, "{what}: link target");
            // GNU tar numbers a member by its first GNU long-name/link
            // header, but by its own header when pax headers precede it.
            let numbered = if a.format == "gnu" { m.header_offset } else { m.entry_offset };
            assert_eq!(numbered, l.block * 512, "{what}: header block");
            assert_eq!(m.data_start, m.entry_offset + 512, "{what}: data follows the last header");
        }
        // Members tile the archive: each one's headers start where the
        // previous one's padded data ends.
        for w in ours.windows(2) {
            assert_eq!(w[0].data_end_padded(), w[1].header_offset, "{}: gap after {}", a.format, w[0].path_lossy());
        }
    }
}

#[test]
fn data_ranges_hold_the_files_bytes() {
    for a in archives() {
        let events = parse_whole(&a.bytes);
        let mut files = 0;
        for m in members(&events) {
            let start = m.data_start as usize;
            let data = &a.bytes[start..start + m.data_len as usize];
            match m.kind {
                EntryKind::File => {
                    let on_disk = if m.path == b"dev/null" {
                        Vec::new()
                    } else {
                        std::fs::read(a.root.join(m.path_lossy().as_ref())).unwrap()
                    };
                    assert_eq!(data, &on_disk[..], "{}: {}", a.format, m.path_lossy());
                    assert!(a.bytes[start + data.len()..m.data_end_padded() as usize].iter().all(|&b| b == 0));
                    files += 1;
                }
                _ => assert_eq!(m.data_len, 0, "{}: {} has no data", a.format, m.path_lossy()),
            }
        }
        assert!(files >= 5, "{}: only {files} files", a.format);
    }
}

#[test]
fn format_specific_features_are_seen() {
    let by_format = |f: &str| archives().iter().find(|a| a.format == f).unwrap();
    let find = |events: &[TarEvent], suffix: &str| -> TarMember {
        members(events)
            .into_iter()
            .find(|m| m.path.ends_with(suffix.as_bytes()))
            .cloned()
            .unwrap_or_else(|| panic!("{suffix}"))
    };
    for f in ["gnu", "pax"] {
        let events = parse_whole(&by_format(f).bytes);
        let long = find(&events, &"n".repeat(120));
        assert!(long.header_offset < long.entry_offset, "{f}: long name needs an extension header");
        assert_eq!(find(&events, "link-long").link_target, Some("t".repeat(150).into_bytes()));
        let big = find(&events, "bigid");
        assert_eq!((big.uid, big.gid), (3_000_000, 3_000_001));
    }
    let pax = parse_whole(&by_format("pax").bytes);
    assert_eq!(find(&pax, "dir/sub/fraction").mtime_nanos, 123_456_789);
    let ustar = parse_whole(&by_format("ustar").bytes);
    let deep = find(&ustar, "r.txt");
    assert_eq!(deep.header_offset, deep.entry_offset, "ustar splits long paths into prefix and name");
    assert!(deep.path.len() > 100);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_slicing_gives_the_same_events(cuts in proptest::collection::vec(1usize..3000, 1..200), which in 0usize..3) {
        let a = &archives()[which];
        let whole = parse_whole(&a.bytes);
        let mut p = TarParser::new();
        let mut events = Vec::new();
        let mut rest = &a.bytes[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            events.extend(p.feed(&rest[..n]).unwrap());
            rest = &rest[n..];
            i += 1;
        }
        p.finish().unwrap();
        prop_assert_eq!(events, whole);
    }
}
