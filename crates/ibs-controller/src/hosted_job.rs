//! Hosted jobs: jobs whose work another crate supplies, run by the controller through its job gate.
//!
//! Backup validation lives in `ibs-recovery`, which depends on this crate (it reuses the service
//! kinds), so the controller cannot call it; instead it hosts the work: [`Controller::start_hosted`]
//! refuses during active maintenance (409 naming the operation) and while any job holds the gate
//! (409 naming it), records the job as Running, registers its live progress, and runs the supplied
//! future on its own thread with the gate held until it ends, however it ends. The future gets a
//! [`HostedContext`] (read-only repository access, a scratch folder under `DATA/tmp/<job>` that is
//! removed afterwards, the place for the job's reports) and returns a [`HostedOutcome`] that becomes
//! the job record. Whatever secrets the future captured are dropped with it when the job ends; they
//! never reach the job record, whose content comes only from the outcome.
//!
//! Reports: a hosted job may leave `DATA/reports/<job id>.json` and `.html` ([`Controller::report`]
//! serves them). Paths are built from the stored job id, never from request input.

use crate::context::{Failure, JobContext};
use crate::controller::Controller;
use crate::model::{ComponentResult, GateKind, Job, JobKind, JobStatus, Trigger};
use crate::{ControllerError, Result};
use ibs_engine::Progress;
use ibs_repo::Repository;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a hosted job's work may use.
pub struct HostedContext {
    ctx: Arc<JobContext>,
    pub job_id: String,
    pub progress: Arc<Progress>,
    /// A folder for temporary files, `DATA/tmp/<job id>`; removed when the job ends.
    pub scratch: PathBuf,
    /// How long engine operations wait for a repository lock.
    pub lock_wait: Duration,
}

impl HostedContext {
    /// Opens the configured repository to read it (no writer state; never initialises one).
    pub async fn open_repository(&self) -> Result<Arc<Repository>, Failure> {
        self.ctx.open_repository_read().await
    }

    /// Where the job's report with extension `ext` (`json`, `html`) goes.
    pub fn report_path(&self, ext: &str) -> PathBuf {
        self.ctx.report_path(&self.job_id, ext)
    }

    pub fn now(&self) -> i64 {
        self.ctx.now()
    }
}

/// How a hosted job ended.
#[derive(Debug, Clone)]
pub struct HostedOutcome {
    /// `Succeeded`, `PartialSucceeded` or `Failed`.
    pub status: JobStatus,
    /// A summary of what went wrong (never a secret).
    pub error: Option<String>,
    pub components: Vec<ComponentResult>,
}

/// What kind of hosted job to start, for which backup.
pub struct HostedJob {
    pub kind: JobKind,
    /// How the gate names it in a 409 (`validation`).
    pub what: GateKind,
    /// The job id prefix (`validate`).
    pub prefix: &'static str,
    /// The backup job it works on.
    pub backup: Job,
    /// The audit action (`backup.validate`).
    pub audit: &'static str,
}

impl Controller {
    /// Starts a hosted job; see the module doc. `make` builds the work's future on the job's thread.
    pub fn start_hosted<M, F>(
        &self,
        spec: HostedJob,
        actor: &str,
        make: M,
    ) -> Result<(Job, tokio::task::JoinHandle<()>)>
    where
        M: FnOnce(HostedContext) -> F + Send + 'static,
        F: std::future::Future<Output = std::result::Result<HostedOutcome, Failure>>,
    {
        if let Some(m) = self.maintenance()?.filter(|m| m.is_active()) {
            return Err(ControllerError::Conflict {
                message: format!("{}; try again when it has ended", m.skip_reason()),
                details: Some(serde_json::json!({ "maintenance": m })),
            });
        }
        let now = self.now();
        let job_id = format!("{}-{}", spec.prefix, ibs_repo::clock::new_backup_id(now));
        let guard = self.take_gate(&job_id, spec.what)?;
        let mut job = Job::new(
            job_id.clone(),
            spec.kind,
            Trigger::OnDemand,
            JobStatus::Running,
            now,
        );
        job.started_at = Some(now);
        job.source_job = Some(spec.backup.id.clone());
        job.backup_id = spec.backup.backup_id.clone();
        job.certificate_thumbprint = spec.backup.certificate_thumbprint.clone();
        self.audit_at(
            now,
            actor,
            spec.audit,
            &[
                format!("backup:{}", spec.backup.id),
                format!("job:{job_id}"),
            ],
        )?;
        self.launch_held(guard, job, move |ctx, mut record, progress| async move {
            let began = std::time::Instant::now();
            let scratch = ctx.tmp_dir(&record.id);
            let cx = HostedContext {
                ctx: ctx.clone(),
                job_id: record.id.clone(),
                progress,
                scratch: scratch.clone(),
                lock_wait: ctx.lock_wait,
            };
            let outcome = match std::fs::create_dir_all(&scratch) {
                Ok(()) => make(cx).await,
                Err(e) => Err(Failure::general(format!(
                    "creating the scratch folder {}: {e}",
                    scratch.display()
                ))),
            };
            let _ = std::fs::remove_dir_all(&scratch);
            record.finished_at = Some(ctx.now());
            record.duration_ms = Some(crate::model::elapsed_ms(began));
            match outcome {
                Ok(o) => {
                    record.status = o.status;
                    record.error = o.error;
                    record.components = o.components;
                }
                Err(f) => {
                    record.status = JobStatus::Failed;
                    record.alert_class = Some(f.class.as_str().into());
                    record.error = Some(f.message);
                }
            }
            if let Err(e) = ctx.db.put_job(&record) {
                tracing::error!("recording job {}: {e}", record.id);
            }
            tracing::info!("job {} ended {}", record.id, record.status.as_str());
        })
    }

    /// The report (`json` or `html`) a hosted job left. 404 for an unknown job, or one without a
    /// report (still running, or it failed before it could write one).
    pub fn report(&self, id: &str, ext: &str) -> Result<Vec<u8>> {
        let job = self.job(id)?;
        if job.kind != JobKind::Validate {
            return Err(ControllerError::NotFound(format!(
                "report of job {id} (only validation jobs have reports)"
            )));
        }
        match std::fs::read(self.report_path(&job.id, ext)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ControllerError::NotFound(format!(
                    "report of job {id} (it is {}{})",
                    job.status.as_str(),
                    if job.status.is_final() {
                        ": it ended before a report was written"
                    } else {
                        ": the report is written when it ends"
                    }
                )))
            }
            Err(e) => Err(ControllerError::Internal(format!(
                "reading the report of job {id}: {e}"
            ))),
        }
    }
}
