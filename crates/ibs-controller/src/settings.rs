//! The backup-location resource: what is stored, what the API shows, what an update may contain,
//! and the pure validation of an update (every 400 of the location API comes from here, with the
//! field it concerns). Applying an update (accessibility test, retention confirmation, audit) is in
//! [`crate::controller`].
//!
//! Secrets (share password, maintenance secret, legacy key) are stored sealed by [`crate::secretbox`] and never leave
//! this crate except to open storage; the certificate is public but only its thumbprint, subject and
//! expiry are shown.

use crate::model::{
    DEFAULT_FREQUENCY_HOURS, DEFAULT_RETENTION_DAYS, DEFAULT_VERIFY_EVERY_HOURS,
    DEFAULT_VERIFY_SAMPLE_PERCENT, FREQUENCY_RANGE, RETENTION_RANGE, VERIFY_EVERY_RANGE,
    VERIFY_SAMPLE_RANGE,
};
use crate::{ControllerError, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ibs_keys::{Certificate, LegacyKey};
use serde::{Deserialize, Serialize};

pub const META_KEY: &str = "location";

/// The location settings as persisted (meta key `location`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLocation {
    pub path: Option<String>,
    pub username: Option<String>,
    pub password_sealed: Option<String>,
    /// Base64 DER of the encryption certificate (public key only).
    pub certificate_der: Option<String>,
    pub legacy_key_sealed: Option<String>,
    pub frequency_hours: u32,
    pub retention_days: u32,
    pub scheduler_enabled: bool,
    pub updated_at: i64,
    /// Hours between scheduled verifications (absent in settings stored before verification).
    #[serde(default = "default_verify_every")]
    pub verify_every_hours: u32,
    /// Share of the packs each verification reads, in percent.
    #[serde(default = "default_verify_sample")]
    pub verify_sample_percent: u32,
    /// An S3 location's maintenance credential (ADR 0040): the access key id retention and prune
    /// use instead of `username`; absent in settings stored before it existed.
    #[serde(default)]
    pub maintenance_username: Option<String>,
    /// Its secret, sealed with purpose [`MAINTENANCE_PURPOSE`].
    #[serde(default)]
    pub maintenance_password_sealed: Option<String>,
}

use crate::maintenance_key::validate_maintenance;
pub use crate::maintenance_key::{MaintenanceChange, MAINTENANCE_PURPOSE, MAINTENANCE_WARNING};

use ibs_types::location::{default_verify_every, default_verify_sample};

impl Default for StoredLocation {
    fn default() -> Self {
        StoredLocation {
            path: None,
            username: None,
            password_sealed: None,
            certificate_der: None,
            legacy_key_sealed: None,
            frequency_hours: DEFAULT_FREQUENCY_HOURS,
            retention_days: DEFAULT_RETENTION_DAYS,
            scheduler_enabled: true,
            updated_at: 0,
            verify_every_hours: DEFAULT_VERIFY_EVERY_HOURS,
            verify_sample_percent: DEFAULT_VERIFY_SAMPLE_PERCENT,
            maintenance_username: None,
            maintenance_password_sealed: None,
        }
    }
}

impl StoredLocation {
    /// A share and an encryption (certificate or legacy key) are set: scheduled backups can run.
    pub fn is_configured(&self) -> bool {
        self.path.is_some() && (self.certificate_der.is_some() || self.legacy_key_sealed.is_some())
    }

    /// What clearing the location leaves at `now`: the defaults (no share, no credentials, no
    /// encryption) with automatic backups off.
    pub fn cleared(now: i64) -> StoredLocation {
        StoredLocation {
            scheduler_enabled: false,
            updated_at: now,
            ..StoredLocation::default()
        }
    }

    /// The names of the settings that differ in `next` (for the audit log; never values).
    pub fn changed_fields(&self, next: &StoredLocation) -> Vec<String> {
        [
            ("path", self.path != next.path),
            ("username", self.username != next.username),
            ("password", self.password_sealed != next.password_sealed),
            (
                "maintenance_username",
                self.maintenance_username != next.maintenance_username,
            ),
            (
                "maintenance_password",
                self.maintenance_password_sealed != next.maintenance_password_sealed,
            ),
            ("certificate", self.certificate_der != next.certificate_der),
            (
                "legacy_key",
                self.legacy_key_sealed != next.legacy_key_sealed,
            ),
            (
                "frequency_hours",
                self.frequency_hours != next.frequency_hours,
            ),
            ("retention_days", self.retention_days != next.retention_days),
            (
                "scheduler_enabled",
                self.scheduler_enabled != next.scheduler_enabled,
            ),
            (
                "verify_every_hours",
                self.verify_every_hours != next.verify_every_hours,
            ),
            (
                "verify_sample_percent",
                self.verify_sample_percent != next.verify_sample_percent,
            ),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name.to_string())
        .collect()
    }

    pub fn certificate(&self) -> Option<Certificate> {
        let der = B64.decode(self.certificate_der.as_deref()?).ok()?;
        Certificate::from_bytes(&der).ok()
    }
}

pub use ibs_types::location::{CertificateInfo, LocationUpdate, LocationView, SecretText};

/// What the API shows of a certificate: never the certificate itself.
pub fn certificate_info(c: &Certificate) -> CertificateInfo {
    CertificateInfo {
        thumbprint: c.thumbprint().into(),
        subject: c.subject().into(),
        not_after: c.not_after(),
        key_bits: c.key_bits(),
    }
}

/// An update that passed validation: what to change, and the names of the changed fields.
#[derive(Debug, Clone)]
pub struct ValidatedUpdate {
    pub path: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretText>,
    pub maintenance: Option<MaintenanceChange>,
    pub certificate: Option<Certificate>,
    pub legacy_key: Option<SecretText>,
    pub frequency_hours: Option<u32>,
    pub retention_days: Option<u32>,
    pub scheduler_enabled: Option<bool>,
    pub verify_every_hours: Option<u32>,
    pub verify_sample_percent: Option<u32>,
    pub confirm: bool,
    /// Changed fields, for the audit log (names only).
    pub fields: Vec<String>,
    pub warnings: Vec<String>,
}

impl ValidatedUpdate {
    /// True when the share must pass the accessibility test before the change is saved.
    pub fn touches_share(&self) -> bool {
        self.path.is_some() || self.username.is_some() || self.password.is_some()
    }

    /// True when the maintenance credential must pass the accessibility test before the change
    /// is saved (it is set, or the location it serves changes).
    pub fn touches_maintenance(&self) -> bool {
        matches!(self.maintenance, Some(MaintenanceChange::Set { .. })) || self.path.is_some()
    }
}

/// Checks a location path; returns warnings (an IP address instead of an FQDN). The rule is
/// [`ibs_types::location::validate_path`], or [`ibs_location::S3Location::parse`] for an S3
/// location; a refusal becomes [`ControllerError::Invalid`].
pub fn validate_path(p: &str) -> Result<Vec<String>> {
    // S3 locations follow the one parser that also opens them.
    if ibs_location::is_s3(p) {
        return ibs_location::S3Location::parse(p)
            .map(|_| Vec::new())
            .map_err(|e| ControllerError::invalid("path", e.to_string()));
    }
    ibs_types::location::validate_path(p).map_err(|e| ControllerError::invalid(e.field, e.message))
}

fn in_range(field: &str, v: i64, (lo, hi): (u32, u32)) -> Result<u32> {
    if v < lo as i64 || v > hi as i64 {
        return Err(ControllerError::invalid(
            field,
            format!("{v} is out of range: accepted {lo}–{hi}"),
        ));
    }
    Ok(v as u32)
}

/// Parses a certificate upload: base64 of DER or PEM, or PEM text.
pub fn parse_certificate(text: &str) -> Result<Certificate> {
    let bytes = if text.trim_start().starts_with("-----BEGIN") {
        text.as_bytes().to_vec()
    } else {
        B64.decode(text.trim()).map_err(|_| {
            ControllerError::invalid(
                "certificate",
                "not base64 (send the .cer bytes base64-encoded, or PEM text)",
            )
        })?
    };
    if holds_private_key(&bytes) {
        return Err(ControllerError::invalid(
            "certificate",
            "this is a private key (a .pfx/PKCS#12 file or a PEM private key), not a certificate; \
             upload the certificate (.cer) only and keep the .pfx and its password off this host",
        ));
    }
    Certificate::from_bytes(&bytes)
        .map_err(|e| ControllerError::invalid("certificate", e.to_string()))
}

/// Whether an upload meant as a certificate is a private key instead: a PEM private-key block, or
/// a DER PKCS#12 file (a SEQUENCE whose first element is `INTEGER 3`, the PFX version, where a
/// certificate's first element is its to-be-signed SEQUENCE).
pub fn holds_private_key(bytes: &[u8]) -> bool {
    if bytes.windows(11).any(|w| w == b"PRIVATE KEY") {
        return true;
    }
    if bytes.first() != Some(&0x30) || bytes.len() < 2 {
        return false;
    }
    // Skip the outer SEQUENCE's length (short form, or long form of 1–4 bytes).
    let body = match bytes[1] {
        n if n < 0x80 => 2,
        n @ 0x81..=0x84 => 2 + usize::from(n - 0x80),
        _ => return false,
    };
    bytes.get(body..body + 3) == Some(&[0x02, 0x01, 0x03])
}

/// Validates an update against the current settings. Pure: no I/O.
pub fn validate(u: &LocationUpdate, current: &StoredLocation, now: i64) -> Result<ValidatedUpdate> {
    let mut v = ValidatedUpdate {
        path: None,
        username: None,
        password: None,
        maintenance: None,
        certificate: None,
        legacy_key: None,
        frequency_hours: None,
        retention_days: None,
        scheduler_enabled: None,
        verify_every_hours: None,
        verify_sample_percent: None,
        confirm: u.confirm,
        fields: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some(p) = &u.path {
        v.warnings.extend(validate_path(p)?);
        if current.path.as_deref() != Some(p.as_str()) {
            v.path = Some(p.clone());
            v.fields.push("path".into());
        }
    }
    if let Some(name) = &u.username {
        if name.trim().is_empty() {
            return Err(ControllerError::invalid("username", "must not be empty"));
        }
        let same = current.username.as_deref() == Some(name.as_str());
        if u.password.is_none() && (!same || current.password_sealed.is_none()) {
            return Err(ControllerError::invalid(
                "password",
                "a password is required when a username is given (send it in the request body; it is never returned)",
            ));
        }
        if !same {
            v.username = Some(name.clone());
            v.fields.push("username".into());
        }
    }
    if let Some(pw) = &u.password {
        if pw.expose().is_empty() {
            return Err(ControllerError::invalid("password", "must not be empty"));
        }
        if u.username.is_none() && current.username.is_none() {
            return Err(ControllerError::invalid(
                "username",
                "a username is required with a password",
            ));
        }
        v.password = Some(pw.clone());
        v.fields.push("password".into());
    }
    v.maintenance = validate_maintenance(u, current)?;
    match &v.maintenance {
        Some(MaintenanceChange::Set { username, password }) => {
            if current.maintenance_username.as_deref() != Some(username.as_str()) {
                v.fields.push("maintenance_username".into());
            }
            if password.is_some() {
                v.fields.push("maintenance_password".into());
            }
            v.warnings.push(MAINTENANCE_WARNING.into());
        }
        Some(MaintenanceChange::Clear) => {
            if current.maintenance_username.is_some() {
                v.fields.push("maintenance_username".into());
            }
            if current.maintenance_password_sealed.is_some() {
                v.fields.push("maintenance_password".into());
            }
        }
        None => {}
    }
    match (&u.certificate, &u.legacy_key) {
        (Some(_), Some(_)) => {
            return Err(ControllerError::invalid(
                "certificate",
                "give either a certificate or a legacy key, not both",
            ))
        }
        (Some(c), None) => {
            let cert = parse_certificate(c)?;
            if cert.is_expired_at(now) {
                v.warnings.push(format!(
                    "certificate: {} expired on {}",
                    cert.thumbprint(),
                    ibs_repo::clock::rfc3339(cert.not_after())
                ));
            }
            v.certificate = Some(cert);
            v.fields.push("certificate".into());
        }
        (None, Some(k)) => {
            if current.certificate_der.is_some() {
                return Err(ControllerError::invalid(
                    "legacy_key",
                    "switching from a certificate to a legacy key is not allowed (the switch to certificates is one-way)",
                ));
            }
            LegacyKey::from_file_text(k.expose())
                .map_err(|e| ControllerError::invalid("legacy_key", e.to_string()))?;
            v.legacy_key = Some(k.clone());
            v.fields.push("legacy_key".into());
            v.warnings.push(
                "legacy_key: key-based encryption is deprecated; upload a certificate".into(),
            );
        }
        (None, None) => {}
    }
    if let Some(f) = u.frequency_hours {
        let f = in_range("frequency_hours", f, FREQUENCY_RANGE)?;
        if f != current.frequency_hours {
            v.frequency_hours = Some(f);
            v.fields.push("frequency_hours".into());
        }
    }
    if let Some(r) = u.retention_days {
        let r = in_range("retention_days", r, RETENTION_RANGE)?;
        if r != current.retention_days {
            v.retention_days = Some(r);
            v.fields.push("retention_days".into());
        }
    }
    if let Some(s) = u.scheduler_enabled {
        if s != current.scheduler_enabled {
            v.scheduler_enabled = Some(s);
            v.fields.push("scheduler_enabled".into());
        }
    }
    if let Some(h) = u.verify_every_hours {
        let h = in_range("verify_every_hours", h, VERIFY_EVERY_RANGE)?;
        if h != current.verify_every_hours {
            v.verify_every_hours = Some(h);
            v.fields.push("verify_every_hours".into());
        }
    }
    if let Some(p) = u.verify_sample_percent {
        let p = in_range("verify_sample_percent", p, VERIFY_SAMPLE_RANGE)?;
        if p != current.verify_sample_percent {
            v.verify_sample_percent = Some(p);
            v.fields.push("verify_sample_percent".into());
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ControllerError) -> String {
        match e {
            ControllerError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn paths() {
        assert!(validate_path("\\\\files.contoso.com\\backup\\ibs")
            .unwrap()
            .is_empty());
        assert_eq!(validate_path("\\\\10.0.0.5\\backup").unwrap().len(), 1);
        assert!(validate_path("/srv/backups").unwrap().is_empty());
        for bad in [
            "\\\\",
            "\\\\host.fqdn",
            "\\\\host.fqdn\\",
            "\\\\\\share",
            "relative/dir",
            "",
        ] {
            assert_eq!(field_of(validate_path(bad).unwrap_err()), "path", "{bad}");
        }
        let e = validate_path("\\\\fileserver\\backup").unwrap_err();
        assert!(e.to_string().contains("single-label"), "{e}");
    }

    #[test]
    fn ranges_and_password() {
        let cur = StoredLocation::default();
        let u = |f: &str| -> LocationUpdate { serde_json::from_str(f).unwrap() };
        assert_eq!(
            field_of(validate(&u(r#"{"frequency_hours":0}"#), &cur, 0).unwrap_err()),
            "frequency_hours"
        );
        assert_eq!(
            field_of(validate(&u(r#"{"frequency_hours":25}"#), &cur, 0).unwrap_err()),
            "frequency_hours"
        );
        assert_eq!(
            field_of(validate(&u(r#"{"retention_days":91}"#), &cur, 0).unwrap_err()),
            "retention_days"
        );
        assert_eq!(
            field_of(validate(&u(r#"{"username":"D\\u"}"#), &cur, 0).unwrap_err()),
            "password"
        );
        let ok = validate(
            &u(r#"{"frequency_hours":4,"retention_days":14,"path":"/x"}"#),
            &cur,
            0,
        )
        .unwrap();
        assert_eq!(ok.fields, vec!["path", "frequency_hours", "retention_days"]);
        assert!(!format!(
            "{:?}",
            validate(&u(r#"{"username":"u","password":"hunter2"}"#), &cur, 0).unwrap()
        )
        .contains("hunter2"));
    }

    #[test]
    fn clearing_names_the_fields_that_had_a_value() {
        let cur = StoredLocation {
            path: Some("/x".into()),
            username: Some("u".into()),
            password_sealed: Some("sealed".into()),
            ..StoredLocation::default()
        };
        assert_eq!(
            cur.changed_fields(&StoredLocation::cleared(5)),
            ["path", "username", "password", "scheduler_enabled"]
        );
        assert!(StoredLocation::cleared(5)
            .changed_fields(&StoredLocation::cleared(9))
            .is_empty());
    }

    #[test]
    fn debug_of_secret_holding_types_never_shows_the_secret() {
        let u: LocationUpdate = serde_json::from_str(
            r#"{"username":"u","password":"hunter2-pw","legacy_key":"key-text-77"}"#,
        )
        .unwrap();
        let d = format!("{u:?} {u:#?}");
        assert!(
            !d.contains("hunter2-pw") && !d.contains("key-text-77"),
            "{d}"
        );
        let s = SecretText::from("hunter2-pw");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
