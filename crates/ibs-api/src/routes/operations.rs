//! `GET /api/v1/operations` (reader): everything the controller runs or ran, newest first, in one
//! paged list: backup, restore, verification and validation jobs, retention cleanups, maintenance
//! windows, location clears and store prunes. Filters: `running=true`, `kind=KIND`.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, List, Paged};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::Uri;
use ibs_controller::db_ops::OperationFilter;
use ibs_types::{Operation, OperationKind, OperationsQuery, PageQuery, Role};

fn filter(q: &OperationsQuery) -> Result<OperationFilter, ApiError> {
    let running = match q.running.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "running",
                format!("running: {other:?} is not true or false"),
            ))
        }
    };
    let kind = match q.kind.as_deref() {
        None => None,
        Some(k) => Some(OperationKind::parse(k).ok_or_else(|| {
            let all: Vec<&str> = OperationKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(
                "kind",
                format!("kind: {k:?} is not one of {}", all.join(", ")),
            )
        })?),
    };
    Ok(OperationFilter { running, kind })
}

/// The running and recent operations of every kind, newest first (paged).
///
/// Jobs link to their record (`GET /api/v1/jobs/{id}`) and carry live progress while they run;
/// the other operations are `op-N` entries with their detail inline.
#[utoipa::path(get, path = "/api/v1/operations", tag = "backups", operation_id = "list_operations",
    extensions(("x-ibs-role" = json!("reader"))),
    params(OperationsQuery, PageQuery),
    responses((status = 200, description = "One page of the operations", body = Vec<Operation>,
        headers(
            ("x-next-cursor" = String, description = "The cursor of the next page (absent on the last page)"),
            ("link" = String, description = "`<URL>; rel=\"next\"` (RFC 8288) of the next page (absent on the last page)")))))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<OperationsQuery>,
    Query(pq): Query<PageQuery>,
) -> ApiResult<Paged<Operation>> {
    caller.require(Role::Reader)?;
    let f = filter(&q)?;
    let req = paging::request(List::Operations, &pq)?;
    Ok(Paged::new(
        List::Operations,
        s.ctl.operations_page(f, &req)?,
        &uri,
    ))
}
