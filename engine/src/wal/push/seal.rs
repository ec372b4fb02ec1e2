//! Step 3 of a push: the file is read once into a [`Window`], piece by
//! piece; this thread scans each piece for the manifest's facts while the
//! pool seals it and hashes it as a BLAKE3 subtree ([`in_order`]), and the
//! sealed pieces go into packs in order as they are ready.

use std::fs::File;
use std::path::Path;

use cairn_formats::pg::{parse_timeline_history, ScanOptions, SegmentScanner};
use cairn_formats::repo::BlobKind;

use super::super::facts::{facts_of, parse_backup_history};
use super::super::pack_out::{DonePack, PackOut};
use super::super::window::{read_full, PieceHash, Window};
use super::super::{HistoryLine, WalFileKind, WalManifest, PIECE};
use super::identify::Identified;
use super::shown;
use crate::ordered::in_order;
use crate::pack::{seal_blob, SealedBlob};
use crate::repo::Repository;
use crate::{Error, Result};

/// Step 3's inputs: the open file and how to seal it.
pub(super) struct Reading<'a> {
    pub(super) repo: &'a Repository,
    pub(super) file: &'a mut File,
    pub(super) path: &'a Path,
    pub(super) size: u64,
    pub(super) level: crate::compress::Zstd,
}

/// What step 3 produced.
pub(super) struct Sealed {
    pub(super) packs: Vec<DonePack>,
    pub(super) read_bytes: u64,
    pub(super) piece_hashes: Vec<PieceHash>,
    /// A segment's scan, to be finished.
    pub(super) scanner: Option<SegmentScanner>,
    /// A history or backup history file's text.
    pub(super) text: Vec<u8>,
}

impl Reading<'_> {
    /// Reads the file once into `window` (whose first `pre_read` bytes are
    /// already there), scanning each piece on this thread while the pool
    /// seals it and hashes it as a BLAKE3 subtree.
    pub(super) fn seal(self, window: &mut Window, mut pre_read: usize, id: &Identified) -> Result<Sealed> {
        let Reading { repo, file, path, size, level } = self;
        let scan_opts = ScanOptions {
            start: id.name.segment().and_then(|s| s.start_lsn(id.seg_size)),
            timeline: Some(id.name.timeline()),
            system_id: id.header.map(|h| h.system_id),
            segment_size: Some(id.seg_size.bytes()),
            block_size: id.header.map(|h| h.block_size),
        };
        let mut scanner = id.header.map(|_| SegmentScanner::new(scan_opts));
        let mut text = Vec::new();
        let keys = repo.keys();
        let target = repo.config().pack_target as usize;
        let mut out = PackOut::new(repo, target, target.min(size as usize + 4096))?;
        let mut piece_hashes: Vec<PieceHash> = Vec::new();
        // Per window, one rayon scope: this thread reads the window piece by
        // piece and scans each piece while the pool seals it and hashes it as a
        // BLAKE3 subtree; between pieces, and at the end of the window, this
        // thread writes out the sealed pieces that are ready, in order, so
        // reading, scanning, hashing, compression and writing overlap.
        let mut next_index = 0usize;
        let mut read_bytes = 0u64;
        let mut eof = false;
        while !eof {
            tokio::task::block_in_place(|| {
                in_order(|sealing| -> Result<()> {
                    // Writes out, in order, the sealed pieces that are ready.
                    let mut write = |(b, h): (SealedBlob, PieceHash)| {
                        out.push(keys, &b)?;
                        piece_hashes.push(h);
                        Ok::<(), Error>(())
                    };
                    let mut rest: &mut [u8] = window.as_mut_slice();
                    while !rest.is_empty() {
                        let at = PIECE.min(rest.len());
                        let (head, tail) = std::mem::take(&mut rest).split_at_mut(at);
                        rest = tail;
                        let want = head.len();
                        let n = match std::mem::take(&mut pre_read) {
                            0 => read_full(file, head, path)?,
                            n => n,
                        };
                        eof = n < want;
                        if n == 0 {
                            break;
                        }
                        let piece: &[u8] = &head[..n];
                        let i = next_index;
                        let seal = move || {
                            let h = PieceHash::of(piece, i, size);
                            (seal_blob(keys, keys.blob_id(piece), BlobKind::Data, level, piece), h)
                        };
                        // The window's last piece is sealed here, after the scan,
                        // rather than queued behind the pool's: this thread has
                        // nothing else left to do, and the pool finishes sooner.
                        let last = eof || rest.is_empty() || read_bytes + n as u64 >= size;
                        if !last {
                            sealing.spawn(seal);
                        }
                        next_index += 1;
                        read_bytes += n as u64;
                        match scanner.as_mut() {
                            Some(s) => s.push(piece).map_err(|e| Error::corrupt(shown(path), None, e.to_string()))?,
                            None => text.extend_from_slice(piece),
                        }
                        if last {
                            sealing.put(seal());
                            break;
                        }
                        sealing.take_ready(&mut write)?;
                    }
                    sealing.take_all(write)
                })
            })?;
        }
        let packs = out.finish(keys)?;
        Ok(Sealed { packs, read_bytes, piece_hashes, scanner, text })
    }
}

/// Fills in what the manifest records about the file's content: a
/// segment's scan facts, a history file's lines, a backup history file's
/// fields. A segment whose scan fails is refused; a partial one is archived
/// without facts.
pub(super) fn describe(
    manifest: &mut WalManifest,
    scanner: Option<SegmentScanner>,
    text: &[u8],
    id: &Identified,
    path: &Path,
) -> Result<()> {
    match id.kind {
        WalFileKind::Segment | WalFileKind::Partial => {
            let scanner = scanner.expect("segments are scanned");
            match scanner.finish() {
                Ok(s) => manifest.facts = Some(facts_of(&s)),
                Err(e) if id.kind == WalFileKind::Segment => {
                    return Err(Error::corrupt(shown(path), None, e.to_string()));
                }
                Err(e) => tracing::warn!(file = %shown(path), error = %e, "partial segment: no facts recorded"),
            }
            if let Some(reason) = manifest.facts.as_ref().and_then(|f| f.stopped.as_ref()) {
                if id.kind == WalFileKind::Segment {
                    tracing::warn!(file = %shown(path), %reason, "valid WAL ends before the end of this segment; archived as is");
                }
            }
        }
        WalFileKind::History => {
            let lines = parse_timeline_history(text, Some(id.name.timeline()))
                .map_err(|e| Error::corrupt(shown(path), None, e.to_string()))?;
            manifest.history = Some(
                lines
                    .into_iter()
                    .map(|l| HistoryLine { timeline: l.timeline, switchpoint: l.switchpoint.0, reason: l.reason })
                    .collect(),
            );
        }
        WalFileKind::Backup => manifest.backup = Some(parse_backup_history(text)),
    }
    Ok(())
}
