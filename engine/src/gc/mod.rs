//! Retention and garbage collection: `forget` (policies, pins), `prune`
//! (mark, condemn, sweep), and the leases and shared state that keep them
//! safe while backups and `wal push` keep writing.
//!
//! # The protocol, in short
//! docs/FORMAT.md ("Garbage collection") states it in full and argues each
//! safety property; ARCHITECTURE.md places it.
//! - Writers that deduplicate hold a lease (`lease.rs`) taken before they
//!   read `gc/state`, and never deduplicate against a pending
//!   generation's condemned packs (`LocalIndex` excludes them).
//! - A prune condemns packs nothing needs under a new generation: the
//!   plan create-only, then `gc/state` by compare-and-swap, then the leases
//!   present (`prune.rs`).
//! - The sweep deletes them only once those leases have ended or broken,
//!   after marking again what was committed meanwhile (`sweep.rs`).
//! - `wal push` takes no lease: its packs are never condemned younger
//!   than [`min_age`], and it sends its manifest well within that.
//! - Nothing depends on clocks agreeing: lease expiry and pack age are
//!   measured on the store's own clock.

mod counts;
mod forget;
mod lease;
mod live;
mod mark;
mod policy;
mod prune;
mod repack;
mod state;
mod sweep;

pub use forget::{forget, pin, pins, plan as plan_forget, unpin, ForgetSummary, GroupBy, Listed, Policies, Row};
pub use lease::{fencing_disabled, lease_ttl, Lease, LeaseRecord};
pub use policy::{apply as apply_policy, Bucket, Candidate, Decision, Policy, Span};
pub use prune::{min_age, prune, PruneOptions, PruneReport, SweepReport};
pub use repack::RepackReport;
pub use state::{GcState, GcView};
