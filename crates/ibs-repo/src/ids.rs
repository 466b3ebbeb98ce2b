//! Identifier types. Each is a fixed-size byte array with a canonical lower-case hex form, used both in
//! binary structures and in object names.

use crate::error::{RepoError, Result};
use std::fmt;

macro_rules! fixed_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).map_err(|_| RepoError::corrupt(
                    stringify!($name),
                    format!("{s:?} is not a {}-character hex id", $len * 2),
                ))?;
                Ok($name(out))
            }

            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(b).ok().map($name)
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn random() -> Self {
                let mut out = [0u8; $len];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut out);
                $name(out)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12.min($len * 2)])
            }
        }
    };
}

fixed_id!(
    /// A chunk's id: BLAKE3 keyed with the repository's dedup key, over the chunk's plaintext.
    ChunkId, 32
);
fixed_id!(
    /// A pack's id: unkeyed BLAKE3 of the pack's stored bytes, so anyone can verify a pack.
    PackId, 32
);
fixed_id!(
    /// A data key's id: 16 random bytes chosen when the key is made.
    KeyId, 16
);
fixed_id!(
    /// A repository's id: 16 random bytes chosen at `init`.
    RepoId, 16
);
fixed_id!(
    /// A reference segment's id (`refs/<id>`): BLAKE3 keyed with a key derived from the metadata
    /// key, over the segment's plaintext body, so equal lists have equal names and a name says
    /// nothing to anyone without the key.
    SegmentId, 32
);
