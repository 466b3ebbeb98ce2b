//! Errors of the repository layer. Every variant says which object or key it concerns, so a message
//! can name it; none carries secret material.

use ibs_storage::StorageError;

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// Transparent: the storage error names its operation, object and kind, and a prefix here
    /// would print it twice in an error chain (`{:#}`).
    #[error(transparent)]
    Storage(#[from] StorageError),

    #[error("{location} is not an ibs repository (no MASBackup/config object); run `ibs repo init` first")]
    NotARepository { location: String },

    #[error("{object} has format version {found}; this ibs reads version {supported} only — upgrade ibs")]
    UnsupportedVersion {
        object: String,
        found: u32,
        supported: u32,
    },

    #[error("{object} is damaged: {detail}")]
    Corrupt { object: String, detail: String },

    #[error(transparent)]
    Key(#[from] ibs_keys::KeyError),

    #[error(
        "{what} is encrypted for certificate {expected}, and no .pfx given holds it \
         (given: {provided}); supply the .pfx of certificate {expected}"
    )]
    WrongCertificate {
        what: String,
        expected: String,
        provided: String,
    },

    #[error("{0}")]
    MissingKey(MissingKey),

    #[error("the key file does not belong to this repository (key check failed)")]
    WrongKeyFile,

    #[error("the writer state does not belong to this repository (metadata key check failed)")]
    StateMismatch,

    #[error("repository is locked: {holder}")]
    Locked { holder: String },

    #[error(
        "the repository lock of {operation} was lost ({reason}); the operation stopped before its \
         next write. Run `ibs repo check` before relying on what it wrote"
    )]
    LockLost { operation: String, reason: String },

    #[error("{location} already holds an ibs repository")]
    AlreadyARepository { location: String },

    #[error("pack size {size} bytes is out of range ({} MiB to {} MiB)", min >> 20, max >> 20)]
    PackSizeOutOfRange { size: u32, min: u32, max: u32 },

    #[error("{id:?} is not a backup id (expected e.g. 20261126T135000Z-0a1b2c3d)")]
    NotABackupId { id: String },

    #[error("backup {id} does not exist in this repository")]
    NoSuchBackup { id: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// A key the operation needs and was not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MissingKey {
    /// A data key is wrapped for a certificate, and only a legacy key file was given.
    #[error("data key {id} is wrapped for a certificate; restoring it needs the .pfx (--pfx), not the key file")]
    PfxForDataKey { id: String },
    /// Decrypting contents was asked for with neither a .pfx nor a key file.
    #[error("decrypting backup contents needs the .pfx (private key) of the backup certificate; the writer state \
             holds only the public certificate, which cannot decrypt. Pass --pfx FILE (or --key-file in legacy-key mode)")]
    PfxToDecrypt,
}

impl RepoError {
    pub fn corrupt(object: impl Into<String>, detail: impl Into<String>) -> Self {
        RepoError::Corrupt {
            object: object.into(),
            detail: detail.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RepoError::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this is storage's `NotFound`: an object listed a moment ago and gone since (deleted
    /// by a concurrent forget or prune, or a released lock) when the caller only listed it.
    pub fn is_not_found(&self) -> bool {
        self.storage().is_some_and(|e| e.is_not_found())
    }

    /// The storage error inside, if this is one (for alert classification).
    pub fn storage(&self) -> Option<&StorageError> {
        match self {
            RepoError::Storage(e) => Some(e),
            _ => None,
        }
    }
}
