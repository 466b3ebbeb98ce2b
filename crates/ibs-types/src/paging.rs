//! Paging of the list operations (ADR 0024): the query every list takes (`limit`, `cursor`), the
//! bounds of `limit`, the names of the headers carrying the next page's cursor, and the
//! operations list (`GET /api/v1/operations`) with its filters.
//!
//! A list answers a JSON array, as before paging existed; when more rows follow, the answer carries
//! `X-Next-Cursor: CURSOR` and `Link: <URL>; rel="next"` (RFC 8288). The cursor is opaque: it names
//! the list it belongs to and the sort key of the last row served, so the next page starts right
//! after that row however many rows were added meanwhile (keyset paging).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `limit` when none is given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` accepted (a larger one is refused with 400, `field: limit`).
pub const MAX_LIMIT: u32 = 1000;
/// The response header carrying the next page's cursor (absent on the last page).
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// `?limit=N&cursor=C` of every list operation. Both are kept as text here so that a malformed
/// value gets a 400 naming its field rather than a generic query rejection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page: 1 to 1000, default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `X-Next-Cursor` of the previous page (opaque); absent: the first page.
    pub cursor: Option<String>,
}

/// Parses `limit` (default [`DEFAULT_LIMIT`], 1..=[`MAX_LIMIT`]); the error is the message of a
/// 400 with `field: limit`.
pub fn parse_limit(limit: Option<&str>) -> Result<u32, String> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(t) => match t.trim().parse::<u64>() {
            Ok(n) if (1..=u64::from(MAX_LIMIT)).contains(&n) => Ok(n as u32),
            _ => Err(format!(
                "limit: {t:?} is not a whole number from 1 to {MAX_LIMIT}"
            )),
        },
    }
}

/// The kind of an entry of `GET /api/v1/operations`: the four job kinds and the operations the
/// controller runs outside the job records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    Backup,
    Restore,
    Verify,
    Validate,
    /// The hourly forget + prune.
    RetentionCleanup,
    /// An update or FRU window (`POST /api/v1/maintenance`).
    Maintenance,
    /// `DELETE /api/v1/location`.
    LocationClear,
    /// `POST /api/v1/store/prune` (not a dry run).
    StorePrune,
}

impl OperationKind {
    pub const ALL: [OperationKind; 8] = [
        OperationKind::Backup,
        OperationKind::Restore,
        OperationKind::Verify,
        OperationKind::Validate,
        OperationKind::RetentionCleanup,
        OperationKind::Maintenance,
        OperationKind::LocationClear,
        OperationKind::StorePrune,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Backup => "backup",
            OperationKind::Restore => "restore",
            OperationKind::Verify => "verify",
            OperationKind::Validate => "validate",
            OperationKind::RetentionCleanup => "retention-cleanup",
            OperationKind::Maintenance => "maintenance",
            OperationKind::LocationClear => "location-clear",
            OperationKind::StorePrune => "store-prune",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// The four kinds recorded as jobs (`GET /api/v1/jobs/{id}` has their detail).
    pub fn is_job(self) -> bool {
        matches!(
            self,
            OperationKind::Backup
                | OperationKind::Restore
                | OperationKind::Verify
                | OperationKind::Validate
        )
    }
}

impl std::fmt::Display for OperationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `GET /api/v1/operations`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    /// A job's id, or `op-N` for an operation outside the job records.
    pub id: String,
    pub kind: OperationKind,
    /// A job status name (`Running`, `Succeeded`, `Failed`, `Skipped`, …).
    pub status: crate::job::JobStatus,
    /// Unix seconds: when it began (a job: when it was created).
    pub started_at: i64,
    /// Unix seconds, once it ended.
    pub ended_at: Option<i64>,
    /// Who or what started it: `scheduled`, `on-demand`, or the caller (`admin#1`, …).
    pub trigger: String,
    /// Live progress while a job runs.
    pub progress: Option<crate::job::JobProgress>,
    /// What it concerns (the maintenance operation, the failure reason, …).
    pub detail: Option<String>,
    /// Where the detailed record is (`/api/v1/jobs/ID` for a job).
    pub link: Option<String>,
}

/// `GET /api/v1/operations?running=true&kind=backup`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OperationsQuery {
    /// `true`: only what runs now (status Queued or Running); `false` or absent: everything.
    #[param(value_type = Option<bool>)]
    pub running: Option<String>,
    /// Only this kind: backup, restore, verify, validate, retention-cleanup, maintenance,
    /// location-clear, store-prune.
    pub kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bounds() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("1000")), Ok(1000));
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(parse_limit(Some(bad)).unwrap_err().starts_with("limit:"));
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in OperationKind::ALL {
            assert_eq!(OperationKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
