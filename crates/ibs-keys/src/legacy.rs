//! The legacy symmetric key file of the product's "1811 and older" mode.
//!
//! The file is a single line of standard base64 (with padding) encoding at least 64 random
//! bytes, followed by a newline. This module owns generating such keys, encoding them to
//! file text and decoding file text back. The key bytes are zeroized on drop and never
//! appear in `Debug` output or error messages.

use std::fmt;

use base64::Engine as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{random_bytes, KeyError};

/// Size of a newly generated legacy key, and the minimum accepted when reading one.
pub const LEGACY_KEY_BYTES: usize = 64;

/// Symmetric key material from a legacy key file (at least 64 bytes).
///
/// Zeroized on drop; `Debug` prints only the length.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LegacyKey(Vec<u8>);

impl LegacyKey {
    /// Generates 64 bytes from the operating system's CSPRNG.
    ///
    /// # Panics
    /// Panics if the operating system cannot provide random bytes; there is no safe way to
    /// continue without them.
    pub fn generate() -> LegacyKey {
        let mut bytes = vec![0u8; LEGACY_KEY_BYTES];
        if let Err(e) = random_bytes(&mut bytes) {
            panic!("cannot generate a legacy key: {e}");
        }
        LegacyKey(bytes)
    }

    /// The file contents: standard base64 of the key, then a newline.
    pub fn to_file_text(&self) -> String {
        let mut text = base64::engine::general_purpose::STANDARD.encode(&self.0);
        text.push('\n');
        text
    }

    /// Reads file contents. Surrounding whitespace (including a trailing newline or CRLF)
    /// is ignored, as are line breaks inside the base64 text.
    ///
    /// Errors: [`KeyError::LegacyKeyNotBase64`] when the text is not base64, and
    /// [`KeyError::LegacyKeyTooShort`] when it decodes to fewer than 64 bytes.
    pub fn from_file_text(text: &str) -> Result<LegacyKey, KeyError> {
        let compact: Zeroizing<String> = Zeroizing::new(
            text.trim()
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect(),
        );
        if compact.is_empty() {
            return Err(KeyError::LegacyKeyNotBase64 {
                reason: "the file is empty".into(),
            });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| KeyError::LegacyKeyNotBase64 {
                reason: describe_base64_error(&e),
            })?;
        let key = LegacyKey(decoded);
        if key.0.len() < LEGACY_KEY_BYTES {
            return Err(KeyError::LegacyKeyTooShort { bytes: key.0.len() });
        }
        Ok(key)
    }

    /// The raw key bytes.
    pub fn material(&self) -> &[u8] {
        &self.0
    }
}

/// Compares without early exit on the first differing byte.
impl PartialEq for LegacyKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl Eq for LegacyKey {}

impl fmt::Debug for LegacyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LegacyKey(<{} bytes redacted>)", self.0.len())
    }
}

/// Describes a base64 error without echoing the (secret) input bytes.
fn describe_base64_error(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!("invalid character at offset {offset}")
        }
        base64::DecodeError::InvalidLength(len) => {
            format!("invalid length {len} (not a multiple of 4 characters)")
        }
        base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("invalid last character at offset {offset}")
        }
        base64::DecodeError::InvalidPadding => "invalid padding".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_is_64_random_bytes() {
        let a = LegacyKey::generate();
        let b = LegacyKey::generate();
        assert_eq!(a.material().len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn file_text_round_trip() {
        let key = LegacyKey::generate();
        let text = key.to_file_text();
        assert!(text.ends_with('\n'));
        assert!(!text.trim_end().contains('\n'));
        let back = LegacyKey::from_file_text(&text).unwrap();
        assert_eq!(back.material(), key.material());
        let crlf = format!("  {}\r\n\r\n", text.trim_end());
        assert_eq!(LegacyKey::from_file_text(&crlf).unwrap(), key);
    }

    #[test]
    fn longer_keys_are_accepted() {
        let text = base64::engine::general_purpose::STANDARD.encode([7u8; 96]);
        assert_eq!(
            LegacyKey::from_file_text(&text).unwrap().material().len(),
            96
        );
    }

    #[test]
    fn too_short_is_rejected() {
        let text = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        match LegacyKey::from_file_text(&text) {
            Err(KeyError::LegacyKeyTooShort { bytes: 32 }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn not_base64_is_rejected_without_echoing_input() {
        for text in ["", "   \n", "not base64 at all!!", "QUJD*RUY=", "QUJ"] {
            match LegacyKey::from_file_text(text) {
                Err(e @ KeyError::LegacyKeyNotBase64 { .. }) => {
                    let msg = e.to_string();
                    assert!(!msg.contains('*') && !msg.contains('!'), "{msg}");
                }
                other => panic!("{text:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = LegacyKey::from_file_text(
            &base64::engine::general_purpose::STANDARD.encode([0xABu8; 64]),
        )
        .unwrap();
        let dbg = format!("{key:?}");
        assert_eq!(dbg, "LegacyKey(<64 bytes redacted>)");
    }
}
