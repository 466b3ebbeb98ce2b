//! A controller without a backup location: clearing the location, and the `share-not-configured`
//! alert.
//!
//! Clearing (`DELETE /api/v1/location`, `ibs location clear`) puts the location settings back to
//! their defaults with no share and no encryption, and turns automatic backups off. The share
//! username and password and the legacy key are deleted from the state database, not hidden: the
//! settings record is replaced and the database is rewritten ([`crate::db::Db::scrub`]) so no old
//! page keeps them. The cached share capacity goes too. Job history, alerts and the audit trail
//! stay; the clear is audited as `location.clear`, naming the fields it reset. Like a job, the
//! clear takes the gate while it runs: it is refused (409, naming the job) while a job runs.
//!
//! The alert: a due scheduled slot with automatic backups on and no location configured (no share
//! path, or no certificate or legacy key) is recorded as Skipped and raises `share-not-configured`
//! (Critical). It is a condition alert: it closes when a location is configured or automatic
//! backups are turned off (then no scheduled backup is missed).

use crate::alerts::AlertKind;
use crate::controller::{Controller, META_CAPACITY};
use crate::settings::{self, LocationView, StoredLocation};
use crate::Result;

pub const AUDIT_ACTION: &str = "location.clear";

/// The names of the settings `cleared` resets in `cur` (values never appear).
fn reset_fields(cur: &StoredLocation, cleared: &StoredLocation) -> Vec<String> {
    let mut f = Vec::new();
    let mut note = |changed: bool, name: &str| {
        if changed {
            f.push(name.to_string());
        }
    };
    note(cur.path != cleared.path, "path");
    note(cur.username != cleared.username, "username");
    note(cur.password_sealed.is_some(), "password");
    note(
        cur.certificate_der != cleared.certificate_der,
        "certificate",
    );
    note(cur.legacy_key_sealed.is_some(), "legacy_key");
    note(
        cur.frequency_hours != cleared.frequency_hours,
        "frequency_hours",
    );
    note(
        cur.retention_days != cleared.retention_days,
        "retention_days",
    );
    note(
        cur.scheduler_enabled != cleared.scheduler_enabled,
        "scheduler_enabled",
    );
    note(
        cur.verify_every_hours != cleared.verify_every_hours,
        "verify_every_hours",
    );
    note(
        cur.verify_sample_percent != cleared.verify_sample_percent,
        "verify_sample_percent",
    );
    f
}

impl Controller {
    /// Clears the location configuration (see the module doc); returns the cleared view.
    pub fn clear_location(&self, actor: &str) -> Result<LocationView> {
        let now = self.now();
        let _gate = self.take_gate(&format!("location-clear-{now}"), "location clear")?;
        let cur = self.stored_location()?;
        let cleared = StoredLocation {
            scheduler_enabled: false,
            updated_at: now,
            ..StoredLocation::default()
        };
        let fields = reset_fields(&cur, &cleared);
        self.db().set_meta(settings::META_KEY, &cleared)?;
        self.db().delete_meta(META_CAPACITY)?;
        self.db().scrub()?;
        self.db().audit(now, actor, AUDIT_ACTION, &fields)?;
        self.evaluate_conditions()?;
        self.location()
    }

    /// A due scheduled slot found no location: raise the alert (or refresh its details).
    pub(crate) fn raise_share_not_configured(&self, next_due: i64) -> Result<()> {
        let s = self.stored_location()?;
        let missing = match (&s.path, s.is_configured()) {
            (None, _) => "no share path is set",
            (Some(_), false) => "no encryption certificate (or legacy key) is set",
            (Some(_), true) => return Ok(()),
        };
        self.alerts().raise(
            AlertKind::ShareNotConfigured,
            &format!(
                "scheduled backup skipped: {missing}; next backup time {}",
                ibs_repo::clock::rfc3339(next_due)
            ),
            self.now(),
        )?;
        Ok(())
    }

    /// Closes the alert once its cause is gone (part of the condition evaluation).
    pub(crate) fn share_not_configured_condition(&self, s: &StoredLocation) -> Result<()> {
        if s.is_configured() || !s.scheduler_enabled {
            self.alerts().close_kind(
                AlertKind::ShareNotConfigured,
                "condition cleared",
                self.now(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_fields_name_what_had_a_value() {
        let cur = StoredLocation {
            path: Some("/x".into()),
            username: Some("u".into()),
            password_sealed: Some("sealed".into()),
            ..StoredLocation::default()
        };
        let cleared = StoredLocation {
            scheduler_enabled: false,
            ..StoredLocation::default()
        };
        assert_eq!(
            reset_fields(&cur, &cleared),
            ["path", "username", "password", "scheduler_enabled"]
        );
    }
}
