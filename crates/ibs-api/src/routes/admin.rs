//! Maintenance gate (`POST /maintenance` begin, `DELETE /maintenance` or `POST /maintenance/end`
//! end: operator; `POST /maintenance/clear`: admin), readiness, alerts (list: reader; close:
//! admin), store prune (admin), tokens (create, list, revoke: admin) and the audit log (admin).

use crate::auth::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ibs_controller::alerts::Alert;
use ibs_controller::db::AuditRecord;
use ibs_controller::model::{Maintenance, MaintenanceOp, MaintenanceOutcome, Role};
use ibs_controller::tokens::TokenInfo;
use ibs_controller::{PruneReport, Readiness};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginBody {
    operation: MaintenanceOp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndBody {
    outcome: MaintenanceOutcome,
}

pub async fn maintenance(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Option<Maintenance>>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.maintenance()?))
}

pub async fn begin(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<BeginBody>,
) -> ApiResult<Json<Maintenance>> {
    caller.require(Role::Operator)?;
    Ok(Json(s.ctl.begin_maintenance(b.operation, &caller.actor())?))
}

pub async fn end(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<EndBody>,
) -> ApiResult<Json<Option<Maintenance>>> {
    caller.require(Role::Operator)?;
    Ok(Json(s.ctl.end_maintenance(b.outcome, &caller.actor())?))
}

pub async fn clear(State(s): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    s.ctl.clear_maintenance(&caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn readiness(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Readiness>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.readiness()?))
}

#[derive(Deserialize)]
pub struct AlertQuery {
    /// `open` (default) or `all`.
    state: Option<String>,
}

pub async fn alerts(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<AlertQuery>,
) -> ApiResult<Json<Vec<Alert>>> {
    caller.require(Role::Reader)?;
    let open_only = match q.state.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "state",
                format!("state: {other:?} is not open or all"),
            ))
        }
    };
    Ok(Json(s.ctl.alert_list(open_only)?))
}

pub async fn close_alert(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alert>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.close_alert(id, &caller.actor())?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PruneBody {
    #[serde(default)]
    dry_run: bool,
}

pub async fn prune(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<PruneBody>,
) -> ApiResult<Json<PruneReport>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.store_prune(b.dry_run, &caller.actor()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    role: Role,
    #[serde(default)]
    label: Option<String>,
    /// The token expires this many seconds after its creation (default: never).
    #[serde(default)]
    expires_in_seconds: Option<i64>,
}

pub async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<TokenBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Admin)?;
    let label = b
        .label
        .unwrap_or_else(|| format!("created by {}", caller.actor()));
    let now = s.ctl.now();
    let expires_at = match b.expires_in_seconds {
        None => None,
        Some(n) if n > 0 => Some(now.saturating_add(n)),
        Some(_) => {
            return Err(ApiError::bad_request(
                "expires_in_seconds",
                "expires_in_seconds: must be at least 1",
            ))
        }
    };
    let token = s.ctl.create_token(b.role, &label, now, expires_at)?;
    s.ctl.audit(
        &caller.actor(),
        "token.create",
        &[b.role.as_str().to_string(), label],
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "role": b.role, "token": token, "expires_at": expires_at })),
    ))
}

pub async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.list_tokens()?))
}

pub async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    if !s.ctl.revoke_token(id)? {
        return Err(ApiError::not_found(format!("no token has id {id}")));
    }
    s.ctl
        .audit(&caller.actor(), "token.revoke", &[format!("token#{id}")])?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn audit(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<AuditRecord>>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.audit_log(1000)?))
}
