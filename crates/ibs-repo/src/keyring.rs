//! Key material and its envelopes.
//!
//! - The *repository keys* (dedup key, metadata key) are made at `init`. The writer keeps them in its
//!   state; the repository keeps them only inside `keys/repo-<thumbprint>.p7m`, one CMS envelope per
//!   certificate. Payload: `"IBSRK" u8 version=1 ‖ repo id (16) ‖ dedup key (32) ‖ metadata key (32)`.
//! - Each backup's *data key* is random, lives in memory while the backup runs and is persisted only
//!   in `keys/data/<key id>.p7m`. Payload: `"IBSDK" u8 version=1 ‖ key id (16) ‖ key (32)`.
//!   Binding the ids into the payloads means a swapped envelope is detected, not silently used.
//! - In legacy-key mode no envelopes exist: every key is derived from the operator's key file (HKDF).

use crate::crypto::{derive_legacy, derive_legacy_data_key, SymKey};
use crate::error::{RepoError, Result};
use crate::ids::{KeyId, RepoId};
use ibs_keys::{Certificate, LegacyKey, PrivateIdentity};
use zeroize::Zeroizing;

const REPO_MAGIC: &[u8; 5] = b"IBSRK";
const DATA_MAGIC: &[u8; 5] = b"IBSDK";
const PAYLOAD_VERSION: u8 = 1;

/// The repository-wide keys a writer holds.
#[derive(Clone, Debug)]
pub struct RepoKeys {
    pub dedup: SymKey,
    pub metadata: SymKey,
}

impl RepoKeys {
    pub fn random() -> Self {
        RepoKeys {
            dedup: SymKey::random(),
            metadata: SymKey::random(),
        }
    }

    pub fn from_legacy(key: &LegacyKey) -> Self {
        RepoKeys {
            dedup: derive_legacy(key.material(), b"dedup"),
            metadata: derive_legacy(key.material(), b"metadata"),
        }
    }

    pub fn encode_payload(&self, repo: &RepoId) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(86));
        v.extend_from_slice(REPO_MAGIC);
        v.push(PAYLOAD_VERSION);
        v.extend_from_slice(&repo.0);
        v.extend_from_slice(self.dedup.bytes());
        v.extend_from_slice(self.metadata.bytes());
        v
    }

    pub fn decode_payload(b: &[u8], repo: &RepoId, object: &str) -> Result<Self> {
        if b.len() != 86 || &b[..5] != REPO_MAGIC || b[5] != PAYLOAD_VERSION {
            return Err(RepoError::corrupt(
                object,
                "envelope payload is not an ibs repository key",
            ));
        }
        if b[6..22] != repo.0 {
            return Err(RepoError::corrupt(
                object,
                "envelope belongs to another repository",
            ));
        }
        Ok(RepoKeys {
            dedup: SymKey::from_bytes(&b[22..54]).expect("32 bytes"),
            metadata: SymKey::from_bytes(&b[54..86]).expect("32 bytes"),
        })
    }
}

pub fn encode_data_key(id: &KeyId, key: &SymKey) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(54));
    v.extend_from_slice(DATA_MAGIC);
    v.push(PAYLOAD_VERSION);
    v.extend_from_slice(&id.0);
    v.extend_from_slice(key.bytes());
    v
}

pub fn decode_data_key(b: &[u8], id: &KeyId, object: &str) -> Result<SymKey> {
    if b.len() != 54 || &b[..5] != DATA_MAGIC || b[5] != PAYLOAD_VERSION {
        return Err(RepoError::corrupt(
            object,
            "envelope payload is not an ibs data key",
        ));
    }
    if b[6..22] != id.0 {
        return Err(RepoError::corrupt(
            object,
            "envelope holds another backup's data key",
        ));
    }
    Ok(SymKey::from_bytes(&b[22..54]).expect("32 bytes"))
}

/// How an envelope names `cert` among its recipients (as [`ibs_keys::envelope_recipients`] lists
/// them): `issuer=<issuer>, serial=<hex>`.
pub fn recipient_id(cert: &Certificate) -> String {
    format!("issuer={}, serial={}", cert.issuer(), cert.serial_hex())
}

/// What a reader brings to decrypt contents: one or more .pfx identities, or the legacy key file.
pub enum Unlock {
    Identities(Vec<PrivateIdentity>),
    Legacy(LegacyKey),
}

impl Unlock {
    /// Thumbprints of the identities offered (empty for a legacy key).
    pub fn thumbprints(&self) -> Vec<String> {
        match self {
            Unlock::Identities(ids) => ids
                .iter()
                .map(|i| i.certificate().thumbprint().to_owned())
                .collect(),
            Unlock::Legacy(_) => Vec::new(),
        }
    }

    pub fn legacy_data_key(&self, id: &KeyId) -> Option<SymKey> {
        match self {
            Unlock::Legacy(k) => Some(derive_legacy_data_key(k.material(), id)),
            Unlock::Identities(_) => None,
        }
    }
}
