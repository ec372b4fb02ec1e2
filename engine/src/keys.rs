//! Key slots: the master key sealed under a password or a key file.
//!
//! A password goes through Argon2id, which is slow on purpose. A key file
//! already holds 32 random bytes, so a cheap BLAKE3 derivation is enough and
//! `archive_command`-style callers pay no KDF cost on every call.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{open_with, seal_with, MasterKey};
use crate::{Error, Result};

const KEY_FILE_PREFIX: &str = "cairn-key-v1:";
const CTX_KEY_FILE: &str = "cairn 2026-11 v1 key file slot";
/// Version of the key slot JSON.
pub const KEY_SLOT_VERSION: u32 = 1;

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
    pub fn from_password_file(path: &Path) -> Result<Secret> {
        let mut bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::io(path, e))?);
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

    /// Reads a key file written by [`Secret::create_key_file`].
    pub fn from_key_file(path: &Path) -> Result<Secret> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
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
    /// Always [`KEY_SLOT_VERSION`].
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
}

fn slot_aad(repo_id: &str) -> Vec<u8> {
    format!("cairn key slot v1 {repo_id}").into_bytes()
}

fn derive(secret: &Secret, kdf: &Kdf, salt: &[u8]) -> Result<Option<Zeroizing<[u8; 32]>>> {
    let mut out = Zeroizing::new([0u8; 32]);
    match (secret, kdf) {
        (Secret::Password(pw), Kdf::Argon2id { m_cost, t_cost, p_cost }) => {
            let params = argon2::Params::new(*m_cost, *t_cost, *p_cost, Some(32))
                .map_err(|e| Error::Config(format!("bad Argon2id parameters in key slot: {e}")))?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(pw, salt, out.as_mut())
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
    type Id = str;
    fn key(id: &str) -> crate::repofile::ObjectKey {
        crate::repofile::ObjectKey::KeySlot(id.to_string())
    }
}

impl KeySlot {
    /// Seals `master` for `secret`.
    pub fn create(repo_id: &str, master: &MasterKey, secret: &Secret) -> Result<KeySlot> {
        let kdf = match secret {
            Secret::Password(_) => default_password_kdf(),
            Secret::KeyFile(_) => Kdf::Blake3KeyFile,
        };
        Self::create_with(repo_id, master, secret, kdf)
    }

    /// Seals `master` for `secret` with `kdf`, which must suit the secret
    /// (the fuzz targets' seeds use cheap Argon2id parameters).
    pub(crate) fn create_with(repo_id: &str, master: &MasterKey, secret: &Secret, kdf: Kdf) -> Result<KeySlot> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let wrap = derive(secret, &kdf, &salt)?
            .ok_or_else(|| Error::Internal("the key derivation does not suit the secret".into()))?;
        Ok(KeySlot {
            version: KEY_SLOT_VERSION,
            kdf,
            salt: hex::encode(salt),
            sealed: hex::encode(seal_with(&wrap, &slot_aad(repo_id), &master.0)),
            created: chrono::Utc::now().to_rfc3339(),
            host: crate::hostname(),
        })
    }

    /// Tries to open the slot. `Ok(None)`: this secret does not open it.
    /// Read it with [`crate::repofile::RepoFile::decode`], which refuses
    /// other versions.
    pub fn open(&self, object: &str, repo_id: &str, secret: &Secret) -> Result<Option<MasterKey>> {
        let bad = |what: &str| Error::corrupt(object, None, format!("key slot {what} is not hex"));
        let salt = hex::decode(&self.salt).map_err(|_| bad("salt"))?;
        let sealed = hex::decode(&self.sealed).map_err(|_| bad("sealed key"))?;
        let Some(wrap) = derive(secret, &self.kdf, &salt)? else {
            return Ok(None);
        };
        let Some(plain) = open_with(&wrap, &slot_aad(repo_id), &sealed) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::corrupt(object, None, "sealed master key is not 32 bytes"))?;
        Ok(Some(MasterKey(key)))
    }
}
