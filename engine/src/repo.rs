//! The repository: configuration, unlocking, and sealed objects.

use crate::store::{Backend as _, BackendExt as _};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::{Keys, MasterKey};
use crate::ids::Id;
use crate::keys::{KeySlot, Secret};
use crate::store::Store;
use crate::{Error, Result};

/// Repository format version written by this build.
pub const REPO_VERSION: u32 = 1;
/// Version byte at the start of every sealed object (index, snapshot).
pub const SEALED_OBJECT_VERSION: u8 = 1;
/// Default pack target size: packs are closed once they reach it.
pub const DEFAULT_PACK_TARGET: u32 = 16 * 1024 * 1024;

/// The plaintext `config` object. It holds nothing secret: the repository
/// id, the format version, and the chunking and packing parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Repository format version.
    pub version: u32,
    /// Random repository id (hex); binds key slots and names the local cache.
    pub id: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// FastCDC sizes.
    pub chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_target: u32,
}

/// Sealed object kinds; each has its own associated data, so an index
/// segment can never be passed off as a snapshot or vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `index/<id>`.
    Index,
    /// `snapshots/<id>`.
    Snapshot,
}

impl ObjectKind {
    fn aad(self) -> &'static [u8] {
        match self {
            ObjectKind::Index => b"cairn index v1",
            ObjectKind::Snapshot => b"cairn snapshot v1",
        }
    }

    /// The key prefix of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
        }
    }
}

/// Options for a new repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Chunker sizes.
    pub chunker: ChunkerParams,
    /// Pack target size.
    pub pack_target: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { chunker: ChunkerParams::default(), pack_target: DEFAULT_PACK_TARGET }
    }
}

/// An unlocked repository.
pub struct Repository {
    store: Store,
    config: Config,
    keys: Keys,
    master: MasterKey,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({}, {})", self.store.location(), self.config.id)
    }
}

impl Repository {
    /// Creates a repository. The key slot is written before `config`, so a
    /// repository whose `config` exists can always be unlocked.
    pub async fn init(store: Store, secret: &Secret, opts: InitOptions) -> Result<Repository> {
        if store.exists("config").await? {
            return Err(Error::AlreadyExists { what: format!("a repository at {}", store.location()) });
        }
        opts.chunker.validate()?;
        let mut raw_id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw_id);
        let config = Config {
            version: REPO_VERSION,
            id: hex::encode(raw_id),
            created: chrono::Utc::now().to_rfc3339(),
            chunker: opts.chunker,
            pack_target: opts.pack_target,
        };
        let master = MasterKey::generate();
        let repo = Repository { keys: Keys::derive(&master), store, config, master };
        repo.add_key(secret).await?;
        let json = serde_json::to_vec_pretty(&repo.config).expect("config serializes");
        repo.store.put_create("config", Bytes::from(json)).await?;
        Ok(repo)
    }

    /// Opens and unlocks a repository.
    pub async fn open(store: Store, secret: &Secret) -> Result<Repository> {
        let config = Self::read_config(&store).await?;
        let slots = store.list("keys").await?;
        let fetched: Vec<_> = futures::stream::iter(slots.iter())
            .map(|s| async { (s.key.clone(), store.get(&s.key).await) })
            .buffered(8)
            .collect()
            .await;
        for (key, bytes) in fetched.iter() {
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => return Err(Error::Config(format!("{e}"))),
            };
            let slot: KeySlot = serde_json::from_slice(bytes)
                .map_err(|e| Error::corrupt(key.as_str(), None, format!("key slot is not valid JSON: {e}")))?;
            if let Some(master) = slot.open(key, &config.id, secret)? {
                return Ok(Repository { keys: Keys::derive(&master), store, config, master });
            }
        }
        Err(Error::WrongKey { slots: slots.len() })
    }

    /// Reads and validates `config` without unlocking.
    pub async fn read_config(store: &Store) -> Result<Config> {
        let bytes = match store.get("config").await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    what: format!("a cairn repository at {} (run `cairn init`)", store.location()),
                })
            }
            Err(e) => return Err(e),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupt("config", None, format!("not JSON: {e}")))?;
        let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
        if version != u64::from(REPO_VERSION) {
            return Err(Error::UnsupportedVersion {
                object: "config".into(),
                got: version,
                known: REPO_VERSION.into(),
            });
        }
        let config: Config =
            serde_json::from_value(v).map_err(|e| Error::corrupt("config", None, format!("bad field: {e}")))?;
        config.chunker.validate()?;
        Ok(config)
    }

    /// Adds a key slot for `secret`; returns its id.
    pub async fn add_key(&self, secret: &Secret) -> Result<String> {
        let slot = KeySlot::create(&self.config.id, &self.master, secret)?;
        let json = serde_json::to_vec_pretty(&slot).expect("slot serializes");
        let id = Id::of_bytes(&json).to_hex()[..16].to_string();
        self.store.put_create(&format!("keys/{id}"), Bytes::from(json)).await?;
        Ok(id)
    }

    /// The storage.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The derived keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Seals and stores an object; its id is the BLAKE3 of the stored bytes,
    /// so `check` can tell a renamed or replaced object from a genuine one.
    pub async fn put_object(&self, kind: ObjectKind, plaintext: &[u8]) -> Result<Id> {
        let mut sealed = Vec::with_capacity(plaintext.len() + 64);
        sealed.push(SEALED_OBJECT_VERSION);
        self.keys.seal_into(kind.aad(), plaintext, &mut sealed);
        let id = Id::of_bytes(&sealed);
        let key = format!("{}/{}", kind.prefix(), id.to_hex());
        self.store.put(&key, Bytes::from(sealed)).await?;
        Ok(id)
    }

    /// Reads, verifies and opens an object.
    pub async fn get_object(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let key = format!("{}/{}", kind.prefix(), id.to_hex());
        let bytes = self.store.get(&key).await?;
        self.open_object(kind, &key, id, &bytes)
    }

    /// Verifies and opens the stored bytes of an object.
    pub fn open_object(&self, kind: ObjectKind, key: &str, id: &Id, bytes: &[u8]) -> Result<Vec<u8>> {
        if Id::of_bytes(bytes) != *id {
            return Err(Error::corrupt(key, None, "content does not match its name (BLAKE3 mismatch)"));
        }
        match bytes.first() {
            Some(&SEALED_OBJECT_VERSION) => {}
            Some(&v) => {
                return Err(Error::UnsupportedVersion {
                    object: key.into(),
                    got: v.into(),
                    known: SEALED_OBJECT_VERSION.into(),
                })
            }
            None => return Err(Error::corrupt(key, Some(0), "empty object")),
        }
        self.keys
            .open(kind.aad(), &bytes[1..])
            .ok_or_else(|| Error::corrupt(key, None, "authentication failed (tampered, or sealed with another key)"))
    }

    /// Ids of all objects of `kind`, with their sizes.
    pub async fn list_ids(&self, kind: ObjectKind) -> Result<Vec<(Id, u64)>> {
        let mut out = Vec::new();
        for o in self.store.list(kind.prefix()).await? {
            let name = o.key.rsplit('/').next().unwrap_or_default();
            match Id::from_hex(name) {
                Some(id) => out.push((id, o.size)),
                None => tracing::warn!(object = %o.key, "ignoring object with a malformed name"),
            }
        }
        Ok(out)
    }
}
