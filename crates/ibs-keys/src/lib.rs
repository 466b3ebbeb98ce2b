//! Key material for ibs: X.509 certificates, PKCS#12 (`.pfx`) identities, the legacy
//! symmetric key file, and CMS key envelopes.
//!
//! The crate is pure computation: bytes in, bytes out. It does no file I/O, reads no
//! environment variables and never consults the system clock; callers pass the current
//! time (`now_unix`, seconds since the Unix epoch) where one is needed.
//!
//! Module map:
//! - [`cert`]: [`Certificate`], a parsed and validated RSA X.509 certificate.
//! - [`identity`]: [`PrivateIdentity`] (RSA private key + certificate), `.pfx` import and
//!   export, and [`generate_self_signed`].
//! - [`envelope`]: [`seal_envelope`] / [`open_envelope`] / [`envelope_recipients`], i.e.
//!   CMS `EnvelopedData` (RFC 5652) with RSAES-OAEP key transport and AES-CBC content.
//! - [`legacy`]: [`LegacyKey`], the base64 symmetric key file of the "1811 and older" mode.
//!
//! This file holds the shared error type, [`KeyError`], plus small helpers (OS randomness,
//! hex formatting) used by the modules.
//!
//! Error messages are written for operators. None of them, and no `Debug` output of this
//! crate's types, contains key material or passwords.

pub mod cert;
pub mod envelope;
pub mod identity;
pub mod legacy;

pub use cert::Certificate;
pub use envelope::{envelope_recipients, open_envelope, seal_envelope};
pub use identity::{generate_self_signed, PrivateIdentity};
pub use legacy::LegacyKey;

/// Smallest RSA modulus, in bits, that this crate accepts for certificates and keys.
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus, in bits, that this crate accepts (the `rsa` crate's limit).
pub const MAX_RSA_BITS: usize = 8192;

/// Everything that can go wrong in `ibs-keys`.
///
/// Messages are specific and meant for operators; they never contain key material or
/// passwords.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a DER or PEM X.509 certificate, or the certificate is malformed.
    #[error("could not read the certificate: {reason}")]
    CertificateParse {
        /// What was wrong, as reported by the parser.
        reason: String,
    },

    /// The certificate (or private key) is not an RSA key.
    #[error("certificate key algorithm is {algorithm}; only RSA keys are supported")]
    NotRsa {
        /// The key algorithm name and/or OID found.
        algorithm: String,
    },

    /// The RSA key is shorter than [`MIN_RSA_BITS`].
    #[error("certificate key is {bits}-bit RSA; at least 2048 bits are required")]
    KeyTooSmall {
        /// The modulus size found (or requested), in bits.
        bits: usize,
    },

    /// The RSA key is longer than [`MAX_RSA_BITS`].
    #[error("certificate key is {bits}-bit RSA; at most 8192 bits are supported")]
    KeyTooLarge {
        /// The modulus size found (or requested), in bits.
        bits: usize,
    },

    /// The RSA public key inside the certificate is malformed.
    #[error("the certificate's RSA public key is invalid: {reason}")]
    InvalidPublicKey {
        /// What was wrong.
        reason: String,
    },

    /// The PKCS#12 integrity check failed: the password is wrong.
    #[error("the .pfx password is wrong (PKCS#12 MAC check failed)")]
    WrongPfxPassword,

    /// The bytes are not a PKCS#12 file, or it uses an unsupported format.
    #[error("the file is not a readable PKCS#12 (.pfx) file: {reason}")]
    PfxParse {
        /// What was wrong, as reported by the parser.
        reason: String,
    },

    /// The PKCS#12 contents could not be decrypted (typically a `.pfx` without a MAC and a
    /// wrong password, or a damaged file).
    #[error("could not decrypt the .pfx contents ({reason}); the password may be wrong or the file damaged")]
    PfxDecrypt {
        /// What failed.
        reason: String,
    },

    /// The PKCS#12 file holds no private key.
    #[error("the .pfx file contains no private key (it may be a certificate-only export)")]
    PfxNoPrivateKey,

    /// The PKCS#12 file holds a private key but no certificate.
    #[error("the .pfx file contains a private key but no certificate")]
    PfxNoCertificate,

    /// None of the certificates in the PKCS#12 file belongs to its private key.
    #[error("the private key in the .pfx file does not match any certificate in it")]
    PfxKeyMismatch,

    /// The private key inside the PKCS#12 file is malformed.
    #[error("the private key in the .pfx file is invalid: {reason}")]
    InvalidPrivateKey {
        /// What was wrong.
        reason: String,
    },

    /// Writing a PKCS#12 file failed.
    #[error("could not write the .pfx file: {reason}")]
    PfxWrite {
        /// What failed.
        reason: String,
    },

    /// The requested certificate subject is unusable.
    #[error("invalid certificate subject: {reason}")]
    InvalidSubject {
        /// What was wrong.
        reason: String,
    },

    /// The requested validity period cannot be encoded.
    #[error("invalid certificate validity period: {reason}")]
    InvalidValidity {
        /// What was wrong.
        reason: String,
    },

    /// RSA key generation or certificate signing failed.
    #[error("could not create the certificate: {reason}")]
    CertificateBuild {
        /// What failed.
        reason: String,
    },

    /// `seal_envelope` was called without recipients.
    #[error("a key envelope needs at least one recipient certificate")]
    NoRecipients,

    /// The envelope is not addressed to the identity that tried to open it.
    #[error(
        "the key envelope is not addressed to this certificate; it is addressed to: {}",
        .recipients.join("; ")
    )]
    NoMatchingRecipient {
        /// Each recipient of the envelope, as `issuer=<subject>, serial=<hex>`.
        recipients: Vec<String>,
    },

    /// The envelope is damaged, tampered with, or uses an unsupported CMS feature.
    #[error("the key envelope is damaged or unsupported: {0}")]
    Envelope(String),

    /// The legacy key file is not valid base64.
    #[error("the legacy key file is not valid base64: {reason}")]
    LegacyKeyNotBase64 {
        /// What the decoder reported.
        reason: String,
    },

    /// The legacy key file decodes to fewer than 64 bytes.
    #[error("the legacy key file holds {bytes} bytes; at least 64 bytes are required")]
    LegacyKeyTooShort {
        /// The decoded length.
        bytes: usize,
    },

    /// The operating system's random number generator failed.
    #[error("the operating system random number generator failed: {reason}")]
    Random {
        /// What the OS reported.
        reason: String,
    },
}

/// Fills `buf` from the OS CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(buf).map_err(|e| KeyError::Random {
        reason: e.to_string(),
    })
}

/// Uppercase hex without separators (the way Windows shows thumbprints and serials).
pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_upper_formats_like_windows() {
        assert_eq!(hex_upper(&[0x00, 0xab, 0x1f, 0xff]), "00AB1FFF");
        assert_eq!(hex_upper(&[]), "");
    }

    #[test]
    fn random_bytes_fills() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn messages_are_operator_friendly() {
        assert_eq!(
            KeyError::KeyTooSmall { bits: 1024 }.to_string(),
            "certificate key is 1024-bit RSA; at least 2048 bits are required"
        );
        assert_eq!(
            KeyError::WrongPfxPassword.to_string(),
            "the .pfx password is wrong (PKCS#12 MAC check failed)"
        );
        let e = KeyError::NoMatchingRecipient {
            recipients: vec![
                "issuer=CN=a, serial=01".into(),
                "issuer=CN=b, serial=02".into(),
            ],
        };
        assert!(e
            .to_string()
            .ends_with("issuer=CN=a, serial=01; issuer=CN=b, serial=02"));
    }
}
