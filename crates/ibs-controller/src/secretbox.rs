//! Encryption at rest for secrets kept in the state database (the share password, the legacy key).
//!
//! A 32-byte master key lives in `DATA/secret.key` (mode 0600, created on first use). Each secret is
//! sealed with AES-256-GCM (`ibs_repo::crypto::SymKey`) bound to its purpose as associated data, and
//! stored base64-encoded. Anyone who can read both the database and `secret.key` can read the
//! secrets: the point is that a copied or backed-up database alone reveals nothing. (The brief's
//! product used DPAPI-NG for the same purpose.)

use crate::{ControllerError, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ibs_repo::crypto::SymKey;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct SecretBox {
    key: SymKey,
}

impl SecretBox {
    /// Loads `path`, creating it with a fresh random key (mode 0600) if missing.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        let io = |e: std::io::Error| {
            ControllerError::Internal(format!("secret key {}: {e}", path.display()))
        };
        match std::fs::read(path) {
            Ok(b) => SymKey::from_bytes(&b)
                .map(|key| SecretBox { key })
                .ok_or_else(|| {
                    ControllerError::Internal(format!(
                        "secret key {} is not 32 bytes",
                        path.display()
                    ))
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SymKey::random();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(key.bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(SecretBox { key })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A box with a random key (tests).
    pub fn ephemeral() -> Self {
        SecretBox {
            key: SymKey::random(),
        }
    }

    pub fn seal(&self, purpose: &str, plaintext: &str) -> String {
        B64.encode(self.key.seal(purpose.as_bytes(), plaintext.as_bytes()))
    }

    pub fn open(&self, purpose: &str, sealed: &str) -> Result<String> {
        let bad = || {
            ControllerError::Internal(format!(
                "stored secret {purpose} cannot be decrypted (was DATA/secret.key replaced?)"
            ))
        };
        let bytes = B64.decode(sealed).map_err(|_| bad())?;
        let plain = self.key.open(purpose.as_bytes(), &bytes).ok_or_else(bad)?;
        String::from_utf8(plain).map_err(|_| bad())
    }
}

impl ibs_sources::component::SealedSecrets for SecretBox {
    fn open_sealed(&self, purpose: &str, sealed: &str) -> std::result::Result<String, String> {
        self.open(purpose, sealed).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_purpose_binding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.key");
        let b = SecretBox::open_or_create(&p).unwrap();
        let s = b.seal("share-password", "hunter2");
        assert!(!s.contains("hunter2"));
        let again = SecretBox::open_or_create(&p).unwrap();
        assert_eq!(again.open("share-password", &s).unwrap(), "hunter2");
        assert!(again.open("legacy-key", &s).is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
