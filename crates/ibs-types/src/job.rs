//! Jobs as stored and served: kind, trigger, state, live progress, per-component results, and what
//! a verification found (corruption markers, coverage). Pure data plus the status names.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Scheduled,
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Backup,
    Restore,
    /// Scheduled or on-demand verification of a sample of the packs on the share.
    Verify,
    /// Backup validation (`POST /backups/{id}/validate`), hosted for `ibs-recovery`.
    Validate,
}

/// A job's state. `Succeeded` and `PartialSucceeded` are set only after the engine returned, i.e.
/// after the backup's manifest was committed to storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    PartialSucceeded,
    Failed,
    Skipped,
    Interrupted,
    /// Stopped on request (`POST /jobs/{id}/cancel`) before it committed anything.
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "Queued",
            JobStatus::Running => "Running",
            JobStatus::Succeeded => "Succeeded",
            JobStatus::PartialSucceeded => "PartialSucceeded",
            JobStatus::Failed => "Failed",
            JobStatus::Skipped => "Skipped",
            JobStatus::Interrupted => "Interrupted",
            JobStatus::Canceled => "Canceled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::PartialSucceeded,
            JobStatus::Failed,
            JobStatus::Skipped,
            JobStatus::Interrupted,
            JobStatus::Canceled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// The result of one component in one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComponentResult {
    pub name: String,
    pub kind: String,
    pub status: JobStatus,
    pub essential_for_recovery: bool,
    /// The engine source names this component was stored under.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub files: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    /// Service kinds: why the component failed (authentication, unreachable, missing tool, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cause: Option<crate::component::Cause>,
    /// Service kinds: what each export recorded at backup time (row and key counts), used to
    /// verify a restore.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub exports: Vec<crate::component::ExportInfo>,
    /// Service kinds: the version the server reported when the backup read it (PostgreSQL
    /// `server_version`, MariaDB `VERSION()`, Redis `redis_version`, the SQLite library's
    /// version), as recorded in the backup's catalog.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server_version: Option<String>,
}

/// Who wrote a backup, as its catalog in the repository records it (absent for backups written
/// before ibs recorded it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupMetadata {
    /// The id of the deployment (controller or CLI writer host) that wrote it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deployment_id: Option<String>,
    /// The version of the ibs build that wrote it.
    pub ibs_version: String,
    /// The repository format revision of that build.
    pub format_revision: u32,
}

/// Live progress of a running job (from `ibs_engine::Progress`); a finished restore keeps its final
/// counts (the files and bytes it restored).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema, Default)]
pub struct JobProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    pub percent: Option<f64>,
    pub eta_seconds: Option<u64>,
}

/// One job record as stored and as served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub trigger: Trigger,
    pub status: JobStatus,
    pub components: Vec<ComponentResult>,
    /// Unix seconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Measured with a monotonic clock, in milliseconds (the timestamps have second precision
    /// and come from the controller's clock).
    pub duration_ms: Option<u64>,
    pub bytes_read: u64,
    pub bytes_stored: u64,
    pub certificate_thumbprint: Option<String>,
    /// Every component marked `essential_for_recovery` succeeded: the backup can rebuild the
    /// deployment (`ibs recover`). The same name as the repository catalog's `recovery_ready`
    /// and the CLI's RECOVERY-READY column; records stored before the rename used
    /// `is_cloud_recovery_ready`, still read.
    #[serde(alias = "is_cloud_recovery_ready")]
    pub recovery_ready: bool,
    pub progress: Option<JobProgress>,
    /// Why the job failed or was skipped (never contains a secret).
    pub error: Option<String>,
    /// The alert class of a failure (`capacity`, `connectivity`, `path`, `authentication`, `general`).
    pub alert_class: Option<String>,
    /// A failure that is a refusal rather than a fault: set instead of `alert_class` (and raising
    /// no alert) when the job refused to act, e.g. a restore whose target holds files that differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<JobErrorCode>,
    /// The repository backup id (the manifest name) once committed.
    pub backup_id: Option<String>,
    /// The id of the repository the backup was committed to (absent in records older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    /// For a backup job: the location (share UNC path, S3 location or local folder) the backup
    /// was written to, as configured when it started (absent in records older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// For a backup job: the backup is at a location other than the current one (the location was
    /// changed since), so the controller cannot restore or validate it until the location is set
    /// back; `location` names where it is. Computed when the record is served, never stored.
    #[serde(default)]
    pub previous_location: bool,
    /// For a restore job: the backup job it restores.
    pub source_job: Option<String>,
    /// Set when retention removed this backup from the store.
    pub deleted_at: Option<i64>,
    /// A backup some of whose data is in damaged packs with no healthy copy: it cannot be fully
    /// restored. `status` keeps the backup's original outcome.
    #[serde(default)]
    pub corrupted: Option<Corruption>,
    /// For a verification job: what it checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerifySummary>,
    /// For a backup job: who wrote the backup (deployment, ibs version, format revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BackupMetadata>,
    /// For a restore job: warnings given before it started (e.g. a database restored into an
    /// older server major version, or a backup from a newer build restored with `allow_newer`).
    /// For a backup job: warnings about the repository (a prune plan that does not open under the
    /// metadata key was ignored, ADR 0044).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Why a job refused to act. Clients map it like the HTTP status it stands for
/// (`conflict`: 409, the CLI's exit code 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobErrorCode {
    /// A restore target holds a file that differs from the backup's and `force` (`--overwrite`)
    /// was not given; `error` names the first such file. Nothing was written.
    Conflict,
}

/// Why a backup is marked Corrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Corruption {
    /// Unix seconds of the verification (or backup) that first found it.
    pub since: i64,
    /// The affected components (by name).
    pub components: Vec<String>,
    /// The affected engine sources.
    pub sources: Vec<String>,
    /// The backup's manifest predates per-source references: every component is listed because
    /// the affected ones cannot be told apart.
    pub all_components: bool,
    /// The damaged packs (hex ids) holding the only copies of its lost chunks.
    pub packs: Vec<String>,
    pub lost_chunks: usize,
}

/// What one verification job did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, Default)]
pub struct VerifySummary {
    pub sample_percent: u32,
    /// Packs known (indexed or stored) when the job started.
    pub packs_total: u64,
    pub packs_checked: u64,
    pub bytes_read: u64,
    /// Packs this job found damaged (missing, unreadable, or failing their hash).
    pub damaged_found: u64,
    /// Share (0–1) of the current packs verified at least once.
    pub coverage_ever: f64,
    /// Share (0–1) of the current packs verified within the last `coverage_window_runs` runs.
    pub coverage_window: f64,
    /// ceil(100 / sample_percent): the runs one full pass over the packs takes.
    pub coverage_window_runs: u32,
    /// Backups marked Corrupted after this job.
    pub corrupted_backups: Vec<String>,
}

impl Job {
    pub fn new(id: String, kind: JobKind, trigger: Trigger, status: JobStatus, now: i64) -> Self {
        Job {
            id,
            kind,
            trigger,
            status,
            components: Vec::new(),
            created_at: now,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            bytes_read: 0,
            bytes_stored: 0,
            certificate_thumbprint: None,
            recovery_ready: false,
            progress: None,
            error: None,
            alert_class: None,
            error_code: None,
            backup_id: None,
            repository_id: None,
            location: None,
            previous_location: false,
            source_job: None,
            deleted_at: None,
            corrupted: None,
            verification: None,
            metadata: None,
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stored_before_the_rename_read_recovery_ready_and_no_error_code() {
        let mut old = serde_json::to_value(Job::new(
            "j".into(),
            JobKind::Backup,
            Trigger::OnDemand,
            JobStatus::Succeeded,
            1,
        ))
        .unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("recovery_ready");
        o.remove("error_code");
        o.insert("is_cloud_recovery_ready".into(), true.into());
        let j: Job = serde_json::from_value(old).unwrap();
        assert!(j.recovery_ready);
        assert_eq!(j.error_code, None);
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["recovery_ready"], true);
        assert!(v.get("is_cloud_recovery_ready").is_none() && v.get("error_code").is_none());
        let mut j = j;
        j.error_code = Some(JobErrorCode::Conflict);
        assert_eq!(serde_json::to_value(&j).unwrap()["error_code"], "conflict");
    }
}
