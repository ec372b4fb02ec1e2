//! Files inside snapshots: listing, diffing and extracting the members of
//! a tar snapshot or the entries of a directory snapshot.
//!
//! Both kinds are seen through one [`Layout`]: a list of [`FileInfo`] with
//! where each file's bytes live — a byte range of the tar stream (found in
//! the member index) or a directory entry's own content. Extracting one
//! file reads only the blobs that hold it; extracting anything is vetted
//! first ([`Layout::vet`]) and written beneath the target only.

mod demux;
mod diff;
mod extract;
mod layout;
mod vet;

pub use diff::{diff, Change, DiffReport};
pub use extract::{ExtractOptions, ExtractSummary};
pub use layout::{normalize, FileInfo, Layout};
pub use vet::{LinkRule, Refusal};
