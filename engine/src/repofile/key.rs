//! [`ObjectKey`]: every rule about where a repository object lives, in one
//! place. docs/FORMAT.md lists the same layout.

use std::fmt;

use crate::ids::{Id, PackId, SnapshotId};

/// The kinds of repository objects, each under its own key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `config` (plaintext JSON).
    Config,
    /// `keys/<id>` (key slots, JSON).
    KeySlot,
    /// `key-removals/<slot id>/<nonce>`: `key remove`s under way.
    KeyRemoval,
    /// `packs/<ab>/<id>`.
    Pack,
    /// `index/<id>` (sealed).
    Index,
    /// `snapshots/<id>` (sealed).
    Snapshot,
    /// `wal/<stanza>/…`: stanza records and WAL manifests (sealed, bound to
    /// their key).
    Wal,
    /// `walcat/<stanza>/…`: catalogue segments, many WAL manifests' facts
    /// in one sealed object, and the stanza's change marker.
    WalCatalog,
    /// `pins/<snapshot id>`: snapshots `forget` never removes.
    Pin,
    /// `leases/<id>`: writers garbage collection must wait for.
    Lease,
    /// `gc/…`: garbage collection's state, plans and lease lists.
    Gc,
    /// `drills/<…>`: restore drill records (sealed, bound to their key).
    Drill,
    /// `check/…`: what checks have read (`check/coverage`).
    Check,
    /// `walbehind/…`: WAL files a copy of the archive in another
    /// repository still lacks (sealed, bound to their key).
    WalBehind,
    /// `waljournal/…`: the journals of segments `pg receive --synchronous`
    /// is receiving into a local repository (records sealed, bound to
    /// their key).
    WalJournal,
}

impl Kind {
    /// The key prefix listing this kind (`config` is a single key).
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::KeySlot => "keys",
            Kind::KeyRemoval => "key-removals",
            Kind::Pack => "packs",
            Kind::Index => "index",
            Kind::Snapshot => "snapshots",
            Kind::Wal => "wal",
            Kind::WalCatalog => "walcat",
            Kind::Pin => "pins",
            Kind::Lease => "leases",
            Kind::Gc => "gc",
            Kind::Drill => "drills",
            Kind::Check => "check",
            Kind::WalBehind => "walbehind",
            Kind::WalJournal => "waljournal",
        }
    }
}

/// Where one object lives, relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// `config`.
    Config,
    /// `keys/<id>`: a key slot (16 hex digits).
    KeySlot(String),
    /// `key-removals/<slot id>/<16 hex>`: one `key remove` of that slot
    /// under way (see `keyring.rs`).
    KeyRemoval {
        /// The slot being removed.
        slot: String,
        /// Tells concurrent removals of one slot apart.
        nonce: String,
    },
    /// `packs/<first two hex digits>/<id>`: a pack, named by the BLAKE3 of
    /// its bytes.
    Pack(PackId),
    /// `index/<id>`: an index segment.
    Index(Id),
    /// `snapshots/<id>`: a snapshot manifest.
    Snapshot(SnapshotId),
    /// `wal/<stanza>/stanza`: what a stanza's first file recorded about its
    /// cluster.
    Stanza(String),
    /// `wal/<stanza>/<timeline, 8 hex digits>/<name>`: one archived WAL
    /// file's manifest.
    WalFile {
        /// The stanza.
        stanza: String,
        /// The timeline, which is also the first 8 hex digits of the name.
        timeline: u32,
        /// The WAL file name.
        name: String,
    },
    /// `wal/<stanza>/expiry`: what retention last removed from a stanza.
    Expiry(String),
    /// `walcat/<stanza>/<timeline, 8 hex digits>/<first segment name>`:
    /// the catalogue segment of one group of segment numbers (sealed,
    /// bound to its key).
    WalCatalog {
        /// The stanza.
        stanza: String,
        /// The timeline.
        timeline: u32,
        /// The name of the group's first segment.
        first: String,
    },
    /// `walcat/<stanza>/changes`: rewritten after WAL manifests are deleted,
    /// so cached listings of the stanza are taken again.
    WalChanges(String),
    /// `pins/<snapshot id>`: a pin (sealed, bound to its key).
    Pin(SnapshotId),
    /// `leases/<16 hex>`: one writer's lease (sealed, bound to its key).
    Lease(String),
    /// `gc/state`: the generation, the epoch and the plans not yet swept.
    GcState,
    /// `gc/clock`: rewritten by garbage collection to read the store's clock.
    GcClock,
    /// `gc/plans/<generation, 16 hex>`: the packs one generation condemned.
    GcPlan(u64),
    /// `gc/leases/<generation, 16 hex>`: the leases that existed when the
    /// generation began; its sweep waits for each to end.
    GcLeases(u64),
    /// `drills/<start time, ms, 16 hex>-<16 hex>`: one restore drill's
    /// record; the names sort by time.
    Drill {
        /// When the drill began, Unix milliseconds.
        ms: u64,
        /// Tells drills started in the same millisecond apart.
        nonce: u64,
    },
    /// `check/coverage`: which packs checks have read and when, the
    /// rotation under way and the last check's outcome (sealed, bound to
    /// its key; moved only by compare-and-swap).
    CheckCoverage,
    /// `walbehind/<copy>/<stanza>/<16 hex ms>-<name>`: `wal push` stored
    /// WAL file `name` of `stanza` here but could not reach the copy
    /// `copy` (a `[repos.NAME]` name) at that time; removed once the copy
    /// has caught up. The names sort by time.
    WalBehind {
        /// The copy's name.
        copy: String,
        /// The stanza.
        stanza: String,
        /// When the push missed the copy, Unix milliseconds.
        ms: u64,
        /// The WAL file name.
        name: String,
    },
    /// `waljournal/<stanza>/<timeline, 8 hex digits>/<segment>`: the
    /// journal of a segment being received (`wal/journal.rs`): sealed
    /// records appended in place, each made durable with one `fdatasync`.
    WalJournal {
        /// The stanza.
        stanza: String,
        /// The timeline, which is also the first 8 hex digits of the name.
        timeline: u32,
        /// The segment's name.
        segment: String,
    },
}

impl ObjectKey {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            ObjectKey::Config => Kind::Config,
            ObjectKey::KeySlot(_) => Kind::KeySlot,
            ObjectKey::KeyRemoval { .. } => Kind::KeyRemoval,
            ObjectKey::Pack(_) => Kind::Pack,
            ObjectKey::Index(_) => Kind::Index,
            ObjectKey::Snapshot(_) => Kind::Snapshot,
            ObjectKey::Stanza(_) | ObjectKey::Expiry(_) | ObjectKey::WalFile { .. } => Kind::Wal,
            ObjectKey::WalCatalog { .. } | ObjectKey::WalChanges(_) => Kind::WalCatalog,
            ObjectKey::Pin(_) => Kind::Pin,
            ObjectKey::Lease(_) => Kind::Lease,
            ObjectKey::GcState | ObjectKey::GcClock | ObjectKey::GcPlan(_) | ObjectKey::GcLeases(_) => Kind::Gc,
            ObjectKey::Drill { .. } => Kind::Drill,
            ObjectKey::CheckCoverage => Kind::Check,
            ObjectKey::WalBehind { .. } => Kind::WalBehind,
            ObjectKey::WalJournal { .. } => Kind::WalJournal,
        }
    }

    /// Reads a listed key back; `None` for anything that is not a
    /// well-formed key of this layout (a stray file, a malformed name).
    pub fn parse(key: &str) -> Option<ObjectKey> {
        let parts: Vec<&str> = key.split('/').collect();
        let id = |s: &str| Id::from_hex(s);
        match parts.as_slice() {
            ["config"] => Some(ObjectKey::Config),
            ["keys", slot] if !slot.is_empty() => Some(ObjectKey::KeySlot(slot.to_string())),
            ["key-removals", slot, nonce] if !slot.is_empty() && !nonce.is_empty() => {
                Some(ObjectKey::KeyRemoval { slot: slot.to_string(), nonce: nonce.to_string() })
            }
            ["packs", ab, hex] => id(hex).filter(|_| hex.get(..2) == Some(*ab)).map(|i| ObjectKey::Pack(PackId(i))),
            ["index", hex] => id(hex).map(ObjectKey::Index),
            ["snapshots", hex] => id(hex).map(|i| ObjectKey::Snapshot(SnapshotId(i))),
            ["wal", stanza, "stanza"] => Some(ObjectKey::Stanza(stanza.to_string())),
            ["wal", stanza, "expiry"] => Some(ObjectKey::Expiry(stanza.to_string())),
            ["wal", stanza, tli, name] if tli.len() == 8 => {
                let timeline = u32::from_str_radix(tli, 16).ok()?;
                Some(ObjectKey::WalFile { stanza: stanza.to_string(), timeline, name: name.to_string() })
            }
            ["walcat", stanza, "changes"] => Some(ObjectKey::WalChanges(stanza.to_string())),
            ["walcat", stanza, tli, first] if tli.len() == 8 => {
                let timeline = u32::from_str_radix(tli, 16).ok()?;
                Some(ObjectKey::WalCatalog { stanza: stanza.to_string(), timeline, first: first.to_string() })
            }
            ["pins", hex] => id(hex).map(|i| ObjectKey::Pin(SnapshotId(i))),
            ["leases", l] if l.len() == 16 && l.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(ObjectKey::Lease(l.to_string()))
            }
            ["gc", "state"] => Some(ObjectKey::GcState),
            ["gc", "clock"] => Some(ObjectKey::GcClock),
            ["gc", "plans", g] if g.len() == 16 => u64::from_str_radix(g, 16).ok().map(ObjectKey::GcPlan),
            ["gc", "leases", g] if g.len() == 16 => u64::from_str_radix(g, 16).ok().map(ObjectKey::GcLeases),
            ["drills", name] => {
                let (ms, nonce) = name.split_once('-')?;
                let hex16 = |s: &str| (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok()).flatten();
                Some(ObjectKey::Drill { ms: hex16(ms)?, nonce: hex16(nonce)? })
            }
            ["check", "coverage"] => Some(ObjectKey::CheckCoverage),
            ["walbehind", copy, stanza, file] if !copy.is_empty() && !stanza.is_empty() => {
                let (ms, name) = file.split_once('-')?;
                let ms = (ms.len() == 16).then(|| u64::from_str_radix(ms, 16).ok()).flatten()?;
                (!name.is_empty()).then(|| ObjectKey::WalBehind {
                    copy: copy.to_string(),
                    stanza: stanza.to_string(),
                    ms,
                    name: name.to_string(),
                })
            }
            ["waljournal", stanza, tli, segment] if tli.len() == 8 && !stanza.is_empty() && !segment.is_empty() => {
                let timeline = u32::from_str_radix(tli, 16).ok()?;
                Some(ObjectKey::WalJournal { stanza: stanza.to_string(), timeline, segment: segment.to_string() })
            }
            _ => None,
        }
    }

    /// The raw id of a pack, index segment or snapshot key.
    pub fn id(&self) -> Option<Id> {
        match self {
            ObjectKey::Pack(PackId(id)) | ObjectKey::Index(id) | ObjectKey::Snapshot(SnapshotId(id)) => Some(*id),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Config => f.write_str("config"),
            ObjectKey::KeySlot(slot) => write!(f, "keys/{slot}"),
            ObjectKey::KeyRemoval { slot, nonce } => write!(f, "key-removals/{slot}/{nonce}"),
            ObjectKey::Pack(id) => {
                let h = id.to_hex();
                write!(f, "packs/{}/{h}", &h[..2])
            }
            ObjectKey::Index(id) => write!(f, "index/{}", id.to_hex()),
            ObjectKey::Snapshot(id) => write!(f, "snapshots/{}", id.to_hex()),
            ObjectKey::Stanza(stanza) => write!(f, "wal/{stanza}/stanza"),
            ObjectKey::Expiry(stanza) => write!(f, "wal/{stanza}/expiry"),
            ObjectKey::WalFile { stanza, timeline, name } => write!(f, "wal/{stanza}/{timeline:08X}/{name}"),
            ObjectKey::WalCatalog { stanza, timeline, first } => write!(f, "walcat/{stanza}/{timeline:08X}/{first}"),
            ObjectKey::WalChanges(stanza) => write!(f, "walcat/{stanza}/changes"),
            ObjectKey::Pin(id) => write!(f, "pins/{}", id.to_hex()),
            ObjectKey::Lease(l) => write!(f, "leases/{l}"),
            ObjectKey::GcState => f.write_str("gc/state"),
            ObjectKey::GcClock => f.write_str("gc/clock"),
            ObjectKey::GcPlan(g) => write!(f, "gc/plans/{g:016x}"),
            ObjectKey::GcLeases(g) => write!(f, "gc/leases/{g:016x}"),
            ObjectKey::Drill { ms, nonce } => write!(f, "drills/{ms:016x}-{nonce:016x}"),
            ObjectKey::CheckCoverage => f.write_str("check/coverage"),
            ObjectKey::WalBehind { copy, stanza, ms, name } => write!(f, "walbehind/{copy}/{stanza}/{ms:016x}-{name}"),
            ObjectKey::WalJournal { stanza, timeline, segment } => {
                write!(f, "waljournal/{stanza}/{timeline:08X}/{segment}")
            }
        }
    }
}

impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> String {
        k.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_and_strays_are_refused() {
        let id = Id([0xab; 32]);
        let keys = [
            ObjectKey::Config,
            ObjectKey::KeySlot("0123456789abcdef".into()),
            ObjectKey::KeyRemoval { slot: "0123456789abcdef".into(), nonce: "fedcba9876543210".into() },
            ObjectKey::Pack(PackId(id)),
            ObjectKey::Index(id),
            ObjectKey::Snapshot(SnapshotId(id)),
            ObjectKey::Stanza("main".into()),
            ObjectKey::WalFile { stanza: "main".into(), timeline: 0x1a, name: "0000001A0000000000000003".into() },
            ObjectKey::Expiry("main".into()),
            ObjectKey::WalCatalog { stanza: "main".into(), timeline: 2, first: "000000020000000100000000".into() },
            ObjectKey::WalChanges("main".into()),
            ObjectKey::Pin(SnapshotId(id)),
            ObjectKey::Lease("0123456789abcdef".into()),
            ObjectKey::GcState,
            ObjectKey::GcClock,
            ObjectKey::GcPlan(7),
            ObjectKey::GcLeases(7),
            ObjectKey::Drill { ms: 1_700_000_000_000, nonce: 0xfeed },
            ObjectKey::WalBehind {
                copy: "offsite".into(),
                stanza: "main".into(),
                ms: 1_700_000_000_000,
                name: "000000010000000000000003".into(),
            },
            ObjectKey::CheckCoverage,
            ObjectKey::WalJournal { stanza: "main".into(), timeline: 3, segment: "000000030000000000000007".into() },
        ];
        for k in keys {
            assert_eq!(ObjectKey::parse(&k.to_string()), Some(k.clone()), "{k}");
            assert!(k.to_string().starts_with(k.kind().prefix()));
        }
        assert_eq!(ObjectKey::Pack(PackId(id)).to_string(), format!("packs/ab/{}", id.to_hex()));
        assert_eq!(
            ObjectKey::WalFile { stanza: "s".into(), timeline: 2, name: "n".into() }.to_string(),
            "wal/s/00000002/n"
        );
        for stray in ["packs/cd/".to_string() + &id.to_hex(), "packs/ab/xyz".into(), "index/ab".into(), "nope".into()] {
            assert_eq!(ObjectKey::parse(&stray), None, "{stray}");
        }
    }
}
