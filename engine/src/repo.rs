//! The repository: configuration, unlocking, and sealed objects.

use crate::store::{Backend as _, BackendExt as _};
use bytes::Bytes;
use cairn_formats::repo::IndexSegment;
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::{Keys, MasterKey};
use crate::ids::Id;
use crate::keyring;
use crate::keys::{KeySlot, Secret};
use crate::repofile::envelope::{self, Binding};
use crate::repofile::{Kind, ObjectKey, RepoFile};
use crate::store::Store;
use crate::{Error, Result};

/// Repository format version written by this build.
pub const REPO_VERSION: u32 = 1;
/// Default pack target size: packs are closed once they reach it.
pub const DEFAULT_PACK_TARGET: u32 = 16 * 1024 * 1024;
/// Smallest `pack_target` a repository may have (1 MiB).
pub const PACK_TARGET_MIN: u32 = 1 << 20;
/// Largest `pack_target` (64 MiB): packs are built in memory, several at once.
pub const PACK_TARGET_MAX: u32 = 64 << 20;
/// Largest `gc.min_age_s` (30 days).
pub const GC_MIN_AGE_MAX_S: u64 = 30 * 86_400;
/// Largest `gc.lease_ttl_s` (1 day); the smallest is 1 s.
pub const GC_LEASE_TTL_MAX_S: u64 = 86_400;

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
    /// Garbage collection's timings, shared by every client so that none
    /// can disagree (absent in repositories made before: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcParams>,
    /// The id of the repository this one was made copy-compatible with
    /// (`cairn init --copy-from`): it shares that repository's master key,
    /// so its data keys and chunker, and packs copy byte for byte. A record
    /// for people; compatibility itself is decided by
    /// [`Repository::copy_compatible`], after unlocking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
}

/// Garbage collection's timings (`config.gc`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcParams {
    /// A pack younger than this (store time) is never condemned; `wal
    /// push`, which takes no lease, sends its manifest well within it.
    pub min_age_s: u64,
    /// A lease not renewed for this long (store time) may be broken.
    pub lease_ttl_s: u64,
}

impl Default for GcParams {
    fn default() -> Self {
        GcParams { min_age_s: 3600, lease_ttl_s: 600 }
    }
}

impl Config {
    /// The GC timings this repository uses.
    pub fn gc(&self) -> GcParams {
        self.gc.unwrap_or_default()
    }

    /// Checks every value against the ranges this build works with
    /// (docs/FORMAT.md): `config` is plaintext, so nothing in it is used
    /// unchecked. The message names the field.
    fn check(&self) -> std::result::Result<(), String> {
        if self.id.len() != 32 || !self.id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("id {:?} is not 32 lowercase hex digits", self.id));
        }
        self.chunker.validate().map_err(|e| e.to_string())?;
        if !(PACK_TARGET_MIN..=PACK_TARGET_MAX).contains(&self.pack_target) {
            return Err(format!(
                "pack_target {} is outside {PACK_TARGET_MIN}..={PACK_TARGET_MAX} bytes",
                self.pack_target
            ));
        }
        let gc = self.gc();
        if gc.min_age_s > GC_MIN_AGE_MAX_S {
            return Err(format!("gc.min_age_s {} is above {GC_MIN_AGE_MAX_S}", gc.min_age_s));
        }
        if !(1..=GC_LEASE_TTL_MAX_S).contains(&gc.lease_ttl_s) {
            return Err(format!("gc.lease_ttl_s {} is outside 1..={GC_LEASE_TTL_MAX_S}", gc.lease_ttl_s));
        }
        Ok(())
    }
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
    fn binding(self) -> Binding<'static> {
        match self {
            ObjectKind::Index => Binding::Kind(b"cairn index v1"),
            ObjectKind::Snapshot => Binding::Kind(b"cairn snapshot v1"),
        }
    }

    /// The key of the object of this kind named `id`.
    pub fn key(self, id: Id) -> ObjectKey {
        match self {
            ObjectKind::Index => ObjectKey::Index(id),
            ObjectKind::Snapshot => ObjectKey::Snapshot(crate::ids::SnapshotId(id)),
        }
    }

    /// The key prefix of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Index => Kind::Index.prefix(),
            ObjectKind::Snapshot => Kind::Snapshot.prefix(),
        }
    }
}

/// Options for a new repository: [`InitOptions::default`], then the
/// `with_…` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitOptions {
    /// Chunker sizes.
    pub chunker: ChunkerParams,
    /// Pack target size.
    pub pack_target: u32,
    /// GC timings (`None`: the defaults, not written).
    pub gc: Option<GcParams>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { chunker: ChunkerParams::default(), pack_target: DEFAULT_PACK_TARGET, gc: None }
    }
}

impl InitOptions {
    /// Packs are closed once they reach `bytes`.
    pub fn with_pack_target(mut self, bytes: u32) -> InitOptions {
        self.pack_target = bytes;
        self
    }

    /// These GC timings instead of the defaults (tests use short ones).
    pub fn with_gc(mut self, gc: GcParams) -> InitOptions {
        self.gc = Some(gc);
        self
    }

    /// These chunk sizes instead of the defaults.
    pub fn with_chunker(mut self, chunker: ChunkerParams) -> InitOptions {
        self.chunker = chunker;
        self
    }
}

impl RepoFile for Config {
    const VERSION: u32 = REPO_VERSION;
    type Id = ();
    fn key(_: &()) -> ObjectKey {
        ObjectKey::Config
    }
}

/// An unlocked repository.
pub struct Repository {
    store: Store,
    config: Config,
    keys: Keys,
    master: MasterKey,
    /// The authentication code of the `config` bytes this repository was
    /// opened with, for new key slots.
    config_mac: [u8; 32],
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({}, {})", self.store.location(), self.config.id)
    }
}

impl Repository {
    /// Creates a repository. The key slot, which authenticates `config`,
    /// is written before `config`, so a repository whose `config` exists
    /// can always be unlocked.
    pub async fn init(store: Store, secret: &Secret, opts: InitOptions) -> Result<Repository> {
        if store.exists(&ObjectKey::Config.to_string()).await? {
            return Err(Error::AlreadyExists { what: format!("a repository at {}", store.location()) });
        }
        let mut raw_id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw_id);
        let config = Config {
            version: REPO_VERSION,
            id: hex::encode(raw_id),
            created: chrono::Utc::now().to_rfc3339(),
            chunker: opts.chunker,
            pack_target: opts.pack_target,
            gc: opts.gc,
            copy_of: None,
        };
        Self::create(store, secret, config, MasterKey::generate()).await
    }

    /// Creates a repository copy-compatible with `source`: its own id and
    /// key slot (sealed under `secret`), but `source`'s master key and
    /// chunker, so blob ids, pack ids and every sealed object stay valid in
    /// both and `cairn copy` moves packs without decrypting them. `opts`
    /// gives the pack target and GC timings; its chunker is ignored.
    pub async fn init_copy_of(
        store: Store,
        secret: &Secret,
        opts: InitOptions,
        source: &Repository,
    ) -> Result<Repository> {
        if store.exists(&ObjectKey::Config.to_string()).await? {
            return Err(Error::AlreadyExists { what: format!("a repository at {}", store.location()) });
        }
        let mut raw_id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw_id);
        let config = Config {
            version: REPO_VERSION,
            id: hex::encode(raw_id),
            created: chrono::Utc::now().to_rfc3339(),
            chunker: source.config.chunker,
            pack_target: opts.pack_target,
            gc: opts.gc,
            copy_of: Some(source.config.id.clone()),
        };
        Self::create(store, secret, config, source.master.clone()).await
    }

    async fn create(store: Store, secret: &Secret, config: Config, master: MasterKey) -> Result<Repository> {
        config.check().map_err(|e| Error::InvalidInput(format!("repository settings: {e}")))?;
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        let keys = Keys::derive(&master);
        let config_mac = keys.config_mac(&json);
        let repo = Repository { keys, store, config, master, config_mac };
        repo.add_key(secret).await?;
        repo.store.put_create(&ObjectKey::Config.to_string(), Bytes::from(json)).await?;
        Ok(repo)
    }

    /// Opens and unlocks a repository, and authenticates its `config`
    /// (see docs/FORMAT.md for repositories made before that).
    pub async fn open(store: Store, secret: &Secret) -> Result<Repository> {
        let (config, bytes) = Self::read_config_bytes(&store).await?;
        let (master, keys) = keyring::unlock(&store, &config, &bytes, secret).await?;
        let config_mac = keys.config_mac(&bytes);
        Ok(Repository { keys, store, config, master, config_mac })
    }

    /// Reads `config` and checks its values, without unlocking (so without
    /// authenticating it).
    pub async fn read_config(store: &Store) -> Result<Config> {
        Ok(Self::read_config_bytes(store).await?.0)
    }

    async fn read_config_bytes(store: &Store) -> Result<(Config, Bytes)> {
        let key = ObjectKey::Config.to_string();
        let bytes = match store.get(&key).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    what: format!("a cairn repository at {} (run `cairn init`)", store.location()),
                })
            }
            Err(e) => return Err(e),
        };
        let config = Config::decode(&key, &bytes)?;
        config.check().map_err(|e| Error::corrupt(&key, None, e))?;
        Ok((config, bytes))
    }

    /// Adds a key slot for `secret`; returns its id.
    pub async fn add_key(&self, secret: &Secret) -> Result<String> {
        keyring::add(&self.store, &self.config.id, &self.master, &self.config_mac, secret).await
    }

    /// Every well-formed key slot, by id, sorted (the others are skipped
    /// with a warning naming them).
    pub async fn key_slots(&self) -> Result<Vec<(String, KeySlot)>> {
        keyring::list(&self.store).await
    }

    /// Removes key slot `id`. The last slot is never removed, even by
    /// removals running at once: the repository would become unreadable.
    pub async fn remove_key(&self, id: &str) -> Result<()> {
        keyring::remove(&self.store, id).await
    }

    /// A fingerprint of the master key (16 bytes, hex): equal in two
    /// repositories exactly when they seal and name blobs alike. One-way
    /// (BLAKE3 `derive_key` under its own context), so it reveals nothing of
    /// the keys; never stored.
    pub fn data_key_id(&self) -> String {
        hex::encode(&blake3::derive_key("cairn 2026-12 v1 data key id", &self.master.0)[..16])
    }

    /// Whether packs, index segments, snapshots and WAL manifests of `self`
    /// are valid, byte for byte, in `other`: same keys and same chunker.
    pub fn copy_compatible(&self, other: &Repository) -> bool {
        self.data_key_id() == other.data_key_id() && self.config.chunker == other.config.chunker
    }

    /// This repository read also from `others`, copies of it in other
    /// stores (filled by `cairn copy`), through a [`crate::store::Fallback`]:
    /// reads go to the first store that answers, writes to this one only.
    /// Every other must be copy-compatible ([`Repository::copy_compatible`]),
    /// or its objects would not open here.
    /// With no others the store is still wrapped, so that what it served
    /// is reported the same way.
    pub fn with_fallbacks(self, others: Vec<Repository>) -> Result<Repository> {
        for o in &others {
            if !self.copy_compatible(o) {
                return Err(Error::InvalidInput(format!(
                    "{} is not a copy of {} (different data keys or chunker): it cannot stand in for it; \
                     create it with `cairn init --copy-from`",
                    o.store.location(),
                    self.store.location()
                )));
            }
        }
        let store = Store::with_fallbacks(self.store, others.into_iter().map(|o| o.store).collect());
        Ok(Repository { store, ..self })
    }

    /// This repository read from `store` alone (one member of its
    /// [`crate::store::Fallback`], say): same keys and settings.
    pub(crate) fn reading_from(&self, store: Store) -> Repository {
        Repository {
            store,
            config: self.config.clone(),
            keys: Keys::derive(&self.master),
            master: self.master.clone(),
            config_mac: self.config_mac,
        }
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
        let sealed = envelope::seal(&self.keys, kind.binding(), plaintext);
        let id = Id::of_bytes(&sealed);
        self.store.put(&kind.key(id).to_string(), Bytes::from(sealed)).await?;
        Ok(id)
    }

    /// Reads, verifies and opens an object.
    pub async fn get_object(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let key = kind.key(*id).to_string();
        let bytes = self.store.get(&key).await?;
        self.open_object(kind, &key, id, &bytes)
    }

    /// Reads, verifies, opens and decodes index segment `id`. A segment that
    /// does not decode is [`Error::Corrupt`] (or
    /// [`Error::UnsupportedVersion`]) naming its key; store errors, a
    /// missing segment's [`Error::NotFound`] among them, pass through.
    pub(crate) async fn load_segment(&self, id: &Id) -> Result<IndexSegment> {
        let plain = self.get_object(ObjectKind::Index, id).await?;
        IndexSegment::decode(&plain).map_err(|e| Error::decode(ObjectKey::Index(*id).to_string(), e))
    }

    /// Verifies and opens the stored bytes of an object.
    pub fn open_object(&self, kind: ObjectKind, key: &str, id: &Id, bytes: &[u8]) -> Result<Vec<u8>> {
        if Id::of_bytes(bytes) != *id {
            return Err(Error::corrupt(key, None, "content does not match its name (BLAKE3 mismatch)"));
        }
        envelope::open(&self.keys, key, kind.binding(), bytes)
    }

    /// Ids of all objects of `kind`, with their sizes.
    pub async fn list_ids(&self, kind: ObjectKind) -> Result<Vec<(Id, u64)>> {
        let mut out = Vec::new();
        for o in self.store.list(kind.prefix()).await? {
            match ObjectKey::parse(&o.key).and_then(|k| k.id()) {
                Some(id) => out.push((id, o.size)),
                None => tracing::warn!(object = %o.key, "ignoring object with a malformed name"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn key(b: u8) -> Secret {
        Secret::KeyFile(Zeroizing::new([b; 32]))
    }

    #[tokio::test]
    async fn a_copy_compatible_repository_shares_keys_and_chunker_but_not_its_slots_or_id() {
        let opts = InitOptions::default().with_chunker(ChunkerParams {
            min_size: 1 << 16,
            avg_size: 1 << 18,
            max_size: 1 << 20,
        });
        let src = Repository::init(Store::memory(), &key(1), opts).await.unwrap();
        let store = Store::memory();
        let copy = Repository::init_copy_of(store.clone(), &key(2), InitOptions::default(), &src).await.unwrap();
        assert!(src.copy_compatible(&copy) && copy.copy_compatible(&src));
        assert_ne!(copy.config().id, src.config().id);
        assert_eq!(copy.config().copy_of.as_deref(), Some(src.config().id.as_str()));
        assert_eq!(copy.config().chunker, src.config().chunker, "the source's chunker, not the options'");
        assert_eq!(copy.keys().blob_id(b"x"), src.keys().blob_id(b"x"));
        // Its own slot: its own secret opens it, the source's does not.
        let reopened = Repository::open(store.clone(), &key(2)).await.unwrap();
        assert!(reopened.copy_compatible(&src));
        assert!(matches!(Repository::open(store, &key(1)).await, Err(Error::WrongKey { .. })));
        let other = Repository::init(Store::memory(), &key(1), InitOptions::default()).await.unwrap();
        assert!(!other.copy_compatible(&src), "same secret, different master key");
        assert_ne!(other.data_key_id(), src.data_key_id());
    }
}
