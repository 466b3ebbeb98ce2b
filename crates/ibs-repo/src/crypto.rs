//! Symmetric primitives of format v1: AES-256-GCM sealing with a random 96-bit nonce (ring), keyed
//! BLAKE3 chunk ids, and HKDF-SHA256 derivation for the legacy-key mode. See ADR 0002 for the choices.
//!
//! Sealed blob layout (every sealed byte in the repository uses it):
//! `alg (u8 = 1: AES-256-GCM) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
//! The associated data is never stored; each caller binds the blob to its context (object kind,
//! chunk id, backup id), so a blob moved to another place fails to open.

use crate::ids::{ChunkId, KeyId};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

/// Algorithm id of the only AEAD in format v1.
pub const ALG_AES256GCM: u8 = 1;
/// Bytes a sealed blob adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// A 256-bit symmetric key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct SymKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SymKey(..)")
    }
}

impl SymKey {
    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, k.as_mut());
        SymKey(k)
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = b.try_into().ok()?;
        Some(SymKey(Zeroizing::new(arr)))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn aead(&self) -> LessSafeKey {
        // Cannot fail: the key length is fixed at 32 bytes.
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, self.0.as_ref()).expect("32-byte AES-256 key"),
        )
    }

    /// Seals `plaintext` bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Like [`SymKey::seal`], into a caller's buffer (cleared first), so hot loops can reuse memory.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        out.clear();
        out.reserve(SEAL_OVERHEAD + plaintext.len());
        out.push(ALG_AES256GCM);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .aead()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[1 + NONCE_LEN..],
            )
            .expect("AES-GCM sealing of an in-memory buffer");
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens a sealed blob. Any tampering, a wrong key or a wrong `aad` gives `None`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_into(aad, sealed, &mut buf).then_some(buf)
    }

    /// Like [`SymKey::open`], into a caller's buffer (replaced), so hot loops can reuse memory.
    /// Returns false (and leaves `buf` unspecified) where `open` gives `None`.
    pub fn open_into(&self, aad: &[u8], sealed: &[u8], buf: &mut Vec<u8>) -> bool {
        buf.clear();
        if sealed.len() < SEAL_OVERHEAD || sealed[0] != ALG_AES256GCM {
            return false;
        }
        let Ok(nonce) = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]) else {
            return false;
        };
        buf.extend_from_slice(&sealed[1 + NONCE_LEN..]);
        match self.aead().open_in_place(nonce, Aad::from(aad), buf) {
            Ok(plain) => {
                let len = plain.len();
                buf.truncate(len);
                true
            }
            Err(_) => false,
        }
    }

    /// Keyed BLAKE3 of `data` under this key (used with the dedup key for chunk ids).
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.0, data).as_bytes())
    }

    /// A short public fingerprint that proves possession of the key without revealing it.
    pub fn check_value(&self, label: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"ibs key check v1\0");
        h.update(label.as_bytes());
        hex::encode(&h.finalize().as_bytes()[..16])
    }
}

/// Derives a 256-bit key from the legacy master key (HKDF-SHA256, fixed salt, `info` as context).
pub fn derive_legacy(master: &[u8], info: &[u8]) -> SymKey {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"ibs legacy key v1"), master);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(info, okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SymKey(okm)
}

/// The legacy-mode data key of a backup: derived, never stored.
pub fn derive_legacy_data_key(master: &[u8], key_id: &KeyId) -> SymKey {
    let mut info = b"data/".to_vec();
    info.extend_from_slice(&key_id.0);
    derive_legacy(master, &info)
}

/// Associated data of a chunk blob: binds it to its id and its encoding.
pub fn chunk_aad(id: &ChunkId, encoding: u8) -> [u8; 45] {
    let mut aad = [0u8; 45];
    aad[..12].copy_from_slice(b"ibs.chunk.v1");
    aad[12..44].copy_from_slice(&id.0);
    aad[44] = encoding;
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper_detection() {
        let k = SymKey::random();
        let sealed = k.seal(b"ctx", b"hello world");
        assert_eq!(sealed.len(), 11 + SEAL_OVERHEAD);
        assert_eq!(k.open(b"ctx", &sealed).unwrap(), b"hello world");
        assert!(k.open(b"other", &sealed).is_none(), "wrong aad");
        assert!(
            SymKey::random().open(b"ctx", &sealed).is_none(),
            "wrong key"
        );
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(k.open(b"ctx", &t).is_none(), "flip at {i}");
        }
        assert!(
            k.open(b"ctx", &sealed[..sealed.len() - 1]).is_none(),
            "truncated"
        );
    }

    #[test]
    fn legacy_derivation_is_deterministic_and_separated() {
        let m = [7u8; 64];
        assert_eq!(
            derive_legacy(&m, b"a").bytes(),
            derive_legacy(&m, b"a").bytes()
        );
        assert_ne!(
            derive_legacy(&m, b"a").bytes(),
            derive_legacy(&m, b"b").bytes()
        );
        let id = KeyId([1; 16]);
        assert_ne!(
            derive_legacy_data_key(&m, &id).bytes(),
            derive_legacy(&m, b"a").bytes()
        );
    }
}
