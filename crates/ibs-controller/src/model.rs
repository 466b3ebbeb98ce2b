//! The controller's data model shared with the API and the CLI: jobs, their states, triggers,
//! per-component results, live progress, token roles and maintenance. The types live in
//! `ibs-types` (the API's wire types); this module re-exports them under their old paths.

pub use ibs_types::admin::{Maintenance, MaintenanceOp, MaintenanceOutcome, Role};
pub use ibs_types::job::{
    ComponentResult, Corruption, Job, JobKind, JobProgress, JobStatus, Trigger, VerifySummary,
};
pub use ibs_types::location::{
    DEFAULT_FREQUENCY_HOURS, DEFAULT_RETENTION_DAYS, DEFAULT_VERIFY_EVERY_HOURS,
    DEFAULT_VERIFY_SAMPLE_PERCENT, FREQUENCY_RANGE, RETENTION_RANGE, VERIFY_EVERY_RANGE,
    VERIFY_SAMPLE_RANGE,
};

/// Milliseconds since `began` (job durations: monotonic, whatever the controller's clock does).
pub(crate) fn elapsed_ms(began: std::time::Instant) -> u64 {
    began.elapsed().as_millis() as u64
}
