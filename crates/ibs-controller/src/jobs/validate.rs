//! The validation job (`POST /api/v1/backups/{id}/validate`): the same
//! [`ibs_recovery::validate::validate`] as `ibs validate`, run through the controller's job gate so
//! it never overlaps a backup, a restore or a retention cleanup, and refused (409 naming the
//! operation) during active maintenance.
//!
//! Order of work: the backup is looked up in the controller's records (unknown: 404) and the .pfx
//! is parsed with its password before a job exists (a wrong password or a file that is not a .pfx:
//! 400 naming the field); then the gate is taken (409 naming the job that holds it), the job is
//! recorded Running with its live progress, and on its own thread, gate held until it ends however
//! it ends: the repository is opened read-only, the backup's catalog is read (a backup the
//! repository lacks fails the job naming the ids nearby), the keys are opened (a .pfx of another
//! certificate fails the job naming the certificate the backup needs and the one given), and
//! validation runs with its scratch area under `DATA/tmp/<job>` (removed afterwards). Database
//! components validate in temporary databases on the servers the configured components name, with
//! their credentials ([`Plan::from_components`]). The job ends `Succeeded` (verdict PASS),
//! `PartialSucceeded` (INCOMPLETE) or `Failed` (FAIL, or no report).
//!
//! The facade (`Controller::start_validation`) takes the gate and records the job; this module
//! prepares the request ([`prepare`]), builds the record ([`new_job`]) and does the work ([`run`]).
//!
//! Reports: `DATA/reports/<job id>.json` and `.html` ([`report`] reads them back). Paths are
//! built from the stored job id, never from request input.
//!
//! Secrets: the .pfx bytes and password are used once, to parse the identity, and dropped; the
//! identity lives in the job's future and is dropped when the job ends. Neither reaches the job
//! record, the audit log, the reports or a log line.

use crate::context::{Failure, JobContext};
use crate::model::{ComponentResult, Job, JobKind, JobStatus, Trigger};
use crate::stop::{settle, JobStop};
use crate::{ControllerError, Result};
use ibs_engine::{CancelToken, Progress};
use ibs_keys::PrivateIdentity;
use ibs_recovery::plan::Plan;
use ibs_recovery::validate::{write_reports, Status, ValidateOptions, ValidationReport};
use ibs_recovery::RecoveryError;
use ibs_repo::keyring::Unlock;
use std::sync::Arc;

/// The largest .pfx accepted (a 8192-bit RSA key with a certificate chain is a few KiB).
pub const MAX_PFX_BYTES: usize = 64 * 1024;

/// A validation request. `Debug` never shows the .pfx or its password.
pub struct ValidateRequest {
    pub pfx: Vec<u8>,
    pub pfx_password: String,
}

impl std::fmt::Debug for ValidateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidateRequest")
            .field("pfx_bytes", &self.pfx.len())
            .finish_non_exhaustive()
    }
}

/// A checked request: what the job needs.
pub(crate) struct Prepared {
    backup_id: String,
    identity: PrivateIdentity,
    plan: Plan,
}

/// How a validation job ended: what its record says.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `Succeeded`, `PartialSucceeded` or `Failed`.
    pub status: JobStatus,
    /// A summary of what went wrong (never a secret).
    pub error: Option<String>,
    pub components: Vec<ComponentResult>,
}

/// Checks a request for validating `backup` (looked up by `id`) before any job exists: the backup
/// has something to validate, the .pfx opens with its password (400 naming the field). The .pfx
/// bytes and password are dropped here.
pub(crate) fn prepare(
    ctx: &JobContext,
    id: &str,
    backup: &Job,
    req: ValidateRequest,
) -> Result<Prepared> {
    let Some(backup_id) = backup.backup_id.clone().filter(|_| {
        matches!(
            backup.status,
            JobStatus::Succeeded | JobStatus::PartialSucceeded
        )
    }) else {
        return Err(ControllerError::conflict(format!(
            "backup {id} is {} and has nothing to validate",
            backup.status.as_str()
        )));
    };
    if backup.deleted_at.is_some() {
        return Err(ControllerError::conflict(format!(
            "backup {id} was deleted by retention"
        )));
    }
    if req.pfx.len() > MAX_PFX_BYTES {
        return Err(ControllerError::invalid(
            "pfx",
            format!("larger than {MAX_PFX_BYTES} bytes: not a .pfx"),
        ));
    }
    let identity = super::open_pfx(&req.pfx, &req.pfx_password, "pfx", "pfx_password")?;
    drop(req);
    Ok(Prepared {
        backup_id,
        identity,
        plan: Plan::from_components(&ctx.components()?),
    })
}

/// The Running record of validation job `job_id` of `backup`.
pub(crate) fn new_job(job_id: String, backup: &Job, now: i64) -> Job {
    let mut job = Job::new(
        job_id,
        JobKind::Validate,
        Trigger::OnDemand,
        JobStatus::Running,
        now,
    );
    job.started_at = Some(now);
    job.source_job = Some(backup.id.clone());
    job.backup_id = backup.backup_id.clone();
    job.certificate_thumbprint = backup.certificate_thumbprint.clone();
    job
}

/// Runs validation job `record` with its scratch folder `DATA/tmp/<job>` (removed afterwards,
/// however the job ends) and records how it ended.
/// A cancel or the job timeout ([`JobStop`]) stops it at the next file or component, with no
/// report written.
pub(crate) async fn run(
    ctx: &JobContext,
    mut record: Job,
    p: Prepared,
    progress: Arc<Progress>,
    stop: Arc<JobStop>,
) {
    let began = std::time::Instant::now();
    let scratch = ctx.tmp_dir(&record.id);
    let outcome = match std::fs::create_dir_all(&scratch) {
        Ok(()) => {
            let unlock = Arc::new(Unlock::Identities(vec![p.identity]));
            let job_id = record.id.clone();
            let cancel = stop.token().clone();
            work(
                ctx,
                &job_id,
                &p.backup_id,
                unlock,
                p.plan,
                progress.clone(),
                cancel,
            )
            .await
        }
        Err(e) => Err(Failure::general(format!(
            "creating the scratch folder {}: {e}",
            scratch.display()
        ))),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    // What it read back out of the repository: the bytes restored into the scratch folder.
    record.bytes_read = progress.snapshot().bytes_done;
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
    settle(&stop, &mut record, "; no report was written");
    if let Err(e) = ctx.db.put_job(&record) {
        tracing::error!("recording job {}: {e}", record.id);
    }
    tracing::debug!("job {} ended {}", record.id, record.status.as_str());
}

/// The work: open the repository read-only, find the backup, validate it, write the reports.
async fn work(
    ctx: &JobContext,
    job_id: &str,
    backup_id: &str,
    unlock: Arc<Unlock>,
    plan: Plan,
    progress: Arc<Progress>,
    cancel: CancelToken,
) -> std::result::Result<Outcome, Failure> {
    let scratch = ctx.tmp_dir(job_id);
    let repo = ctx.open_repository_read().await?;
    let fail = |e: RecoveryError| match e {
        RecoveryError::Engine(e) => Failure::from_engine(&e),
        other => Failure::general(other.to_string()),
    };
    let catalog = ibs_recovery::find_backup(&repo, backup_id)
        .await
        .map_err(fail)?;
    let report = ibs_recovery::validate::validate(
        repo,
        unlock,
        ValidateOptions {
            catalog,
            plan: Some(plan),
            lock_wait: ctx.lock_wait,
            progress,
            scratch_in: Some(scratch),
            cancel: Some(cancel),
        },
    )
    .await
    .map_err(fail)?;
    write_reports(
        &report,
        &ctx.report_path(job_id, "json"),
        &ctx.report_path(job_id, "html"),
    )
    .map_err(fail)?;
    Ok(outcome(&report))
}

/// The report (`json` or `html`) validation job `job` left. 404 for a job of another kind, or one
/// without a report (still running, or it failed before it could write one).
/// `id` is the id it was asked for.
pub(crate) fn report(ctx: &JobContext, id: &str, job: &Job, ext: &str) -> Result<Vec<u8>> {
    if job.kind != JobKind::Validate {
        return Err(ControllerError::NotFound(format!(
            "report of job {id} (only validation jobs have reports)"
        )));
    }
    match std::fs::read(ctx.report_path(&job.id, ext)) {
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

/// The job record's view of a report: one component result per validated component, the verdict
/// as the job's status, and the failing checks as its error.
pub fn outcome(r: &ValidationReport) -> Outcome {
    let failing: Vec<String> = std::iter::once(("repository", &r.repository))
        .chain(
            r.components
                .iter()
                .flat_map(|c| c.checks.iter().map(move |k| (c.name.as_str(), k))),
        )
        .filter(|(_, k)| k.status != Status::Pass)
        .map(|(n, k)| format!("{n}: {} {}: {}", k.status.as_str(), k.what, k.detail))
        .collect();
    let status = match r.verdict.as_str() {
        "PASS" => JobStatus::Succeeded,
        "INCOMPLETE" => JobStatus::PartialSucceeded,
        _ => JobStatus::Failed,
    };
    Outcome {
        status,
        error: (!failing.is_empty()).then(|| {
            format!(
                "verdict {} for backup {}: {}",
                r.verdict,
                r.backup_id,
                failing.join("; ")
            )
        }),
        components: r
            .components
            .iter()
            .map(|c| ComponentResult {
                name: c.name.clone(),
                kind: c.kind.clone(),
                status: match c.status {
                    Status::Pass => JobStatus::Succeeded,
                    Status::NotValidated => JobStatus::PartialSucceeded,
                    Status::Fail => JobStatus::Failed,
                },
                essential_for_recovery: false,
                sources: c.sources.clone(),
                bytes: 0,
                files: 0,
                message: Some(
                    c.checks
                        .iter()
                        .map(|k| format!("{} {}: {}", k.status.as_str(), k.what, k.detail))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                cause: None,
                exports: Vec::new(),
                server_version: None,
            })
            .collect(),
    }
}
