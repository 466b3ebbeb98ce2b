//! The maintenance credential of an S3 location (ADR 0040): what an update may do with it and the
//! rules it must pass. Retention and prune use it instead of the writer key
//! ([`crate::context::Credential`]); it is stored sealed (purpose [`MAINTENANCE_PURPOSE`]) in
//! [`crate::settings::StoredLocation`] and never returned.

use crate::settings::{LocationUpdate, SecretText, StoredLocation};
use crate::{ControllerError, Result};

/// The secret box purpose of the maintenance credential's secret.
pub const MAINTENANCE_PURPOSE: &str = "maintenance-password";

/// A change of the maintenance credential (ADR 0040).
#[derive(Debug, Clone)]
pub enum MaintenanceChange {
    /// Store this user and secret (`password: None` keeps the stored secret of the same user).
    Set {
        username: String,
        password: Option<SecretText>,
    },
    /// Delete the stored credential.
    Clear,
}

/// What the location update warns when the controller is given the maintenance credential.
pub const MAINTENANCE_WARNING: &str = "maintenance credential: this controller can now delete backups once their object locks expire (and, in GOVERNANCE mode, bypass locks if the key may); a ransomware-resistant setup keeps the maintenance key off the controller and runs `ibs repo prune` on a trusted host (operator guide, Ransomware-resistant setup)";

/// The maintenance credential part of an update: only for an S3 location (the one given, else
/// the stored one), a user with a secret (the stored secret serves only the same user), and not
/// set and cleared at once.
pub(crate) fn validate_maintenance(
    u: &LocationUpdate,
    current: &StoredLocation,
) -> Result<Option<MaintenanceChange>> {
    let given = u.maintenance_username.is_some() || u.maintenance_password.is_some();
    if u.maintenance_clear {
        if given {
            return Err(ControllerError::invalid(
                "maintenance_clear",
                "give a maintenance credential or clear it, not both",
            ));
        }
        return Ok(Some(MaintenanceChange::Clear));
    }
    if !given {
        return Ok(None);
    }
    let path = u.path.as_deref().or(current.path.as_deref());
    if !path.is_some_and(ibs_location::is_s3) {
        return Err(ControllerError::invalid(
            "maintenance_username",
            "a maintenance credential applies to S3 locations only (s3:// or s3+http://)",
        ));
    }
    if let Some(pw) = &u.maintenance_password {
        if pw.expose().is_empty() {
            return Err(ControllerError::invalid(
                "maintenance_password",
                "must not be empty",
            ));
        }
    }
    let username = match (&u.maintenance_username, &current.maintenance_username) {
        (Some(n), _) if n.trim().is_empty() => {
            return Err(ControllerError::invalid(
                "maintenance_username",
                "must not be empty",
            ))
        }
        (Some(n), _) => n.clone(),
        (None, Some(n)) => n.clone(),
        (None, None) => {
            return Err(ControllerError::invalid(
                "maintenance_username",
                "a maintenance user (access key id) is required with a maintenance secret",
            ))
        }
    };
    let same = current.maintenance_username.as_deref() == Some(username.as_str());
    if u.maintenance_password.is_none() && (!same || current.maintenance_password_sealed.is_none())
    {
        return Err(ControllerError::invalid(
            "maintenance_password",
            "a maintenance secret is required with a maintenance user (send it in the request body; it is never returned)",
        ));
    }
    Ok(Some(MaintenanceChange::Set {
        username,
        password: u.maintenance_password.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::validate;

    fn field_of(e: ControllerError) -> String {
        match e {
            ControllerError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn maintenance_credential_rules() {
        let u = |f: &str| -> LocationUpdate { serde_json::from_str(f).unwrap() };
        let s3 = StoredLocation {
            path: Some("s3+http://127.0.0.1:7480/azs-backups/r".into()),
            ..StoredLocation::default()
        };
        let local = StoredLocation {
            path: Some("/srv/b".into()),
            ..StoredLocation::default()
        };
        let set = r#"{"maintenance_username":"MK","maintenance_password":"msecret-9"}"#;
        let ok = validate(&u(set), &s3, 0).unwrap();
        assert_eq!(ok.fields, ["maintenance_username", "maintenance_password"]);
        assert!(ok.warnings.iter().any(|w| w == MAINTENANCE_WARNING));
        assert!(!format!("{ok:?}").contains("msecret-9"));
        // S3 only: the stored path, or the one given with it.
        assert_eq!(
            field_of(validate(&u(set), &local, 0).unwrap_err()),
            "maintenance_username"
        );
        let moving = r#"{"path":"s3://rgw.contoso.com/azs-backups/r","maintenance_username":"MK","maintenance_password":"x"}"#;
        if let Err(e) = validate(&u(moving), &local, 0) {
            panic!("{e}");
        }
        // A user needs a secret; a secret needs a user; neither may be empty.
        assert_eq!(
            field_of(validate(&u(r#"{"maintenance_username":"MK"}"#), &s3, 0).unwrap_err()),
            "maintenance_password"
        );
        assert_eq!(
            field_of(validate(&u(r#"{"maintenance_password":"x"}"#), &s3, 0).unwrap_err()),
            "maintenance_username"
        );
        assert_eq!(
            field_of(
                validate(
                    &u(r#"{"maintenance_username":" ","maintenance_password":"x"}"#),
                    &s3,
                    0
                )
                .unwrap_err()
            ),
            "maintenance_username"
        );
        assert_eq!(
            field_of(
                validate(
                    &u(r#"{"maintenance_username":"MK","maintenance_password":""}"#),
                    &s3,
                    0
                )
                .unwrap_err()
            ),
            "maintenance_password"
        );
        // Stored: a new secret alone, or the same user alone, is fine; another user is not.
        let stored = StoredLocation {
            maintenance_username: Some("MK".into()),
            maintenance_password_sealed: Some("sealed".into()),
            ..s3.clone()
        };
        let v = validate(&u(r#"{"maintenance_password":"new"}"#), &stored, 0).unwrap();
        assert_eq!(v.fields, ["maintenance_password"]);
        assert!(validate(&u(r#"{"maintenance_username":"MK"}"#), &stored, 0)
            .unwrap()
            .fields
            .is_empty());
        assert_eq!(
            field_of(validate(&u(r#"{"maintenance_username":"OTHER"}"#), &stored, 0).unwrap_err()),
            "maintenance_password"
        );
        // Clear: exclusive with a credential; names what it removes.
        assert_eq!(
            field_of(
                validate(
                    &u(r#"{"maintenance_clear":true,"maintenance_username":"MK"}"#),
                    &stored,
                    0
                )
                .unwrap_err()
            ),
            "maintenance_clear"
        );
        let v = validate(&u(r#"{"maintenance_clear":true}"#), &stored, 0).unwrap();
        assert_eq!(v.fields, ["maintenance_username", "maintenance_password"]);
        assert!(matches!(v.maintenance, Some(MaintenanceChange::Clear)));
    }
}
