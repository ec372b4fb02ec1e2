//! Tar snapshots: tar-aware chunking pays off across model versions, a
//! file inserted at the front costs only itself, one member is restored
//! without reading the rest, and GNU tar agrees with every listing.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_tests::data::XorShift;
use cairn_tests::TestRepo;

const MIB: usize = 1 << 20;

/// Float32 "weights": small normal-ish values, which compress a little
/// (shared exponents) like real tensors do.
fn tensor(bytes: usize, seed: u64) -> Vec<u8> {
    let mut r = XorShift(seed | 1);
    let mut out = Vec::with_capacity(bytes);
    while out.len() < bytes {
        let u = (r.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        let v = (u - 0.5) * 0.04;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn gnu_tar(dir: &Path, out: &Path, members: &[&str]) {
    let s = Command::new("tar").arg("-cf").arg(out).arg("-C").arg(dir).args(members).status().unwrap();
    assert!(s.success(), "tar -cf {}", out.display());
}

fn tar_tv(path: &Path) -> String {
    let o = Command::new("tar").arg("-tvf").arg(path).output().unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap()
}

/// Bytes the repository holds on disk.
fn repo_bytes(r: &TestRepo) -> u64 {
    r.objects("").iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

fn zstd_len(data: &[u8]) -> u64 {
    let mut c = Command::new("zstd")
        .args(["-3", "-c", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zstd (installed by scripts/deps.sh)");
    let mut stdin = c.stdin.take().unwrap();
    let d = data.to_vec();
    let t = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &d).unwrap());
    let o = c.wait_with_output().unwrap();
    t.join().unwrap();
    o.stdout.len() as u64
}

fn backup_tar(r: &TestRepo, path: &Path) -> serde_json::Value {
    r.json(&["backup", "--kind", "tar", "--source", "model", path.to_str().unwrap()])
}

/// Model weights with the chunk size README recommends for them: with the
/// default 1 MiB chunks (up to 4 MiB) a 512 KiB patch can cost several
/// MiB, depending on the key-seeded cut points of each repository.
fn backup_model(r: &TestRepo, path: &Path) -> serde_json::Value {
    r.json(&["backup", "--kind", "tar", "--source", "model", "--chunk-avg-kib", "256", path.to_str().unwrap()])
}

fn b3(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap()).to_hex().to_string()
}

struct Model {
    dir: PathBuf,
}

impl Model {
    fn write(&self, name: &str, data: &[u8]) {
        std::fs::write(self.dir.join(name), data).unwrap();
    }
}

/// v1: 8 tensors of 64 MiB. v2: tensors 2 and 5 rewritten, four 512 KiB
/// regions of tensor 7 changed. v3: v2 with a small file at the front.
#[test]
fn model_versions_cost_only_what_changed() {
    let r = TestRepo::new();
    let work = tempfile::tempdir().unwrap();
    let m = Model { dir: work.path().join("model") };
    std::fs::create_dir(&m.dir).unwrap();
    m.write("config.json", br#"{"hidden": 4096, "layers": 8}"#);
    for i in 0..8 {
        m.write(&format!("layer{i}.bin"), &tensor(64 * MIB, 100 + i));
    }
    let mut names = vec!["config.json".to_string()];
    names.extend((0..8).map(|i| format!("layer{i}.bin")));
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();

    let v1 = work.path().join("v1.tar");
    gnu_tar(&m.dir, &v1, &names_ref);
    let s1 = backup_model(&r, &v1);
    assert_eq!(s1["metadata"]["tar"]["members"], 9, "{s1}");

    // Fine-tune: two tensors rewritten, a few percent of a third changed.
    let mut changed = Vec::new();
    for i in [2u64, 5] {
        let t = tensor(64 * MIB, 900 + i);
        changed.extend_from_slice(&t);
        m.write(&format!("layer{i}.bin"), &t);
    }
    let mut t7 = std::fs::read(m.dir.join("layer7.bin")).unwrap();
    for (k, at) in [3 * MIB, 17 * MIB, 40 * MIB, 61 * MIB].into_iter().enumerate() {
        let patch = tensor(MIB / 2, 7000 + k as u64);
        t7[at..at + MIB / 2].copy_from_slice(&patch);
        changed.extend_from_slice(&patch);
    }
    m.write("layer7.bin", &t7);
    let v2 = work.path().join("v2.tar");
    gnu_tar(&m.dir, &v2, &names_ref);
    let before = repo_bytes(&r);
    backup_model(&r, &v2);
    let added = repo_bytes(&r) - before;
    let budget = zstd_len(&changed) * 11 / 10;
    eprintln!("v2 added {added} bytes; changed bytes {} compress to {}", changed.len(), budget * 10 / 11);
    assert!(added <= budget, "v2 added {added} bytes, more than 110% of the changed bytes' compressed size ({budget})");

    // A small file at the front shifts every member; only it is new.
    m.write("README.md", b"fine-tuned on the internal corpus, 2026-11\n");
    let v3 = work.path().join("v3.tar");
    let mut front = vec!["README.md"];
    front.extend_from_slice(&names_ref);
    gnu_tar(&m.dir, &v3, &front);
    let before = repo_bytes(&r);
    let s3 = backup_model(&r, &v3);
    let added = repo_bytes(&r) - before;
    eprintln!("v3 added {added} bytes");
    assert!(added < 2_000_000, "a small file at the front added {added} bytes");

    // diff names exactly what changed.
    let d = r.json(&["diff", s1["snapshot"].as_str().unwrap(), s3["snapshot"].as_str().unwrap()]);
    let mut got: Vec<(String, String)> = d["diff"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_string(), c["change"].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    let want: Vec<(String, String)> =
        [("README.md", "added"), ("layer2.bin", "changed"), ("layer5.bin", "changed"), ("layer7.bin", "changed")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(got, want, "{d}");

    // The whole archive restores byte-identical; GNU tar lists it the same.
    let out = work.path().join("restored.tar");
    r.ok(&["restore", s3["snapshot"].as_str().unwrap(), "--to", out.to_str().unwrap()]);
    assert_eq!(b3(&out), b3(&v3));
    assert_eq!(tar_tv(&out), tar_tv(&v3));
}

/// One member of a 1 GiB tar snapshot is restored reading under 5 % of the
/// repository, and `ls` agrees with `tar tf`.
#[test]
fn one_file_from_a_large_tar_reads_little() {
    let r = TestRepo::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("shards")).unwrap();
    let mut names = Vec::new();
    for i in 0..32u64 {
        let name = format!("shards/part-{i:03}.bin");
        std::fs::write(src.join(&name), cairn_tests::data::random(32 * MIB, 5000 + 2 * i)).unwrap();
        names.push(name);
    }
    std::fs::write(src.join("shards/index.json"), b"{\"parts\": 32}\n").unwrap();
    std::os::unix::fs::symlink("part-000.bin", src.join("shards/first")).unwrap();
    let archive = work.path().join("big.tar");
    gnu_tar(&src, &archive, &["shards"]);
    std::fs::remove_dir_all(&src).unwrap();
    let s = backup_tar(&r, &archive);
    let id = s["snapshot"].as_str().unwrap();
    let repo_size = repo_bytes(&r);

    // ls lists what GNU tar lists.
    let ls = r.json(&["ls", id]);
    let mut ours: Vec<String> =
        ls["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().into()).collect();
    let o = Command::new("tar").arg("-tf").arg(&archive).output().unwrap();
    let mut theirs: Vec<String> =
        String::from_utf8(o.stdout).unwrap().lines().map(|l| l.trim_end_matches('/').to_string()).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);

    // One 32 MiB member, with a fresh cache so nothing is read twice.
    let out = work.path().join("out");
    let v = r.json(&["restore", id, "--path", "shards/part-017.bin", "--to", out.to_str().unwrap()]);
    let fetched = v["summary"]["bytes_fetched"].as_u64().unwrap();
    eprintln!("restoring one member read {fetched} of {repo_size} repository bytes");
    assert!(fetched * 20 < repo_size, "read {fetched} of {repo_size} bytes");
    let got = std::fs::read(out.join("shards/part-017.bin")).unwrap();
    assert_eq!(blake3::hash(&got), blake3::hash(&cairn_tests::data::random(32 * MIB, 5034)));

    // A small member and a symlink, by directory.
    let out2 = work.path().join("out2");
    r.ok(&["restore", id, "--path", "shards/index.json", "--to", out2.to_str().unwrap()]);
    assert_eq!(std::fs::read(out2.join("shards/index.json")).unwrap(), b"{\"parts\": 32}\n");
    r.ok(&["restore", id, "--path", "shards/first", "--to", out2.to_str().unwrap()]);
    assert_eq!(std::fs::read_link(out2.join("shards/first")).unwrap(), Path::new("part-000.bin"));

    // A path that is not there is exit 4; a stream snapshot has no file list.
    let o = r.run(&["restore", id, "--path", "nope", "--to", out2.to_str().unwrap()]);
    assert_eq!(cairn_tests::repo::code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
}

/// A stream that claims to be tar but is not is refused, and leaves no
/// snapshot; a gzip tarball is stored byte-exact and reported.
#[test]
fn not_tar_is_refused_and_tarballs_are_reported() {
    let r = TestRepo::new();
    let o = r.run_stdin(&["backup", "--kind", "tar", "-"], &cairn_tests::data::random(100_000, 3));
    assert_eq!(cairn_tests::repo::code(&o), 7, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a tar stream"), "{}", String::from_utf8_lossy(&o.stderr));

    // A tar cut short in the middle of a member.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("a.bin"), cairn_tests::data::random(3 * MIB, 4)).unwrap();
    let t = work.path().join("a.tar");
    gnu_tar(work.path(), &t, &["a.bin"]);
    let bytes = std::fs::read(&t).unwrap();
    let o = r.run_stdin(&["backup", "--kind", "tar", "-"], &bytes[..2 * MIB]);
    assert_eq!(cairn_tests::repo::code(&o), 7, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(r.snapshots().is_empty());

    let gz = work.path().join("a.tar.gz");
    let s = Command::new("sh").arg("-c").arg(format!("gzip -c {} > {}", t.display(), gz.display())).status().unwrap();
    assert!(s.success());
    let v = r.json(&["backup", "--kind", "tar", gz.to_str().unwrap()]);
    assert_eq!(v["metadata"]["compressed"], "gzip", "{v}");
    let back = r.ok(&["restore", v["snapshot"].as_str().unwrap(), "--to", "-"]);
    assert_eq!(back, std::fs::read(&gz).unwrap());
}
