//! Backups and jobs: `GET /backups`, `GET /backups/{id}`, `POST /backups` (operator; 202 with the
//! job, 409 naming the running job or the maintenance operation), `POST /backups/{id}/restore`
//! (admin; the .pfx files and their passwords are used in memory only), `POST /backups/{id}/validate`
//! (admin; the same, see [`validate`]), `GET /jobs`, `GET /jobs/{id}`, `POST /jobs/{id}/cancel`
//! (operator; 202, 404, 409 naming the status of an ended job), a validation job's
//! reports `GET /jobs/{id}/report` (JSON) and `GET /jobs/{id}/report.html`, and verification:
//! `GET /verification`, `GET /verification/packs`, `POST /verification` (operator).

use crate::auth::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, List, Paged};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::Uri;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use ibs_controller::jobs::validate::{ValidateRequest, MAX_PFX_BYTES};
use ibs_controller::{PfxKey, RestoreRequest};
use ibs_types::{
    ErrorBody, Job, PackCheck, PageQuery, RestoreBody, Role, ValidateBody, VerificationStatus,
};

/// List backups, newest first (paged: `limit`, `cursor`).
#[utoipa::path(get, path = "/api/v1/backups", tag = "backups",
    extensions(("x-ibs-role" = json!("reader"))),
    params(PageQuery),
    responses((status = 200, description = "One page of the backups", body = Vec<Job>,
        headers(
            ("x-next-cursor" = String, description = "The cursor of the next page (absent on the last page)"),
            ("link" = String, description = "`<URL>; rel=\"next\"` (RFC 8288) of the next page (absent on the last page)")))))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<PageQuery>,
) -> ApiResult<Paged<Job>> {
    caller.require(Role::Reader)?;
    let req = paging::request(List::Backups, &q)?;
    Ok(Paged::new(List::Backups, s.ctl.backups_page(&req)?, &uri))
}

/// Show one backup.
#[utoipa::path(get, path = "/api/v1/backups/{id}", tag = "backups",
    extensions(("x-ibs-role" = json!("reader"))),
    params(("id" = String, Path, description = "The backup job's id")),
    responses(
        (status = 200, description = "The backup", body = Job),
        (status = 404, description = "No such backup", body = ErrorBody)))]
pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.backup(&id)?))
}

/// Start an on-demand backup (409 while a job or maintenance runs).
#[utoipa::path(post, path = "/api/v1/backups", tag = "backups",
    extensions(("x-ibs-role" = json!("operator"))),
    responses((status = 202, description = "The backup job, started", body = Job)))]
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

/// List jobs (backups, skipped runs, restores, verifications, validations), newest first (paged).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "backups",
    extensions(("x-ibs-role" = json!("reader"))),
    params(PageQuery),
    responses((status = 200, description = "One page of the jobs", body = Vec<Job>,
        headers(
            ("x-next-cursor" = String, description = "The cursor of the next page (absent on the last page)"),
            ("link" = String, description = "`<URL>; rel=\"next\"` (RFC 8288) of the next page (absent on the last page)")))))]
pub async fn jobs(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<PageQuery>,
) -> ApiResult<Paged<Job>> {
    caller.require(Role::Reader)?;
    let req = paging::request(List::Jobs, &q)?;
    Ok(Paged::new(List::Jobs, s.ctl.jobs_page(&req)?, &uri))
}

/// Show one job with live progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "backups",
    extensions(("x-ibs-role" = json!("reader"))),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn job(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.job(&id)?))
}

/// Cancel a running job (backup, restore, verification or validation).
///
/// The job stops within seconds and ends `Canceled`. Of a backup nothing is committed (no backup is
/// listed for it); a backup whose manifest was already being committed ends with its real outcome.
/// A restore keeps the whole files it already put in place; a verification records no verdicts; a
/// validation writes no report. The cancel is recorded in the audit trail with the caller. 404 for
/// an unknown job; 409 naming the status of a job that already ended.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "backups", operation_id = "cancel_job",
    extensions(("x-ibs-role" = json!("operator"))),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 202, description = "Cancel requested; the job as it is now (poll it until it ends)", body = Job),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has already ended (its status is named)", body = ErrorBody)))]
pub async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Operator)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.ctl.cancel_job(&id, &caller.actor())?),
    ))
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

/// Restore a backup or one component.
///
/// The .pfx files and their passwords are used in memory only. A target that is not empty is
/// refused unless `force` (service components). A backup written by a newer ibs version or
/// repository format revision is refused (409, naming both) unless `allow_newer`; restoring a
/// database component into an older server major version starts with a warning in the job's
/// `warnings`.
#[utoipa::path(post, path = "/api/v1/backups/{id}/restore", tag = "backups",
    extensions(("x-ibs-role" = json!("admin"))),
    params(("id" = String, Path, description = "The backup job's id")),
    request_body = RestoreBody,
    responses(
        (status = 202, description = "The restore job, started", body = Job),
        (status = 404, description = "No such backup", body = ErrorBody),
        (status = 409, description = "The backup was written by a newer ibs (without allow_newer), or a job or maintenance is running", body = ErrorBody),
        (status = 413, description = "A .pfx or the body is too large", body = ErrorBody)))]
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
        allow_newer: b.allow_newer,
    };
    let (job, _handle) = s.ctl.start_restore(&id, req, &caller.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Verification settings, coverage, damaged packs and Corrupted backups.
#[utoipa::path(get, path = "/api/v1/verification", tag = "backups",
    extensions(("x-ibs-role" = json!("reader"))),
    responses((status = 200, description = "Verification status", body = VerificationStatus)))]
pub async fn verification(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<VerificationStatus>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.verification_status()?))
}

/// Per-pack verification records (last verified, result), least recently verified first (paged).
#[utoipa::path(get, path = "/api/v1/verification/packs", tag = "backups",
    extensions(("x-ibs-role" = json!("reader"))),
    params(PageQuery),
    responses((status = 200, description = "One page of the pack records", body = Vec<PackCheck>,
        headers(
            ("x-next-cursor" = String, description = "The cursor of the next page (absent on the last page)"),
            ("link" = String, description = "`<URL>; rel=\"next\"` (RFC 8288) of the next page (absent on the last page)")))))]
pub async fn verification_packs(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<PageQuery>,
) -> ApiResult<Paged<PackCheck>> {
    caller.require(Role::Reader)?;
    let req = paging::request(List::Packs, &q)?;
    Ok(Paged::new(
        List::Packs,
        s.ctl.verification_packs_page(&req)?,
        &uri,
    ))
}

/// Start a verification of a sample of the packs now (409 while a job or maintenance runs).
#[utoipa::path(post, path = "/api/v1/verification", tag = "backups",
    extensions(("x-ibs-role" = json!("operator"))),
    responses((status = 202, description = "The verification job, started", body = Job)))]
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

/// Validate a backup as a job.
///
/// Every chunk is read and every component restored to scratch, databases into temporary
/// databases. The .pfx and its password are used in memory only.
/// 202 with the validation job (poll `GET /api/v1/jobs/{id}`; reports at `/api/v1/jobs/{id}/report`
/// and `report.html`). 400 for a .pfx that is not
/// base64 or not a .pfx (`field: pfx`) or a wrong password (`field: pfx_password`), 413 for a .pfx
/// over [`MAX_PFX_BYTES`], 404 for an unknown backup, 409 while a job or maintenance runs. A .pfx
/// of another certificate, a backup missing from the repository or a damaged pack end the job
/// `Failed` with the reason in its `error` (and, when validation ran, in the report).
#[utoipa::path(post, path = "/api/v1/backups/{id}/validate", tag = "backups",
    extensions(("x-ibs-role" = json!("admin"))),
    params(("id" = String, Path, description = "The backup job's id")),
    request_body = ValidateBody,
    responses(
        (status = 202, description = "The validation job, started", body = Job),
        (status = 404, description = "No such backup", body = ErrorBody),
        (status = 413, description = "The .pfx or the body is too large", body = ErrorBody)))]
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
    let (job, _handle) = s.ctl.start_validation(&id, req, &caller.actor())?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// A validation job's report as JSON (404 until written).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/report", tag = "backups",
    extensions(("x-ibs-role" = json!("reader"))),
    params(("id" = String, Path, description = "The validation job's id")),
    responses(
        (status = 200, description = "The report", body = Object),
        (status = 404, description = "No such job or no report yet", body = ErrorBody)))]
pub async fn report(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Reader)?;
    let body = s.ctl.report(&id, "json")?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}

/// A validation job's report as one self-contained HTML page.
///
/// No scripts; the Content-Security-Policy allows only its inline style.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/report.html", tag = "backups",
    extensions(("x-ibs-role" = json!("reader"))),
    params(("id" = String, Path, description = "The validation job's id")),
    responses(
        (status = 200, description = "The report page", body = String, content_type = "text/html"),
        (status = 404, description = "No such job or no report yet", body = ErrorBody)))]
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
