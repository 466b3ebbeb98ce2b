//! The client's typed error and its mapping onto `ibs_storage::ErrorKind`. Classification happens here
//! once, from typed facts (an `NtStatus`, an `io::ErrorKind`, a timeout), never from message text.

use crate::ntstatus::NtStatus;
use ibs_storage::{ErrorKind, StorageError};
use std::io;
use std::time::Duration;

/// Which protocol step failed; it decides how an access-denied or not-found status is classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Negotiate,
    SessionSetup,
    TreeConnect,
    /// An operation on an object below the repository root.
    Object,
    /// An operation on the configured root folder itself.
    Root,
}

/// Every failure of the SMB client.
#[derive(Debug, thiserror::Error)]
pub enum SmbError {
    /// The server answered with an error status.
    #[error("{op} failed with {status}")]
    Status {
        op: &'static str,
        stage: Stage,
        status: NtStatus,
    },
    #[error("cannot resolve host {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("{op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// The connection died (reset, EOF, write failure) or was torn down after a timeout.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The server sent something this client cannot accept (malformed, bad signature, unsupported).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A reply that is not what the server sent: unsigned or badly signed where a signature is
    /// required, a TRANSFORM_HEADER that fails to decrypt, a negotiation that VALIDATE_NEGOTIATE or
    /// the session-setup signature proves altered. Someone or something on the network path changed
    /// the traffic; the connection is dropped and never used again.
    #[error("{op}: reply failed the integrity check ({reason}); the connection was dropped")]
    Integrity { op: &'static str, reason: String },
    /// A sub-folder the listing saw was gone when the listing opened it: the share changed under
    /// the listing, which would otherwise come back shorter than the share.
    #[error("folder {path} vanished during the listing; list again")]
    ListingChanged { path: String },
    /// Authentication could not even be attempted (no NTLM offered, guest session refused).
    #[error("authentication: {0}")]
    Auth(String),
    /// A local precondition (read past the end, bad name).
    #[error("{0}")]
    Invalid(String),
}

pub type SmbResult<T> = Result<T, SmbError>;

impl SmbError {
    pub fn status(op: &'static str, stage: Stage, status: NtStatus) -> Self {
        SmbError::Status { op, stage, status }
    }

    pub fn integrity(op: &'static str, reason: impl Into<String>) -> Self {
        SmbError::Integrity {
            op,
            reason: reason.into(),
        }
    }

    /// The NTSTATUS if the server sent one.
    pub fn nt_status(&self) -> Option<NtStatus> {
        match self {
            SmbError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the connection can no longer be used and the next call must reconnect.
    pub fn breaks_connection(&self) -> bool {
        match self {
            SmbError::Timeout { .. }
            | SmbError::Disconnected(_)
            | SmbError::Protocol(_)
            | SmbError::Integrity { .. } => true,
            SmbError::Status { status, .. } => status.is_session_lost(),
            _ => false,
        }
    }

    /// The storage error kind and whether retrying may help.
    pub fn classify(&self) -> (ErrorKind, bool) {
        match self {
            SmbError::Resolve { .. } => (ErrorKind::Connectivity, false),
            SmbError::Connect { source, .. } => {
                let transient = matches!(
                    source.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                );
                (ErrorKind::Connectivity, transient)
            }
            SmbError::Timeout { .. } | SmbError::Disconnected(_) => (ErrorKind::Connectivity, true),
            SmbError::Protocol(_) => (ErrorKind::Other, true),
            // The network path, not the credentials, is at fault (ADR 0011): Connectivity. A fresh
            // connection may get through a flaky middlebox, so it is worth a retry; a persistent
            // attacker makes every retry fail the same way.
            SmbError::Integrity { .. } => (ErrorKind::Connectivity, true),
            SmbError::ListingChanged { .. } => (ErrorKind::Other, true),
            SmbError::Auth(_) => (ErrorKind::Authentication, false),
            SmbError::Invalid(_) => (ErrorKind::Invalid, false),
            SmbError::Status { stage, status, .. } => classify_status(*stage, *status),
        }
    }

    /// Converts into the storage error, for operation `op` on `key` (None = the location itself).
    pub fn into_storage(self, op: &'static str, key: Option<&str>) -> StorageError {
        let (kind, transient) = self.classify();
        let mut e = StorageError::new(kind, op, key, self.to_string());
        e.transient = transient;
        e
    }
}

fn classify_status(stage: Stage, s: NtStatus) -> (ErrorKind, bool) {
    if s.is_session_lost() {
        return (ErrorKind::Connectivity, true);
    }
    if s.is_logon_problem() {
        return (ErrorKind::Authentication, false);
    }
    match s {
        NtStatus::ACCESS_DENIED | NtStatus::NETWORK_ACCESS_DENIED => {
            (ErrorKind::Authentication, false)
        }
        NtStatus::BAD_NETWORK_NAME | NtStatus::BAD_NETWORK_PATH => (ErrorKind::Path, false),
        NtStatus::OBJECT_NAME_NOT_FOUND
        | NtStatus::OBJECT_PATH_NOT_FOUND
        | NtStatus::NOT_A_DIRECTORY => match stage {
            Stage::Object => (ErrorKind::NotFound, false),
            _ => (ErrorKind::Path, false),
        },
        NtStatus::DISK_FULL | NtStatus::QUOTA_EXCEEDED => (ErrorKind::Capacity, false),
        NtStatus::OBJECT_NAME_COLLISION => (ErrorKind::AlreadyExists, false),
        // DELETE_PENDING: another client is deleting the object and still holds it open (the name
        // stays taken until it closes): retried, a read then finds it gone and a create succeeds.
        NtStatus::IO_TIMEOUT
        | NtStatus::INSUFFICIENT_RESOURCES
        | NtStatus::SHARING_VIOLATION
        | NtStatus::DELETE_PENDING => (ErrorKind::Other, true),
        _ => (ErrorKind::Other, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(stage: Stage, s: NtStatus) -> ErrorKind {
        SmbError::status("op", stage, s).classify().0
    }

    #[test]
    fn statuses_map_to_the_five_classes() {
        assert_eq!(
            k(Stage::SessionSetup, NtStatus::LOGON_FAILURE),
            ErrorKind::Authentication
        );
        assert_eq!(
            k(Stage::SessionSetup, NtStatus::ACCOUNT_DISABLED),
            ErrorKind::Authentication
        );
        assert_eq!(
            k(Stage::TreeConnect, NtStatus::ACCESS_DENIED),
            ErrorKind::Authentication
        );
        assert_eq!(
            k(Stage::Object, NtStatus::ACCESS_DENIED),
            ErrorKind::Authentication
        );
        assert_eq!(
            k(Stage::TreeConnect, NtStatus::BAD_NETWORK_NAME),
            ErrorKind::Path
        );
        assert_eq!(
            k(Stage::Root, NtStatus::OBJECT_PATH_NOT_FOUND),
            ErrorKind::Path
        );
        assert_eq!(
            k(Stage::Object, NtStatus::OBJECT_PATH_NOT_FOUND),
            ErrorKind::NotFound
        );
        assert_eq!(
            k(Stage::Object, NtStatus::OBJECT_NAME_NOT_FOUND),
            ErrorKind::NotFound
        );
        assert_eq!(k(Stage::Object, NtStatus::DISK_FULL), ErrorKind::Capacity);
        assert_eq!(
            k(Stage::Object, NtStatus::QUOTA_EXCEEDED),
            ErrorKind::Capacity
        );
        assert_eq!(
            k(Stage::Object, NtStatus::OBJECT_NAME_COLLISION),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            k(Stage::Object, NtStatus::NETWORK_NAME_DELETED),
            ErrorKind::Connectivity
        );
        assert_eq!(
            k(Stage::Object, NtStatus::USER_SESSION_DELETED),
            ErrorKind::Connectivity
        );
        assert_eq!(
            k(Stage::Object, NtStatus::INVALID_PARAMETER),
            ErrorKind::Other
        );
        let pending = SmbError::status("create", Stage::Object, NtStatus::DELETE_PENDING);
        assert_eq!(pending.classify(), (ErrorKind::Other, true));
        let refused = SmbError::Connect {
            addr: "x".into(),
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(refused.classify(), (ErrorKind::Connectivity, false));
        let t = SmbError::Timeout {
            op: "read",
            after: Duration::from_secs(1),
        };
        assert_eq!(t.classify(), (ErrorKind::Connectivity, true));
        let forged = SmbError::integrity("query directory", "unsigned reply");
        assert_eq!(forged.classify(), (ErrorKind::Connectivity, true));
        assert!(forged.breaks_connection());
        assert!(forged.to_string().contains("integrity check"));
    }
}
