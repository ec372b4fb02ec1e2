//! Archiving to several repositories: `wal push` into the primary and
//! into each copy a stanza names (`[stanzas.NAME] copies = [...]`).
//!
//! A site's archive lives in two places, the local repository for fast
//! restores and another (S3, often another region) for when the site is
//! lost. A copy that is down must not stop archiving, or PostgreSQL would
//! fill its disk with WAL; but a copy that stays down must not fall behind
//! without bound either. So each copy has a *lag budget*:
//!
//! 1. The file is pushed to the primary and to every copy at once. The
//!    primary decides as a single-repository push does: its failure fails
//!    the push. A copy whose opening or push fails with an unavailability
//!    error (connection refused, timeout, missing bucket), or takes longer
//!    than [`CopiesPolicy::timeout`], is *behind*; any other failure of a
//!    copy (a wrong key, different content under the name) fails the push.
//! 2. For each copy behind, a sealed marker is created in the primary at
//!    `walbehind/<copy>/<stanza>/<ms>-<name>` before the push answers.
//!    The markers are the lag: how many files the copy lacks, and since
//!    when. `wal show` and `cairn status` read them.
//! 3. A copy that was reached and has markers is caught up: the markers
//!    are listed, the stanza's WAL the copy lacks is copied from the
//!    primary (`copy.rs`, packs before manifests), and the markers listed
//!    are deleted. A marker written meanwhile by another push was not
//!    listed and stays. A failed catch-up leaves them all; the next push,
//!    or `cairn copy --wal --to NAME`, tries again.
//! 4. When the oldest marker left of a copy is older than the budget, the
//!    push fails with [`Error::CopyBehind`]: the file is durable in the
//!    primary, but PostgreSQL keeps it and retries, so the backlog the copy
//!    will need stays on the server instead of existing only in one place.
//!
//! The primary must be reachable: the markers live there.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{open_named, seal_named, PushOptions, PushReport};
use crate::copy::{Copier, CopyOptions, CopyProgress};
use crate::repo::Repository;
use crate::repofile::{Kind, ObjectKey, RepoFile};
use crate::store::{Backend as _, BackendExt as _};
use crate::{Error, Result};

/// One copy a push also stores into.
pub struct WalCopy {
    /// Its `[repos.NAME]` name: what markers and reports call it.
    pub name: String,
    /// Opens it (run under the timeout with the push).
    pub open: BoxFuture<'static, Result<Arc<Repository>>>,
    /// How to catch it up (cache directories, lock timeout); `wal` and
    /// `stanza` are set here.
    pub catch_up: CopyOptions,
}

/// How long a copy may take and stay behind.
#[derive(Debug, Clone, Copy)]
pub struct CopiesPolicy {
    /// How long a copy may miss files before pushes fail.
    pub lag_budget: Duration,
    /// Longest wait for a copy's opening and push; beyond it the copy
    /// counts as unreachable for this push.
    pub timeout: Duration,
}

/// What happened to one copy.
#[derive(Debug, Clone, Serialize)]
pub struct CopyOutcome {
    /// The copy's name.
    pub name: String,
    /// The file is durable there.
    pub stored: bool,
    /// Why it could not be reached, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Files of earlier pushes copied to it by this one's catch-up.
    pub caught_up: u64,
    /// Files it still lacks after this push.
    pub behind: u64,
    /// Seconds since the oldest of them was pushed to the primary.
    pub lag_s: u64,
}

/// A copy's lag, from its markers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyLag {
    /// The copy's name.
    pub name: String,
    /// Files it lacks.
    pub behind: u64,
    /// When the oldest was pushed to the primary without it (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Seconds since then (0 when it lacks nothing).
    pub lag_s: u64,
}

/// The sealed body of a marker: its key, repeated and authenticated.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    version: u32,
    copy: String,
    stanza: String,
    name: String,
    ms: u64,
}

impl RepoFile for Marker {
    const VERSION: u32 = 1;
    type Id = (String, String, u64, String);

    fn key((copy, stanza, ms, name): &Self::Id) -> ObjectKey {
        ObjectKey::WalBehind { copy: copy.clone(), stanza: stanza.clone(), ms: *ms, name: name.clone() }
    }
}

/// Pushes the file at `path` into `primary` and every copy; see the
/// module documentation for what a copy that cannot be reached does.
pub async fn push_everywhere(
    primary: &Arc<Repository>,
    stanza: &str,
    path: &std::path::Path,
    opts: &PushOptions,
    copies: Vec<WalCopy>,
    policy: CopiesPolicy,
) -> Result<(PushReport, Vec<CopyOutcome>)> {
    for c in &copies {
        super::validate_stanza(&c.name).map_err(|_| {
            Error::InvalidInput(format!("invalid copy name {:?}: use letters, digits, '.', '_' or '-'", c.name))
        })?;
    }
    let pushes = copies.into_iter().map(|c| async move {
        let attempt = async {
            let repo = c.open.await?;
            super::push(&repo, stanza, path, opts).await?;
            Ok::<_, Error>(repo)
        };
        let r = match tokio::time::timeout(policy.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Error::Storage {
                object: format!("WAL copy {:?}", c.name),
                retryable: true,
                source: format!("no answer within {} s", policy.timeout.as_secs()).into(),
            }),
        };
        (c.name, c.catch_up, r)
    });
    let (main, copied) = tokio::join!(super::push(primary, stanza, path, opts), futures::future::join_all(pushes));
    let report = main?;
    let mut outcomes = Vec::new();
    let mut first_failure = None;
    for (name, catch_up, r) in copied {
        let mut o = CopyOutcome { name: name.clone(), stored: false, error: None, caught_up: 0, behind: 0, lag_s: 0 };
        match r {
            Ok(repo) => {
                o.stored = true;
                o.caught_up = catch_up_copy(primary, &repo, &name, stanza, catch_up).await;
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(copy = %name, "the WAL copy is unreachable; {} stays behind: {e}", report.name);
                mark_behind(primary, &name, stanza, &report.name).await?;
                o.error = Some(e.to_string());
            }
            Err(e) => {
                first_failure.get_or_insert(Error::InvalidInput(format!("WAL copy {name:?}: {e}")));
                o.error = Some(e.to_string());
            }
        }
        let lag = lag_of(primary, &name, stanza).await?;
        (o.behind, o.lag_s) = (lag.behind, lag.lag_s);
        if lag.lag_s > policy.lag_budget.as_secs() {
            first_failure.get_or_insert(Error::CopyBehind {
                copy: name.clone(),
                stanza: stanza.to_string(),
                files: lag.behind,
                behind_s: lag.lag_s,
                budget_s: policy.lag_budget.as_secs(),
                last_error: o.error.clone(),
            });
        }
        outcomes.push(o);
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok((report, outcomes)),
    }
}

/// Records in `primary` that the copy `copy` lacks WAL file `name`.
async fn mark_behind(primary: &Repository, copy: &str, stanza: &str, name: &str) -> Result<()> {
    let ms = now_ms();
    let id = (copy.to_string(), stanza.to_string(), ms, name.to_string());
    let key = Marker::key(&id).to_string();
    let m = Marker { version: Marker::VERSION, copy: id.0, stanza: id.1, name: id.3, ms };
    match primary.store().put_create(&key, seal_named(primary, &key, &m)).await {
        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The markers of `copy` (every copy when `None`) for `stanza` (every
/// stanza when `None`): keys and what they name, oldest first.
pub async fn markers(
    primary: &Repository,
    copy: Option<&str>,
    stanza: Option<&str>,
) -> Result<Vec<(String, String, String, u64)>> {
    let prefix = match (copy, stanza) {
        (Some(c), Some(s)) => format!("{}/{c}/{s}/", Kind::WalBehind.prefix()),
        (Some(c), None) => format!("{}/{c}/", Kind::WalBehind.prefix()),
        _ => format!("{}/", Kind::WalBehind.prefix()),
    };
    let mut out = Vec::new();
    for o in primary.store().list(&prefix).await? {
        match ObjectKey::parse(&o.key) {
            Some(ObjectKey::WalBehind { copy: c, stanza: s, ms, .. }) if stanza.is_none_or(|want| want == s) => {
                out.push((o.key, c, s, ms));
            }
            Some(ObjectKey::WalBehind { .. }) => {}
            _ => tracing::warn!(object = %o.key, "ignoring a malformed WAL copy marker name"),
        }
    }
    out.sort_by_key(|m| m.3);
    Ok(out)
}

/// How far behind each copy of `stanza` is that has markers.
pub async fn lags(primary: &Repository, stanza: &str) -> Result<Vec<CopyLag>> {
    let mut by_copy: std::collections::BTreeMap<String, CopyLag> = Default::default();
    let now = now_ms();
    for (_, copy, _, ms) in markers(primary, None, Some(stanza)).await? {
        let lag = by_copy.entry(copy.clone()).or_insert_with(|| CopyLag {
            name: copy,
            behind: 0,
            since: chrono::DateTime::from_timestamp_millis(ms as i64).map(|t| t.to_rfc3339()),
            lag_s: now.saturating_sub(ms) / 1000,
        });
        lag.behind += 1;
    }
    Ok(by_copy.into_values().collect())
}

/// The lag of one copy of `stanza`.
pub async fn lag_of(primary: &Repository, copy: &str, stanza: &str) -> Result<CopyLag> {
    let m = markers(primary, Some(copy), Some(stanza)).await?;
    let Some((_, _, _, oldest)) = m.first() else {
        return Ok(CopyLag { name: copy.to_string(), ..Default::default() });
    };
    Ok(CopyLag {
        name: copy.to_string(),
        behind: m.len() as u64,
        since: chrono::DateTime::from_timestamp_millis(*oldest as i64).map(|t| t.to_rfc3339()),
        lag_s: now_ms().saturating_sub(*oldest) / 1000,
    })
}

/// Reads a marker back (`wal show --list`, tests): it opens only in the
/// repository that sealed it, under its own key.
pub async fn open_marker(primary: &Repository, key: &str) -> Result<String> {
    let bytes: Bytes = primary.store().get(key).await?;
    let m: Marker = open_named(primary, key, &bytes)?;
    Ok(m.name)
}

/// Deletes the markers at `keys`: a copy made after they were listed
/// holds every file they name.
pub async fn clear(primary: &Repository, keys: &[String]) -> Result<()> {
    primary.store().delete_many(keys).await
}

/// Copies what `copy` lacks of `stanza` when it has markers; returns the
/// WAL manifests copied. A failure is logged, never fatal: the file at
/// hand is durable in the copy, and the markers stay for the next try.
async fn catch_up_copy(
    primary: &Arc<Repository>,
    copy: &Arc<Repository>,
    name: &str,
    stanza: &str,
    mut opts: CopyOptions,
) -> u64 {
    let listed = match markers(primary, Some(name), Some(stanza)).await {
        Ok(m) if m.is_empty() => return 0,
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(copy = %name, "could not list what the WAL copy lacks: {e}");
            return 0;
        }
    };
    tracing::info!(copy = %name, files = listed.len(), "the WAL copy is reachable again; catching it up");
    opts.with_snapshots = false;
    opts.wal = true;
    opts.stanza = Some(stanza.to_string());
    let run = async {
        let copier = Copier::open(primary.clone(), copy.clone(), opts, true).await?;
        let plan = copier.plan().await?;
        let report = copier.execute(plan, &CopyProgress::default()).await?;
        let keys: Vec<String> = listed.iter().map(|m| m.0.clone()).collect();
        clear(primary, &keys).await?;
        Ok::<_, Error>(report.wal_manifests)
    };
    match run.await {
        Ok(n) => {
            tracing::info!(copy = %name, copied = n, "the WAL copy has caught up");
            n
        }
        Err(e) => {
            tracing::warn!(copy = %name, "catching the WAL copy up failed; trying again at the next push: {e}");
            0
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
