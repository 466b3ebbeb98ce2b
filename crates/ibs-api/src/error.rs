//! `ApiError`: a status code and a safe JSON body, [`ErrorBody`]:
//! `{"error": {"code", "message", "field"?, "details"?}}`.
//! Controller errors map to statuses here and nowhere else: Invalid → 400, Conflict → 409,
//! NotFound → 404, Storage (accessibility test) → 400 with the alert class, Db/Internal → 500
//! (with a generic message; the detail goes to the log).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ibs_controller::ControllerError;
use ibs_types::{ErrorBody, ErrorDetail};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            details: None,
        }
    }
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid", message)
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer TOKEN)",
        )
    }
}

impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::Invalid { field, message } => {
                let m = format!("{field}: {message}");
                ApiError {
                    field: Some(field),
                    ..Self::new(StatusCode::BAD_REQUEST, "invalid", m)
                }
            }
            ControllerError::Conflict { message, details } => ApiError {
                details,
                ..Self::new(StatusCode::CONFLICT, "conflict", message)
            },
            ControllerError::NotFound(what) => Self::not_found(format!("{what} not found")),
            ControllerError::Storage { class, message } => ApiError {
                field: Some("path".into()),
                details: Some(json!({
                    "alert_class": class.as_str(),
                    "description": class.description(),
                    "remediation": class.remediation(),
                })),
                ..Self::new(StatusCode::BAD_REQUEST, "location-inaccessible", message)
            },
            other => {
                tracing::error!("internal error: {other}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the controller log",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                details: self.details,
                field: self.field,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
