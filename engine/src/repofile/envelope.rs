//! The sealed envelope every encrypted repository file shares: one version
//! byte, then XChaCha20-Poly1305 (nonce, ciphertext, tag) with associated
//! data that binds the bytes to what they are, so a file passed off as
//! another fails authentication instead of being believed.
//!
//! The associated data is chosen by kind for content-addressed files (an
//! index segment can never be read as a snapshot) and by key for files
//! whose name carries meaning (a WAL manifest copied to another file name
//! fails).

use crate::crypto::Keys;
use crate::{Error, Result};

/// The envelope's version byte.
pub const SEALED_VERSION: u8 = 1;

/// What a sealed file is bound to.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    /// A kind's fixed associated data (index segments, snapshots).
    Kind(&'static [u8]),
    /// The object's own key, after a fixed prefix (WAL records).
    Key(&'static [u8], &'a str),
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        match self {
            Binding::Kind(a) => a.to_vec(),
            Binding::Key(prefix, key) => [*prefix, key.as_bytes()].concat(),
        }
    }
}

/// Seals `plain` into a new envelope.
pub fn seal(keys: &Keys, binding: Binding<'_>, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + 64);
    out.push(SEALED_VERSION);
    keys.seal_into(&binding.aad(), plain, &mut out);
    out
}

/// Opens the envelope stored at `object`: checks the version byte and
/// authenticates against `binding`.
pub fn open(keys: &Keys, object: &str, binding: Binding<'_>, bytes: &[u8]) -> Result<Vec<u8>> {
    match bytes.first() {
        Some(&SEALED_VERSION) => {}
        Some(&v) => {
            return Err(Error::UnsupportedVersion {
                object: object.into(),
                got: v.into(),
                known: SEALED_VERSION.into(),
            })
        }
        None => return Err(Error::corrupt(object, Some(0), "empty object")),
    }
    keys.open(&binding.aad(), &bytes[1..]).ok_or_else(|| {
        let how = match binding {
            Binding::Kind(_) => "tampered, or sealed with another key",
            Binding::Key(..) => "tampered, moved from another name, or sealed with another key",
        };
        Error::corrupt(object, None, format!("authentication failed ({how})"))
    })
}
