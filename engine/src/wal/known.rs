//! What a stanza's archive holds, for planning, without reading every
//! manifest: catalogue segments (`catseg.rs`) for the groups they cover,
//! listings and manifests for the rest, and a local cache so a second call
//! reads only what changed.
//!
//! Per timeline, the groups covered by catalogue segments form a run from
//! the first covered group to the first group without one. The run is
//! believed without listing it (see `catseg.rs` for why); before and after
//! it, the manifests are listed, and only those not already known (from a
//! catalogue segment or the cache, same key and size) are read.
//!
//! The cache (`<cache>/<repository id>/walcat`, RocksDB) keeps the
//! catalogue segments read, by key and listed size and time, the manifests
//! read, by key and size, and each timeline's listing before its run. A
//! warm call lists `walcat/<stanza>/` and each timeline's tail, and reads
//! what changed; when `walcat/<stanza>/changes` differs from the cached
//! one (manifests were deleted somewhere), it drops the cached segments
//! and listings and lists again. Like the index, it is only a cache: a
//! missing, locked or unreadable one means a cold call.

use crate::store::Backend as _;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cairn_formats::pg::{SegmentSize, WalFileName};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::catseg::{self, CatalogSegment};
use super::{get_named, validate_stanza, WalManifest};
use crate::repo::Repository;
use crate::repofile::ObjectKey;
use crate::store::ObjectInfo;
use crate::{Error, Result};

/// A listed object's identity: size and store time (ns since the epoch).
type Stamp = (u64, u64);

fn stamp(o: &ObjectInfo) -> Stamp {
    let t = o.modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (o.size, t)
}

#[derive(Serialize, Deserialize)]
struct CachedSegment {
    stamp: Stamp,
    segment: CatalogSegment,
}

#[derive(Serialize, Deserialize)]
struct CachedManifest {
    size: u64,
    manifest: WalManifest,
}

/// A timeline's listing before its run, up to segment `until`.
#[derive(Serialize, Deserialize)]
struct CachedBelow {
    until: u64,
    keys: Vec<(String, u64)>,
}

/// The cache of one repository's catalogues.
struct Cache {
    db: rocksdb::DB,
    path: PathBuf,
}

impl Cache {
    fn open(cache_dir: &Path, repo_id: &str) -> Option<Cache> {
        let path = cache_dir.join(repo_id).join("walcat");
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        match std::fs::create_dir_all(&path)
            .map_err(|e| e.to_string())
            .and_then(|()| rocksdb::DB::open(&o, &path).map_err(|e| e.to_string()))
        {
            Ok(db) => Some(Cache { db, path }),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "WAL catalogue cache unavailable; reading the repository");
                None
            }
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.db.get(key.as_bytes()).ok().flatten().and_then(|v| serde_json::from_slice(&v).ok())
    }

    /// Every key under `prefix`.
    fn scan(&self, prefix: &str) -> Vec<String> {
        self.db
            .prefix_iterator(prefix.as_bytes())
            .map_while(|r| r.ok())
            .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect()
    }
}

/// What one sync found.
struct Found {
    /// Manifests by key.
    manifests: BTreeMap<String, WalManifest>,
    /// Segments by key, with what to write to the cache (`None`: it has
    /// them already).
    segments: BTreeMap<String, Option<(Stamp, CatalogSegment)>>,
    /// Manifests listed outside the runs, likewise.
    read: BTreeMap<String, Option<(u64, WalManifest)>>,
    /// Listings before each run, to cache.
    below: BTreeMap<u32, CachedBelow>,
    /// `walcat/<stanza>/changes` as listed.
    marker: Option<Stamp>,
}

/// Every manifest of `stanza` (with empty `pieces`) and the segment size,
/// as [`super::catalog::archived`] returns them, from catalogue segments,
/// listings and the cache under `cache_dir` (none: a cold read).
pub async fn archived_with(
    repo: &Repository,
    stanza: &str,
    cache_dir: Option<&Path>,
) -> Result<(SegmentSize, Vec<(WalFileName, WalManifest)>)> {
    if std::env::var_os("CAIRN_TEST_WAL_FULL_READ").is_some() {
        // Test-only: the reference path, every manifest listed and read,
        // for end-to-end tests comparing plans.
        return super::catalog::archived(repo, stanza).await;
    }
    validate_stanza(stanza)?;
    let size = super::archived_segment_size(repo, stanza).await?;
    let cache = match cache_dir {
        Some(d) => tokio::task::block_in_place(|| Cache::open(d, &repo.config().id)),
        None => None,
    };
    tracing::debug!(cached = cache.is_some(), "WAL catalogue: stanza read, cache opened");
    let found = sync(repo, stanza, size, cache.as_ref()).await?;
    tracing::debug!(files = found.manifests.len(), segments = found.segments.len(), "WAL catalogue: synced");
    if let Some(c) = &cache {
        if let Err(e) = tokio::task::block_in_place(|| store_cache(c, stanza, &found)) {
            tracing::warn!(path = %c.path.display(), error = %e, "writing the WAL catalogue cache");
        }
    }
    let mut found_streams: Vec<WalManifest> =
        found.manifests.values().filter(|m| super::stream::segment_of_stream(&m.name).is_some()).cloned().collect();
    super::stream::merge_views(&mut found_streams, super::stream::journal_views(repo, stanza, size).await?);
    let mut out: Vec<(WalFileName, WalManifest)> =
        found.manifests.into_values().filter_map(|m| WalFileName::parse(&m.name, size).ok().map(|n| (n, m))).collect();
    out = super::stream::with_streamed(out, found_streams, size);
    out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    Ok((size, out))
}

/// The catalogue segments listed for `stanza`, opened (from the cache when
/// unchanged), by `(timeline, first segment)`, and the change marker.
async fn segments(
    repo: &Repository,
    stanza: &str,
    size: SegmentSize,
    cache: Option<&Cache>,
) -> Result<(BTreeMap<(u32, u64), (String, Stamp, CatalogSegment, bool)>, bool, Option<Stamp>)> {
    let listed = repo.store().list(&format!("walcat/{stanza}")).await?;
    let marker = listed.iter().find(|o| o.key == ObjectKey::WalChanges(stanza.into()).to_string()).map(stamp);
    let unchanged = cache.is_some_and(|c| c.get::<Option<Stamp>>(&format!("x\0{stanza}")) == Some(marker));
    let span = catseg::span(size);
    let mut wanted = Vec::new();
    for o in listed {
        let Some(ObjectKey::WalCatalog { timeline, first, .. }) = ObjectKey::parse(&o.key) else { continue };
        let Ok(WalFileName::Segment(s)) = WalFileName::parse(&first, size) else { continue };
        if s.timeline == timeline && s.segno % span == 0 {
            wanted.push((timeline, s.segno, o));
        }
    }
    let mut fetched = futures::stream::iter(wanted)
        .map(|(t, first, o)| async move {
            let cached = cache
                .filter(|_| unchanged)
                .and_then(|c| c.get::<CachedSegment>(&format!("g\0{}", o.key)))
                .filter(|c| c.stamp == stamp(&o));
            let fresh = cached.is_none();
            let seg = match cached {
                Some(c) => Ok(Some(c.segment)),
                None => catseg::read(repo, &o.key).await,
            };
            (t, first, o, seg, fresh)
        })
        .buffer_unordered(16);
    let mut out = BTreeMap::new();
    while let Some((t, first, o, seg, fresh)) = fetched.next().await {
        match seg {
            Ok(Some(s)) if s.first_segno == first && s.span == span => {
                out.insert((t, first), (o.key.clone(), stamp(&o), s, fresh));
            }
            Ok(_) => {}
            // An unreadable segment only means its group is listed.
            Err(e) => tracing::warn!(object = %o.key, error = %e, "catalogue segment skipped"),
        }
    }
    Ok((out, unchanged, marker))
}

/// Lists, reads and combines (see the module documentation).
async fn sync(repo: &Repository, stanza: &str, size: SegmentSize, cache: Option<&Cache>) -> Result<Found> {
    let span = catseg::span(size);
    let (segs, unchanged, marker) = segments(repo, stanza, size, cache).await?;
    let mut found = Found {
        manifests: BTreeMap::new(),
        segments: BTreeMap::new(),
        read: BTreeMap::new(),
        below: BTreeMap::new(),
        marker,
    };
    // The run of each timeline: first covered group and the end.
    let mut runs: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for &(t, first) in segs.keys() {
        let run = runs.entry(t).or_insert((first, first));
        if run.1 == first {
            run.1 = first + span;
        }
    }
    tracing::debug!(segments = segs.len(), unchanged, "WAL catalogue: segments read");
    let mut listed: Vec<ObjectInfo> = Vec::new();
    let newest = runs.keys().next_back().copied();
    for tli in 1..=newest.unwrap_or(0) {
        match runs.get(&tli) {
            None => listed.extend(catseg::list_segments(repo, stanza, tli, 0, None, size).await?),
            Some(&(start, end)) => {
                let reuse = cache
                    .filter(|_| unchanged)
                    .and_then(|c| c.get::<CachedBelow>(&format!("l\0{stanza}\0{tli:08X}")))
                    .filter(|b| b.until >= start);
                let below = match reuse {
                    Some(b) => {
                        b.keys.into_iter().filter(|(k, _)| k < &catseg::first_key(stanza, tli, start, size)).collect()
                    }
                    None => catseg::list_segments(repo, stanza, tli, 0, Some(start), size)
                        .await?
                        .into_iter()
                        .map(|o| (o.key, o.size))
                        .collect::<Vec<_>>(),
                };
                listed.extend(below.iter().map(|(k, s)| ObjectInfo {
                    key: k.clone(),
                    size: *s,
                    modified: std::time::UNIX_EPOCH,
                }));
                found.below.insert(tli, CachedBelow { until: start, keys: below });
                if Some(tli) == newest {
                    // One listing for this timeline's tail and every newer
                    // timeline (and the stanza's other keys, left out).
                    let offset = catseg::offset_before(stanza, tli, end, size);
                    let tail = repo.store().list_after(&format!("wal/{stanza}"), &offset, None).await?;
                    listed.extend(tail.into_iter().filter(|o| o.key.split('/').count() == 4));
                } else {
                    listed.extend(catseg::list_segments(repo, stanza, tli, end, None, size).await?);
                }
            }
        }
    }
    if newest.is_none() {
        // No catalogue segment: every manifest is listed.
        let all = repo.store().list(&format!("wal/{stanza}")).await?;
        listed.extend(all.into_iter().filter(|o| o.key.split('/').count() == 4));
    }

    // Entries of the runs are believed; the others only stand for a
    // listed key of the same size.
    let mut known: HashMap<String, (u64, &WalManifest)> = HashMap::new();
    for (&(t, first), (key, st, seg, fresh)) in &segs {
        let in_run = runs.get(&t).is_some_and(|&(s, e)| s <= first && first < e);
        for e in &seg.entries {
            let k = super::manifest_key(stanza, t, &e.manifest.name);
            if in_run {
                found.manifests.insert(k.clone(), e.manifest.clone());
            }
            known.insert(k, (e.stored, &e.manifest));
        }
        found.segments.insert(key.clone(), fresh.then(|| (*st, seg.clone())));
    }
    let mut to_read = Vec::new();
    for o in listed {
        if o.key.rsplit('/').next().and_then(super::stream::segment_of_stream).is_some() {
            // A `.stream` object is overwritten by every flush, possibly
            // with one of the same size: never taken from the cache.
            to_read.push(o);
            continue;
        }
        let cached = || {
            cache
                .and_then(|c| c.get::<CachedManifest>(&format!("m\0{}", o.key)))
                .filter(|c| c.size == o.size)
                .map(|c| c.manifest)
        };
        let (m, write) = match known.get(&o.key) {
            Some((stored, m)) if *stored == o.size => (Some((*m).clone()), true),
            _ => (cached(), false),
        };
        match m {
            Some(m) => {
                found.read.insert(o.key.clone(), write.then(|| (o.size, m.clone())));
                found.manifests.insert(o.key, m);
            }
            None => to_read.push(o),
        }
    }
    tracing::debug!(listed = to_read.len(), "WAL catalogue: listed; reading manifests not known");
    read_manifests(repo, to_read, &mut found).await?;
    Ok(found)
}

/// Reads the manifests not known yet; one that does not open fails the
/// call (a plan must not guess), one deleted meanwhile is left out.
async fn read_manifests(repo: &Repository, keys: Vec<ObjectInfo>, found: &mut Found) -> Result<()> {
    let mut fetched = futures::stream::iter(keys)
        .map(|o| async move {
            let r = get_named::<WalManifest>(repo, &o.key).await;
            (o, r)
        })
        .buffer_unordered(32);
    while let Some((o, r)) = fetched.next().await {
        match r? {
            Some(mut m) if o.key.ends_with(&format!("/{}", m.name)) => {
                m.pieces.clear();
                found.read.insert(o.key.clone(), Some((o.size, m.clone())));
                found.manifests.insert(o.key, m);
            }
            Some(m) => return Err(Error::corrupt(o.key, None, format!("manifest names {:?}", m.name))),
            None => {}
        }
    }
    Ok(())
}

/// Replaces what the cache holds for `stanza` with what this call found.
fn store_cache(c: &Cache, stanza: &str, found: &Found) -> Result<()> {
    let mut batch = rocksdb::WriteBatch::default();
    let json = |v: &dyn erased::Json| v.to_json();
    for (prefix, keep) in [
        (format!("g\0walcat/{stanza}/"), found.segments.keys().map(|k| format!("g\0{k}")).collect::<Vec<_>>()),
        (format!("m\0wal/{stanza}/"), found.read.keys().map(|k| format!("m\0{k}")).collect()),
        (format!("l\0{stanza}\0"), found.below.keys().map(|t| format!("l\0{stanza}\0{t:08X}")).collect()),
    ] {
        let keep: std::collections::HashSet<String> = keep.into_iter().collect();
        for k in c.scan(&prefix) {
            if !keep.contains(&k) {
                batch.delete(k.as_bytes());
            }
        }
    }
    for (k, (st, seg)) in found.segments.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))) {
        batch.put(format!("g\0{k}").as_bytes(), json(&CachedSegment { stamp: *st, segment: seg.clone() }));
    }
    for (k, (size, m)) in found.read.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))) {
        batch.put(format!("m\0{k}").as_bytes(), json(&CachedManifest { size: *size, manifest: m.clone() }));
    }
    batch.put(format!("x\0{stanza}").as_bytes(), json(&found.marker));
    for (t, b) in &found.below {
        batch.put(format!("l\0{stanza}\0{t:08X}").as_bytes(), json(b));
    }
    c.db.write(batch).map_err(|e| Error::Index { path: c.path.clone(), detail: e.to_string() })
}

mod erased {
    /// Serialises any cached value.
    pub(super) trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}
