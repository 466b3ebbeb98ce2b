//! The administrative resources on the wire: token roles, the maintenance gate and its request
//! bodies, readiness and capacity, alerts, store prune, tokens and the audit log.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// API token roles, each including the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// The operation named as on the wire (`update`, `fru`, `secret-rotation`).
    pub fn parse(s: &str) -> Option<Self> {
        [
            MaintenanceOp::Update,
            MaintenanceOp::Fru,
            MaintenanceOp::SecretRotation,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceOutcome {
    Succeeded,
    Failed,
}

impl MaintenanceOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceOutcome::Succeeded => "succeeded",
            MaintenanceOutcome::Failed => "failed",
        }
    }
    /// The outcome named as on the wire (`succeeded`, `failed`).
    pub fn parse(s: &str) -> Option<Self> {
        [MaintenanceOutcome::Succeeded, MaintenanceOutcome::Failed]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Where a maintenance operation is: `active` while running; `failed` after it ended as failed
/// (scheduled backups stay skipped until it succeeds or an admin clears it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceState {
    Active,
    Failed,
}

/// The maintenance gate's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// What holds the job gate; its text names the job in a 409 and in `running_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// `POST /api/v1/maintenance`: begin a maintenance operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginMaintenance {
    pub operation: MaintenanceOp,
}

/// `DELETE /api/v1/maintenance` or `POST /api/v1/maintenance/end`: end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndMaintenance {
    pub outcome: MaintenanceOutcome,
}

/// Whether update tooling may proceed (`GET /api/v1/readiness`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub backup_running: bool,
    pub running_job: Option<String>,
    pub running_kind: Option<GateKind>,
    pub maintenance: Option<Maintenance>,
}

/// Free and total bytes of the share, as last measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    pub available: u64,
    pub total: u64,
    pub at: i64,
}

/// An alert as listed and closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    pub id: i64,
    pub kind: String,
    pub category: String,
    pub severity: String,
    pub title: String,
    pub description: String,
    pub remediation: String,
    pub details: String,
    /// `open` or `closed`.
    pub state: String,
    pub raised_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub closed_by: Option<String>,
}

/// `GET /api/v1/alerts?state=open|all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `open` (default) or `all`.
    pub state: Option<String>,
}

/// `POST /api/v1/store/prune`; an empty body is a real prune.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// List what would be deleted, delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a store prune deleted (or with `dry_run` would delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Paths (relative to the location) of files under MASBackup that ibs did not create.
    pub paths: Vec<String>,
}

/// `POST /api/v1/tokens`: create a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: Role,
    /// Default: `created by <the caller>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The token expires this many seconds after its creation (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub expires_in_seconds: Option<i64>,
}

/// The answer to `POST /api/v1/tokens`: the only time the token is shown.
// Deliberately no `Debug`. Fields in alphabetical order: the body's byte layout predates this type.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// Unix seconds, or null for a token that never expires.
    pub expires_at: Option<i64>,
    pub role: Role,
    /// The bearer token.
    pub token: String,
}

/// A stored token as listed (never the token itself, nor its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub role: String,
    pub label: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// True when `expires_at` has passed (the token is refused).
    pub expired: bool,
}

/// One audit record: who changed what, when. `fields` names the changed fields, never their values
/// when they are secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub fields: Vec<String>,
}
