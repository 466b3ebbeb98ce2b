//! X.509 certificates: parsing (DER or PEM), validation that the key is RSA of a usable
//! size, and the facts the rest of ibs shows or matches on (thumbprint, subject, issuer,
//! serial, validity, key size).
//!
//! There is no chain validation: a backup certificate is normally self-signed and is
//! trusted because the operator configured it. Expired certificates are accepted; the
//! caller decides whether to warn (see [`Certificate::is_expired_at`]).

use std::fmt;

use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey as _;
use sha1::{Digest as _, Sha1};
use x509_cert::der::oid::db::{rfc5912, DB};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use crate::{hex_upper, KeyError, MAX_RSA_BITS, MIN_RSA_BITS};

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// A parsed X.509 certificate with an RSA public key of at least 2048 bits.
///
/// The original DER encoding is kept byte for byte, so [`Certificate::der`] and the
/// thumbprint match what other tools (Windows, `openssl x509`) report.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    parsed: x509_cert::Certificate,
    public_key: rsa::PublicKey,
    thumbprint: String,
    subject: String,
    issuer: String,
    not_before: i64,
    not_after: i64,
    key_bits: usize,
}

impl Certificate {
    /// Parses a certificate from DER bytes or PEM text (the first
    /// `-----BEGIN CERTIFICATE-----` block is used).
    ///
    /// Fails with [`KeyError::NotRsa`] for non-RSA keys, [`KeyError::KeyTooSmall`] for RSA
    /// keys under 2048 bits, and [`KeyError::CertificateParse`] for anything unreadable.
    pub fn from_bytes(bytes: &[u8]) -> Result<Certificate, KeyError> {
        let der = if bytes.first() == Some(&0x30) {
            bytes.to_vec()
        } else if bytes.windows(10).any(|w| w == b"-----BEGIN") {
            pem_to_der(bytes)?
        } else {
            return Err(parse_err("the data is neither DER nor PEM"));
        };
        Self::from_der_vec(der)
    }

    fn from_der_vec(der: Vec<u8>) -> Result<Certificate, KeyError> {
        let parsed = x509_cert::Certificate::from_der(&der).map_err(parse_err)?;
        let tbs = parsed.tbs_certificate();
        let spki = tbs.subject_public_key_info();
        check_rsa_algorithm(&spki.algorithm.oid)?;

        let key_bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| invalid_key("the key bit string has unused bits"))?;
        let raw = rsa::pkcs1::RsaPublicKeyRef::from_der(key_bytes).map_err(invalid_key)?;
        let key_bits = bit_length(raw.modulus.as_bytes());
        check_key_bits(key_bits)?;
        let spki_der = spki.to_der().map_err(invalid_key)?;
        let public_key = rsa::PublicKey::from_public_key_der(&spki_der).map_err(invalid_key)?;

        let validity = tbs.validity();
        let not_before = unix_seconds(validity.not_before);
        let not_after = unix_seconds(validity.not_after);
        let subject = tbs.subject().to_string();
        let issuer = tbs.issuer().to_string();
        let thumbprint = hex_upper(&Sha1::digest(&der));

        Ok(Certificate {
            der,
            parsed,
            public_key,
            thumbprint,
            subject,
            issuer,
            not_before,
            not_after,
            key_bits,
        })
    }

    /// The certificate's DER encoding, exactly as parsed.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate as PEM text (`-----BEGIN CERTIFICATE-----`, 64-column base64, `\n`
    /// line endings, trailing newline).
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.der);
        let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
        out.push_str(PEM_BEGIN);
        out.push('\n');
        for line in b64.as_bytes().chunks(64) {
            // base64 output is ASCII, so every chunk is valid UTF-8.
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str(PEM_END);
        out.push('\n');
        out
    }

    /// SHA-1 of the DER encoding as 40 uppercase hex digits, as Windows shows it.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The subject distinguished name as an RFC 4514 string, e.g. `CN=ibs backup`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The issuer distinguished name as an RFC 4514 string.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The serial number as uppercase hex (big-endian, no separators).
    pub fn serial_hex(&self) -> String {
        hex_upper(self.parsed.tbs_certificate().serial_number().as_bytes())
    }

    /// Start of the validity period, in Unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    /// End of the validity period, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// RSA modulus size in bits.
    pub fn key_bits(&self) -> usize {
        self.key_bits
    }

    /// True when `now_unix` is past the end of the validity period.
    pub fn is_expired_at(&self, now_unix: i64) -> bool {
        now_unix > self.not_after
    }

    /// The parsed certificate structure.
    pub(crate) fn parsed(&self) -> &x509_cert::Certificate {
        &self.parsed
    }

    /// The certificate's RSA public key.
    pub(crate) fn public_key(&self) -> &rsa::PublicKey {
        &self.public_key
    }

    /// The SubjectKeyIdentifier extension value, if the certificate has one.
    pub(crate) fn subject_key_identifier(&self) -> Option<Vec<u8>> {
        match self
            .parsed
            .tbs_certificate()
            .get_extension::<SubjectKeyIdentifier>()
        {
            Ok(Some((_, ski))) => Some(ski.0.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// Builds a [`Certificate`] from DER produced inside this crate.
    pub(crate) fn from_der(der: &[u8]) -> Result<Certificate, KeyError> {
        Self::from_der_vec(der.to_vec())
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Certificate {}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial_hex())
            .field("thumbprint", &self.thumbprint)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_bits", &self.key_bits)
            .finish()
    }
}

fn parse_err(reason: impl fmt::Display) -> KeyError {
    KeyError::CertificateParse {
        reason: reason.to_string(),
    }
}

fn invalid_key(reason: impl fmt::Display) -> KeyError {
    KeyError::InvalidPublicKey {
        reason: reason.to_string(),
    }
}

/// Rejects every SubjectPublicKeyInfo algorithm except plain rsaEncryption.
pub(crate) fn check_rsa_algorithm(oid: &ObjectIdentifier) -> Result<(), KeyError> {
    if *oid == rfc5912::RSA_ENCRYPTION {
        return Ok(());
    }
    let algorithm = match DB.by_oid(oid) {
        Some(name) => format!("{name} ({oid})"),
        None => oid.to_string(),
    };
    Err(KeyError::NotRsa { algorithm })
}

/// Checks an RSA modulus size against [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`].
pub(crate) fn check_key_bits(bits: usize) -> Result<(), KeyError> {
    if bits < MIN_RSA_BITS {
        Err(KeyError::KeyTooSmall { bits })
    } else if bits > MAX_RSA_BITS {
        Err(KeyError::KeyTooLarge { bits })
    } else {
        Ok(())
    }
}

/// Number of significant bits in a big-endian unsigned integer.
pub(crate) fn bit_length(be: &[u8]) -> usize {
    let Some(pos) = be.iter().position(|b| *b != 0) else {
        return 0;
    };
    let rest = be.len() - pos - 1;
    rest * 8 + (8 - be[pos].leading_zeros() as usize)
}

fn unix_seconds(t: x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

fn pem_to_der(bytes: &[u8]) -> Result<Vec<u8>, KeyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| parse_err("PEM text is not UTF-8"))?;
    let start = text
        .find(PEM_BEGIN)
        .ok_or_else(|| parse_err("the PEM data contains no CERTIFICATE block"))?
        + PEM_BEGIN.len();
    let len = text[start..]
        .find(PEM_END)
        .ok_or_else(|| parse_err("the PEM CERTIFICATE block has no END line"))?;
    let body: String = text[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|e| {
            parse_err(format!(
                "the PEM CERTIFICATE block is not valid base64: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_counts_significant_bits() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0xff; 256]), 2048);
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for input in [
            &b""[..],
            b"hello",
            b"\x30\x03\x01\x01",
            b"-----BEGIN PRIVATE KEY-----\n",
        ] {
            match Certificate::from_bytes(input) {
                Err(KeyError::CertificateParse { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn key_bit_limits() {
        assert!(matches!(
            check_key_bits(1024),
            Err(KeyError::KeyTooSmall { bits: 1024 })
        ));
        assert!(check_key_bits(2048).is_ok());
        assert!(check_key_bits(8192).is_ok());
        assert!(matches!(
            check_key_bits(16384),
            Err(KeyError::KeyTooLarge { bits: 16384 })
        ));
    }

    #[test]
    fn non_rsa_algorithm_is_named() {
        let err = check_rsa_algorithm(&rfc5912::ID_EC_PUBLIC_KEY).unwrap_err();
        match err {
            KeyError::NotRsa { algorithm } => {
                assert!(algorithm.contains("1.2.840.10045.2.1"), "{algorithm}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
