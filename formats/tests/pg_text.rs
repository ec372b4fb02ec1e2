//! Tests of PostgreSQL's small text formats: WAL file names and LSNs,
//! timeline history files and `backup_manifest`.

use cairn_formats::pg::manifest::manifest_checksum;
use cairn_formats::pg::{
    parse_timeline_history, BackupManifest, ChecksumAlgorithm, FileChecker, FileNameError, Lsn, ManifestError,
    SegmentName, SegmentSize, WalFileName,
};
use proptest::prelude::*;
use sha2::Digest;

fn sizes() -> impl Strategy<Value = SegmentSize> {
    (20u32..=30).prop_map(|shift| SegmentSize::new(1 << shift).unwrap())
}

fn segment_name(size: SegmentSize) -> impl Strategy<Value = SegmentName> {
    let max_segno = (u64::from(u32::MAX) + 1) * size.segments_per_xlog_id() - 1;
    (1u32..=u32::MAX, 0..=max_segno).prop_map(|(timeline, segno)| SegmentName { timeline, segno })
}

fn any_name() -> impl Strategy<Value = (SegmentSize, WalFileName)> {
    sizes().prop_flat_map(|size| {
        let kinds = prop_oneof![
            segment_name(size).prop_map(WalFileName::Segment),
            segment_name(size).prop_map(WalFileName::Partial),
            (1u32..=u32::MAX).prop_map(|timeline| WalFileName::History { timeline }),
            (segment_name(size), 0..size.bytes()).prop_map(|(segment, offset)| WalFileName::Backup { segment, offset }),
        ];
        (Just(size), kinds)
    })
}

proptest! {
    /// name -> text -> name is the identity for every kind and size.
    #[test]
    fn file_names_round_trip((size, name) in any_name()) {
        let text = name.format(size);
        prop_assert_eq!(WalFileName::parse(&text, size), Ok(name));
        let expected_len = match name {
            WalFileName::Segment(_) => 24,
            WalFileName::Partial(_) => 32,
            WalFileName::History { .. } => 16,
            WalFileName::Backup { .. } => 40,
        };
        prop_assert_eq!(text.len(), expected_len);
    }

    /// text -> name -> text is the identity for every accepted text, and
    /// parsing never panics on arbitrary text.
    #[test]
    fn accepted_texts_round_trip(text in "[0-9A-F]{8,24}(\\.partial|\\.history|\\.[0-9A-F]{8}\\.backup)?", size in sizes()) {
        if let Ok(name) = WalFileName::parse(&text, size) {
            prop_assert_eq!(name.format(size), text);
        }
    }

    /// A segment's name, number and start LSN agree with each other.
    #[test]
    fn name_segno_and_lsn_agree(size in sizes(), lsn in any::<u64>(), timeline in 1u32..=u32::MAX) {
        let seg = SegmentName::containing(timeline, Lsn(lsn), size);
        let start = seg.start_lsn(size).unwrap();
        prop_assert!(start.0 <= lsn && lsn - start.0 < u64::from(size.bytes()));
        let text = seg.format(size);
        prop_assert_eq!(u64::from_str_radix(&text[8..16], 16).unwrap(), lsn >> 32);
        prop_assert_eq!(WalFileName::parse(&text, size), Ok(WalFileName::Segment(seg)));
    }

    /// LSNs print and parse like PostgreSQL's pg_lsn.
    #[test]
    fn lsn_round_trips(lsn in any::<u64>()) {
        let text = Lsn(lsn).to_string();
        prop_assert_eq!(text.parse::<Lsn>(), Ok(Lsn(lsn)));
        prop_assert_eq!(text.to_lowercase().parse::<Lsn>(), Ok(Lsn(lsn)));
    }
}

#[test]
fn file_name_rejections_are_specific() {
    let size = SegmentSize::DEFAULT;
    let malformed = |name: &str| match WalFileName::parse(name, size) {
        Err(FileNameError::Malformed { name: n, .. }) => assert_eq!(n, name),
        other => panic!("{name}: {other:?}"),
    };
    malformed("00000001000000000000000"); // 23 digits
    malformed("0000000100000000000000001"); // 25 digits
    malformed("00000001000000000000000a"); // lower case
    malformed("000000000000000000000001"); // timeline 0
    malformed("00000000.history");
    malformed("0000001.history");
    malformed("000000010000000000000001.partia");
    malformed("000000010000000000000001.0000002.backup");
    malformed("000000010000000000000001-00000028.backup");
    malformed("");
    assert!(matches!(
        WalFileName::parse("000000010000000000000001.01000000.backup", size),
        Err(FileNameError::BackupOffsetOutOfRange { offset: 0x0100_0000, .. })
    ));
    for bad in [0, 1 << 19, 3 << 20, 1 << 31, u64::MAX] {
        assert_eq!(SegmentSize::new(bad), Err(FileNameError::InvalidSegmentSize { got: bad }));
    }
    assert_eq!(SegmentSize::new(1 << 30).unwrap().segments_per_xlog_id(), 4);
}

#[test]
fn history_file_with_several_ancestors() {
    let text = b"1\t0/3000158\tno recovery target specified\n\
                 2\t0/5000000\tat restore point \"cairn\"\n\
                 \n   # comment with leading blanks\n\
                 5\t1/A0000028\tbefore 2026-01-01 00:00:00+00\n";
    let entries = parse_timeline_history(text, Some(6)).unwrap();
    let got: Vec<_> = entries.iter().map(|e| (e.timeline, e.switchpoint, e.reason.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (1, Lsn(0x300_0158), "no recovery target specified"),
            (2, Lsn(0x500_0000), "at restore point \"cairn\""),
            (5, Lsn(0x1_A000_0028), "before 2026-01-01 00:00:00+00"),
        ]
    );
    assert!(parse_timeline_history(b"", Some(1)).unwrap().is_empty());
    let err = parse_timeline_history(b"1\t0/5\tx\n2\t0/4\ty\n", None).unwrap_err();
    assert_eq!(err.to_string(), "timeline history line 2: switchpoint 0/4 is before the previous switchpoint 0/5");
    let err = parse_timeline_history(b"1\n", None).unwrap_err();
    assert!(err.to_string().starts_with("timeline history line 1: expected whitespace"), "{err}");
}

/// Builds a manifest the way PostgreSQL writes one, sealed with a correct
/// `Manifest-Checksum`.
fn manifest(version_line: &str, files: &[String]) -> Vec<u8> {
    let mut body = format!("{{ {version_line}\n\"Files\": [\n");
    body.push_str(&files.join(",\n"));
    body.push_str(
        "\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/4000028\", \"End-LSN\": \"0/4000138\" }\n],\n",
    );
    let digest = sha2::Sha256::digest(body.as_bytes());
    body.push_str(&format!("\"Manifest-Checksum\": \"{}\"}}\n", hex::encode(digest)));
    body.into_bytes()
}

fn file_line(path_key: &str, path: &str, data: &[u8], algorithm: &str, checksum: &str) -> String {
    format!(
        "{{ \"{path_key}\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2026-11-22 00:00:23 GMT\", \
         \"Checksum-Algorithm\": \"{algorithm}\", \"Checksum\": \"{checksum}\" }}",
        data.len()
    )
}

#[test]
fn manifest_versions_checksums_and_file_checks() {
    let data = b"15\n".as_slice();
    let crc = hex::encode(crc32c::crc32c(data).to_le_bytes());
    // A path that is not UTF-8 travels hex-encoded.
    let odd_path = [b'b', b'a', b'd', 0xFF];
    let files = vec![
        file_line("Path", "PG_VERSION", data, "CRC32C", &crc),
        file_line("Path", "s224", data, "sha224", &hex::encode(sha2::Sha224::digest(data))),
        file_line("Path", "s256", data, "SHA256", &hex::encode(sha2::Sha256::digest(data))),
        file_line("Path", "s384", data, "SHA384", &hex::encode(sha2::Sha384::digest(data))),
        file_line("Encoded-Path", &hex::encode(odd_path), data, "SHA512", &hex::encode(sha2::Sha512::digest(data))),
        format!("{{ \"Path\": \"none\", \"Size\": {} }}", data.len()),
    ];
    let v1 = manifest("\"PostgreSQL-Backup-Manifest-Version\": 1,", &files);
    let m = BackupManifest::parse(&v1).unwrap();
    assert_eq!((m.version, m.system_id, m.files.len()), (1, None, 6));
    assert_eq!(m.wal_ranges[0].end, Lsn(0x400_0138));
    assert_eq!(m.files[4].path, odd_path);
    assert_eq!(m.files[5].checksum_algorithm, ChecksumAlgorithm::None);
    for f in &m.files {
        let mut c = FileChecker::new(f);
        c.update(&data[..1]);
        c.update(&data[1..]);
        c.finish().unwrap_or_else(|e| panic!("{e}"));
        let mut c = FileChecker::new(f);
        c.update(b"16\n");
        let err = c.finish();
        if f.checksum_algorithm == ChecksumAlgorithm::None {
            assert_eq!(err, Ok(()));
        } else {
            let err = err.unwrap_err();
            assert!(err.to_string().contains(&format!("{:?}", f.path_lossy())), "{err}");
        }
    }
    let mut c = FileChecker::new(&m.files[0]);
    c.update(b"15");
    assert_eq!(c.finish(), Err(ManifestError::FileSizeMismatch { path: "PG_VERSION".into(), expected: 3, got: 2 }));

    let v2 = manifest("\"PostgreSQL-Backup-Manifest-Version\": 2, \"System-Identifier\": 7441452190238932753,", &files);
    assert_eq!(BackupManifest::parse(&v2).unwrap().system_id, Some(7_441_452_190_238_932_753));
    let v2_without = manifest("\"PostgreSQL-Backup-Manifest-Version\": 2,", &files);
    assert!(
        matches!(BackupManifest::parse(&v2_without), Err(ManifestError::Invalid { field, .. }) if field == "System-Identifier")
    );
    let v3 = manifest("\"PostgreSQL-Backup-Manifest-Version\": 3,", &files);
    assert!(matches!(BackupManifest::parse(&v3), Err(ManifestError::UnsupportedVersion { .. })));

    // The checksum covers everything but the last line.
    let text = String::from_utf8(v1.clone()).unwrap();
    let last_line_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    assert_eq!(manifest_checksum(&v1).unwrap(), <[u8; 32]>::from(sha2::Sha256::digest(&v1[..last_line_start])));
    let tampered = text.replacen("\"Size\": 3", "\"Size\": 4", 1);
    assert!(matches!(BackupManifest::parse(tampered.as_bytes()), Err(ManifestError::ManifestChecksumMismatch { .. })));
    assert!(matches!(BackupManifest::parse(&v1[..v1.len() - 1]), Err(ManifestError::Invalid { .. })));
    assert!(matches!(BackupManifest::parse(&v1[..v1.len() / 2]), Err(ManifestError::Json { .. })));
}

#[test]
fn manifest_field_errors_name_the_file() {
    let bad = [
        (file_line("Path", "base/1/1259", b"x", "CRC32C", "00"), "base/1/1259"),
        (file_line("Path", "global/1262", b"x", "MD5", "00"), "global/1262"),
        ("{ \"Path\": \"pg_hba.conf\", \"Size\": -1 }".to_owned(), "pg_hba.conf"),
        ("{ \"Path\": \"a\", \"Size\": 1, \"Color\": \"red\" }".to_owned(), "Color"),
    ];
    for (line, needle) in bad {
        let m = manifest("\"PostgreSQL-Backup-Manifest-Version\": 1,", &[line]);
        let err = BackupManifest::parse(&m).unwrap_err();
        assert!(matches!(err, ManifestError::Invalid { .. }) && err.to_string().contains(needle), "{err}");
    }
}
