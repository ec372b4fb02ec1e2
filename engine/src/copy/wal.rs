//! Planning the WAL part of a copy: stanza records and manifests the
//! target lacks, and the packs they reference.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use cairn_formats::pg::WalFileName;
use futures::StreamExt;

use super::CopyPlan;
use crate::ids::PackId;
use crate::repo::Repository;
use crate::repofile::ObjectKey;
use crate::store::{Backend as _, BackendExt as _};
use crate::wal::catseg;
use crate::wal::{list_stanzas, open_named, stanza_key, validate_stanza, WalManifest};
use crate::{Error, Result};

/// Adds to `plan` the stanza records and WAL manifests of `stanza` (every
/// stanza when `None`) that `dst` lacks, read and verified from `src`, and
/// the packs they reference that `dst` does not hold.
pub(super) async fn plan(
    src: &Repository,
    dst: &Repository,
    stanza: Option<&str>,
    src_packs: &BTreeMap<PackId, u64>,
    dst_packs: &BTreeMap<PackId, u64>,
    plan: &mut CopyPlan,
) -> Result<()> {
    let stanzas = match stanza {
        Some(s) => {
            validate_stanza(s)?;
            vec![s.to_string()]
        }
        None => list_stanzas(src).await?,
    };
    for stanza in stanzas {
        let prefix = format!("wal/{stanza}/");
        let there: HashSet<String> = dst.store().list(&prefix).await?.into_iter().map(|o| o.key).collect();
        let mut wanted = Vec::new();
        for o in src.store().list(&prefix).await? {
            let is_record = o.key == stanza_key(&stanza);
            if !is_record && !matches!(ObjectKey::parse(&o.key), Some(ObjectKey::WalFile { .. })) {
                continue;
            }
            if there.contains(&o.key) {
                plan.wal_present += u64::from(!is_record);
            } else {
                wanted.push((o.key, is_record));
            }
        }
        let mut fetched = futures::stream::iter(wanted)
            .map(|(key, is_record)| async move {
                let bytes = src.store().get(&key).await;
                (key, is_record, bytes)
            })
            .buffered(16);
        while let Some((key, is_record, bytes)) = fetched.next().await {
            let bytes = match bytes {
                Ok(b) => b,
                // Expired from the source since the listing.
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if is_record {
                open_named::<crate::wal::StanzaRecord>(src, &key, &bytes)?;
                plan.stanzas.push((key, bytes));
                continue;
            }
            let manifest = open_named::<WalManifest>(src, &key, &bytes)?;
            // Re-sealing writes fresh packs; only a byte copy moves these.
            let pieces = if plan.reseal { &[][..] } else { &manifest.pieces[..] };
            for piece in pieces {
                let pack = PackId::from_hex(&piece.pack)
                    .ok_or_else(|| Error::corrupt(&key, None, format!("malformed pack id {:?}", piece.pack)))?;
                plan.wal_packs.insert(pack);
                if !dst_packs.contains_key(&pack) && !plan.packs.contains_key(&pack) {
                    let size = src_packs.get(&pack).ok_or_else(|| Error::NotFound {
                        what: format!("{} that {key} references, in the source", ObjectKey::Pack(pack)),
                    })?;
                    plan.packs.insert(pack, *size);
                }
            }
            plan.wal.push((key, bytes));
        }
    }
    Ok(())
}

/// The target's catalogue segments (`walcat/…`) of the groups the
/// manifests at `keys` belong to: deleted before and after the manifests
/// are written, as every writer of a group's manifests does
/// (`wal/catseg.rs`), so no catalogue segment claims a group without them.
pub(super) async fn forget_catalogue(src: &Repository, dst: &Repository, keys: &[(String, Bytes)]) -> Result<()> {
    let mut by_stanza: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, _) in keys {
        if let Some(ObjectKey::WalFile { stanza, name, .. }) = ObjectKey::parse(key) {
            by_stanza.entry(stanza).or_default().push(name);
        }
    }
    for (stanza, names) in by_stanza {
        let size = crate::wal::archived_segment_size(src, &stanza).await?;
        let mut groups: Vec<String> = names
            .iter()
            .filter_map(|n| WalFileName::parse(n, size).ok().and_then(|n| catseg::group_of(&n, size)))
            .map(|(tli, first)| catseg::segment_key(&stanza, tli, first, size))
            .collect();
        groups.sort_unstable();
        groups.dedup();
        dst.store().delete_many(&groups).await?;
    }
    Ok(())
}
