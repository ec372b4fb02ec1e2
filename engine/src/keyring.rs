//! A repository's key slots (`keys/…`) as a set: unlocking with one of
//! them, adding, listing and removing them. The slot format and its
//! cryptography are `keys.rs`'s.
//!
//! Nothing read here is trusted before the master key is known. A slot
//! that is too large, malformed, of an unknown version or asks for an
//! Argon2id cost out of bounds is skipped with a warning naming it, so one
//! damaged or hostile slot never keeps the others from opening.
//!
//! # Removal never leaves zero slots
//!
//! `key remove` announces itself before it looks: it creates
//! `key-removals/<slot>/<nonce>`, then lists the announcements, then the
//! slots, and deletes its slot only if a well-formed slot that nobody is
//! removing remains; then it deletes its announcement. Of several removals
//! running at once, the one whose listing of announcements comes last sees
//! every other one's announcement, or (an announcement goes only after its
//! slot did) no longer sees that slot: if they would remove every slot
//! between them, it refuses. Announcements are listed before slots for the
//! same reason. An announcement left by a killed removal makes later
//! removals more careful, never less; running the removal again completes
//! it. This needs only that a listing shows every write acknowledged
//! before it (local directories; S3 since 2020), not conditional writes.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::StreamExt;

use crate::crypto::{Keys, MasterKey};
use crate::keys::{ConfigAuth, KeySlot, Secret, KEY_SLOT_MAX_BYTES};
use crate::repo::Config;
use crate::repofile::{Kind, ObjectKey, RepoFile};
use crate::store::{Backend as _, BackendExt as _, ObjectInfo, Store};
use crate::{Error, Result};

/// Reads and checks one slot: its size, its JSON and version, its KDF's
/// bounds. `Err` says why it must be skipped.
fn parse_slot(key: &str, bytes: &[u8]) -> Result<KeySlot> {
    let slot = KeySlot::decode(key, bytes)?;
    slot.validate(key)?;
    Ok(slot)
}

/// Too large to be a slot: never fetched.
fn oversized(o: &ObjectInfo) -> bool {
    if o.size > KEY_SLOT_MAX_BYTES {
        tracing::warn!(slot = %o.key, size = o.size, "skipping key slot: larger than any key slot");
        return true;
    }
    false
}

/// Every listed slot, fetched eight at a time, in key order. A slot
/// deleted since the listing is left out.
async fn fetch_all(store: &Store) -> Result<Vec<(String, Result<Bytes>)>> {
    let listed = store.list(Kind::KeySlot.prefix()).await?;
    let fetched: Vec<_> = futures::stream::iter(listed.into_iter().filter(|o| !oversized(o)))
        .map(|o| async move {
            let got = store.get(&o.key).await;
            (o.key, got)
        })
        .buffered(8)
        .collect()
        .await;
    Ok(fetched.into_iter().filter(|(_, got)| !matches!(got, Err(Error::NotFound { .. }))).collect())
}

/// Unlocks with the first slot `secret` opens, and checks `config` (its
/// stored bytes) against that slot. A slot that cannot be used is skipped
/// with a warning; when none opens, a storage error met on the way is
/// returned rather than "wrong key", which it may not be.
pub(crate) async fn unlock(
    store: &Store,
    config: &Config,
    config_bytes: &[u8],
    secret: &Secret,
) -> Result<(MasterKey, Keys)> {
    let fetched = fetch_all(store).await?;
    let tried = fetched.len();
    let mut failure = None;
    for (key, got) in fetched {
        let key = key.as_str();
        let slot = match got {
            Ok(bytes) => parse_slot(key, &bytes),
            Err(e) => {
                tracing::warn!(slot = %key, "cannot read key slot: {e}");
                failure.get_or_insert(e);
                continue;
            }
        };
        let opened = slot.and_then(|s| Ok((s.open(key, &config.id, secret)?, s)));
        let (master, slot) = match opened {
            Ok((Some(master), slot)) => (master, slot),
            Ok((None, _)) => continue,
            Err(e) => {
                tracing::warn!(slot = %key, "skipping key slot: {e}");
                continue;
            }
        };
        let keys = Keys::derive(&master);
        if slot.check_config(key, &keys.config_mac(config_bytes))? == ConfigAuth::Unauthenticated {
            tracing::warn!(
                slot = %key,
                "config is not authenticated: this key slot predates config authentication; \
                 add a key slot (`cairn key add`) and remove this one to protect it"
            );
        }
        return Ok((master, keys));
    }
    match failure {
        Some(e) => Err(e),
        None => Err(Error::WrongKey { slots: tried }),
    }
}

/// Adds a version-2 slot for `secret`, carrying `config_mac`; returns its id.
pub(crate) async fn add(
    store: &Store,
    repo_id: &str,
    master: &MasterKey,
    config_mac: &[u8; 32],
    secret: &Secret,
) -> Result<String> {
    let slot = KeySlot::create(repo_id, master, secret, config_mac)?;
    let json = serde_json::to_vec_pretty(&slot).expect("slot serializes");
    let id = crate::ids::Id::of_bytes(&json).to_hex()[..16].to_string();
    store.put_create(&ObjectKey::KeySlot(id.clone()).to_string(), Bytes::from(json)).await?;
    Ok(id)
}

/// Every well-formed slot, by id, in key order; the others are skipped
/// with a warning.
pub(crate) async fn list(store: &Store) -> Result<Vec<(String, KeySlot)>> {
    let mut out = Vec::new();
    for (key, got) in fetch_all(store).await? {
        let Some(ObjectKey::KeySlot(id)) = ObjectKey::parse(&key) else { continue };
        match parse_slot(&key, &got?) {
            Ok(slot) => out.push((id, slot)),
            Err(e) => tracing::warn!(slot = %key, "skipping key slot: {e}"),
        }
    }
    Ok(out)
}

/// Slot ids some removal has announced.
async fn announced(store: &Store) -> Result<Vec<(String, String)>> {
    let listed = store.list(Kind::KeyRemoval.prefix()).await?;
    Ok(listed
        .into_iter()
        .filter_map(|o| match ObjectKey::parse(&o.key) {
            Some(ObjectKey::KeyRemoval { slot, .. }) => Some((slot, o.key)),
            _ => None,
        })
        .collect())
}

/// Removes slot `id`, unless no other well-formed slot would remain that
/// no concurrent removal is taking away (see the module docs).
pub(crate) async fn remove(store: &Store, id: &str) -> Result<()> {
    let slot_key = ObjectKey::KeySlot(id.to_string()).to_string();
    // Only a listed slot: `id` comes from the user and is not trusted as a key.
    if !store.list(Kind::KeySlot.prefix()).await?.iter().any(|o| o.key == slot_key) {
        return Err(Error::NotFound { what: format!("key slot {id}") });
    }
    let nonce = format!("{:016x}", rand::random::<u64>());
    let mine = ObjectKey::KeyRemoval { slot: id.to_string(), nonce }.to_string();
    let note = serde_json::json!({
        "version": 1, "slot": id, "host": crate::hostname(), "pid": std::process::id(),
        "started": chrono::Utc::now().to_rfc3339(),
    });
    store.put_create(&mine, Bytes::from(note.to_string())).await?;
    let decided = decide_and_delete(store, id, &slot_key).await;
    // The announcement goes whatever happened; left behind, it would only
    // make later removals refuse more.
    let withdrawn = store.delete(&mine).await;
    decided?;
    withdrawn
}

async fn decide_and_delete(store: &Store, id: &str, slot_key: &str) -> Result<()> {
    // Announcements first, then slots: see the module docs.
    let announcements = announced(store).await?;
    let removing: BTreeSet<&str> = announcements.iter().map(|(s, _)| s.as_str()).collect();
    let slots = list(store).await?;
    if !slots.iter().any(|(s, _)| s == id) {
        return Err(Error::NotFound { what: format!("key slot {id} (removed meanwhile)") });
    }
    let others = removing.iter().filter(|s| **s != id && slots.iter().any(|(x, _)| x == *s)).count();
    if !slots.iter().any(|(s, _)| s != id && !removing.contains(s.as_str())) {
        let why = if others > 0 {
            format!(" ({others} other key slot(s) are being removed, or an interrupted removal left its mark: run it again)")
        } else {
            String::new()
        };
        return Err(Error::InvalidInput(format!(
            "refusing to remove the last key slot: the repository would become unreadable{why}"
        )));
    }
    store.delete(slot_key).await?;
    // Announcements of slots already gone are leftovers of removals that
    // were killed after their delete: they decide nothing any more.
    for (slot, key) in &announcements {
        if slot != id && !slots.iter().any(|(s, _)| s == slot) {
            let _ = store.delete(key).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{InitOptions, Repository};
    use zeroize::Zeroizing;

    fn key(b: u8) -> Secret {
        Secret::KeyFile(Zeroizing::new([b; 32]))
    }

    async fn new_repo(secret: &Secret) -> (Store, Repository) {
        let store = Store::memory();
        let repo = Repository::init(store.clone(), secret, InitOptions::default()).await.unwrap();
        (store, repo)
    }

    async fn put(store: &Store, key: &str, bytes: impl Into<Vec<u8>>) {
        store.put(key, Bytes::from(bytes.into())).await.unwrap();
    }

    async fn config_text(store: &Store) -> String {
        String::from_utf8(store.get("config").await.unwrap().to_vec()).unwrap()
    }

    /// `config` with garbage collection's minimum age set to zero: valid
    /// values, and exactly what an attacker who wants fresh packs swept
    /// would write.
    fn without_min_age(config: &str) -> String {
        let changed = config.replacen(
            "\"pack_target\"",
            "\"gc\": { \"min_age_s\": 0, \"lease_ttl_s\": 600 },\n  \"pack_target\"",
            1,
        );
        assert_ne!(changed, config);
        changed
    }

    /// The detail of the error `open` must give: corrupt, naming `config`.
    fn config_refusal(opened: Result<Repository>) -> String {
        match opened {
            Err(Error::Corrupt { object, detail, .. }) if object == "config" => detail,
            other => panic!("expected `config` to be refused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_slots_are_skipped_and_the_others_still_open() {
        let (store, _) = new_repo(&key(1)).await;
        // Named to sort before the real slot, so `open` meets them first.
        put(&store, "keys/0000000000000001", "not JSON").await;
        put(&store, "keys/0000000000000002", r#"{"version": 9}"#).await;
        let bad_salt = r#"{"version": 2, "kdf": {"algorithm": "blake3-key-file"}, "salt": "zz",
            "sealed": "zz", "created": "", "host": ""}"#;
        put(&store, "keys/0000000000000003", bad_salt).await;
        put(&store, "keys/0000000000000004", vec![b' '; KEY_SLOT_MAX_BYTES as usize + 1]).await;
        let repo = Repository::open(store.clone(), &key(1)).await.unwrap();
        assert_eq!(repo.key_slots().await.unwrap().len(), 1, "only the real slot is listed");
        assert!(matches!(Repository::open(store, &key(2)).await, Err(Error::WrongKey { .. })));
    }

    #[tokio::test]
    async fn argon2_costs_out_of_bounds_are_skipped_without_running() {
        let pw = Secret::Password(Zeroizing::new(b"correct horse".to_vec()));
        let (store, _) = new_repo(&pw).await;
        // m_cost = u32::MAX is 4 TiB: argon2 would abort the process trying
        // to allocate it; t_cost = u32::MAX would run for ever.
        let costs = [(u32::MAX, 3, 2), (65536, u32::MAX, 2), (65536, 3, u32::MAX), (4, 1, 1)];
        for (i, (m, t, p)) in costs.into_iter().enumerate() {
            let slot = serde_json::json!({
                "version": 2, "kdf": { "algorithm": "argon2id", "m_cost": m, "t_cost": t, "p_cost": p },
                "salt": "00".repeat(16), "sealed": "00".repeat(72), "created": "", "host": "",
            });
            put(&store, &format!("keys/000000000000000{i}"), slot.to_string()).await;
        }
        let started = std::time::Instant::now();
        Repository::open(store, &pw).await.unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "a hostile slot's KDF ran");
    }

    #[tokio::test]
    async fn a_changed_config_is_refused_naming_it() {
        let (store, _) = new_repo(&key(1)).await;
        let original = config_text(&store).await;
        put(&store, "config", without_min_age(&original)).await;
        let detail = config_refusal(Repository::open(store.clone(), &key(1)).await);
        assert!(detail.contains("authentication failed"), "{detail}");
        put(&store, "config", original).await;
        Repository::open(store, &key(1)).await.unwrap();
    }

    #[tokio::test]
    async fn a_slot_stripped_of_its_config_mac_or_downgraded_does_not_vouch_for_config() {
        let (store, repo) = new_repo(&key(1)).await;
        let (id, slot) = repo.key_slots().await.unwrap().remove(0);
        let object = format!("keys/{id}");
        let stripped = KeySlot { config_mac: None, ..slot.clone() };
        put(&store, &object, serde_json::to_vec(&stripped).unwrap()).await;
        let detail = config_refusal(Repository::open(store.clone(), &key(1)).await);
        assert!(detail.contains(&object), "{detail}");
        // Passed off as a version-1 slot (which vouches for nothing), it no
        // longer opens: the version is bound into its seal.
        let downgraded = KeySlot { version: 1, ..stripped };
        put(&store, &object, serde_json::to_vec(&downgraded).unwrap()).await;
        assert!(matches!(Repository::open(store, &key(1)).await, Err(Error::WrongKey { slots: 1 })));
    }

    #[tokio::test]
    async fn a_repository_from_before_config_authentication_opens_until_a_new_slot_protects_it() {
        // What the previous build wrote: `config` and one version-1 slot.
        let store = Store::memory();
        let master = MasterKey::generate();
        let config = Config {
            version: 1,
            id: "ab".repeat(16),
            created: "2026-01-01T00:00:00+00:00".into(),
            chunker: crate::chunker::ChunkerParams::default(),
            pack_target: crate::repo::DEFAULT_PACK_TARGET,
            gc: None,
            copy_of: None,
        };
        let original = serde_json::to_string_pretty(&config).unwrap();
        put(&store, "config", original.clone()).await;
        let legacy = KeySlot::create_version_1(&config.id, &master, &key(1)).unwrap();
        put(&store, "keys/1111111111111111", serde_json::to_vec(&legacy).unwrap()).await;
        // Through a version-1 slot a change is not detected (a warning says
        // config is not authenticated).
        put(&store, "config", without_min_age(&original)).await;
        Repository::open(store.clone(), &key(1)).await.unwrap();
        put(&store, "config", original.clone()).await;
        let repo = Repository::open(store.clone(), &key(1)).await.unwrap();
        repo.add_key(&key(2)).await.unwrap();
        // The new slot vouches for the config it was added under.
        Repository::open(store.clone(), &key(2)).await.unwrap();
        put(&store, "config", without_min_age(&original)).await;
        config_refusal(Repository::open(store, &key(2)).await);
    }

    #[tokio::test]
    async fn config_values_out_of_range_are_refused_when_read() {
        let (store, _) = new_repo(&key(1)).await;
        let good = config_text(&store).await;
        let edits = [
            ("\"pack_target\": 16777216", "\"pack_target\": 0"),
            ("\"pack_target\": 16777216", "\"pack_target\": 4294967295"),
            ("\"id\": \"", "\"id\": \"../../"),
            (
                "\"pack_target\"",
                "\"gc\": { \"min_age_s\": 18446744073709551615, \"lease_ttl_s\": 600 }, \"pack_target\"",
            ),
            ("\"pack_target\"", "\"gc\": { \"min_age_s\": 60, \"lease_ttl_s\": 0 }, \"pack_target\""),
            ("\"max_size\": 4194304", "\"max_size\": 1"),
        ];
        for (from, to) in edits {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            put(&store, "config", bad).await;
            match Repository::read_config(&store).await {
                Err(Error::Corrupt { object, .. }) if object == "config" => {}
                other => panic!("{to}: {other:?}"),
            }
        }
    }
}
