//! The packer: per batch, the pool computes each chunk's keyed BLAKE3 id,
//! decides whether it is new (this session's set first, then RocksDB; the
//! session insert is atomic, so a chunk repeated within a batch is sealed
//! once), compresses and seals it, while the packer's thread hashes each
//! entry's plain bytes (as `b3sum` would); then it takes the results in
//! stream order ([`crate::ordered`]) as they finish: new blobs go into
//! packs, and every [`TREE_FANOUT`] refs a tree blob is added.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use cairn_formats::repo::{encode_tree, BlobKind, ChunkRef};

use super::{cancelled, Progress, TREE_FANOUT};
use crate::ids::{BlobId, TreeId};
use crate::index::LocalIndex;
use crate::ordered::in_order;
use crate::pack::{seal_blob, PackBuilder, SealedBlob, SealedPack};
use crate::repo::Repository;
use crate::snapshot::{Entry, MembersRef, TreeRef};
use crate::sources::Piece;
use crate::{Error, Result};

pub(super) enum PackerMsg {
    Pack(SealedPack),
    Done { entries: Vec<Entry>, chunks: u64, new_chunks: u64, new_bytes: u64 },
}

/// Blobs added during this backup whose index segment is not yet written.
pub(super) type SessionSet = Arc<Mutex<HashSet<BlobId>>>;

/// Decides whether one id is new (not in this session, not in the index),
/// recording it in the session if so. The session is checked first and
/// entries leave it only after they are in the index, so an id is never
/// missed by both.
pub(super) fn is_new(index: &LocalIndex, session: &SessionSet, id: &BlobId) -> Result<bool> {
    if session.lock().expect("session lock").contains(id) {
        return Ok(false);
    }
    if index.lookup(id)?.is_some() {
        return Ok(false);
    }
    Ok(session.lock().expect("session lock").insert(*id))
}

/// A piece of a batch as the packer's thread consumes it, in order; chunks'
/// bytes stay behind for the pool.
enum Step {
    Chunk(usize),
    End(Box<Entry>),
    EndMembers(u64),
    Reuse(Box<Entry>),
}

pub(super) struct Packer {
    repo: Arc<Repository>,
    index: Arc<LocalIndex>,
    session: SessionSet,
    level: i32,
    target: usize,
    pack: PackBuilder,
    out: tokio::sync::mpsc::Sender<PackerMsg>,
    refs: Vec<ChunkRef>,
    refs_bytes: u64,
    trees: Vec<TreeRef>,
    entry_bytes: u64,
    entries: Vec<Entry>,
    chunks: u64,
    new_chunks: u64,
    new_bytes: u64,
    /// The current entry's plain BLAKE3, and those of entries that ended
    /// in the batch being processed.
    entry_hash: blake3::Hasher,
    progress: Arc<Progress>,
}

impl Packer {
    pub(super) fn new(
        repo: &Arc<Repository>,
        index: &Arc<LocalIndex>,
        session: SessionSet,
        level: i32,
        out: tokio::sync::mpsc::Sender<PackerMsg>,
        progress: Arc<Progress>,
    ) -> Packer {
        let target = repo.config().pack_target as usize;
        Packer {
            repo: repo.clone(),
            index: index.clone(),
            session,
            level,
            target,
            pack: PackBuilder::new(target),
            out,
            refs: Vec::new(),
            refs_bytes: 0,
            trees: Vec::new(),
            entry_bytes: 0,
            entries: Vec::new(),
            chunks: 0,
            new_chunks: 0,
            new_bytes: 0,
            entry_hash: blake3::Hasher::new(),
            progress,
        }
    }

    fn push_sealed(&mut self, b: &SealedBlob) -> Result<()> {
        self.pack.push(b);
        if self.pack.len() >= self.target {
            let full = std::mem::replace(&mut self.pack, PackBuilder::new(self.target));
            let sealed = full.finish(self.repo.keys());
            self.out.blocking_send(PackerMsg::Pack(sealed)).map_err(|_| cancelled())?;
        }
        Ok(())
    }

    pub(super) fn add_batch(&mut self, batch: Vec<Piece>) -> Result<()> {
        // The chunks' bytes, borrowed by the pool's jobs, apart from the
        // pieces this thread consumes in order.
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut steps: Vec<Step> = Vec::with_capacity(batch.len());
        let mut ends: Vec<usize> = Vec::new();
        for p in batch {
            match p {
                Piece::Chunk(c) => {
                    steps.push(Step::Chunk(c.len()));
                    chunks.push(c);
                }
                Piece::End(e) => {
                    ends.push(chunks.len());
                    steps.push(Step::End(e));
                }
                Piece::EndMembers { count } => {
                    ends.push(chunks.len());
                    steps.push(Step::EndMembers(count));
                }
                Piece::Reuse(e) => steps.push(Step::Reuse(e)),
            }
        }
        let repo = self.repo.clone();
        let keys = repo.keys();
        let (index, session, level) = (self.index.clone(), self.session.clone(), self.level);
        let (index, session) = (&*index, &session);
        let (chunks, ends) = (&chunks, &ends);
        in_order(|sealing| -> Result<()> {
            // Per chunk: id, dedup decision, compress and seal. The session
            // insert is atomic, so a chunk repeated within the batch is
            // sealed once.
            for c in chunks {
                sealing.spawn(move || {
                    let id = keys.blob_id(c);
                    let new = is_new(index, session, &id)?;
                    Ok((id, new.then(|| seal_blob(keys, id, BlobKind::Data, level, c))))
                });
            }
            // Meanwhile this thread computes the plain per-entry hashes (for
            // `b3sum` comparisons and the restore check), off the reader
            // thread, which is the pipeline's only serial stage. Taking the
            // results after it finds them mostly ready: on a 1 GB re-backup
            // (every chunk known) waiting on each result instead, with the
            // hash on the pool, cost 7 % in wake-ups.
            let mut ended = Vec::with_capacity(ends.len());
            let mut ends = ends.iter().peekable();
            for (i, c) in chunks.iter().enumerate() {
                while ends.next_if(|&&e| e == i).is_some() {
                    ended.push(self.entry_hash.finalize().to_hex().to_string());
                    self.entry_hash.reset();
                }
                self.entry_hash.update(c);
            }
            for _ in ends {
                ended.push(self.entry_hash.finalize().to_hex().to_string());
                self.entry_hash.reset();
            }
            let mut hashes = ended.into_iter();
            // Then it packs the results in stream order as they come.
            for step in steps {
                match step {
                    Step::Chunk(len) => {
                        let (id, sealed) = sealing.next().expect("one result per chunk")?;
                        self.add_chunk(id, len, sealed)?;
                    }
                    Step::End(mut e) => {
                        self.flush_tree()?;
                        e.content = std::mem::take(&mut self.trees);
                        e.size = std::mem::take(&mut self.entry_bytes);
                        e.blake3 = hashes.next().expect("one hash per end");
                        self.entries.push(*e);
                    }
                    Step::EndMembers(count) => {
                        self.flush_tree()?;
                        let m = MembersRef {
                            count,
                            size: std::mem::take(&mut self.entry_bytes),
                            blake3: hashes.next().expect("one hash per end"),
                            content: std::mem::take(&mut self.trees),
                        };
                        let last = self.entries.last_mut().ok_or_else(|| {
                            Error::Internal("a member index must follow the entry it describes".into())
                        })?;
                        last.members = Some(m);
                    }
                    Step::Reuse(e) => self.entries.push(*e),
                }
            }
            Ok(())
        })
    }

    /// Adds one chunk of the current entry: its blob if new, its reference.
    fn add_chunk(&mut self, id: BlobId, len: usize, sealed: Option<SealedBlob>) -> Result<()> {
        self.chunks += 1;
        if let Some(s) = sealed {
            self.new_chunks += 1;
            self.new_bytes += len as u64;
            self.progress.new_bytes.fetch_add(len as u64, Ordering::Relaxed);
            self.push_sealed(&s)?;
        }
        self.refs.push(ChunkRef { id: id.0 .0, len: len as u32 });
        self.refs_bytes += len as u64;
        self.entry_bytes += len as u64;
        if self.refs.len() == TREE_FANOUT {
            self.flush_tree()?;
        }
        Ok(())
    }

    fn flush_tree(&mut self) -> Result<()> {
        if self.refs.is_empty() {
            return Ok(());
        }
        let plain = encode_tree(&self.refs);
        let keys = self.repo.keys();
        let id = keys.blob_id(&plain);
        if is_new(&self.index, &self.session, &id)? {
            let s = seal_blob(keys, id, BlobKind::Tree, self.level, &plain);
            self.push_sealed(&s)?;
        }
        self.trees.push(TreeRef { tree: TreeId(id.0), chunks: self.refs.len() as u64, bytes: self.refs_bytes });
        self.refs.clear();
        self.refs_bytes = 0;
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<()> {
        if !self.refs.is_empty() || !self.trees.is_empty() {
            return Err(Error::Internal("content after the last entry ended".into()));
        }
        if !self.pack.is_empty() {
            let last = std::mem::replace(&mut self.pack, PackBuilder::new(0));
            let sealed = last.finish(self.repo.keys());
            self.out.blocking_send(PackerMsg::Pack(sealed)).map_err(|_| cancelled())?;
        }
        let done = PackerMsg::Done {
            entries: std::mem::take(&mut self.entries),
            chunks: self.chunks,
            new_chunks: self.new_chunks,
            new_bytes: self.new_bytes,
        };
        self.out.blocking_send(done).map_err(|_| cancelled())
    }
}
