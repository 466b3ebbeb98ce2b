//! Storage error kinds. They are part of the storage API: the engine decides what to retry from
//! `transient`, and the controller turns [`AlertClass`] into the five operator alerts of the product
//! brief. Classification happens once, in the backend that sees the native error.

use std::fmt;

/// What went wrong, as far as the caller needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The object exists and the operation required that it did not.
    AlreadyExists,
    /// The share or disk is full, or a quota was hit.
    Capacity,
    /// The server cannot be reached, or the connection was lost or timed out.
    Connectivity,
    /// The operation did not finish within its per-operation bound ([`crate::TimeoutStorage`]): a
    /// server or mount that accepted the request and went silent. Transient; alert class
    /// Connectivity.
    TimedOut,
    /// The location (host, share, folder) cannot be resolved or does not exist.
    Path,
    /// The credentials were rejected, or access was denied.
    Authentication,
    /// The request itself was wrong (bad key, read past the end).
    Invalid,
    /// The object is under an object-lock retention or legal hold that has not expired: the store
    /// refuses to delete it or to shorten its lock. Expected on WORM storage; not a fault.
    Locked,
    /// The backend does not offer the operation (object lock on a local folder or SMB share).
    Unsupported,
    /// Anything else.
    Other,
}

/// The five operator-facing alert classes of the product brief.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertClass {
    Capacity,
    Connectivity,
    Path,
    Authentication,
    General,
}

impl AlertClass {
    /// Stable lower-case name used in JSON, logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertClass::Capacity => "capacity",
            AlertClass::Connectivity => "connectivity",
            AlertClass::Path => "path",
            AlertClass::Authentication => "authentication",
            AlertClass::General => "general",
        }
    }

    /// The alert title, verbatim from the product brief.
    pub fn title(self) -> &'static str {
        match self {
            AlertClass::Capacity => "Backup failed because the file share is out of capacity.",
            AlertClass::Connectivity => "Backup failed due to connectivity problems.",
            AlertClass::Path => "Backup failed due to a fault in the path.",
            AlertClass::Authentication => "Backup failed due to authentication issue.",
            AlertClass::General => "Backup failed due to a general fault.",
        }
    }

    /// The alert description, verbatim from the product brief.
    pub fn description(self) -> &'static str {
        match self {
            AlertClass::Capacity => "File share is out of capacity and backup controller can't export backup files to the location.",
            AlertClass::Connectivity => "Network between the controller and the file share is experiencing issues.",
            AlertClass::Path => "The file share path can't be resolved.",
            AlertClass::Authentication => "There might be an issue with the credentials or a network issue that impacts authentication.",
            AlertClass::General => "The failed request could be due to an intermittent issue.",
        }
    }

    /// The remediation, verbatim from the product brief.
    pub fn remediation(self) -> &'static str {
        match self {
            AlertClass::Capacity => "Add more storage capacity and try back up again. Delete existing backups (starting from oldest first) to free up space.",
            AlertClass::Connectivity => "Address the network issue and try backup again.",
            AlertClass::Path => "Map the share from a different computer to ensure the share is accessible. You may need to update the path if it's no longer valid.",
            AlertClass::Authentication => "Map the share from a different computer to ensure the share is accessible. You may need to update credentials if they're no longer valid.",
            AlertClass::General => "Try to back up again. Call support.",
        }
    }
}

impl fmt::Display for AlertClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A storage failure with its kind, the operation and the object it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {kind:?}: {message}", key.as_deref().unwrap_or("(location)"))]
pub struct StorageError {
    pub kind: ErrorKind,
    /// True when retrying the same operation may succeed (a dropped connection, a timeout, a busy
    /// server). Only [`crate::RetryStorage`] acts on it.
    pub transient: bool,
    pub op: &'static str,
    pub key: Option<String>,
    pub message: String,
}

impl StorageError {
    pub fn new(
        kind: ErrorKind,
        op: &'static str,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        StorageError {
            kind,
            transient: false,
            op,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    pub fn not_found(op: &'static str, key: &str) -> Self {
        Self::new(ErrorKind::NotFound, op, Some(key), "object not found")
    }

    /// The operation is not offered by this backend (see [`ErrorKind::Unsupported`]).
    pub fn unsupported(op: &'static str, key: Option<&str>) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            op,
            key,
            "this storage has no object lock",
        )
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// The operator alert class of this error.
    pub fn class(&self) -> AlertClass {
        match self.kind {
            ErrorKind::Capacity => AlertClass::Capacity,
            ErrorKind::Connectivity | ErrorKind::TimedOut => AlertClass::Connectivity,
            ErrorKind::Path => AlertClass::Path,
            ErrorKind::Authentication => AlertClass::Authentication,
            ErrorKind::NotFound
            | ErrorKind::AlreadyExists
            | ErrorKind::Invalid
            | ErrorKind::Locked
            | ErrorKind::Unsupported
            | ErrorKind::Other => AlertClass::General,
        }
    }

    /// Classifies an OS error from a local filesystem operation.
    pub fn from_io(op: &'static str, key: Option<&str>, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::Authentication,
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => ErrorKind::Capacity,
            K::TimedOut
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe => ErrorKind::Connectivity,
            K::InvalidInput => ErrorKind::Invalid,
            _ => match err.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::Capacity,
                Some(libc::EACCES) | Some(libc::EPERM) => ErrorKind::Authentication,
                Some(libc::EHOSTDOWN)
                | Some(libc::EHOSTUNREACH)
                | Some(libc::ENETDOWN)
                | Some(libc::ENETUNREACH) => ErrorKind::Connectivity,
                _ => ErrorKind::Other,
            },
        };
        let transient = matches!(err.kind(), K::Interrupted | K::TimedOut | K::WouldBlock);
        StorageError {
            kind,
            transient,
            op,
            key: key.map(str::to_owned),
            message: err.to_string(),
        }
    }
}
