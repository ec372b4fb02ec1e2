//! Tar cases GNU tar does not produce from a directory, built by hand:
//! base-256 sizes, v7 headers, pax global headers and masking, old GNU
//! sparse headers, damaged checksums, incomplete streams and malformed
//! extension headers.

use cairn_formats::tar::{EntryKind, TarError, TarEvent, TarFormat, TarLimits, TarMember, TarParser};

/// Builds one header block.
struct H([u8; 512]);

impl H {
    fn new(name: &str, typeflag: u8, size: u64, magic: &[u8; 8]) -> H {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..108].copy_from_slice(b"0000644\0");
        b[108..116].copy_from_slice(b"0001750\0");
        b[116..124].copy_from_slice(b"0001750\0");
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        b[136..148].copy_from_slice(b"14567123456\0");
        b[156] = typeflag;
        b[257..265].copy_from_slice(magic);
        H(b)
    }
    fn ustar(name: &str, typeflag: u8, size: u64) -> H {
        H::new(name, typeflag, size, b"ustar\x0000")
    }
    fn set(mut self, at: usize, bytes: &[u8]) -> H {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }
    /// The block with its checksum filled in.
    fn done(mut self) -> Vec<u8> {
        self.0[148..156].fill(b' ');
        let sum: u32 = self.0.iter().map(|&b| u32::from(b)).sum();
        self.0[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.to_vec()
    }
}

/// `data` padded to whole blocks.
fn blocks(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

fn pax(records: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (k, v) in records {
        let body = format!(" {k}={v}\n");
        let mut n = body.len() + 1;
        while n.to_string().len() + body.len() != n {
            n = n.to_string().len() + body.len();
        }
        out.push_str(&format!("{n}{body}"));
    }
    out.into_bytes()
}

fn end() -> Vec<u8> {
    vec![0; 1024]
}

fn run(bytes: &[u8]) -> Result<Vec<TarEvent>, TarError> {
    let mut p = TarParser::new();
    let events = p.feed(bytes)?;
    p.finish()?;
    Ok(events)
}

fn only_members(events: &[TarEvent]) -> Vec<TarMember> {
    events.iter().filter_map(|e| if let TarEvent::Member(m) = e { Some(m.clone()) } else { None }).collect()
}

#[test]
fn base_256_size_is_reported_without_reading_the_data() {
    // A 10 GiB member: GNU tar writes such sizes in base-256.
    let mut size = [0u8; 12];
    size[0] = 0x80;
    size[7] = 0x02;
    size[8] = 0x80;
    let header = H::new("huge.img", b'0', 0, b"ustar  \0").set(124, &size).done();
    let mut p = TarParser::new();
    let events = p.feed(&header).unwrap();
    let m = &only_members(&events)[0];
    assert_eq!((m.format, m.data_start, m.data_len), (TarFormat::Gnu, 512, 10 << 30));
    // Feeding some of the data emits nothing and the stream is incomplete.
    assert!(p.feed(&[7u8; 4096]).unwrap().is_empty());
    assert!(matches!(p.finish(), Err(TarError::Truncated { offset: 4608, expected: "the rest of a member's data" })));
}

#[test]
fn v7_headers_and_trailing_slash_directories() {
    let mut archive = H::new("old-dir/", 0, 0, &[0; 8]).done();
    archive.extend(H::new("old-file", 0, 3, &[0; 8]).set(265, b"ignored-uname").done());
    archive.extend(blocks(b"abc"));
    archive.extend(end());
    let m = only_members(&run(&archive).unwrap());
    assert_eq!((m[0].kind, m[0].format), (EntryKind::Directory, TarFormat::V7));
    assert_eq!((m[1].kind, m[1].data_start, m[1].data_len), (EntryKind::File, 1024, 3));
    assert!(m[1].uname.is_empty(), "v7 headers have no user name field");
}

#[test]
fn pax_global_and_local_overrides() {
    let mut archive = H::ustar("pax_global_header", b'g', 0)
        .set(124, format!("{:011o}\0", pax(&[("uid", "77"), ("mtime", "5.5")]).len()).as_bytes())
        .done();
    archive.extend(blocks(&pax(&[("uid", "77"), ("mtime", "5.5")])));
    // Member 1 inherits the global uid; member 2 masks it with an empty
    // value and overrides path and size.
    archive.extend(H::ustar("a", b'0', 0).done());
    let local = pax(&[("uid", ""), ("path", "renamed/ünïcode"), ("size", "600")]);
    archive.extend(H::ustar("PaxHeaders/b", b'x', local.len() as u64).done());
    archive.extend(blocks(&local));
    archive.extend(H::ustar("b", b'0', 0).done());
    archive.extend(blocks(&[1u8; 600]));
    archive.extend(end());
    let m = only_members(&run(&archive).unwrap());
    assert_eq!((m[0].uid, m[0].mtime, m[0].mtime_nanos), (77, 5, 500_000_000));
    assert_eq!(m[1].uid, 0o1750);
    assert_eq!(m[1].path_lossy(), "renamed/ünïcode");
    assert_eq!((m[1].size, m[1].data_len), (600, 600));
    assert_eq!((m[1].header_offset, m[1].entry_offset, m[1].data_start), (1536, 2560, 3072));
    // The global header is not part of the first member.
    assert_eq!(m[0].header_offset, 1024);
}

#[test]
fn gnu_long_names_and_old_sparse_headers() {
    let name = "x".repeat(300);
    let mut long = name.clone().into_bytes();
    long.push(0);
    let mut archive = H::new("././@LongLink", b'L', long.len() as u64, b"ustar  \0").done();
    archive.extend(blocks(&long));
    // An old GNU sparse file with one extension block of sparse map entries.
    archive.extend(H::new("short", b'S', 1024, b"ustar  \0").set(482, &[1]).done());
    let mut ext = [0u8; 512];
    ext[504] = 0;
    archive.extend(ext);
    archive.extend(blocks(&[9u8; 1024]));
    archive.extend(end());
    let m = &only_members(&run(&archive).unwrap())[0];
    assert_eq!(m.path, name.as_bytes());
    assert!(m.sparse);
    assert_eq!((m.header_offset, m.entry_offset, m.data_start, m.data_len), (0, 1024, 2048, 1024));
}

#[test]
fn damaged_checksum_is_rejected_with_its_offset() {
    let mut archive = H::ustar("ok", b'0', 0).done();
    let mut bad = H::ustar("bad", b'0', 0).done();
    bad[0] ^= 0x20;
    archive.extend(bad);
    match run(&archive) {
        Err(TarError::BadChecksum { offset: 512, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Every single bit flip in a header is caught, except inside the
    // checksum field, which counts as spaces in the sum: there a leading
    // '0' may become a space and the NUL/space terminators may swap
    // without changing its value. A flip that changes the value is caught.
    let good = [H::ustar("file", b'0', 5).done(), blocks(b"hello"), end()].concat();
    let mut last_digit = good.clone();
    last_digit[153] ^= 1;
    assert!(matches!(run(&last_digit), Err(TarError::BadChecksum { offset: 0, .. })));
    for at in (0..512).filter(|at| !(148..156).contains(at)) {
        for bit in 0..8 {
            let mut b = good.clone();
            b[at] ^= 1 << bit;
            assert!(run(&b).is_err(), "flip of bit {bit} at {at} accepted");
        }
    }
}

#[test]
fn incomplete_streams_say_what_they_wait_for() {
    let archive = [H::ustar("f", b'0', 5).done(), blocks(b"hello"), end()].concat();
    let cases = [
        (0, "a header or the end-of-archive marker"),
        (100, "a header or the end-of-archive marker"),
        (600, "the rest of a member's data"),
        (1024, "a header or the end-of-archive marker"),
        (1536, "the second zero block of the end-of-archive marker"),
    ];
    for (cut, expected) in cases {
        let mut p = TarParser::new();
        p.feed(&archive[..cut]).unwrap();
        assert_eq!(p.finish(), Err(TarError::Truncated { offset: cut as u64, expected }), "cut at {cut}");
    }
    let local = pax(&[("path", "p")]);
    let dangling = [H::ustar("x", b'x', local.len() as u64).done(), blocks(&local), end()].concat();
    assert_eq!(run(&dangling), Err(TarError::DanglingExtension { offset: 1024 }));
}

#[test]
fn end_marker_rules() {
    let lone = [H::ustar("f", b'0', 0).done(), vec![0; 512], H::ustar("g", b'0', 0).done(), end()].concat();
    assert_eq!(run(&lone), Err(TarError::LoneZeroBlock { offset: 512 }));
    // Record padding after the marker is counted, not parsed.
    let padded = [H::ustar("f", b'0', 0).done(), end(), vec![0; 8192]].concat();
    let mut p = TarParser::new();
    let events = p.feed(&padded).unwrap();
    assert_eq!(events.last(), Some(&TarEvent::End { offset: 512 }));
    assert!(p.is_done());
    assert_eq!(p.trailing_bytes(), 8192);
}

#[test]
fn malformed_extensions_are_rejected() {
    let bad_size = pax(&[("size", "12x")]);
    let archive =
        [H::ustar("x", b'x', bad_size.len() as u64).done(), blocks(&bad_size), H::ustar("f", b'0', 0).done(), end()]
            .concat();
    assert!(matches!(run(&archive), Err(TarError::BadPax { offset: 1024, expected: "size", .. })));
    let garbage = b"20 path\n".to_vec();
    let archive =
        [H::ustar("x", b'x', garbage.len() as u64).done(), blocks(&garbage), H::ustar("f", b'0', 0).done(), end()]
            .concat();
    assert!(matches!(run(&archive), Err(TarError::BadPax { offset: 512, .. })));
    let mut p = TarParser::with_limits(TarLimits { max_extension_bytes: 100 });
    let big = H::new("././@LongLink", b'L', 101, b"ustar  \0").done();
    assert_eq!(p.feed(&big), Err(TarError::ExtensionTooLarge { offset: 0, size: 101, limit: 100 }));
    let bad_number = H::ustar("f", b'0', 0).set(124, b"0000000009x\0").done();
    assert!(matches!(run(&bad_number), Err(TarError::BadNumber { offset: 124, field: "size", .. })));
}

/// The committed archives in `testdata/tar/` (see its README), checked
/// against what `tar -R -tv` printed when they were made, so this runs
/// without GNU tar.
#[test]
fn committed_fixtures() {
    let fixtures: [(&str, &[u8], [u64; 7], u64); 3] = [
        ("gnu", include_bytes!("../testdata/tar/small-gnu.tar"), [0, 1, 2, 5, 6, 8, 9], 10),
        ("pax", include_bytes!("../testdata/tar/small-pax.tar"), [2, 5, 8, 13, 16, 20, 23], 24),
        ("ustar", include_bytes!("../testdata/tar/small-ustar.tar"), [0, 1, 2, 5, 6, 8, 9], 10),
    ];
    let paths = ["./", "./dir/", "./dir/700-bytes", "./dir/empty", "./dir/hello.txt", "./hard", "./link"];
    let kinds = [
        EntryKind::Directory,
        EntryKind::Directory,
        EntryKind::File,
        EntryKind::File,
        EntryKind::File,
        EntryKind::HardLink,
        EntryKind::Symlink,
    ];
    for (name, bytes, entry_blocks, end_block) in fixtures {
        let events = run(bytes).unwrap();
        assert_eq!(events.last(), Some(&TarEvent::End { offset: end_block * 512 }), "{name}");
        let m = only_members(&events);
        assert_eq!(m.len(), 7, "{name}");
        for i in 0..7 {
            assert_eq!(
                (m[i].path_lossy().as_ref(), m[i].kind, m[i].entry_offset),
                (paths[i], kinds[i], entry_blocks[i] * 512),
                "{name}"
            );
            assert_eq!(m[i].mtime, 1_620_284_889, "{name}");
        }
        let file = |i: usize| &bytes[m[i].data_start as usize..(m[i].data_start + m[i].data_len) as usize];
        assert_eq!(file(2), &[b'x'; 700][..]);
        assert_eq!(file(4), b"hello\n");
        assert_eq!(m[5].link_target.as_deref(), Some(&b"./dir/hello.txt"[..]));
        assert_eq!(m[6].link_target.as_deref(), Some(&b"dir/hello.txt"[..]));
        assert_eq!(m[4].mtime_nanos, if name == "pax" { 500_000_000 } else { 0 });
    }
}
