//! Backups and jobs: `GET /backups`, `GET /backups/{id}`, `POST /backups` (operator; 202 with the
//! job, 409 naming the running job or the maintenance operation), `POST /backups/{id}/restore`
//! (admin; the .pfx files and their passwords are used in memory only), `POST /backups/{id}/validate`
//! (admin; the same, see [`validate`]), `GET /jobs`, `GET /jobs/{id}`, a validation job's
//! reports `GET /jobs/{id}/report` (JSON) and `GET /jobs/{id}/report.html`, and verification:
//! `GET /verification`, `GET /verification/packs`, `POST /verification` (operator).

use crate::auth::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use ibs_controller::model::{Job, Role};
use ibs_controller::{PfxKey, RestoreRequest};
use ibs_recovery::job::{ValidateRequest, MAX_PFX_BYTES};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Job>>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.backups(q.limit.unwrap_or(100).min(10_000))?))
}

pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.backup(&id)?))
}

pub async fn start(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Operator)?;
    let (job, _handle) = s.ctl.start_backup()?;
    s.ctl.audit(
        &caller.actor(),
        "backup.start",
        std::slice::from_ref(&job.id),
    )?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

pub async fn jobs(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Job>>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.jobs(q.limit.unwrap_or(100).min(10_000))?))
}

pub async fn job(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.job(&id)?))
}

/// The restore request body. Deliberately no `Debug`: it holds the .pfx password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    component: Option<String>,
    target: String,
    /// Replace a non-empty target (service components).
    #[serde(default)]
    force: bool,
    /// The .pfx, base64.
    pfx: String,
    pfx_password: String,
    /// Further .pfx files, each with its own password (e.g. the old certificate's and the new
    /// one's after a rotation); every data key is opened with whichever it is wrapped for.
    #[serde(default)]
    more_pfx: Vec<PfxBody>,
}

/// One further .pfx of a restore. Deliberately no `Debug`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PfxBody {
    /// The .pfx, base64.
    pfx: String,
    pfx_password: String,
}

/// At most this many .pfx files in one restore request.
const MAX_PFX_FILES: usize = 16;

fn decode_pfx(field: &str, b64: &str) -> Result<Vec<u8>, ApiError> {
    if b64.trim().len() > MAX_PFX_BYTES.div_ceil(3) * 4 {
        return Err(ApiError {
            field: Some(field.into()),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("{field}: a .pfx is at most {MAX_PFX_BYTES} bytes"),
            )
        });
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| ApiError::bad_request(field, format!("{field}: not base64")))
}

pub async fn restore(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RestoreBody>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Admin)?;
    if b.more_pfx.len() >= MAX_PFX_FILES {
        return Err(ApiError::bad_request(
            "more_pfx",
            format!("more_pfx: at most {MAX_PFX_FILES} .pfx files in all"),
        ));
    }
    let pfx = decode_pfx("pfx", &b.pfx)?;
    let more_keys = b
        .more_pfx
        .into_iter()
        .map(|k| {
            Ok(PfxKey {
                pfx: decode_pfx("more_pfx", &k.pfx)?,
                password: k.pfx_password,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let req = RestoreRequest {
        component: b.component,
        target: b.target.into(),
        force: b.force,
        pfx,
        pfx_password: b.pfx_password,
        more_keys,
    };
    let (job, _handle) = s.ctl.start_restore(&id, req, &caller.actor())?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// `GET /verification`: settings, coverage, the damaged packs and the Corrupted backups.
pub async fn verification(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ibs_controller::VerificationStatus>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.verification_status()?))
}

/// `GET /verification/packs`: the per-pack records (when each pack was last verified, and what
/// that found), least recently verified first.
pub async fn verification_packs(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ibs_controller::db_verify::PackCheck>>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.verification_packs()?))
}

/// `POST /verification`: start a verification now (operator; 202 with the job, 409 while a job
/// or maintenance runs).
pub async fn start_verification(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Operator)?;
    let (job, _handle) = s.ctl.start_verification()?;
    s.ctl.audit(
        &caller.actor(),
        "verification.start",
        std::slice::from_ref(&job.id),
    )?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// The validation request body: the .pfx as base64 and its password. Deliberately no `Debug`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The .pfx, base64 (at most [`MAX_PFX_BYTES`] decoded).
    pfx: String,
    pfx_password: String,
}

/// `POST /backups/{id}/validate` (admin): 202 with the validation job. 400 for a .pfx that is not
/// base64 or not a .pfx (`field: pfx`) or a wrong password (`field: pfx_password`), 413 for a .pfx
/// over [`MAX_PFX_BYTES`], 404 for an unknown backup, 409 while a job or maintenance runs. A .pfx
/// of another certificate, a backup missing from the repository or a damaged pack end the job
/// `Failed` with the reason in its `error` (and, when validation ran, in the report).
pub async fn validate(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ValidateBody>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Admin)?;
    let too_large = || ApiError {
        field: Some("pfx".into()),
        ..ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("pfx: a .pfx is at most {MAX_PFX_BYTES} bytes"),
        )
    };
    if b.pfx.trim().len() > MAX_PFX_BYTES.div_ceil(3) * 4 {
        return Err(too_large());
    }
    let pfx = base64::engine::general_purpose::STANDARD
        .decode(b.pfx.trim())
        .map_err(|_| ApiError::bad_request("pfx", "pfx: not base64"))?;
    if pfx.len() > MAX_PFX_BYTES {
        return Err(too_large());
    }
    let req = ValidateRequest {
        pfx,
        pfx_password: b.pfx_password,
    };
    let (job, _handle) = ibs_recovery::job::start_validation(&s.ctl, &id, req, &caller.actor())?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// `GET /jobs/{id}/report`: a validation job's JSON report (404 until it is written).
pub async fn report(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Reader)?;
    let body = s.ctl.report(&id, "json")?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

/// `GET /jobs/{id}/report.html`: the same report as one self-contained page (no scripts; the
/// Content-Security-Policy allows only its inline style).
pub async fn report_html(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Reader)?;
    let body = s.ctl.report(&id, "html")?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        body,
    ))
}
