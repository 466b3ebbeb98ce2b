//! The backup-location resource on the wire: what `GET /api/v1/location` shows ([`LocationView`];
//! write-only fields appear only as `*_set`), what `PUT` may change ([`LocationUpdate`]), and the
//! certificate as shown ([`CertificateInfo`], never the certificate itself). Also the settings'
//! defaults and ranges, which the view's defaults and the controller's validation share, and the
//! pure check of a location path ([`validate_path`]).

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa::ToSchema;

pub const DEFAULT_FREQUENCY_HOURS: u32 = 12;
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
pub const FREQUENCY_RANGE: (u32, u32) = (1, 24);
pub const RETENTION_RANGE: (u32, u32) = (1, 90);
pub const DEFAULT_VERIFY_EVERY_HOURS: u32 = 24;
/// From hourly to every 30 days.
pub const VERIFY_EVERY_RANGE: (u32, u32) = (1, 720);
pub const DEFAULT_VERIFY_SAMPLE_PERCENT: u32 = 10;
pub const VERIFY_SAMPLE_RANGE: (u32, u32) = (1, 100);

/// The serde default of `verify_every_hours`.
pub fn default_verify_every() -> u32 {
    DEFAULT_VERIFY_EVERY_HOURS
}

/// The serde default of `verify_sample_percent`.
pub fn default_verify_sample() -> u32 {
    DEFAULT_VERIFY_SAMPLE_PERCENT
}

/// What the API returns for a certificate: never the certificate itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertificateInfo {
    pub thumbprint: String,
    pub subject: String,
    /// When the certificate expires: Unix seconds (an integer, like every `*_at` time of the
    /// API's records); one instant, one representation.
    pub not_after: i64,
    pub key_bits: usize,
}

/// The location as shown by `GET /api/v1/location`. Write-only fields appear only as `*_set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LocationView {
    pub path: Option<String>,
    pub username: Option<String>,
    pub password_set: bool,
    /// The maintenance credential's user (an S3 access key id) that retention and prune use
    /// instead of the location's writer key; `None`: they use the writer key.
    #[serde(default)]
    pub maintenance_username: Option<String>,
    /// Whether the maintenance credential's secret is stored (write-only: never returned).
    #[serde(default)]
    pub maintenance_password_set: bool,
    pub certificate: Option<CertificateInfo>,
    pub legacy_key_set: bool,
    pub encryption_mode: Option<String>,
    pub frequency_hours: u32,
    pub retention_days: u32,
    pub scheduler_enabled: bool,
    pub available_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// Unix seconds, as every time of the API.
    pub next_backup_time: Option<i64>,
    /// Unix seconds.
    pub last_backup_time: Option<i64>,
    /// Unix seconds.
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default = "default_verify_every")]
    pub verify_every_hours: u32,
    #[serde(default = "default_verify_sample")]
    pub verify_sample_percent: u32,
}

/// A partial update (`PUT /api/v1/location`): absent fields are left unchanged.
// `Debug` never shows the password or the legacy key: they are `SecretText`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationUpdate {
    /// A UNC path (`\\host.fqdn\share\folder`), `smb://host/share/folder`, or an absolute
    /// local folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Write-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, write_only)]
    pub password: Option<SecretText>,
    /// An S3 location's maintenance credential: the access key id that retention and prune use
    /// (the bucket owner of the ransomware-resistant setup). Needs `maintenance_password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_username: Option<String>,
    /// Write-only: the maintenance credential's secret access key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, write_only)]
    pub maintenance_password: Option<SecretText>,
    /// Delete the stored maintenance credential (retention and prune use the writer key again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maintenance_clear: bool,
    /// A `.cer`: base64 of its DER or PEM bytes, or PEM text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Write-only: the legacy key file's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, write_only)]
    pub legacy_key: Option<SecretText>,
    /// Hours between scheduled backups (1–24).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_hours: Option<i64>,
    /// Days a backup is kept (1–90).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler_enabled: Option<bool>,
    /// Hours between scheduled verifications of the packs on the share (1–720).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_every_hours: Option<i64>,
    /// Share of the packs each verification reads, in percent (1–100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_sample_percent: Option<i64>,
    /// Apply a retention change even though it deletes existing backups.
    #[serde(default)]
    pub confirm: bool,
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A secret value (a password, a key file's text): its `Debug` is redacted and its memory is zeroed
/// when dropped. It serializes as its plain text so a client can send it; the controller never
/// serializes one (responses carry only `*_set` flags).
#[derive(
    Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(value: String) -> SecretText {
        SecretText(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretText {
    fn from(value: String) -> SecretText {
        SecretText(value)
    }
}

impl From<&str> for SecretText {
    fn from(value: &str) -> SecretText {
        SecretText(value.to_string())
    }
}

/// A request field refused by a check of this crate: which field, and why (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &str, message: String) -> Self {
        Invalid {
            field: field.into(),
            message,
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Invalid {}

/// Checks a location path; returns warnings (an IP address instead of an FQDN).
pub fn validate_path(p: &str) -> Result<Vec<String>, Invalid> {
    let bad = |m: String| Err(Invalid::new("path", m));
    if p.trim().is_empty() {
        return bad("must not be empty".into());
    }
    let unc = match p.strip_prefix("\\\\") {
        Some(rest) => Some(rest.split('\\').collect::<Vec<_>>()),
        None => p
            .strip_prefix("smb://")
            .or_else(|| p.strip_prefix("//"))
            .map(|rest| rest.split('/').collect::<Vec<_>>()),
    };
    let Some(parts) = unc else {
        if !p.starts_with('/') {
            return bad(format!(
                "{p:?} is neither a UNC path (\\\\host.fqdn\\share\\folder) nor an absolute local folder"
            ));
        }
        return Ok(Vec::new());
    };
    let host = parts.first().copied().unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    if host.is_empty() || parts.len() < 2 || parts[1].is_empty() {
        return bad(format!(
            "malformed UNC path {p:?}: expected \\\\host.fqdn\\share[\\folder]"
        ));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(vec![format!(
            "path: {host} is an IP address; an FQDN is recommended (an IP is accepted only where names cannot resolve)"
        )]);
    }
    if !host.contains('.') {
        return bad(format!(
            "single-label host {host:?}: use the fully qualified domain name of the file server (or its IP address where names cannot resolve)"
        ));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return bad(format!("host {host:?} is not a valid DNS name"));
    }
    Ok(Vec::new())
}
