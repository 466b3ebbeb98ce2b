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
//! Reports: `DATA/reports/<job id>.json` and `.html` ([`Controller::report`] serves them). Paths are
//! built from the stored job id, never from request input.
//!
//! Secrets: the .pfx bytes and password are used once, to parse the identity, and dropped; the
//! identity lives in the job's future and is dropped when the job ends. Neither reaches the job
//! record, the audit log, the reports or a log line.

use crate::controller::{spawn_job, Controller};
use crate::model::{ComponentResult, Job, JobKind, JobStatus, Trigger};
use crate::runner::{open_repository_read, Failure};
use crate::{ControllerError, Result};
use ibs_engine::Progress;
use ibs_keys::{KeyError, PrivateIdentity};
use ibs_recovery::plan::Plan;
use ibs_recovery::validate::{write_reports, Status, ValidateOptions, ValidationReport};
use ibs_recovery::RecoveryError;
use ibs_repo::keyring::Unlock;
use std::path::{Path, PathBuf};
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

/// How a validation job ended: what its record says.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `Succeeded`, `PartialSucceeded` or `Failed`.
    pub status: JobStatus,
    /// A summary of what went wrong (never a secret).
    pub error: Option<String>,
    pub components: Vec<ComponentResult>,
}

impl Controller {
    /// Starts validating backup `id` (a job id or a repository backup id) as a job; see the module
    /// doc.
    pub fn start_validation(
        &self,
        id: &str,
        req: ValidateRequest,
        actor: &str,
    ) -> Result<(Job, tokio::task::JoinHandle<()>)> {
        let backup = self.backup(id)?;
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
        let identity = PrivateIdentity::from_pfx(&req.pfx, &req.pfx_password).map_err(|e| {
            let field = match e {
                KeyError::WrongPfxPassword | KeyError::PfxDecrypt { .. } => "pfx_password",
                _ => "pfx",
            };
            ControllerError::invalid(field, e.to_string())
        })?;
        drop(req);
        let plan = Plan::from_components(&self.components()?);

        if let Some(m) = self.maintenance()?.filter(|m| m.state == "active") {
            return Err(ControllerError::Conflict {
                message: format!("{}; try again when it has ended", m.skip_reason()),
                details: Some(serde_json::json!({ "maintenance": m })),
            });
        }
        let now = self.now();
        let job_id = format!("validate-{}", ibs_repo::clock::new_backup_id(now));
        let guard = self.take_gate(&job_id, "validation")?;
        let mut job = Job::new(
            job_id.clone(),
            JobKind::Validate,
            Trigger::OnDemand,
            JobStatus::Running,
            now,
        );
        job.started_at = Some(now);
        job.source_job = Some(backup.id.clone());
        job.backup_id = backup.backup_id.clone();
        job.certificate_thumbprint = backup.certificate_thumbprint.clone();
        self.db().put_job(&job)?;
        self.db().audit(
            now,
            actor,
            "backup.validate",
            &[format!("backup:{}", backup.id), format!("job:{job_id}")],
        )?;
        let progress = self.track_live(job_id.clone(), now);
        let scratch = self.inner.data_dir.join("tmp").join(&job_id);
        let ctl = self.clone();
        let mut record = job.clone();
        let handle = spawn_job(move || async move {
            let _guard = guard;
            let began = std::time::Instant::now();
            let outcome = match std::fs::create_dir_all(&scratch) {
                Ok(()) => {
                    let unlock = Arc::new(Unlock::Identities(vec![identity]));
                    run(
                        &ctl, &record.id, &backup_id, unlock, plan, progress, &scratch,
                    )
                    .await
                }
                Err(e) => Err(Failure::general(format!(
                    "creating the scratch folder {}: {e}",
                    scratch.display()
                ))),
            };
            let _ = std::fs::remove_dir_all(&scratch);
            record.finished_at = Some(ctl.now());
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
            if let Err(e) = ctl.db().put_job(&record) {
                tracing::error!("recording job {}: {e}", record.id);
            }
            tracing::info!("job {} ended {}", record.id, record.status.as_str());
        });
        Ok((job, handle))
    }

    fn report_path(&self, job_id: &str, ext: &str) -> PathBuf {
        self.inner
            .data_dir
            .join("reports")
            .join(format!("{job_id}.{ext}"))
    }

    /// The report (`json` or `html`) a validation job left. 404 for an unknown job, or one without
    /// a report (still running, or it failed before it could write one).
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

/// The job's work: open the repository read-only, find the backup, validate it, write the reports.
async fn run(
    ctl: &Controller,
    job_id: &str,
    backup_id: &str,
    unlock: Arc<Unlock>,
    plan: Plan,
    progress: Arc<Progress>,
    scratch: &Path,
) -> std::result::Result<Outcome, Failure> {
    let repo = open_repository_read(ctl).await?;
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
            lock_wait: ctl.inner.lock_wait,
            progress,
            scratch_in: Some(scratch.to_path_buf()),
        },
    )
    .await
    .map_err(fail)?;
    write_reports(
        &report,
        &ctl.report_path(job_id, "json"),
        &ctl.report_path(job_id, "html"),
    )
    .map_err(fail)?;
    Ok(outcome(&report))
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
            })
            .collect(),
    }
}
