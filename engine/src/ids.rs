//! Fixed-size identifiers and their hex forms.

use std::fmt;

/// A 32-byte identifier: a keyed BLAKE3 for blobs, a plain BLAKE3 of the
/// stored bytes for packs, index segments and snapshots.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Plain BLAKE3 of stored bytes: the name of packs, segments, snapshots.
    pub fn of_bytes(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, as shown to people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Id(out))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Declares an id type for one kind of object: distinct types so a pack id
/// can never be looked up as a blob, nor a tree passed where a snapshot is
/// meant. Each wraps an [`Id`] and has its hex forms.
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Id);

        impl $name {
            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }

            /// The first 8 hex characters, as shown to people.
            pub fn short(&self) -> String {
                self.0.short()
            }

            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Option<$name> {
                Id::from_hex(s).map($name)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        hex_serde!($name);
    };
}

/// Serializes an id as its 64 hex digits.
macro_rules! hex_serde {
    ($name:ident) => {
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::from_hex(&s)
                    .ok_or_else(|| serde::de::Error::custom(format!("malformed {} {s:?}", stringify!($name))))
            }
        }
    };
}

hex_serde!(Id);

typed_id!(
    /// A blob: the keyed BLAKE3 of its plaintext (data chunks and tree blobs
    /// alike; [`TreeId`] names the ones that are trees).
    BlobId
);
typed_id!(
    /// A pack: the BLAKE3 of its stored bytes.
    PackId
);
typed_id!(
    /// A tree blob, stored as a 64-hex-digit string in snapshot manifests.
    TreeId
);
typed_id!(
    /// A snapshot manifest: the BLAKE3 of its sealed bytes.
    SnapshotId
);

impl TreeId {
    /// The tree as the blob that holds it (trees are found like any blob).
    pub fn blob(self) -> BlobId {
        BlobId(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_ids_are_hex_strings_in_manifests() {
        let t = TreeId(Id([0x5a; 32]));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{}\"", "5a".repeat(32)), "the manifest format is unchanged");
        assert_eq!(serde_json::from_str::<TreeId>(&json).unwrap(), t);
        let bad = serde_json::from_str::<TreeId>("\"5a5a\"").unwrap_err();
        assert!(bad.to_string().contains("malformed TreeId"), "{bad}");
        assert_eq!(t.blob(), BlobId(Id([0x5a; 32])));
        assert_eq!(format!("{t:?}"), "TreeId(5a5a5a5a)");
    }
}
