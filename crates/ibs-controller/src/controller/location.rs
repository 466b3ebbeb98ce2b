//! The settings side of the facade: the backup location (view, validated update with the
//! accessibility test and the retention confirmation, clear, audit) and the components (the host
//! catalog, API requests resolved against it).

use super::Controller;
use crate::component::{self, Component, ComponentConfig};
use crate::component_api::{self, ComponentRequest, ComponentView};
use crate::context::{Capacity, META_CAPACITY, META_COMPONENTS, META_HOST_COMPONENTS};
use crate::model::{GateKind, JobStatus};
use crate::scheduler::{self, ScheduleState};
use crate::settings::{self, LocationUpdate, LocationView, StoredLocation};
use crate::{ControllerError, Result};

impl Controller {
    pub fn stored_location(&self) -> Result<StoredLocation> {
        self.ctx.stored_location()
    }

    pub fn schedule(&self) -> Result<ScheduleState> {
        Ok(self
            .ctx
            .db
            .get_meta(scheduler::META_KEY)?
            .unwrap_or_else(|| ScheduleState::starting_now(self.now())))
    }

    pub fn capacity(&self) -> Result<Option<Capacity>> {
        self.ctx.capacity()
    }

    pub fn location(&self) -> Result<LocationView> {
        let s = self.stored_location()?;
        let cap = self.capacity()?;
        let last = self
            .ctx
            .db
            .backups(50)?
            .into_iter()
            .find(|j| matches!(j.status, JobStatus::Succeeded | JobStatus::PartialSucceeded))
            .and_then(|j| j.finished_at);
        let cert = s.certificate();
        Ok(LocationView {
            path: s.path.clone(),
            username: s.username.clone(),
            password_set: s.password_sealed.is_some(),
            certificate: cert.as_ref().map(settings::certificate_info),
            legacy_key_set: s.legacy_key_sealed.is_some(),
            encryption_mode: if cert.is_some() {
                Some("certificate".into())
            } else if s.legacy_key_sealed.is_some() {
                Some("legacy-key".into())
            } else {
                None
            },
            frequency_hours: s.frequency_hours,
            retention_days: s.retention_days,
            scheduler_enabled: s.scheduler_enabled,
            available_bytes: cap.map(|c| c.available),
            total_bytes: cap.map(|c| c.total),
            next_backup_time: (s.scheduler_enabled && s.path.is_some())
                .then(|| self.schedule().ok().map(|x| x.next_due))
                .flatten(),
            last_backup_time: last,
            updated_at: (s.updated_at > 0).then_some(s.updated_at),
            warnings: Vec::new(),
            verify_every_hours: s.verify_every_hours,
            verify_sample_percent: s.verify_sample_percent,
        })
    }

    /// Applies a location update: validate, run the accessibility test when the share changes,
    /// require confirmation when lowering retention deletes backups, store, audit.
    pub async fn update_location(&self, u: LocationUpdate, actor: &str) -> Result<LocationView> {
        let now = self.now();
        let cur = self.stored_location()?;
        let v = settings::validate(&u, &cur, now)?;
        let mut next = cur.clone();
        if let Some(p) = &v.path {
            next.path = Some(p.clone());
            // A local folder takes no credentials: switching to one drops the share's, so
            // `location show` does not go on naming the old share user.
            if !ibs_location::is_remote(p) && v.username.is_none() && v.password.is_none() {
                next.username = None;
                next.password_sealed = None;
            }
        }
        if let Some(n) = &v.username {
            next.username = Some(n.clone());
        }
        if let Some(p) = &v.password {
            next.password_sealed = Some(self.ctx.secrets.seal("share-password", p.expose()));
        }
        if v.touches_share() {
            let target = self.ctx.target(&next)?.ok_or_else(|| {
                ControllerError::invalid("path", "a path is required with credentials")
            })?;
            let storage = self.ctx.opener.open(&target, true).await.map_err(|e| {
                ControllerError::Storage {
                    class: e.class,
                    message: format!(
                        "share accessibility test failed: {e}; the change was not saved"
                    ),
                }
            })?;
            crate::storage::probe(&storage)
                .await
                .map_err(|e| ControllerError::Storage {
                    class: e.class,
                    message: e.message,
                })?;
            self.ctx.record_capacity(&storage).await;
            self.ctx.learn_location(next.path.clone(), &storage).await;
        }
        if let Some(r) = v.retention_days {
            if r < cur.retention_days {
                let gone =
                    crate::jobs::retention::would_delete(&self.ctx.db.backups(10_000)?, r, now);
                if !gone.is_empty() && !v.confirm {
                    return Err(ControllerError::Conflict {
                        message: format!(
                            "lowering retention to {r} days deletes {} existing backup(s); repeat with confirm=true to apply",
                            gone.len()
                        ),
                        details: Some(serde_json::json!({ "would_delete": gone })),
                    });
                }
            }
            next.retention_days = r;
        }
        if let Some(c) = &v.certificate {
            next.certificate_der = Some(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                c.der(),
            ));
        }
        if let Some(k) = &v.legacy_key {
            next.legacy_key_sealed = Some(self.ctx.secrets.seal("legacy-key", k.expose()));
        }
        if let Some(f) = v.frequency_hours {
            let mut s = self.schedule()?;
            scheduler::reschedule(&mut s, cur.frequency_hours, f, now);
            self.ctx.db.set_meta(scheduler::META_KEY, &s)?;
            next.frequency_hours = f;
        }
        if let Some(e) = v.scheduler_enabled {
            next.scheduler_enabled = e;
        }
        if let Some(h) = v.verify_every_hours {
            next.verify_every_hours = h;
        }
        if let Some(p) = v.verify_sample_percent {
            next.verify_sample_percent = p;
        }
        if !v.fields.is_empty() {
            next.updated_at = now;
            self.ctx.db.set_meta(settings::META_KEY, &next)?;
            self.ctx
                .db
                .audit(now, actor, "location.update", &v.fields)?;
        }
        self.evaluate_conditions()?;
        let mut view = self.location()?;
        view.warnings = v.warnings;
        Ok(view)
    }

    /// Clears the location configuration: the defaults with no share, credentials and legacy key
    /// deleted from the state database (rewritten, so no old page keeps them), the cached
    /// capacity dropped, automatic backups off. Jobs, alerts and the audit trail stay; the clear is
    /// audited (`location.clear`, the reset field names). It takes the gate for its duration: 409
    /// while a job runs.
    pub fn clear_location(&self, actor: &str) -> Result<LocationView> {
        let now = self.now();
        let _gate = self.take_gate(&format!("location-clear-{now}"), GateKind::LocationClear)?;
        let cur = self.stored_location()?;
        let cleared = StoredLocation::cleared(now);
        let fields = cur.changed_fields(&cleared);
        let db = &self.ctx.db;
        db.set_meta(settings::META_KEY, &cleared)?;
        db.delete_meta(META_CAPACITY)?;
        db.audit(now, actor, "location.clear", &fields)?;
        let op = db.op_begin(ibs_types::OperationKind::LocationClear, now, actor, None)?;
        db.op_end(
            op,
            crate::model::JobStatus::Succeeded,
            now,
            Some(&format!("reset: {}", fields.join(", "))),
        )?;
        self.evaluate_conditions()?;
        // Last: if the rewrite fails (the database busy), the clear is already stored and
        // audited, and repeating it repeats the rewrite.
        db.scrub()?;
        self.location()
    }

    pub fn components_config(&self) -> Result<Vec<ComponentConfig>> {
        self.ctx.components_config()
    }

    /// The components, ready to run (API-given passwords opened).
    pub fn components(&self) -> Result<Vec<Component>> {
        self.ctx.components()
    }

    /// The host catalog (see [`crate::component_api`]).
    pub fn host_components(&self) -> Result<Vec<ComponentConfig>> {
        Ok(self
            .ctx
            .db
            .get_meta(META_HOST_COMPONENTS)?
            .unwrap_or_default())
    }

    /// The components as the API shows them: no hook, command or secret, only whether each is set.
    pub fn components_view(&self) -> Result<Vec<ComponentView>> {
        let catalog = self.host_components()?;
        Ok(self
            .components_config()?
            .iter()
            .map(|c| component_api::view(c, &catalog))
            .collect())
    }

    /// Replaces the components and the host catalog with `cs`. Host-trusted: hooks, commands and
    /// host paths are accepted. The HTTP API uses [`Controller::set_components_from_api`].
    pub fn set_components(
        &self,
        cs: Vec<ComponentConfig>,
        actor: &str,
    ) -> Result<Vec<ComponentConfig>> {
        component::validate(&cs)?;
        self.ctx.db.set_meta(META_COMPONENTS, &cs)?;
        self.ctx.db.set_meta(META_HOST_COMPONENTS, &cs)?;
        self.audit_components(&cs, actor)?;
        Ok(cs)
    }

    /// Replaces the components from an API request: references to the host catalog and declared
    /// service components only (see [`crate::component_api`]).
    pub fn set_components_from_api(
        &self,
        requests: Vec<ComponentRequest>,
        actor: &str,
    ) -> Result<Vec<ComponentView>> {
        let catalog = self.host_components()?;
        let cs = component_api::resolve(
            requests,
            &catalog,
            &self.components_config()?,
            &self.ctx.secrets,
        )?;
        component::validate(&cs)?;
        self.ctx.db.set_meta(META_COMPONENTS, &cs)?;
        self.audit_components(&cs, actor)?;
        self.components_view()
    }

    fn audit_components(&self, cs: &[ComponentConfig], actor: &str) -> Result<()> {
        let names: Vec<String> = cs.iter().map(|c| format!("component:{}", c.name)).collect();
        self.audit(actor, "components.update", &names)
    }
}
