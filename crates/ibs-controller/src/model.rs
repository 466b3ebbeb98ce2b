//! The controller's data model shared with the API and the CLI: jobs, their states, triggers,
//! per-component results, live progress, token roles, maintenance and what holds the job gate. The
//! types live in `ibs-types` (the API's wire types); this module re-exports them under their old
//! paths and adds what ties a job status to the engine ([`JobOutcome`]).

use ibs_repo::manifest::BackupStatus;

pub use ibs_types::admin::{
    GateKind, Maintenance, MaintenanceOp, MaintenanceOutcome, MaintenanceState, Role,
};
pub use ibs_types::job::{
    BackupMetadata, ComponentResult, Corruption, Job, JobErrorCode, JobKind, JobProgress,
    JobStatus, Trigger, VerifySummary,
};
pub use ibs_types::location::{
    DEFAULT_FREQUENCY_HOURS, DEFAULT_RETENTION_DAYS, DEFAULT_VERIFY_EVERY_HOURS,
    DEFAULT_VERIFY_SAMPLE_PERCENT, FREQUENCY_RANGE, RETENTION_RANGE, VERIFY_EVERY_RANGE,
    VERIFY_SAMPLE_RANGE,
};

/// A job status in the engine's terms (`JobStatus` lives in `ibs-types`, which knows no engine).
pub trait JobOutcome {
    /// A finished job's outcome in the engine's terms; `None` for a job that did not end as one
    /// of Succeeded, PartialSucceeded or Failed.
    fn backup_outcome(self) -> Option<BackupStatus>;
    /// The engine's roll-up ([`ibs_engine::status::roll_up`]) over components' statuses; a
    /// status that is not an outcome counts as a partial success.
    fn roll_up(parts: impl IntoIterator<Item = JobStatus>) -> JobStatus;
}

impl JobOutcome for JobStatus {
    fn backup_outcome(self) -> Option<BackupStatus> {
        match self {
            JobStatus::Succeeded => Some(BackupStatus::Succeeded),
            JobStatus::PartialSucceeded => Some(BackupStatus::PartialSucceeded),
            JobStatus::Failed => Some(BackupStatus::Failed),
            _ => None,
        }
    }
    fn roll_up(parts: impl IntoIterator<Item = JobStatus>) -> JobStatus {
        let outcomes = parts
            .into_iter()
            .map(|s| s.backup_outcome().unwrap_or(BackupStatus::PartialSucceeded));
        match ibs_engine::status::roll_up(outcomes) {
            BackupStatus::Succeeded => JobStatus::Succeeded,
            BackupStatus::PartialSucceeded => JobStatus::PartialSucceeded,
            BackupStatus::Failed => JobStatus::Failed,
        }
    }
}

/// Milliseconds since `began` (job durations: monotonic, whatever the controller's clock does).
pub(crate) fn elapsed_ms(began: std::time::Instant) -> u64 {
    began.elapsed().as_millis() as u64
}
