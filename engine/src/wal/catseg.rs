//! Catalogue segments: the facts of many WAL manifests in one sealed
//! object, so a host with no cache plans a restore from a few objects
//! instead of reading every manifest.
//!
//! # Groups
//! A stanza's segments are grouped per timeline by segment number: a group
//! is [`span`] consecutive numbers (256, or one log file's worth for
//! segments over 16 MiB), aligned, so its files are exactly the manifest
//! keys from its first segment's name up to the next group's (partial and
//! `.backup` files sort with their segment). History files are in no group.
//! Group `g` of timeline `T` has at most one catalogue segment,
//! `walcat/<stanza>/<T>/<g's first segment name>`.
//!
//! # Why an entry can be believed
//! A catalogue segment claims to list every manifest of its group. Every
//! change to a group keeps that claim true or removes it:
//! 1. Writing one ([`compact`]) lists the group, reads its manifests,
//!    writes the object, then lists the group again: a difference (a push
//!    or a deletion raced it) deletes the object.
//! 2. A push, after its manifest is durable, deletes the catalogue segment
//!    of its group if there is one (one `HEAD` per push; a group is only
//!    compacted once the timeline is [`LAG`] segments past it, so normally
//!    there is none). With 1, either the compactor's second listing sees the
//!    manifest or the push sees the object.
//! 3. Whoever deletes manifests (`pg expire`, a push withdrawing its
//!    manifest) deletes the group's catalogue segment before and after, then
//!    rewrites `walcat/<stanza>/changes`, so a warm cache lists again
//!    what it skipped.
//!
//! So a reader trusts a catalogue segment without listing its group, which
//! is what makes planning fast on S3 (listing 20,000 keys from moto takes
//! 7 s; reading 80 catalogue segments a fraction of that).

use crate::store::{Backend as _, BackendExt as _, ObjectInfo, PutMode};

use cairn_formats::pg::{SegmentName, SegmentSize, WalFileName};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{get_named, seal_named, WalManifest};
use crate::repo::Repository;
use crate::repofile::{ObjectKey, RepoFile};
use crate::{Error, Result};

/// Version of a catalogue segment.
pub const CATALOG_VERSION: u32 = 1;
/// A push of the segment this far into a group compacts the group before
/// it: late pushes of the previous group (`wal push --ahead` runs two at a
/// time) are normally done by then.
pub const LAG: u64 = 8;

/// One manifest as a catalogue segment records it: everything but where
/// its content is (planning never reads the content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Bytes of the sealed manifest object, compared with a listing's size.
    pub stored: u64,
    /// The manifest, `pieces` left empty.
    pub manifest: WalManifest,
}

/// `walcat/<stanza>/<T>/<first>`: every manifest of one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogSegment {
    /// [`CATALOG_VERSION`].
    pub version: u32,
    /// The stanza.
    pub stanza: String,
    /// The timeline.
    pub timeline: u32,
    /// The group's first segment number.
    pub first_segno: u64,
    /// How many segment numbers the group spans.
    pub span: u64,
    /// The group's manifests, by key order.
    pub entries: Vec<CatalogEntry>,
}

impl RepoFile for CatalogSegment {
    const VERSION: u32 = CATALOG_VERSION;
    /// Stanza, timeline and the group's first segment name.
    type Id = (String, u32, String);
    fn key((stanza, timeline, first): &(String, u32, String)) -> ObjectKey {
        ObjectKey::WalCatalog { stanza: stanza.clone(), timeline: *timeline, first: first.clone() }
    }
}

/// `walcat/<stanza>/changes`: its content only makes it differ.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChangeMarker {
    version: u32,
    changed: String,
    nonce: u64,
}

impl RepoFile for ChangeMarker {
    const VERSION: u32 = 1;
    type Id = str;
    fn key(stanza: &str) -> ObjectKey {
        ObjectKey::WalChanges(stanza.to_string())
    }
}

/// Segment numbers per group.
pub fn span(size: SegmentSize) -> u64 {
    (0x1_0000_0000u64 / u64::from(size.bytes())).clamp(1, 256)
}

/// The group of a WAL file: `(timeline, first segment number)`; `None`
/// for history files.
pub fn group_of(name: &WalFileName, size: SegmentSize) -> Option<(u32, u64)> {
    let s = match name {
        WalFileName::Segment(s) | WalFileName::Partial(s) => s,
        WalFileName::Backup { segment, .. } => segment,
        WalFileName::History { .. } => return None,
    };
    Some((s.timeline, s.segno - s.segno % span(size)))
}

/// The catalogue segment's key of a group.
pub fn segment_key(stanza: &str, tli: u32, first: u64, size: SegmentSize) -> String {
    let name = SegmentName { timeline: tli, segno: first }.format(size);
    ObjectKey::WalCatalog { stanza: stanza.into(), timeline: tli, first: name }.to_string()
}

/// The listing offset just before segment `segno`'s keys on `tli`: every
/// key of earlier segments sorts at or before it (for segment 0, every key
/// of the timeline, its history file included, sorts after it). The
/// previous segment's name followed by `0` sorts after its own keys (the
/// name, then `.partial` or `.…backup`) and before the next segment's;
/// `~` would be simpler but object_store's paths escape it as `%7E`.
pub(crate) fn offset_before(stanza: &str, tli: u32, segno: u64, size: SegmentSize) -> String {
    match segno.checked_sub(1) {
        Some(prev) => format!("wal/{stanza}/{tli:08X}/{}0", SegmentName { timeline: tli, segno: prev }.format(size)),
        None => format!("wal/{stanza}/{tli:08X}/"),
    }
}

/// The first key of segment `segno`'s files on `tli`.
pub(crate) fn first_key(stanza: &str, tli: u32, segno: u64, size: SegmentSize) -> String {
    format!("wal/{stanza}/{tli:08X}/{}", SegmentName { timeline: tli, segno }.format(size))
}

/// Manifest keys of `tli` from segment `from` (inclusive) to `until`
/// (exclusive), with their sizes, in pages.
pub(crate) async fn list_segments(
    repo: &Repository,
    stanza: &str,
    tli: u32,
    from: u64,
    until: Option<u64>,
    size: SegmentSize,
) -> Result<Vec<ObjectInfo>> {
    const PAGE: usize = 1000;
    let dir = format!("wal/{stanza}/{tli:08X}");
    let end = until.map(|u| first_key(stanza, tli, u, size));
    let mut offset = offset_before(stanza, tli, from, size);
    let mut out = Vec::new();
    loop {
        let page = repo.store().list_after(&dir, &offset, until.map(|_| PAGE)).await?;
        let full = until.is_some() && page.len() == PAGE;
        let Some(last) = page.last() else { break };
        offset = last.key.clone();
        let before_end = |o: &ObjectInfo| end.as_ref().is_none_or(|e| &o.key < e);
        let reached = !page.iter().all(before_end);
        out.extend(page.into_iter().filter(|o| before_end(o) && o.key.split('/').count() == 4));
        if reached || !full {
            break;
        }
    }
    Ok(out)
}

/// Writes the catalogue segment of group `first` on `tli` (see the module
/// documentation, step 1). Returns whether one now stands; an unreadable
/// manifest leaves the group without one.
pub async fn compact(repo: &Repository, stanza: &str, tli: u32, first: u64, size: SegmentSize) -> Result<bool> {
    let key = segment_key(stanza, tli, first, size);
    let until = Some(first + span(size));
    let in_group = |o: &ObjectInfo| {
        let name = o.key.rsplit('/').next().unwrap_or_default();
        WalFileName::parse(name, size).ok().and_then(|n| group_of(&n, size)) == Some((tli, first))
    };
    let listed: Vec<ObjectInfo> =
        list_segments(repo, stanza, tli, first, until, size).await?.into_iter().filter(in_group).collect();
    if listed.is_empty() {
        repo.store().delete(&key).await?;
        return Ok(false);
    }
    let mut entries = Vec::with_capacity(listed.len());
    let mut read = futures::stream::iter(&listed)
        .map(|o| async move { (o, get_named::<WalManifest>(repo, &o.key).await) })
        .buffered(32);
    while let Some((o, r)) = read.next().await {
        match r? {
            Some(mut m) if o.key.ends_with(&format!("/{}", m.name)) => {
                m.pieces.clear();
                entries.push(CatalogEntry { stored: o.size, manifest: m });
            }
            // Deleted meanwhile, or not what its key says: no claim.
            _ => return Ok(false),
        }
    }
    let seg = CatalogSegment {
        version: CATALOG_VERSION,
        stanza: stanza.into(),
        timeline: tli,
        first_segno: first,
        span: span(size),
        entries,
    };
    repo.store().put_opts(&key, seal_named(repo, &key, &seg), PutMode::Overwrite).await?;
    let again: Vec<ObjectInfo> =
        list_segments(repo, stanza, tli, first, until, size).await?.into_iter().filter(in_group).collect();
    let same =
        again.len() == listed.len() && again.iter().zip(&listed).all(|(a, b)| a.key == b.key && a.size == b.size);
    if !same {
        repo.store().delete(&key).await?;
    }
    Ok(same)
}

/// Reads a catalogue segment listed at `key`.
pub(crate) async fn read(repo: &Repository, key: &str) -> Result<Option<CatalogSegment>> {
    let seg: Option<CatalogSegment> = get_named(repo, key).await?;
    if let Some(s) = &seg {
        let expected = ObjectKey::parse(key);
        let names_ok = s.entries.iter().all(|e| e.manifest.name.starts_with(&format!("{:08X}", s.timeline)));
        if !matches!(expected, Some(ObjectKey::WalCatalog { timeline, .. }) if timeline == s.timeline) || !names_ok {
            return Err(Error::corrupt(key, None, "catalogue segment describes another timeline"));
        }
    }
    Ok(seg)
}

/// Step 2 of the module documentation: after a push made `name`'s
/// manifest durable, its group's catalogue segment, if any, is deleted;
/// and a push [`LAG`] segments into a group compacts the group before it,
/// best effort (a failure leaves that group to be listed).
pub(crate) async fn after_push(repo: &Repository, stanza: &str, name: &WalFileName, size: SegmentSize) -> Result<()> {
    let Some((tli, first)) = group_of(name, size) else { return Ok(()) };
    let key = segment_key(stanza, tli, first, size);
    if repo.store().exists(&key).await? {
        repo.store().delete(&key).await?;
    }
    let lag = LAG.min(span(size) / 2);
    if let WalFileName::Segment(s) = name {
        if s.segno % span(size) == lag && first >= span(size) {
            if let Err(e) = compact(repo, stanza, tli, first - span(size), size).await {
                tracing::warn!(stanza, error = %e, "compacting the WAL catalogue (it will be listed instead)");
            }
        }
    }
    Ok(())
}

/// Step 2 for a push that found its manifest already there: a push that
/// died between its manifest and step 2 is retried by PostgreSQL, and the
/// retry must finish the step. Only this (rare) path reads the stanza
/// record for it.
pub(crate) async fn after_existing(repo: &Repository, stanza: &str, name: &str) -> Result<()> {
    let Some(record) = super::load_stanza(repo, stanza).await? else { return Ok(()) };
    let Ok(size) = SegmentSize::new(u64::from(record.segment_size)) else { return Ok(()) };
    let Some((tli, first)) = WalFileName::parse(name, size).ok().and_then(|n| group_of(&n, size)) else {
        return Ok(());
    };
    let key = segment_key(stanza, tli, first, size);
    if repo.store().exists(&key).await? {
        repo.store().delete(&key).await?;
    }
    Ok(())
}

/// Step 3 of the module documentation, before and after deleting the
/// manifests of `groups`: their catalogue segments go.
pub(crate) async fn forget_groups(
    repo: &Repository,
    stanza: &str,
    groups: &[(u32, u64)],
    size: SegmentSize,
) -> Result<()> {
    let keys: Vec<String> = groups.iter().map(|(t, f)| segment_key(stanza, *t, *f, size)).collect();
    repo.store().delete_many(&keys).await
}

/// Step 3's last write: rewrites `walcat/<stanza>/changes`.
pub(crate) async fn mark_changed(repo: &Repository, stanza: &str) -> Result<()> {
    let key = ChangeMarker::key(stanza).to_string();
    let m = ChangeMarker { version: 1, changed: chrono::Utc::now().to_rfc3339(), nonce: rand::random() };
    repo.store().put_opts(&key, seal_named(repo, &key, &m), PutMode::Overwrite).await?;
    Ok(())
}

/// The groups of WAL files, deduplicated.
fn groups_of(names: &[(u32, String)], size: SegmentSize) -> Vec<(u32, u64)> {
    let mut groups: Vec<(u32, u64)> =
        names.iter().filter_map(|(_, n)| WalFileName::parse(n, size).ok().and_then(|n| group_of(&n, size))).collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Deletes the manifests of `names` (`(timeline, name)`) as step 3 of the
/// module documentation says: their groups' catalogue segments before and
/// after, then the change marker.
pub async fn delete_manifests(
    repo: &Repository,
    stanza: &str,
    names: &[(u32, String)],
    size: SegmentSize,
) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let groups = groups_of(names, size);
    forget_groups(repo, stanza, &groups, size).await?;
    let keys: Vec<String> = names.iter().map(|(t, n)| super::manifest_key(stanza, *t, n)).collect();
    for k in &keys {
        repo.store().delete(k).await?;
    }
    forget_groups(repo, stanza, &groups, size).await?;
    mark_changed(repo, stanza).await
}

/// Writes again the catalogue segments of the groups of `names` (files
/// just deleted) that still hold files; best effort (a group without one
/// is listed instead).
pub async fn recompact(repo: &Repository, stanza: &str, names: &[(u32, String)], size: SegmentSize) {
    for (tli, first) in groups_of(names, size) {
        if let Err(e) = compact(repo, stanza, tli, first, size).await {
            tracing::warn!(stanza, error = %e, "rewriting a WAL catalogue segment after a deletion");
        }
    }
}

/// Writes the catalogue segments that closed groups lack (those archived
/// before catalogue segments existed, or whose writing failed): a group is
/// closed once its timeline has a segment [`LAG`] past its end. `pg
/// expire` calls it with what it read; best effort.
pub async fn backfill(repo: &Repository, stanza: &str, archived: &[(WalFileName, WalManifest)], size: SegmentSize) {
    let span = span(size);
    let mut newest: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    let mut groups = std::collections::BTreeSet::new();
    for (n, _) in archived {
        if let WalFileName::Segment(s) = n {
            let e = newest.entry(s.timeline).or_insert(s.segno);
            *e = (*e).max(s.segno);
        }
        groups.extend(group_of(n, size));
    }
    let have: std::collections::HashSet<String> = match repo.store().list(&format!("walcat/{stanza}")).await {
        Ok(l) => l.into_iter().map(|o| o.key).collect(),
        Err(_) => return,
    };
    for (tli, first) in groups {
        let closed = newest.get(&tli).is_some_and(|n| *n >= first + span + LAG.min(span / 2));
        if closed && !have.contains(&segment_key(stanza, tli, first, size)) {
            if let Err(e) = compact(repo, stanza, tli, first, size).await {
                tracing::warn!(stanza, error = %e, "writing a missing WAL catalogue segment");
            }
        }
    }
}

/// Archived files without content, for tests and measurements that need
/// thousands of them cheaply: the manifest is written create-only as a
/// push writes it, then `after_push` runs as after a push.
#[doc(hidden)]
pub async fn put_synthetic(repo: &Repository, stanza: &str, m: &WalManifest, size: SegmentSize) -> Result<()> {
    let name = WalFileName::parse(&m.name, size).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let key = super::manifest_key(stanza, name.timeline(), &m.name);
    repo.store().put_create(&key, seal_named(repo, &key, m)).await?;
    after_push(repo, stanza, &name, size).await
}

/// The stanza record a first push writes, for [`put_synthetic`].
#[doc(hidden)]
pub async fn put_synthetic_stanza(repo: &Repository, record: &super::StanzaRecord) -> Result<()> {
    let key = super::stanza_key(&record.stanza);
    repo.store().put_create(&key, seal_named(repo, &key, record)).await
}

/// What `wal verify` finds wrong with the catalogue segments of `stanza`,
/// compared with its manifests (`all`, every one read, keyed): an entry
/// for a manifest that is not there or differs, or a manifest of a
/// covered group that is missing from it.
pub(crate) async fn verify(
    repo: &Repository,
    stanza: &str,
    all: &[(String, WalManifest)],
    size: SegmentSize,
) -> Result<Vec<crate::commands::check::Problem>> {
    use crate::commands::check::Problem;
    let by_key: std::collections::HashMap<&str, &WalManifest> = all.iter().map(|(k, m)| (k.as_str(), m)).collect();
    let mut problems = Vec::new();
    for o in repo.store().list(&format!("walcat/{stanza}")).await? {
        if !matches!(ObjectKey::parse(&o.key), Some(ObjectKey::WalCatalog { .. })) {
            continue;
        }
        let seg = match read(repo, &o.key).await {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                problems.push(Problem { object: o.key, message: e.to_string() });
                continue;
            }
        };
        let mut listed = std::collections::HashSet::new();
        for e in &seg.entries {
            let k = super::manifest_key(stanza, seg.timeline, &e.manifest.name);
            let same = by_key.get(k.as_str()).is_some_and(|m| {
                let mut m = (*m).clone();
                m.pieces.clear();
                m == e.manifest
            });
            if !same {
                problems.push(Problem {
                    object: o.key.clone(),
                    message: format!("lists {k}, which is not the archived manifest"),
                });
            }
            listed.insert(k);
        }
        for (k, m) in all {
            let group = WalFileName::parse(&m.name, size).ok().and_then(|n| group_of(&n, size));
            if group == Some((seg.timeline, seg.first_segno)) && !listed.contains(k) {
                problems.push(Problem { object: o.key.clone(), message: format!("does not list {k}") });
            }
        }
    }
    Ok(problems)
}
