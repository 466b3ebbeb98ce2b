//! Damage markers (`damaged/<pack id>`): the repository's own record that a pack failed
//! verification, so every writer and reader of the repository knows it without the controller
//! that found it.
//!
//! ```text
//! "IBSDMG" u16 version=1 ‖ cleartext JSON {pack, detected, reason}
//! ```
//! The object's *name* is authoritative: a reader that only needs the set of damaged packs lists
//! `damaged/` and parses names; the body is for operators (when, and why). The marker holds no
//! secret and needs no key, like the pack hash it records a mismatch of.
//!
//! Invariants: a marker names a pack that was indexed or stored when it was written; it is removed
//! when the pack verifies again, or by `prune` together with the pack once no backup needs the
//! pack any more (every still-referenced chunk of it has a healthy copy elsewhere).

use crate::error::{RepoError, Result};
use crate::ids::PackId;
use serde::{Deserialize, Serialize};

pub const DAMAGED_MAGIC: &[u8; 6] = b"IBSDMG";
pub const DAMAGED_VERSION: u16 = 1;
/// Upper bound of a marker body (a hostile object cannot make a reader allocate more).
const MAX_BODY: usize = 64 << 10;

/// Why a pack counts as damaged.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DamageReason {
    /// The stored bytes do not hash to the pack's name (bit rot, truncation, overwrite).
    HashMismatch,
    /// The pack is in the index but not on storage.
    Missing,
    /// Storage refused to return the pack's bytes as a permanent error.
    Unreadable,
}

impl DamageReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DamageReason::HashMismatch => "hash-mismatch",
            DamageReason::Missing => "missing",
            DamageReason::Unreadable => "unreadable",
        }
    }
}

/// One damage marker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DamageMarker {
    /// Hex id of the pack.
    pub pack: String,
    /// RFC 3339 time of detection.
    pub detected: String,
    pub reason: DamageReason,
    /// Human-readable detail (the verification error); never contains a secret.
    #[serde(default)]
    pub detail: String,
}

impl DamageMarker {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = DAMAGED_MAGIC.to_vec();
        out.extend_from_slice(&DAMAGED_VERSION.to_le_bytes());
        out.extend_from_slice(&serde_json::to_vec(self).expect("marker serializes"));
        out
    }

    /// Parses a marker and checks that it names `pack` (the object's name).
    pub fn from_bytes(pack: &PackId, b: &[u8]) -> Result<Self> {
        let what = format!("damaged/{pack}");
        if b.len() < 8 || &b[..6] != DAMAGED_MAGIC {
            return Err(RepoError::corrupt(what, "missing damage-marker magic"));
        }
        let version = u16::from_le_bytes([b[6], b[7]]);
        if version != DAMAGED_VERSION {
            return Err(RepoError::UnsupportedVersion {
                object: what,
                found: version as u32,
                supported: DAMAGED_VERSION as u32,
            });
        }
        if b.len() - 8 > MAX_BODY {
            return Err(RepoError::corrupt(what, "marker body too large"));
        }
        let m: DamageMarker = serde_json::from_slice(&b[8..])
            .map_err(|e| RepoError::corrupt(&what, format!("marker: {e}")))?;
        if m.pack != pack.to_hex() {
            return Err(RepoError::corrupt(what, "marker names another pack"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip_and_refusals() {
        let p = PackId([7; 32]);
        let m = DamageMarker {
            pack: p.to_hex(),
            detected: "2027-01-15T08:00:00Z".into(),
            reason: DamageReason::HashMismatch,
            detail: "content hash does not match".into(),
        };
        let b = m.to_bytes();
        assert_eq!(DamageMarker::from_bytes(&p, &b).unwrap(), m);
        assert!(DamageMarker::from_bytes(&PackId([8; 32]), &b).is_err());
        let mut v2 = b.clone();
        v2[6] = 2;
        assert!(matches!(
            DamageMarker::from_bytes(&p, &v2),
            Err(RepoError::UnsupportedVersion { .. })
        ));
        assert!(DamageMarker::from_bytes(&p, b"IBSDM").is_err());
    }
}
