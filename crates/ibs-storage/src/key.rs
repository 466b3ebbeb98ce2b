//! Object keys: relative, `/`-separated paths made of safe components. Validation here is what keeps a
//! hostile or corrupted repository listing from addressing anything outside the backend's root.

use crate::{ErrorKind, StorageError};
use std::fmt;

/// A validated object key such as `packs/3f/3f0c…` or `config`.
///
/// Invariant: non-empty; at most 512 bytes; components are non-empty, at most 255 bytes, consist of
/// ASCII letters, digits, `.`, `_` and `-`, and are neither `.` nor `..`, nor start with `.ibs-tmp-`
/// (the reserved temporary prefix).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

/// Prefix of temporary names used by backends that publish with write-then-rename.
pub const TEMP_PREFIX: &str = ".ibs-tmp-";

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Result<Self, StorageError> {
        let key = key.into();
        if Self::is_valid(&key) {
            Ok(ObjectKey(key))
        } else {
            Err(StorageError::new(
                ErrorKind::Invalid,
                "key",
                Some(&key),
                "invalid object key",
            ))
        }
    }

    pub fn is_valid(key: &str) -> bool {
        !key.is_empty()
            && key.len() <= 512
            && key.split('/').all(|c| {
                !c.is_empty()
                    && c.len() <= 255
                    && c != "."
                    && c != ".."
                    && !c.starts_with(TEMP_PREFIX)
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escapes_and_odd_characters() {
        for bad in [
            "",
            "/abs",
            "a//b",
            "../x",
            "a/../b",
            "a/./b",
            "a\\b",
            "a b",
            ".ibs-tmp-x",
            "a/",
            "ü",
        ] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?} must be rejected");
        }
        for good in ["config", "packs/ab/abcdef", "locks/x-1.lock", "a_b.c-d"] {
            assert!(ObjectKey::new(good).is_ok(), "{good:?} must be accepted");
        }
    }
}
