//! The facade's single-record and status queries: one job or backup (with live progress while it
//! runs), the unpaged job and backup lists, verification status, `/metrics` figures, maintenance and
//! readiness. The paged lists are in `lists.rs`.

use super::Controller;
use crate::model::{Job, JobKind, Maintenance};
use crate::{jobs, ControllerError, Result};
use ibs_types::admin::Readiness;

impl Controller {
    pub fn job(&self, id: &str) -> Result<Job> {
        let here = self.ctx.current_location()?;
        self.ctx
            .db
            .job(id)?
            .map(|j| self.served(&here, j))
            .ok_or_else(|| ControllerError::NotFound(format!("job {id}")))
    }

    pub fn jobs(&self, limit: u32) -> Result<Vec<Job>> {
        let here = self.ctx.current_location()?;
        Ok(self
            .ctx
            .db
            .jobs(None, limit)?
            .into_iter()
            .map(|j| self.served(&here, j))
            .collect())
    }

    pub fn backups(&self, limit: u32) -> Result<Vec<Job>> {
        let here = self.ctx.current_location()?;
        Ok(self
            .ctx
            .db
            .backups(limit)?
            .into_iter()
            .map(|j| self.served(&here, j))
            .collect())
    }

    pub fn backup(&self, id: &str) -> Result<Job> {
        let here = self.ctx.current_location()?;
        match self.ctx.db.find_backup(id)? {
            Some(j) if j.kind == JobKind::Backup => Ok(self.served(&here, j)),
            // Another kind's job id (a restore prints its own): say where it is shown.
            Some(j) => Err(ControllerError::NotFound(format!(
                "backup {id}: {id} is a {} job, not a backup; GET /api/v1/jobs/{id} \
                 (`ibs jobs show {id}`) shows it",
                crate::db_jobs::kind_str(j.kind)
            ))),
            None => Err(ControllerError::NotFound(format!("backup {id}"))),
        }
    }

    /// Verification status, coverage and the damaged packs.
    pub fn verification_status(&self) -> Result<jobs::verify::VerificationStatus> {
        jobs::verify::status(&self.ctx)
    }

    /// The per-pack verification records, least recently verified first.
    pub fn verification_packs(&self) -> Result<Vec<crate::db_verify::PackCheck>> {
        let mut v: Vec<_> = self.ctx.db.pack_checks()?.into_values().collect();
        v.sort_by(|a, b| (a.verified_at, &a.pack).cmp(&(b.verified_at, &b.pack)));
        Ok(v)
    }

    /// Backup counts and durations for `/metrics`.
    pub fn backup_stats(&self, buckets_secs: &[f64]) -> Result<crate::BackupStats> {
        self.ctx.db.backup_stats(buckets_secs)
    }

    pub fn maintenance(&self) -> Result<Option<Maintenance>> {
        self.ctx.maintenance()
    }

    pub fn readiness(&self) -> Result<Readiness> {
        let busy = self.busy();
        Ok(Readiness {
            backup_running: busy.is_some(),
            running_job: busy.as_ref().map(|b| b.0.clone()),
            running_kind: busy.map(|b| b.1),
            maintenance: self.maintenance()?,
        })
    }
}
