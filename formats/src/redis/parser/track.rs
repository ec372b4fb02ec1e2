//! Per-key uniqueness and cross-reference checks.
//!
//! Redis refuses to load a set with a repeated member, a hash with a
//! repeated field, a stream with two nodes under the same id, a consumer
//! group whose pending entries do not match its consumers', and so on
//! (`redis-check-rdb` runs with deep sanitisation, which adds the "every
//! pending entry has an owner" check). Catching these needs the names seen
//! so far in the current key, so this is the one place where the parser's
//! memory grows with a value. It is capped by
//! [`RdbLimits::max_tracked_bytes`](super::RdbLimits::max_tracked_bytes):
//! past the cap the key's checks are abandoned (and counted) rather than
//! memory growing further.

use std::collections::{HashMap, HashSet};

/// A stream id as stored in pending lists and node keys.
type StreamId = [u8; 16];

/// Per-key tracking state; `Default` is the state at the start of a key.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    bytes: u64,
    abandoned: bool,
    members: HashSet<Vec<u8>>,
    node_keys: HashSet<StreamId>,
    groups: HashSet<Vec<u8>>,
    consumers: HashSet<Vec<u8>>,
    /// Group pending entries and the number of the consumer that claimed
    /// each (0 = none yet).
    pel: HashMap<StreamId, u64>,
    consumer_no: u64,
}

/// Per-entry bookkeeping overhead charged on top of the bytes themselves,
/// so that millions of tiny members still hit the cap.
const OVERHEAD: u64 = 32;

impl Tracker {
    /// Whether the cap was hit and the checks stopped for this key.
    pub(super) fn abandoned(&self) -> bool {
        self.abandoned
    }

    /// Accounts for `n` more bytes; past `limit` everything is dropped.
    fn charge(&mut self, n: u64, limit: u64) -> bool {
        if self.abandoned {
            return false;
        }
        self.bytes = self.bytes.saturating_add(n).saturating_add(OVERHEAD);
        if self.bytes > limit {
            *self = Tracker { abandoned: true, ..Tracker::default() };
            return false;
        }
        true
    }

    /// A member, field or sorted set member; `None` if it was too large to
    /// collect.
    pub(super) fn member(&mut self, m: Option<Vec<u8>>, limit: u64) -> Result<(), &'static str> {
        let Some(m) = m else {
            self.charge(u64::MAX, limit);
            return Ok(());
        };
        if self.charge(m.len() as u64, limit) && !self.members.insert(m) {
            return Err("unique members and fields");
        }
        Ok(())
    }

    /// A stream node's master id.
    pub(super) fn node_key(&mut self, id: StreamId, limit: u64) -> Result<(), &'static str> {
        if self.charge(16, limit) && !self.node_keys.insert(id) {
            return Err("unique stream node keys");
        }
        Ok(())
    }

    /// A consumer group name: starts the group's pending and consumer
    /// bookkeeping afresh.
    pub(super) fn group(&mut self, name: Option<Vec<u8>>, limit: u64) -> Result<(), &'static str> {
        self.pel.clear();
        self.consumers.clear();
        self.consumer_no = 0;
        let Some(name) = name else {
            self.charge(u64::MAX, limit);
            return Ok(());
        };
        if self.charge(name.len() as u64, limit) && !self.groups.insert(name) {
            return Err("unique consumer group names");
        }
        Ok(())
    }

    /// An entry of the group's pending list.
    pub(super) fn group_pel(&mut self, id: StreamId, limit: u64) -> Result<(), &'static str> {
        if self.charge(16, limit) && self.pel.insert(id, 0).is_some() {
            return Err("unique group pending entries");
        }
        Ok(())
    }

    /// A consumer of the current group.
    pub(super) fn consumer(&mut self, name: Option<Vec<u8>>, limit: u64) -> Result<(), &'static str> {
        self.consumer_no += 1;
        let Some(name) = name else {
            self.charge(u64::MAX, limit);
            return Ok(());
        };
        if self.charge(name.len() as u64, limit) && !self.consumers.insert(name) {
            return Err("unique consumer names");
        }
        Ok(())
    }

    /// An entry of the current consumer's pending list.
    pub(super) fn consumer_pel(&mut self, id: StreamId) -> Result<(), &'static str> {
        if self.abandoned {
            return Ok(());
        }
        match self.pel.get_mut(&id) {
            None => Err("consumer pending entries that are in the group's list"),
            Some(owner) if *owner == self.consumer_no => Err("unique consumer pending entries"),
            Some(owner) => {
                *owner = self.consumer_no;
                Ok(())
            }
        }
    }

    /// The end of a group: every pending entry needs an owner.
    pub(super) fn group_end(&self) -> Result<(), &'static str> {
        if !self.abandoned && self.pel.values().any(|&owner| owner == 0) {
            return Err("every group pending entry owned by a consumer");
        }
        Ok(())
    }
}
