//! Key slots: the master key sealed under a password or a key file.
//!
//! A password goes through Argon2id, which is slow on purpose. A key file
//! already holds 32 random bytes, so a cheap BLAKE3 derivation is enough and
//! `archive_command`-style callers pay no KDF cost on every call.
//!
//! Slots are plaintext and anyone who can write to the repository can add
//! one, so nothing in a slot is trusted before it is checked: the Argon2id
//! cost must lie within [`ARGON2_MAX_M_COST_KIB`], [`ARGON2_MAX_T_COST`] and
//! [`ARGON2_MAX_P_COST`] ([`KeySlot::validate`]), and its memory is
//! allocated fallibly, so a hostile slot is skipped instead of aborting the
//! process. A version-2 slot also carries `config`'s authentication code.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{open_with, seal_with, MasterKey};
use crate::{Error, Result};

const KEY_FILE_PREFIX: &str = "cairn-key-v1:";
const CTX_KEY_FILE: &str = "cairn 2026-11 v1 key file slot";
/// Version of the key slot JSON this build writes: 2 carries `config_mac`
/// and seals under its own associated data, so a version-2 slot cannot be
/// passed off as a version-1 slot (which carries none). 1 is still read.
pub const KEY_SLOT_VERSION: u32 = 2;

/// Most memory a slot's Argon2id may ask for: 4 GiB, in KiB (the default
/// is 64 MiB). Argon2's own limit is 4 TiB, which would abort the process.
pub const ARGON2_MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
/// Most Argon2id passes a slot may ask for (the default is 3).
pub const ARGON2_MAX_T_COST: u32 = 16;
/// Most Argon2id lanes a slot may ask for (the default is 2).
pub const ARGON2_MAX_P_COST: u32 = 16;
/// Largest key slot object read: a slot is a few hundred bytes.
pub const KEY_SLOT_MAX_BYTES: u64 = 64 * 1024;

/// A secret that unlocks a key slot. Never printed.
pub enum Secret {
    /// A password (from a file or a prompt).
    Password(Zeroizing<Vec<u8>>),
    /// The 32 random bytes of a key file.
    KeyFile(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(..)"),
            Secret::KeyFile(_) => f.write_str("Secret::KeyFile(..)"),
        }
    }
}

impl Secret {
    /// Reads a password file; one trailing newline is not part of the password.
    /// Warns (once per file) when the file gives group or others access.
    pub fn from_password_file(path: &Path) -> Result<Secret> {
        let mut bytes = Zeroizing::new(Vec::new());
        open_private(path, "password file")?.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(Error::Config(format!("{}: the password file is empty", path.display())));
        }
        Ok(Secret::Password(bytes))
    }

    /// Reads a key file written by [`Secret::create_key_file`]. Warns
    /// (once per file) when the file gives group or others access.
    pub fn from_key_file(path: &Path) -> Result<Secret> {
        let mut text = Zeroizing::new(String::new());
        open_private(path, "key file")?.read_to_string(&mut text).map_err(|e| Error::io(path, e))?;
        let hex_part = text
            .trim()
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or_else(|| Error::Config(format!("{}: not a cairn key file", path.display())))?;
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_part, key.as_mut())
            .map_err(|_| Error::Config(format!("{}: malformed cairn key file", path.display())))?;
        Ok(Secret::KeyFile(key))
    }

    /// Creates a new key file with mode 0600. Refuses to overwrite one.
    pub fn create_key_file(path: &Path) -> Result<Secret> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        let mut f =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| Error::io(path, e))?;
        let text = Zeroizing::new(format!("{KEY_FILE_PREFIX}{}\n", hex::encode(key.as_ref())));
        f.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))?;
        f.sync_all().map_err(|e| Error::io(path, e))?;
        Ok(Secret::KeyFile(key))
    }
}

/// Opens a secret file, warning once per path when it is a regular file
/// that group or others may access (mode & 0o077): whoever can read it can
/// unlock the repository. Only a warning: the file may be shared on purpose,
/// and refusing would break `archive_command` at a bad moment.
fn open_private(path: &Path, what: &str) -> Result<File> {
    static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    let mode = meta.permissions().mode();
    let shared = meta.is_file() && mode & 0o077 != 0;
    if shared && WARNED.lock().is_ok_and(|mut w| w.insert(path.to_path_buf())) {
        tracing::warn!(
            "{what} {} gives group or others access (mode {:04o}): whoever can read it can unlock the repository; \
             make it private (chmod 600)",
            path.display(),
            mode & 0o7777
        );
    }
    Ok(file)
}

/// The key derivation a slot uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "algorithm", rename_all = "kebab-case")]
pub enum Kdf {
    /// Argon2id for passwords.
    Argon2id {
        /// Memory in KiB.
        m_cost: u32,
        /// Iterations.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
    },
    /// BLAKE3 `derive_key` for key files, which are already uniformly random.
    Blake3KeyFile,
}

/// One `keys/<id>` object (plaintext JSON; the master key inside is sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    /// Always `KEY_SLOT_VERSION`.
    pub version: u32,
    /// How the wrapping key is derived from the secret.
    pub kdf: Kdf,
    /// KDF salt, hex.
    pub salt: String,
    /// The master key sealed with XChaCha20-Poly1305 (nonce ‖ ct ‖ tag), hex.
    pub sealed: String,
    /// When the slot was added (RFC 3339).
    pub created: String,
    /// Host that added it.
    pub host: String,
    /// Version 2: keyed BLAKE3 of `config`'s stored bytes under a key
    /// derived from the master key, hex ([`crate::crypto::Keys::config_mac`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_mac: Option<String>,
}

/// What the slot that unlocked a repository says about `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigAuth {
    /// Its `config_mac` matches `config`'s bytes.
    Verified,
    /// A version-1 slot, written before `config` was authenticated.
    Unauthenticated,
}

fn slot_aad(version: u32, repo_id: &str) -> Vec<u8> {
    format!("cairn key slot v{version} {repo_id}").into_bytes()
}

fn derive(secret: &Secret, kdf: &Kdf, salt: &[u8]) -> Result<Option<Zeroizing<[u8; 32]>>> {
    let mut out = Zeroizing::new([0u8; 32]);
    match (secret, kdf) {
        (Secret::Password(pw), Kdf::Argon2id { m_cost, t_cost, p_cost }) => {
            let params = argon2::Params::new(*m_cost, *t_cost, *p_cost, Some(32))
                .map_err(|e| Error::Config(format!("bad Argon2id parameters in key slot: {e}")))?;
            // Allocated here, fallibly: argon2's own allocation aborts the
            // process when the memory is not there.
            let mut blocks = Vec::new();
            blocks
                .try_reserve_exact(params.block_count())
                .map_err(|_| Error::Config(format!("not enough memory for Argon2id with m_cost = {m_cost} KiB")))?;
            blocks.resize(params.block_count(), argon2::Block::default());
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into_with_memory(pw, salt, out.as_mut(), &mut blocks)
                .map_err(|e| Error::Config(format!("Argon2id failed: {e}")))?;
        }
        (Secret::KeyFile(k), Kdf::Blake3KeyFile) => {
            let mut material = Zeroizing::new(Vec::with_capacity(32 + salt.len()));
            material.extend_from_slice(k.as_ref());
            material.extend_from_slice(salt);
            *out = blake3::derive_key(CTX_KEY_FILE, &material);
        }
        _ => return Ok(None),
    }
    Ok(Some(out))
}

/// Default Argon2id cost: 64 MiB, 3 passes, 2 lanes (about 0.2 s here).
pub fn default_password_kdf() -> Kdf {
    Kdf::Argon2id { m_cost: 64 * 1024, t_cost: 3, p_cost: 2 }
}

impl crate::repofile::RepoFile for KeySlot {
    const VERSION: u32 = KEY_SLOT_VERSION;
    const OLDEST_VERSION: u32 = 1;
    type Id = str;
    fn key(id: &str) -> crate::repofile::ObjectKey {
        crate::repofile::ObjectKey::KeySlot(id.to_string())
    }
}

impl Kdf {
    /// Checks the parameters against this build's bounds (see the module
    /// docs); the error names the slot and the parameter.
    pub fn validate(&self, object: &str) -> Result<()> {
        let Kdf::Argon2id { m_cost, t_cost, p_cost } = *self else { return Ok(()) };
        let refuse = |what: String| Err(Error::corrupt(object, None, what));
        if !(1..=ARGON2_MAX_P_COST).contains(&p_cost) {
            return refuse(format!("Argon2id p_cost {p_cost} is outside 1..={ARGON2_MAX_P_COST}"));
        }
        if !(1..=ARGON2_MAX_T_COST).contains(&t_cost) {
            return refuse(format!("Argon2id t_cost {t_cost} is outside 1..={ARGON2_MAX_T_COST}"));
        }
        let m_min = 8 * p_cost;
        if !(m_min..=ARGON2_MAX_M_COST_KIB).contains(&m_cost) {
            return refuse(format!("Argon2id m_cost {m_cost} KiB is outside {m_min}..={ARGON2_MAX_M_COST_KIB} KiB"));
        }
        Ok(())
    }
}

impl KeySlot {
    /// Seals `master` for `secret`, with `config_mac` (the authentication
    /// code of the repository's `config`), as a version-2 slot.
    pub fn create(repo_id: &str, master: &MasterKey, secret: &Secret, config_mac: &[u8; 32]) -> Result<KeySlot> {
        Self::create_version(KEY_SLOT_VERSION, repo_id, master, secret, Some(config_mac))
    }

    /// A slot as version 1 wrote it (no `config_mac`), for tests of
    /// repositories made before config authentication.
    #[cfg(test)]
    pub(crate) fn create_version_1(repo_id: &str, master: &MasterKey, secret: &Secret) -> Result<KeySlot> {
        Self::create_version(1, repo_id, master, secret, None)
    }

    fn create_version(
        version: u32,
        repo_id: &str,
        master: &MasterKey,
        secret: &Secret,
        config_mac: Option<&[u8; 32]>,
    ) -> Result<KeySlot> {
        let kdf = match secret {
            Secret::Password(_) => default_password_kdf(),
            Secret::KeyFile(_) => Kdf::Blake3KeyFile,
        };
        Self::create_with(version, repo_id, master, secret, kdf, config_mac)
    }

    /// Seals `master` for `secret` with `kdf`, which must suit the secret
    /// (the fuzz targets' seeds use cheap Argon2id parameters).
    pub(crate) fn create_with(
        version: u32,
        repo_id: &str,
        master: &MasterKey,
        secret: &Secret,
        kdf: Kdf,
        config_mac: Option<&[u8; 32]>,
    ) -> Result<KeySlot> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let wrap = derive(secret, &kdf, &salt)?
            .ok_or_else(|| Error::Internal("the key derivation does not suit the secret".into()))?;
        Ok(KeySlot {
            version,
            kdf,
            salt: hex::encode(salt),
            sealed: hex::encode(seal_with(&wrap, &slot_aad(version, repo_id), &master.0)),
            created: chrono::Utc::now().to_rfc3339(),
            host: crate::hostname(),
            config_mac: config_mac.map(hex::encode),
        })
    }

    /// Checks everything an unlock would trust before running a KDF: the
    /// KDF's cost, and the salt's length. Read the slot with
    /// [`crate::repofile::RepoFile::decode`] first, which refuses other
    /// versions.
    pub fn validate(&self, object: &str) -> Result<()> {
        self.kdf.validate(object)?;
        let salt_len = self.salt.len() / 2;
        if !(argon2::MIN_SALT_LEN..=64).contains(&salt_len) {
            return Err(Error::corrupt(object, None, format!("key slot salt of {salt_len} bytes")));
        }
        Ok(())
    }

    /// Tries to open the slot. `Ok(None)`: this secret does not open it.
    /// Call [`KeySlot::validate`] first.
    pub fn open(&self, object: &str, repo_id: &str, secret: &Secret) -> Result<Option<MasterKey>> {
        let bad = |what: &str| Error::corrupt(object, None, format!("key slot {what} is not hex"));
        let salt = hex::decode(&self.salt).map_err(|_| bad("salt"))?;
        let sealed = hex::decode(&self.sealed).map_err(|_| bad("sealed key"))?;
        let Some(wrap) = derive(secret, &self.kdf, &salt)? else {
            return Ok(None);
        };
        let Some(plain) = open_with(&wrap, &slot_aad(self.version, repo_id), &sealed) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::corrupt(object, None, "sealed master key is not 32 bytes"))?;
        Ok(Some(MasterKey(key)))
    }

    /// Checks `config` against this slot once it has opened: `mac` is the
    /// authentication code of the `config` bytes read. A version-2 slot
    /// must carry the same code; a version-1 slot carries none.
    pub(crate) fn check_config(&self, object: &str, mac: &[u8; 32]) -> Result<ConfigAuth> {
        if self.version < 2 {
            return Ok(ConfigAuth::Unauthenticated);
        }
        let config = crate::repofile::ObjectKey::Config.to_string();
        let Some(stored) = &self.config_mac else {
            let detail = format!("not authenticated: key slot {object} lacks the config_mac it must carry");
            return Err(Error::corrupt(config, None, detail));
        };
        match blake3::Hash::from_hex(stored) {
            // `blake3::Hash` compares in constant time.
            Ok(h) if h == blake3::Hash::from(*mac) => Ok(ConfigAuth::Verified),
            _ => Err(Error::corrupt(
                config,
                None,
                format!("authentication failed against key slot {object} (modified by someone without the key)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_bounds_are_inclusive_and_a_refusal_names_slot_and_parameter() {
        let check = |m_cost, t_cost, p_cost| Kdf::Argon2id { m_cost, t_cost, p_cost }.validate("keys/x");
        default_password_kdf().validate("keys/x").unwrap();
        check(ARGON2_MAX_M_COST_KIB, ARGON2_MAX_T_COST, ARGON2_MAX_P_COST).unwrap();
        check(8, 1, 1).unwrap();
        let refused = [
            (ARGON2_MAX_M_COST_KIB + 1, 3, 2, "m_cost"),
            (u32::MAX, 3, 2, "m_cost"),
            (15, 1, 2, "m_cost"),
            (65536, 0, 2, "t_cost"),
            (65536, ARGON2_MAX_T_COST + 1, 2, "t_cost"),
            (65536, 3, 0, "p_cost"),
            (65536, 3, ARGON2_MAX_P_COST + 1, "p_cost"),
        ];
        for (m, t, p, name) in refused {
            let e = check(m, t, p).unwrap_err().to_string();
            assert!(e.contains("keys/x") && e.contains(name), "({m}, {t}, {p}): {e}");
        }
    }
}
