//! SMB2/3 message protection: key derivation (MS-SMB2 3.1.4.2, SP800-108 counter-mode KDF with
//! HMAC-SHA256), signing (HMAC-SHA256 for 2.1, AES-128-CMAC for 3.x), the 3.1.1 pre-authentication
//! integrity hash (SHA-512), and encryption with the TRANSFORM_HEADER (AES-128-GCM or AES-128-CCM).
//! Invariant: keys live in `Keys`, which zeroizes them on drop and never prints them.
//!
//! AES-128-GCM encryption and decryption use `ring` (VAES/VPCLMULQDQ code where the CPU has it,
//! about 5x RustCrypto's `aes-gcm` on the bench machine, ADR 0045); AES-GMAC signing stays on
//! `aes-gcm` (ring hashes additional data one block at a time, which is slower for a MAC over a
//! whole message); CCM and CMAC are RustCrypto.

use crate::error::{SmbError, SmbResult};
use crate::wire::{rd_u32, rd_u64, PROTO_TRANSFORM};
use aes::Aes128;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes128Gcm;
use ccm::consts::{U11, U16};
use ccm::Ccm;
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM};
use sha2_011::{Digest, Sha256, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;
type Aes128Ccm = Ccm<Aes128, U16, U11>;

pub const TRANSFORM_LEN: usize = 52;

/// Dialects this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dialect {
    Smb210 = 0x0210,
    Smb300 = 0x0300,
    Smb302 = 0x0302,
    Smb311 = 0x0311,
}

impl Dialect {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0x0210 => Dialect::Smb210,
            0x0300 => Dialect::Smb300,
            0x0302 => Dialect::Smb302,
            0x0311 => Dialect::Smb311,
            _ => return None,
        })
    }
    pub fn is_smb3(self) -> bool {
        self >= Dialect::Smb300
    }
}

/// The negotiated cipher for encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    Aes128Ccm = 1,
    Aes128Gcm = 2,
}

/// The signing algorithm (3.1.1 may negotiate AES-GMAC; other SMB 3 dialects use AES-CMAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlg {
    HmacSha256 = 0,
    AesCmac = 1,
    AesGmac = 2,
}

/// SP800-108 counter-mode KDF, one 128-bit block, as MS-SMB2 3.1.4.2 specifies.
pub fn kdf(key: &[u8], label: &[u8], context: &[u8]) -> [u8; 16] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&1u32.to_be_bytes());
    mac.update(label);
    mac.update(&[0]);
    mac.update(context);
    mac.update(&128u32.to_be_bytes());
    let out = mac.finalize().into_bytes();
    let mut k = [0u8; 16];
    k.copy_from_slice(&out[..16]);
    k
}

/// SHA-512 chaining for the 3.1.1 pre-authentication integrity hash.
pub fn preauth_update(hash: &mut [u8; 64], message: &[u8]) {
    let mut h = Sha512::new();
    h.update(&hash[..]);
    h.update(message);
    hash.copy_from_slice(&h.finalize());
}

/// The per-session keys.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Keys {
    #[zeroize(skip)]
    dialect: Dialect,
    #[zeroize(skip)]
    cipher: Option<Cipher>,
    #[zeroize(skip)]
    signing_alg: SigningAlg,
    signing: [u8; 16],
    encryption: [u8; 16],
    decryption: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("dialect", &self.dialect)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Derives the keys from the NTLM session key; `preauth` is the 3.1.1 session hash.
    /// `gmac` selects AES-GMAC signing (only when 3.1.1 negotiated it).
    pub fn derive(
        dialect: Dialect,
        cipher: Option<Cipher>,
        gmac: bool,
        session_key: &[u8; 16],
        preauth: &[u8; 64],
    ) -> Self {
        let signing_alg = match dialect {
            Dialect::Smb210 => SigningAlg::HmacSha256,
            Dialect::Smb311 if gmac => SigningAlg::AesGmac,
            _ => SigningAlg::AesCmac,
        };
        let (signing, encryption, decryption) = match dialect {
            Dialect::Smb210 => (*session_key, [0; 16], [0; 16]),
            Dialect::Smb300 | Dialect::Smb302 => (
                kdf(session_key, b"SMB2AESCMAC\0", b"SmbSign\0"),
                kdf(session_key, b"SMB2AESCCM\0", b"ServerIn \0"),
                kdf(session_key, b"SMB2AESCCM\0", b"ServerOut\0"),
            ),
            Dialect::Smb311 => (
                kdf(session_key, b"SMBSigningKey\0", preauth),
                kdf(session_key, b"SMBC2SCipherKey\0", preauth),
                kdf(session_key, b"SMBS2CCipherKey\0", preauth),
            ),
        };
        Keys {
            dialect,
            cipher,
            signing_alg,
            signing,
            encryption,
            decryption,
        }
    }

    pub fn signing_alg(&self) -> SigningAlg {
        self.signing_alg
    }

    pub fn can_encrypt(&self) -> bool {
        self.cipher.is_some()
    }

    /// The MAC of `msg` with its signature field (bytes 48..64) counted as zero; `msg` is restored.
    fn mac(&self, msg: &mut [u8]) -> [u8; 16] {
        let mut saved = [0u8; 16];
        saved.copy_from_slice(&msg[48..64]);
        msg[48..64].fill(0);
        let mut out = [0u8; 16];
        match self.signing_alg {
            SigningAlg::AesCmac => {
                let mut m = <cmac::Cmac<Aes128> as KeyInit>::new_from_slice(&self.signing)
                    .expect("16-byte key");
                m.update(msg);
                out.copy_from_slice(&m.finalize().into_bytes());
            }
            SigningAlg::HmacSha256 => {
                let mut m =
                    <HmacSha256 as KeyInit>::new_from_slice(&self.signing).expect("any key");
                m.update(msg);
                out.copy_from_slice(&m.finalize().into_bytes()[..16]);
            }
            SigningAlg::AesGmac => {
                // MS-SMB2 3.1.4.1: nonce = MessageId || u32 (bit 0: server-to-client, bit 1: cancel).
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&msg[24..32]);
                let flags = u32::from_le_bytes([msg[16], msg[17], msg[18], msg[19]]);
                let command = u16::from_le_bytes([msg[12], msg[13]]);
                let role = (flags & 1) | if command == 0x0C { 2 } else { 0 };
                nonce[8..].copy_from_slice(&role.to_le_bytes());
                let c = Aes128Gcm::new_from_slice(&self.signing).expect("16-byte key");
                let n = aes_gcm::Nonce::try_from(&nonce[..]).expect("12 bytes");
                let tag = c
                    .encrypt_inout_detached(&n, msg, (&mut [][..]).into())
                    .expect("GMAC of any length");
                out.copy_from_slice(&tag);
            }
        }
        msg[48..64].copy_from_slice(&saved);
        out
    }

    /// Writes the signature into a complete message whose SIGNED flag is already set.
    pub fn sign(&self, msg: &mut [u8]) {
        let sig = self.mac(msg);
        msg[48..64].copy_from_slice(&sig);
    }

    /// Checks the signature of a received message (the buffer is left unchanged).
    pub fn verify(&self, msg: &mut [u8]) -> bool {
        msg.len() >= 64 && {
            let mac = self.mac(msg);
            mac == msg[48..64]
        }
    }

    /// Wraps a complete SMB2 message into a TRANSFORM_HEADER message (the frame body).
    pub fn encrypt(&self, session_id: u64, msg: &[u8]) -> SmbResult<Vec<u8>> {
        let mut out = vec![0u8; TRANSFORM_LEN + msg.len()];
        out[TRANSFORM_LEN..].copy_from_slice(msg);
        self.encrypt_in_place(session_id, &mut out)?;
        Ok(out)
    }

    /// Encrypts in place: `buf` is [`TRANSFORM_LEN`] bytes of room followed by the plaintext SMB2
    /// message; the room is filled with the TRANSFORM_HEADER and the message is replaced by its
    /// ciphertext, so the frame body is built without a copy.
    pub fn encrypt_in_place(&self, session_id: u64, buf: &mut [u8]) -> SmbResult<()> {
        let cipher = self
            .cipher
            .ok_or_else(|| SmbError::Protocol("no cipher negotiated".into()))?;
        let msg_len = buf
            .len()
            .checked_sub(TRANSFORM_LEN)
            .ok_or_else(|| SmbError::Protocol("no room for the transform header".into()))?;
        let mut nonce = [0u8; 16];
        let nlen = if cipher == Cipher::Aes128Gcm { 12 } else { 11 };
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce[..nlen]);
        let (hdr, body) = buf.split_at_mut(TRANSFORM_LEN);
        hdr[..4].copy_from_slice(&PROTO_TRANSFORM);
        hdr[4..20].fill(0); // signature (tag), filled below
        hdr[20..36].copy_from_slice(&nonce);
        hdr[36..40].copy_from_slice(&(msg_len as u32).to_le_bytes());
        hdr[40..42].copy_from_slice(&0u16.to_le_bytes());
        hdr[42..44].copy_from_slice(&1u16.to_le_bytes());
        hdr[44..52].copy_from_slice(&session_id.to_le_bytes());
        let aad = &hdr[20..52];
        let tag: [u8; 16] = match cipher {
            Cipher::Aes128Gcm => {
                let mut n = [0u8; 12];
                n.copy_from_slice(&nonce[..12]);
                let tag = gcm_key(&self.encryption)
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(aad),
                        body,
                    )
                    .map_err(|_| SmbError::Protocol("encryption failed".into()))?;
                let mut t = [0u8; 16];
                t.copy_from_slice(tag.as_ref());
                t
            }
            Cipher::Aes128Ccm => {
                let c = Aes128Ccm::new_from_slice(&self.encryption).expect("16-byte key");
                let n = ccm::Nonce::<U11>::try_from(&nonce[..11]).expect("11 bytes");
                c.encrypt_inout_detached(&n, aad, body.into())
                    .map_err(|_| SmbError::Protocol("encryption failed".into()))?
                    .into()
            }
        };
        hdr[4..20].copy_from_slice(&tag);
        Ok(())
    }

    /// Unwraps a TRANSFORM_HEADER message; fails on a bad tag or a foreign session.
    pub fn decrypt(
        &self,
        session_id: u64,
        mut frame: bytes::BytesMut,
    ) -> SmbResult<bytes::BytesMut> {
        let cipher = self
            .cipher
            .ok_or_else(|| SmbError::Protocol("encrypted message without a cipher".into()))?;
        if frame.len() < TRANSFORM_LEN {
            return Err(SmbError::Protocol("short transform header".into()));
        }
        let size = rd_u32(&frame, 36)? as usize;
        if rd_u64(&frame, 44)? != session_id || size != frame.len() - TRANSFORM_LEN {
            return Err(SmbError::Protocol(
                "transform header does not match the session".into(),
            ));
        }
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&frame[4..20]);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&frame[20..36]);
        let (hdr, body) = frame.split_at_mut(TRANSFORM_LEN);
        let aad = &hdr[20..52];
        let ok = match cipher {
            Cipher::Aes128Gcm => {
                let mut n = [0u8; 12];
                n.copy_from_slice(&nonce[..12]);
                gcm_key(&self.decryption)
                    .open_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::from(aad),
                        Tag::from(tag),
                        body,
                        0..,
                    )
                    .is_ok()
            }
            Cipher::Aes128Ccm => {
                let c = Aes128Ccm::new_from_slice(&self.decryption).expect("16-byte key");
                let n = ccm::Nonce::<U11>::try_from(&nonce[..11]).expect("11 bytes");
                c.decrypt_inout_detached(&n, aad, body.into(), &tag.into())
                    .is_ok()
            }
        };
        if !ok {
            return Err(SmbError::Protocol("decryption failed (bad tag)".into()));
        }
        // Zero-copy: skip the transform header instead of moving the payload.
        bytes::Buf::advance(&mut frame, TRANSFORM_LEN);
        Ok(frame)
    }
}

/// An AES-128-GCM key for one message (its schedule lives only for that call).
fn gcm_key(key: &[u8; 16]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).expect("16-byte AES-128 key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_decrypt_roundtrip_both_ciphers() {
        for cipher in [Cipher::Aes128Gcm, Cipher::Aes128Ccm] {
            let k = Keys::derive(Dialect::Smb311, Some(cipher), false, &[7; 16], &[1; 64]);
            // The peer's decryption key is our encryption key: swap to simulate the server.
            let server = Keys {
                dialect: Dialect::Smb311,
                cipher: Some(cipher),
                signing_alg: SigningAlg::AesCmac,
                signing: k.signing,
                encryption: k.decryption,
                decryption: k.encryption,
            };
            let msg = vec![0xAB; 1000];
            let enc = k.encrypt(9, &msg).unwrap();
            assert_eq!(server.decrypt(9, enc[..].into()).unwrap()[..], msg[..]);
            let mut bad = enc;
            bad[100] ^= 1;
            assert!(server.decrypt(9, bad[..].into()).is_err());
        }
    }

    /// `ring` seals GCM frames; an independent implementation (RustCrypto `aes-gcm`) must open them
    /// with the same key, nonce and additional data, and `ring` must open what it seals.
    #[test]
    fn gcm_frames_agree_with_an_independent_implementation() {
        let k = Keys::derive(
            Dialect::Smb311,
            Some(Cipher::Aes128Gcm),
            false,
            &[5; 16],
            &[2; 64],
        );
        let msg: Vec<u8> = (0..70_000u32).map(|i| ((i * 31) >> 3) as u8).collect();
        let mut frame = k.encrypt(42, &msg).unwrap();
        let (hdr, body) = frame.split_at_mut(TRANSFORM_LEN);
        let c = Aes128Gcm::new_from_slice(&k.encryption).unwrap();
        let n = aes_gcm::Nonce::try_from(&hdr[20..32]).unwrap();
        let tag: [u8; 16] = hdr[4..20].try_into().unwrap();
        c.decrypt_inout_detached(&n, &hdr[20..52], body.into(), &tag.into())
            .expect("RustCrypto opens ring's frame");
        assert_eq!(body, &msg[..]);

        let server = Keys {
            dialect: Dialect::Smb311,
            cipher: Some(Cipher::Aes128Gcm),
            signing_alg: SigningAlg::AesCmac,
            signing: k.signing,
            encryption: k.decryption,
            decryption: k.encryption,
        };
        let mut sealed = vec![0u8; TRANSFORM_LEN + msg.len()];
        sealed[TRANSFORM_LEN..].copy_from_slice(&msg);
        server.encrypt_in_place(42, &mut sealed).unwrap();
        assert_eq!(k.decrypt(42, sealed[..].into()).unwrap()[..], msg[..]);
        assert!(k.decrypt(43, sealed[..].into()).is_err(), "foreign session");
    }

    #[test]
    fn sign_verify() {
        for (d, gmac) in [
            (Dialect::Smb210, false),
            (Dialect::Smb302, false),
            (Dialect::Smb311, false),
            (Dialect::Smb311, true),
        ] {
            let k = Keys::derive(d, None, gmac, &[3; 16], &[0; 64]);
            let mut m = vec![0u8; 200];
            k.sign(&mut m);
            assert!(k.verify(&mut m));
            m[199] = 1;
            assert!(!k.verify(&mut m));
        }
    }

    #[test]
    fn kdf_is_deterministic_and_label_bound() {
        assert_eq!(kdf(&[1; 16], b"a\0", b"b\0"), kdf(&[1; 16], b"a\0", b"b\0"));
        assert_ne!(kdf(&[1; 16], b"a\0", b"b\0"), kdf(&[1; 16], b"c\0", b"b\0"));
    }
}
