//! Stage 5 of a backup: the component results. Each starts Running ([`result_of`]); stage 2
//! fails the ones that could not contribute; here the engine's per-source outcome (bytes, files,
//! unreadable or skipped entries, failed sources) is folded in ([`apply`]), and the job's status
//! is the engine's roll-up of its components ([`summarise`]).

use crate::component::Component;
use crate::kinds::SharedLog;
use crate::model::{ComponentResult, Job, JobOutcome, JobStatus};
use ibs_engine::BackupReport;
use ibs_repo::manifest::BackupStatus;

/// A component's result before the backup ran.
pub(super) fn result_of(c: &Component) -> ComponentResult {
    ComponentResult {
        name: c.name.clone(),
        kind: c.kind.name().into(),
        status: JobStatus::Running,
        essential_for_recovery: c.essential_for_recovery,
        sources: c.source_names(),
        bytes: 0,
        files: 0,
        message: None,
        cause: None,
        exports: Vec::new(),
        server_version: None,
    }
}

/// Marks a component Failed, keeping earlier messages.
pub(super) fn fail(r: &mut ComponentResult, m: String) {
    r.status = JobStatus::Failed;
    r.message = Some(match r.message.take() {
        Some(prev) => format!("{prev}; {m}"),
        None => m,
    });
}

/// What each service component's exports recorded (row and key counts), and the cause of its
/// first failed export.
pub(super) fn collect_exports(job: &mut Job, logs: Vec<(usize, SharedLog)>) {
    for (i, log) in logs {
        let log = log.lock().unwrap_or_else(|p| p.into_inner());
        let r = &mut job.components[i];
        r.exports = log.done.clone();
        if let Some(f) = log.failures.first() {
            r.cause = Some(f.cause);
        }
    }
}

/// Folds the engine's per-source outcome into the component results; a component still Running
/// afterwards succeeded.
pub(super) fn apply(job: &mut Job, report: &BackupReport) {
    let cat = &report.catalog;
    for r in job.components.iter_mut() {
        for name in r.sources.clone() {
            let Some(s) = cat.sources.iter().find(|s| s.name == name) else {
                continue;
            };
            r.bytes += s.bytes;
            r.files += s.files;
            if r.server_version.is_none() {
                r.server_version = s.server_version.clone();
            }
            match s.status {
                BackupStatus::Succeeded => {}
                BackupStatus::PartialSucceeded if r.status != JobStatus::Failed => {
                    r.status = JobStatus::PartialSucceeded;
                    r.message
                        .get_or_insert_with(|| format!("{} unreadable entries", s.errors));
                }
                _ => {
                    let prefix = format!("{name}: ");
                    let why = report
                        .errors
                        .iter()
                        .find(|e| e.starts_with(&prefix))
                        .cloned()
                        .unwrap_or_else(|| format!("source {name} failed"));
                    fail(r, why)
                }
            }
            if s.skipped > 0 {
                let prefix = format!("{name}/");
                let first = report
                    .warnings
                    .iter()
                    .find(|w| w.starts_with(&prefix))
                    .cloned()
                    .unwrap_or_default();
                r.message.get_or_insert_with(|| {
                    format!(
                        "{} entries skipped (sockets cannot be backed up): {first}",
                        s.skipped
                    )
                });
            }
        }
        if r.status == JobStatus::Running {
            r.status = JobStatus::Succeeded;
        }
    }
}

/// Who wrote a backup, as its catalog records it.
pub(crate) fn metadata_of(cat: &ibs_repo::manifest::Catalog) -> crate::model::BackupMetadata {
    let p = ibs_engine::provenance::Provenance::of(cat);
    crate::model::BackupMetadata {
        deployment_id: p.deployment_id,
        ibs_version: p.ibs_version,
        format_revision: p.format_revision,
    }
}

/// The job's figures from the committed catalog, its recovery readiness (every essential
/// component succeeded) and its status (the roll-up of its components).
pub(super) fn summarise(job: &mut Job, report: &BackupReport) {
    let cat = &report.catalog;
    job.backup_id = Some(cat.backup_id.clone());
    job.repository_id = Some(cat.repository_id.clone());
    job.bytes_read = cat.bytes_read;
    job.bytes_stored = cat.bytes_stored;
    job.certificate_thumbprint = cat.certificate_thumbprint.clone();
    job.metadata = Some(metadata_of(cat));
    job.warnings.clone_from(&report.repository_warnings);
    job.recovery_ready = job
        .components
        .iter()
        .filter(|c| c.essential_for_recovery)
        .all(|c| c.status == JobStatus::Succeeded);
    job.status = JobStatus::roll_up(job.components.iter().map(|c| c.status));
}
