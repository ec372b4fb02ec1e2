//! Step 2 of a push: what a WAL file is, from its name and first piece,
//! and whether it belongs to the stanza. A segment's long page header must
//! agree with the stanza record (system id, segment size, page size,
//! version), which the stanza's first segment writes.

use std::path::Path;

use cairn_formats::pg::{SegmentHeader, SegmentSize, WalFileName};

use super::super::{load_stanza, seal_named, stanza_key, StanzaRecord, WalFileKind, WAL_MANIFEST_VERSION};
use super::shown;
use crate::repo::Repository;
use crate::store::BackendExt as _;
use crate::{Error, Result};

/// History and backup history files are a few hundred bytes; anything this
/// large is not one.
const MAX_TEXT_FILE: u64 = 1 << 20;
const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;

/// What step 2 learnt about a file from its name and first piece.
pub(super) struct Identified {
    pub(super) kind: WalFileKind,
    /// A segment's or partial's long page header.
    pub(super) header: Option<SegmentHeader>,
    /// The cluster's segment size.
    pub(super) seg_size: SegmentSize,
    pub(super) name: WalFileName,
}

/// Step 2: what the file is (from its name and `first` piece), and whether
/// it belongs to the stanza that `record` describes.
pub(super) fn identify(
    first: &[u8],
    kind: WalFileKind,
    size: u64,
    name: &str,
    record: Option<&StanzaRecord>,
    path: &Path,
) -> Result<Identified> {
    let header = match kind {
        WalFileKind::Segment | WalFileKind::Partial => {
            let h = SegmentHeader::parse(first).map_err(|e| Error::corrupt(shown(path), Some(0), e.to_string()))?;
            if let Some(rec) = record {
                check_against_stanza(rec, &h, path)?;
            }
            Some(h)
        }
        WalFileKind::History | WalFileKind::Backup => {
            if size > MAX_TEXT_FILE {
                return Err(Error::corrupt(
                    shown(path),
                    None,
                    format!("{size} bytes is too large for a {kind:?} file"),
                ));
            }
            None
        }
    };
    let seg_bytes = header.map(|h| h.segment_size).or(record.map(|r| r.segment_size)).unwrap_or(DEFAULT_SEGMENT_SIZE);
    let seg_size = SegmentSize::new(seg_bytes.into())
        .map_err(|e| Error::corrupt(shown(path), Some(0), format!("segment size: {e}")))?;
    let parsed =
        WalFileName::parse(name, seg_size).map_err(|e| Error::InvalidInput(format!("{}: {e}", shown(path))))?;
    match kind {
        WalFileKind::Segment if size != u64::from(seg_bytes) => {
            return Err(Error::corrupt(
                shown(path),
                None,
                format!("{size} bytes, but this cluster's segments are {seg_bytes} bytes"),
            ));
        }
        WalFileKind::Partial if size > u64::from(seg_bytes) => {
            return Err(Error::corrupt(shown(path), None, format!("{size} bytes, more than a segment ({seg_bytes})")));
        }
        _ => {}
    }
    Ok(Identified { kind, header, seg_size, name: parsed })
}

/// Refuses a segment whose long header disagrees with the stanza.
fn check_against_stanza(rec: &StanzaRecord, h: &SegmentHeader, path: &Path) -> Result<()> {
    let mut diffs = Vec::new();
    if rec.system_id != h.system_id.to_string() {
        diffs.push(format!("system identifier {} (the stanza's is {})", h.system_id, rec.system_id));
    }
    if rec.segment_size != h.segment_size {
        diffs.push(format!("segment size {} (the stanza's is {})", h.segment_size, rec.segment_size));
    }
    if rec.block_size != h.block_size {
        diffs.push(format!("page size {} (the stanza's is {})", h.block_size, rec.block_size));
    }
    if rec.wal_magic != h.version.magic() {
        diffs.push(format!("WAL magic {:#06X} (the stanza's is {:#06X})", h.version.magic(), rec.wal_magic));
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(Error::conflict(
        shown(path),
        format!(
            "this WAL is from another cluster than stanza {:?} was created for: {}; nothing was stored",
            rec.stanza,
            diffs.join(", ")
        ),
    ))
}

fn new_record(stanza: &str, h: &SegmentHeader) -> StanzaRecord {
    StanzaRecord {
        version: WAL_MANIFEST_VERSION,
        stanza: stanza.to_string(),
        system_id: h.system_id.to_string(),
        segment_size: h.segment_size,
        block_size: h.block_size,
        wal_magic: h.version.magic(),
        postgresql: h.version.major(),
        created: chrono::Utc::now().to_rfc3339(),
        host: crate::hostname(),
    }
}

/// The stanza record comes with the stanza's first segment; a push that
/// lost the race to write it checks its header against the winner's.
pub(crate) async fn first_of_stanza(repo: &Repository, stanza: &str, h: &SegmentHeader, path: &Path) -> Result<()> {
    let rec = new_record(stanza, h);
    let skey = stanza_key(stanza);
    match repo.store().put_create(&skey, seal_named(repo, &skey, &rec)).await {
        Ok(()) => Ok(()),
        Err(Error::AlreadyExists { .. }) => {
            let now = load_stanza(repo, stanza).await?.ok_or_else(|| Error::NotFound { what: skey.clone() })?;
            check_against_stanza(&now, h, path)
        }
        Err(e) => Err(e),
    }
}
