//! `wal push --ahead`'s receipts: archive_command's call for a file the
//! background pusher stored accepts the pusher's receipt instead of hashing
//! the file, but only while the file is the one that was stored.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use cairn_tests::repo::code;

use super::wal::{first_segment, manifest_names, push_ahead_cmd, ready_dir, runtime_dir, wal, Archive};

const NAME: &str = "000000010000000000000001";

/// The receipts the pusher left for stanza files in `run`.
fn receipts(run: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(run.join("cairn")).unwrap().flatten() {
        if d.path().extension().is_some_and(|x| x == "receipts") {
            out.extend(std::fs::read_dir(d.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()));
        }
    }
    out
}

#[test]
fn archive_command_trusts_a_receipt_only_for_the_stored_file() {
    let a = Archive::new(None);
    let run = runtime_dir(&a);
    let seg = first_segment(a.root(), "one");
    let original = std::fs::read(&seg).unwrap();
    let dir = ready_dir(&a, &seg, "pg_wal");
    let file = dir.join(NAME);
    let f = file.to_str().unwrap();
    // A segment is ready some time after its last write; a file changed in
    // the last 50 ms gets no receipt (timestamps advance in clock ticks).
    std::thread::sleep(Duration::from_millis(200));
    let ahead = |stanza: &str| {
        let out = push_ahead_cmd(&a, &run, stanza, &dir).output().unwrap();
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(manifest_names(&a, stanza), vec![NAME.to_string()]);
        assert_eq!(receipts(&run), vec![NAME.to_string()], "the pusher left no receipt");
    };
    let archive_command = |stanza: &str| {
        let mut c = a.repo.cmd(&["wal", "push", "--stanza", stanza, "--ahead", "2", "--json", f]);
        c.env("XDG_RUNTIME_DIR", &run);
        c.output().unwrap()
    };

    // The file the pusher stored: acknowledged from the receipt, which is
    // then gone.
    ahead("same");
    let out = archive_command("same");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&r["already_archived"], &r["receipt"]), (&true.into(), &true.into()), "{r}");
    assert_eq!(receipts(&run), Vec::<String>::new());

    // Rewritten in place after it was stored (same inode, same size, one
    // byte different): the receipt does not vouch for it; the content is
    // compared and refused, and the stored copy is untouched.
    ahead("rewritten");
    let mut bytes = original.clone();
    bytes[8 << 20] ^= 1;
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().write_all_at(&bytes, 0).unwrap();
    let out = archive_command("rewritten");
    assert_eq!(code(&out), 8, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already archived with different content"));
    assert_eq!(receipts(&run), Vec::<String>::new(), "a receipt is used once");
    let dest = a.root().join("rewritten.out");
    assert_eq!(code(&wal(&a, &["fetch", "--stanza", "rewritten", NAME, dest.to_str().unwrap()])), 0);
    assert!(std::fs::read(&dest).unwrap() == original, "the stored copy changed");

    // The stored content again, but as another file (a new inode): hashed,
    // found identical, acknowledged without the receipt.
    std::fs::write(&file, &original).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ahead("copied");
    let copy = dir.join("copy");
    std::fs::copy(&file, &copy).unwrap();
    std::fs::rename(&copy, &file).unwrap();
    let out = archive_command("copied");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["already_archived"], true, "{r}");
    assert!(r.get("receipt").is_none(), "{r}");
    a.repo.ok(&["wal", "verify", "--stanza", "copied"]);

    // The manifest the receipt speaks of is gone: the file is stored again.
    std::thread::sleep(Duration::from_millis(200));
    ahead("lost");
    let manifest = a.root().join(format!("repo/wal/lost/00000001/{NAME}"));
    std::fs::remove_file(&manifest).unwrap();
    let out = archive_command("lost");
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["already_archived"], false, "{r}");
    assert!(manifest.exists());

    // A receipt from another repository (same stanza, same pg_wal, same
    // state directory) proves nothing about this one.
    ahead("other");
    let b = Archive::new(None);
    let mut c = b.repo.cmd(&["wal", "push", "--stanza", "other", "--ahead", "2", "--json", f]);
    c.env("XDG_RUNTIME_DIR", &run);
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["already_archived"], false, "{r}");
    assert_eq!(receipts(&run), Vec::<String>::new());
    b.repo.ok(&["wal", "verify", "--stanza", "other"]);
}
