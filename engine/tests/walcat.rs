//! The WAL catalogue read through catalogue segments and the local cache
//! (`wal::archived_with`) is exactly what reading every manifest
//! (`wal::catalog::archived`) gives, cold and warm, after pushes (late
//! ones into compacted groups included), after deletions seen by a warm
//! cache filled before them, and on a second timeline.

use std::path::Path;

use cairn_engine::store::{Backend as _, Location, Store};
use cairn_engine::wal::catseg::{self, delete_manifests, put_synthetic, put_synthetic_stanza, recompact};
use cairn_engine::wal::{
    archived_with, catalog, CommitPoint, HistoryLine, SegmentFacts, StanzaRecord, WalFileKind, WalManifest,
};
use cairn_engine::{check, InitOptions, ReadData, Repository, Secret};
use cairn_formats::pg::{SegmentName, SegmentSize};

const STANZA: &str = "main";
const SIZE: SegmentSize = SegmentSize::DEFAULT;

fn facts(tli: u32, segno: u64) -> SegmentFacts {
    let start = segno * u64::from(SIZE.bytes());
    let at = |k: u64| CommitPoint {
        lsn: start + 100 * k,
        time_us: 1_700_000_000_000_000 + (segno * 1000 + k) as i64,
        xid: (segno * 10 + k) as u32,
    };
    SegmentFacts {
        postgresql: 15,
        system_id: "7000000000000000001".into(),
        timeline: tli,
        start_lsn: start,
        first_record: Some(start + 40),
        last_record: Some(start + 4000),
        end_of_records: start + 4100,
        records: 50,
        commits: 2,
        aborts: 0,
        first_commit: Some(at(1)),
        last_commit: Some(at(2)),
        commit_xids: Some(((segno * 10 + 1) as u32, (segno * 10 + 2) as u32)),
        restore_points: Vec::new(),
        end: "complete".into(),
        stopped: None,
    }
}

fn manifest(name: String, kind: WalFileKind) -> WalManifest {
    WalManifest {
        version: 1,
        name,
        kind,
        size: 16 << 20,
        blake3: "00".repeat(32),
        pushed: "2026-12-02T00:00:00Z".into(),
        host: "test".into(),
        pieces: Vec::new(),
        facts: None,
        history: None,
        backup: None,
    }
}

fn segment(tli: u32, segno: u64) -> WalManifest {
    let mut m = manifest(SegmentName { timeline: tli, segno }.format(SIZE), WalFileKind::Segment);
    m.facts = Some(facts(tli, segno));
    m
}

async fn push_range(repo: &Repository, tli: u32, segnos: impl Iterator<Item = u64>) {
    for s in segnos {
        put_synthetic(repo, STANZA, &segment(tli, s), SIZE).await.unwrap();
    }
}

/// The three reads agree: full, cold through the catalogue, and through
/// the cache at `cache` (warm if it was filled before).
async fn same(repo: &Repository, cache: &Path, what: &str) -> usize {
    let (_, full) = catalog::archived(repo, STANZA).await.unwrap();
    let full: Vec<_> = full
        .into_iter()
        .map(|(n, mut m)| {
            m.pieces.clear();
            (n, m)
        })
        .collect();
    let (_, cold) = archived_with(repo, STANZA, None).await.unwrap();
    assert!(cold == full, "{what}: cold read differs ({} against {} files)", cold.len(), full.len());
    let (_, warm) = archived_with(repo, STANZA, Some(cache)).await.unwrap();
    assert!(warm == full, "{what}: cached read differs ({} against {} files)", warm.len(), full.len());
    full.len()
}

async fn segments_of(repo: &Repository) -> Vec<String> {
    let mut v: Vec<String> = repo.store().list("walcat/main").await.unwrap().into_iter().map(|o| o.key).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_reads_equal_full_reads_through_pushes_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap(), true).unwrap();
    let secret = Secret::create_key_file(&dir.path().join("key")).unwrap();
    let repo = Repository::init(store, &secret, InitOptions::default()).await.unwrap();
    let cache = dir.path().join("cache");
    put_synthetic_stanza(
        &repo,
        &StanzaRecord {
            version: 1,
            stanza: STANZA.into(),
            system_id: "7000000000000000001".into(),
            segment_size: SIZE.bytes(),
            block_size: 8192,
            wal_magic: 0xD110,
            postgresql: 15,
            created: "2026-12-02T00:00:00Z".into(),
            host: "test".into(),
        },
    )
    .await
    .unwrap();

    // Timeline 1: segments 1..=700 but 400, and a backup history file.
    push_range(&repo, 1, (1..=700).filter(|s| *s != 400)).await;
    let mut b = manifest(
        format!("{}.00000028.backup", SegmentName { timeline: 1, segno: 3 }.format(SIZE)),
        WalFileKind::Backup,
    );
    b.backup = Some([("START WAL LOCATION".to_string(), "0/3000028".to_string())].into());
    put_synthetic(&repo, STANZA, &b, SIZE).await.unwrap();
    assert_eq!(same(&repo, &cache, "timeline 1").await, 700);
    // Groups 0 and 1 were compacted by the pushes of 264 and 520; the late
    // backup history file removed group 0's.
    assert_eq!(segments_of(&repo).await.len(), 1);
    assert_eq!(same(&repo, &cache, "timeline 1, warm").await, 700);

    // Timeline 2 branches at segment 650: its history, then 650..=800.
    let mut h = manifest("00000002.history".into(), WalFileKind::History);
    h.history = Some(vec![HistoryLine { timeline: 1, switchpoint: 650 * u64::from(SIZE.bytes()), reason: "x".into() }]);
    put_synthetic(&repo, STANZA, &h, SIZE).await.unwrap();
    push_range(&repo, 2, 650..=800).await;
    assert_eq!(same(&repo, &cache, "two timelines").await, 852);

    // A late push into compacted group 1 (256..=511) removes its segment.
    put_synthetic(&repo, STANZA, &segment(1, 400), SIZE).await.unwrap();
    assert_eq!(same(&repo, &cache, "late push").await, 853);
    assert_eq!(segments_of(&repo).await.len(), 1, "group 1's segment deleted, group 512 of timeline 2 written");
    // The next group boundary compacts group 512 of timeline 1 but not
    // group 1 again: it stays listed, and still agrees.
    push_range(&repo, 1, 701..=780).await;
    assert_eq!(same(&repo, &cache, "more pushes").await, 933);

    // Groups 0 and 1 compacted again (as `pg expire` does after deleting).
    for first in [0, 256] {
        assert!(catseg::compact(&repo, STANZA, 1, first, SIZE).await.unwrap());
    }
    assert_eq!(same(&repo, &cache, "recompacted").await, 933);

    // Expiry-like deletion of 1..=300 (group 0 whole, group 1 in part),
    // seen by a cache filled before it.
    let removed: Vec<(u32, String)> =
        (1..=300).map(|s| (1, SegmentName { timeline: 1, segno: s }.format(SIZE))).collect();
    delete_manifests(&repo, STANZA, &removed, SIZE).await.unwrap();
    assert_eq!(same(&repo, &cache, "after deletion, before recompaction").await, 633);
    recompact(&repo, STANZA, &removed, SIZE).await;
    assert!(segments_of(&repo).await.iter().any(|k| k.ends_with("/000000010000000100000000")), "group 1 rewritten");
    assert_eq!(same(&repo, &cache, "after deletion").await, 633);

    // A deletion in the tail (a withdrawn push).
    delete_manifests(&repo, STANZA, &[(1, SegmentName { timeline: 1, segno: 780 }.format(SIZE))], SIZE).await.unwrap();
    assert_eq!(same(&repo, &cache, "withdrawn").await, 632);

    // A closed group without a catalogue segment (archived by an older
    // cairn, or its writing failed) gets one from `backfill`.
    let group_512 = catseg::segment_key(STANZA, 1, 512, SIZE);
    repo.store().delete(&group_512).await.unwrap();
    assert_eq!(same(&repo, &cache, "group 512 uncovered").await, 632);
    let (_, all) = catalog::archived(&repo, STANZA).await.unwrap();
    catseg::backfill(&repo, STANZA, &all, SIZE).await;
    assert!(segments_of(&repo).await.contains(&group_512));
    assert_eq!(same(&repo, &cache, "backfilled").await, 632);

    // `cairn check` compares catalogue segments with the manifests: clean
    // now, and a manifest deleted behind the protocol's back (as by a
    // cairn without catalogue segments) is reported.
    let walcat = |r: &cairn_engine::CheckReport| r.problems.iter().filter(|p| p.object.starts_with("walcat/")).count();
    assert_eq!(walcat(&check(&repo, ReadData::None).await.unwrap()), 0);
    let victim = format!("wal/main/00000001/{}", SegmentName { timeline: 1, segno: 600 }.format(SIZE));
    repo.store().delete(&victim).await.unwrap();
    let report = check(&repo, ReadData::None).await.unwrap();
    assert_eq!(walcat(&report), 1, "{:?}", report.problems);
}
