//! The packs a push writes: [`PackOut`] fills them in piece order.

use cairn_formats::repo::BlobEntry;

use crate::crypto::Keys;
use crate::ids::PackId;
use crate::pack::{PackBuilder, SealedBlob};
use crate::repo::Repository;
use crate::store::Staged;
use crate::Result;

/// The packs of one pushed file, filled in piece order. On a local store
/// each pack is written to a staged file as its pieces come ([`Staged`]),
/// without a second copy in memory; nothing gets a pack's name before
/// [`Staged::commit`], which the caller does only once the whole file
/// checked out, so a refused push (that PostgreSQL will retry) leaves no
/// pack behind. Remote stores get whole packs.
pub(super) struct PackOut<'a> {
    repo: &'a Repository,
    target: usize,
    builder: PackBuilder,
    staged: Option<Staged>,
    done: Vec<DonePack>,
}

/// A finished pack of a pushed file, not yet stored.
pub(super) struct DonePack {
    pub(super) id: PackId,
    pub(super) len: u64,
    pub(super) entries: Vec<BlobEntry>,
    pub(super) body: PackBody,
}

pub(super) enum PackBody {
    /// Written to this staged local file, to be committed.
    Staged(Staged),
    /// The whole pack, for a remote store.
    Bytes(bytes::Bytes),
}

impl<'a> PackOut<'a> {
    pub(super) fn new(repo: &'a Repository, target: usize, first: usize) -> Result<Self> {
        let mut out = PackOut { repo, target, builder: PackBuilder::new(0), staged: None, done: Vec::new() };
        out.start(first)?;
        Ok(out)
    }

    fn start(&mut self, capacity: usize) -> Result<()> {
        self.staged = self.repo.store().stage("packs")?;
        self.builder = match self.staged {
            Some(_) => PackBuilder::streaming(),
            None => PackBuilder::new(capacity),
        };
        Ok(())
    }

    pub(super) fn push(&mut self, keys: &Keys, b: &SealedBlob) -> Result<()> {
        if !self.builder.is_empty() && self.builder.len() + b.sealed.len() > self.target {
            self.close(keys)?;
            self.start(self.target)?;
        }
        self.builder.push(b);
        match &mut self.staged {
            Some(s) => s.append(&b.sealed),
            None => Ok(()),
        }
    }

    /// Ends the current pack.
    fn close(&mut self, keys: &Keys) -> Result<()> {
        let builder = std::mem::replace(&mut self.builder, PackBuilder::new(0));
        let done = match self.staged.take() {
            Some(mut s) => {
                let p = builder.finish_streamed(keys);
                s.append(&p.tail)?;
                DonePack { id: p.id, len: p.len, entries: p.entries, body: PackBody::Staged(s) }
            }
            None => {
                let p = builder.finish(keys);
                DonePack { id: p.id, len: p.bytes.len() as u64, entries: p.entries, body: PackBody::Bytes(p.bytes) }
            }
        };
        self.done.push(done);
        Ok(())
    }

    /// The finished packs.
    pub(super) fn finish(mut self, keys: &Keys) -> Result<Vec<DonePack>> {
        if !self.builder.is_empty() {
            self.close(keys)?;
        }
        Ok(self.done)
    }
}
