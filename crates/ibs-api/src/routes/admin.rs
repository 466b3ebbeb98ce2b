//! Maintenance gate (`POST /maintenance` begin, `DELETE /maintenance` or `POST /maintenance/end`
//! end: operator; `POST /maintenance/clear`, and ending an operation that already failed: admin), readiness, alerts (list: reader; close
//! and reopen: operator), store prune (admin), tokens (create, list, revoke: admin) and the audit log (admin).

use crate::auth::{ApiJson, Caller};
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, List, Paged};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::Uri;
use axum::Json;
use ibs_types::{
    Alert, AlertQuery, AuditRecord, BeginMaintenance, EndMaintenance, ErrorBody, Maintenance,
    PageQuery, PruneReport, PruneRequest, Readiness, Role, TokenCreated, TokenInfo, TokenRequest,
};

/// Show the maintenance operation (null when none).
#[utoipa::path(get, path = "/api/v1/maintenance", tag = "admin",
    extensions(("x-ibs-role" = json!("reader"))),
    responses((status = 200, description = "The maintenance operation, or null", body = Option<Maintenance>)))]
pub async fn maintenance(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Option<Maintenance>>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.maintenance()?))
}

/// Begin a maintenance operation (409 while a job runs or another operation is active).
#[utoipa::path(post, path = "/api/v1/maintenance", tag = "admin",
    extensions(("x-ibs-role" = json!("operator"))),
    request_body = BeginMaintenance,
    responses((status = 200, description = "The operation begun", body = Maintenance)))]
pub async fn begin(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<BeginMaintenance>,
) -> ApiResult<Json<Maintenance>> {
    caller.require(Role::Operator)?;
    Ok(Json(s.ctl.begin_maintenance(b.operation, &caller.actor())?))
}

/// End the active maintenance operation (`POST /maintenance/end` is the same). An operation that
/// already failed is not ended again: removing it is clearing it, which is the admin's
/// (`POST /maintenance/clear`), whichever path is used.
#[utoipa::path(delete, path = "/api/v1/maintenance", tag = "admin",
    extensions(("x-ibs-role" = json!("operator"))),
    request_body = EndMaintenance,
    responses((status = 200, description = "The operation after it ended: kept while failed, null after success", body = Option<Maintenance>)))]
pub async fn end(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<EndMaintenance>,
) -> ApiResult<Json<Option<Maintenance>>> {
    caller.require(Role::Operator)?;
    let failed = s
        .ctl
        .maintenance()?
        .is_some_and(|m| m.state == ibs_types::MaintenanceState::Failed);
    if failed && caller.require(Role::Admin).is_err() {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "the maintenance operation already failed; clearing it needs the admin role \
             (ibs maintenance clear with an admin token)"
                .to_string(),
        ));
    }
    Ok(Json(s.ctl.end_maintenance(b.outcome, &caller.actor())?))
}

/// `POST /maintenance/end`: the same as `DELETE /maintenance`, for clients without DELETE bodies.
#[utoipa::path(post, path = "/api/v1/maintenance/end", tag = "admin",
    extensions(("x-ibs-role" = json!("operator"))),
    request_body = EndMaintenance,
    responses((status = 200, description = "The operation after it ended: kept while failed, null after success", body = Option<Maintenance>)))]
pub async fn end_post(
    state: State<AppState>,
    caller: Caller,
    body: ApiJson<EndMaintenance>,
) -> ApiResult<Json<Option<Maintenance>>> {
    end(state, caller, body).await
}

/// Clear a failed maintenance operation.
#[utoipa::path(post, path = "/api/v1/maintenance/clear", tag = "admin",
    extensions(("x-ibs-role" = json!("admin"))),
    responses((status = 204, description = "Cleared")))]
pub async fn clear(State(s): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    s.ctl.clear_maintenance(&caller.actor())?;
    Ok(StatusCode::NO_CONTENT)
}

/// Is a backup running (for update tooling).
#[utoipa::path(get, path = "/api/v1/readiness", tag = "admin",
    extensions(("x-ibs-role" = json!("reader"))),
    responses((status = 200, description = "Readiness", body = Readiness)))]
pub async fn readiness(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Readiness>> {
    caller.require(Role::Reader)?;
    Ok(Json(s.ctl.readiness()?))
}

/// List alerts (`?state=open|all`, default open), open first, newest first (paged).
#[utoipa::path(get, path = "/api/v1/alerts", tag = "admin",
    extensions(("x-ibs-role" = json!("reader"))),
    params(AlertQuery, PageQuery),
    responses((status = 200, description = "One page of the alerts", body = Vec<Alert>,
        headers(
            ("x-next-cursor" = String, description = "The cursor of the next page (absent on the last page)"),
            ("link" = String, description = "`<URL>; rel=\"next\"` (RFC 8288) of the next page (absent on the last page)")))))]
pub async fn alerts(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<AlertQuery>,
    Query(pq): Query<PageQuery>,
) -> ApiResult<Paged<Alert>> {
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
    let req = paging::request(List::Alerts, &pq)?;
    Ok(Paged::new(
        List::Alerts,
        s.ctl.alerts_page(open_only, &req)?,
        &uri,
    ))
}

/// Close an alert (it comes back if the cause persists).
#[utoipa::path(post, path = "/api/v1/alerts/{id}/close", tag = "admin",
    extensions(("x-ibs-role" = json!("operator"))),
    params(("id" = i64, Path, description = "The alert's id")),
    responses(
        (status = 200, description = "The closed alert", body = Alert),
        (status = 404, description = "No such alert", body = ErrorBody)))]
pub async fn close_alert(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alert>> {
    caller.require(Role::Operator)?;
    Ok(Json(s.ctl.close_alert(id, &caller.actor())?))
}

/// Reopen a closed alert (closed by mistake). The same role as closing it. 409 while another
/// alert of its kind is open (for backup-failed and partial-success alerts: any of them), naming
/// it; a condition alert whose cause has gone is closed again at the next evaluation.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/reopen", tag = "admin",
    extensions(("x-ibs-role" = json!("operator"))),
    params(("id" = i64, Path, description = "The alert's id")),
    responses(
        (status = 200, description = "The reopened alert", body = Alert),
        (status = 404, description = "No such alert", body = ErrorBody),
        (status = 409, description = "Another alert of its kind is open", body = ErrorBody)))]
pub async fn reopen_alert(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Alert>> {
    caller.require(Role::Operator)?;
    Ok(Json(s.ctl.reopen_alert(id, &caller.actor())?))
}

/// Delete (or with `dry_run` list) files under MASBackup that ibs did not create.
#[utoipa::path(post, path = "/api/v1/store/prune", tag = "admin",
    extensions(("x-ibs-role" = json!("admin"))),
    request_body = PruneRequest,
    responses((status = 200, description = "What was (or would be) deleted", body = PruneReport)))]
pub async fn prune(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<PruneRequest>,
) -> ApiResult<Json<PruneReport>> {
    caller.require(Role::Admin)?;
    Ok(Json(s.ctl.store_prune(b.dry_run, &caller.actor()).await?))
}

/// Create an API token; the answer is the only time the token is shown.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "admin",
    extensions(("x-ibs-role" = json!("admin"))),
    request_body = TokenRequest,
    responses((status = 201, description = "The token", body = TokenCreated)))]
pub async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<TokenRequest>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
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
        Json(TokenCreated {
            expires_at,
            role: b.role,
            token,
        }),
    ))
}

/// List the API tokens (never a token itself), oldest first (paged).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "admin",
    extensions(("x-ibs-role" = json!("admin"))),
    params(PageQuery),
    responses((status = 200, description = "One page of the tokens", body = Vec<TokenInfo>,
        headers(
            ("x-next-cursor" = String, description = "The cursor of the next page (absent on the last page)"),
            ("link" = String, description = "`<URL>; rel=\"next\"` (RFC 8288) of the next page (absent on the last page)")))))]
pub async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<PageQuery>,
) -> ApiResult<Paged<TokenInfo>> {
    caller.require(Role::Admin)?;
    let req = paging::request(List::Tokens, &q)?;
    Ok(Paged::new(List::Tokens, s.ctl.tokens_page(&req)?, &uri))
}

/// Revoke an API token (refused from then on).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "admin",
    extensions(("x-ibs-role" = json!("admin"))),
    params(("id" = i64, Path, description = "The token's id (from the token list)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No token has this id", body = ErrorBody)))]
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

/// The audit log, newest first (paged).
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin",
    extensions(("x-ibs-role" = json!("admin"))),
    params(PageQuery),
    responses((status = 200, description = "One page of the audit records", body = Vec<AuditRecord>,
        headers(
            ("x-next-cursor" = String, description = "The cursor of the next page (absent on the last page)"),
            ("link" = String, description = "`<URL>; rel=\"next\"` (RFC 8288) of the next page (absent on the last page)")))))]
pub async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<PageQuery>,
) -> ApiResult<Paged<AuditRecord>> {
    caller.require(Role::Admin)?;
    let req = paging::request(List::Audit, &q)?;
    Ok(Paged::new(List::Audit, s.ctl.audit_page(&req)?, &uri))
}
