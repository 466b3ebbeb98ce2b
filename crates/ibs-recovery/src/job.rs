//! Validation as a controller job (`POST /api/v1/backups/{id}/validate`): the same
//! [`validate`](crate::validate::validate) as `ibs validate`, hosted by the controller's job gate
//! ([`ibs_controller::hosted_job`]) so it never overlaps a backup, a restore or a retention cleanup,
//! and is refused (409) during maintenance.
//!
//! Order of work: the backup is looked up in the controller's records (unknown: 404) and the .pfx
//! is parsed with its password before a job exists (a wrong password or a file that is not a .pfx:
//! 400 naming the field); then, in the job: the repository is opened read-only, the backup's
//! catalog is read (a backup the repository lacks fails the job naming the ids nearby), the keys are
//! opened (a .pfx of another certificate fails the job naming the certificate the backup needs and
//! the one given), and validation runs with its scratch area under `DATA/tmp/<job>`. Database
//! components validate in temporary databases on the servers the configured components name, with
//! their credentials ([`Plan::from_components`]). The reports go to `DATA/reports/<job>.json` and
//! `.html`; the job ends `Succeeded` (verdict PASS), `PartialSucceeded` (INCOMPLETE) or `Failed`
//! (FAIL, or no report).
//!
//! Secrets: the .pfx bytes and password are used once, to parse the identity, and dropped; the
//! identity lives in the job's future and is dropped when the job ends. Neither reaches the job
//! record, the audit log, the reports or a log line.

use crate::plan::Plan;
use crate::validate::{write_reports, Status, ValidateOptions, ValidationReport};
use crate::RecoveryError;
use ibs_controller::hosted_job::{HostedContext, HostedJob, HostedOutcome};
use ibs_controller::model::{ComponentResult, GateKind, Job, JobKind, JobStatus};
use ibs_controller::{Controller, ControllerError, Failure};
use ibs_keys::{KeyError, PrivateIdentity};
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

/// Starts validating backup `id` (a job id or a repository backup id) as a controller job.
pub fn start_validation(
    ctl: &Controller,
    id: &str,
    req: ValidateRequest,
    actor: &str,
) -> Result<(Job, tokio::task::JoinHandle<()>), ControllerError> {
    let backup = ctl.backup(id)?;
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
    let plan = Plan::from_components(&ctl.components()?);
    ctl.start_hosted(
        HostedJob {
            kind: JobKind::Validate,
            what: GateKind::Validation,
            prefix: "validate",
            backup,
            audit: "backup.validate",
        },
        actor,
        move |cx| async move {
            let unlock = Arc::new(Unlock::Identities(vec![identity]));
            run(&cx, &backup_id, unlock, plan).await
        },
    )
}

async fn run(
    cx: &HostedContext,
    backup_id: &str,
    unlock: Arc<Unlock>,
    plan: Plan,
) -> Result<HostedOutcome, Failure> {
    let repo = cx.open_repository().await?;
    let fail = |e: RecoveryError| match e {
        RecoveryError::Engine(e) => Failure::from_engine(&e),
        other => Failure::general(other.to_string()),
    };
    let catalog = crate::find_backup(&repo, backup_id).await.map_err(fail)?;
    let report = crate::validate::validate(
        repo,
        unlock,
        ValidateOptions {
            catalog,
            plan: Some(plan),
            lock_wait: cx.lock_wait,
            progress: cx.progress.clone(),
            scratch_in: Some(cx.scratch.clone()),
        },
    )
    .await
    .map_err(fail)?;
    write_reports(&report, &cx.report_path("json"), &cx.report_path("html")).map_err(fail)?;
    Ok(outcome(&report))
}

/// The job record's view of a report: one component result per validated component, the verdict
/// as the job's status, and the failing checks as its error.
pub fn outcome(r: &ValidationReport) -> HostedOutcome {
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
    HostedOutcome {
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
