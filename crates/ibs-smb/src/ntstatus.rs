//! NTSTATUS codes as a typed value. The client keeps the server's status typed from the wire to the
//! final error so classification never parses strings.

use std::fmt;

/// A 32-bit NTSTATUS as sent by the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtStatus(pub u32);

macro_rules! statuses {
    ($($name:ident = $val:expr),* $(,)?) => {
        impl NtStatus {
            $(pub const $name: NtStatus = NtStatus($val);)*

            /// The symbolic name, if known.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(concat!("STATUS_", stringify!($name))),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    SUCCESS = 0x0000_0000,
    PENDING = 0x0000_0103,
    BUFFER_OVERFLOW = 0x8000_0005,
    NO_MORE_FILES = 0x8000_0006,
    INVALID_HANDLE = 0xC000_0008,
    INVALID_PARAMETER = 0xC000_000D,
    INVALID_DEVICE_REQUEST = 0xC000_0010,
    END_OF_FILE = 0xC000_0011,
    MORE_PROCESSING_REQUIRED = 0xC000_0016,
    ACCESS_DENIED = 0xC000_0022,
    OBJECT_NAME_INVALID = 0xC000_0033,
    OBJECT_NAME_NOT_FOUND = 0xC000_0034,
    OBJECT_NAME_COLLISION = 0xC000_0035,
    OBJECT_PATH_NOT_FOUND = 0xC000_003A,
    SHARING_VIOLATION = 0xC000_0043,
    QUOTA_EXCEEDED = 0xC000_0044,
    DELETE_PENDING = 0xC000_0056,
    NO_SUCH_USER = 0xC000_0064,
    WRONG_PASSWORD = 0xC000_006A,
    LOGON_FAILURE = 0xC000_006D,
    ACCOUNT_RESTRICTION = 0xC000_006E,
    INVALID_LOGON_HOURS = 0xC000_006F,
    INVALID_WORKSTATION = 0xC000_0070,
    PASSWORD_EXPIRED = 0xC000_0071,
    ACCOUNT_DISABLED = 0xC000_0072,
    DISK_FULL = 0xC000_007F,
    INSUFFICIENT_RESOURCES = 0xC000_009A,
    FILE_IS_A_DIRECTORY = 0xC000_00BA,
    NOT_SUPPORTED = 0xC000_00BB,
    IO_TIMEOUT = 0xC000_00B5,
    BAD_NETWORK_PATH = 0xC000_00BE,
    NETWORK_NAME_DELETED = 0xC000_00C9,
    NETWORK_ACCESS_DENIED = 0xC000_00CA,
    BAD_NETWORK_NAME = 0xC000_00CC,
    DIRECTORY_NOT_EMPTY = 0xC000_0101,
    NOT_A_DIRECTORY = 0xC000_0103,
    CANCELLED = 0xC000_0120,
    FILE_CLOSED = 0xC000_0128,
    ACCOUNT_EXPIRED = 0xC000_0193,
    USER_SESSION_DELETED = 0xC000_0203,
    CONNECTION_DISCONNECTED = 0xC000_020C,
    CONNECTION_RESET = 0xC000_020D,
    PASSWORD_MUST_CHANGE = 0xC000_0224,
    ACCOUNT_LOCKED_OUT = 0xC000_0234,
    NETWORK_SESSION_EXPIRED = 0xC000_035C,
}

impl NtStatus {
    /// Error severity (the top two bits are 0b11).
    pub fn is_error(self) -> bool {
        self.0 >> 30 == 3
    }

    /// Logon failures and every STATUS_ACCOUNT_* / password state.
    pub fn is_logon_problem(self) -> bool {
        matches!(
            self,
            NtStatus::LOGON_FAILURE
                | NtStatus::NO_SUCH_USER
                | NtStatus::WRONG_PASSWORD
                | NtStatus::ACCOUNT_RESTRICTION
                | NtStatus::INVALID_LOGON_HOURS
                | NtStatus::INVALID_WORKSTATION
                | NtStatus::PASSWORD_EXPIRED
                | NtStatus::ACCOUNT_DISABLED
                | NtStatus::ACCOUNT_EXPIRED
                | NtStatus::PASSWORD_MUST_CHANGE
                | NtStatus::ACCOUNT_LOCKED_OUT
        )
    }

    /// The session or tree is gone server-side: reconnecting may help.
    pub fn is_session_lost(self) -> bool {
        matches!(
            self,
            NtStatus::NETWORK_NAME_DELETED
                | NtStatus::USER_SESSION_DELETED
                | NtStatus::NETWORK_SESSION_EXPIRED
                | NtStatus::CONNECTION_DISCONNECTED
                | NtStatus::CONNECTION_RESET
        )
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (0x{:08x})", self.0),
            None => write!(f, "NTSTATUS 0x{:08x}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes() {
        assert_eq!(
            NtStatus(0xC000_006D).to_string(),
            "STATUS_LOGON_FAILURE (0xc000006d)"
        );
        assert!(NtStatus::DISK_FULL.is_error());
        assert!(!NtStatus::PENDING.is_error());
        assert!(NtStatus::ACCOUNT_LOCKED_OUT.is_logon_problem());
        assert_eq!(NtStatus(0x1234).to_string(), "NTSTATUS 0x00001234");
    }
}
