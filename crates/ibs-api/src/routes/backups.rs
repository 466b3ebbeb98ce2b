//! Backups and jobs: `GET /backups`, `GET /backups/{id}`, `POST /backups` (operator; 202 with the
//! job, 409 naming the running job or the maintenance operation), `POST /backups/{id}/restore`
//! (admin; the .pfx and its password are used in memory only), `GET /jobs`, `GET /jobs/{id}`,
//! and verification: `GET /verification`, `GET /verification/packs`, `POST /verification`
//! (operator).

use crate::auth::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine as _;
use ibs_controller::model::{Job, Role};
use ibs_controller::restore_job::RestoreRequest;
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
    s.ctl.db().audit(
        s.ctl.now(),
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
}

pub async fn restore(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RestoreBody>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Admin)?;
    let pfx = base64::engine::general_purpose::STANDARD
        .decode(b.pfx.trim())
        .map_err(|_| ApiError::bad_request("pfx", "pfx: not base64"))?;
    let req = RestoreRequest {
        component: b.component,
        target: b.target.into(),
        force: b.force,
        pfx,
        pfx_password: b.pfx_password,
    };
    let (job, _handle) = s.ctl.start_restore(&id, req, &caller.actor())?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// `GET /verification`: settings, coverage, the damaged packs and the Corrupted backups.
pub async fn verification(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ibs_controller::verify::VerificationStatus>> {
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
    let mut v: Vec<_> = s.ctl.db().pack_checks()?.into_values().collect();
    v.sort_by(|a, b| (a.verified_at, &a.pack).cmp(&(b.verified_at, &b.pack)));
    Ok(Json(v))
}

/// `POST /verification`: start a verification now (operator; 202 with the job, 409 while a job
/// or maintenance runs).
pub async fn start_verification(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Operator)?;
    let (job, _handle) = s.ctl.start_verification()?;
    s.ctl.db().audit(
        s.ctl.now(),
        &caller.actor(),
        "verification.start",
        std::slice::from_ref(&job.id),
    )?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}
