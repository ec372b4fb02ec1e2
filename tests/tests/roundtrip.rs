//! Streams of every shape restore byte-identical; unchanged data is not
//! uploaded twice; memory stays bounded on a stream larger than 1 GiB.

use std::io::{Read, Write};
use std::process::Stdio;

use cairn_tests::data::{random, text, MixedStream};
use cairn_tests::repo::assert_success;
use cairn_tests::TestRepo;

fn round_trip(repo: &TestRepo, data: &[u8]) -> serde_json::Value {
    let b = repo.backup_bytes(data, &[]);
    let id = b["snapshot"].as_str().unwrap();
    let restored = repo.restore_bytes(&id[..12]);
    assert_eq!(restored.len(), data.len());
    assert!(restored == data, "restored bytes differ");
    assert_eq!(b["blake3"].as_str().unwrap(), blake3::hash(data).to_hex().as_str());
    b
}

#[test]
fn shapes_round_trip_and_second_backup_uploads_nothing_new() {
    let repo = TestRepo::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("tiny", b"x".to_vec()),
        ("zeros", vec![0u8; 40 << 20]),
        ("text", text(30 << 20, 1)),
        ("random", random(30 << 20, 2)),
    ];
    for (name, data) in &cases {
        let first = round_trip(&repo, data);
        let second = round_trip(&repo, data);
        assert_eq!(second["stats"]["new_chunks"], 0, "{name}: second backup found new chunks: {second}");
        assert_eq!(second["stats"]["packs"], 0, "{name}: second backup wrote packs: {second}");
        if *name == "text" {
            let up = first["stats"]["uploaded_bytes"].as_u64().unwrap();
            assert!(up < data.len() as u64 / 3, "{name}: text should compress, uploaded {up}");
        }
        if *name == "random" {
            let up = first["stats"]["uploaded_bytes"].as_u64().unwrap();
            assert!(up < data.len() as u64 + (1 << 20), "{name}: random data grew to {up}");
        }
        if *name == "zeros" {
            let up = first["stats"]["uploaded_bytes"].as_u64().unwrap();
            assert!(up < 1 << 20, "{name}: zeros dedup to one chunk, uploaded {up}");
        }
    }
    repo.ok(&["check", "--read-data"]);
    assert_eq!(repo.snapshots().len(), cases.len() * 2);
}

/// A 1.2 GiB stream through stdin and back through stdout, hashed on both
/// sides without ever holding it; the backup's peak RSS is bounded.
#[test]
fn large_stream_round_trips_with_bounded_memory() {
    const LEN: u64 = 1200 << 20;
    let repo = TestRepo::new();
    let mut child = repo
        .cmd(&["backup", "--json", "--source", "big", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut h = blake3::Hasher::new();
        let mut src = MixedStream::new(LEN, 42);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            stdin.write_all(&buf[..n]).unwrap();
        }
        h.finalize()
    });
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for l in s.lines().filter(|l| l.starts_with("VmHWM:")) {
                peak_kb = peak_kb.max(l.split_whitespace().nth(1).unwrap().parse().unwrap());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let want = feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &["backup"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["stats"]["bytes_read"], LEN);
    assert_eq!(summary["blake3"].as_str().unwrap(), want.to_hex().as_str());
    assert!(peak_kb > 0 && peak_kb < 400 * 1024, "backup peak RSS {peak_kb} KiB for a {LEN}-byte stream");

    let mut child = repo
        .cmd(&["restore", "latest", "--source", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &["restore"]);
    assert_eq!(total, LEN);
    assert_eq!(h.finalize(), want);
}

/// `--to FILE` writes the exact bytes and leaves no temporary file.
#[test]
fn restore_to_file_is_exact() {
    let repo = TestRepo::new();
    let data = text(3 << 20, 9);
    let src = repo.dir.path().join("input.txt");
    std::fs::write(&src, &data).unwrap();
    let b = repo.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(b["source"], "input.txt");
    let dst = repo.dir.path().join("out.txt");
    repo.ok(&["restore", "latest", "--source", "input.txt", "--to", dst.to_str().unwrap()]);
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    let leftovers: Vec<_> = std::fs::read_dir(repo.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());
}
