//! `cairn forget`: apply retention policies per group and remove the
//! snapshot manifests they do not keep.
//!
//! Forgetting only deletes `snapshots/<id>` objects, one at a time, each
//! delete atomic: a crash leaves some removed and some not, and a re-run
//! decides the same for those left (idempotent). Nothing else is touched;
//! `prune` reclaims the space. Pins (`pins/<id>`) are sealed objects bound
//! to their key; a pinned snapshot is never forgotten.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::policy::{apply, Candidate, Policy};
use crate::ids::SnapshotId;
use crate::repo::Repository;
use crate::repofile::envelope::{self, Binding};
use crate::repofile::{Kind, ObjectKey};
use crate::snapshot::Snapshot;
use crate::store::{Backend as _, BackendExt as _};
use crate::{Error, Result};

/// How snapshots are grouped before a policy is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    /// By source name and host (the default: two hosts writing one source
    /// each keep their own history).
    #[default]
    SourceHost,
    /// By source name only.
    Source,
}

/// The policies to apply: one for every group, or one per source name
/// (from the config file). A group with no policy is kept whole.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// Applies to every group not named in `per_source`.
    pub all: Option<Policy>,
    /// By source name.
    pub per_source: BTreeMap<String, Policy>,
    /// Grouping.
    pub group_by: GroupBy,
    /// Only snapshots of these sources (empty: all).
    pub sources: Vec<String>,
    /// Only snapshots taken on these hosts (empty: all).
    pub hosts: Vec<String>,
}

impl Policies {
    fn for_source(&self, name: &str) -> Option<&Policy> {
        self.per_source.get(name).or(self.all.as_ref())
    }
}

/// What forget needs to know about a snapshot.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its id.
    pub id: SnapshotId,
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Host.
    pub host: String,
    /// Source name.
    pub source: String,
    /// Source kind.
    pub kind: String,
    /// Tags.
    pub tags: Vec<String>,
}

impl Listed {
    /// The fields of a loaded manifest.
    pub fn of(id: SnapshotId, s: &Snapshot) -> Result<Listed> {
        let time = DateTime::parse_from_rfc3339(&s.time)
            .map_err(|e| Error::corrupt(ObjectKey::Snapshot(id).to_string(), None, format!("bad time: {e}")))?
            .with_timezone(&Utc);
        Ok(Listed {
            id,
            time,
            host: s.host.clone(),
            source: s.source.name.clone(),
            kind: s.source.kind.clone(),
            tags: s.tags.clone(),
        })
    }
}

/// One row of the plan: a snapshot, its group and the decision.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Snapshot id.
    pub id: SnapshotId,
    /// RFC 3339.
    pub time: String,
    /// Host.
    pub host: String,
    /// Source name.
    pub source: String,
    /// The group (`source` or `source@host`).
    pub group: String,
    /// Kept.
    pub keep: bool,
    /// The rules that kept it; `no policy` when its group has none.
    pub reasons: Vec<String>,
}

/// Decides, without touching the repository, which snapshots to keep.
/// Rows are grouped, groups sorted, snapshots newest first. Snapshots
/// outside the `sources`/`hosts` filter are left out.
pub fn plan(snaps: &[Listed], policies: &Policies, pinned: &HashSet<SnapshotId>) -> Vec<Row> {
    let mut groups: BTreeMap<String, Vec<&Listed>> = BTreeMap::new();
    for s in snaps {
        if (!policies.sources.is_empty() && !policies.sources.contains(&s.source))
            || (!policies.hosts.is_empty() && !policies.hosts.contains(&s.host))
        {
            continue;
        }
        let g = match policies.group_by {
            GroupBy::SourceHost => format!("{}@{}", s.source, s.host),
            GroupBy::Source => s.source.clone(),
        };
        groups.entry(g).or_default().push(s);
    }
    let mut rows = Vec::new();
    for (group, mut members) in groups {
        members.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let decisions = match policies.for_source(&members[0].source) {
            Some(policy) if !policy.is_empty() => {
                let cands: Vec<Candidate> = members
                    .iter()
                    .map(|s| Candidate { time: s.time, tags: s.tags.clone(), pinned: pinned.contains(&s.id) })
                    .collect();
                // A base backup's newest is never removed: WAL recovery starts from it.
                let newest = members.iter().any(|s| s.kind == crate::sources::pg::base::KIND);
                apply(policy, &cands, newest)
            }
            _ => members
                .iter()
                .map(|_| super::policy::Decision { keep: true, reasons: vec!["no policy".into()] })
                .collect(),
        };
        for (s, d) in members.iter().zip(decisions) {
            rows.push(Row {
                id: s.id,
                time: s.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                host: s.host.clone(),
                source: s.source.clone(),
                group: group.clone(),
                keep: d.keep,
                reasons: d.reasons,
            });
        }
    }
    rows
}

/// A pin record (`pins/<snapshot id>`, sealed, bound to its key).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pin {
    version: u32,
    snapshot: SnapshotId,
    pinned: String,
    host: String,
}

const PIN_AAD: &[u8] = b"cairn pin v1\0";

/// Pins a snapshot: `forget` never removes it. Pinning twice is not an error.
pub async fn pin(repo: &Repository, id: SnapshotId) -> Result<()> {
    Snapshot::load(repo, &id).await?;
    let key = ObjectKey::Pin(id).to_string();
    let pin = Pin { version: 1, snapshot: id, pinned: Utc::now().to_rfc3339(), host: crate::hostname() };
    let json = serde_json::to_vec(&pin).expect("pin serializes");
    let sealed = envelope::seal(repo.keys(), Binding::Key(PIN_AAD, &key), &json);
    match repo.store().put_create(&key, Bytes::from(sealed)).await {
        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a pin; unpinning a snapshot that is not pinned is not an error.
pub async fn unpin(repo: &Repository, id: SnapshotId) -> Result<()> {
    repo.store().delete(&ObjectKey::Pin(id).to_string()).await
}

/// Every pinned snapshot. A pin that does not open (tampered, another
/// repository's) is an error: silently dropping it could forget what the
/// operator meant to keep.
pub async fn pins(repo: &Repository) -> Result<HashSet<SnapshotId>> {
    let mut out = HashSet::new();
    for o in repo.store().list(Kind::Pin.prefix()).await? {
        let Some(ObjectKey::Pin(id)) = ObjectKey::parse(&o.key) else {
            tracing::warn!(object = %o.key, "ignoring a malformed pin name");
            continue;
        };
        let bytes = repo.store().get(&o.key).await?;
        envelope::open(repo.keys(), &o.key, Binding::Key(PIN_AAD, &o.key), &bytes)?;
        out.insert(id);
    }
    Ok(out)
}

/// What `forget` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetSummary {
    /// Every snapshot considered, with its decision.
    pub rows: Vec<Row>,
    /// Snapshots removed (0 on a dry run).
    pub removed: u64,
    /// Snapshots kept.
    pub kept: u64,
}

/// Loads every snapshot and plans. Explicit `ids` are removed whatever the
/// policy says, unless pinned.
pub async fn forget(
    repo: &Repository,
    policies: &Policies,
    ids: &[SnapshotId],
    dry_run: bool,
) -> Result<ForgetSummary> {
    for p in policies.all.iter().chain(policies.per_source.values()) {
        p.validate()?;
    }
    let pinned = pins(repo).await?;
    let mut rows = if ids.is_empty() {
        let listed: Vec<Listed> =
            Snapshot::list(repo).await?.iter().map(|(id, s)| Listed::of(*id, s)).collect::<Result<_>>()?;
        plan(&listed, policies, &pinned)
    } else {
        let mut rows = Vec::new();
        for id in ids {
            let s = Listed::of(*id, &Snapshot::load(repo, id).await?)?;
            let keep = pinned.contains(id);
            rows.push(Row {
                id: *id,
                time: s.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                host: s.host.clone(),
                source: s.source.clone(),
                group: s.source.clone(),
                keep,
                reasons: if keep { vec!["pinned".into()] } else { Vec::new() },
            });
        }
        rows
    };
    rows.iter_mut().for_each(|r| r.reasons.dedup());
    let mut summary = ForgetSummary { kept: rows.iter().filter(|r| r.keep).count() as u64, ..Default::default() };
    if !dry_run {
        for r in rows.iter().filter(|r| !r.keep) {
            repo.store().delete(&ObjectKey::Snapshot(r.id).to_string()).await?;
            summary.removed += 1;
        }
    }
    summary.rows = rows;
    Ok(summary)
}
