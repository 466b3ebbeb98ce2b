//! The bodies and queries of the job-starting and listing operations: restore and validate (each
//! carrying a .pfx as base64 and its password), list limits, and what verification shows
//! (`GET /verification`, `GET /verification/packs`).
//!
//! The bodies holding a .pfx password deliberately have no `Debug`.

use crate::job::Job;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `?limit=N` of `GET /api/v1/backups` and `GET /api/v1/jobs` (default 100, at most 10000).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub limit: Option<u32>,
}

/// `POST /api/v1/backups/{id}/restore`: restore a backup or one component. The .pfx files and their
/// passwords are used in memory only.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// One component by name; absent: every component.
    pub component: Option<String>,
    /// An absolute folder, or a service URL for a service component.
    pub target: String,
    /// Replace a non-empty target (service components).
    #[serde(default)]
    pub force: bool,
    /// The .pfx, base64 (at most 64 KiB decoded).
    #[schema(content_encoding = "base64")]
    pub pfx: String,
    #[schema(write_only)]
    pub pfx_password: String,
    /// Further .pfx files, each with its own password (e.g. the old certificate's and the new
    /// one's after a rotation); every data key is opened with whichever it is wrapped for. At most
    /// 16 .pfx files in all.
    #[serde(default)]
    pub more_pfx: Vec<PfxBody>,
    /// Restore a backup written by a newer ibs version or repository format revision than this
    /// controller's (refused with 409 otherwise).
    #[serde(default)]
    pub allow_newer: bool,
}

/// One further .pfx of a restore.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PfxBody {
    /// The .pfx, base64 (at most 64 KiB decoded).
    #[schema(content_encoding = "base64")]
    pub pfx: String,
    #[schema(write_only)]
    pub pfx_password: String,
}

/// `POST /api/v1/backups/{id}/validate`: the .pfx of the backup's certificate as base64 and its
/// password (used in memory only).
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The .pfx, base64 (at most 64 KiB decoded).
    #[schema(content_encoding = "base64")]
    pub pfx: String,
    #[schema(write_only)]
    pub pfx_password: String,
}

/// The last verification of one pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PackCheck {
    /// Hex pack id.
    pub pack: String,
    /// Unix seconds of the last verification.
    pub verified_at: i64,
    pub ok: bool,
    /// What was wrong (`missing: …`, `hash-mismatch: …`), when not ok.
    pub reason: Option<String>,
    pub bytes: u64,
    /// How many times the pack was verified.
    pub checks: u64,
}

/// What `GET /api/v1/verification` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerificationStatus {
    pub verify_every_hours: u32,
    pub verify_sample_percent: u32,
    /// Unix seconds, as every time of the API.
    pub next_verification_time: Option<i64>,
    /// The last verification job that ran (not skipped).
    pub last_run: Option<Job>,
    /// Packs with a verification record.
    pub packs_recorded: u64,
    /// Packs known at the last run (indexed or stored).
    pub packs_total: u64,
    pub coverage_ever: f64,
    pub coverage_window: f64,
    /// Unix seconds.
    pub oldest_verified_at: Option<i64>,
    /// Unix seconds.
    pub newest_verified_at: Option<i64>,
    /// Packs whose last verification found damage.
    pub damaged: Vec<PackCheck>,
    /// Backup job ids currently marked Corrupted.
    pub corrupted_backups: Vec<String>,
}
