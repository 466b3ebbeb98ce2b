//! The controller's periodic and administrative operations: the scheduler tick, condition alerts
//! (scheduler disabled, certificate expiry, legacy key, share almost full, failed maintenance), the
//! maintenance gate, closing alerts, and pruning foreign files from the store.

use crate::alerts::AlertKind;
use crate::controller::Controller;
use crate::model::{
    Job, JobKind, JobStatus, Maintenance, MaintenanceOp, MaintenanceOutcome, Trigger,
};
use crate::scheduler::{self, Conditions, Decision, ScheduleState};
use crate::{ControllerError, Result};
use ibs_repo::layout;
use serde::Serialize;

/// Certificates expiring within this many days raise an alert.
pub const CERT_EXPIRY_DAYS: i64 = 30;
/// The share is "almost full" below this free fraction (and below the projected need).
pub const ALMOST_FULL_FREE_RATIO: f64 = 0.30;
/// Retention cleanup interval.
pub const RETENTION_INTERVAL_SECS: i64 = 3600;
const META_RETENTION_LAST: &str = "retention_last_run";

/// What one tick did.
#[derive(Debug)]
pub struct TickOutcome {
    pub decision: Decision,
    /// The scheduled job started, or the Skipped record.
    pub job: Option<Job>,
    pub handle: Option<tokio::task::JoinHandle<()>>,
    pub retention: Option<tokio::task::JoinHandle<()>>,
    /// The verification job started or recorded as Skipped by this tick, and its task.
    pub verify_job: Option<Job>,
    pub verify: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Paths (relative to the location) of files under MASBackup that ibs did not create.
    pub paths: Vec<String>,
}

impl Controller {
    /// One scheduler tick: purge old closed alerts (hourly), consume a due slot (run or record
    /// Skipped; with no location also raise `share-not-configured`), refresh condition alerts, and
    /// start the hourly retention cleanup when due.
    pub fn tick(&self) -> Result<TickOutcome> {
        let now = self.now();
        self.maybe_purge_closed_alerts()?;
        let s = self.stored_location()?;
        let maintenance = self.maintenance()?;
        let cond = Conditions {
            scheduler_enabled: s.scheduler_enabled,
            maintenance: maintenance.as_ref().map(Maintenance::skip_reason),
            running: self.busy(),
            configured: s.is_configured(),
        };
        // Any job other than a backup or a restore holding the gate (retention cleanup, store
        // prune, verification, validation) defers the whole tick: a due backup or verification
        // runs at the next tick instead of being skipped.
        if cond
            .running
            .as_ref()
            .is_some_and(|(_, what)| what != "backup" && what != "restore")
        {
            return Ok(TickOutcome {
                decision: Decision::NotDue,
                job: None,
                handle: None,
                retention: None,
                verify_job: None,
                verify: None,
            });
        }
        let mut state: ScheduleState = self.schedule()?;
        let decision = scheduler::tick(&mut state, now, s.frequency_hours, &cond);
        if decision != Decision::NotDue {
            self.db().set_meta(scheduler::META_KEY, &state)?;
        }
        let mut out = TickOutcome {
            decision: decision.clone(),
            job: None,
            handle: None,
            retention: None,
            verify_job: None,
            verify: None,
        };
        match decision {
            Decision::NotDue => {}
            Decision::Run => match self.launch_backup(Trigger::Scheduled) {
                Ok((job, handle)) => {
                    out.job = Some(job);
                    out.handle = Some(handle);
                }
                // Lost a race with an on-demand start: record the skip.
                Err(ControllerError::Conflict { message, .. }) => {
                    out.job = Some(self.record_skip(&message)?)
                }
                Err(e) => return Err(e),
            },
            Decision::Skip(reason) => {
                if maintenance.as_ref().is_some_and(|m| m.state == "failed") {
                    self.alerts().raise(
                        AlertKind::SkippedMaintenanceFailed,
                        &format!(
                            "{reason}; next backup time {}",
                            ibs_repo::clock::rfc3339(state.next_due)
                        ),
                        now,
                    )?;
                }
                if reason == scheduler::NOT_CONFIGURED {
                    self.raise_share_not_configured(state.next_due)?;
                }
                out.job = Some(self.record_skip(&reason)?);
            }
        }
        // Verification after the backup decision: a backup started by this tick holds the gate,
        // so a verification due at the same time is recorded as Skipped.
        let (verify_job, verify) = self.verification_tick(maintenance.as_ref())?;
        out.verify_job = verify_job;
        out.verify = verify;
        self.evaluate_conditions()?;
        out.retention = self.maybe_start_retention()?;
        Ok(out)
    }

    fn record_skip(&self, reason: &str) -> Result<Job> {
        let id = ibs_repo::clock::new_backup_id(self.now());
        self.record_skipped_job(id, JobKind::Backup, reason)
    }

    /// Records a scheduled job of `kind` that did not run, with the reason.
    pub(crate) fn record_skipped_job(
        &self,
        id: String,
        kind: JobKind,
        reason: &str,
    ) -> Result<Job> {
        let now = self.now();
        let mut job = Job::new(id, kind, Trigger::Scheduled, JobStatus::Skipped, now);
        job.error = Some(reason.to_string());
        job.finished_at = Some(now);
        self.db().put_job(&job)?;
        tracing::info!(
            "scheduled {} skipped: {reason}",
            crate::db_jobs::kind_str(kind)
        );
        Ok(job)
    }

    fn maybe_start_retention(&self) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let now = self.now();
        let last: i64 = self.db().get_meta(META_RETENTION_LAST)?.unwrap_or(0);
        let s = self.stored_location()?;
        if s.path.is_none() || now - last < RETENTION_INTERVAL_SECS || self.busy().is_some() {
            return Ok(None);
        }
        self.db().set_meta(META_RETENTION_LAST, &now)?;
        Ok(self.start_retention().ok())
    }

    /// Starts the retention cleanup now (forget + prune) unless a job runs.
    pub fn start_retention(&self) -> Result<tokio::task::JoinHandle<()>> {
        let id = format!("retention-{}", self.now());
        let guard = self.take_gate(&id, "retention cleanup")?;
        let ctl = self.clone();
        Ok(crate::controller::spawn_job(move || async move {
            let _guard = guard;
            crate::retention::cleanup(&ctl).await;
        }))
    }

    /// Re-evaluates every condition alert.
    pub fn evaluate_conditions(&self) -> Result<()> {
        let now = self.now();
        let s = self.stored_location()?;
        let a = self.alerts();
        let configured = s.path.is_some();
        a.set_condition(
            AlertKind::SchedulerDisabled,
            configured && !s.scheduler_enabled,
            "automatic backups are turned off",
            now,
        )?;
        let cert = s.certificate();
        let (expired, expiring) = match &cert {
            Some(c) if c.not_after() <= now => (true, false),
            Some(c) if c.not_after() - now <= CERT_EXPIRY_DAYS * 86_400 => (false, true),
            _ => (false, false),
        };
        let detail = cert
            .as_ref()
            .map(|c| {
                format!(
                    "certificate {} ({}) expires {}",
                    c.thumbprint(),
                    c.subject(),
                    ibs_repo::clock::rfc3339(c.not_after())
                )
            })
            .unwrap_or_default();
        a.set_condition(AlertKind::CertificateExpired, expired, &detail, now)?;
        a.set_condition(AlertKind::CertificateExpiring, expiring, &detail, now)?;
        a.set_condition(
            AlertKind::LegacyKeyInUse,
            cert.is_none() && s.legacy_key_sealed.is_some(),
            "backups are encrypted with a legacy key",
            now,
        )?;
        let m = self.maintenance()?;
        if m.as_ref().is_none_or(|m| m.state != "failed") {
            a.close_kind(
                AlertKind::SkippedMaintenanceFailed,
                "maintenance cleared",
                now,
            )?;
        }
        let (full, detail) = self.almost_full()?;
        a.set_condition(AlertKind::ShareAlmostFull, full, &detail, now)?;
        self.share_not_configured_condition(&s)
    }

    /// Less than 30 % free and less free than the projected need: the mean stored size of recent
    /// backups times the number of backups in one retention period.
    fn almost_full(&self) -> Result<(bool, String)> {
        let Some(cap) = self.capacity()? else {
            return Ok((false, String::new()));
        };
        if cap.total == 0 {
            return Ok((false, String::new()));
        }
        let recent: Vec<u64> = self
            .db()
            .backups(10)?
            .iter()
            .filter(|j| matches!(j.status, JobStatus::Succeeded | JobStatus::PartialSucceeded))
            .map(|j| j.bytes_stored)
            .collect();
        let s = self.stored_location()?;
        let per_period = (24 / s.frequency_hours.max(1)).max(1) as u64 * s.retention_days as u64;
        let mean = if recent.is_empty() {
            0
        } else {
            recent.iter().sum::<u64>() / recent.len() as u64
        };
        let need = mean.saturating_mul(per_period);
        let free_ratio = cap.available as f64 / cap.total as f64;
        let full = free_ratio < ALMOST_FULL_FREE_RATIO && cap.available < need;
        Ok((
            full,
            format!(
                "{:.0}% free ({} of {} bytes); projected need {} bytes",
                free_ratio * 100.0,
                cap.available,
                cap.total,
                need
            ),
        ))
    }

    // ---- maintenance -----------------------------------------------------------------------

    pub fn begin_maintenance(&self, op: MaintenanceOp, actor: &str) -> Result<Maintenance> {
        if let Some(m) = self.maintenance()?.filter(|m| m.state == "active") {
            return Err(ControllerError::conflict(format!(
                "maintenance operation {} is already active",
                m.operation.as_str()
            )));
        }
        let m = Maintenance {
            operation: op,
            state: "active".into(),
            started_at: self.now(),
            ended_at: None,
            started_by: actor.into(),
        };
        self.db()
            .set_meta(crate::controller::META_MAINTENANCE, &m)?;
        self.db().audit(
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
        self.db().audit(
            now,
            actor,
            "maintenance.end",
            &[format!("{}:{:?}", m.operation.as_str(), outcome)],
        )?;
        match outcome {
            MaintenanceOutcome::Succeeded => {
                self.db().delete_meta(crate::controller::META_MAINTENANCE)?;
                self.evaluate_conditions()?;
                Ok(None)
            }
            MaintenanceOutcome::Failed => {
                m.state = "failed".into();
                m.ended_at = Some(now);
                self.db()
                    .set_meta(crate::controller::META_MAINTENANCE, &m)?;
                self.alerts()
                    .raise(AlertKind::SkippedMaintenanceFailed, &m.skip_reason(), now)?;
                Ok(Some(m))
            }
        }
    }

    /// An admin clears a failed (or stuck) maintenance operation.
    pub fn clear_maintenance(&self, actor: &str) -> Result<()> {
        self.db().delete_meta(crate::controller::META_MAINTENANCE)?;
        self.db()
            .audit(self.now(), actor, "maintenance.clear", &[])?;
        self.evaluate_conditions()
    }

    pub fn close_alert(&self, id: i64, actor: &str) -> Result<crate::alerts::Alert> {
        let a = self.alerts().close(id, actor, self.now())?;
        self.db()
            .audit(self.now(), actor, "alert.close", &[format!("alert:{id}")])?;
        Ok(a)
    }

    /// Lists (and unless `dry_run`, deletes) files under MASBackup that ibs did not create.
    pub async fn store_prune(&self, dry_run: bool, actor: &str) -> Result<PruneReport> {
        let s = self.stored_location()?;
        let target = self
            .target(&s)?
            .ok_or_else(|| ControllerError::conflict("no backup location is configured"))?;
        if !dry_run {
            // Deleting while a backup writes could remove its temporaries' neighbours: take the gate.
            let _g = self.take_gate(&format!("store-prune-{}", self.now()), "store prune")?;
            return self.prune_inner(&target, false, actor).await;
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
            self.inner
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
        self.db().audit(
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
