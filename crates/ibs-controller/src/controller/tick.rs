//! The periodic tick: purge old closed alerts (hourly), consume a due backup slot (run, or record
//! Skipped), the same for the verification schedule, refresh the condition alerts, and start the
//! hourly retention cleanup when due. The decisions are the pure [`crate::scheduler`]; this file applies them.

use super::Controller;
use crate::alerts::AlertKind;
use crate::jobs::verify::META_VERIFY_SCHEDULE;
use crate::model::{GateKind, Job, JobKind, JobStatus, Maintenance, Trigger};
use crate::scheduler::{self, Conditions, Decision, ScheduleState};
use crate::{ControllerError, Result};

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

impl TickOutcome {
    fn of(decision: Decision) -> Self {
        TickOutcome {
            decision,
            job: None,
            handle: None,
            retention: None,
            verify_job: None,
            verify: None,
        }
    }
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
            .is_some_and(|(_, kind)| !matches!(kind, GateKind::Backup | GateKind::Restore))
        {
            return Ok(TickOutcome::of(Decision::NotDue));
        }
        let mut state: ScheduleState = self.schedule()?;
        let decision = scheduler::tick(&mut state, now, s.frequency_hours, &cond);
        if decision != Decision::NotDue {
            self.ctx.db.set_meta(scheduler::META_KEY, &state)?;
        }
        let mut out = TickOutcome::of(decision.clone());
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
                if maintenance.as_ref().is_some_and(Maintenance::is_failed) {
                    self.ctx.alerts.raise(
                        AlertKind::SkippedMaintenanceFailed,
                        &format!(
                            "{reason}; next backup time {}",
                            ibs_repo::clock::rfc3339(state.next_due)
                        ),
                        now,
                    )?;
                }
                if reason == scheduler::NOT_CONFIGURED {
                    crate::conditions::share_not_configured(&self.ctx, state.next_due)?;
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

    /// Re-evaluates every condition alert.
    pub fn evaluate_conditions(&self) -> Result<()> {
        crate::conditions::evaluate(&self.ctx)
    }

    fn record_skip(&self, reason: &str) -> Result<Job> {
        let id = ibs_repo::clock::new_backup_id(self.now());
        self.record_skipped_job(id, JobKind::Backup, reason)
    }

    /// Records a scheduled job of `kind` that did not run, with the reason.
    fn record_skipped_job(&self, id: String, kind: JobKind, reason: &str) -> Result<Job> {
        let now = self.now();
        let mut job = Job::new(id, kind, Trigger::Scheduled, JobStatus::Skipped, now);
        job.error = Some(reason.to_string());
        job.finished_at = Some(now);
        self.ctx.db.put_job(&job)?;
        tracing::info!(
            "scheduled {} skipped: {reason}",
            crate::db_jobs::kind_str(kind)
        );
        Ok(job)
    }

    /// The verification part of a tick: consume a due slot, run or record a Skipped job.
    fn verification_tick(
        &self,
        maintenance: Option<&Maintenance>,
    ) -> Result<(Option<Job>, Option<tokio::task::JoinHandle<()>>)> {
        let now = self.now();
        let s = self.stored_location()?;
        let period = scheduler::period(s.verify_every_hours);
        let db = &self.ctx.db;
        let Some(mut state) = db.get_meta::<ScheduleState>(META_VERIFY_SCHEDULE)? else {
            // First sight: the first verification is one period from now, not at once (the first
            // backup is due now and would make it skip).
            db.set_meta(
                META_VERIFY_SCHEDULE,
                &ScheduleState::starting_now(now + period),
            )?;
            return Ok((None, None));
        };
        let cond = Conditions {
            scheduler_enabled: true,
            maintenance: maintenance.map(Maintenance::skip_reason),
            running: self.busy(),
            configured: s.path.is_some(),
        };
        let decision = scheduler::tick(&mut state, now, s.verify_every_hours, &cond);
        if decision != Decision::NotDue {
            db.set_meta(META_VERIFY_SCHEDULE, &state)?;
        }
        let skip = |reason: &str| {
            let id = crate::jobs::verify::job_id(self.now());
            self.record_skipped_job(id, JobKind::Verify, reason)
        };
        match decision {
            Decision::NotDue => Ok((None, None)),
            Decision::Run => match self.launch_verification(Trigger::Scheduled) {
                Ok((j, h)) => Ok((Some(j), Some(h))),
                Err(ControllerError::Conflict { message, .. }) => Ok((Some(skip(&message)?), None)),
                Err(e) => Err(e),
            },
            Decision::Skip(reason) => Ok((Some(skip(&reason)?), None)),
        }
    }

    fn maybe_start_retention(&self) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let now = self.now();
        let last: i64 = self.ctx.db.get_meta(META_RETENTION_LAST)?.unwrap_or(0);
        let s = self.stored_location()?;
        if s.path.is_none() || now - last < RETENTION_INTERVAL_SECS || self.busy().is_some() {
            return Ok(None);
        }
        self.ctx.db.set_meta(META_RETENTION_LAST, &now)?;
        Ok(self.start_retention().ok())
    }
}
