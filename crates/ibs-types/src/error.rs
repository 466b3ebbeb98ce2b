//! The body of every JSON error response: `{"error": {"code", "message", "field"?, "details"?}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every non-2xx JSON response of `/api/v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
// Fields are in alphabetical order: the body's byte layout predates this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid`, `unauthorized`, `forbidden`, `not-found`, `conflict`, `too-large`,
    /// `unsupported-media-type`, `location-inaccessible`, `internal`, …
    pub code: String,
    /// Structured context: the running job of a conflict, what a retention change would delete,
    /// the alert class and remediation of an inaccessible location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// The request field the error concerns, when one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Never contains a secret.
    pub message: String,
}
