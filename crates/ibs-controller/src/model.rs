//! The controller's data model shared with the API and the CLI: jobs, their states, triggers,
//! per-component results, live progress, and token roles. Pure data; no I/O.

use ibs_repo::manifest::BackupStatus;
use serde::{Deserialize, Serialize};

pub const DEFAULT_FREQUENCY_HOURS: u32 = 12;
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
pub const FREQUENCY_RANGE: (u32, u32) = (1, 24);
pub const RETENTION_RANGE: (u32, u32) = (1, 90);
pub const DEFAULT_VERIFY_EVERY_HOURS: u32 = 24;
/// From hourly to every 30 days.
pub const VERIFY_EVERY_RANGE: (u32, u32) = (1, 720);
pub const DEFAULT_VERIFY_SAMPLE_PERCENT: u32 = 10;
pub const VERIFY_SAMPLE_RANGE: (u32, u32) = (1, 100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Scheduled,
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    PartialSucceeded,
    Failed,
    Skipped,
    Interrupted,
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
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
    /// A finished job's outcome in the engine's terms; `None` for a job that did not end as one
    /// of Succeeded, PartialSucceeded or Failed.
    pub fn backup_outcome(self) -> Option<BackupStatus> {
        match self {
            JobStatus::Succeeded => Some(BackupStatus::Succeeded),
            JobStatus::PartialSucceeded => Some(BackupStatus::PartialSucceeded),
            JobStatus::Failed => Some(BackupStatus::Failed),
            _ => None,
        }
    }
    /// The engine's roll-up ([`ibs_engine::status::roll_up`]) over components' statuses; a
    /// status that is not an outcome counts as a partial success.
    pub fn roll_up(parts: impl IntoIterator<Item = JobStatus>) -> JobStatus {
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

/// What holds the job gate; its text names the job in a 409 and in `running_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateKind {
    #[serde(rename = "backup")]
    Backup,
    #[serde(rename = "restore")]
    Restore,
    #[serde(rename = "retention cleanup")]
    RetentionCleanup,
    #[serde(rename = "store prune")]
    StorePrune,
    #[serde(rename = "verification")]
    Verification,
    #[serde(rename = "validation")]
    Validation,
    /// Clearing the location configuration (held for the few milliseconds it takes).
    #[serde(rename = "location clear")]
    LocationClear,
}

impl GateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GateKind::Backup => "backup",
            GateKind::Restore => "restore",
            GateKind::RetentionCleanup => "retention cleanup",
            GateKind::StorePrune => "store prune",
            GateKind::Verification => "verification",
            GateKind::Validation => "validation",
            GateKind::LocationClear => "location clear",
        }
    }
}

impl std::fmt::Display for GateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one component in one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub cause: Option<crate::kinds::Cause>,
    /// Service kinds: what each export recorded at backup time (row and key counts), used to
    /// verify a restore.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub exports: Vec<crate::kinds::ExportInfo>,
}

/// Live progress of a running job (from `ibs_engine::Progress`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct JobProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    pub percent: Option<f64>,
    pub eta_seconds: Option<u64>,
}

/// One job record as stored and as served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub is_cloud_recovery_ready: bool,
    pub progress: Option<JobProgress>,
    /// Why the job failed or was skipped (never contains a secret).
    pub error: Option<String>,
    /// The alert class of a failure (`capacity`, `connectivity`, `path`, `authentication`, `general`).
    pub alert_class: Option<String>,
    /// The repository backup id (the manifest name) once committed.
    pub backup_id: Option<String>,
    /// The id of the repository the backup was committed to (absent in records older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
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
}

/// Why a backup is marked Corrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
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
            is_cloud_recovery_ready: false,
            progress: None,
            error: None,
            alert_class: None,
            backup_id: None,
            repository_id: None,
            source_job: None,
            deleted_at: None,
            corrupted: None,
            verification: None,
        }
    }
}

/// API token roles, each including the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything except secrets (which are never readable).
    Reader,
    /// Reader + start backups + maintenance begin/end.
    Operator,
    /// Operator + settings, restore, tokens, closing alerts, store prune.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A maintenance operation that excludes backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaintenanceOp {
    Update,
    Fru,
    SecretRotation,
}

impl MaintenanceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceOp::Update => "update",
            MaintenanceOp::Fru => "fru",
            MaintenanceOp::SecretRotation => "secret-rotation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceOutcome {
    Succeeded,
    Failed,
}

/// Where a maintenance operation is: `active` while running; `failed` after it ended as failed
/// (scheduled backups stay skipped until it succeeds or an admin clears it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceState {
    Active,
    Failed,
}

/// The maintenance gate's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub operation: MaintenanceOp,
    pub state: MaintenanceState,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub started_by: String,
}

impl Maintenance {
    pub fn skip_reason(&self) -> String {
        if self.state == MaintenanceState::Failed {
            format!(
                "maintenance: {} failed; scheduled backups are skipped until it succeeds or an admin clears it",
                self.operation.as_str()
            )
        } else {
            format!("maintenance: {} in progress", self.operation.as_str())
        }
    }
    pub fn is_active(&self) -> bool {
        self.state == MaintenanceState::Active
    }
    pub fn is_failed(&self) -> bool {
        self.state == MaintenanceState::Failed
    }
}

/// Milliseconds since `began` (job durations: monotonic, whatever the controller's clock does).
pub(crate) fn elapsed_ms(began: std::time::Instant) -> u64 {
    began.elapsed().as_millis() as u64
}
