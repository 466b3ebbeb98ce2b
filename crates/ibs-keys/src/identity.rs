//! Private identities: an RSA private key together with its certificate.
//!
//! This module owns `.pfx` (PKCS#12) import and export and the generation of new
//! self-signed backup certificates. Import accepts what Windows and OpenSSL 3 write by
//! default (PBES2/AES, SHA-256 MAC) and the `-legacy` formats (RC2/3DES, SHA-1 MAC).
//! Export always writes PBES2 AES-256-CBC with PBKDF2-HMAC-SHA256 and a SHA-256 MAC.
//!
//! The private key never appears in `Debug` output or error messages, and it is zeroized
//! when the [`PrivateIdentity`] is dropped (the `rsa` key type zeroizes itself).

use std::fmt;
use std::time::Duration;

use p12_keystore::{
    EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, Pkcs12Archive, PrivateKeyChain,
};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::asn1::{GeneralizedTime, Utf8StringRef};
use x509_cert::der::oid::db::rfc4519;
use x509_cert::der::{Any, DateTime, Decode as _, Encode as _};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::{Extension, ToExtension as _};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};

use crate::cert::{bit_length, check_key_bits, check_rsa_algorithm};
use crate::{random_bytes, Certificate, KeyError};

/// PBKDF2 and MAC iteration count used when writing `.pfx` files.
const PFX_ITERATIONS: u32 = 10_000;

/// How far before `now` a generated certificate becomes valid (clock-skew allowance).
const BACKDATE_SECS: i64 = 3600;

/// An RSA private key and the certificate that carries its public key.
///
/// `Debug` shows only the certificate; the key is redacted.
#[derive(Clone)]
pub struct PrivateIdentity {
    key: rsa::PrivateKey,
    certificate: Certificate,
}

impl PrivateIdentity {
    /// Reads a `.pfx` / `.p12` file.
    ///
    /// The first RSA private key that matches one of the file's certificates is used.
    /// Errors: [`KeyError::WrongPfxPassword`] when the MAC check fails,
    /// [`KeyError::PfxParse`] for non-PKCS#12 input, [`KeyError::PfxNoPrivateKey`],
    /// [`KeyError::PfxNoCertificate`], [`KeyError::PfxKeyMismatch`], and the certificate
    /// validation errors of [`Certificate::from_bytes`].
    pub fn from_pfx(pfx: &[u8], password: &str) -> Result<PrivateIdentity, KeyError> {
        let archive = Pkcs12Archive::from_pkcs12(pfx, password).map_err(map_p12_error)?;
        if archive.keys.is_empty() {
            return Err(KeyError::PfxNoPrivateKey);
        }
        if archive.certs.is_empty() {
            return Err(KeyError::PfxNoCertificate);
        }

        let mut first_key_error = None;
        let mut first_cert_error = None;
        let mut parsed_certs = Vec::new();
        for bag in &archive.certs {
            match Certificate::from_bytes(bag.cert.as_der()) {
                Ok(cert) => parsed_certs.push(cert),
                Err(e) => {
                    first_cert_error.get_or_insert(e);
                }
            }
        }

        for bag in &archive.keys {
            let key = match parse_private_key(bag.key.oid(), bag.key.as_der()) {
                Ok(key) => key,
                Err(e) => {
                    first_key_error.get_or_insert(e);
                    continue;
                }
            };
            let public = key.to_public_key();
            if let Some(cert) = parsed_certs.iter().find(|c| *c.public_key() == public) {
                return Ok(PrivateIdentity {
                    key,
                    certificate: cert.clone(),
                });
            }
        }

        // Nothing matched: report the most specific reason.
        if let Some(e) = first_key_error {
            return Err(e);
        }
        if parsed_certs.is_empty() {
            if let Some(e) = first_cert_error {
                return Err(e);
            }
        }
        Err(KeyError::PfxKeyMismatch)
    }

    /// The identity's certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Writes the identity as a `.pfx` file protected by `password`: PBES2 AES-256-CBC
    /// with PBKDF2-HMAC-SHA256 for the key and certificate bags, and an HMAC-SHA256 MAC.
    /// OpenSSL 3 and Windows read it.
    pub fn to_pfx(&self, password: &str) -> Result<Vec<u8>, KeyError> {
        let pfx_err = |reason: String| KeyError::PfxWrite { reason };
        let key_der = self
            .key
            .to_pkcs8_der()
            .map_err(|e| pfx_err(e.to_string()))?;
        let key = p12_keystore::PrivateKey::from_der(key_der.as_bytes())
            .map_err(|e| pfx_err(e.to_string()))?;
        let cert = p12_keystore::Certificate::from_der(self.certificate.der())
            .map_err(|e| pfx_err(e.to_string()))?;
        // Same localKeyID convention as OpenSSL: SHA-1 of the certificate.
        let local_key_id = Sha1::digest(self.certificate.der()).to_vec();
        let chain = PrivateKeyChain::new(local_key_id, key, [cert]);

        let mut store = KeyStore::new();
        store.add_entry(
            self.certificate.subject(),
            KeyStoreEntry::PrivateKeyChain(chain),
        );
        store
            .writer(password)
            .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .encryption_iterations(PFX_ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha256)
            .mac_iterations(PFX_ITERATIONS)
            .write()
            .map_err(|e| pfx_err(e.to_string()))
    }

    /// The RSA private key (crate-internal; never exported in clear).
    pub(crate) fn key(&self) -> &rsa::PrivateKey {
        &self.key
    }
}

impl fmt::Debug for PrivateIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateIdentity")
            .field("certificate", &self.certificate)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Generates a new RSA key and a self-signed certificate for it.
///
/// - `subject_cn`: the common name; the subject (and issuer) is `CN=<subject_cn>`.
/// - `bits`: RSA modulus size, 2048..=8192 ([`KeyError::KeyTooSmall`] below 2048).
/// - `days`: validity length in days (at least 1); validity runs from `now_unix - 1h` to
///   `now_unix + days`.
///
/// The certificate is signed with SHA256withRSA, has a random positive 128-bit serial,
/// KeyUsage keyEncipherment + dataEncipherment (critical), basicConstraints CA:FALSE
/// and a SubjectKeyIdentifier.
pub fn generate_self_signed(
    subject_cn: &str,
    bits: usize,
    days: u32,
    now_unix: i64,
) -> Result<PrivateIdentity, KeyError> {
    check_key_bits(bits)?;
    let subject = common_name(subject_cn)?;
    let validity = validity(days, now_unix)?;
    let serial = random_serial()?;

    let build_err = |reason: String| KeyError::CertificateBuild { reason };
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits)
        .map_err(|e| build_err(format!("RSA key generation failed: {e}")))?;
    let public_der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| build_err(e.to_string()))?;
    let spki = SubjectPublicKeyInfoOwned::from_der(public_der.as_bytes())
        .map_err(|e| build_err(e.to_string()))?;

    let profile = BackupCertProfile { subject };
    let builder = CertificateBuilder::new(profile, serial, validity, spki)
        .map_err(|e| build_err(e.to_string()))?;
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let cert = builder
        .build::<_, rsa::pkcs1v15::Signature>(&signer)
        .map_err(|e| build_err(e.to_string()))?;
    let der = cert.to_der().map_err(|e| build_err(e.to_string()))?;
    let certificate = Certificate::from_der(&der)?;
    Ok(PrivateIdentity { key, certificate })
}

/// Certificate profile for backup encryption certificates: self-issued end-entity
/// certificate for key encipherment.
struct BackupCertProfile {
    subject: Name,
}

impl BuilderProfile for BackupCertProfile {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut extensions = Vec::new();
        let basic = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        extensions.push(basic.to_extension(tbs.subject(), &extensions)?);
        let usage = KeyUsage(KeyUsages::KeyEncipherment | KeyUsages::DataEncipherment);
        extensions.push(usage.to_extension(tbs.subject(), &extensions)?);
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        extensions.push(ski.to_extension(tbs.subject(), &extensions)?);
        Ok(extensions)
    }
}

/// `CN=<cn>` as a UTF8String, built structurally so no RFC 4514 escaping is needed.
fn common_name(cn: &str) -> Result<Name, KeyError> {
    let invalid = |reason: String| KeyError::InvalidSubject { reason };
    if cn.trim().is_empty() {
        return Err(invalid("the common name is empty".into()));
    }
    if cn.chars().count() > 64 {
        return Err(invalid(
            "the common name is longer than 64 characters".into(),
        ));
    }
    let value = Utf8StringRef::new(cn).map_err(|e| invalid(e.to_string()))?;
    let atv = x509_cert::attr::AttributeTypeAndValue {
        oid: rfc4519::COMMON_NAME,
        value: Any::from(value),
    };
    let mut rdn = RelativeDistinguishedName::default();
    rdn.insert(atv).map_err(|e| invalid(e.to_string()))?;
    let mut seq = RdnSequence::default();
    seq.push(rdn);
    let der = seq.to_der().map_err(|e| invalid(e.to_string()))?;
    Name::from_der(&der).map_err(|e| invalid(e.to_string()))
}

fn validity(days: u32, now_unix: i64) -> Result<Validity, KeyError> {
    let invalid = |reason: String| KeyError::InvalidValidity { reason };
    if days == 0 {
        return Err(invalid("the validity must be at least 1 day".into()));
    }
    let start = now_unix
        .checked_sub(BACKDATE_SECS)
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| invalid(format!("start time {now_unix} is before 1970")))?;
    let end = u64::try_from(now_unix)
        .ok()
        .and_then(|n| n.checked_add(u64::from(days) * 86_400))
        .ok_or_else(|| invalid("end time overflows".into()))?;
    let to_time = |secs: u64| -> Result<Time, KeyError> {
        let dt = DateTime::from_unix_duration(Duration::from_secs(secs))
            .map_err(|e| invalid(format!("time {secs} cannot be encoded: {e}")))?;
        // The builder converts dates up to 2049 to UTCTime as RFC 5280 requires.
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    };
    Ok(Validity::new(to_time(start)?, to_time(end)?))
}

/// A random, positive, 16-byte serial number.
fn random_serial() -> Result<SerialNumber, KeyError> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes)?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x40; // no leading zero byte, so always 16 bytes
    SerialNumber::new(&bytes).map_err(|e| KeyError::CertificateBuild {
        reason: e.to_string(),
    })
}

/// Decodes a PKCS#8 private key, insisting on RSA of a supported size.
fn parse_private_key(
    oid: x509_cert::der::oid::ObjectIdentifier,
    der: &[u8],
) -> Result<rsa::PrivateKey, KeyError> {
    check_rsa_algorithm(&oid)?;
    let key = rsa::PrivateKey::from_pkcs8_der(der).map_err(|e| KeyError::InvalidPrivateKey {
        reason: e.to_string(),
    })?;
    let bits = bit_length(&key.n_bytes());
    check_key_bits(bits)?;
    Ok(key)
}

fn map_p12_error(e: p12_keystore::error::Error) -> KeyError {
    use p12_keystore::error::Error as E;
    match e {
        E::MacError(_) => KeyError::WrongPfxPassword,
        E::UnpadError => KeyError::PfxDecrypt {
            reason: "padding check failed after decryption".into(),
        },
        E::Pkcs5Error(reason) => KeyError::PfxDecrypt { reason },
        E::InvalidPrivateKey => KeyError::InvalidPrivateKey {
            reason: "not a PKCS#8 private key".into(),
        },
        other => KeyError::PfxParse {
            reason: other.to_string(),
        },
    }
}
