//! Typed repository files: where each object lives ([`ObjectKey`]), the
//! sealed envelope encrypted files share ([`envelope`]), and [`RepoFile`],
//! what every versioned JSON file of the repository (snapshot manifests,
//! WAL manifests, stanza records, key slots, `config`) has in common.
//!
//! Packs and index segments are binary layouts defined in
//! `cairn_formats::repo`; they are named by their hash and sealed the same
//! way, but decoded there.

pub mod envelope;
mod key;

pub use key::{Kind, ObjectKey};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// A versioned JSON file of the repository.
///
/// Every such file carries a `version` field. A reader refuses a version
/// it does not know with [`Error::UnsupportedVersion`] (upgrade cairn)
/// rather than guessing, and any other decoding failure is
/// [`Error::Corrupt`] naming the object.
pub trait RepoFile: Serialize + DeserializeOwned {
    /// The `version` this build writes (and the newest it reads).
    const VERSION: u32;

    /// The oldest `version` this build still reads (key slots read both
    /// 1 and 2).
    const OLDEST_VERSION: u32 = Self::VERSION;

    /// What identifies one file of this type (a snapshot id, a WAL file's
    /// stanza, timeline and name, …).
    type Id: ?Sized;

    /// Where the file with this id lives.
    fn key(id: &Self::Id) -> ObjectKey;

    /// The file's bytes before sealing (JSON).
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("repository files serialize")
    }

    /// Decodes the JSON read from `object`, refusing unknown versions.
    fn decode(object: &str, json: &[u8]) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| Error::corrupt(object, None, format!("not JSON: {e}")))?;
        let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
        if !(u64::from(Self::OLDEST_VERSION)..=u64::from(Self::VERSION)).contains(&version) {
            return Err(Error::UnsupportedVersion { object: object.into(), got: version, known: Self::VERSION.into() });
        }
        serde_json::from_value(v).map_err(|e| Error::corrupt(object, None, format!("bad field: {e}")))
    }
}
