//! CMS key envelopes: a small secret (typically a repository data key) encrypted to one or
//! more RSA certificates.
//!
//! An envelope is a standalone DER `ContentInfo` holding an `EnvelopedData` (RFC 5652):
//! one `KeyTransRecipientInfo` per recipient, identified by issuer and serial number; the
//! content-encryption key is wrapped with RSAES-OAEP (SHA-256, MGF1-SHA-256, parameters
//! spelled out); the content is `id-data` encrypted with AES-256-CBC under a random IV.
//! `openssl cms -decrypt` opens what [`seal_envelope`] writes.
//!
//! [`open_envelope`] is more liberal, so that envelopes made by `openssl cms -encrypt`
//! open too: key transport with OAEP (SHA-1/224/256/384/512, any MGF1 hash of those) or
//! PKCS#1 v1.5; content AES-128/192/256-CBC or 3DES-CBC (OpenSSL 3.0's default cipher);
//! recipients identified by issuer+serial or by subject key identifier. Any malformed input yields [`KeyError::Envelope`], never a
//! panic. Only DER input is supported (not BER with indefinite lengths).

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt as _, BlockModeEncrypt as _, KeyIvInit as _};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use rsa::{Oaep, Pkcs1v15Encrypt};
use sha1::Sha1;
use sha2::{Sha224, Sha256, Sha384, Sha512};
use x509_cert::der::asn1::{OctetString, SetOfVec};
use x509_cert::der::oid::db::{rfc5911, rfc5912};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Any, Decode as _, Encode as _};
use x509_cert::spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use crate::{hex_upper, random_bytes, Certificate, KeyError, PrivateIdentity};

const AES_BLOCK: usize = 16;

/// Encrypts `payload` to every certificate in `recipients` (at least one) and returns the
/// DER-encoded CMS `ContentInfo(EnvelopedData)`.
pub fn seal_envelope(recipients: &[&Certificate], payload: &[u8]) -> Result<Vec<u8>, KeyError> {
    if recipients.is_empty() {
        return Err(KeyError::NoRecipients);
    }
    let mut cek = Zeroizing::new([0u8; 32]);
    random_bytes(cek.as_mut())?;
    let mut iv = [0u8; AES_BLOCK];
    random_bytes(&mut iv)?;

    let ciphertext = cbc::Encryptor::<aes::Aes256>::new_from_slices(cek.as_ref(), &iv)
        .map_err(|e| env_err(format!("AES-256-CBC setup failed: {e}")))?
        .encrypt_padded_vec::<Pkcs7>(payload);

    let key_enc_alg = oaep_sha256_algorithm()?;
    let mut infos = Vec::with_capacity(recipients.len());
    for cert in recipients {
        let enc_key = cert
            .public_key()
            .encrypt(&mut getrandom::SysRng, Oaep::<Sha256>::new(), cek.as_ref())
            .map_err(|e| {
                env_err(format!(
                    "RSA-OAEP encryption to {} failed: {e}",
                    cert.subject()
                ))
            })?;
        let tbs = cert.parsed().tbs_certificate();
        infos.push(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            key_enc_alg: key_enc_alg.clone(),
            enc_key: OctetString::new(enc_key).map_err(der_err)?,
        }));
    }

    let iv_param =
        Any::encode_from(&OctetString::new(iv.to_vec()).map_err(der_err)?).map_err(der_err)?;
    let enveloped = EnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(SetOfVec::try_from(infos).map_err(der_err)?),
        encrypted_content: EncryptedContentInfo {
            content_type: rfc5911::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: rfc5911::ID_AES_256_CBC,
                parameters: Some(iv_param),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(der_err)?),
        },
        unprotected_attrs: None,
    };
    ContentInfo {
        content_type: rfc5911::ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped).map_err(der_err)?,
    }
    .to_der()
    .map_err(der_err)
}

/// Decrypts an envelope with `identity`'s private key.
///
/// Returns [`KeyError::NoMatchingRecipient`] (listing the envelope's recipients) when no
/// recipient entry names the identity's certificate, and [`KeyError::Envelope`] when the
/// envelope is malformed, tampered with, or uses unsupported algorithms.
pub fn open_envelope(
    identity: &PrivateIdentity,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let enveloped = parse(envelope)?;
    let cert = identity.certificate();
    let ski = cert.subject_key_identifier();
    let mut last_error = None;
    for info in enveloped.recip_infos.0.iter() {
        let RecipientInfo::Ktri(ktri) = info else {
            continue;
        };
        if !rid_matches(&ktri.rid, cert, ski.as_deref()) {
            continue;
        }
        let attempt = unwrap_key(identity.key(), &ktri.key_enc_alg, ktri.enc_key.as_bytes())
            .and_then(|cek| decrypt_content(&enveloped.encrypted_content, &cek));
        match attempt {
            Ok(plain) => return Ok(plain),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| KeyError::NoMatchingRecipient {
        recipients: describe_recipients(&enveloped),
    }))
}

/// Lists an envelope's recipients, each as `issuer=<subject>, serial=<hex>` (or
/// `subjectKeyIdentifier=<hex>`, or a note for unsupported recipient kinds).
pub fn envelope_recipients(envelope: &[u8]) -> Result<Vec<String>, KeyError> {
    Ok(describe_recipients(&parse(envelope)?))
}

fn env_err(reason: impl Into<String>) -> KeyError {
    KeyError::Envelope(reason.into())
}

fn der_err(e: x509_cert::der::Error) -> KeyError {
    env_err(format!("ASN.1 error: {e}"))
}

fn parse(envelope: &[u8]) -> Result<EnvelopedData, KeyError> {
    let info = ContentInfo::from_der(envelope)
        .map_err(|e| env_err(format!("not a DER CMS ContentInfo: {e}")))?;
    if info.content_type != rfc5911::ID_ENVELOPED_DATA {
        return Err(env_err(format!(
            "CMS content type is {}, expected EnvelopedData",
            info.content_type
        )));
    }
    info.content
        .decode_as::<EnvelopedData>()
        .map_err(|e| env_err(format!("malformed EnvelopedData: {e}")))
}

fn describe_recipients(enveloped: &EnvelopedData) -> Vec<String> {
    enveloped
        .recip_infos
        .0
        .iter()
        .map(|info| match info {
            RecipientInfo::Ktri(k) => match &k.rid {
                RecipientIdentifier::IssuerAndSerialNumber(ias) => format!(
                    "issuer={}, serial={}",
                    ias.issuer,
                    hex_upper(ias.serial_number.as_bytes())
                ),
                RecipientIdentifier::SubjectKeyIdentifier(ski) => {
                    format!("subjectKeyIdentifier={}", hex_upper(ski.0.as_bytes()))
                }
            },
            RecipientInfo::Kari(_) => "key-agreement recipient (not supported)".to_string(),
            RecipientInfo::Kekri(_) => "KEK recipient (not supported)".to_string(),
            RecipientInfo::Pwri(_) => "password recipient (not supported)".to_string(),
            RecipientInfo::Ori(_) => "other recipient type (not supported)".to_string(),
        })
        .collect()
}

fn rid_matches(rid: &RecipientIdentifier, cert: &Certificate, ski: Option<&[u8]>) -> bool {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(ias) => {
            let tbs = cert.parsed().tbs_certificate();
            ias.issuer == *tbs.issuer() && ias.serial_number == *tbs.serial_number()
        }
        RecipientIdentifier::SubjectKeyIdentifier(id) => ski == Some(id.0.as_bytes()),
    }
}

/// `id-RSAES-OAEP` with SHA-256 / MGF1-SHA-256 parameters written out explicitly.
fn oaep_sha256_algorithm() -> Result<AlgorithmIdentifierOwned, KeyError> {
    let params = rsa::pkcs1::RsaOaepParamsRef::new::<Sha256>();
    Ok(AlgorithmIdentifierOwned {
        oid: rfc5912::ID_RSAES_OAEP,
        parameters: Some(Any::encode_from(&params).map_err(der_err)?),
    })
}

#[derive(Clone, Copy)]
enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

fn hash_from_oid(oid: &ObjectIdentifier) -> Result<Hash, KeyError> {
    Ok(match *oid {
        rfc5912::ID_SHA_1 => Hash::Sha1,
        rfc5912::ID_SHA_224 => Hash::Sha224,
        rfc5912::ID_SHA_256 => Hash::Sha256,
        rfc5912::ID_SHA_384 => Hash::Sha384,
        rfc5912::ID_SHA_512 => Hash::Sha512,
        other => return Err(env_err(format!("unsupported OAEP hash algorithm {other}"))),
    })
}

/// Recovers the content-encryption key from a KTRI.
fn unwrap_key(
    key: &rsa::PrivateKey,
    alg: &AlgorithmIdentifierOwned,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let result = match alg.oid {
        rfc5912::RSA_ENCRYPTION => key.decrypt(Pkcs1v15Encrypt, wrapped),
        rfc5912::ID_RSAES_OAEP => {
            let (hash, mgf) = oaep_hashes(alg.parameters.as_ref())?;
            oaep_decrypt(key, hash, mgf, wrapped)
        }
        other => {
            return Err(env_err(format!(
                "unsupported key transport algorithm {other}"
            )))
        }
    };
    result.map(Zeroizing::new).map_err(|_| {
        env_err(
            "could not decrypt the content key (the envelope is damaged or not made for this key)",
        )
    })
}

/// Reads RSAES-OAEP-params: returns (hash, MGF1 hash). Absent parameters mean SHA-1.
fn oaep_hashes(params: Option<&Any>) -> Result<(Hash, Hash), KeyError> {
    let Some(params) = params else {
        return Ok((Hash::Sha1, Hash::Sha1));
    };
    if params.is_null() {
        return Ok((Hash::Sha1, Hash::Sha1));
    }
    let der = params.to_der().map_err(der_err)?;
    let parsed = rsa::pkcs1::RsaOaepParamsOwned::from_der(&der)
        .map_err(|e| env_err(format!("malformed RSAES-OAEP parameters: {e}")))?;
    let hash = hash_from_oid(&parsed.hash.oid)?;
    if parsed.mask_gen.oid != rfc5912::ID_MGF_1 {
        return Err(env_err(format!(
            "unsupported OAEP mask generation function {}",
            parsed.mask_gen.oid
        )));
    }
    let mgf = match &parsed.mask_gen.parameters {
        Some(inner) => hash_from_oid(&inner.oid)?,
        None => Hash::Sha1,
    };
    if parsed.p_source.oid != rfc5912::ID_P_SPECIFIED {
        return Err(env_err("unsupported OAEP label source"));
    }
    if let Some(label) = &parsed.p_source.parameters {
        let empty = label
            .decode_as::<OctetString>()
            .map(|os| os.as_bytes().is_empty())
            .unwrap_or(false);
        if !empty {
            return Err(env_err("OAEP with a non-empty label is not supported"));
        }
    }
    Ok((hash, mgf))
}

fn oaep_decrypt(
    key: &rsa::PrivateKey,
    hash: Hash,
    mgf: Hash,
    wrapped: &[u8],
) -> rsa::Result<Vec<u8>> {
    fn with_mgf<D>(key: &rsa::PrivateKey, mgf: Hash, ct: &[u8]) -> rsa::Result<Vec<u8>>
    where
        D: rsa::sha2::digest::Digest + rsa::sha2::digest::FixedOutputReset + Send + Sync,
    {
        match mgf {
            Hash::Sha1 => key.decrypt(Oaep::<D, Sha1>::new_with_mgf_hash(), ct),
            Hash::Sha224 => key.decrypt(Oaep::<D, Sha224>::new_with_mgf_hash(), ct),
            Hash::Sha256 => key.decrypt(Oaep::<D, Sha256>::new_with_mgf_hash(), ct),
            Hash::Sha384 => key.decrypt(Oaep::<D, Sha384>::new_with_mgf_hash(), ct),
            Hash::Sha512 => key.decrypt(Oaep::<D, Sha512>::new_with_mgf_hash(), ct),
        }
    }
    match hash {
        Hash::Sha1 => with_mgf::<Sha1>(key, mgf, wrapped),
        Hash::Sha224 => with_mgf::<Sha224>(key, mgf, wrapped),
        Hash::Sha256 => with_mgf::<Sha256>(key, mgf, wrapped),
        Hash::Sha384 => with_mgf::<Sha384>(key, mgf, wrapped),
        Hash::Sha512 => with_mgf::<Sha512>(key, mgf, wrapped),
    }
}

/// Content ciphers accepted by [`open_envelope`].
#[derive(Clone, Copy)]
enum ContentCipher {
    Aes128,
    Aes192,
    Aes256,
    /// `des-ede3-cbc`: what `openssl cms -encrypt` (OpenSSL 3.0) uses without a cipher option.
    TdesEde3,
}

impl ContentCipher {
    fn from_oid(oid: &ObjectIdentifier) -> Result<Self, KeyError> {
        Ok(match *oid {
            rfc5911::ID_AES_128_CBC => Self::Aes128,
            rfc5911::ID_AES_192_CBC => Self::Aes192,
            rfc5911::ID_AES_256_CBC => Self::Aes256,
            rfc5911::DES_EDE_3_CBC => Self::TdesEde3,
            other => {
                return Err(env_err(format!(
                    "unsupported content encryption algorithm {other}"
                )))
            }
        })
    }

    fn key_len(self) -> usize {
        match self {
            Self::Aes128 => 16,
            Self::Aes192 | Self::TdesEde3 => 24,
            Self::Aes256 => 32,
        }
    }

    fn block_len(self) -> usize {
        match self {
            Self::TdesEde3 => 8,
            _ => AES_BLOCK,
        }
    }
}

/// CBC decryption of the encrypted content, in place in a zeroizing buffer.
fn decrypt_content(eci: &EncryptedContentInfo, cek: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if eci.content_type != rfc5911::ID_DATA {
        return Err(env_err(format!(
            "the encrypted content type is {}, expected id-data",
            eci.content_type
        )));
    }
    let cipher = ContentCipher::from_oid(&eci.content_enc_alg.oid)?;
    if cek.len() != cipher.key_len() {
        return Err(env_err(
            "could not decrypt the content key (the envelope is damaged or not made for this key)",
        ));
    }
    let block = cipher.block_len();
    let iv = eci
        .content_enc_alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<OctetString>().ok())
        .ok_or_else(|| env_err("the CBC IV is missing or malformed"))?;
    let iv = iv.as_bytes();
    if iv.len() != block {
        return Err(env_err(format!("the CBC IV is not {block} bytes")));
    }
    let ciphertext = eci
        .encrypted_content
        .as_ref()
        .ok_or_else(|| env_err("the envelope has no encrypted content (detached content)"))?
        .as_bytes();
    if ciphertext.is_empty() || ciphertext.len() % block != 0 {
        return Err(env_err(
            "the encrypted content is not a whole number of cipher blocks",
        ));
    }

    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let setup = |e: cbc::cipher::InvalidLength| env_err(format!("CBC setup failed: {e}"));
    let padding = |_| env_err("the encrypted content is damaged (CBC padding check failed)");
    macro_rules! cbc_decrypt {
        ($cipher:ty) => {
            cbc::Decryptor::<$cipher>::new_from_slices(cek, iv)
                .map_err(setup)?
                .decrypt_padded::<Pkcs7>(&mut buf)
                .map_err(padding)?
                .len()
        };
    }
    let plain_len = match cipher {
        ContentCipher::Aes128 => cbc_decrypt!(aes::Aes128),
        ContentCipher::Aes192 => cbc_decrypt!(aes::Aes192),
        ContentCipher::Aes256 => cbc_decrypt!(aes::Aes256),
        ContentCipher::TdesEde3 => cbc_decrypt!(des::TdesEde3),
    };
    buf.truncate(plain_len);
    Ok(buf)
}
