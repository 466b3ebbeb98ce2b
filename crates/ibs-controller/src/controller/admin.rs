//! Administrative operations of the facade: the maintenance gate, alerts (closing, purging closed
//! ones), API tokens, the audit log, and pruning foreign files from the store.

use super::Controller;
use crate::alert_purge;
use crate::alerts::{Alert, AlertKind};
use crate::context::META_MAINTENANCE;
use crate::db::AuditRecord;
use crate::model::{
    GateKind, JobStatus, Maintenance, MaintenanceOp, MaintenanceOutcome, MaintenanceState, Role,
};
use crate::tokens::{TokenIdentity, TokenInfo};
use crate::{ControllerError, Result};
use ibs_repo::layout;
use ibs_types::OperationKind;

pub use ibs_types::admin::PruneReport;

impl Controller {
    // ---- audit, alerts, tokens ----------------------------------------------------------------

    /// Appends to the audit log, now.
    pub fn audit(&self, actor: &str, action: &str, fields: &[String]) -> Result<()> {
        self.audit_at(self.now(), actor, action, fields)
    }

    pub(crate) fn audit_at(
        &self,
        at: i64,
        actor: &str,
        action: &str,
        fields: &[String],
    ) -> Result<()> {
        self.ctx.db.audit(at, actor, action, fields)
    }

    /// The latest `limit` audit records.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        self.ctx.db.audit_log(limit)
    }

    /// The alerts (only the open ones with `open_only`).
    pub fn alert_list(&self, open_only: bool) -> Result<Vec<Alert>> {
        self.ctx.alerts.list(open_only)
    }

    /// Open alerts by kind (`/metrics`).
    pub fn open_alert_counts(&self) -> Result<Vec<(String, u64)>> {
        self.ctx.alerts.open_counts()
    }

    /// The identity a presented bearer token stands for, if it is valid at `now`.
    pub fn verify_token(&self, presented: &str, now: i64) -> Result<Option<TokenIdentity>> {
        self.ctx.db.verify_token(presented, now)
    }

    /// Creates a token; the secret is returned once and stored only hashed.
    pub fn create_token(
        &self,
        role: Role,
        label: &str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Result<String> {
        self.ctx
            .db
            .create_token_expiring(role, label, now, expires_at)
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.ctx.db.list_tokens(self.now())
    }

    /// Revokes token `id`; false when there is none.
    pub fn revoke_token(&self, id: i64) -> Result<bool> {
        self.ctx.db.revoke_token(id)
    }

    // ---- maintenance -----------------------------------------------------------------------

    pub fn begin_maintenance(&self, op: MaintenanceOp, actor: &str) -> Result<Maintenance> {
        if let Some(m) = self.maintenance()?.filter(Maintenance::is_active) {
            return Err(ControllerError::conflict(format!(
                "maintenance operation {} is already active",
                m.operation.as_str()
            )));
        }
        let m = Maintenance {
            operation: op,
            state: MaintenanceState::Active,
            started_at: self.now(),
            ended_at: None,
            started_by: actor.into(),
        };
        self.ctx.db.set_meta(META_MAINTENANCE, &m)?;
        self.ctx.db.op_begin(
            OperationKind::Maintenance,
            m.started_at,
            actor,
            Some(op.as_str()),
        )?;
        self.ctx.db.audit(
            self.now(),
            actor,
            "maintenance.begin",
            &[op.as_str().to_string()],
        )?;
        Ok(m)
    }

    pub fn end_maintenance(
        &self,
        outcome: MaintenanceOutcome,
        actor: &str,
    ) -> Result<Option<Maintenance>> {
        let now = self.now();
        let Some(mut m) = self.maintenance()? else {
            return Err(ControllerError::conflict(
                "no maintenance operation is active",
            ));
        };
        self.ctx.db.audit(
            now,
            actor,
            "maintenance.end",
            &[format!("{}:{:?}", m.operation.as_str(), outcome)],
        )?;
        let status = match outcome {
            MaintenanceOutcome::Succeeded => JobStatus::Succeeded,
            MaintenanceOutcome::Failed => JobStatus::Failed,
        };
        self.ctx
            .db
            .op_end_running(OperationKind::Maintenance, status, now, None)?;
        match outcome {
            MaintenanceOutcome::Succeeded => {
                self.ctx.db.delete_meta(META_MAINTENANCE)?;
                self.evaluate_conditions()?;
                Ok(None)
            }
            MaintenanceOutcome::Failed => {
                m.state = MaintenanceState::Failed;
                m.ended_at = Some(now);
                self.ctx.db.set_meta(META_MAINTENANCE, &m)?;
                self.ctx.alerts.raise(
                    AlertKind::SkippedMaintenanceFailed,
                    &m.skip_reason(),
                    now,
                )?;
                Ok(Some(m))
            }
        }
    }

    /// An admin clears a failed (or stuck) maintenance operation.
    pub fn clear_maintenance(&self, actor: &str) -> Result<()> {
        self.ctx.db.delete_meta(META_MAINTENANCE)?;
        self.ctx.db.op_end_running(
            OperationKind::Maintenance,
            JobStatus::Interrupted,
            self.now(),
            Some(&format!("cleared by {actor}")),
        )?;
        self.ctx
            .db
            .audit(self.now(), actor, "maintenance.clear", &[])?;
        self.evaluate_conditions()
    }

    pub fn close_alert(&self, id: i64, actor: &str) -> Result<Alert> {
        let a = self.ctx.alerts.close(id, actor, self.now())?;
        self.ctx
            .db
            .audit(self.now(), actor, "alert.close", &[format!("alert:{id}")])?;
        Ok(a)
    }

    /// Reopens a closed alert ([`crate::alerts::Alerts::reopen`]), audited as `alert.reopen`.
    pub fn reopen_alert(&self, id: i64, actor: &str) -> Result<Alert> {
        let a = self.ctx.alerts.reopen(id, self.now())?;
        self.ctx
            .db
            .audit(self.now(), actor, "alert.reopen", &[format!("alert:{id}")])?;
        Ok(a)
    }

    /// Purges now the alerts closed at least `closed_alert_retention_days` ago, each into the
    /// audit trail ([`crate::alert_purge`]); returns them.
    pub fn purge_closed_alerts(&self) -> Result<Vec<Alert>> {
        let now = self.now();
        let days = i64::from(self.closed_alert_retention_days);
        let purged = alert_purge::purge_closed(&self.ctx.db, now - days * 86_400, now)?;
        self.ctx.db.set_meta(alert_purge::META_PURGE_LAST, &now)?;
        for a in &purged {
            tracing::info!("purged closed alert {} ({})", a.id, a.kind);
        }
        Ok(purged)
    }

    /// The tick's purge: at most once per [`alert_purge::PURGE_INTERVAL_SECS`].
    pub(super) fn maybe_purge_closed_alerts(&self) -> Result<Vec<Alert>> {
        let last: i64 = self
            .ctx
            .db
            .get_meta(alert_purge::META_PURGE_LAST)?
            .unwrap_or(i64::MIN);
        if self.now().saturating_sub(last) < alert_purge::PURGE_INTERVAL_SECS {
            return Ok(Vec::new());
        }
        self.purge_closed_alerts()
    }

    /// Lists (and unless `dry_run`, deletes) files under MASBackup that ibs did not create.
    pub async fn store_prune(&self, dry_run: bool, actor: &str) -> Result<PruneReport> {
        let s = self.stored_location()?;
        let target = self
            .ctx
            .target(&s)?
            .ok_or_else(|| ControllerError::conflict("no backup location is configured"))?;
        if !dry_run {
            // Deleting while a backup writes could remove its temporaries' neighbours: take the gate.
            let _g =
                self.take_gate(&format!("store-prune-{}", self.now()), GateKind::StorePrune)?;
            let db = &self.ctx.db;
            let op = db.op_begin(OperationKind::StorePrune, self.now(), actor, None)?;
            let r = self.prune_inner(&target, false, actor).await;
            let (status, detail) = match &r {
                Ok(rep) => (
                    JobStatus::Succeeded,
                    format!("deleted {} file(s)", rep.paths.len()),
                ),
                Err(e) => (JobStatus::Failed, e.to_string()),
            };
            db.op_end(op, status, self.now(), Some(&detail))?;
            return r;
        }
        self.prune_inner(&target, true, actor).await
    }

    async fn prune_inner(
        &self,
        target: &crate::StorageTarget,
        dry_run: bool,
        actor: &str,
    ) -> Result<PruneReport> {
        let storage =
            self.ctx
                .opener
                .open(target, false)
                .await
                .map_err(|e| ControllerError::Storage {
                    class: e.class,
                    message: e.message,
                })?;
        let storage_err = |e: ibs_storage::StorageError| ControllerError::Storage {
            class: e.class(),
            message: e.to_string(),
        };
        // Files with object-key names that ibs does not create, and files whose names are not
        // object keys at all (spaces, other characters), anywhere under MASBackup.
        let keyed: Vec<_> = storage
            .list("")
            .await
            .map_err(storage_err)?
            .into_iter()
            .filter(|o| !layout::is_ibs_object(&o.key))
            .map(|o| o.key)
            .collect();
        let other = storage.list_foreign().await.map_err(storage_err)?;
        if !dry_run {
            for k in &keyed {
                if let Err(e) = storage.delete(k).await {
                    if !e.is_not_found() {
                        return Err(storage_err(e));
                    }
                }
            }
            for f in &other {
                if let Err(e) = storage.delete_foreign(&f.path).await {
                    if !e.is_not_found() {
                        return Err(storage_err(e));
                    }
                }
            }
        }
        let mut paths: Vec<String> = keyed
            .iter()
            .map(|k| k.as_str())
            .chain(other.iter().map(|f| f.path.as_str()))
            .map(|p| format!("{}/{p}", layout::ROOT_FOLDER))
            .collect();
        paths.sort();
        self.ctx.db.audit(
            self.now(),
            actor,
            if dry_run {
                "store.prune.dry-run"
            } else {
                "store.prune"
            },
            &paths,
        )?;
        Ok(PruneReport { dry_run, paths })
    }
}
